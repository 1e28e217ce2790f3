"""The qm9 task: `lieconv train|eval|study|data qm9` end to end on a few made-up molecules (official xyz
files written here), train statistics and paper units against a hand computation, the augmentation,
the invariance of T3 / SO3 / SE3 networks (and a Trivial3 network failing the same check), exact
resume, and the one-line errors of the command line."""

import argparse
import contextlib
import csv
import io
import json
import math
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch

from lieconv_runtime import load_group
from lieconv_runtime.cli import main
from lieconv_runtime.data import qm9 as Q
from lieconv_runtime.tasks import get_task
from lieconv_runtime.tasks.qm9 import PRESETS, QM9Objective, RigidAugment, haar_rotations, markdown_table
from lieconv_runtime.testing import equivariance_error
from tests.runtime.cli_args import with_flags

DTYPES = [torch.float32, torch.float64]
PNG = b"\x89PNG\r\n\x1a\n"
TASK = get_task("qm9")
N_SPLIT = {"train": 24, "valid": 8, "test": 8}
HOMO = Q.TARGETS.index("homo")


# --------------------------------------------------------------------------- made-up molecules
def _molecules() -> list:
    """(gdb index, elements, positions (n, 3), 15 properties in file units) for the first molecules of
    each split; realistic magnitudes, random values (seeded)."""
    rng = np.random.RandomState(0)
    out = []
    for split, n in N_SPLIT.items():
        for gdb in Q.split_indices(split)[:n]:
            k = int(rng.randint(3, 9))
            els = "C" + "".join(rng.choice(list("HHHCNOF"), k - 1))
            pos = 1.3 * rng.randn(k, 3)
            homo, lumo = -0.25 + 0.02 * rng.randn(), 0.01 + 0.05 * rng.randn()
            u0 = -400 + 40 * rng.randn()
            props = [float(v) for v in (*(10 + 5 * rng.rand(3)), 5 * rng.rand(), 10 + 80 * rng.rand(), homo, lumo,
                                        lumo - homo, 100 + 1400 * rng.rand(), 0.1 + 0.03 * rng.randn(), u0, u0 + 0.01,
                                        u0 + 0.011, u0 - 0.04, 30 + 5 * rng.randn())]
            out.append((int(gdb), els, pos, props))
    return out


MOLS = _molecules()


def xyz_text(mol) -> str:
    gdb, els, pos, props = mol
    lines = [str(len(els)), "\t".join([f"gdb {gdb}", *(repr(p) for p in props)])]
    lines += ["\t".join([e, *(repr(float(c)) for c in xyz), "0.0"]) for e, xyz in zip(els, pos)]
    lines += ["\t".join(["1000.0"] * max(1, 3 * len(els) - 6)), "C\tC", "InChI=1S/X\tInChI=1S/X"]
    return "\n".join(lines) + "\n"


def write_xyz(folder, mols=MOLS):
    folder.mkdir(parents=True, exist_ok=True)
    for m in mols:
        (folder / f"dsgdb9nsd_{m[0]:06d}.xyz").write_text(xyz_text(m))
    return folder


def homo_mev(split: str, n: int | None = None) -> np.ndarray:
    """HOMO in meV of the first n molecules of a split, by hand: Hartree x 27211.4, in split order."""
    by_gdb = {m[0]: m[3][5] * 27211.4 for m in MOLS}
    gdbs = [int(g) for g in Q.split_indices(split)[:N_SPLIT[split]]]
    return np.array([by_gdb[g] for g in gdbs][:n])


@pytest.fixture(scope="module", autouse=True)
def _env(tmp_path_factory):
    """Caches in a temporary folder; the installed qm9pack is never read."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LIECONV_CACHE", str(tmp_path_factory.mktemp("cache")))
        mp.setattr(Q, "_qm9pack_data_dir", lambda: None)
        yield


@pytest.fixture(scope="module")
def xyz_dir(tmp_path_factory):
    return write_xyz(tmp_path_factory.mktemp("qm9") / "xyz")


def _train_args(data_dir, out, *extra, group="T3"):
    return ["train", "qm9", "--group", group, "--data-dir", str(data_dir), "--source", "official", "--n-train", "20",
            "--n-val", "6", "--n-test", "8", "--width", "16", "--num-layers", "1", "--batch-size", "8",
            "--out", str(out), "--no-progress", "--device", "cpu", *extra]


def _run(argv) -> tuple[int, dict | None]:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(argv)
    return rc, (json.loads(buf.getvalue()) if rc == 0 and buf.getvalue().strip() else None)


@pytest.fixture(scope="module")
def trained(xyz_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    rc, printed = _run(_train_args(xyz_dir, out, "--epochs", "2", "--eval"))
    assert rc == 0
    return out, printed


# --------------------------------------------------------------------------- end to end
def test_train_eval_writes_summary_plots_and_paper_units(trained):
    out, printed = trained
    ev = json.loads((out / "eval" / "summary.json").read_text())
    for key in ("test_mae", "unit", "target", "baseline_mae", "n_test", "steps", "s_per_step", "metrics"):
        assert key in ev and ev[key] is not None, key
    assert (ev["target"], ev["unit"], ev["group"], ev["n_test"], ev["n_train"]) == ("homo", "meV", "T3", 8, 20)
    assert ev["steps"] == 6 and ev["s_per_step"] > 0 and set(ev["metrics"]) >= {"test_mae", "baseline_mae"}
    # train statistics and the baseline by hand (first 20 train molecules; the 8 test molecules)
    train, test = homo_mev("train", 20), homo_mev("test")
    assert ev["target_mean"] == pytest.approx(train.mean(), rel=1e-12)
    assert ev["target_std"] == pytest.approx(train.std(ddof=1), rel=1e-12)
    assert ev["baseline_mae"] == pytest.approx(np.abs(test - train.mean()).mean(), rel=1e-12)
    # test MAE = mean |prediction - truth| of the written predictions, in meV; = the trainer's
    rows = list(csv.DictReader((out / "eval" / "test_predictions.csv").open()))
    pred = np.array([float(r["predicted_homo"]) for r in rows])
    true = np.array([float(r["true_homo"]) for r in rows])
    assert np.allclose(true, test, rtol=0, atol=1e-9)
    assert ev["test_mae"] == pytest.approx(np.abs(pred - true).mean(), rel=1e-12)
    assert ev["test_mae"] == pytest.approx(printed["train"]["test_mae"], rel=1e-9)
    for png in ("learning_curves.png", "predicted_vs_true.png"):
        assert (out / "eval" / png).read_bytes()[:8] == PNG
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2] and all("train_l1" in r and "val_mae" in r for r in lines)
    config = torch.load(out / "checkpoint.pt", weights_only=True)["config"]
    assert config["net"] == {"k": 16, "num_layers": 1, "nbhd": 100, "fill": 0.973, "radius": 10.0,
                             "radius_coeff": 2.5, "lift_samples": 1, "paper_alpha": 0.2, "metric": None,
                             "orbit_alpha": 1.0, "model_kw": {}}
    assert (config["warmup_frac"], config["batch_size"], config["augment"], config["recenter"]) == \
        (0.01, 8, True, False)


def test_eval_command_rebuilds_the_model(trained, tmp_path):
    out, printed = trained
    rc, ev = _run(["eval", "qm9", "--checkpoint", str(out), "--out", str(tmp_path), "--no-progress", "--no-plots",
                   "--device", "cpu"])
    assert rc == 0 and ev["test_mae"] == pytest.approx(printed["test_mae"], rel=1e-9)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json", "test_predictions.csv"]
    rc, both = _run(["eval", "qm9", "--checkpoint", str(out), str(out / "checkpoint.pt"), "--out", str(tmp_path / "cmp"),
                     "--no-progress", "--device", "cpu"])
    assert rc == 0 and [r["test_mae"] for r in both] == [ev["test_mae"]] * 2
    rows = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    assert [r["label"] for r in rows] == ["MolecLieResNet(T3)"] * 2
    assert (tmp_path / "cmp" / "learning_curves.png").read_bytes()[:8] == PNG


@pytest.mark.parametrize("dtype", DTYPES)
def test_objective_uses_train_statistics_and_paper_units(xyz_dir, dtype):
    config = TASK.make_config(group="T3", target="homo", source="official", n_train=20, n_val=6, n_test=8,
                              dtype=str(dtype).replace("torch.", ""))
    splits = TASK.load_data(config, xyz_dir, progress=False, say=lambda t: None)
    train = homo_mev("train", 20)
    e = splits.extra
    assert e["mean"] == pytest.approx(train.mean(), rel=1e-12)
    assert e["std"] == pytest.approx(train.std(ddof=1), rel=1e-12)
    everything = np.concatenate([homo_mev(s) for s in N_SPLIT])
    assert abs(e["mean"] - everything.mean()) > 1e-3  # not the statistics of all molecules
    assert splits.train.positions.dtype == dtype
    batch = Q.collate_molecules([splits.test[i] for i in range(len(splits.test))])
    true = homo_mev("test")
    obj = TASK.objective(config, splits)

    class Const(torch.nn.Module):
        def __init__(self, out):
            super().__init__()
            self.out = out

        def forward(self, positions, one_hot, charges):
            return self.out.to(positions.dtype)

    z = torch.linspace(-1, 1, len(true), dtype=torch.float64)
    loss = float(obj.loss(Const(z), batch))
    assert loss == pytest.approx(np.abs(z.numpy() - (true - e["mean"]) / e["std"]).mean(),
                                 rel=1e-12 if dtype == torch.float64 else 1e-6)
    s, c = obj.sums(Const(z), batch)["mae"]
    expect = np.abs(z.to(dtype).double().numpy() * e["std"] + e["mean"] - true).sum()
    assert c == len(true) and float(s) == pytest.approx(expect, rel=1e-12)
    exact = torch.as_tensor((true - e["mean"]) / e["std"])  # the normalised truth: zero loss, zero error
    assert float(obj.loss(Const(exact), batch)) < (1e-12 if dtype == torch.float64 else 1e-6)
    assert float(obj.sums(Const(exact), batch)["mae"][0]) / len(true) < (1e-9 if dtype == torch.float64 else 1e-3)
    assert isinstance(obj, QM9Objective) and obj.primary == "mae"


@pytest.mark.parametrize("dtype", DTYPES)
def test_recentring_uses_train_atoms(xyz_dir, dtype):
    config = TASK.make_config(group="SE3", target="homo", source="official", n_train=20, n_val=6, n_test=8,
                              dtype=str(dtype).replace("torch.", ""))
    assert config["recenter"] and config["net"]["lift_samples"] == 4
    splits = TASK.load_data(config, xyz_dir, progress=False, say=lambda t: None)
    gdb_train = [int(g) for g in Q.split_indices("train")[:20]]
    raw = np.concatenate([m[2] for g in gdb_train for m in MOLS if m[0] == g])
    shift = raw.mean(0)
    scale = np.sqrt(((raw - shift) ** 2).mean())
    assert np.allclose(splits.extra["position_shift"], shift, atol=1e-12)
    assert splits.extra["position_scale"] == pytest.approx(scale, rel=1e-12)
    tol = 1e-12 if dtype == torch.float64 else 1e-6
    assert np.allclose(splits.train.positions.double().numpy(), (raw - shift) / scale, atol=tol)
    test_mol = next(m for m in MOLS if m[0] == int(Q.split_indices("test")[0]))
    assert np.allclose(splits.test[0]["positions"].double().numpy(), (test_mol[2] - shift) / scale, atol=tol)


# --------------------------------------------------------------------------- augmentation
@pytest.mark.parametrize("dtype", DTYPES)
def test_augmentation_is_a_rigid_motion(dtype):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(5, 7, 3, generator=gen, dtype=torch.float64).to(dtype)
    mask = torch.ones(5, 7, dtype=torch.bool)
    mask[1, 4:] = False
    x[~mask] = 0
    aug = RigidAugment(seed=3).train()
    y = aug(x, mask)
    assert y.dtype == dtype and torch.equal(y[~mask], torch.zeros_like(y[~mask]))
    tol = 1e-12 if dtype == torch.float64 else 2e-5
    for b in range(5):
        m = mask[b]
        d0, d1 = torch.cdist(x[b, m].double(), x[b, m].double()), torch.cdist(y[b, m].double(), y[b, m].double())
        assert torch.allclose(d0, d1, atol=tol, rtol=0), b
        assert (y[b, m] - x[b, m]).abs().max() > 0.1  # it moved
    # centred clouds: the rotation alone; the translation: mean moves by R t
    assert not torch.equal(aug(x, mask), y)  # fresh draws each call
    assert torch.equal(RigidAugment(seed=3).train()(x, mask), y)  # reproducible from the seed
    assert torch.equal(aug.eval()(x, mask), x)  # identity outside training


def test_haar_rotations():
    R = haar_rotations(20000, torch.Generator().manual_seed(0))
    eye = torch.eye(3, dtype=torch.float64)
    assert torch.allclose(R @ R.transpose(1, 2), eye.expand_as(R), atol=1e-12)
    assert torch.allclose(torch.linalg.det(R), torch.ones(20000, dtype=torch.float64), atol=1e-12)
    tr = R.diagonal(dim1=1, dim2=2).sum(-1)  # Haar on SO(3): E tr = 0, E tr^2 = 1
    assert abs(float(tr.mean())) < 0.03 and abs(float((tr ** 2).mean()) - 1) < 0.05
    assert float(R.mean(0).abs().max()) < 0.03


# --------------------------------------------------------------------------- invariance
class Adapter(torch.nn.Module):
    """A QM9 model as equivariance_error calls it: (coords, one-hot values, mask, stabilizer)."""

    def __init__(self, model, charges):
        super().__init__()
        self.model, self.charges = model, charges
        self.lift_samples = model.net.lift_samples

    def forward(self, coords, values, mask, stabilizer=None):
        if self.model.net.group.stabilizer_dim == 0:
            stabilizer = None
        return self.model(coords, values, self.charges, stabilizer=stabilizer)[:, None]


def _molecule_batch(dtype):
    items = [{"positions": torch.as_tensor(m[2], dtype=dtype), "charges": torch.as_tensor([Q.CHARGES[e] for e in m[1]]),
              "targets": torch.zeros(12, dtype=torch.float64), "index": m[0]} for m in MOLS[:4]]
    b = Q.collate_molecules(items)
    return b["positions"], b["one_hot"], b["mask"], b["charges"]


def _model(group, dtype, distance=None):
    torch.manual_seed(0)
    config = TASK.make_config(group=group, target="homo", width=16, num_layers=2, nbhd=6, distance=distance)
    return TASK.build_model(config).to(dtype).eval()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("group", ["T3", "SO3", "SE3"])
def test_networks_are_invariant_to_their_group(group, dtype):
    coords, one_hot, mask, charges = _molecule_batch(dtype)
    net = Adapter(_model(group, dtype), charges)
    err = equivariance_error(net, load_group(group), (coords, one_hot, mask), scale=3.0).error
    assert err < (1e-10 if dtype == torch.float64 else 1e-5), err


def test_balls_per_group():
    """T3: the shrinking ball (starts at 10 Å, 2.5 Å per unit of fill, fill 0.973), in every block;
    Trivial3: every pair; SE3: fill 1/2 from the fill quantile; --fill and --model-kw override."""
    def blocks(**kw):
        net = TASK.build_model(TASK.make_config(target="homo", width=16, num_layers=2, **kw)).net
        return [(b.conv.fill, float(b.conv.radius), b.conv.radius_coeff, bool(b.conv.radius_ready)) for b in net.blocks]
    assert blocks(group="T3") == [(0.973, 10.0, 2.5, True)] * 2
    assert blocks(group="Trivial3") == [(1.0, math.inf, 0.5, True)] * 2
    assert blocks(group="SE3") == [(0.5, 2.0, 0.5, False)] * 2  # radius from the first batch
    assert blocks(group="T3", fill=0.5) == [(0.5, 10.0, 2.5, True)] * 2
    assert blocks(group="T3", model_kw={"radius": 4.0, "radius_coeff": 1.0}) == [(0.973, 4.0, 1.0, True)] * 2
    assert blocks(group="T3", fill=1.0)[0][:2] == (1.0, math.inf)


@pytest.mark.parametrize("dtype", DTYPES)
def test_t3_network_with_a_small_ball_is_invariant(dtype):
    """The T3 ball leaving pairs out (radius 1.5 Å) is translation-invariant too, packed as padded."""
    coords, one_hot, mask, charges = _molecule_batch(dtype)
    torch.manual_seed(0)
    model = TASK.build_model(TASK.make_config(group="T3", target="homo", width=16, num_layers=2)).to(dtype).eval()
    full = model(coords, one_hot, charges)
    for b in model.net.blocks:
        b.conv.radius.fill_(1.5)
    assert not torch.allclose(model(coords, one_hot, charges), full)  # the ball leaves pairs out
    net = Adapter(model, charges)
    lifted = model.net.lift(coords, one_hot, mask)
    assert model.net.runs_packed(lifted)
    err = equivariance_error(net, load_group("T3"), (coords, one_hot, mask), scale=3.0).error
    assert err < (1e-10 if dtype == torch.float64 else 1e-5), err


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("group", ["SO3", "SE3"])
def test_sum_distance_networks_are_invariant(group, dtype):
    """--distance sum (the rotation part's norm plus the rest's) is left-invariant too."""
    coords, one_hot, mask, charges = _molecule_batch(dtype)
    model = _model(group, dtype, distance="sum")
    assert model.net.group.distance_form == "sum"
    err = equivariance_error(Adapter(model, charges), load_group(group), (coords, one_hot, mask), scale=3.0).error
    assert err < (1e-10 if dtype == torch.float64 else 1e-5), err


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("check", ["T3", "SO3", "SE3"])
def test_trivial_network_fails_the_check(check, dtype):
    coords, one_hot, mask, charges = _molecule_batch(dtype)
    net = Adapter(_model("Trivial3", dtype), charges)
    err = equivariance_error(net, load_group(check), (coords, one_hot, mask), scale=3.0).error
    assert err > 1e-4, err  # ~1e-3 at initialisation; the invariant networks stay below 1e-5 (float32)


# --------------------------------------------------------------------------- resume
def test_resume_equals_uninterrupted_run(xyz_dir, tmp_path):
    """SE3 with augmentation: the lifting samples and the augmentation draws continue exactly."""
    a, b = tmp_path / "a", tmp_path / "b"
    assert _run(_train_args(xyz_dir, a, "--epochs", "3", group="SE3"))[0] == 0
    assert _run(_train_args(xyz_dir, b, "--epochs", "3", "--stop-after", "1", group="SE3"))[0] == 0
    assert _run(_train_args(xyz_dir, b, "--epochs", "3", "--resume", group="SE3"))[0] == 0
    sa, sb = (torch.load(d / "checkpoint.pt", weights_only=True) for d in (a, b))
    for key in sa["model"]:
        assert torch.equal(sa["model"][key], sb["model"][key]), key
        assert torch.equal(sa["best_state"][key], sb["best_state"][key]), key
    assert "augment" in sa["module_rng"] and torch.equal(sa["module_rng"]["augment"], sb["module_rng"]["augment"])
    strip = lambda d: [{k: v for k, v in json.loads(line).items() if k != "epoch_time_s"}  # noqa: E731
                       for line in (d / "metrics.jsonl").read_text().splitlines()]
    assert strip(a) == strip(b) and len(strip(a)) == 3
    ta, tb = (json.loads((d / "train_summary.json").read_text()) for d in (a, b))
    assert ta["test_mae"] == tb["test_mae"]


# --------------------------------------------------------------------------- errors
def _bad_xyz(tmp_path):
    folder = write_xyz(tmp_path / "bad")
    first = folder / f"dsgdb9nsd_{MOLS[0][0]:06d}.xyz"
    lines = first.read_text().split("\n")
    lines[3] = lines[3].replace(lines[3].split("\t")[2], "1.2.3", 1)
    first.write_text("\n".join(lines))
    return folder


ERRORS = {
    "missing data": (lambda tmp, xyz: ["--data-dir", str(tmp / "empty"), "--source", "auto"], "no QM9 data"),
    "malformed xyz": (lambda tmp, xyz: ["--data-dir", str(_bad_xyz(tmp))], "line 4: '1.2.3' is not a number"),
    "unknown target": (lambda tmp, xyz: ["--target", "enthalpy"],
                       "unknown QM9 target 'enthalpy'; choose one of: " + ", ".join(Q.TARGETS)),
    "2D group": (lambda tmp, xyz: ["--group", "SE2"], "group SE2 acts on R^2, but molecules live in R^3"),
    "metric and alpha": (lambda tmp, xyz: ["--group", "SE3", "--alpha", "0.3", "--metric", "rx=1"],
                         "--alpha and --metric"),
    "width": (lambda tmp, xyz: ["--width", "18"], "multiple of 4"),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_bad_train_inputs_give_one_line_and_status_2(case, xyz_dir, tmp_path, capsys):
    extra, message = ERRORS[case]
    (tmp_path / "empty").mkdir()
    argv = with_flags(_train_args(xyz_dir, tmp_path / "out", "--epochs", "1"), extra(tmp_path, xyz_dir))
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("lieconv: error: ") and message in err, err
    if case == "malformed xyz":
        assert f"dsgdb9nsd_{MOLS[0][0]:06d}.xyz" in err
    assert not (tmp_path / "out" / "checkpoint.pt").exists()


def test_download_offline_is_one_line(tmp_path, monkeypatch, capsys):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    assert main(["data", "qm9", "--download", "--data-dir", str(tmp_path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("lieconv: error: ") and "needs network access" in err, err
    assert not any(tmp_path.iterdir())


def test_data_command_builds_the_cache(xyz_dir, capsys):
    assert main(["data", "qm9", "--data-dir", str(xyz_dir), "--source", "official", "--no-progress"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["source"] == "official" and out["molecules"] == N_SPLIT


# --------------------------------------------------------------------------- study
def test_study_presets_plan_the_runs(capsys):
    assert main(["study", "qm9", "--preset", "cpu", "--dry-run"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert [(r["label"], r["folder"], r["epochs"]) for r in plan["runs"]] == [
        ("MolecLieResNet(SE3)", "MolecLieResNet-SE3/homo/seed0", 7),
        ("MolecLieResNet(T3)", "MolecLieResNet-T3/homo/seed0", 7)]
    assert plan["jobs"] == 2
    assert main(["study", "qm9", "--preset", "paper", "--dry-run"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert len(plan["runs"]) == 15 and all(r["epochs"] == 500 for r in plan["runs"])
    runs, _ = TASK.study_plan("cpu", argparse.Namespace(groups=["SO3"], targets=["mu", "Cv"]))
    assert [(r.config["group"], r.config["target"], r.config["net"]["lift_samples"]) for r in runs] == [
        ("SO3", "mu", 4), ("SO3", "Cv", 4)]
    table = markdown_table([{"label": "MolecLieResNet(T3)", "target": "homo", "unit": "meV", "test_mae": 101.25,
                             "baseline_mae": 440.0, "best_val_mae": None, "steps": 1280, "s_per_step": 0.25}])
    assert "| MolecLieResNet(T3) | homo | 101.2 | 440 | meV | – | 1,280 | 0.25 |" in table


def test_study_runs_end_to_end_and_reuses_runs(xyz_dir, tmp_path, monkeypatch):
    from lieconv_runtime.tasks import qm9 as task_module
    from lieconv_runtime.tasks.study import run_study

    tiny = dict(runs=(("T3", ("homo", "mu")),), n_train=16, n_val=4, n_test=8, epochs=1, width=8, num_layers=1,
                jobs=1, description="tiny")
    monkeypatch.setitem(task_module.PRESETS, "tiny", tiny)
    args = argparse.Namespace(groups=None, targets=None)
    monkeypatch.setattr(TASK, "make_config", _official(TASK.make_config))
    out = tmp_path / "study"
    result = run_study(TASK, "tiny", args, out_dir=out, data_dir=str(xyz_dir), progress=False)
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [(r["target"], r["unit"], r["steps"]) for r in rows] == [("homo", "meV", 1), ("mu", "D", 1)]  # batch 75
    assert all(r["test_mae"] > 0 and r["baseline_mae"] > 0 and r["n_test"] == 8 for r in rows)
    assert "| MolecLieResNet(T3) | mu |" in (out / "table.md").read_text()
    assert (out / "learning_curves.png").read_bytes()[:8] == PNG and result["rows"] == rows
    again = run_study(TASK, "tiny", args, out_dir=out, data_dir=str(xyz_dir), progress=False)
    assert [r["test_mae"] for r in again["rows"]] == [r["test_mae"] for r in rows]


def _official(make_config):
    def wrapped(**kw):
        return make_config(**{**kw, "source": "official"})

    return wrapped


def test_run_main_job_defaults():
    from lieconv_runtime.cli import build_parser

    args = build_parser().parse_args(["run", "qm9"])
    assert (args.group, args.target, args.n_train, args.n_val, args.n_test, args.width, args.num_layers, args.epochs,
            args.eval, args.out) == ("T3", "homo", 5000, 500, 1000, 256, 6, 5, True, "runs/qm9/quick")
    config = TASK.config(args)
    assert (config["lr"], config["batch_size"], config["warmup_frac"]) == (3e-3, 75, 0.01)
    args = build_parser().parse_args(["train", "qm9"])
    assert (args.group, args.epochs, args.batch_size, args.lr, args.width, args.n_train) == ("T3", 500, 75, 3e-3, 1536, None)


def test_presets_are_the_documented_ones():
    cpu = PRESETS["cpu"]
    assert (cpu["n_train"], cpu["n_val"], cpu["n_test"], cpu["epochs"], cpu["width"], cpu["num_layers"]) == \
        (12_000, 1_000, 2_000, 7, 256, 6)
    assert math.ceil(cpu["n_train"] / 75) * cpu["epochs"] == 1120
    paper = PRESETS["paper"]
    assert (paper["n_train"], paper["epochs"], paper["width"]) == (None, 500, 1536)
