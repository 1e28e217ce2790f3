"""Memory-lean autograd functions for the kernel MLP and the PointConv contraction.

Plain autograd saves every intermediate that some op's backward reads.  For the kernel MLP on P
pairs, linear -> batch norm -> swish -> linear saves three (P, hidden) tensors per layer (the
batch-norm input, the swish input, the next linear's input), and the contraction with the
neighbour values saves the gathered (P, c_in) values.  The functions here save only the first
tensor of each chain and recompute the cheap elementwise rest in backward; the contraction runs
in chunks of queries, reading the neighbour values in place (the native kernel on the CPU,
native/gather_contract.c) or gathering them chunk by chunk (again in backward), so no (P, c_in)
tensor is ever formed.  In training mode on the CPU the kernel MLP after its folded first layer
runs as one native function (`fused_kernel_mlp`, native/kernel_mlp.c) that saves its two linear
outputs only.

Backward passes (and the swish-linear forward) run in chunks of rows and write into the one
gradient buffer they return, so only chunk-sized temporaries come and go: whole-tensor
temporaries of a few distinct sizes fragmented glibc's heap (the RSS peak was twice the live
tensors).

They compute the same values and gradients as the plain ops.  When a graph of the backward is
being built (create_graph=True, as the Hamiltonian models need) they switch to differentiable
torch ops, so second derivatives work too.  Tested against the plain ops in float32 and float64,
with gradcheck and gradgradcheck.
"""

from __future__ import annotations

import torch
from torch.autograd import Function
from torch.nn import functional as F

from lieconv_runtime import native
from lieconv_runtime.perf import chunk_scale

__all__ = ["bn_silu_linear", "contract_by_size", "fused_kernel_mlp", "native_kernel_mlp", "silu_contract",
           "silu_contract_dense", "silu_linear"]

_CHUNK_ROWS = 16384  # pairs per chunk of the contraction: a few MB of temporaries
#: the contraction keeps its (Q, w, c) result for the weight's gradient up to this size (else
#: recomputed chunk by chunk in backward): a few MB for the benchmark layers, saves one batched GEMM
KEEP_CONTRACTED_BYTES = 32 << 20
#: the kernel MLP in training mode as one native function (native.kernel_mlp_forward) where
#: `native_kernel_mlp` allows; False: the lean or plain torch functions (the same values)
USE_NATIVE_MLP = True
#: silu_contract's gather and small products on the native kernel (native.gather_contract) where
#: usable; False: index_select and batched GEMMs (the same values, for comparisons)
USE_NATIVE_CONTRACT = True
_MLP_ROWS = 16384  # rows per chunk of the fused swish / batch-norm functions: about 2 MB per temporary


def _silu_grad(grad: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """grad * silu'(y): the native kernel, or differentiable ops when a graph is being built
    (create_graph=True; the native kernel has no derivative)."""
    if torch.is_grad_enabled() and (grad.requires_grad or y.requires_grad):
        s = torch.sigmoid(y)
        return grad * (s * (1 + y * (1 - s)))
    return torch.ops.aten.silu_backward(grad, y)


def _chunks(n: int, step: int | None = None, like: torch.Tensor | None = None):
    """Ranges [a, b) of at most `step` (default _MLP_ROWS) rows covering range(n), times
    chunk_scale on an accelerator (the device of `like`)."""
    step = (step or _MLP_ROWS) * (chunk_scale(like.device) if like is not None else 1)
    return [(a, min(n, a + step)) for a in range(0, n, step)]


def _swish_linear_rows(out, y, weight, bias) -> None:
    """out = F.linear(silu(y), weight, bias), chunk by chunk."""
    for a, b in _chunks(y.shape[0], like=y):
        h = F.silu(y[a:b])
        if bias is None:
            torch.mm(h, weight.t(), out=out[a:b])
        else:
            torch.addmm(bias, h, weight.t(), out=out[a:b])


def _swish_linear_backward_rows(grad, y, weight, need_y: bool, need_w: bool, scale=None, shift=None, stats=None):
    """Chunk by chunk, for out = F.linear(silu(y'), weight, bias), y' = y * scale + shift (or y):
    (d/dy' (P, h) or None, d/dweight or None).  `stats` (h,) x 2, if given, accumulates
    sum(d/dy') and sum(d/dy' * y) (batch-norm backward)."""
    gy = torch.empty_like(y) if need_y else None
    gw = weight.new_zeros(weight.shape) if need_w else None
    for a, b in _chunks(y.shape[0], like=y):
        yc = y[a:b] if scale is None else torch.addcmul(shift, y[a:b], scale)
        if need_w:
            gw.addmm_(grad[a:b].t(), F.silu(yc))
        if need_y:
            g = torch.mm(grad[a:b], weight, out=gy[a:b])
            torch.ops.aten.silu_backward.grad_input(g, yc, grad_input=g)
            if stats is not None:
                stats[0].add_(g.sum(0))
                stats[1].add_((g * y[a:b]).sum(0))
    return gy, gw


class _SiluLinear(Function):
    @staticmethod
    def forward(ctx, y, weight, bias):
        ctx.save_for_backward(y, weight)
        out = y.new_empty(y.shape[0], weight.shape[0])
        _swish_linear_rows(out, y, weight, bias)
        return out

    @staticmethod
    def backward(ctx, grad):
        y, weight = ctx.saved_tensors
        need_y, need_w, need_b = ctx.needs_input_grad
        if torch.is_grad_enabled():  # create_graph: differentiable ops only
            gy = _silu_grad(grad @ weight, y) if need_y else None
            gw = grad.t() @ F.silu(y) if need_w else None
        else:
            gy, gw = _swish_linear_backward_rows(grad, y, weight, need_y, need_w)
        return gy, gw, (grad.sum(0) if need_b else None)


def silu_linear(y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """F.linear(silu(y), weight, bias) for y (P, h); saves y only (silu recomputed in backward).
    Runs in chunks of rows: besides the output, only chunk-sized temporaries.  Under torch.compile:
    the plain ops (the compiler plans what to keep, and torch.func transforms need them)."""
    if torch.compiler.is_compiling():
        return F.linear(F.silu(y), weight, bias)
    return _SiluLinear.apply(y, weight, bias)


class _BatchNormSiluLinear(Function):
    @staticmethod
    def forward(ctx, z, gamma, beta, weight, bias, norm, momentum):
        eps = norm.eps
        # torch's kernel: statistics, running statistics and the normalised output in one pass
        y, mean, invstd = torch.ops.aten.native_batch_norm(z, gamma, beta, norm.running_mean, norm.running_var,
                                                           True, momentum, eps)
        F.silu(y, inplace=True)
        out = F.linear(y, weight, bias)
        ctx.save_for_backward(z, gamma, beta, weight, bias, mean, invstd)
        ctx.eps = eps
        return out

    @staticmethod
    def backward(ctx, grad):
        z, gamma, beta, weight, bias, mean, invstd = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph: recompute with plain ops, whose graph includes the statistics
            inputs = (z, gamma, beta, weight, bias)
            wrt = [t for t, need in zip(inputs, ctx.needs_input_grad) if need]
            out = F.linear(F.silu(F.batch_norm(z, None, None, gamma, beta, True, 0.0, ctx.eps)), weight, bias)
            grads = iter(torch.autograd.grad(out, wrt, grad, create_graph=True))
            return (*[next(grads) if need else None for need in ctx.needs_input_grad[:5]], None, None)
        n = z.shape[0]
        need_z = any(ctx.needs_input_grad[:3])
        scale = invstd * gamma
        stats = [z.new_zeros(z.shape[1]), z.new_zeros(z.shape[1])]  # sum(dy), sum(dy * z)
        gz, gw = _swish_linear_backward_rows(grad, z, weight, need_z, ctx.needs_input_grad[3], scale,
                                             beta - mean * scale, stats)
        gb = grad.sum(0) if ctx.needs_input_grad[4] else None
        ggamma = gbeta = None
        if need_z:  # batch norm backward: dz = scale (dy - mean(dy) - xhat mean(dy xhat)), in place
            sum_dy = stats[0]
            sum_dy_xhat = (stats[1] - mean * sum_dy) * invstd
            ggamma, gbeta = sum_dy_xhat, sum_dy
            k = invstd * sum_dy_xhat / n
            offset = sum_dy / n - mean * k
            neg_k, neg_offset = -scale * k, -scale * offset
            for a, b in _chunks(n, like=z):
                gz[a:b].mul_(scale).addcmul_(z[a:b], neg_k).add_(neg_offset)
        return (gz if ctx.needs_input_grad[0] else None, ggamma if ctx.needs_input_grad[1] else None,
                gbeta if ctx.needs_input_grad[2] else None, gw, gb, None, None)


def bn_silu_linear(z: torch.Tensor, norm, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """F.linear(silu(norm(z)), weight, bias) for z (P, h) in training mode, where `norm` is a
    MaskedBatchNorm (batch statistics, running statistics updated as it does); saves z and the
    (h,) statistics only."""
    return _BatchNormSiluLinear.apply(z, norm.weight, norm.bias, weight, bias, norm, norm.step_momentum())


class _KernelMLPTrain(Function):
    @staticmethod
    def forward(ctx, xc, A, c, W2, b2, g2, be2, W3, b3, g3, be3, norms, act):
        n2, n3 = norms
        y, z2, z3, mean2, var2, mean3, var3 = native.kernel_mlp_forward(xc, A, c, W2, g2, be2, W3, g3, be3, n2.eps,
                                                                        n3.eps, act)
        count = torch.tensor(float(xc.shape[0]), dtype=torch.float64)
        n2.update_running(mean2 + b2.double(), var2, count)  # the biases cancel in the batch norms: running means only
        n3.update_running(mean3 + b3.double(), var3, count)
        ctx.save_for_backward(xc, A, c, W2, b2, g2, be2, W3, b3, g3, be3, z2, z3, mean2, torch.rsqrt(var2 + n2.eps),
                              mean3, torch.rsqrt(var3 + n3.eps))
        ctx.act, ctx.eps = act, (n2.eps, n3.eps)
        return y

    @staticmethod
    def backward(ctx, gy):
        xc, A, c, W2, b2, g2, be2, W3, b3, g3, be3, z2, z3, mean2, invstd2, mean3, invstd3 = ctx.saved_tensors
        need = ctx.needs_input_grad
        if torch.is_grad_enabled():  # create_graph: recompute with plain ops (whose graph has the statistics)
            inputs = (xc, A, c, W2, b2, g2, be2, W3, b3, g3, be3)
            wrt = [t for t, n in zip(inputs, need) if n]
            h = F.linear(F.silu(xc @ A + c), W2, b2)
            h = F.linear(F.silu(F.batch_norm(h, None, None, g2, be2, True, 0.0, ctx.eps[0])), W3, b3)
            y = F.batch_norm(h, None, None, g3, be3, True, 0.0, ctx.eps[1])
            grads = iter(torch.autograd.grad(F.silu(y) if ctx.act else y, wrt, gy, create_graph=True))
            return (*[next(grads) if n else None for n in need[:11]], None, None)
        gA, gc, gW2, gW3, dg2, db2, dg3, db3 = native.kernel_mlp_backward(xc, A, c, W2, g2, be2, W3, g3, be3, mean2,
                                                                          invstd2, mean3, invstd3, ctx.act, z2, z3, gy)
        # the biases before the batch norms cancel in them: their gradients are exactly 0
        return (None, gA, gc, gW2, torch.zeros_like(b2), dg2.to(g2.dtype), db2.to(be2.dtype), gW3,
                torch.zeros_like(b3), dg3.to(g3.dtype), db3.to(be3.dtype), None, None)


def native_kernel_mlp(x: torch.Tensor, hidden: int, out: int) -> bool:
    """Whether `fused_kernel_mlp` can run the kernel MLP on x (P, d_in): CPU float32/float64 with
    the native kernels built, widths that are multiples of their vector length, no gradient to x."""
    return (USE_NATIVE_MLP and not x.requires_grad and native.usable(x)
            and native.kernel_mlp_supported(hidden, out, x.dtype))


def fused_kernel_mlp(xc: torch.Tensor, A: torch.Tensor, c: torch.Tensor, linears, norms, activate: bool) -> torch.Tensor:
    """The kernel MLP's layers after its first linear map in training mode, as one native function:
    xc (P, d) the centred input, A (d, H) and c (H,) the first linear map with its batch norm
    folded in (`KernelMLP._first_layer_affine`, differentiable), linears / norms the second and
    third Linear and MaskedBatchNorm -> bn3(W3 silu(bn2(W2 silu(xc A + c)))) (P, O), its swish if
    `activate`.  Batch statistics in float64; running statistics updated as the modules would.
    Saves xc, the two linear outputs (P, H), (P, O) and the statistics; backward recomputes the rest
    (native.kernel_mlp_backward), or with plain ops when a graph of it is built."""
    (l2, l3), (n2, n3) = linears, norms
    return _KernelMLPTrain.apply(xc, A, c, l2.weight, l2.bias, n2.weight, n2.bias, l3.weight, l3.bias, n3.weight,
                                 n3.bias, (n2, n3), activate)


class _SiluContract(Function):
    @staticmethod
    def forward(ctx, y, values, rows, weight):
        q, k, w = y.shape
        c = values.shape[1]
        y, values, rows = y.contiguous(), values.contiguous(), rows.contiguous()
        out = y.new_empty(q, weight.shape[0])
        keep = weight.requires_grad and q * w * c * y.element_size() <= KEEP_CONTRACTED_BYTES
        kept = y.new_empty(q, w, c) if keep else None  # the contracted (q, w, c), for the weight's gradient
        ctx.native = native_contraction(y)
        for q0, q1 in _chunks(q, max(1, _CHUNK_ROWS // k), like=y):
            partial = _contract_chunk(y[q0:q1], values, rows[q0:q1], ctx.native, kept[q0:q1] if keep else None)
            torch.mm(partial.view(q1 - q0, w * c), weight.t(), out=out[q0:q1])
        ctx.save_for_backward(y, values, rows, weight, kept)
        return out

    @staticmethod
    def backward(ctx, grad):
        y, values, rows, weight, kept = ctx.saved_tensors
        q, k, w = y.shape
        c = values.shape[1]
        need_y, need_v, _, need_w = ctx.needs_input_grad
        graph = torch.is_grad_enabled()  # create_graph: out-of-place ops only
        use_native = ctx.native and not graph
        gy = [] if graph else (torch.empty_like(y) if need_y else None)
        gv = values.new_zeros(values.shape) if need_v else None  # contiguous
        recompute_w = need_w and (kept is None or graph)  # else the forward's contraction was kept: one GEMM
        gw = torch.zeros_like(weight) if recompute_w else (grad.t() @ kept.view(q, w * c) if need_w else None)
        for q0, q1 in _chunks(q, max(1, _CHUNK_ROWS // k), like=y):
            yc, gc, rc = y[q0:q1], grad[q0:q1], rows[q0:q1]
            if recompute_w:
                partial = _contract_chunk(yc, values, rc, use_native).view(q1 - q0, w * c)
                gw = gw + gc.t() @ partial if graph else gw.addmm_(gc.t(), partial)
            if not (need_y or need_v):
                continue
            gp = (gc @ weight).view(q1 - q0, w, c)
            kern = F.silu(yc)
            if use_native:  # d/dkern, and d/dvalues added into gv, from the neighbour rows in place
                gk = native.gather_contract_backward(kern, values, rc, gp, gv, need_s=need_y)
                if need_y:
                    torch.ops.aten.silu_backward.grad_input(gk, yc, grad_input=gy[q0:q1])
                continue
            nbr = values.index_select(0, rc.reshape(-1)).view(q1 - q0, k, c)
            if need_y:
                gk = _silu_grad(torch.bmm(nbr, gp.transpose(1, 2)), yc)
                gy.append(gk) if graph else gy[q0:q1].copy_(gk)
            if need_v:
                gnbr = torch.bmm(kern, gp).view(-1, c)
                gv = gv.index_add(0, rc.reshape(-1), gnbr) if graph else gv.index_add_(0, rc.reshape(-1), gnbr)
        if graph and need_y:
            gy = torch.cat(gy)
        return (gy if need_y else None), gv, None, gw


def native_contraction(y: torch.Tensor) -> bool:
    """Whether `silu_contract` runs its gather and small products on the native kernel for y."""
    return USE_NATIVE_CONTRACT and native.usable(y)


def _contract_chunk(y: torch.Tensor, values: torch.Tensor, rows: torch.Tensor, use_native: bool,
                    out: torch.Tensor | None = None) -> torch.Tensor:
    """sum_k silu(y[q, k, :])^T values[rows[q, k], :] for y (q, k, w), rows (q, k) -> (q, w, c),
    into `out` if given: the native kernel (rows read in place), or a gather and a batched GEMM."""
    if use_native:
        return native.gather_contract(F.silu(y), values, rows, out=out)
    nbr = values.index_select(0, rows.reshape(-1)).view(y.shape[0], y.shape[1], values.shape[1])
    kern_t = F.silu(y).transpose(1, 2)
    return torch.bmm(kern_t, nbr) if out is None else torch.bmm(kern_t, nbr, out=out)


def silu_contract(y: torch.Tensor, values: torch.Tensor, rows: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The PointConv contraction and the linear map after it: out[q] = weight @ vec(sum_k
    silu(y[q, k, :]) values[rows[q, k], :]^T) for y (Q, k, w), values (R, c), rows (Q, k) long,
    weight (c_out, w c) -> (Q, c_out).  Rows with y = 0 contribute nothing (silu(0) = 0), so
    padding slots need y = 0 and any valid row index.  Runs in chunks of queries; on the CPU the
    native kernel (native.gather_contract) reads the neighbour rows in place, elsewhere they are
    gathered chunk by chunk, so the gathered values (Q k, c) never exist beyond one chunk.  Saves y,
    and the contracted (Q, w c) when it is at most KEEP_CONTRACTED_BYTES (else recomputed chunk by
    chunk for the weight's gradient)."""
    return _SiluContract.apply(y, values, rows, weight)


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


class _ContractBySize(Function):
    @staticmethod
    def forward(ctx, kern, vw, sizes):
        kc, c = kern.shape[1], vw.shape[1]
        out = kern.new_empty(sum(n * s for n, s in sizes), c)
        p0 = e0 = 0
        for n, s in sizes:  # one batched GEMM per size, written into its rows of out
            torch.bmm(kern[p0:p0 + n * s * s].view(n, s, s * kc), vw[e0 * kc:(e0 + n * s) * kc].view(n, s * kc, c),
                      out=out[e0:e0 + n * s].view(n, s, c))
            p0, e0 = p0 + n * s * s, e0 + n * s
        ctx.save_for_backward(kern, vw)
        ctx.sizes = sizes
        return out

    @staticmethod
    def backward(ctx, grad):
        kern, vw = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph: differentiable ops
            return (*torch.autograd.grad(_ContractBySize.plain(kern, vw, ctx.sizes), (kern, vw), grad,
                                         create_graph=True), None)
        kc, c = kern.shape[1], vw.shape[1]
        gk = torch.empty_like(kern) if ctx.needs_input_grad[0] else None
        gv = torch.empty_like(vw) if ctx.needs_input_grad[1] else None
        p0 = e0 = 0
        for n, s in ctx.sizes:  # each piece's gradients straight into its rows: no concatenation
            k = kern[p0:p0 + n * s * s].view(n, s, s * kc)
            v = vw[e0 * kc:(e0 + n * s) * kc].view(n, s * kc, c)
            g = grad[e0:e0 + n * s].view(n, s, c)
            if gk is not None:
                torch.bmm(g, v.transpose(1, 2), out=gk[p0:p0 + n * s * s].view(n, s, s * kc))
            if gv is not None:
                torch.bmm(k.transpose(1, 2), g, out=gv[e0 * kc:(e0 + n * s) * kc].view(n, s * kc, c))
            p0, e0 = p0 + n * s * s, e0 + n * s
        return gk, gv, None

    @staticmethod
    def plain(kern, vw, sizes):
        kc = kern.shape[1]
        ks = kern.split([n * s * s for n, s in sizes])
        vs = vw.split([n * s * kc for n, s in sizes])
        return torch.cat([torch.bmm(k.view(n, s, s * kc), v.view(n, s * kc, -1)).view(n * s, -1)
                          for (n, s), k, v in zip(sizes, ks, vs)])


def contract_by_size(kern: torch.Tensor, vw: torch.Tensor, sizes: list) -> torch.Tensor:
    """Clouds whose elements all neighbour each other, grouped by size, output map first: for
    sizes [(n, s), ...] (n clouds of s elements each, in order), kern (sum n s^2, kc) holds the
    kernel rows (cloud, query, neighbour) and vw (sum n s kc, c) the mapped values (element,
    channel): returns (sum n s, c), row (cloud, query) = sum over neighbours j and channels w of
    kern[(cloud, query, j), w] vw[(j, w)].  One batched GEMM per size, forward and backward,
    written into preallocated rows (no concatenation, no zero-filled gradient per piece)."""
    return _ContractBySize.apply(kern, vw, [(int(n), int(s)) for n, s in sizes])
