"""Farthest point sampling in the group distance, and neighbourhood selection (paper §4.3, A.4).

Both only read distances through a `PairGeometry`, so both are equivariant (the distance is
left-invariant); all randomness comes from an explicit torch.Generator.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from lieconv_runtime import native
from lieconv_runtime.nn.geometry import PairGeometry, band_tol

__all__ = ["Neighbourhoods", "every_element", "farthest_point_sample", "pair_keys", "row_keys", "select_neighbours", "uniform"]

#: on the CPU, flat and (m <= 3) orthogonal groups select balls with the native kernel when it
#: builds (the same closed-form distances and keys)
USE_NATIVE = True
_MIX1, _MIX2, _GOLD = -4658895280553007687, -7723592293110705685, -7046029254386353131  # splitmix64 (signed)


def _mix(x: torch.Tensor) -> torch.Tensor:
    """splitmix64's finaliser, in place on int64 x (logical shifts through masks); returns x."""
    t = torch.empty_like(x)
    for shift, mul in ((30, _MIX1), (27, _MIX2), (31, None)):
        torch.bitwise_right_shift(x, shift, out=t).bitwise_and_((1 << (64 - shift)) - 1)
        x.bitwise_xor_(t)
        if mul is not None:
            x.mul_(mul)
    return x


def _row_states(seed: int, b: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
    """Pseudo-random int64 states of rows (b, i) (int64 tensors, b < 2^23, i < 2^20): the start of
    each row's splitmix64 stream in `pair_keys`."""
    return _mix(((b << 20) | i) * _GOLD + seed)


def _keys_from_states(states: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
    """Keys in [0, 2^31) (int32) of pairs whose rows have `states` (int64, gathered per pair) and
    columns j: element j + 1 of each row's splitmix64 stream."""
    return (_mix(torch.add(states, j + 1, alpha=_GOLD)) >> 33).to(torch.int32).bitwise_and_(0x7FFFFFFF)


def pair_keys(seed: int, b: torch.Tensor, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
    """Uniform keys in [0, 2^31) (int32) that are a pseudo-random function of (seed, b, i, j) (int64
    tensors of element indices < 2^20, b < 2^23): independent of chunking, order and padding, so the
    same pairs get the same keys for x and g.x.  Element j + 1 of a splitmix64 stream started at a
    hash of (seed, b, i), so a chunk hashes each query once and does a few in-place integer passes
    per pair.  Ties have probability ~2^-31 per pair of candidates."""
    return _keys_from_states(_row_states(seed, b, i), j)


def row_keys(x: torch.Tensor) -> torch.Tensor:
    """An int64 hash (P,) of the bits of each row of x (P, D) float32/float64: equal rows get equal
    keys, different rows different ones but for rare collisions (splitmix64 steps per column)."""
    bits = x.detach().contiguous().view(torch.int32 if x.dtype == torch.float32 else torch.int64).long()
    keys = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
    for col in bits.unbind(1):
        keys = _mix(keys.add_(col, alpha=_GOLD))
    return keys


def uniform(shape, generator: torch.Generator | None, like: torch.Tensor) -> torch.Tensor:
    """U(0, 1) samples of `shape` with like's dtype and device, drawn from `generator`."""
    dev = generator.device if generator is not None else like.device
    return torch.rand(shape, generator=generator, dtype=like.dtype, device=dev).to(like.device)


@torch.no_grad()
def farthest_point_sample(geometry: PairGeometry, frac: float, generator: torch.Generator | None = None):
    """Farthest point sampling of round(frac * n_valid) elements per cloud, in the group distance.

    Returns idx (bs, M) long and mask (bs, M) bool with M = max over the batch; entries past a
    cloud's own count are padding (mask False).  The first element is a uniformly random valid
    one (from `generator`), so the result does not depend on padding or on the other clouds.
    """
    mask = geometry.cloud.mask
    bs, n = mask.shape
    counts = torch.round(frac * mask.sum(1).double()).long()
    counts = torch.where(mask.any(1), counts.clamp_min(1), counts)
    M = int(counts.max()) if bs else 0
    ref = geometry.cloud.a
    # start: the floor(u n_valid)-th valid element (one draw per cloud: independent of padding)
    rank = (uniform((bs,), generator, ref.double()) * mask.sum(1)).long()
    c = ((torch.cumsum(mask.long(), 1) - 1 == rank[:, None]) & mask).long().argmax(1)
    keep = torch.arange(M, device=mask.device)[None, :] < counts[:, None]
    if _native_fps_ok(geometry):  # one C loop per cloud; on the CPU also for accelerator data (small inputs)
        cpu = lambda t: None if t is None else t.detach().cpu()  # noqa: E731
        if geometry.kind == "flat":
            idx = native.fps_flat(cpu(geometry.f), cpu(mask), cpu(c), M)
        else:
            R, t, qs, _ = geometry.native_orthogonal()
            idx = native.fps_orthogonal(cpu(R).view(bs, n, geometry.m, geometry.m), cpu(t), cpu(qs), cpu(mask),
                                        cpu(c), M, geometry.sum_form)
        return idx.to(mask.device), keep
    # score: running min distance to the chosen set; -1 marks padding, -2 chosen elements
    score = torch.where(mask, torch.full((), math.inf, dtype=ref.dtype, device=ref.device),
                        torch.full((), -1.0, dtype=ref.dtype, device=ref.device))
    idx = torch.zeros(bs, M, dtype=torch.long, device=mask.device)
    minus2 = torch.full((bs, 1), -2.0, dtype=ref.dtype, device=ref.device)
    for k in range(M):
        idx[:, k] = c
        score.scatter_(1, c[:, None], minus2)
        torch.minimum(score, geometry.fps_row(c), out=score)
        c = score.argmax(1)
    return idx, keep


def _native_fps_ok(geometry: PairGeometry) -> bool:
    """Whether farthest_point_sample runs the native loop: flat groups and orthogonal linear parts
    with one rotation plane (m = 2, 3), float32/float64, kernels built."""
    if not USE_NATIVE or not (geometry.kind == "flat" or (geometry.kind == "orthogonal" and geometry.m in (2, 3))):
        return False
    ref = geometry.cloud.a
    return ref.dtype in (torch.float32, torch.float64) and native.available()


class Neighbourhoods(NamedTuple):
    """Chosen pairs: idx (bs, m, k) indices into the cloud, valid (bs, m, k), and the fill statistics."""

    idx: torch.Tensor
    valid: torch.Tensor
    inside: float  # number of valid (query, element) pairs inside the ball
    pairs: float  # number of valid (query, element) pairs


def every_element(qmask: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every element as a neighbour of every query: qmask (bs, m), mask (bs, n) -> idx (bs, m, n)
    (one arange, expanded: no copy) and valid (bs, m, n).  Reads no tensor value, so no device sync."""
    bs, m = qmask.shape
    n = mask.shape[1]
    return torch.arange(n, device=mask.device).expand(bs, m, n), qmask[:, :, None] & mask[:, None, :]


@torch.no_grad()
def select_neighbours(geometry: PairGeometry, qidx: torch.Tensor, qmask: torch.Tensor, k: int, radius: float,
                      knn: bool = False, generator: torch.Generator | None = None) -> Neighbourhoods:
    """Up to k neighbours per query qidx (bs, m): a uniformly random subset of the elements inside the
    ball of `radius` (random keys from `generator`), or the k nearest (knn=True).  Chunks of queries.
    """
    mask = geometry.cloud.mask
    bs, n = mask.shape
    m = qidx.shape[1]
    k = min(k, n)
    pairs = float((qmask.sum(1) * mask.sum(1)).sum())
    if m == 0:  # no queries (e.g. every cloud empty)
        return Neighbourhoods(torch.zeros(bs, 0, k, dtype=torch.long, device=mask.device),
                              torch.zeros(bs, 0, k, dtype=torch.bool, device=mask.device), 0.0, pairs)
    if not knn and math.isinf(radius) and k == n:  # everything, no distances needed
        return Neighbourhoods(*every_element(qmask, mask), pairs, pairs)
    seed = int(torch.randint(0, 2**62, (1,), generator=generator)) if generator is not None else \
        int(torch.randint(0, 2**62, (1,)))
    if _native_ok(geometry, knn):
        if geometry.kind == "flat":
            idx, valid, inside = native.flat_ball_select(geometry.f, mask, qidx, qmask, radius * radius, seed, k)
        else:
            R, t, qs, scale = geometry.native_orthogonal()
            R = R.view(bs, n, geometry.m, geometry.m)
            idx, valid, inside = native.orthogonal_ball_select(R, t, qs, mask, qidx, qmask, radius * radius / scale,
                                                               seed, k, band_tol(R.dtype), geometry.sum_form)
        return Neighbourhoods(idx, valid, float(inside), pairs)
    idx_chunks, valid_chunks, inside = [], [], 0.0
    step = geometry.chunk(m)
    for s in range(0, m, step):
        qi, qm = qidx[:, s:s + step], qmask[:, s:s + step]
        if knn:
            d = geometry.rows(qi)
            d = torch.where(qm[:, :, None], d, torch.full((), math.inf, dtype=d.dtype, device=d.device))
            top, nb = torch.topk(d, k, dim=-1, largest=False)
            idx_chunks.append(nb)
            valid_chunks.append(torch.isfinite(top))
            continue
        c = qi.shape[1]
        if math.isinf(radius):  # random k of the valid elements
            lin = (qm[:, :, None] & mask[:, None, :]).view(-1).nonzero()[:, 0]
        else:
            lin = geometry.ball_pairs_flat(qi, radius)
        row, j = lin // n, lin % n  # row = b c + i
        if not bool(qm.all()):
            keep = qm.reshape(-1).index_select(0, row).nonzero()[:, 0]
            row, j = row.index_select(0, keep), j.index_select(0, keep)
        inside += float(row.numel())
        b = torch.arange(bs, device=mask.device)[:, None].expand(bs, c)
        states = _row_states(seed, b.reshape(-1), qi.reshape(-1))  # (bs c,): one hash per query
        nb, valid = _choose(row, j, bs, c, k, _keys_from_states(states.index_select(0, row), j))
        idx_chunks.append(nb)
        valid_chunks.append(valid)
    if knn:
        inside = pairs
    return Neighbourhoods(torch.cat(idx_chunks, 1), torch.cat(valid_chunks, 1), inside, pairs)


def _native_ok(geometry: PairGeometry, knn: bool) -> bool:
    """Whether select_neighbours runs the native kernel: a ball (not kNN) of a flat group or of
    orthogonal linear parts with one rotation plane (m = 2, 3), on data the kernels take."""
    if not USE_NATIVE or knn:
        return False
    if not (geometry.kind == "flat" or (geometry.kind == "orthogonal" and geometry.m in (2, 3))):
        return False
    return native.usable(geometry.cloud.a)


def _choose(row, j, bs: int, c: int, k: int, keys: torch.Tensor):
    """From pairs (row = b c + i, j) in ascending order with i.i.d. uniform keys, up to k uniformly
    random j per row (the k largest keys): idx (bs, c, k) (0 where unused) and valid (bs, c, k)."""
    dev = row.device
    counts = torch.bincount(row, minlength=bs * c)
    start = torch.cumsum(counts, 0) - counts
    pos = torch.arange(row.numel(), device=dev) - start.index_select(0, row)
    width = max(int(counts.max()) if counts.numel() else 0, 1)
    flat = row * width + pos
    table = torch.full((bs * c * width,), -1, dtype=torch.long, device=dev).index_copy_(0, flat, j).view(-1, width)
    if width > k:  # uniformly random k-subset per row: the k largest of i.i.d. uniform keys
        dense = torch.full((bs * c * width,), -1, dtype=keys.dtype, device=dev).index_copy_(0, flat, keys)
        table = table.gather(1, torch.topk(dense.view(-1, width), k, dim=1, sorted=False).indices)
    elif width < k:
        table = torch.cat([table, table.new_full((bs * c, k - table.shape[1]), -1)], 1)
    valid = table >= 0
    return table.clamp_min(0).reshape(bs, c, k), valid.reshape(bs, c, k)
