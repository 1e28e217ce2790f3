"""Trainer: exact resume (also inside an epoch), atomic checkpoints, metrics, early stopping, weighted
metrics, fractional epochs and max_steps, the cosine schedule as a LambdaLR, layer generators."""

import json
import math
import os

import pytest
import torch
from torch.utils.data import TensorDataset

from lieconv_runtime.data.springs import generate_springs, make_chunks
from lieconv_runtime.models import FC, predict_chunks
from lieconv_runtime.train import Regression, Trainer, cosine_factor, cosine_schedule


@pytest.fixture(scope="module")
def chunks():
    traj = generate_springs(40, 3, 2, n_times=60, t_end=3.0, seed=0, progress=False)
    data = make_chunks(traj, chunk_len=5, seed=0, dtype=torch.float64)
    return data[torch.arange(24)], data[torch.arange(24, 32)], data[torch.arange(32, 39)]


def _model(seed=0):
    torch.manual_seed(seed)
    return FC(3, 2, width=16, n_hidden=2).double()


def _trainer(model, chunks, out, **kw):
    train, val, test = chunks
    args = dict(out_dir=out, epochs=4, lr=1e-2, batch_size=8, patience=10, seed=7, progress=False)
    args.update(kw)
    return Trainer(model, Regression(predict_chunks), train, val, test, **args)


def test_resume_reproduces_uninterrupted_run(chunks, tmp_path):
    straight = _model()
    s_a = _trainer(straight, chunks, tmp_path / "a").fit()
    assert s_a["finished"] and s_a["epochs_completed"] == 4 and s_a["steps"] == 12

    part = _model()
    s_b1 = _trainer(part, chunks, tmp_path / "b").fit(stop_after_epochs=2)
    assert not s_b1["finished"] and s_b1["epochs_completed"] == 2 and s_b1["test_mse"] is None
    assert not (tmp_path / "b" / "train_summary.json").exists()
    # fresh process state: another init and other global RNG draws, then resume
    resumed = _model(seed=123)
    torch.rand(5)
    s_b = _trainer(resumed, chunks, tmp_path / "b", resume=True).fit()

    for (name, p), q in zip(straight.named_parameters(), resumed.parameters()):
        assert torch.equal(p, q), name
    ck_a = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)
    ck_b = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    for key in ck_a["model"]:
        assert torch.equal(ck_a["model"][key], ck_b["model"][key])
    for key in ("best_val_mse", "test_mse", "best_epoch", "steps", "last_train_mse"):
        assert s_a[key] == s_b[key], key
    rows_a = [json.loads(l) for l in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    rows_b = [json.loads(l) for l in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows_b] == [1, 2, 3, 4]
    assert [(r["train_mse"], r["val_mse"], r["lr"]) for r in rows_a] == \
        [(r["train_mse"], r["val_mse"], r["lr"]) for r in rows_b]
    # resuming a finished run is a no-op that returns the same result
    again = _trainer(_model(seed=5), chunks, tmp_path / "b", resume=True).fit()
    assert again["test_mse"] == s_b["test_mse"] and again["epochs_completed"] == 4


def test_checkpoint_metrics_and_summary_files(chunks, tmp_path):
    model = _model()
    summary = _trainer(model, chunks, tmp_path, epochs=2).fit()
    files = sorted(os.listdir(tmp_path))
    assert files == ["checkpoint.pt", "metrics.jsonl", "train_summary.json"]  # no temp files left
    ck = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    for key in ("model", "optimizer", "schedule", "epoch", "best_val", "best_state", "rng"):
        assert key in ck
    assert set(ck["rng"]) == {"torch", "numpy", "python"}
    assert ck["epoch"] == 2 and ck["step"] == 6 and ck["schedule"]["last_epoch"] == 6
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    rows = [json.loads(l) for l in lines]
    assert len(rows) == 2 and all({"epoch", "train_mse", "val_mse", "lr"} <= set(r) for r in rows)
    assert json.loads((tmp_path / "train_summary.json").read_text()) == summary
    assert math.isfinite(summary["test_mse"]) and summary["n_params"] > 0


def test_mismatched_resume_is_refused(chunks, tmp_path):
    _trainer(_model(), chunks, tmp_path, epochs=2).fit(stop_after_epochs=1)
    with pytest.raises(ValueError, match="checkpoint"):
        _trainer(_model(), chunks, tmp_path, epochs=3, resume=True).fit()


def test_early_stopping_keeps_best_weights(chunks, tmp_path):
    model = _model()
    # lr = 0: the weights never change, validation never improves after epoch 1
    summary = _trainer(model, chunks, tmp_path, epochs=10, lr=0.0, patience=2).fit()
    assert summary["stopped_early"] and summary["epochs_completed"] == 3 and summary["best_epoch"] == 1
    # a run that gets worse: best weights (not the last) are restored
    model = _model()
    tr = _trainer(model, chunks, tmp_path / "up", epochs=6, lr=1.0, patience=None)
    summary = tr.fit()
    rows = [json.loads(l) for l in (tmp_path / "up" / "metrics.jsonl").read_text().splitlines()]
    vals = [r["val_mse"] for r in rows]
    assert summary["best_val_mse"] == min(vals) and summary["best_epoch"] < 6 and vals[-1] > min(vals)
    assert tr.evaluate(chunks[1])["mse"] == pytest.approx(summary["best_val_mse"], rel=1e-12)


def test_val_every_validates_on_schedule_and_last_epoch(chunks, tmp_path):
    straight = _trainer(_model(), chunks, tmp_path / "a", epochs=7, val_every=3, patience=None)
    summary = straight.fit()
    rows = [json.loads(l) for l in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    validated = [r["epoch"] for r in rows if r["val_mse"] is not None]
    assert validated == [3, 6, 7] and summary["best_epoch"] in validated
    assert summary["best_val_mse"] == min(r["val_mse"] for r in rows if r["val_mse"] is not None)
    # the same weights as validating every epoch (validation never changes training) ...
    every = _trainer(_model(), chunks, tmp_path / "b", epochs=7, patience=None)
    every.fit()
    ck = [torch.load(tmp_path / d / "checkpoint.pt", weights_only=True) for d in ("a", "b")]
    for key in ck[0]["model"]:
        assert torch.equal(ck[0]["model"][key], ck[1]["model"][key])
    # ... and resume keeps the schedule
    _trainer(_model(), chunks, tmp_path / "c", epochs=7, val_every=3, patience=None).fit(stop_after_epochs=4)
    resumed = _trainer(_model(seed=3), chunks, tmp_path / "c", epochs=7, val_every=3, patience=None, resume=True).fit()
    assert resumed["best_val_mse"] == summary["best_val_mse"] and resumed["test_mse"] == summary["test_mse"]
    with pytest.raises(ValueError, match="checkpoint"):  # another validation schedule is another run
        _trainer(_model(), chunks, tmp_path / "c", epochs=7, patience=None, resume=True).fit()


def test_mse_is_weighted_by_batch_size(chunks, tmp_path):
    model = _model()
    test = chunks[2]  # 7 chunks
    tr = _trainer(model, chunks, tmp_path, eval_batch_size=5)  # batches of 5 and 2
    with torch.no_grad():
        pred, target = predict_chunks(model, test)
        ref = float(((pred - target) ** 2).mean())
    assert tr.evaluate(test)["mse"] == pytest.approx(ref, rel=1e-12)
    per_batch_mean = sum(tr.evaluate(test[torch.arange(s, min(s + 5, 7))])["mse"] for s in (0, 5)) / 2
    assert abs(per_batch_mean - ref) > 1e-6 * ref  # the unweighted average would differ


def test_generic_tensor_dataset(tmp_path):
    torch.manual_seed(0)
    x = torch.randn(64, 3)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]])
    ds = TensorDataset(x, y)
    model = torch.nn.Linear(3, 1)
    summary = Trainer(model, Regression(), ds, ds, ds, out_dir=tmp_path, epochs=30, lr=0.1, batch_size=16,
                      progress=False).fit()
    assert summary["test_mse"] < 1e-2


def test_cosine_schedule():
    assert cosine_factor(0, 10) == 1.0
    assert cosine_factor(5, 10) == pytest.approx(0.5)
    assert cosine_factor(10, 10) == 1e-3  # floor
    assert cosine_factor(0.05, 10, warmup_frac=0.01) == pytest.approx(0.5 * 0.5 * (1 + math.cos(math.pi * 0.005)))
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=2.0)
    sched = cosine_schedule(opt, total_steps=12)
    assert isinstance(sched, torch.optim.lr_scheduler.LambdaLR) and opt.param_groups[0]["lr"] == 2.0
    for _ in range(6):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(2.0 * 0.5)  # step 6 of 12
    state = sched.state_dict()
    opt2 = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=2.0)
    other = cosine_schedule(opt2, total_steps=12)
    other.load_state_dict(state)
    assert other.get_last_lr() == sched.get_last_lr()


def test_fractional_epochs_and_max_steps(chunks, tmp_path):
    """24 chunks in batches of 8: 3 steps per epoch; 2.5 epochs = 8 steps; max_steps caps the run and the
    cosine schedule spans the capped run."""
    s = _trainer(_model(), chunks, tmp_path / "a", epochs=2.5).fit()
    assert s["steps"] == 8 and s["epochs_completed"] == 3 and s["finished"] and s["s_per_step"] > 0
    rows = [json.loads(l) for l in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [3, 6, 8]
    tr = _trainer(_model(), chunks, tmp_path / "b", epochs=10, max_steps=5)
    s = tr.fit()
    assert s["steps"] == 5 and s["epochs_completed"] == 2 and tr.total_steps == 5
    assert tr.optimizer.param_groups[0]["lr"] == pytest.approx(1e-2 * 1e-3)  # the end of the schedule


def test_resume_inside_an_epoch_is_exact(chunks, tmp_path, monkeypatch):
    """A checkpoint written inside an epoch (checkpoint_every_s = 0), then a crash: resuming from it gives
    the weights of an uninterrupted run."""
    straight = _model()
    _trainer(straight, chunks, tmp_path / "a", epochs=2).fit()
    crashing = _model()
    tr = _trainer(crashing, chunks, tmp_path / "b", epochs=2, checkpoint_every_s=0.0)
    real_step, calls = tr._train_step, []

    def crash_on_fifth(batch):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real_step(batch)

    monkeypatch.setattr(tr, "_train_step", crash_on_fifth)
    with pytest.raises(KeyboardInterrupt):
        tr.fit()
    ck = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    assert ck["epoch"] == 1 and ck["step_in_epoch"] == 1 and ck["step"] == 4
    resumed = _model(seed=9)
    _trainer(resumed, chunks, tmp_path / "b", epochs=2, resume=True).fit()
    for (name, p), q in zip(straight.named_parameters(), resumed.parameters()):
        assert torch.equal(p, q), name


def test_layer_generators_are_checkpointed(tmp_path):
    """LieConv layers draw neighbourhoods from their own generators: a resumed run continues their streams
    (ball sampling with a random subset), so it ends with the weights of an uninterrupted run."""
    from lieconv_runtime import load_group
    from lieconv_runtime.nn import LieResNet

    G = load_group("SE2", lift_samples=2)
    gen = torch.Generator().manual_seed(0)
    x, v = torch.randn(24, 12, 2, generator=gen), torch.randn(24, 12, 1, generator=gen)
    y = (x.norm(dim=-1).mean(-1, keepdim=True) > 1.2).double()
    ds = TensorDataset(x.double(), v.double(), y)

    def trainer(out, resume=False):
        torch.manual_seed(0)
        net = LieResNet(1, G, num_outputs=1, k=8, num_layers=1, nbhd=4, fill=0.5).double()
        return net, Trainer(net, Regression(), ds, ds, out_dir=out, epochs=3, lr=1e-2, batch_size=8, progress=False,
                            resume=resume)

    straight, tr = trainer(tmp_path / "a")
    tr.fit()
    for _ in range(3):  # a fresh process after every epoch: new modules, generators restarted
        net, tr = trainer(tmp_path / "b", resume=True)
        tr.fit(stop_after_epochs=1)
    for (name, p), q in zip(straight.named_parameters(), net.parameters()):
        assert torch.equal(p, q), name


def test_adam_is_fused_where_torch_has_it_and_updates_like_plain_adam():
    from lieconv_runtime.train.trainer import adam

    gen = torch.Generator().manual_seed(0)
    start = [torch.randn(5, 3, generator=gen, dtype=torch.float64), torch.randn(4, generator=gen, dtype=torch.float64)]
    grads = [[torch.randn(p.shape, generator=gen, dtype=torch.float64) for p in start] for _ in range(3)]
    params = {}
    for name, make in [("fused", lambda ps: adam(ps, 1e-2)), ("plain", lambda ps: torch.optim.Adam(ps, lr=1e-2))]:
        ps = [p.clone().requires_grad_() for p in start]
        opt = make(ps)
        for g in grads:
            for p, gp in zip(ps, g):
                p.grad = gp.clone()
            opt.step()
        params[name] = (ps, opt)
    assert params["fused"][1].defaults["fused"] is True
    for a, b in zip(params["fused"][0], params["plain"][0]):
        assert torch.allclose(a, b, rtol=0, atol=1e-12)
    # a parameter on a device without the fused kernel falls back to the per-tensor update
    meta = torch.zeros(2, device="meta", requires_grad=True)
    assert not adam([meta], 1e-3).defaults["fused"]
