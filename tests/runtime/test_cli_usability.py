"""`lieconv` for newcomers: help texts with defaults, --version, python -m, one-line refusals of bad
floats / missing or existing runs / unwritable folders, phase lines and a last line, file modes,
the data-cache command, stale temp files, the learning-curve plot."""

import argparse
import json
import os
import subprocess
import sys
import time

import pytest

from lieconv_runtime import io
from lieconv_runtime.cli import build_parser, main


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("springs_cache"))


def _args(data_dir, out, *extra):
    return ["train", "springs", "--model", "HFC", "--n-train", "8", "--n-val", "4", "--n-test", "4",
            "--n-systems", "16", "--n-times", "30", "--t-end", "1.0", "--batch-size", "8", "--epochs", "1",
            "--model-kw", "width=8", "n_hidden=1", "--data-dir", data_dir, "--out", str(out), "--no-progress",
            *extra]


def _one_line_error(capsys, *needles):
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("lieconv: error: "), err
    for needle in needles:
        assert needle in err, err
    return err


# --------------------------------------------------------------------------- help and version
def _subparsers(task: str = "springs"):
    """{command: the parser of `lieconv COMMAND TASK`} (plot: `lieconv plot`)."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    out = {}
    for command, p in sub.choices.items():
        tasks = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
        out[command] = tasks[0].choices[task] if tasks else p
    return out


def test_every_option_has_help_and_shows_its_default():
    for name, p in _subparsers().items():
        for action in p._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help, f"{name} {action.option_strings or action.dest} has no help"
        for action in p._actions:
            if action.option_strings and action.default not in (None, False, argparse.SUPPRESS):
                assert "default" in p._get_formatter()._get_help_string(action), (name, action.dest)
    train = _subparsers()["train"].format_help()
    assert "(default: 10000)" in train and "(default: 100)" in train and "960 MB" in train


def test_help_lists_models_groups_and_cache_folder():
    from lieconv_runtime import available_groups
    from lieconv_runtime.models.registry import available_models

    text = " ".join(_subparsers()["train"].format_help().split())
    for name in available_models():
        assert name in text
    assert ", ".join(available_groups()) in text
    assert "XDG_CACHE_HOME" in text and "LIECONV_CACHE" in text
    ev = " ".join(_subparsers()["eval"].format_help().split())
    assert "2 + 6 x STEPS" in ev and "13,974" in ev and "4 x (n_times - 1)" in ev and "--rollout-steps" in ev


def test_run_help_names_one_out_default():
    text = " ".join(_subparsers()["run"].format_help().split())
    out_help = text[text.index("--out OUT"):text.index("--resume ")]
    assert "runs/springs/quick" in out_help and "<n_train>" not in out_help


def test_version_and_python_m(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("lieconv ")
    proc = subprocess.run([sys.executable, "-m", "lieconv_runtime", "--version"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and proc.stdout.startswith("lieconv ")


# --------------------------------------------------------------------------- refusals
@pytest.mark.parametrize("option,value", [("--t-end", "0"), ("--t-end", "inf"), ("--lr", "0"), ("--lr", "nan"),
                                          ("--lr", "-0.001"), ("--rtol", "0"), ("--atol", "nan"),
                                          ("--step-size", "-0.1"), ("--net-momentum", "-1"),
                                          ("--seed", "-1"), ("--n-particles", "1"), ("--max-steps", "0")])
def test_bad_numbers_give_one_line(option, value, data_dir, tmp_path, capsys):
    assert main(_args(data_dir, tmp_path / "out", option, value)) == 2
    _one_line_error(capsys, f"argument {option}:", value)
    assert not (tmp_path / "out").exists()


def test_resume_without_checkpoint_is_refused(data_dir, tmp_path, capsys):
    assert main(_args(data_dir, tmp_path / "out", "--resume")) == 2
    _one_line_error(capsys, str(tmp_path / "out" / "checkpoint.pt"), "drop --resume")


def test_existing_run_needs_resume_or_overwrite(data_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(_args(data_dir, out, "--eval", "--n-rollouts", "1", "--no-plots")) == 0
    capsys.readouterr()
    before = (out / "checkpoint.pt").read_bytes()
    assert main(_args(data_dir, out, "--seed", "1")) == 2
    _one_line_error(capsys, "already holds a run", "--resume", "--overwrite")
    assert (out / "checkpoint.pt").read_bytes() == before
    assert main(_args(data_dir, out, "--resume", "--overwrite")) == 2
    _one_line_error(capsys, "exclude each other")
    assert main(_args(data_dir, out, "--seed", "1", "--overwrite")) == 0
    capsys.readouterr()
    assert (out / "checkpoint.pt").read_bytes() != before
    assert not (out / "eval" / "summary.json").exists()  # the old run's evaluation went with it
    assert main(_args(data_dir, out, "--seed", "1", "--resume")) == 0  # a finished run: nothing to do


def test_unwritable_out_is_one_line(data_dir, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert main(_args(data_dir, blocker / "out")) == 2
    _one_line_error(capsys, "--out", str(blocker / "out"), "writable")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_out_and_data_dir_are_one_line(data_dir, tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        assert main(_args(data_dir, ro / "out")) == 2
        _one_line_error(capsys, str(ro / "out"))
        assert main(_args(str(ro / "data"), tmp_path / "out")) == 2
        _one_line_error(capsys, str(ro / "data"))
    finally:
        ro.chmod(0o755)


def test_read_only_file_system_is_one_line(data_dir, tmp_path, capsys, monkeypatch):
    """EROFS (as on a read-only mount, which root cannot write either) for --out, then for --data-dir."""
    import tempfile

    real = tempfile.TemporaryFile
    read_only = []

    def probe(*args, dir=None, **kw):
        if any(str(dir).startswith(str(p)) for p in read_only):
            raise OSError(30, "Read-only file system", str(dir))
        return real(*args, dir=dir, **kw)

    monkeypatch.setattr(tempfile, "TemporaryFile", probe)
    read_only.append(tmp_path / "ro")
    (tmp_path / "ro").mkdir()
    assert main(_args(data_dir, tmp_path / "ro" / "out")) == 2
    _one_line_error(capsys, f"--out {tmp_path / 'ro' / 'out'}: cannot write there (Read-only file system)")
    assert main(_args(str(tmp_path / "ro" / "data"), tmp_path / "out")) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith(f"lieconv: error: {tmp_path / 'ro' / 'data'}: Read-only file system")
    assert "Traceback" not in err and not (tmp_path / "out" / "checkpoint.pt").exists()


def test_os_errors_while_writing_become_one_line(data_dir, tmp_path, capsys, monkeypatch):
    from lieconv_runtime.tasks import springs_rollouts

    def full_disk(path, text):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(springs_rollouts, "atomic_write_text", full_disk)
    assert main(_args(data_dir, tmp_path / "out", "--eval", "--n-rollouts", "1", "--no-plots")) == 2
    err = capsys.readouterr().err  # phase lines, then the error as the one last line
    assert "Traceback" not in err and err.count("lieconv: error:") == 1
    assert err.splitlines()[-1].startswith(f"lieconv: error: {tmp_path / 'out' / 'eval' / 'summary.json'}: "
                                           "No space left on device")


def test_keyboard_interrupt_is_one_line(monkeypatch, data_dir, tmp_path, capsys):
    from lieconv_runtime import cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setitem(cli.COMMANDS, "train", interrupted)
    assert main(_args(data_dir, tmp_path / "out")) == 130  # e.g. while generating data: nothing to resume
    assert capsys.readouterr().err == "lieconv: interrupted\n"
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "checkpoint.pt").write_bytes(b"")
    assert main(_args(data_dir, tmp_path / "out")) == 130
    assert capsys.readouterr().err == "lieconv: interrupted (continue with --resume)\n"


def test_interrupted_torch_save_stays_an_interrupt(tmp_path):
    """torch.save's zip writer raises RuntimeError on exit after a Ctrl-C: atomic_write re-raises the
    KeyboardInterrupt (the CLI's one-line exit 130) and leaves no temp file."""

    def interrupted_save(f):
        try:
            f.write(b"part")
            raise KeyboardInterrupt
        finally:
            raise RuntimeError("[enforce fail at inline_container.cc] unexpected pos")

    with pytest.raises(KeyboardInterrupt):
        io.atomic_write(tmp_path / "cache.pt", interrupted_save)
    assert os.listdir(tmp_path) == []


# --------------------------------------------------------------------------- what the main job says
def test_phase_lines_json_stdout_and_last_line(tmp_path, capsys):
    data = tmp_path / "data"
    assert main(_args(str(data), tmp_path / "out", "--eval", "--n-rollouts", "2")) == 0
    cap = capsys.readouterr()
    result = json.loads(cap.out)  # stdout is exactly one JSON document
    assert result["train"]["finished"]
    lines = cap.err.splitlines()
    gen = next(l for l in lines if l.startswith("lieconv: data: generating"))
    assert "16 systems x 30 time steps" in gen and str(data) in gen and "kB on disk" in gen
    assert any(l.startswith("lieconv: train: HFC on 8 examples") for l in lines)
    assert any(l.startswith("lieconv: eval: rolling out 2 test trajectories") for l in lines)
    assert any(l.startswith("lieconv: eval: writing plots") for l in lines)
    last = lines[-1]
    assert last.startswith(f"lieconv: done: results in {tmp_path / 'out'}: checkpoint.pt")
    assert "eval/summary.json" in last and "eval/trajectories.png" in last
    assert main(_args(str(data), tmp_path / "out2")) == 0
    assert "from the cache" in capsys.readouterr().err


def test_files_get_the_umask_mode_not_0600(tmp_path):
    old = os.umask(0o027)
    try:
        io.atomic_write_text(tmp_path / "a.json", "{}")
        io.atomic_torch_save(tmp_path / "b.pt", {"x": 1})
        assert io.current_umask() == 0o027
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "b.pt").stat().st_mode & 0o777 == 0o640
    assert json.loads((tmp_path / "a.json").read_text()) == {}
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_atomic_write_names_the_target_on_errors(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(OSError) as e:
        io.atomic_write_text(tmp_path / "f" / "x.json", "{}")
    assert e.value.filename == str(tmp_path / "f" / "x.json")

    def fails(f):
        f.write(b"half")
        raise ValueError("boom")

    with pytest.raises(ValueError):
        io.atomic_write(tmp_path / "y.bin", fails)
    assert os.listdir(tmp_path) == ["f"]  # nothing half-written


# --------------------------------------------------------------------------- cache folder and temp files
def test_cache_dir_overrides(monkeypatch, tmp_path):
    monkeypatch.delenv("LIECONV_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert io.cache_dir("springs") == tmp_path / "xdg" / "lieconv" / "springs"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")  # the XDG spec: absolute paths only
    assert io.cache_dir("springs") == io.Path(os.path.expanduser("~")) / ".cache" / "lieconv" / "springs"
    monkeypatch.setenv("LIECONV_CACHE", str(tmp_path / "lc"))
    assert io.cache_dir("springs") == tmp_path / "lc" / "springs"
    from lieconv_runtime.data.springs import default_cache_dir

    assert default_cache_dir() == tmp_path / "lc" / "springs"


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temp_files_are_cleaned_live_ones_kept(tmp_path):
    host = io._host()
    dead = tmp_path / f".springs_x.pt.{_dead_pid()}@{host}.abc123.tmp"
    live = tmp_path / f".springs_x.pt.{os.getpid()}@{host}.def456.tmp"
    other_host = tmp_path / ".springs_x.pt.1@elsewhere.ghi789.tmp"
    old = tmp_path / ".springs_y.pt.jkl012.tmp"  # an untagged temp file of an older version
    unrelated = tmp_path / ".other.tmp"
    for p in (dead, live, other_host, old, unrelated):
        p.write_bytes(b"x")
    hours_ago = time.time() - 2 * io.STALE_AFTER_S
    os.utime(old, (hours_ago, hours_ago))
    removed = io.clean_stale_temps(tmp_path, "springs_*")
    assert sorted(removed) == sorted([dead, old])
    assert live.exists() and other_host.exists() and unrelated.exists()


def test_sigkilled_cache_writer_leaves_nothing_after_next_use(tmp_path):
    """A writer killed mid-write leaves its temp file; the next use of the cache removes it."""
    from lieconv_runtime.data.springs import load_springs

    code = ("import sys, time; from lieconv_runtime.io import atomic_write\n"
            "def slow(f):\n    f.write(b'x' * 1000); f.flush(); print('writing', flush=True); time.sleep(60)\n"
            f"atomic_write({str(tmp_path / 'springs_v1_n2_N2_D2_T5_t1_s0.pt')!r}, slow)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
    finally:
        proc.kill()
        proc.wait()
    assert len(list(tmp_path.glob(".springs_*.tmp"))) == 1
    load_springs(2, 2, 2, n_times=5, t_end=1.0, data_dir=tmp_path, progress=False)
    assert not list(tmp_path.glob(".springs_*.tmp"))
    assert (tmp_path / "springs_v1_n2_N2_D2_T5_t1_s0.pt").is_file()


def test_data_list_and_clean(tmp_path, capsys):
    from lieconv_runtime.data.springs import load_springs

    load_springs(4, 2, 2, n_times=5, t_end=1.0, data_dir=tmp_path, progress=False)
    stale = tmp_path / f".springs_z.pt.{_dead_pid()}@{io._host()}.abc.tmp"
    stale.write_bytes(b"x" * 10)
    assert main(["data", "springs", "--list", "--data-dir", str(tmp_path)]) == 0
    cap = capsys.readouterr()
    listed = json.loads(cap.out)
    assert [os.path.basename(r["path"]) for r in listed["caches"]] == ["springs_v1_n4_N2_D2_T5_t1_s0.pt", stale.name]
    assert listed["caches"][0]["config"]["n_systems"] == 4 and listed["caches"][1]["stale"]
    assert cap.err.splitlines()[-1].startswith("lieconv: done: 2 cache files") and str(tmp_path) in cap.err
    assert main(["data", "springs", "--clean", "--data-dir", str(tmp_path)]) == 0
    assert len(json.loads(capsys.readouterr().out)["removed"]) == 3
    assert os.listdir(tmp_path) == []


# --------------------------------------------------------------------------- plots
def test_plot_learning_curves_of_several_runs(data_dir, tmp_path, capsys):
    for name, lr in (("a", "0.01"), ("b", "0.001")):
        assert main(_args(data_dir, tmp_path / name, "--epochs", "3", "--lr", lr)) == 0
    capsys.readouterr()
    assert main(["plot", str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    cap = capsys.readouterr()
    out = tmp_path / "learning_curves.png"
    assert json.loads(cap.out)["plot"] == str(out) and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert cap.err == f"lieconv: done: wrote {out}\n"
    assert main(["plot", str(tmp_path / "a"), "--out", str(tmp_path / "lc.svg")]) == 0
    assert b"<svg" in (tmp_path / "lc.svg").read_bytes()[:500]


def test_plot_errors_are_one_line(tmp_path, capsys):
    assert main(["plot", str(tmp_path / "nowhere")]) == 2
    _one_line_error(capsys, "metrics.jsonl not found")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "metrics.jsonl").write_text("")
    assert main(["plot", str(tmp_path / "empty")]) == 2
    _one_line_error(capsys, "no epoch records")


def test_plots_explain_themselves(monkeypatch, tmp_path):
    import numpy as np

    from lieconv_runtime.train import plots

    figs = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figs.append(fig))
    ts = np.linspace(0, 1, 11)
    z = np.random.default_rng(0).normal(size=(2, 11, 12))
    plots.plot_trajectories(ts, z, z + 0.1, 3, 2, tmp_path / "t.png", title="x")
    legend = [t.get_text() for t in figs[0].legends[0].get_texts()]
    assert {"true path", "model rollout", "initial position", "particle 1", "particle 3"} <= set(legend)
    assert figs[0].axes[0].get_xlabel() and figs[0].axes[0].get_ylabel()
    curves = {"m": {"ts": ts, **{k: np.abs(z[:, :, 0]) for k in plots._TITLES}}}
    plots.plot_conservation(curves, tmp_path / "c.png")
    assert any("interquartile range" in t.get_text() for t in figs[1].texts)
