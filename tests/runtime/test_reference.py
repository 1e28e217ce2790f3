"""The fast LieConv layer against the paper's Algorithm 2 (`lieconv_runtime.nn.reference`): values and
gradients (of the input values and of every parameter), in training and eval mode, padded and not,
for each pair-geometry strategy (flat T2/T3, orthogonal SE2/SE3/SO3 with orbits, general Sim2/RxSO2),
with ball sampling, a neighbourhood limit, kNN, every element a neighbour, and FPS queries; float64
and float32.  The fast layer may use its memory-lean functions, fused batch norms and native kernels:
whatever path it takes must equal the reference."""

from __future__ import annotations

import copy

import pytest
import torch

from lieconv_runtime import load_group
from lieconv_runtime.nn import LieConv
from lieconv_runtime.nn.reference import reference_lieconv

GROUPS = {"T2": 1, "T3": 1, "SE2": 2, "SE3": 2, "SO3": 2, "Sim2": 2, "RxSO2": 2}
SETTINGS = {  # LieConv options: ball + random subset, limit, kNN, dense, FPS queries
    "ball": dict(nbhd=6, fill=0.4),
    "ball_all": dict(nbhd=None, fill=0.5),
    "knn": dict(nbhd=5, knn=True),
    "dense": dict(nbhd=None, fill=1.0),
    "fps": dict(nbhd=6, fill=0.5, ds_frac=0.5),
}


def _cloud(name, dtype, padded, seed=0):
    G = load_group(name, lift_samples=GROUPS[name])
    gen = torch.Generator().manual_seed(seed)
    bs, n = 2, 14
    x = 1.5 * torch.randn(bs, n, G.space_dim, generator=gen, dtype=torch.float64)
    mask = torch.ones(bs, n, dtype=torch.bool)
    if padded:
        mask[1, 9:] = False
    v = torch.randn(bs, n, 3, generator=gen, dtype=torch.float64)
    cloud = G.lift(x.to(dtype), v.to(dtype), mask, generator=gen)
    return G, cloud


def _run(fn, layer, cloud):
    """(values, d values / d input, d values / d parameters) of a forward, loss = sum(out^2 * w)."""
    vals = cloud.values.clone().requires_grad_()
    out = fn(layer, cloud._replace(values=vals))
    w = torch.linspace(-1, 2, out.numel(), dtype=out.dtype).reshape(out.shape)
    grads = torch.autograd.grad((out.square() * w).sum(), [vals, *layer.parameters()], allow_unused=True)
    return out.detach(), grads


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("padded", [False, True], ids=["all_valid", "padded"])
@pytest.mark.parametrize("setting", SETTINGS)
@pytest.mark.parametrize("name", GROUPS)
def test_fast_layer_equals_algorithm_2(name, setting, padded, mode, dtype):
    torch.manual_seed(0)
    G, cloud = _cloud(name, dtype, padded)
    layer = LieConv(3, 4, G, **SETTINGS[setting]).to(dtype)
    with torch.no_grad():  # away from the initial radius / statistics: one training step first
        layer.train()(cloud)
    layer.train(mode == "train")
    layer.adapt_radius = False  # compare at one radius
    twin = copy.deepcopy(layer)  # the reference updates its own running statistics
    layer.reset_rng()
    query = layer.subsample(cloud)
    state = layer.rng().get_state()

    def fast(lay, cl):
        return lay(cl, query=query).values

    def reference(lay, cl):
        return reference_lieconv(lay, cl, query=query, generator=torch.Generator().set_state(state))

    got, got_grads = _run(fast, layer, cloud)
    want, want_grads = _run(reference, twin, cloud)
    tol = 1e-10 if dtype == torch.float64 else 3e-4
    scale = 1 + float(want.abs().max())
    assert got.shape == want.shape
    assert float((got - want).abs().max()) <= tol * scale, "values"
    names = ["values"] + [n for n, _ in layer.named_parameters()]
    for pname, a, b in zip(names, got_grads, want_grads):
        if a is None or b is None:  # a bias that a training-mode batch norm cancels
            other = a if a is not None else b
            assert other is None or float(other.abs().max()) <= 1e3 * tol * scale, pname
            continue
        assert float((a - b).abs().max()) <= 10 * tol * (1 + float(b.abs().max())), pname
    if mode == "train":
        for (pname, x), (_, y) in zip(layer.named_buffers(), twin.named_buffers()):
            if "running" in pname:
                assert torch.allclose(x, y, rtol=10 * tol, atol=10 * tol), pname


def test_the_reference_can_fail():
    """A layer with a perturbed weight disagrees with the reference of the original one."""
    torch.manual_seed(0)
    G, cloud = _cloud("SE2", torch.float64, padded=True)
    layer = LieConv(3, 4, G, nbhd=6, fill=0.5).double().eval()
    twin = copy.deepcopy(layer)
    with torch.no_grad():
        twin.kernel.linears[1].weight[0, 0] += 1e-3
    state = layer.rng().get_state()
    got = layer(cloud).values.detach()
    want = reference_lieconv(twin, cloud, generator=torch.Generator().set_state(state))
    assert float((got - want).abs().max()) > 1e-6
