"""Several processes under torchrun (gloo on the CPU): the same training as one process.

* 2 processes with a global batch B (B/2 each) end with the parameters of 1 process with batch B
  (float64, relative 1e-10), with the same metrics;
* a 2-process run stopped after an epoch and resumed (with 2 processes, or with 1) ends where the
  uninterrupted run ends;
* killing one process mid-run ends the job with an error within seconds, and the last complete
  checkpoint stays intact.

Each run starts `python -m torch.distributed.run --standalone` as a user would (a few seconds each).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lieconv_runtime.cli import main
from lieconv_runtime.train.trainer import read_checkpoint

TINY = ["--model", "HLieResNet", "--group", "T2", "--model-kw", "width=16", "num_layers=1", "--n-systems", "40",
        "--n-val", "8", "--n-test", "8", "--n-train", "16", "--n-times", "20", "--batch-size", "8", "--dtype",
        "float64", "--device", "cpu", "--no-progress"]


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _torchrun(n: int, args: list, timeout: float = 600, **kw) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={n}",
           "-m", "lieconv_runtime", "train", "springs", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=timeout, **kw)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("springs"))


def _params(path) -> dict:
    return {k: v for k, v in torch.load(Path(path) / "checkpoint.pt", weights_only=True)["model"].items()
            if v.is_floating_point()}


def _metrics(path) -> list:
    rows = [json.loads(line) for line in (Path(path) / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "epoch_time_s"} for r in rows]


def _assert_same(a, b, rtol=1e-10):
    pa, pb = _params(a), _params(b)
    assert pa.keys() == pb.keys()
    for k in pa:
        if not bool(torch.isfinite(pb[k]).all()):  # e.g. the radius of a layer without a ball (inf)
            assert torch.equal(pa[k], pb[k]), k
            continue
        err = float((pa[k] - pb[k]).abs().max()) / max(float(pb[k].abs().max()), 1e-300)
        assert err <= rtol, f"{k}: {err:.2e}"


def test_two_processes_take_the_steps_of_one(data_dir, tmp_path):
    run = _torchrun(2, [*TINY, "--epochs", "3", "--data-dir", data_dir, "--out", str(tmp_path / "two")])
    assert run.returncode == 0, run.stderr[-3000:]
    assert main([*["train", "springs"], *TINY, "--epochs", "3", "--data-dir", data_dir,
                 "--out", str(tmp_path / "one")]) == 0
    _assert_same(tmp_path / "two", tmp_path / "one")
    m2, m1 = _metrics(tmp_path / "two"), _metrics(tmp_path / "one")
    assert [r["step"] for r in m2] == [2, 4, 6]
    for r2, r1 in zip(m2, m1):
        for key in r1:
            assert r2[key] == pytest.approx(r1[key], rel=1e-10, abs=1e-15), key
    assert "lieconv: done: results in" in run.stderr and run.stderr.count("lieconv: done") == 1  # rank 0 only


def test_resume_with_two_or_one_process(data_dir, tmp_path):
    straight = _torchrun(2, [*TINY, "--epochs", "3", "--data-dir", data_dir, "--out", str(tmp_path / "straight")])
    assert straight.returncode == 0, straight.stderr[-3000:]
    for label, n in (("two", 2), ("one", 1)):
        out = str(tmp_path / label)
        first = _torchrun(2, [*TINY, "--epochs", "3", "--data-dir", data_dir, "--out", out, "--stop-after", "1"])
        assert first.returncode == 0, first.stderr[-3000:]
        assert read_checkpoint(out)["epoch"] == 1
        rest = _torchrun(n, [*TINY, "--epochs", "3", "--data-dir", data_dir, "--out", out, "--resume"])
        assert rest.returncode == 0, rest.stderr[-3000:]
        _assert_same(out, tmp_path / "straight")


def test_a_killed_process_ends_the_job_and_keeps_the_checkpoint(data_dir, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m",
           "lieconv_runtime", "train", "springs", *TINY, "--epochs", "200", "--data-dir", data_dir, "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
                            start_new_session=True)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and not ((out / "metrics.jsonl").exists()
                                              and len((out / "metrics.jsonl").read_text().splitlines()) >= 2):
            time.sleep(0.2)
        assert (out / "checkpoint.pt").exists(), "the run did not get going"
        workers = [int(w) for w in subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True,
                                                  text=True).stdout.split()]  # torchrun's workers
        assert len(workers) >= 2, workers
        os.kill(max(workers), signal.SIGKILL)  # one worker dies
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode != 0
    ours = [line for line in err.splitlines() if "lieconv: error:" in line]
    assert "lieconv_runtime FAILED" in err and len(ours) <= 1, err[-3000:]  # torchrun's report, at most one line of ours
    assert "[rank0]: Traceback" not in err and "[rank1]: Traceback" not in err, err[-3000:]
    state = read_checkpoint(out)  # intact: written atomically by rank 0
    assert state["epoch"] >= 1 and not state["finished"]
