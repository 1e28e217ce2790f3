"""Memory-lean autograd functions (lieconv_runtime.nn.lean): the same values, first and second
derivatives as the plain ops they replace, in float64 (gradcheck, gradgradcheck) and float32."""

from __future__ import annotations

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck
from torch.nn import functional as F

from lieconv_runtime.nn import MaskedBatchNorm
from lieconv_runtime.nn.lean import bn_silu_linear, contract_by_size, silu_contract, silu_contract_dense, silu_linear




def _compare(lean, plain, inputs, dtype):
    """Outputs and gradients (w.r.t. every input that requires grad) of lean(*inputs) and plain(*inputs)."""
    tol = 1e-12 if dtype == torch.float64 else 2e-5
    out, ref = lean(*inputs), plain(*inputs)
    assert (out - ref).abs().max() <= tol * (1 + ref.abs().max())
    g = torch.randn_like(ref)
    wrt = [t for t in inputs if isinstance(t, torch.Tensor) and t.requires_grad]
    got = torch.autograd.grad(out, wrt, g)
    want = torch.autograd.grad(ref, wrt, g)
    for a, b in zip(got, want):
        assert (a - b).abs().max() <= 10 * tol * (1 + b.abs().max())


def _data(dtype, *shape, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=gen, dtype=torch.float64).to(dtype).requires_grad_()


@pytest.fixture(params=[None, 7], ids=["one_chunk", "chunks_of_7"])
def mlp_chunks(request, monkeypatch):
    """Run the fused functions in one chunk, or in chunks of 7 rows (not dividing the row count)."""
    if request.param is not None:
        monkeypatch.setattr("lieconv_runtime.nn.lean._MLP_ROWS", request.param)


def test_silu_linear(dtype, mlp_chunks):
    y, w, b = _data(dtype, 50, 6), _data(dtype, 4, 6, seed=1), _data(dtype, 4, seed=2)
    _compare(silu_linear, lambda y, w, b: F.linear(F.silu(y), w, b), (y, w, b), dtype)
    if dtype == torch.float64:
        assert gradcheck(silu_linear, (y[:8], w, b))
        assert gradgradcheck(silu_linear, (y[:8], w, b))


def test_bn_silu_linear(dtype, mlp_chunks):
    """Training-mode batch norm fused with swish and the next linear map: values, gradients
    (through the batch statistics), running statistics, num_batches_tracked."""
    z, w, b = _data(dtype, 64, 5), _data(dtype, 3, 5, seed=1), _data(dtype, 3, seed=2)
    with torch.no_grad():
        z.mul_(3).add_(1)
    norms = [MaskedBatchNorm(5).to(dtype) for _ in range(2)]
    for nm in norms:
        with torch.no_grad():
            nm.weight.copy_(torch.linspace(0.5, 2.0, 5))
            nm.bias.copy_(torch.linspace(-1.0, 1.0, 5))
    _compare(lambda z, w, b: bn_silu_linear(z, norms[0], w, b), lambda z, w, b: F.linear(F.silu(norms[1](z)), w, b),
             (z, w, b), dtype)
    for a, c in zip(norms[0].buffers(), norms[1].buffers()):
        torch.testing.assert_close(a, c)
    gamma = norms[0].weight
    g = torch.randn(64, 3, dtype=dtype)
    got = torch.autograd.grad(bn_silu_linear(z, norms[0], w, b), [gamma, norms[0].bias], g)
    want = torch.autograd.grad(F.linear(F.silu(norms[1](z)), w, b), [norms[1].weight, norms[1].bias], g)
    for a, c in zip(got, want):
        torch.testing.assert_close(a, c)
    if dtype == torch.float64:
        assert gradcheck(lambda z, w, b: bn_silu_linear(z, norms[0], w, b), (z[:10], w, b))
        assert gradgradcheck(lambda z, w, b: bn_silu_linear(z, norms[0], w, b), (z[:10], w, b))


def _plain_contract(y, values, rows, weight):
    q, k, _ = y.shape
    nbr = values.index_select(0, rows.reshape(-1)).view(q, k, -1)
    return F.linear(torch.einsum("qkw,qkc->qwc", F.silu(y), nbr).reshape(q, -1), weight)


@pytest.mark.parametrize("use_native", [True, False], ids=["native", "torch"])
@pytest.mark.parametrize("chunk", [None, 7])
@pytest.mark.parametrize("shape", [(30, 4, 3, 5), (20, 9, 16, 32)], ids=["small", "tiles"])
def test_silu_contract(dtype, chunk, shape, use_native, monkeypatch):
    """Chunked contraction + linear (including a chunk size that does not divide the queries), on
    the native gather-contraction or torch's gather and GEMMs, equals the gathered einsum; repeated
    rows accumulate their gradients."""
    monkeypatch.setattr("lieconv_runtime.nn.lean.USE_NATIVE_CONTRACT", use_native)
    if chunk is not None:
        monkeypatch.setattr("lieconv_runtime.nn.lean._CHUNK_ROWS", chunk * shape[1])
    q, k, w, c = shape
    y, values, weight = _data(dtype, q, k, w), _data(dtype, 12, c, seed=1), _data(dtype, 2, w * c, seed=2)
    rows = torch.randint(0, 12, (q, k), generator=torch.Generator().manual_seed(3))
    _compare(lambda y, v, w: silu_contract(y, v, rows, w), lambda y, v, w: _plain_contract(y, v, rows, w),
             (y, values, weight), dtype)
    if dtype == torch.float64 and shape[2] < 8:
        assert gradcheck(lambda y, v, w: silu_contract(y, v, rows, w), (y, values, weight))
        assert gradgradcheck(lambda y, v, w: silu_contract(y, v, rows, w), (y, values, weight))


def test_silu_contract_zero_rows_contribute_nothing():
    """Padding slots: y = 0 rows add nothing to the output and get no value gradient."""
    y = torch.randn(5, 3, 2, dtype=torch.float64)
    y[:, 2] = 0
    values = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(2, 6, dtype=torch.float64)
    rows = torch.tensor([[0, 1, 3]] * 5)
    out = silu_contract(y, values, rows, weight)
    torch.testing.assert_close(out, silu_contract(y[:, :2].contiguous(), values, rows[:, :2].contiguous(), weight))
    (gv,) = torch.autograd.grad(out.sum(), values)
    assert float(gv[3].abs().max()) == 0.0


def test_silu_contract_dense(dtype):
    y, values = _data(dtype, 2, 3, 4, 5), _data(dtype, 2, 4, 6, seed=1)

    def plain(y, v):
        return F.silu(y).transpose(2, 3).reshape(2, 15, 4) @ v

    _compare(silu_contract_dense, plain, (y, values), dtype)
    if dtype == torch.float64:
        assert gradcheck(silu_contract_dense, (y, values))
        assert gradgradcheck(silu_contract_dense, (y, values))


def test_contract_by_size(dtype):
    """Clouds grouped by size (2 clouds of 3 elements, 1 of 5, 3 of 1): each query's row is the sum
    over its cloud's elements j and channels w of kern[(query, j), w] vw[(j, w)], as a loop over
    the clouds computes it; gradients and second derivatives those of the plain ops."""
    sizes = [(2, 3), (1, 5), (3, 1)]
    kc, c = 4, 6
    kern = _data(dtype, sum(n * s * s for n, s in sizes), kc)
    vw = _data(dtype, sum(n * s for n, s in sizes) * kc, c, seed=1)

    def plain(kern, vw):
        rows, p0, e0 = [], 0, 0
        for n, s in sizes:
            for _ in range(n):
                k = kern[p0:p0 + s * s].view(s, s, kc)
                v = vw[e0 * kc:(e0 + s) * kc].view(s, kc, c)
                rows.append(torch.einsum("ijw,jwc->ic", k, v))
                p0, e0 = p0 + s * s, e0 + s
        return torch.cat(rows)

    _compare(lambda k, v: contract_by_size(k, v, sizes), plain, (kern, vw), dtype)
    if dtype == torch.float64:
        assert gradcheck(lambda k, v: contract_by_size(k, v, sizes), (kern, vw))
        assert gradgradcheck(lambda k, v: contract_by_size(k, v, sizes), (kern, vw))
