"""Noether, exactly: with random (untrained) weights, an HLieResNet whose potential is a LieResNet
over T2 conserves total linear momentum, over SO2 total angular momentum, along tight adaptive
rollouts (float64), while the Trivial2 one measurably does not.  The symmetry comes from the
group only: positions are not centred."""

import pytest
import torch

from lieconv_runtime.data.springs import angular_momentum, linear_momentum
from lieconv_runtime.models.hamiltonian import rollout
from lieconv_runtime.models.registry import build_model

torch.set_num_threads(1)
N, D = 4, 2


def drift(group):
    torch.manual_seed(0)
    model = build_model("HLieResNet", N, D, group, width=16, num_layers=2).double().eval()
    gen = torch.Generator().manual_seed(1)
    z0 = torch.randn(2, 2 * N * D, generator=gen, dtype=torch.float64)
    z0[:, N * D:] += 0.5  # non-zero total momentum
    m = 0.1 + 3 * torch.rand(2, N, generator=gen, dtype=torch.float64)
    k = 5 * torch.rand(2, N, generator=gen, dtype=torch.float64)
    ts = torch.linspace(0, 0.5, 3, dtype=torch.float64)
    zs = rollout(model, z0, ts, m, k, method="dopri5", rtol=1e-12, atol=1e-12)
    P = linear_momentum(zs, N, D)
    L = angular_momentum(zs, N, D)
    lin = ((P[:, -1] - P[:, 0]).norm(dim=-1) / P[:, 0].norm(dim=-1)).max()
    ang = ((L[:, -1] - L[:, 0]).abs() / L[:, 0].abs()).max()
    return float(lin), float(ang)


@pytest.mark.parametrize("group, conserved", [("T2", "linear"), ("SO2", "angular")])
def test_group_symmetry_conserves_its_momentum(group, conserved):
    lin, ang = drift(group)
    assert (lin if conserved == "linear" else ang) <= 1e-9, (lin, ang)


def test_trivial_group_does_not_conserve_momentum():
    lin, ang = drift("Trivial2")
    assert lin > 1e-6 and ang > 1e-6, (lin, ang)
