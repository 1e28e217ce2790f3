"""Noether, exactly: an HLieResNet whose potential is a LieResNet over T2 conserves total linear
momentum, over SO2 total angular momentum, over SE2 both, along tight adaptive rollouts (float64),
while the Trivial2 one measurably does not -- with random weights and after a short training run
(the symmetry is structural, so training cannot break it).  Positions are not centred: the
symmetry comes from the group only.  SE2 lifts by the equivariant frame (group.stabilizer_frame),
so its potential is a deterministic, exactly invariant function of the positions."""

import math

import pytest
import torch

from lieconv_runtime.data.springs import angular_momentum, generate_springs, linear_momentum, make_chunks
from lieconv_runtime.models.hamiltonian import predict_chunks, rollout
from lieconv_runtime.models.registry import build_model

N = 4
CONSERVED = {"T2": ("linear",), "SO2": ("angular",), "SE2": ("linear", "angular"), "Trivial2": (),
             "T3": ("linear",), "SO3": ("angular",), "SE3": ("linear", "angular"), "Trivial3": ()}


def dim_of(group):
    return int(group[-1])


def make_model(group):
    torch.manual_seed(0)
    return build_model("HLieResNet", N, dim_of(group), group, width=16, num_layers=2)


def train_briefly(model, steps=6):
    """A few Adam steps on real spring chunks (float32, RK4 on the chunk grid, as in training)."""
    data = generate_springs(16, N, model.dim, n_times=50, t_end=2.0, seed=3, progress=False)
    chunks = make_chunks(data, chunk_len=5, seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(steps):
        pred, target = predict_chunks(model, chunks)
        loss = (pred - target).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def drifts(model):
    """Largest relative drift of total linear and angular momentum over dopri5 rollouts (rtol 1e-12)."""
    model = model.double().eval()
    D = model.dim
    gen = torch.Generator().manual_seed(1)
    z0 = torch.randn(2, 2 * N * D, generator=gen, dtype=torch.float64)
    z0[:, N * D:] += 0.5  # non-zero total momentum
    m = 0.1 + 3 * torch.rand(2, N, generator=gen, dtype=torch.float64)
    k = 5 * torch.rand(2, N, generator=gen, dtype=torch.float64)
    ts = torch.linspace(0, 0.5 if D == 2 else 0.2, 3, dtype=torch.float64)  # 3D: shorter (slower logs)
    with torch.no_grad():
        zs = rollout(model, z0, ts, m, k, method="dopri5", rtol=1e-12, atol=1e-12)
    P = linear_momentum(zs, N, D)
    L = angular_momentum(zs, N, D)
    lin = ((P[:, -1] - P[:, 0]).norm(dim=-1) / P[:, 0].norm(dim=-1)).max()
    dL = L[:, -1] - L[:, 0]
    ang = (dL.abs() / L[:, 0].abs()).max() if D == 2 else (dL.norm(dim=-1) / L[:, 0].norm(dim=-1)).max()
    return {"linear": float(lin), "angular": float(ang)}


def check(group, d):
    for kind in ("linear", "angular"):
        if kind in CONSERVED[group]:
            assert d[kind] <= 1e-9, (group, d)
        else:  # the test can fail: without the symmetry the momentum drifts far above tolerance
            assert d[kind] > 1e-6, (group, d)


@pytest.mark.parametrize("group", ["T2", "SO2", "SE2", "Trivial2", "T3", "SO3", "SE3", "Trivial3"])
def test_untrained_conservation_follows_the_group(group):
    check(group, drifts(make_model(group)))


@pytest.mark.parametrize("group", ["T2", "SO2", "SE2", "Trivial2"])
def test_trained_conservation_follows_the_group(group):
    model = make_model(group)
    losses = train_briefly(model)
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0], losses
    check(group, drifts(model))


def test_se2_potential_is_exactly_invariant_and_deterministic():
    D = 2
    V = make_model("SE2").potential.double()
    gen = torch.Generator().manual_seed(2)
    q = torch.randn(3, N, D, generator=gen, dtype=torch.float64)
    m, k = torch.rand(3, N, generator=gen, dtype=torch.float64), torch.rand(3, N, generator=gen, dtype=torch.float64)
    th = 2.1
    R = torch.tensor([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]], dtype=torch.float64)
    v0 = V(q, m, k)
    assert torch.equal(v0, V(q, m, k))
    v1 = V(q @ R.T + torch.tensor([3.0, -1.0], dtype=torch.float64), m, k)
    assert (v1 - v0).abs().max() <= 1e-12 * v0.abs().max(), (v1 - v0)
    g1 = torch.autograd.functional.jacobian(lambda x: V(x, m, k).sum(), q)
    g2 = torch.autograd.functional.jacobian(lambda x: V(x, m, k).sum(), q @ R.T)
    assert (g2 - g1 @ R.T).abs().max() <= 1e-9 * g1.abs().max()  # the force rotates with the system
