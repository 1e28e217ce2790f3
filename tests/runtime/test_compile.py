"""`HamiltonianModel.compile_derivative` (torch.compile of J grad H): the same derivative and training
gradients as the eager model in float32 and float64, and one clear error when a model cannot compile."""

import pytest
import torch

from lieconv_runtime.cli import main
from lieconv_runtime.models.hamiltonian import CompileError, build_hlieresnet, predict_chunks
from lieconv_runtime.models.registry import build_model

N, D, BS = 6, 2, 4
TOL = {torch.float32: 2e-5, torch.float64: 1e-12}


@pytest.fixture(autouse=True)
def _fresh_compiler():
    """Dynamo's caches emptied, as in a fresh process."""
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    yield


class _Chunk:
    """A batch of 5-state chunks as predict_chunks reads it."""

    def __init__(self, dtype):
        g = torch.Generator().manual_seed(1)
        self.z0 = torch.randn(BS, 2 * N * D, generator=g, dtype=dtype)
        self.ts = torch.linspace(0, 0.2, 5, dtype=dtype)
        self.m = torch.rand(BS, N, generator=g, dtype=dtype) + 0.5
        self.k = torch.rand(BS, N, generator=g, dtype=dtype) + 0.5
        self.zs = torch.randn(BS, 5, 2 * N * D, generator=g, dtype=dtype)


def _derivative_and_gradients(model, batch):
    dz = model.derivative(batch.z0, batch.m, batch.k)
    pred, target = predict_chunks(model, batch)
    model.zero_grad()
    ((pred - target) ** 2).mean().backward()
    return dz.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("group", ["T2", "Trivial2"])
def test_compiled_derivative_and_gradients_equal_eager(group, dtype):
    torch.manual_seed(0)
    eager = build_hlieresnet(N, D, group, width=16, num_layers=1).to(dtype)
    compiled = build_hlieresnet(N, D, group, width=16, num_layers=1).to(dtype)
    compiled.load_state_dict(eager.state_dict())
    compiled.compile_derivative()
    batch = _Chunk(dtype)
    dz_e, grads_e = _derivative_and_gradients(eager, batch)
    dz_c, grads_c = _derivative_and_gradients(compiled, batch)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1  # the compiled path ran, one graph for every stage
    scale = dz_e.abs().max()
    assert float((dz_c - dz_e).abs().max() / scale) <= TOL[dtype]
    assert len(grads_c) == len(grads_e) > 0
    for a, b in zip(grads_c, grads_e):
        assert float((a - b).abs().max()) <= TOL[dtype] * (1 + float(b.abs().max()))
    with torch.no_grad():  # evaluation stays eager
        assert torch.equal(compiled.derivative(batch.z0, batch.m, batch.k), eager.derivative(batch.z0, batch.m, batch.k))


def test_many_models_in_one_process_each_compile():
    """Each model instance is a graph of its own; dynamo's default limit (8 per function) would stop
    the fifth model (two graphs each: the first RK4 stage's state needs no gradient)."""
    batch = _Chunk(torch.float32)
    for seed in range(6):
        torch.manual_seed(seed)
        model = build_hlieresnet(N, D, "Trivial2", width=8, num_layers=1).compile_derivative()
        pred, _ = predict_chunks(model, batch)
        assert pred.requires_grad


def test_a_model_that_does_not_trace_raises_compile_error():
    model = build_model("HLieResNet", N, D, "SO2", width=16, num_layers=1).compile_derivative()
    batch = _Chunk(torch.float32)
    with pytest.raises(CompileError, match=r"does not compile as one graph \(torch.compile: .+\); train without"):
        model.derivative(batch.z0, batch.m, batch.k)


def _train(tmp_path, model, group=None):
    return ["train", "springs", "--model", model, *(["--group", group] if group else []), "--compile",
            "--n-train", "8", "--n-val", "4", "--n-test", "4", "--n-systems", "16", "--n-times", "30",
            "--t-end", "0.5", "--batch-size", "8", "--epochs", "1", "--model-kw", "width=16",
            "--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "out"), "--no-progress"]


@pytest.mark.parametrize("model, group, message", [
    ("HLieResNet", "SO2", "lieconv: error: HamiltonianDynamics's derivative does not compile as one graph"),
    ("FC", None, "lieconv: error: --compile: model FC is not a Hamiltonian model"),
])
def test_cli_compile_errors_are_one_line(model, group, message, tmp_path, capsys):
    assert main(_train(tmp_path, model, group)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(message) and "Traceback" not in "".join(err), err
    assert not (tmp_path / "out" / "checkpoint.pt").exists()
