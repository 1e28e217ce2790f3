"""lieconv_runtime.orthogonal.log_coordinates (the log lifting uses for SE2, SE3, SO2, SO3, SO2z)
equals the generated log and scipy's logm, near rotation angle pi too, in float64 and float32;
lifting uses it only where no gradient must flow."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch

from lieconv_runtime import load_group
from lieconv_runtime.orthogonal import log_coordinates

GROUPS = ["SE3", "SE2", "SO3", "SO2", "SO2z"]
TOL = {torch.float64: 1e-12, torch.float32: 2e-5}


def _elements(G, n: int, seed: int) -> torch.Tensor:
    """Half generic exp(N(0, 1.5^2)) elements, half with rotation angle pi - 10^-s, s in [0, 8]."""
    gen = torch.Generator().manual_seed(seed)
    a = 1.5 * torch.randn(n, G.lie_dim, generator=gen, dtype=torch.float64)
    rot = G.extent(a)  # largest rotation angle
    near = math.pi - 10 ** (-8 * torch.rand(n // 2, generator=gen, dtype=torch.float64))
    a[: n // 2] *= (near / rot[: n // 2].clamp_min(1e-12))[:, None]
    return G.exp(a)


@pytest.mark.parametrize("name", GROUPS)
def test_log_coordinates_are_the_generated_log(name, dtype):
    G = load_group(name)
    g = _elements(G, 4000, 0)
    fast, ref = log_coordinates(G, g.to(dtype)).double(), G.log(g)
    # exp(fast) must be g (the log is principal; near pi the axis sign is free only at exactly pi)
    err = (G.exp(fast) - g).flatten(1).norm(dim=1) / g.flatten(1).norm(dim=1)
    assert float(err.max()) < TOL[dtype] * 50, f"{name}: exp(log g) off by {float(err.max()):.2e}"
    generic = G.extent(ref) < math.pi - 1e-6
    assert float((fast - ref)[generic].abs().max()) < TOL[dtype] * 50


def test_log_coordinates_match_scipy_logm():
    G = load_group("SE3")
    g = _elements(G, 40, 1)
    fast = G.hat(log_coordinates(G, g)).numpy()
    for k in range(20, 40):  # generic half: logm is principal and unique there
        ref = np.real(scipy.linalg.logm(g[k].numpy()))
        assert np.abs(fast[k] - ref).max() < 1e-10


@pytest.mark.parametrize("name", ["SE3", "SE2"])
def test_lift_uses_the_closed_form_only_without_gradients(name, monkeypatch):
    G = load_group(name, lift_samples=2)
    x = torch.randn(2, 5, G.space_dim, dtype=torch.float64)
    v, mask = torch.randn(2, 5, 1, dtype=torch.float64), torch.ones(2, 5, dtype=torch.bool)
    calls = []
    monkeypatch.setattr("lieconv_runtime.orthogonal.log_coordinates",
                        lambda group, g, _f=log_coordinates: calls.append(1) or _f(group, g))
    gen = torch.Generator().manual_seed(0)
    plain = G.lift(x, v, mask, generator=gen)
    assert calls, "no gradient needed: the closed form is used"
    calls.clear()
    x.requires_grad_(True)
    lifted = G.lift(x, v, mask, generator=torch.Generator().manual_seed(0))
    assert not calls, "gradients flow to the lifted elements: the generated (differentiable) log is used"
    torch.testing.assert_close(lifted.a.detach(), plain.a, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", GROUPS)
def test_log_from_parts_equals_the_vee_products(name, monkeypatch):
    """log_from_parts places [omega, v] by columns where the vee maps only place coordinates, and
    multiplies by them otherwise (here: maps that scale): both equal omega @ v_rot + v @ v_trans."""
    import copy

    from lieconv_runtime import orthogonal
    from lieconv_runtime.orthogonal import linear_block, log_from_parts, vee_maps

    G = load_group(name)
    m, affine = linear_block(G), G.action == "affine"
    gen = torch.Generator().manual_seed(0)
    n_omega = vee_maps(G, m, affine, torch.zeros(()))[0].shape[0]
    omega = torch.randn(7, n_omega, generator=gen, dtype=torch.float64)
    v = torch.randn(7, m, generator=gen, dtype=torch.float64) if affine else None
    for scale in (1.0, 2.0):
        H = copy.copy(G)
        H.__dict__ = {k: val for k, val in G.__dict__.items() if not (isinstance(k, tuple) and k[0] == "_log_from_parts_order")}
        monkeypatch.setattr(orthogonal, "vee_maps", lambda *a, s=scale: tuple(s * x for x in vee_maps(*a)))
        v_rot, v_trans = orthogonal.vee_maps(H, m, affine, omega)
        want = omega @ v_rot + (0 if v is None else v @ v_trans)
        assert torch.equal(log_from_parts(H, m, omega, v), want)
        assert bool(H.__dict__[("_log_from_parts_order", m, affine)]) == (scale == 1.0)
