"""BottleBlock and LieResNet (paper §5, Figure 5): lifting, embedding, L bottleneck blocks, head, pooling.

Clouds are `Lifted` tuples whose values/mask carry the features (see lieconv.py).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from lieconv_runtime.lift import Lifted, all_valid
from lieconv_runtime.nn.lieconv import (LieConv, SizeGroups, autocasting, exact_geometry, gather_points, set_pair_uses, size_groups,
                                       stream_generator)
from lieconv_runtime.nn.norm import MaskedBatchNorm, Swish, masked_mean, masked_sum

__all__ = ["BottleBlock", "LieResNet", "PACK_BLOCKS", "PointwiseLinear", "PointwiseNorm", "on_rows", "pointwise"]

#: LieResNet runs its blocks on the packed valid elements when it can (`LieResNet.runs_packed`);
#: False: always padded (for comparisons)
PACK_BLOCKS = True


class PointwiseLinear(nn.Linear):
    """nn.Linear on a cloud's values."""

    def forward(self, cloud: Lifted) -> Lifted:
        return cloud._replace(values=super().forward(cloud.values))


class PointwiseNorm(nn.Module):
    """[masked batch norm] then swish on a cloud's values (bn=False: swish only)."""

    def __init__(self, channels: int, bn: bool = True):
        super().__init__()
        self.norm = MaskedBatchNorm(channels) if bn else None
        self.act = Swish()

    def forward(self, cloud: Lifted) -> Lifted:
        x = cloud.values
        if self.norm is None:
            return cloud._replace(values=self.act(x))
        return cloud._replace(values=self.act(self.norm(x, cloud.mask)))


def _add_residual(y: torch.Tensor, res: torch.Tensor | None) -> torch.Tensor:
    """y (..., c_out) with res (..., c_in) added to its first c_in channels (c_in <= c_out)."""
    if res is None:
        return y
    c = res.shape[-1]
    return y + res if y.shape[-1] == c else torch.cat([y[..., :c] + res, y[..., c:]], -1)


def on_rows(modules: nn.Module, cloud: Lifted, x: torch.Tensor) -> torch.Tensor:
    """Pointwise modules on packed rows x (E, c) of `cloud`'s valid entries -> (E, c')."""
    ones = torch.ones(1, x.shape[0], dtype=torch.bool, device=x.device)
    return modules(cloud._replace(values=x[None], mask=ones, full=True)).values[0]


def pointwise(modules: nn.Module, cloud: Lifted, residual: torch.Tensor | None = None) -> Lifted:
    """Pointwise modules (norms, linear maps) on the valid entries only, then `residual` (bs, n,
    c_in) added to the first c_in output channels: a batch of clouds of different sizes is packed
    first (QM9 pads about a third), and padded entries are 0 after."""
    mask = cloud.mask
    if all_valid(cloud):
        out = modules(cloud)
        return out._replace(values=_add_residual(out.values, residual))
    sel = mask.reshape(-1).nonzero()[:, 0]
    pack = lambda t: t.reshape(-1, t.shape[-1]).index_select(0, sel)  # noqa: E731
    y = _add_residual(on_rows(modules, cloud, pack(cloud.values)), None if residual is None else pack(residual))
    # in place into an empty tensor whose padded rows alone are zeroed: no zero fill of the valid
    # rows and no copy of the zeros (out-of-place index_copy clones its input)
    out = y.new_empty(mask.numel(), y.shape[-1]).index_fill_(0, (~mask).reshape(-1).nonzero()[:, 0], 0)
    out.index_copy_(0, sel, y)
    return cloud._replace(values=out.view(mask.shape + (y.shape[-1],)))


class BottleBlock(nn.Module):
    """Residual bottleneck: BN, swish, linear c->c/4, BN, swish, LieConv, BN, swish, linear -> c_out.

    The residual adds the (subsampled) input values to the first c_in output channels (c_in <= c_out).
    conv_kw go to LieConv (group, nbhd, fill, ds_frac, knn, mean, seed, ...).
    """

    def __init__(self, c_in: int, c_out: int, group, bn: bool = True, **conv_kw):
        super().__init__()
        if c_in > c_out:
            raise ValueError(f"BottleBlock needs c_in <= c_out, got {c_in} > {c_out}")
        self.c_in = c_in
        self.pre = nn.Sequential(PointwiseNorm(c_in, bn), PointwiseLinear(c_in, c_in // 4), PointwiseNorm(c_in // 4, bn))
        self.conv = LieConv(c_in // 4, c_out // 4, group, bn=bn, **conv_kw)
        self.post = nn.Sequential(PointwiseNorm(c_out // 4, bn), PointwiseLinear(c_out // 4, c_out))

    def forward(self, cloud: Lifted, cache: dict | None = None) -> Lifted:
        query = self.conv.subsample(cloud)
        res = cloud.values if query is None else gather_points(cloud.values, query[0])
        return pointwise(self.post, self.conv(pointwise(self.pre, cloud), query, cache), residual=res)

    def forward_packed(self, cloud: Lifted, x: torch.Tensor, sg: SizeGroups, cache: dict) -> torch.Tensor:
        """The block on packed values x (E, c_in) of `cloud`'s valid elements in the order of `sg`
        -> (E, c_out), when its LieConv can run packed (`LieConv.packs`): the same values as
        `forward`, packed."""
        h = self.conv.forward_packed(cloud, on_rows(self.pre, cloud, x), sg, cache)
        return _add_residual(on_rows(self.post, cloud, h), x)


def _per_layer(x, n: int, name: str) -> list:
    if isinstance(x, (int, float)) or x is None:
        return [x] * n
    x = list(x)
    if len(x) != n:
        raise ValueError(f"{name}: expected {n} values, got {len(x)}")
    return x


class LieResNet(nn.Module):
    """Lift, embed (linear c_in -> k[0]), L BottleBlocks, [BN], swish, linear -> num_outputs, pool.

    group: a generated group (lifting needs its `lift:` data).  k: width (int) or widths per stage
    (L + 1 values); fill, ds_frac: float or one per block; nbhd: neighbours per query (None: all);
    lift_samples: stabilizer samples per point (default group.lift_samples); lift_mode: "haar"
    (independent Haar samples of the stabilizer: equivariant in distribution, the paper),
    "stratified" (one Haar sample h_0 per point and h_k = h_0 R_k, `group.stratified_offsets`: K
    evenly spaced samples, each Haar, fresh every batch, equivariant in distribution) or "frame"
    (`group.stabilizer_frame`: deterministic and exactly equivariant, for one-dimensional compact
    stabilizers such as SE2's and for SE3's); pool: None, "mean" or "sum" ("mean" unless
    mean=False); cache_fps: each block reuses its FPS queries while its input elements are
    unchanged (LieConv); radius, radius_coeff: every block's starting ball radius (None: the
    fill-quantile of the first batch's distances) and its adaptation rate (LieConv); fps_distance: the
    distance form of the blocks' farthest point sampling (LieConv; None: the group's).  forward(coords (bs, n, d), values (bs, n, c_in), mask (bs, n) = None,
    stabilizer = None) -> (bs, num_outputs) if pooling, else the output cloud (a Lifted).
    `stabilizer` (bs, n, K, r, r) fixes the lifting samples (deterministic equivariance tests).
    """

    def __init__(self, chin: int, group, num_outputs: int = 1, k: int | Sequence[int] = 1536, num_layers: int = 6,
                 nbhd: int | None = 32, ds_frac: float | Sequence[float] = 1.0, fill: float | Sequence[float] = 1 / 4,
                 bn: bool = True, mean: bool = True, pool: bool | str = True, knn: bool = False,
                 lift_samples: int | None = None, kernel_channels: int = 16, kernel_hidden: int = 32, seed: int = 0,
                 lift_mode: str = "haar", cache_fps: bool = False, radius: float | None = None,
                 radius_coeff: float = 0.5, fps_distance: str | None = None):
        super().__init__()
        self.group = group
        if lift_mode not in ("haar", "stratified", "frame"):
            raise ValueError(f"lift_mode must be 'haar', 'stratified' or 'frame', got {lift_mode!r}")
        why_not = group.frame_support() if lift_mode != "haar" and group.stabilizer_dim > 0 else None
        if why_not is not None:
            raise ValueError(why_not)
        self.lift_mode = lift_mode
        group.lift_log_closed_form()  # worked out now, outside any compiled forward pass
        ks = [int(k)] * (num_layers + 1) if isinstance(k, int) else [int(v) for v in k]
        if len(ks) != num_layers + 1:
            raise ValueError(f"k: expected {num_layers + 1} widths, got {len(ks)}")
        fills, fracs = _per_layer(fill, num_layers, "fill"), _per_layer(ds_frac, num_layers, "ds_frac")
        self.lift_samples = int(lift_samples or group.lift_samples)
        self.seed = seed
        self.embedding = PointwiseLinear(chin, ks[0])
        self.blocks = nn.ModuleList(
            BottleBlock(ks[i], ks[i + 1], group, bn=bn, nbhd=nbhd, fill=fills[i], ds_frac=fracs[i], knn=knn,
                        mean=mean, kernel_channels=kernel_channels, kernel_hidden=kernel_hidden, seed=seed + 1 + i,
                        cache_fps=cache_fps, radius=radius, radius_coeff=radius_coeff, fps_distance=fps_distance)
            for i in range(num_layers))
        self.head = nn.Sequential(PointwiseNorm(ks[-1], bn), PointwiseLinear(ks[-1], num_outputs))
        self.pool = ("mean" if mean else "sum") if pool is True else (pool or None)
        self._gen: torch.Generator | None = None
        self.stream = 0

    def reset_rng(self) -> None:
        self._gen = None

    def rng(self) -> torch.Generator:
        """CPU generator for the lifting samples (they are drawn on the CPU in float64 anyway)."""
        if not self.training or self._gen is None:
            self._gen = stream_generator(self.seed, self.stream)
        return self._gen

    def lift(self, coords: torch.Tensor, values: torch.Tensor, mask: torch.Tensor | None = None,
             stabilizer: torch.Tensor | None = None) -> Lifted:
        """Everything needed before the first layer: (bs, n, d), (bs, n, c) -> Lifted (bs, n K, ...);
        mask None: every point valid (the cloud is marked `full`)."""
        full = mask is None
        if full:
            mask = torch.ones(coords.shape[:2], dtype=torch.bool, device=coords.device)
        mask = mask.bool()
        G, K = self.group, self.lift_samples
        with exact_geometry(coords):  # lifting in the coordinates' precision, also under autocast
            if stabilizer is None and G.stabilizer_dim > 0 and self.lift_mode == "frame":
                stabilizer = G.stabilizer_frame(coords, mask, K)
            elif stabilizer is None and G.stabilizer_dim > 0:
                # one draw per valid point, in order: padding never changes the samples of valid points
                stratified = self.lift_mode == "stratified"
                h = G.sample_stabilizer((int(mask.sum()), 1 if stratified else K), generator=self.rng(),
                                        dtype=coords.dtype, device=coords.device)
                if stratified:  # h_k = h_0 R_k: K samples that cut the stabilizer evenly, each Haar
                    h = h @ G.stratified_offsets(K, coords.dtype, coords.device)
                stabilizer = G.identity(mask.shape + (K,), coords).clone()
                stabilizer[mask] = h
            return G.lift(coords, values, mask, K, stabilizer=stabilizer)._replace(full=full)

    def forward_lifted(self, cloud: Lifted):
        cache: dict = {}  # pair embeddings shared by blocks that see the same pairs of the same elements
        if self.pool is not None and self.runs_packed(cloud):
            return self._forward_packed(cloud, cache)
        cloud = self.embedding(cloud)
        set_pair_uses(cache, cloud, self.pair_uses())
        for block in self.blocks:
            cloud = block(cloud, cache)
        cloud = pointwise(self.head, cloud)
        if self.pool is None:
            return cloud
        return (masked_mean if self.pool == "mean" else masked_sum)(cloud.values, cloud.mask)

    def pair_uses(self) -> int:
        """How many blocks embed pairs of the lifted input: those up to the first that subsamples
        (after it, the blocks see its queries)."""
        for i, block in enumerate(self.blocks):
            if block.conv.ds_frac < 1:
                return i + 1
        return len(self.blocks)

    def runs_packed(self, cloud: Lifted) -> bool:
        """Whether the blocks run on the packed valid elements (`_forward_packed`): a padded batch
        (clouds of different sizes), every block's LieConv making every valid element a query whose
        neighbours are all the valid elements of its cloud, or those in its ball (`LieConv.packs`),
        no mixed precision, PACK_BLOCKS on."""
        n = cloud.mask.shape[1]
        return (PACK_BLOCKS and not autocasting(cloud.values) and all(b.conv.packs(n) for b in self.blocks)
                and not all_valid(cloud))

    def _forward_packed(self, cloud: Lifted, cache: dict) -> torch.Tensor:
        """Embedding, blocks, head and pooling on the valid elements only, packed by cloud size
        (lieconv.size_groups): the padded path's values to roundoff, without packing and
        unpacking around every pointwise layer and convolution."""
        bs, n = cloud.mask.shape
        sg = size_groups(cloud.mask, cache)
        x = on_rows(self.embedding, cloud, cloud.values.reshape(bs * n, -1).index_select(0, sg.elements))
        for block in self.blocks:
            x = block.forward_packed(cloud, x, sg, cache)
        x = on_rows(self.head, cloud, x)
        pooled = x.new_zeros(bs, x.shape[1]).index_add(0, sg.elements // n, x)
        if self.pool == "sum":
            return pooled
        return pooled / cloud.mask.sum(1).clamp_min(1)[:, None].to(x.dtype)

    def forward(self, coords: torch.Tensor, values: torch.Tensor, mask: torch.Tensor | None = None,
                stabilizer: torch.Tensor | None = None):
        return self.forward_lifted(self.lift(coords, values, mask, stabilizer))
