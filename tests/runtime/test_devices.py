"""Device parity (issue 4): on an accelerator the runtime computes what it computes on the CPU.

Every check runs a CPU copy and a device copy of the same inputs and network and compares them:
generated group operations, lifting (NaN padding included), training-mode LieResNet outputs and
gradients (radius adaptation, subsampling, the memory-lean kernel MLP, kNN), the image network,
and the public equivariance check on the device.  Random choices (lifting samples, neighbourhood
keys, FPS starts) come from CPU generators and integer hashes, so both copies choose the same
neighbours and outputs agree to rounding.

Runs on CUDA when torch sees it, else on the CPU (two CPU copies: the device plumbing and the tests
themselves are exercised on every machine, CI included).  LIECONV_TEST_DEVICES (a comma list, e.g.
cuda,cpu) picks the devices.
"""

from __future__ import annotations

import copy
import os

import pytest
import torch

from lieconv_runtime import load_group
from lieconv_runtime.models import ImgLieResNet
from lieconv_runtime.testing import equivariance_error
from tests.runtime.test_equivariance import GROUPS, TOL, inputs, tiny_net


def _devices() -> list[str]:
    env = os.environ.get("LIECONV_TEST_DEVICES")
    if env is not None:
        return [d for d in env.split(",") if d]
    return ["cuda"] if torch.cuda.is_available() else ["cpu"]


DEVICES = _devices()
DEVICE_PARAMS = DEVICES
#: relative tolerance of device against CPU: rounding differs (summation order, fused kernels)
PARITY = {torch.float64: 1e-10, torch.float32: 1e-4}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """|a - b| / |b| over finite entries, a on any device, b on the CPU."""
    a = a.detach().cpu().double()
    b = b.detach().double()
    assert torch.equal(torch.isfinite(a), torch.isfinite(b)), "non-finite entries differ"
    ok = torch.isfinite(b)
    return float((a[ok] - b[ok]).norm() / b[ok].norm().clamp_min(1e-300))


def to(t, device):
    return None if t is None else t.to(device)


@pytest.mark.parametrize("device", DEVICE_PARAMS)
@pytest.mark.parametrize("name", GROUPS + ["SO2z", "Boost", "Rx"])
def test_group_operations_match_the_cpu(name, dtype, device):
    G = load_group(name)
    gen = torch.Generator().manual_seed(1)
    a = torch.randn(64, G.lie_dim, generator=gen, dtype=torch.float64).to(dtype)
    g = G.exp(a)
    checks = {"exp": (G.exp(to(a, device)), g), "log": (G.log(to(g, device)), G.log(g)),
              "inv": (G.inv(to(g, device)), G.inv(g)),
              "bracket": (G.bracket(to(a, device), to(a.flip(0), device)), G.bracket(a, a.flip(0)))}
    for op, (on_device, on_cpu) in checks.items():
        assert on_device.device.type == torch.device(device).type, f"{name}.{op} left the device"
        assert on_device.dtype == dtype, f"{name}.{op} changed dtype"
        assert rel(on_device, on_cpu) <= PARITY[dtype], f"{name}.{op}: {rel(on_device, on_cpu):.2e}"


@pytest.mark.parametrize("device", DEVICE_PARAMS)
@pytest.mark.parametrize("name", GROUPS)
def test_lift_matches_the_cpu(name, dtype, device):
    G = load_group(name, lift_samples=2)
    x, v, mask = inputs(G, dtype)
    h = None
    if G.stabilizer_dim:
        h = G.sample_stabilizer(x.shape[:2] + (2,), generator=torch.Generator().manual_seed(2), dtype=dtype)
    cpu = G.lift(x, v, mask, stabilizer=h)
    dev = G.lift(to(x, device), to(v, device), to(mask, device), stabilizer=to(h, device))
    assert torch.equal(dev.mask.cpu(), cpu.mask)
    for field in ("coords", "g", "g_inv", "a", "q", "values"):
        t = getattr(dev, field)
        assert t.device.type == torch.device(device).type and t.dtype == dtype, field
        assert rel(t, getattr(cpu, field)) <= PARITY[dtype], f"{name} lift.{field}: {rel(t, getattr(cpu, field)):.2e}"


def _step(net, *args, call=None):
    out = (call or type(net).__call__)(net, *args)
    out.pow(2).sum().backward()
    return out, {n: p.grad for n, p in net.named_parameters()}


def _compare_networks(net, args, device, dtype, what: str, call=None):
    """One training step of call(net, *args) (default net(*args)) and of a copy on the device:
    outputs, gradients, buffers."""
    ref = copy.deepcopy(net)
    out_cpu, grads_cpu = _step(ref, *args, call=call)
    out_dev, grads_dev = _step(net.to(device), *(to(t, device) for t in args), call=call)
    assert out_dev.device.type == torch.device(device).type
    assert rel(out_dev, out_cpu) <= PARITY[dtype], f"{what} output: {rel(out_dev, out_cpu):.2e}"
    total = torch.cat([g.flatten() for g in grads_cpu.values() if g is not None]).norm()
    for n, g in grads_cpu.items():  # a bias followed by batch norm gets none, on either device
        assert (g is None) == (grads_dev[n] is None), f"{what}: gradient of {n} on one device only"
        if g is not None:  # relative, with a floor: some gradients are zero up to rounding (a bias before BN)
            err = float((grads_dev[n].cpu() - g).norm() / torch.maximum(g.norm(), 1e-3 * total))
            assert err <= 10 * PARITY[dtype], f"{what} grad {n}: {err:.2e}"
    for (n, b), (_, b_cpu) in zip(net.named_buffers(), ref.named_buffers()):  # radii, BN statistics
        if b.is_floating_point():
            assert rel(b, b_cpu) <= 10 * PARITY[dtype], f"{what} buffer {n}: {rel(b, b_cpu):.2e}"


@pytest.mark.parametrize("device", DEVICE_PARAMS)
@pytest.mark.parametrize("name", GROUPS)
def test_training_step_matches_the_cpu(name, dtype, device):
    """Training mode: radius adaptation, BN statistics, FPS subsampling and random neighbourhoods."""
    G = load_group(name)
    _compare_networks(tiny_net(G, dtype, 0.6).train(), inputs(G, dtype), device, dtype, name)


@pytest.mark.parametrize("device", DEVICE_PARAMS)
@pytest.mark.parametrize("variant", ["lean", "knn", "frame"])
def test_network_variants_match_the_cpu(variant, device, monkeypatch):
    G = load_group("SE3" if variant == "frame" else "SE2")
    kw = {"knn": {"knn": True}, "frame": {"lift_mode": "frame", "lift_samples": 2}}.get(variant, {})
    if variant == "lean":  # the memory-lean kernel MLP and chunked contraction, chunks not dividing the pairs
        monkeypatch.setattr("lieconv_runtime.nn.lieconv.LEAN_MIN_ROWS", 0)
        monkeypatch.setattr("lieconv_runtime.nn.lean._MLP_ROWS", 13)
        monkeypatch.setattr("lieconv_runtime.nn.lean._CHUNK_ROWS", 17)
        monkeypatch.setattr("lieconv_runtime.perf.ACCELERATOR_CHUNK_SCALE", 1)
    net = tiny_net(G, torch.float64, 0.6, **kw).train()
    _compare_networks(net, inputs(G, torch.float64), device, torch.float64, variant)


@pytest.mark.parametrize("device", DEVICE_PARAMS)
def test_image_network_matches_the_cpu(device):
    """The RotMNIST network (cached FPS, per-layer fills and widths) on slightly jittered pixel
    positions.  On the exact pixel lattice many distances tie, and rounding (a cloud's centring
    sums in another order on each device) breaks FPS ties differently: both runs are valid draws
    of the estimator, but not the same one.  Jitter removes the ties; the lattice itself must run."""
    net = ImgLieResNet(load_group("T2"), k=16, num_layers=2, total_ds=0.5).double().train()
    images = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    coords, values, mask = net.points(images)
    coords = coords + 1e-3 * torch.randn(coords.shape, generator=torch.Generator().manual_seed(6), dtype=coords.dtype)
    _compare_networks(net, (coords, values, mask), device, torch.float64, "ImgLieResNet",
                      call=lambda m, *a: m.forward_lifted(m.lift(*a)))
    logits = net(images.to(device))  # the lattice itself, on the device
    logits.logsumexp(-1).sum().backward()
    assert torch.isfinite(logits).all() and all(p.grad is None or torch.isfinite(p.grad).all() for p in net.parameters())


@pytest.mark.parametrize("device", DEVICE_PARAMS)
@pytest.mark.parametrize("name", ["T2", "SE2", "Sim2", "SE3"])
def test_pooled_output_is_invariant_on_the_device(name, dtype, device):
    G = load_group(name)
    net = tiny_net(G, dtype, 0.6).train().to(device)
    x, v, mask = (t.to(device) for t in inputs(G, dtype))
    report = equivariance_error(net, G, (x, v, mask), seed=1)
    assert report.error <= TOL[dtype], f"{name}: relative error {report.error:.2e}"
