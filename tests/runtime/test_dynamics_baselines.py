"""Hamiltonian plumbing, rollouts and the FC / HFC / OGN / HOGN baselines."""

import numpy as np
import pytest
import torch
from torch import nn

from lieconv_runtime.data.springs import (
    generate_springs,
    linear_momentum,
    make_chunks,
    sample_systems,
    simulate,
)
from lieconv_runtime.models import (
    FC,
    HFC,
    HOGN,
    OGN,
    HamiltonianDynamics,
    SpringPotential,
    make_baseline,
    predict_chunks,
    rollout,
)


N, D = 4, 2  # deliberately not the paper's 6 particles


@pytest.fixture(scope="module")
def tiny_chunks():
    traj = generate_springs(32, N, D, n_times=100, t_end=5.0, seed=0, progress=False)
    return make_chunks(traj, chunk_len=5, seed=0, dtype=torch.float64)


class PairwisePotential(nn.Module):
    """Random MLP potential of the pairwise squared distances only (translation invariant)."""

    def __init__(self):
        super().__init__()
        self.phi = nn.Sequential(nn.Linear(3, 32), nn.SiLU(), nn.Linear(32, 32), nn.SiLU(), nn.Linear(32, 1))

    def forward(self, q, m, k):
        r2 = ((q.unsqueeze(-2) - q.unsqueeze(-3)) ** 2).sum(-1)  # (bs, N, N)
        kk = k.unsqueeze(-1) * k.unsqueeze(-2)
        mm = m.unsqueeze(-1) * m.unsqueeze(-2)
        return self.phi(torch.stack([r2, kk, mm], -1)).squeeze(-1).sum((-1, -2))


def test_hamiltonian_dynamics_conserves_linear_momentum():
    torch.manual_seed(0)
    model = HamiltonianDynamics(PairwisePotential()).double()
    z0, m, k = sample_systems(8, 5, 2, np.random.default_rng(0), zero_momentum=False)
    ts = torch.linspace(0, 2, 101, dtype=torch.float64)
    zs = rollout(model, z0, ts, m, k, method="rk4")
    assert zs.shape == (8, 101, 20)
    p_tot = linear_momentum(zs, 5, 2)
    assert p_tot[:, 0].abs().min() > 1e-3
    assert (p_tot - p_tot[:, :1]).abs().max() <= 1e-12
    # positions did move (the check is not vacuous)
    assert (zs[:, -1] - zs[:, 0]).abs().max() > 1e-2


def test_true_potential_reproduces_ground_truth():
    traj = generate_springs(6, 3, 3, n_times=201, t_end=1.0, seed=4, progress=False)
    model = HamiltonianDynamics(SpringPotential())
    pred = rollout(model, traj.zs[:, 0], traj.ts, traj.m, traj.k, method="rk4")
    assert (pred - traj.zs).abs().max() < 1e-5  # RK4, dt = 5e-3
    adaptive = rollout(model, traj.zs[:, 0], traj.ts, traj.m, traj.k, method="dopri5", rtol=1e-10, atol=1e-10)
    assert (adaptive - traj.zs).abs().max() < 1e-7
    ref = simulate(traj.zs[:, 0], traj.m, traj.k, traj.ts)
    assert torch.equal(ref, traj.zs)


def test_no_grad_evaluation_and_double_backprop():
    torch.manual_seed(0)
    model = HFC(N, D, width=32).double()
    z = torch.randn(3, 2 * N * D, dtype=torch.float64)
    m, k = torch.rand(3, N, dtype=torch.float64) + 0.1, torch.rand(3, N, dtype=torch.float64)
    with torch.no_grad():
        dz_eval = model.derivative(z, m, k)
    assert not dz_eval.requires_grad
    dz = model.derivative(z, m, k)
    assert dz.requires_grad  # graph kept for training
    assert torch.allclose(dz.detach(), dz_eval)
    dz.pow(2).sum().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert no_grad == ["potential.net.8.bias"]  # only V's constant offset does not affect dz/dt
    # kinetic part: dq/dt = p / m exactly
    p = z[:, N * D:].reshape(3, N, D)
    assert torch.allclose(dz_eval[:, :N * D], (p / m[..., None]).reshape(3, -1))
    # forward(t, z) uses params bound by set_system
    assert torch.allclose(model.set_system(m, k)(torch.tensor(0.0), z).detach(), dz_eval)


@pytest.mark.parametrize("cls", [FC, HFC, OGN, HOGN])
def test_default_configuration_shapes(cls):
    model = cls(6, 2)
    n_256 = sum(1 for mod in model.modules() if isinstance(mod, nn.Linear) and mod.out_features == 256)
    assert n_256 >= 3
    z = torch.randn(2, 24)
    m, k = torch.rand(2, 6) + 0.1, torch.rand(2, 6)
    assert model.derivative(z, m, k).shape == (2, 24)


@pytest.mark.parametrize("name", ["FC", "HFC", "OGN", "HOGN"])
def test_baseline_trains(name, dtype, tiny_chunks):
    torch.manual_seed(0)
    model = make_baseline(name, N, D, width=64).to(dtype)
    data = tiny_chunks.to(dtype)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)  # the paper's baseline lr
    losses = []
    for _ in range(10):
        pred, target = predict_chunks(model, data)
        assert pred.shape == target.shape == (32, 5, 2 * N * D) and pred.dtype == dtype
        loss = ((pred - target) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert min(losses[-3:]) < 0.95 * losses[0], losses


def test_baselines_3d():
    for name in ["FC", "HFC", "OGN", "HOGN"]:
        model = make_baseline(name, 3, 3, width=16)
        z = torch.randn(5, 18)
        assert model.derivative(z, torch.rand(5, 3) + 0.1, torch.rand(5, 3)).shape == (5, 18)
    with pytest.raises(ValueError):
        make_baseline("CNN", 3, 3)
