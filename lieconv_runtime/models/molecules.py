"""The molecule network of the paper (§5, Tables 2-3, App. C.3): atoms as point sets."""

from __future__ import annotations

import torch

from lieconv_runtime.nn.resnet import LieResNet

__all__ = ["MolecLieResNet"]


class MolecLieResNet(LieResNet):
    """QM9 network: 6 blocks, width 1536, batch norm, mean aggregation and pooling, no downsampling.

    Groups with a non-trivial stabilizer (SE3, SO3): fill 1/2, nbhd 25; others (T3, Trivial3): fill 1,
    nbhd 100 (the paper's settings).  Lift samples: ``lift_samples``, else the group's spec default
    (the qm9 task passes the paper's 4 for SE3/SO3 explicitly).
    forward(positions (bs, n, 3), one_hot (bs, n, S), charges (bs, n)) -> (bs,); atoms with
    charge 0 are padding.  Features: one_hot x (1, Z/charge_scale, (Z/charge_scale)^2).
    """

    def __init__(self, group, num_species: int = 5, charge_scale: float = 9.0, k: int = 1536, num_layers: int = 6,
                 nbhd: int | None = None, fill: float | None = None, lift_samples: int | None = None, **kw):
        lifts = group.stabilizer_dim > 0
        nbhd = nbhd if nbhd is not None else (25 if lifts else 100)
        fill = fill if fill is not None else (0.5 if lifts else 1.0)
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
