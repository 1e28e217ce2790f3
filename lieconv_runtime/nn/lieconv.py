"""The LieConv layer (paper §4, Algorithm 2, Appendix A.1): h_i = (1/n_i) sum_{j in nbhd(i)} k(a_ij) f_j.

A cloud flowing through the network is a `Lifted` (lieconv_runtime.lift) whose `values` and
`mask` are the current features (bs, N, c) and validity (bs, N).  A layer

1. optionally subsamples the query elements by farthest point sampling in the group distance
   (`ds_frac` < 1),
2. picks up to `nbhd` neighbours per query: uniformly at random inside the ball d < r, or the
   nearest (`knn=True`), computing distances in chunks of queries,
3. embeds only the chosen pairs, a_ij = [log(u_i^-1 u_j), q_i, q_j] (bs, m, nbhd, D),
4. applies the PointConv trick: an MLP (swish) maps a_ij to `kernel_channels` channels, which are
   contracted with the neighbour values, then one linear map to c_out (memory-lean for large
   pair counts: lieconv_runtime.nn.lean; padded clouds whose elements all neighbour each other
   are contracted cloud by cloud, grouped by size).

The ball radius r is a buffer adapted in training mode (r += coeff (fill - observed fill), the
paper's scheme) and frozen in eval mode or inside `frozen_radius(model)` (use it around ODE
solves, which call the network many times per step).  All randomness comes from a per-layer
torch.Generator seeded with `seed`: persistent in training, reset on every eval forward, so eval
outputs are deterministic.
"""

from __future__ import annotations

import contextlib
import math
from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from lieconv_runtime.lift import Lifted
from lieconv_runtime.nn.geometry import PairGeometry
from lieconv_runtime.nn.lean import (bn_silu_linear, contract_by_size, fused_kernel_mlp, native_kernel_mlp, silu_contract,
                                     silu_contract_dense, silu_linear)
from lieconv_runtime.nn.norm import MaskedBatchNorm
from lieconv_runtime.nn.sampling import every_element, farthest_point_sample, row_keys, select_neighbours

__all__ = ["KernelMLP", "LieConv", "SizeGroups", "exact_geometry", "frozen_radius", "gather_points", "packed_pairs",
           "pair_embeddings", "pair_uses", "reset_rngs", "set_pair_uses", "set_stream", "size_groups", "stream_generator",
           "stream_seed", "subsample_cloud"]


def autocasting(ref: torch.Tensor) -> bool:
    """Whether autocast (mixed precision) is on for ref's device."""
    return torch.is_autocast_enabled(ref.device.type)


def exact_geometry(ref: torch.Tensor):
    """A block where autocast is off: group elements, logs, distances and neighbourhoods keep the
    cloud's float32/float64 under mixed precision (the kernel MLP and contraction may use bf16/fp16)."""
    return torch.autocast(ref.device.type, enabled=False)


def stream_seed(seed: int, stream: int) -> int:
    """Seed of random stream `stream` of a layer seeded with `seed` (stream 0: the seed itself)."""
    return seed if stream == 0 else (seed * 1_000_003 + stream * 7_919 + 12_345) % (2**62)


def stream_generator(seed: int, stream: int) -> torch.Generator:
    """A CPU generator at the start of random stream `stream` of a layer seeded with `seed`."""
    return torch.Generator().manual_seed(stream_seed(seed, stream))


def gather_points(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """t (bs, N, *F), idx (bs, m) -> (bs, m, *F) by one index_select (backward: index_add)."""
    bs, n = t.shape[:2]
    flat = (idx + n * torch.arange(bs, device=idx.device)[:, None]).reshape(-1)
    return t.reshape((bs * n,) + t.shape[2:]).index_select(0, flat).reshape(idx.shape + t.shape[2:])


def subsample_cloud(cloud: Lifted, idx: torch.Tensor, mask: torch.Tensor) -> Lifted:
    """The elements idx (bs, m) of `cloud`, with validity `mask` (bs, m)."""
    pick = lambda t: gather_points(t, idx)  # noqa: E731
    return cloud._replace(coords=pick(cloud.coords), g=pick(cloud.g), g_inv=pick(cloud.g_inv), a=pick(cloud.a),
                          q=pick(cloud.q), values=pick(cloud.values), mask=mask & pick(cloud.mask), full=False)


class SizeGroups(NamedTuple):
    """The valid elements of a padded batch grouped by their cloud's size (`size_groups`):
    groups [(flat element indices (clouds, s), s), ...] by increasing s; elements (E,) their
    concatenation (the packed order); sizes (E,) each element's cloud size."""
    groups: list
    elements: torch.Tensor
    sizes: torch.Tensor


def size_groups(mask: torch.Tensor, cache: dict | None = None) -> SizeGroups:
    """Valid elements of mask (bs, N) grouped by cloud size; kept in `cache` for this mask."""
    hit = None if cache is None else cache.get("size_groups")
    if hit is not None and hit[0] is mask:
        return hit[1]
    n = mask.shape[1]
    counts = mask.sum(1)
    groups = []
    for size in torch.unique(counts).tolist():
        if size == 0:
            continue
        clouds = (counts == size).nonzero()[:, 0]
        pos = mask.index_select(0, clouds).nonzero()[:, 1].view(-1, size)
        groups.append((clouds[:, None] * n + pos, size))
    empty = torch.zeros(0, dtype=torch.long, device=mask.device)
    elements = torch.cat([e.reshape(-1) for e, _ in groups]) if groups else empty
    sizes = torch.cat([torch.full((e.numel(),), s, device=mask.device) for e, s in groups]) if groups else empty
    sg = SizeGroups(groups, elements, sizes)
    if cache is not None:
        cache["size_groups"] = (mask, sg)
    return sg


def packed_pairs(sg: SizeGroups, n: int, cache: dict) -> torch.Tensor:
    """Flat indices (P,) into (bs, N, N) of every (query, neighbour) pair of valid elements of the same
    cloud, in the packed order of `sg` (size by size, then cloud, query, neighbour); kept in `cache`."""
    hit = cache.get("packed_pairs")
    if hit is not None and hit[0] is sg:
        return hit[1]
    rows = [((e // n)[:, :, None] * n * n + (e % n)[:, :, None] * n + (e % n)[:, None, :]).reshape(-1)
            for e, _ in sg.groups]
    index = torch.cat(rows) if rows else sg.elements
    cache["packed_pairs"] = (sg, index)
    return index


def dense_embedding(geometry: PairGeometry, cache: dict) -> torch.Tensor:
    """Embeddings of every pair of elements of each cloud, (bs, N, N, D), never in reduced
    precision; computed once per cloud and forward pass (`cache`), shared by the blocks that see
    the same elements."""
    cloud = geometry.cloud
    hit = cache.get("dense")
    if hit is not None and hit[0] is cloud.g:
        return hit[1]
    bs, n = cloud.mask.shape
    q = torch.arange(n, device=cloud.mask.device).expand(bs, n)
    with exact_geometry(cloud.mask):
        emb = geometry.embed(q[:, :, None], q[:, None, :].expand(bs, n, n))
    cache["dense"] = (cloud.g, emb)
    return emb


#: the blocks embed their chosen pairs from one set of embeddings of every valid pair of each cloud
#: (`pair_embeddings`) when that set has fewer than SHARE_EMBEDDINGS_BELOW x the pairs the blocks
#: that see the cloud would embed on their own (a gather of a row costs about a tenth of embedding
#: it; molecules: ~2.9 valid pairs per chosen one and 6 blocks)
SHARE_EMBEDDINGS_BELOW = 0.8


def pair_uses(cache: dict | None, cloud: Lifted) -> int:
    """How many layers will embed pairs of `cloud` in this forward pass: the hint a network left in
    `cache` for its input cloud (`set_pair_uses`), else 1."""
    hit = None if cache is None else cache.get("pair_uses")
    return hit[1] if hit is not None and hit[0] is cloud.g else 1


def set_pair_uses(cache: dict, cloud: Lifted, uses: int) -> None:
    """Tell the layers of this forward pass that `uses` of them embed pairs of `cloud`."""
    cache["pair_uses"] = (cloud.g, int(uses))


def pair_embeddings(geometry: PairGeometry, cache: dict) -> torch.Tensor:
    """Embeddings of every pair of valid elements of the same cloud, (P, D) in the packed order of
    `packed_pairs`; once per cloud and forward pass (`cache`), never in reduced precision."""
    cloud = geometry.cloud
    hit = cache.get("pair_embeddings")
    if hit is not None and hit[0] is cloud.g:
        return hit[1]
    sg = size_groups(cloud.mask, cache)
    with exact_geometry(cloud.mask):
        parts = [geometry.embed_queries(e.reshape(-1), e[:, None, :].expand(-1, size, size).reshape(-1, size))
                 .reshape(-1, geometry.embed_dim) for e, size in sg.groups]
    emb = torch.cat(parts) if parts else cloud.g.new_zeros(0, geometry.embed_dim)
    cache["pair_embeddings"] = (cloud.g, emb)
    return emb


def packed_pair_rows(sg: SizeGroups, bs: int, n: int, cache: dict) -> torch.Tensor:
    """A lookup (bs N N,) long from a flat pair index (b N + i) N + j to its row of `packed_pairs`
    (-1 where a member is padded); kept in `cache`."""
    hit = cache.get("packed_pair_rows")
    if hit is not None and hit[0] is sg:
        return hit[1]
    pairs = packed_pairs(sg, n, cache)
    lookup = torch.full((bs * n * n,), -1, dtype=torch.long, device=pairs.device)
    lookup[pairs] = torch.arange(pairs.numel(), device=pairs.device)
    cache["packed_pair_rows"] = (sg, lookup)
    return lookup


#: kernel inputs of at least this many rows are checked for repeats (a grid's pairs repeat a few
#: hundred to a few thousand offsets), and evaluated once per distinct row when the distinct rows
#: are at most REPEATED_MAX_FRACTION of all rows.  The exact count (a sort of every row's key) is
#: taken only when a strided sample of 4096 rows already repeats (at most REPEATED_SAMPLE_FRACTION
#: of it distinct): inputs without repeats (molecules, rotated lifts) pay for the sample alone.
REPEATED_MIN_ROWS = 4096
REPEATED_MAX_FRACTION = 0.25
REPEATED_SAMPLE_FRACTION = 0.8


def repeated_rows(x: torch.Tensor):
    """(distinct rows (U, D), inverse (P,), counts (U,)) of x (P, D) when many rows repeat exactly,
    else None.  Rows are hashed from their bits (collisions are detected: then None)."""
    P = x.shape[0]
    if P < REPEATED_MIN_ROWS or x.dtype not in (torch.float32, torch.float64):
        return None
    sample = row_keys(x[::max(1, P // 4096)])
    if torch.unique(sample).numel() > REPEATED_SAMPLE_FRACTION * sample.numel():
        return None
    keys = row_keys(x)
    _, inverse, counts = torch.unique(keys, return_inverse=True, return_counts=True)
    if counts.numel() > REPEATED_MAX_FRACTION * P:
        return None
    first = torch.full((counts.numel(),), P, dtype=torch.long, device=x.device)
    first.scatter_reduce_(0, inverse, torch.arange(P, device=x.device), "amin")
    distinct = x.index_select(0, first)
    if not torch.equal(distinct.index_select(0, inverse), x):  # a hash collision
        return None
    return distinct, inverse, counts


LEAN_MIN_ROWS = 32768  # pairs from which the kernel MLP runs memory-lean (KernelMLP.pre_activation);
# math.inf: always the plain modules (faster, about twice the memory; see docs/layers.md)


class KernelMLP(nn.Module):
    """k_theta: (..., D) -> (..., out), (Linear, [masked BN], swish) x 3; zero where `valid` is False.

    Only the valid rows are evaluated (packed when some are invalid), so batch norm always sees
    exactly the valid pairs.  Large inputs run memory-lean (see `pre_activation`).
    """

    def __init__(self, d_in: int, hidden: int = 32, out: int = 16, bn: bool = True):
        super().__init__()
        dims = [d_in, hidden, hidden, out]
        self.linears = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.norms = nn.ModuleList(MaskedBatchNorm(b) for b in dims[1:]) if bn else None
        self.out = out

    def pre_activation(self, x: torch.Tensor, activate: bool = False) -> torch.Tensor:
        """x (P, d_in) -> (P, out): the input of the last swish (activate: its output).

        In training mode the first batch norm is folded into the first linear map
        (`_first_layer_folded`), and the rest runs as one native function where it can
        (lieconv_runtime.nn.lean.fused_kernel_mlp: CPU, no gradient to x).  Otherwise, from
        LEAN_MIN_ROWS rows on, the rest is memory-lean (lieconv_runtime.nn.lean): each swish and the
        linear map after it run as one function that saves only the swish input, with the hidden
        batch norm fused in (training mode), so autograd keeps one (P, hidden) tensor per layer
        instead of three; below it plain modules, except the first swish -> linear, which stays
        lean.  Same values and gradients throughout.  LEAN_MIN_ROWS = math.inf: no lean functions.
        Under autocast (mixed precision) plain modules run, which autocast knows how to cast."""
        if autocasting(x):
            norms = list(self.norms) if self.norms is not None else [None] * len(self.linears)
            h = x
            for i, (lin, norm) in enumerate(zip(self.linears, norms)):
                h = lin(h if i == 0 else F.silu(h))
                h = h if norm is None else norm(h)
            return F.silu(h) if activate else h
        train_bn = self.norms is not None and self.training and x.shape[0] > 1
        if train_bn and native_kernel_mlp(x, self.linears[0].out_features, self.out):
            return fused_kernel_mlp(*self._first_layer_affine(x), self.linears[1:], self.norms[1:], activate)
        if train_bn:
            h = self._first_layer_folded(x)
        else:
            h = self.linears[0](x)
            h = h if self.norms is None else self.norms[0](h)
        norms = list(self.norms) if self.norms is not None else [None] * len(self.linears)
        if x.shape[0] < LEAN_MIN_ROWS:
            for i, (lin, norm) in enumerate(zip(self.linears[1:], norms[1:])):
                if i == 0 and math.isfinite(LEAN_MIN_ROWS):
                    h = silu_linear(h, lin.weight, lin.bias)
                else:
                    h = lin(F.silu(h))
                h = h if norm is None else norm(h)
            return F.silu(h) if activate else h
        pending = None  # a training-mode batch norm still to apply to h
        for lin, norm in zip(self.linears[1:], norms[1:]):
            h = silu_linear(h, lin.weight, lin.bias) if pending is None else bn_silu_linear(h, pending, lin.weight,
                                                                                             lin.bias)
            if train_bn:
                pending = norm
            elif norm is not None:
                h = norm(h)
        if pending is not None:
            h = pending(h)
        return F.silu(h) if activate else h

    def mlp(self, x: torch.Tensor) -> torch.Tensor:
        """x (P, d_in) -> (P, out)."""
        return self.pre_activation(x, activate=True)

    def _first_layer_folded(self, x: torch.Tensor) -> torch.Tensor:
        """batch_norm(W x + b) with batch statistics, from the statistics of the d_in-dimensional
        input: mean W m + b and variance diag(W C W^T) (m, C: the batch mean and biased covariance
        of x), so batch norm becomes a rescaled linear map of x - m.  The same function with the
        same gradients (autograd differentiates through m and C), but no (P, hidden) tensor is
        normalised, saved for, or differentiated by a batch-norm kernel."""
        # addmm with the (d_in, hidden) weight stored contiguously: autograd then forms the weight's
        # gradient as xc^T g, (d_in, P) @ (P, hidden), 2-5x faster on CPU for d_in <= 6 than the
        # (hidden, P) @ (P, d_in) it forms for F.linear's transposed view (the same values)
        xc, A, c = self._first_layer_affine(x)
        return torch.addmm(c, xc, A)

    def _first_layer_affine(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(xc, A, c): the first linear map with its training-mode batch norm folded in is xc A + c,
        xc = x - mean(x) (P, d_in), A (d_in, hidden), c (hidden,) (see `_first_layer_folded`);
        updates the batch norm's running statistics."""
        lin, bn = self.linears[0], self.norms[0]
        n = x.shape[0]
        mean = x.mean(0)
        xc = x - mean
        cov = (xc.t() @ xc) / n  # (d_in, d_in)
        var = ((lin.weight @ cov) * lin.weight).sum(1)  # (hidden,)
        scale = bn.weight * torch.rsqrt(var + bn.eps)
        bn.update_running(lin.weight @ mean + lin.bias, var, torch.tensor(float(n), dtype=var.dtype))
        return xc, (lin.weight * scale[:, None]).t().contiguous(), bn.bias

    def weighted_pre_activation(self, x: torch.Tensor, counts: torch.Tensor, activate: bool,
                                dtype: torch.dtype | None = None) -> torch.Tensor:
        """`pre_activation` of the rows x (U, d_in) repeated counts (U,) times each: batch norms
        use the statistics of the repeated rows.  Plain differentiable ops (U is small), with the
        parameters in `dtype` if given."""
        cast = (lambda p: p) if dtype is None else (lambda p: p.to(dtype))  # noqa: E731
        n = counts.sum().to(x.dtype)
        w = counts.to(x.dtype) / n
        h = x
        for i, lin in enumerate(self.linears):
            h = F.linear(h if i == 0 else F.silu(h), cast(lin.weight), cast(lin.bias))
            norm = None if self.norms is None else self.norms[i]
            if norm is None:
                continue
            if self.training and int(counts.sum()) > 1:
                mean = w @ h
                centered = h - mean
                var = w @ (centered * centered)
                norm.update_running(mean, var, n)
            else:
                mean, var = cast(norm.running_mean), cast(norm.running_var)
                centered = h - mean
            h = torch.addcmul(cast(norm.bias), centered, cast(norm.weight) * torch.rsqrt(var + norm.eps))
        return F.silu(h) if activate else h

    def _rows(self, x: torch.Tensor, activate: bool) -> torch.Tensor:
        """(P, d_in) -> (P, out): once per distinct row when many repeat (pairs of grid points,
        whose embeddings are a few hundred offsets) and no gradient flows to x, else every row."""
        rep = None if x.requires_grad or torch.compiler.is_compiling() else repeated_rows(x)
        if rep is None:
            return self.pre_activation(x, activate)
        distinct, inverse, counts = rep
        # in float64, the gather too: the gradients of the statistics sum over every repeat, with
        # cancellations, as the native batch norm's do in float64
        y = self.weighted_pre_activation(distinct.double(), counts, activate, dtype=torch.float64)
        return y.index_select(0, inverse).to(x.dtype)

    def forward(self, x: torch.Tensor, valid: torch.Tensor, activate: bool = True, all_valid: bool = False
                ) -> torch.Tensor:
        """x (..., d_in), valid (...) -> (..., out), 0 where invalid; activate=False: the last
        swish's input instead (also 0 where invalid, and silu(0) = 0); all_valid: every row is
        known to be valid (valid is not read)."""
        flat = x.reshape(-1, x.shape[-1])
        if all_valid or bool(valid.all()):
            y = self._rows(flat, activate)
        else:
            sel = valid.reshape(-1).nonzero()[:, 0]
            packed = self._rows(flat.index_select(0, sel), activate)
            y = packed.new_zeros(flat.shape[0], self.out).index_copy_(0, sel, packed)  # in place: no copy of the zeros
        return y.reshape(valid.shape + (self.out,))


class LieConv(nn.Module):
    """LieConv layer: Lifted cloud (values (bs, N, c_in)) -> Lifted cloud at the queries (bs, m, c_out).

    group: a generated group; nbhd: neighbours per query (None: all); fill: target fraction of
    the points inside the ball (>= 1: no ball); ds_frac: fraction of elements kept as queries;
    knn: nearest neighbours instead of ball sampling; mean: divide by the number of neighbours;
    cache_fps: FPS queries as a function of the input elements alone (the start drawn from a
    generator seeded by the layer's seed, not from its running stream), reused while the elements
    and mask are unchanged (images: every batch lifts the same grid, as the original cached its
    queries); a resumed run recomputes exactly what it had cached.  fps_distance: the distance form
    of farthest point sampling, "quadrature" or "sum" (None: the group's `distance_form`, which the
    ball always uses).
    """

    def __init__(self, c_in: int, c_out: int, group, *, nbhd: int | None = 32, fill: float = 1 / 3,
                 ds_frac: float = 1.0, knn: bool = False, mean: bool = True, bn: bool = True,
                 kernel_hidden: int = 32, kernel_channels: int = 16, radius: float | None = None,
                 radius_coeff: float = 0.5, seed: int = 0, cache_fps: bool = False,
                 fps_distance: str | None = None):
        super().__init__()
        self.group, self.c_in, self.c_out = group, c_in, c_out
        self.fps_distance = group.check_distance_form(fps_distance)
        self.nbhd = math.inf if nbhd is None else nbhd
        self.fill, self.ds_frac, self.knn, self.mean = min(float(fill), 1.0), float(ds_frac), knn, mean
        self.radius_coeff, self.seed = radius_coeff, seed
        self.kernel = KernelMLP(group.lie_dim + 2 * group.q_dim, kernel_hidden, kernel_channels, bn)
        PairGeometry.strategy(group)  # worked out now, outside any compiled forward pass
        self.linear = nn.Linear(kernel_channels * c_in, c_out)
        r0 = math.inf if self.fill >= 1 else (2.0 if radius is None else radius)
        self.register_buffer("radius", torch.tensor(float(r0), dtype=torch.float64))
        self.register_buffer("radius_ready", torch.tensor(self.fill >= 1 or radius is not None))
        self.fill_ema = self.fill
        self.adapt_radius = True
        self._gen: torch.Generator | None = None
        self.stream = 0  # selects an independent random stream (testing.equivariance_error uses it)
        self.cache_fps = cache_fps
        self._fps_cache: tuple | None = None

    def extra_repr(self) -> str:
        return (f"{self.c_in}, {self.c_out}, group={self.group.name}, nbhd={self.nbhd}, fill={self.fill:.3g}, "
                f"ds_frac={self.ds_frac:.3g}, knn={self.knn}, mean={self.mean}, fps_distance={self.fps_distance}")

    # --- randomness ---------------------------------------------------------------------------
    def reset_rng(self) -> None:
        """Restart this layer's random stream from its seed."""
        self._gen = None

    def rng(self) -> torch.Generator:
        """CPU generator of this layer's draws (FPS starts, neighbourhood seeds): a few numbers per
        call, the same on every device, so a network chooses the same neighbours on CPU and GPU."""
        if not self.training or self._gen is None:
            self._gen = stream_generator(self.seed, self.stream)
        return self._gen

    # --- subsampling and neighbourhoods ---------------------------------------------------------
    def subsample(self, cloud: Lifted, geometry: PairGeometry | None = None):
        """Query elements (idx (bs, m), mask (bs, m)) by FPS, or None when ds_frac == 1."""
        if self.ds_frac >= 1:
            return None
        if self.cache_fps and self._fps_cache is not None:
            a, mask, query = self._fps_cache
            if torch.equal(a, cloud.a) and torch.equal(mask, cloud.mask):  # False on other shapes too
                return query
        geometry = (PairGeometry(self.group, cloud, self.fps_distance) if geometry is None
                    else geometry.with_form(self.fps_distance))
        gen = stream_generator(self.seed, self.stream) if self.cache_fps else self.rng()
        query = farthest_point_sample(geometry, self.ds_frac, gen)
        if self.cache_fps:
            self._fps_cache = (cloud.a.detach().clone(), cloud.mask.clone(), query)
        return query

    @torch.no_grad()
    def _init_radius(self, geometry: PairGeometry, qidx: torch.Tensor, qmask: torch.Tensor) -> None:
        """First training step: r = median over (up to 64) queries of the fill-quantile of their distances."""
        c = min(64, qidx.shape[1])
        d = geometry.rows(qidx[:, :c]).sort(-1).values  # +inf (padding) sorts last
        nvalid = geometry.cloud.mask.sum(1)
        kth = (torch.ceil(self.fill * nvalid.double()).long() - 1).clamp(min=0)
        r = d.gather(-1, kth[:, None, None].expand(-1, c, 1))[..., 0]
        r = r[qmask[:, :c] & torch.isfinite(r)]
        if r.numel():
            self.radius.fill_(float(r.double().median()) * (1 + 1e-6) + 1e-12)
        self.radius_ready.fill_(True)

    def forward(self, cloud: Lifted, query=None, cache: dict | None = None) -> Lifted:
        """cloud: Lifted with values (bs, N, c_in); query: (idx, mask) from `subsample` or None;
        cache: a dict shared by the layers of one forward pass; when every element is a query and a
        neighbour (fill 1, no nbhd limit, no subsampling) the pair embeddings of a cloud are computed
        once and reused from it."""
        with exact_geometry(cloud.mask):  # distances and neighbourhoods in the cloud's own precision
            geometry = PairGeometry(self.group, cloud)
            if query is None:
                query = self.subsample(cloud, geometry)
            bs, n = cloud.mask.shape
            if query is None:
                qidx = torch.arange(n, device=cloud.mask.device).expand(bs, n)
                qmask = cloud.mask
            else:
                qidx, qmask = query
            adapt = self._adapting()
            if adapt and not bool(self.radius_ready):
                self._init_radius(geometry, qidx, qmask)
            if query is None and self.all_neighbours(n):  # every element: no ball, no distances, no sync
                idx, valid = every_element(qmask, cloud.mask)
            else:
                nb = select_neighbours(geometry, qidx, qmask, self.nbhd, float(self.radius), self.knn, self.rng())
                idx, valid = nb.idx, nb.valid
                if adapt and nb.pairs > 0:
                    self._adapt_radius(nb.inside / nb.pairs)
        out = self.convolve(geometry, cloud.values, qidx, idx, valid, cache, all_valid=query is None and cloud.full)
        out_cloud = cloud._replace(mask=qmask) if query is None else subsample_cloud(cloud, qidx, qmask)
        out = torch.where(out_cloud.mask[..., None], out, torch.zeros((), dtype=out.dtype, device=out.device))
        return out_cloud._replace(values=out)

    def _output_map_weight(self) -> torch.Tensor:
        """The output map's weight W (c_out, kc c_in) as (c_in, kc c_out): entry [c, w c_out + o] =
        W[o, w c_in + c]."""
        kc = self.linear.weight.shape[1] // self.c_in
        return self.linear.weight.view(self.c_out, kc, self.c_in).permute(2, 1, 0).reshape(self.c_in, kc * self.c_out)

    def _weighted_values(self, values: torch.Tensor) -> torch.Tensor:
        """values (bs, n, c_in) -> (bs, n kc, c_out): the output map applied to each neighbour's
        values per kernel channel, V[b, j kc + w, o] = sum_c W[o, w c_in + c] values[b, j, c]."""
        bs, n, c_in = values.shape
        return (values.reshape(bs * n, c_in) @ self._output_map_weight()).view(bs, -1, self.c_out)

    def convolve(self, geometry: PairGeometry, values: torch.Tensor, qidx: torch.Tensor, idx: torch.Tensor,
                 valid: torch.Tensor, cache: dict | None = None, all_valid: bool = False) -> torch.Tensor:
        """(1/n_i) sum_j k(a_ij) f_j for neighbours idx (bs, m, k): values (bs, N, c_in) -> (bs, m, c_out);
        all_valid: every query and neighbour is known to be valid (valid is not read)."""
        bs, m, k = idx.shape
        all_neighbours = k == values.shape[1] and idx.stride(-1) == 1 and idx.stride(0) == 0 and idx.stride(1) == 0
        shared = (cache is not None and all_neighbours and m == k and qidx.stride(0) == 0
                  and qidx.stride(-1) == 1)  # every element is a query too: the same pairs in every block
        reduced = autocasting(values)  # mixed precision: plain torch ops only (autocast casts them)
        # gathered, or padded
        live_only = not reduced and (not all_neighbours or not (all_valid or bool(valid.any(-1).all())))
        if live_only:
            emb = None  # embedded for the live queries (_contract_live_queries) or the valid pairs (_contract_by_size)
        elif shared:
            emb = dense_embedding(geometry, cache)
        else:
            with exact_geometry(idx):
                emb = geometry.embed(qidx[:, :, None], idx)  # (bs, m, k, D), never in reduced precision
        small_dense = all_neighbours and (bs * m * k < LEAN_MIN_ROWS or reduced)  # plain ops are faster
        if reduced and not all_neighbours:  # gather, then contract (what silu_contract does in chunks)
            pre = self.kernel(emb, valid)  # (bs, m, k, kc), 0 where invalid
            gathered = values.gather(1, idx.reshape(bs, m * k, 1).expand(-1, -1, values.shape[-1]))
            pooled = torch.einsum("bmkw,bmkc->bmwc", pre, gathered.reshape(bs, m, k, -1))
            out = F.linear(pooled.reshape(bs, m, -1), self.linear.weight)
        elif live_only and shared:  # padded clouds, every valid element a neighbour of every other
            out = self._contract_by_size(geometry, values, cache)
        elif live_only:
            out = self._contract_live_queries(geometry, qidx, emb, values, idx, valid, cache)
        elif small_dense:  # every element a neighbour (idx = arange), no gathering; the output map first
            out = self.kernel(emb, valid, all_valid=all_valid).reshape(bs, m, -1) @ self._weighted_values(values)
        else:  # the same from the kernel's pre-activation (silu(0) = 0 where invalid), memory-lean
            pre = self.kernel(emb, valid, activate=False)
            out = F.linear(silu_contract_dense(pre, values).reshape(bs, m, -1), self.linear.weight)
        if self.mean:
            out = out / valid.sum(-1, keepdim=True).clamp_min(1).to(out.dtype)
        return out + self.linear.bias

    def _contract_by_size(self, geometry: PairGeometry, values: torch.Tensor, cache: dict) -> torch.Tensor:
        """Every valid element a query and a neighbour of every valid element of its cloud, clouds
        padded (a batch of molecules): values (bs, N, c_in) -> (bs, N, c_out) without the bias, 0
        at padded queries: `contract_packed` on the valid elements, packed in and out."""
        bs, n = geometry.cloud.mask.shape
        sg = size_groups(geometry.cloud.mask, cache)
        out = self.contract_packed(sg, geometry, values.reshape(bs * n, -1).index_select(0, sg.elements), cache)
        return out.new_zeros(bs * n, out.shape[1]).index_copy(0, sg.elements, out).view(bs, n, -1)

    def contract_packed(self, sg: SizeGroups, geometry: PairGeometry, values: torch.Tensor, cache: dict,
                        inside: torch.Tensor | None = None) -> torch.Tensor:
        """The convolution sum of packed values (E, c_in) (the valid elements in the order of
        `sg`, see `size_groups`) when every valid element is a query and its neighbours are the valid
        elements of its cloud (all of them, or those with `inside` (P,) True, P the pairs of
        `packed_pairs`) of geometry's cloud -> (E, c_out), without the bias and the 1/n_i.

        Clouds with the same number s of valid elements are contracted together, densely, with no
        padded neighbour slots and no per-query gather of neighbour values: below LEAN_MIN_ROWS
        pairs the output map first (values -> (E, kc c_out), then one batched GEMM (clouds, s,
        s kc) @ (clouds, s kc, c_out) per size, `contract_by_size`), else memory-lean
        (`silu_contract_dense` per size, then the output map).  The kernel MLP runs once on all
        valid pairs, or on those inside (its batch norms see exactly those; it gives 0 on the others,
        which then add nothing); their embeddings are computed once per forward pass
        (`pair_embeddings`)."""
        groups = sg.groups
        x = pair_embeddings(geometry, cache)  # (valid pairs, D)
        lean = x.shape[0] >= LEAN_MIN_ROWS
        valid = torch.ones(x.shape[0], dtype=torch.bool, device=x.device) if inside is None else inside
        pre = self.kernel(x, valid, all_valid=inside is None, activate=not lean)
        if not lean:
            vw = (values @ self._output_map_weight()).view(-1, self.c_out)  # (E kc, c_out)
            return contract_by_size(pre, vw, [(e.shape[0], size) for e, size in groups])
        pres = pre.split([e.numel() * size for e, size in groups])  # split, not slices: one concatenation back
        vals = values.split([e.numel() for e, _ in groups])
        return F.linear(torch.cat([silu_contract_dense(y.view(e.shape[0], size, size, -1),
                                                       v.view(e.shape[0], size, -1)).reshape(e.numel(), -1)
                                   for (e, size), y, v in zip(groups, pres, vals)]), self.linear.weight)

    def forward_packed(self, cloud: Lifted, values: torch.Tensor, sg: SizeGroups, cache: dict) -> torch.Tensor:
        """The layer on packed values (E, c_in) (the valid elements of `cloud` in the order of
        `sg`) -> (E, c_out), when every valid element is a query whose neighbours are all the valid
        elements of its cloud, or all of those in its ball (`packs`): the same values as `forward`
        (the same ball, radius updates and random stream), packed."""
        hit = cache.get("geometry")  # one per cloud and forward pass: its GEMM features are built once
        if hit is None or hit[0] is not cloud.g or hit[1].group is not self.group:
            hit = (cloud.g, PairGeometry(self.group, cloud))
            cache["geometry"] = hit
        geometry = hit[1]
        inside = None if self.all_neighbours(cloud.mask.shape[1]) else self._packed_ball(geometry, sg, cache)
        out = self.contract_packed(sg, geometry, values, cache, inside)
        if self.mean:
            if inside is None:
                counts = sg.sizes
            else:  # neighbours per query: pairs are packed query by query, `size` per query
                counts = torch.cat([part.view(-1, size).sum(1) for part, (_, size) in
                                    zip(inside.split([e.numel() * size for e, size in sg.groups]), sg.groups)])
            out = out / counts[:, None].clamp_min(1).to(out.dtype)
        return out + self.linear.bias

    @torch.no_grad()
    def _packed_ball(self, geometry: PairGeometry, sg: SizeGroups, cache: dict) -> torch.Tensor:
        """Which pairs of `packed_pairs` lie inside the ball, (P,) bool, as `select_neighbours` decides:
        the exact d^2 that `PairGeometry.ball_pairs_flat`'s bounds stand in for, computed once per
        cloud and forward pass (`ball_pairs_flat` itself for "general" groups); in training the
        radius adapts as in `forward`."""
        mask = geometry.cloud.mask
        bs, n = mask.shape
        q = torch.arange(n, device=mask.device).expand(bs, n)
        adapt = self._adapting()
        pairs = packed_pairs(sg, n, cache)
        with exact_geometry(mask):
            if adapt and not bool(self.radius_ready):
                self._init_radius(geometry, q, mask)
            torch.randint(0, 2**62, (1,), generator=self.rng())  # select_neighbours' draw: the same stream after
            r = float(self.radius)
            if geometry.kind == "general":
                dense = torch.zeros(bs * n * n, dtype=torch.bool, device=mask.device)
                dense[geometry.ball_pairs_flat(q, r)] = True
                inside = dense.index_select(0, pairs)
            else:
                hit = cache.get("packed_sq_distances")
                if hit is None or hit[0] is not geometry:
                    hit = (geometry, geometry.exact_sq(pairs // n, pairs // (n * n) * n + pairs % n))
                    cache["packed_sq_distances"] = hit
                inside = hit[1] < r * r
        if adapt and inside.numel():
            self._adapt_radius(float(inside.sum()) / inside.numel())
        return inside

    def _adapting(self) -> bool:
        """Whether this forward pass adapts the ball radius (training, a ball, no nearest neighbours)."""
        return self.training and self.adapt_radius and not self.knn and self.fill < 1

    def _adapt_radius(self, observed: float) -> None:
        """One training step's radius update from the observed fraction of pairs inside the ball."""
        self.radius.add_(self.radius_coeff * (self.fill - observed)).clamp_(min=1e-6)
        self.fill_ema += 0.1 * (observed - self.fill_ema)

    def packs(self, n: int) -> bool:
        """Whether every element of a cloud of n elements (padding included) is a query whose
        neighbours are all the valid elements of its cloud inside its ball (no subsampling, no
        nearest neighbours, no neighbour limit below n): `forward_packed` can run it."""
        return self.ds_frac >= 1 and not self.knn and self.nbhd >= n

    def all_neighbours(self, n: int) -> bool:
        """Whether every element of a cloud of n elements (padding included) is a query and a
        neighbour of every valid element (`packs`, and no ball)."""
        return self.fill >= 1 and self.packs(n)

    def _contract_live_queries(self, geometry: PairGeometry, qidx: torch.Tensor, emb: torch.Tensor | None,
                               values: torch.Tensor, idx: torch.Tensor, valid: torch.Tensor,
                               cache: dict | None = None) -> torch.Tensor:
        """The sum over chosen neighbours, computed for the queries with at least one valid
        neighbour only (padded queries of a batch of clouds of different sizes have none): emb
        (bs, m, k, D) (None: embedded here, for those queries only, or gathered from
        `pair_embeddings` when the layers that see this cloud would embed more pairs on their own),
        values (bs, N, c_in), qidx (bs, m), idx and valid (bs, m, k) -> (bs, m, c_out) without the
        bias, 0 at the other queries.  The kernel MLP sees the same valid pairs in the same order."""
        bs, m, k = idx.shape
        n = values.shape[1]
        base = n * torch.arange(bs, device=idx.device)[:, None]
        rows = (idx + base[:, :, None]).reshape(bs * m, k)
        valid = valid.reshape(bs * m, k)
        live = valid.any(1)
        sel = None if bool(live.all()) else live.nonzero()[:, 0]
        if sel is not None:
            rows, valid = rows.index_select(0, sel), valid.index_select(0, sel)
        if emb is None:
            queries = (qidx + base).reshape(-1)
            queries = queries if sel is None else queries.index_select(0, sel)
            emb = self._embed_chosen(geometry, queries, rows, cache)
        else:
            emb = emb.reshape(bs * m, k, -1)
            emb = emb if sel is None else emb.index_select(0, sel)
        pre = self.kernel(emb, valid, activate=False)  # (Q, k, kc), 0 where invalid (silu(0) = 0)
        out = silu_contract(pre, values.reshape(bs * n, -1), rows, self.linear.weight)
        if sel is not None:
            out = out.new_zeros(bs * m, out.shape[1]).index_copy_(0, sel, out)
        return out.reshape(bs, m, -1)

    @staticmethod
    def _embed_chosen(geometry: PairGeometry, queries: torch.Tensor, rows: torch.Tensor,
                      cache: dict | None) -> torch.Tensor:
        """Embeddings of the pairs (queries (Q,), rows (Q, k)), flat element indices b N + i:
        (Q, k, D), any value where a member is padded.  Gathered from `pair_embeddings` when the
        cloud has fewer valid pairs than SHARE_EMBEDDINGS_BELOW x the pairs that its layers would
        embed on their own (`pair_uses` x this layer's), else embedded here."""
        cloud = geometry.cloud
        uses = pair_uses(cache, cloud)
        if uses > 1:
            counts = cloud.mask.sum(1)
            if int((counts * counts).sum()) < SHARE_EMBEDDINGS_BELOW * uses * rows.numel():
                bs, n = cloud.mask.shape
                emb = pair_embeddings(geometry, cache)
                lookup = packed_pair_rows(size_groups(cloud.mask, cache), bs, n, cache)
                at = lookup.index_select(0, (queries[:, None] * n + rows % n).reshape(-1)).clamp_min_(0)
                return emb.index_select(0, at).view(rows.shape + (-1,))
        with exact_geometry(rows):
            return geometry.embed_queries(queries, rows)


def _lieconvs(module: nn.Module):
    return [m for m in module.modules() if isinstance(m, LieConv)]


@contextlib.contextmanager
def frozen_radius(module: nn.Module):
    """Within the block, no LieConv in `module` adapts its ball radius (even in training mode)."""
    layers = _lieconvs(module)
    saved = [layer.adapt_radius for layer in layers]
    for layer in layers:
        layer.adapt_radius = False
    try:
        yield module
    finally:
        for layer, s in zip(layers, saved):
            layer.adapt_radius = s


def set_stream(module: nn.Module, stream: int) -> None:
    """Switch every random stream in `module` to stream `stream` (0: the default) and restart it."""
    for m in module.modules():
        if hasattr(m, "reset_rng"):
            m.stream = stream
            m.reset_rng()


def reset_rngs(module: nn.Module) -> None:
    """Restart the random streams of every layer in `module` that has one (LieConv, lifting)."""
    for m in module.modules():
        if hasattr(m, "reset_rng"):
            m.reset_rng()
