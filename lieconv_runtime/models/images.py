"""The image network of the paper (§5, Table 1, App. C.3): images as point sets of pixels."""

from __future__ import annotations

import torch

from lieconv_runtime.nn.resnet import LieResNet

__all__ = ["ImgLieResNet", "image_points"]


def image_points(h: int = 28, w: int = 28, radius: float = 15.0, dtype=torch.float32):
    """Pixel coordinates on linspace(-h/2, h/2, h) x linspace(-w/2, w/2, w) with |x| < radius.

    Returns coords (n, 2) and the flat pixel indices (n,) they come from (648 points for 28x28).
    """
    i = torch.linspace(-h / 2, h / 2, h, dtype=dtype)
    j = torch.linspace(-w / 2, w / 2, w, dtype=dtype)
    grid = torch.stack(torch.meshgrid(i, j, indexing="ij"), -1).reshape(-1, 2)
    keep = torch.nonzero(grid.norm(dim=-1) < radius)[:, 0]
    return grid[keep], keep


class ImgLieResNet(LieResNet):
    """RotMNIST network: 6 blocks, width k growing as k / ds^(i/2), total downsampling `total_ds`
    spread evenly (per block ds = total_ds^(1/L), FPS in the group distance), fill_i = fill / ds^i,
    nbhd 25, batch norm, mean aggregation and pooling, 10 outputs.  FPS queries are cached per
    block (every batch lifts the same grid; recomputed when the lifted elements change, e.g. for
    groups with random stabilizer samples), as the original cached them.  Groups whose stabilizer allows it
    (SE2) lift with `lift_mode="stratified"` unless told otherwise: fresh Haar samples every batch, the K
    samples of a pixel evenly spaced (docs/lifting.md); other stabilizers draw K independent ones ("haar").

    forward(images (bs, c, h, w)) -> logits (bs, num_targets).  Pixels with |x| >= 15 are dropped.
    """

    def __init__(self, group, chin: int = 1, total_ds: float = 0.1, num_layers: int = 6, fill: float = 0.1,
                 k: int = 128, nbhd: int = 25, num_targets: int = 10, increase_channels: bool = True,
                 knn: bool = False, **kw):
        kw.setdefault("cache_fps", True)  # every batch lifts the same pixel grid
        if group.stabilizer_dim > 0 and group.frame_support() is None:
            kw.setdefault("lift_mode", "stratified")  # fresh Haar samples, evenly spread (SE2: two, pi apart)
        ds = total_ds ** (1 / num_layers)
        fills = [fill / ds ** i for i in range(num_layers)]
        ks = [int(k / ds ** (i / 2)) if increase_channels else k for i in range(num_layers + 1)]
        super().__init__(chin, group, num_outputs=num_targets, k=ks, num_layers=num_layers, nbhd=nbhd, ds_frac=ds,
                         fill=fills, mean=True, knn=knn, **kw)
        self._grid = None

    def points(self, images: torch.Tensor):
        """images (bs, c, h, w) -> coords (bs, n, 2), values (bs, n, c), mask (bs, n)."""
        bs, c, h, w = images.shape
        if self._grid is None or self._grid[0].shape != (h, w):
            coords, keep = image_points(h, w, dtype=images.dtype)
            self._grid = (torch.empty(h, w), coords, keep)
        _, coords, keep = self._grid
        coords = coords.to(images.device, images.dtype).expand(bs, -1, -1)
        values = images.reshape(bs, c, h * w)[:, :, keep.to(images.device)].transpose(1, 2)
        mask = torch.ones(bs, coords.shape[1], dtype=torch.bool, device=images.device)
        return coords, values, mask

    def forward(self, images: torch.Tensor, stabilizer: torch.Tensor | None = None) -> torch.Tensor:
        return super().forward(*self.points(images), stabilizer=stabilizer)
