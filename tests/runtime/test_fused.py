"""Batch norm fused with swish on the native kernels (lieconv_runtime.nn.fused, native/bn_act.c):
the values, gradients and running statistics of MaskedBatchNorm (+ swish), in float64 and
float32, for the specialised channel counts and others, on any thread count."""

from __future__ import annotations

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck
from torch.nn import functional as F

from lieconv_runtime import native
from lieconv_runtime.nn import MaskedBatchNorm
from lieconv_runtime.nn import fused
from lieconv_runtime.nn.fused import bn_act

pytestmark = pytest.mark.skipif(not native.available(), reason="no C compiler: the native kernels are optional")




def _norms(c, dtype, n=2):
    norms = [MaskedBatchNorm(c).to(dtype) for _ in range(n)]
    for nm in norms:
        with torch.no_grad():
            nm.weight.copy_(torch.linspace(0.5, 2.0, c))
            nm.bias.copy_(torch.linspace(-1.0, 1.0, c))
    return norms


def _input(p, c, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(p, c, generator=gen, dtype=torch.float64) * torch.linspace(0.1, 4.0, c, dtype=torch.float64) + 3
    return z.to(dtype).requires_grad_()


@pytest.mark.parametrize("act", [True, False], ids=["swish", "identity"])
@pytest.mark.parametrize("c", [16, 32, 64, 5])  # the specialised widths, and the generic loop
@pytest.mark.parametrize("p", [2, 3, 1000])
def test_bn_act_is_batch_norm_and_swish(dtype, act, c, p):
    z = _input(p, c, dtype)
    bias = torch.linspace(-2.0, 2.0, c, dtype=dtype).requires_grad_()
    ours, plain = _norms(c, dtype)
    for step in range(3):  # the running statistics follow over several steps
        out = bn_act(z, ours, act, bias)
        ref = plain(z + bias)
        ref = F.silu(ref) if act else ref
        tol = 1e-12 if dtype == torch.float64 else 2e-5
        assert (out - ref).abs().max() <= tol * (1 + ref.abs().max())
        g = torch.randn_like(ref)
        got = torch.autograd.grad(out, [z, ours.weight, ours.bias, bias], g)
        want = torch.autograd.grad(ref, [z, plain.weight, plain.bias, bias], g)
        for name, a, b in zip(["z", "gamma", "beta"], got, want):
            if name == "z" and p == 2:  # two rows normalise to -1, +1 whatever z: d/dz is rounding noise
                continue
            assert (a - b).abs().max() <= 20 * tol * (1 + b.abs().max()), name
        assert torch.equal(got[3], torch.zeros_like(bias))  # a bias before batch norm cancels exactly
        assert (want[3].abs().max() <= 20 * tol * (1 + got[0].abs().max() * p))  # plain: rounding noise
        for (name, a), b in zip(ours.named_buffers(), plain.buffers()):
            torch.testing.assert_close(a, b, rtol=10 * tol, atol=10 * tol, msg=name)


def test_bn_act_float32_statistics_are_accurate(dtype):
    """Statistics accumulate in float64: with a large mean the output stays within a few ulps of
    the exact one (torch's float32 batch norm is off by about 1e-5 on this input)."""
    z = _input(26912, 32, dtype).detach()
    (norm,) = _norms(32, dtype, 1)
    out = bn_act(z, norm, True)
    exact = F.silu(F.batch_norm(z.double(), None, None, norm.weight.double(), norm.bias.double(), True, 0.0, norm.eps))
    tol = 1e-13 if dtype == torch.float64 else 3e-6
    assert (out.double() - exact).abs().max() <= tol * exact.abs().max()


def test_bn_act_gradcheck_and_second_derivatives():
    """float64 gradcheck, and gradgradcheck (create_graph: the backward recomputes with torch ops),
    with respect to z, gamma and beta (the tensors passed are the norm's own parameters)."""
    z = _input(12, 5, torch.float64)
    (norm,) = _norms(5, torch.float64, 1)
    for act in (True, False):
        fn = lambda z, gamma, beta: bn_act(z, norm, act)  # noqa: E731  (gamma, beta: norm's parameters)
        assert gradcheck(fn, (z, norm.weight, norm.bias))
        assert gradgradcheck(fn, (z, norm.weight, norm.bias))


def test_native_bn_act_thread_counts_and_in_place(dtype):
    """Any thread count (more threads than rows too) gives the same result up to the order of
    the sums; the backward may write over its incoming gradient; a wrong `out` is refused."""
    z = _input(301, 32, dtype).detach()
    gamma, beta = torch.linspace(0.5, 2, 32, dtype=dtype), torch.linspace(-1, 1, 32, dtype=dtype)
    grad = torch.randn(301, 32, dtype=torch.float64).to(dtype)
    saved = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            out, mean, var = native.bn_act_forward(z, gamma, beta, 1e-5, True)
            results.append((out, mean, var, *native.bn_act_backward(z, grad, gamma, beta, mean,
                                                                     torch.rsqrt(var + 1e-5), True)))
        torch.set_num_threads(1)
        tiny = native.bn_act_forward(z[:2], gamma, beta, 1e-5, True)[0]  # fewer rows than threads below
        torch.set_num_threads(3)
        torch.testing.assert_close(native.bn_act_forward(z[:2], gamma, beta, 1e-5, True)[0], tiny)
    finally:
        torch.set_num_threads(saved)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            torch.testing.assert_close(a, b)
    out, mean, var, gz, dgamma, dbeta = results[0]
    g = grad.clone()
    res = native.bn_act_backward(z, g, gamma, beta, mean, torch.rsqrt(var + 1e-5), True, out=g)
    assert res[0] is g
    torch.testing.assert_close(g, gz)
    with pytest.raises(ValueError, match="out must be a contiguous"):
        native.bn_act_backward(z, grad, gamma, beta, mean, var, True, out=grad.t().contiguous().t())


def test_bn_act_extreme_inputs_stay_finite(dtype):
    """The exp clamps: swish of normalised values of +-1.4e4 (columns with two outliers) is
    finite, as are its gradients, and both match the float64 reference."""
    z = torch.zeros(20000, 16, dtype=dtype)
    z[0] = 1e6  # normalised: about +-141 in rows 0 and 1, about 0 elsewhere; times gamma = 100
    z[1] = -1e6
    z = z.requires_grad_()
    (norm,) = _norms(16, dtype, 1)
    with torch.no_grad():
        norm.weight.fill_(100.0)
    out = bn_act(z, norm, True)
    (gz,) = torch.autograd.grad(out.sum(), [z])
    z64 = z.detach().double().requires_grad_()
    ref = F.silu(F.batch_norm(z64, None, None, norm.weight.detach().double(), norm.bias.detach().double(), True,
                              0.0, norm.eps))
    (rz,) = torch.autograd.grad(ref.sum(), [z64])
    assert torch.isfinite(out).all() and torch.isfinite(gz).all()
    tol = 1e-5 if dtype == torch.float32 else 1e-12  # of the largest entry: the column sums cancel
    assert (out.double() - ref).abs().max() <= tol * ref.abs().max()
    assert (gz.double() - rz).abs().max() <= tol * rz.abs().max()


def test_without_native_kernels_bn_act_is_the_plain_modules(monkeypatch):
    monkeypatch.setattr(fused, "USE_FUSED", False)
    z = _input(50, 7, torch.float64)
    ours, plain = _norms(7, torch.float64)
    bias = torch.randn(7, dtype=torch.float64)
    assert not fused.fused_available(z)
    torch.testing.assert_close(bn_act(z, ours, True, bias), F.silu(plain(z + bias)), rtol=0, atol=0)


@pytest.mark.parametrize("padded", [False, True], ids=["all_valid", "padded"])
def test_pointwise_norm_fused_is_masked_batch_norm_and_swish(dtype, padded, monkeypatch):
    """A BottleBlock's batch norm + swish (PointwiseNorm): fused when every entry is valid (training
    mode), the masked path otherwise; values, gradients and running statistics as the plain modules."""
    from lieconv_runtime.lift import Lifted
    from lieconv_runtime.nn.resnet import PointwiseNorm

    bs, n, c = 3, 40, 32
    values = _input(bs * n, c, dtype).detach().reshape(bs, n, c).requires_grad_()
    mask = torch.ones(bs, n, dtype=torch.bool)
    if padded:
        mask[1, 30:] = False
    empty = torch.zeros(bs, n, 0, dtype=dtype)
    cloud = Lifted(empty, empty, empty, empty, empty, values, mask, 1)
    ours, plain = PointwiseNorm(c).to(dtype).train(), PointwiseNorm(c).to(dtype).train()
    plain.load_state_dict(ours.state_dict())
    out = ours(cloud).values
    monkeypatch.setattr(fused, "USE_FUSED", False)
    ref = plain(cloud).values
    tol = 1e-12 if dtype == torch.float64 else 2e-5
    assert (out - ref).abs().max() <= tol * (1 + ref.abs().max())
    g = torch.randn_like(ref)
    got = torch.autograd.grad(out, [values, ours.norm.weight, ours.norm.bias], g)
    want = torch.autograd.grad(ref, [values, plain.norm.weight, plain.norm.bias], g)
    for a, b in zip(got, want):
        assert (a - b).abs().max() <= 20 * tol * (1 + b.abs().max())
    for a, b in zip(ours.buffers(), plain.buffers()):
        torch.testing.assert_close(a, b, rtol=10 * tol, atol=10 * tol)
