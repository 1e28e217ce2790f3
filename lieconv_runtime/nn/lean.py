"""Memory-lean autograd functions for the kernel MLP and the PointConv contraction.

Plain autograd saves every intermediate that some op's backward reads.  For the kernel MLP on P
pairs, linear -> batch norm -> swish -> linear saves three (P, hidden) tensors per layer (the
batch-norm input, the swish input, the next linear's input), and the contraction with the
neighbour values saves the gathered (P, c_in) values.  The functions here save only the first
tensor of each chain and recompute the cheap elementwise rest in backward; the contraction runs
in chunks of queries and gathers the neighbour values chunk by chunk (again in backward), so no
(P, c_in) tensor is ever formed.

They compute the same values and gradients as the plain ops.  Their backward is written in
differentiable torch ops, so second derivatives (create_graph=True, as the Hamiltonian models
need) work too.  Tested against the plain ops in float32 and float64, with gradcheck and
gradgradcheck.
"""

from __future__ import annotations

import torch
from torch.autograd import Function
from torch.nn import functional as F

__all__ = ["bn_silu_linear", "silu_contract", "silu_contract_dense", "silu_linear"]

_CHUNK_ROWS = 32768  # pairs per chunk of the contraction: a few MB of temporaries


def _silu_grad(grad: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """grad * silu'(y): the native kernel, or differentiable ops when a graph is being built
    (create_graph=True; the native kernel has no derivative)."""
    if torch.is_grad_enabled() and (grad.requires_grad or y.requires_grad):
        s = torch.sigmoid(y)
        return grad * (s * (1 + y * (1 - s)))
    return torch.ops.aten.silu_backward(grad, y)


class _SiluLinear(Function):
    @staticmethod
    def forward(ctx, y, weight, bias):
        ctx.save_for_backward(y, weight)
        return F.linear(F.silu(y), weight, bias)

    @staticmethod
    def backward(ctx, grad):
        y, weight = ctx.saved_tensors
        gy = _silu_grad(grad @ weight, y) if ctx.needs_input_grad[0] else None
        gw = grad.t() @ F.silu(y) if ctx.needs_input_grad[1] else None
        gb = grad.sum(0) if ctx.needs_input_grad[2] else None
        return gy, gw, gb


def silu_linear(y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """F.linear(silu(y), weight, bias) for y (P, h); saves y only (silu recomputed in backward)."""
    return _SiluLinear.apply(y, weight, bias)


class _BatchNormSiluLinear(Function):
    @staticmethod
    def forward(ctx, z, gamma, beta, weight, bias, running_mean, running_var, momentum, eps):
        y, mean, invstd = torch.ops.aten.native_batch_norm(z, gamma, beta, running_mean, running_var, True,
                                                           momentum, eps)
        ctx.save_for_backward(z, gamma, beta, weight, bias, mean, invstd)
        ctx.eps = eps
        return F.linear(F.silu(y, inplace=True), weight, bias)

    @staticmethod
    def backward(ctx, grad):
        z, gamma, beta, weight, bias, mean, invstd = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph: recompute with plain ops, whose graph includes the statistics
            inputs = (z, gamma, beta, weight, bias)
            wrt = [t for t, need in zip(inputs, ctx.needs_input_grad) if need]
            out = F.linear(F.silu(F.batch_norm(z, None, None, gamma, beta, True, 0.0, ctx.eps)), weight, bias)
            grads = iter(torch.autograd.grad(out, wrt, grad, create_graph=True))
            return (*[next(grads) if need else None for need in ctx.needs_input_grad[:5]], None, None, None, None)
        scale = invstd * gamma
        y = torch.addcmul(beta - mean * scale, z, scale)  # the batch-norm output, recomputed
        gw = grad.t() @ F.silu(y) if ctx.needs_input_grad[3] else None
        gb = grad.sum(0) if ctx.needs_input_grad[4] else None
        gz = ggamma = gbeta = None
        if any(ctx.needs_input_grad[:3]):
            gy = _silu_grad(grad @ weight, y)
            gz, ggamma, gbeta = torch.ops.aten.native_batch_norm_backward(
                gy, z, gamma, None, None, mean, invstd, True, ctx.eps, list(ctx.needs_input_grad[:3]))
        return gz, ggamma, gbeta, gw, gb, None, None, None, None


def bn_silu_linear(z: torch.Tensor, norm, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """F.linear(silu(norm(z)), weight, bias) for z (P, h) in training mode, where `norm` is a
    MaskedBatchNorm (batch statistics, running statistics updated as it does); saves z and the
    (h,) statistics only."""
    momentum = max(norm.momentum, 1.0 / (int(norm.num_batches_tracked) + 1))
    out = _BatchNormSiluLinear.apply(z, norm.weight, norm.bias, weight, bias, norm.running_mean, norm.running_var,
                                     momentum, norm.eps)
    norm.num_batches_tracked += 1
    return out


class _SiluContract(Function):
    @staticmethod
    def forward(ctx, y, values, rows):
        q, k, w = y.shape
        c = values.shape[1]
        step = max(1, _CHUNK_ROWS // k)
        out = y.new_empty(q, w, c)
        for q0 in range(0, q, step):
            q1 = min(q, q0 + step)
            nbr = values.index_select(0, rows[q0:q1].reshape(-1)).view(q1 - q0, k, c)
            torch.bmm(F.silu(y[q0:q1]).transpose(1, 2), nbr, out=out[q0:q1])
        ctx.save_for_backward(y, values, rows)
        return out

    @staticmethod
    def backward(ctx, grad):
        y, values, rows = ctx.saved_tensors
        q, k, w = y.shape
        c = values.shape[1]
        step = max(1, _CHUNK_ROWS // k)
        gys, gv = [], torch.zeros_like(values) if ctx.needs_input_grad[1] else None
        for q0 in range(0, q, step):
            q1 = min(q, q0 + step)
            yc, gc, rc = y[q0:q1], grad[q0:q1], rows[q0:q1].reshape(-1)
            nbr = values.index_select(0, rc).view(q1 - q0, k, c)
            if ctx.needs_input_grad[0]:
                gys.append(_silu_grad(torch.bmm(nbr, gc.transpose(1, 2)), yc))
            if gv is not None:
                gv = gv.index_add(0, rc, torch.bmm(F.silu(yc), gc).view(-1, c))
        return (torch.cat(gys) if gys else None), gv, None


def silu_contract(y: torch.Tensor, values: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """sum_k silu(y[q, k, :])^T values[rows[q, k], :]: y (Q, k, w), values (R, c), rows (Q, k)
    long -> (Q, w, c).  Rows with y = 0 contribute nothing (silu(0) = 0), so padding slots need
    y = 0 and any valid row index.  Saves y only; runs in chunks of queries."""
    return _SiluContract.apply(y, values, rows)


class _SiluContractDense(Function):
    @staticmethod
    def forward(ctx, y, values):
        bs, m, n, w = y.shape
        ctx.save_for_backward(y, values)
        return F.silu(y).transpose(2, 3).reshape(bs, m * w, n) @ values

    @staticmethod
    def backward(ctx, grad):
        y, values = ctx.saved_tensors
        bs, m, n, w = y.shape
        gy = gv = None
        if ctx.needs_input_grad[0]:
            gk = (grad @ values.transpose(1, 2)).view(bs, m, w, n).transpose(2, 3)
            gy = _silu_grad(gk, y)
        if ctx.needs_input_grad[1]:
            gv = F.silu(y).transpose(2, 3).reshape(bs, m * w, n).transpose(1, 2) @ grad
        return gy, gv


def silu_contract_dense(y: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Every element a neighbour: sum_j silu(y[b, i, j, :])^T values[b, j, :]: y (bs, m, n, w),
    values (bs, n, c) -> (bs, m * w, c).  Saves y only."""
    return _SiluContractDense.apply(y, values)
