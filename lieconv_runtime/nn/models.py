"""Task wrappers around LieResNet: images (RotMNIST), molecules (QM9), Hamiltonian potentials.

Settings follow the paper (App. C.3 and §5); everything group-specific is asked of the group.
"""

from __future__ import annotations

import torch

from lieconv_runtime.nn.lieconv import frozen_radius
from lieconv_runtime.nn.resnet import LieResNet

__all__ = ["ImgLieResNet", "LieResNetPotential", "MolecLieResNet", "image_points"]


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
    groups with random stabilizer samples), as the original cached them.

    forward(images (bs, c, h, w)) -> logits (bs, num_targets).  Pixels with |x| >= 15 are dropped.
    """

    def __init__(self, group, chin: int = 1, total_ds: float = 0.1, num_layers: int = 6, fill: float = 0.1,
                 k: int = 128, nbhd: int = 25, num_targets: int = 10, increase_channels: bool = True,
                 knn: bool = False, **kw):
        kw.setdefault("cache_fps", True)  # every batch lifts the same pixel grid
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


class MolecLieResNet(LieResNet):
    """QM9 network: 6 blocks, width 1536, batch norm, mean aggregation and pooling, no downsampling.

    Groups with a non-trivial stabilizer (SE3, SO3): fill 1/2, 4 lift samples, nbhd 25 (set the
    group's alpha = 0.2 when loading it); others (T3, Trivial3): fill 1, 1 sample, nbhd 100.
    forward(positions (bs, n, 3), one_hot (bs, n, S), charges (bs, n)) -> (bs,); atoms with
    charge 0 are padding.  Features: one_hot x (1, Z/charge_scale, (Z/charge_scale)^2).
    """

    def __init__(self, group, num_species: int = 5, charge_scale: float = 9.0, k: int = 1536, num_layers: int = 6,
                 nbhd: int | None = None, fill: float | None = None, lift_samples: int | None = None, **kw):
        lifts = group.stabilizer_dim > 0
        nbhd = nbhd if nbhd is not None else (25 if lifts else 100)
        fill = fill if fill is not None else (0.5 if lifts else 1.0)
        lift_samples = lift_samples or (4 if lifts else 1)
        super().__init__(3 * num_species, group, num_outputs=1, k=k, num_layers=num_layers, nbhd=nbhd, fill=fill,
                         ds_frac=1.0, mean=True, lift_samples=lift_samples, **kw)
        self.charge_scale = charge_scale

    def featurize(self, one_hot: torch.Tensor, charges: torch.Tensor) -> torch.Tensor:
        z = charges.to(one_hot.dtype if one_hot.is_floating_point() else torch.float32) / self.charge_scale
        powers = torch.stack([torch.ones_like(z), z, z * z], -1)  # (bs, n, 3)
        return (one_hot.to(z.dtype)[..., :, None] * powers[..., None, :]).flatten(-2)

    def forward(self, positions: torch.Tensor, one_hot: torch.Tensor, charges: torch.Tensor,
                stabilizer: torch.Tensor | None = None) -> torch.Tensor:
        values = self.featurize(one_hot, charges).to(positions.dtype)
        return super().forward(positions, values, charges > 0, stabilizer=stabilizer)[:, 0]


class LieResNetPotential(LieResNet):
    """Potential V(q (bs, N, D), m (bs, N), k (bs, N)) -> (bs,) for HamiltonianDynamics.

    Values (m_i, k_i) per particle; width 384, 4 blocks, no batch norm, every particle in every
    neighbourhood, mean pooling to a scalar.  Positions are not centred: any translation
    symmetry comes from the group.  The ball radius is irrelevant (fill 1), so ODE solves never
    change the module's state.  Groups with a stabilizer lift by `group.stabilizer_frame` when
    they can (SE2, SO3, SE3): V is then a deterministic, exactly invariant function of q, which
    ODE solvers and Noether's theorem need; otherwise (Sim2) by Haar samples, redrawn per call.
    """

    def __init__(self, group, width: int = 384, num_layers: int = 4, **kw):
        kw.setdefault("lift_samples", 1)
        if group.stabilizer_dim > 0 and group.frame_support() is None:
            kw.setdefault("lift_mode", "frame")
        super().__init__(2, group, num_outputs=1, k=width, num_layers=num_layers, nbhd=None, fill=1.0, bn=False,
                         mean=True, **kw)

    def forward(self, q: torch.Tensor, m: torch.Tensor, k: torch.Tensor, stabilizer: torch.Tensor | None = None):
        values = torch.stack([m, k], -1).to(q.dtype)
        with frozen_radius(self):
            return super().forward(q, values, None, stabilizer=stabilizer)[:, 0]


def build_hlieresnet(n_particles: int, dim: int, group: str, **kw):
    """Registry builder: HamiltonianDynamics with a LieResNetPotential over `group` (a group name)."""
    from lieconv_runtime import load_group
    from lieconv_runtime.models.hamiltonian import HamiltonianDynamics

    alpha = kw.pop("alpha", None)
    G = load_group(group) if alpha is None else load_group(group, alpha=alpha)
    return HamiltonianDynamics(LieResNetPotential(G, **kw), n_particles, dim)
