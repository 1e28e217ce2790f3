"""`lieconv` springs CLI: train/eval end to end, exact resume, one-line errors, metric validation."""

import json
import math
import subprocess
import sys

import pytest
import torch

from lieconv_runtime.cli import main
from lieconv_runtime.data.springs import load_spring_splits
from lieconv_runtime.models import registry
from lieconv_runtime.models.hamiltonian import HamiltonianDynamics, SpringPotential
from lieconv_runtime.tasks.springs_rollouts import METRICS, evaluate_model, galilean_boost, rollout_metrics
from tests.runtime.cli_args import with_flags

KEYS = ("test_mse", *METRICS, "model", "group", "n_train", "seed")
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("springs_cache"))


def _train_args(data_dir, out, *extra):
    return ["train", "springs", "--model", "HFC", "--n-train", "16", "--n-val", "8", "--n-test", "8",
            "--n-systems", "32", "--n-times", "60", "--t-end", "1.0", "--batch-size", "8",
            "--model-kw", "width=16", "n_hidden=2", "--data-dir", data_dir, "--out", str(out), "--no-progress",
            *extra]


@pytest.fixture(scope="module")
def trained(data_dir, tmp_path_factory):
    """One tiny train + eval run shared by several tests: ``(out_dir, printed summary)``."""
    out = tmp_path_factory.mktemp("run")
    capture = tmp_path_factory.mktemp("stdout") / "stdout.json"
    import contextlib

    with open(capture, "w") as f, contextlib.redirect_stdout(f):
        rc = main(_train_args(data_dir, out, "--epochs", "2", "--eval", "--n-rollouts", "3"))
    assert rc == 0
    return out, json.loads(capture.read_text())


def test_train_eval_writes_checkpoint_metrics_summary_and_plots(trained):
    out, printed = trained
    assert (out / "checkpoint.pt").is_file()
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(l)["epoch"] for l in lines] == [1, 2]
    summary = json.loads((out / "eval" / "summary.json").read_text())
    assert set(KEYS) <= set(summary)
    assert (summary["model"], summary["group"], summary["n_train"], summary["seed"]) == ("HFC", None, 16, 0)
    for key in ("test_mse", *METRICS):
        assert summary[key] is not None and math.isfinite(summary[key]) and summary[key] >= 0, key
    assert summary["linear_momentum_drift"] < 1e-9  # HFC's potential is translation invariant
    assert summary["rollout_t_end"] == pytest.approx(1.0)  # --t-end 1: the error at t = 1 is the error at the end
    assert summary["rollout_rel_error_t1"] == pytest.approx(summary["rollout_rel_error"], rel=1e-9)
    assert summary["metrics"]["rollout_rel_error_t1"]
    for png in ("trajectories.png", "conservation.png"):
        assert (out / "eval" / png).read_bytes()[:8] == PNG
    assert printed["test_mse"] == summary["test_mse"] and printed["train"]["finished"]
    run = torch.load(out / "checkpoint.pt", weights_only=True)["config"]
    assert (run["model"], run["group"], run["model_kw"]) == ("HFC", None, {"width": 16, "n_hidden": 2})


def test_every_run_writes_out_summary(data_dir, tmp_path, capsys):
    """Training alone writes OUT/summary.json (not evaluated yet); `lieconv eval` into RUN/eval fills it."""
    out = tmp_path / "run"
    assert main(_train_args(data_dir, out, "--epochs", "1")) == 0
    first = json.loads((out / "summary.json").read_text())
    assert not first["evaluated"] and first["train"]["finished"] and first["how_to_evaluate"].endswith(str(out))
    assert "test_mse" not in first and not (out / "eval").exists()
    assert main(["eval", "springs", "--checkpoint", str(out), "--n-rollouts", "2", "--no-progress", "--no-plots"]) == 0
    second = json.loads((out / "summary.json").read_text())
    assert second["evaluated"] and second["test_mse"] == json.loads((out / "eval" / "summary.json").read_text())["test_mse"]
    assert second["train"] == first["train"]
    capsys.readouterr()


def test_eval_rebuilds_model_from_checkpoint(trained, tmp_path, capsys):
    out, printed = trained
    assert main(["eval", "springs", "--checkpoint", str(out / "checkpoint.pt"), "--out", str(tmp_path),
                 "--n-rollouts", "3", "--no-progress", "--no-plots"]) == 0
    again = json.loads((tmp_path / "summary.json").read_text())
    assert again["test_mse"] == pytest.approx(printed["test_mse"], rel=1e-6)
    assert again["rollout_rel_error"] == pytest.approx(printed["rollout_rel_error"], rel=1e-6)
    assert json.loads(capsys.readouterr().out)["model"] == "HFC"
    # several checkpoints: one folder each plus an overlay of their conservation curves (Fig. 7)
    assert main(["eval", "springs", "--checkpoint", str(out), str(out / "checkpoint.pt"), "--out",
                 str(tmp_path / "cmp"), "--n-rollouts", "2", "--no-progress"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 2
    assert (tmp_path / "cmp" / "conservation_comparison.png").read_bytes()[:8] == PNG
    assert (tmp_path / "cmp" / "1-HFC" / "summary.json").is_file()


def test_resume_matches_uninterrupted_run(data_dir, tmp_path, capsys):
    assert main(_train_args(data_dir, tmp_path / "a", "--epochs", "3")) == 0
    assert main(_train_args(data_dir, tmp_path / "b", "--epochs", "3", "--stop-after", "1")) == 0
    assert len((tmp_path / "b" / "metrics.jsonl").read_text().splitlines()) == 1
    assert main(_train_args(data_dir, tmp_path / "b", "--epochs", "3", "--resume")) == 0
    capsys.readouterr()
    a, b = (torch.load(tmp_path / d / "checkpoint.pt", weights_only=True) for d in "ab")
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
        assert torch.equal(a["best_state"][key], b["best_state"][key]), key
    sa, sb = (json.loads((tmp_path / d / "train_summary.json").read_text()) for d in "ab")
    assert sa["test_mse"] == sb["test_mse"] and sb["epochs_completed"] == 3
    strip = lambda d: [{k: v for k, v in json.loads(l).items() if k != "epoch_time_s"}
                       for l in (tmp_path / d / "metrics.jsonl").read_text().splitlines()]
    assert strip("a") == strip("b")


@pytest.fixture
def corrupt_checkpoint(trained, tmp_path):
    good = (trained[0] / "checkpoint.pt").read_bytes()
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(good[: len(good) // 2])  # truncated zip archive
    return path


BAD = {
    "unknown model": (["--model", "NoSuchNet"], "unknown model 'NoSuchNet'; available models: FC, HFC"),
    "unknown group": (["--group", "T9"], "unknown group 'T9' (available: Boost, "),
    "n_train too large": (["--n-train", "17"], "n_train=17 exceeds the 16 training systems"),
    "distance without a group": (["--distance", "sum"], "--distance: model HFC has no group to measure distances in"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_train_inputs_give_one_line_and_status_2(case, data_dir, tmp_path, capsys):
    extra, message = BAD[case]
    argv = with_flags(_train_args(data_dir, tmp_path / "out", "--epochs", "1"), extra)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("lieconv: error: ") and message in err, err
    assert not (tmp_path / "out" / "checkpoint.pt").exists()


@pytest.mark.parametrize("which", ["missing", "corrupt", "resume-corrupt"])
def test_bad_checkpoints_give_one_line_and_status_2(which, corrupt_checkpoint, data_dir, tmp_path, capsys):
    if which == "missing":
        argv = ["eval", "springs", "--checkpoint", str(tmp_path / "nope.pt")]
    elif which == "corrupt":
        argv = ["eval", "springs", "--checkpoint", str(corrupt_checkpoint)]
    else:
        argv = _train_args(data_dir, corrupt_checkpoint.parent, "--epochs", "1", "--resume")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("lieconv: error: "), err
    assert ("not found" if which == "missing" else "corrupt") in err


def test_resume_with_other_settings_is_refused(trained, data_dir, capsys):
    assert main(_train_args(data_dir, trained[0], "--epochs", "5", "--resume")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "epochs: 2 -> 5" in err, err


def test_script_error_has_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "lieconv_runtime.cli", "eval", "springs", "--checkpoint",
                           str(tmp_path / "missing.pt")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("lieconv: error: ")
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def _true_model():
    return HamiltonianDynamics(SpringPotential(), 6, 2).double()


def test_metrics_vanish_for_the_true_hamiltonian(data_dir, tmp_path):
    """Adaptive rollouts of the exact H: energy, momenta and state match to ~tolerance."""
    splits = load_spring_splits(4, 2, 6, n_systems=12, n_times=100, t_end=2.0, data_dir=data_dir,
                                dtype=torch.float64, progress=False)
    meta = {"model": "true-H", "group": None, "n_train": 4, "seed": 0}
    # rtol 1e-9 on this coarse grid (dt = 0.02) needs more than the default 4 x 99 steps
    s = evaluate_model(_true_model(), splits, out_dir=tmp_path, meta=meta, n_rollouts=6, rtol=1e-9, atol=1e-12,
                       plots=False, max_steps=5000)
    assert s["rk4_fallback_rollouts"] == 0 and s["max_steps"] == 5000
    assert json.loads((tmp_path / "summary.json").read_text())["energy_rel_error"] == s["energy_rel_error"]
    assert s["test_mse"] < 1e-6  # RK4 on the coarse chunk grid (z(t) = z0 gives ~0.1)
    for key in METRICS:
        assert s[key] <= 1e-6, (key, s[key])
    assert s["linear_momentum_drift"] < 1e-12  # a linear invariant: exact for Runge-Kutta


def test_metrics_detect_broken_symmetries(data_dir):
    """Sanity of the drift metrics: an external anisotropic trap breaks both momenta."""

    class Trapped(SpringPotential):
        def forward(self, q, m, k):
            return super().forward(q, m, k) + 2.0 * (q[..., 0] ** 2).sum(-1)

    splits = load_spring_splits(4, 2, 6, n_systems=12, n_times=100, t_end=2.0, data_dir=data_dir,
                                dtype=torch.float64, progress=False)
    traj = galilean_boost(splits.test_long.subset(torch.arange(3)), 1.5)
    r = rollout_metrics(HamiltonianDynamics(Trapped(), 6, 2).double(), traj, rtol=1e-7, atol=1e-9)
    assert r["linear_momentum_drift"][:, -1].mean() > 1e-2
    assert r["angular_momentum_drift"][:, -1].mean() > 1e-2


def test_registry_errors_and_one_line_registration(monkeypatch):
    with pytest.raises(registry.RegistryError, match="available models: FC, HFC, HLieResNet, HOGN, OGN"):
        registry.build_model("nope")
    with pytest.raises(registry.RegistryError, match="groups for R\\^3"):
        registry.check_group("T2", dim=3)
    seen = {}

    def builder(n_particles, dim, group=None, width=8):
        seen.update(n=n_particles, dim=dim, group=group, width=width)
        return registry.build_model("HFC", n_particles, dim, width=width)

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))  # undone after the test
    registry.register("DummyLie", builder, lr=1e-3, group_lr={"SO2": 3e-4}, needs_group=True)
    registry.build_model("dummylie", 4, 2, group="T2", width=5)
    assert seen == {"n": 4, "dim": 2, "group": "T2", "width": 5}
    registry.register("LazyHFC", "lieconv_runtime.models.dynamics_baselines:HFC", lr=1e-2)  # "module:function"
    assert type(registry.build_model("lazyhfc", 3, 2, width=4)).__name__ == "HFC"
    assert registry.paper_lr("DummyLie", "SO2") == 3e-4 and registry.paper_lr("DummyLie", "T2") == 1e-3
    with pytest.raises(registry.RegistryError, match="needs a group"):
        registry.build_model("DummyLie", 4, 2)


def test_study_dry_run_and_table(capsys, tmp_path):
    assert main(["study", "springs", "--preset", "cpu", "--models", "HFC", "FC", "--dry-run"]) == 0
    plan = json.loads(capsys.readouterr().out)
    # batch 25: 1/8 of the paper's epochs give 79 / 156 / 304 steps, more steps for more data
    assert [r["epochs"] for r in plan["runs"] if r["label"] == "HFC"] == [79, 39, 19]
    assert {r["label"] for r in plan["runs"]} == {"HFC", "FC"}
    from lieconv_runtime.train.plots import plot_study
    from lieconv_runtime.tasks.springs import markdown_table

    rows = [{"label": l, "n_train": n, "test_mse": v, "s_per_step": 0.1}
            for l, n, v in [("HFC", 10, 0.2), ("HFC", 10, 0.1), ("HFC", 20, 0.05), ("FC", 10, 0.3)]]
    table = markdown_table(rows, [10, 20], 0.17)
    assert "| HFC | 0.15 ± 0.05 | 0.05 | 0.1 |" in table and "| FC | 0.3 | – |" in table
    from lieconv_runtime.tasks.springs import rollout_table

    rows = [dict(r, energy_rel_error=1e-3, linear_momentum_drift=None, angular_momentum_drift=2e-12,
                 rollout_rel_error=0.5) for r in rows if r["n_train"] == 20]
    assert "| HFC | 0.5 | 0.001 | – | 2e-12 |" in rollout_table(rows, 20)
    assert plot_study(rows, tmp_path / "s.png").read_bytes()[:8] == PNG


def test_run_main_job_defaults_to_hlieresnet_t2(data_dir, tmp_path, capsys):
    from lieconv_runtime.cli import build_parser
    from lieconv_runtime.tasks import get_task

    args = build_parser().parse_args(["run", "springs"])
    assert (args.model, args.group, args.eval, args.threads) == ("HLieResNet", "T2", True, 1)
    assert (args.batch_size, args.lr, dict(args.model_kw)) == (25, 3e-3, {"width": 128})
    assert get_task("springs").config(build_parser().parse_args(["run", "springs", "--model", "HFC"]))["group"] is None
    rc = main(["run", "springs", "--n-train", "8", "--n-val", "4", "--n-test", "4", "--n-systems", "16",
               "--n-times", "40", "--t-end", "0.5", "--batch-size", "8", "--epochs", "1", "--n-rollouts", "2",
               "--model-kw", "width=16", "num_layers=1", "--data-dir", data_dir, "--out", str(tmp_path),
               "--no-progress", "--no-plots", "--threads", "1"])
    assert rc == 0
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert (summary["model"], summary["group"]) == ("HLieResNet", "T2")
    assert summary["linear_momentum_drift"] < 1e-9  # T2 symmetry: Noether


def test_study_sets_aside_runs_made_with_other_settings(tmp_path):
    from lieconv_runtime.tasks.study import _set_aside_stale

    run_dir = tmp_path / "runs" / "HFC" / "n25" / "seed0"
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps({"run": {"epochs": 39}}))
    _set_aside_stale(run_dir, {"epochs": 39})
    assert run_dir.exists()
    _set_aside_stale(run_dir, {"epochs": 60})
    assert not run_dir.exists() and len(list(run_dir.parent.glob("seed0.stale-*"))) == 1


def test_study_runs_end_to_end_in_parallel_and_resumes(data_dir, tmp_path, monkeypatch):
    """A tiny preset through run_study with 2 worker processes: rows in plan order, largest size
    rolled out with the preset's solver options, and a second call reuses every finished run."""
    import argparse

    from lieconv_runtime.tasks import get_task, springs
    from lieconv_runtime.tasks.study import run_study

    tiny = dict(models=("HFC", "FC"), n_train=(4, 8), repeats=1, epoch_scale=0.001, n_val=4, n_test=4, jobs=2,
                n_rollouts=2, min_steps=0, validations=1, rollout={"solver": "rk4"}, description="tiny")
    monkeypatch.setitem(springs.PRESETS, "tiny", tiny)
    task, args = get_task("springs"), argparse.Namespace(models=None, n_train=None, repeats=None)
    out = tmp_path / "study"
    result = run_study(task, "tiny", args, out_dir=out, data_dir=data_dir, progress=False)
    rows = [json.loads(l) for l in (out / "results.jsonl").read_text().splitlines()]
    assert [(r["label"], r["n_train"]) for r in rows] == [("HFC", 4), ("HFC", 8), ("FC", 4), ("FC", 8)]
    assert [r["label"] for r in rows if "energy_rel_error" in r] == ["HFC", "FC"]
    assert all(r["solver"] == "rk4" and r["rtol"] is None for r in rows if r["n_train"] == 8)
    assert rows[1]["linear_momentum_drift"] < 1e-9  # HFC is translation-invariant: exact in RK4
    assert "RK4, fixed steps on the data grid" in (out / "rollouts.md").read_text()
    assert (out / "conservation.png").read_bytes()[:8] == PNG and result["rows"] == rows
    again = run_study(task, "tiny", args, out_dir=out, data_dir=data_dir, progress=False, jobs=1)
    strip = lambda rs: [{k: v for k, v in r.items() if k != "eval_dir"} for r in rs]  # noqa: E731
    assert strip(again["rows"]) == strip(rows) and again["wall_time_s"] < result["wall_time_s"]


def test_error_at_a_time_interpolates_and_is_null_past_the_end():
    import numpy as np

    from lieconv_runtime.tasks.springs_rollouts import _at_time

    ts = np.array([2.0, 2.5, 3.0, 3.5])
    curve = np.array([[0.0, 1.0, 2.0, 3.0], [0.0, 3.0, 6.0, 9.0]])  # errors growing linearly in t
    assert _at_time(curve, ts, 1.0) == pytest.approx(4.0)  # mean of 2 and 6 at ts[0] + 1
    assert _at_time(curve, ts, 0.75) == pytest.approx(3.0)  # between grid points
    assert _at_time(curve, ts, 1.5) == pytest.approx(6.0) and _at_time(curve, ts, 1.6) is None
    assert _at_time(curve, ts, 1.0, np.median) == pytest.approx(4.0)


def test_cpu_preset_has_the_rotation_groups_and_more_steps_for_more_data():
    import argparse
    import math

    from lieconv_runtime.tasks import get_task

    runs, info = get_task("springs").study_plan("cpu", argparse.Namespace(models=None, n_train=None, repeats=None))
    labels = {r.label for r in runs}
    assert {"HLieResNet(T2)", "HLieResNet(SO2)", "HLieResNet(SE2)", "HLieResNet(Trivial2)"} <= labels
    for label in labels:
        mine = sorted((r.config["n_train"], r.config) for r in runs if r.label == label)
        steps = [c["epochs"] * math.ceil(n / c["batch_size"]) for n, c in mine]
        assert steps == sorted(steps) and steps[0] < steps[-1], (label, steps)
    for r in runs:
        assert r.config["batch_size"] == 25
        assert r.config["model_kw"] == ({"width": 128} if r.config["model"] == "HLieResNet" else {})
