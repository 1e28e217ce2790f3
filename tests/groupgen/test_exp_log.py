"""Property tests of the generated exp / log / inv / bracket, for every shipped spec, the
extra specs in tests/specs/ and re-based variants, in float64 and float32.

References are independent of the closed forms: scipy.linalg.expm for exp, matrix
commutators for the bracket, g @ inv(g) for the inverse.
"""

import math
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
from hypothesis import given, strategies as st

from groupgen.check import near_cut_samples, principal_samples, rotation_extent
from lieconv_runtime import load_group
from tests.groupgen.groups import EXTRA_SPECS, REBASED_FROM, SHIPPED, build_test_groups

NAMES = SHIPPED + [Path(p).stem for p in EXTRA_SPECS] + [f"{b}_rebased1" for b in REBASED_FROM]
# float32 bounds (relative to 1 + |entry|); float64 ones come from the issue.  Re-based
# groups have ill-conditioned bases (condition numbers ~1e2), where float32 bounds are 10x looser.
F32_BOUNDS = {"exp": 2e-5, "exp_log": 2e-5, "log_exp": 1e-3, "inv": 2e-5}


def f32(G, key):
    return F32_BOUNDS[key] * (10 if "rebased" in G.name else 1)


@pytest.fixture(scope="session")
def groups(tmp_path_factory):
    return build_test_groups(str(tmp_path_factory.mktemp("groups")))


@pytest.fixture(params=NAMES)
def G(request, groups):
    return load_group(request.param, search_path=groups[request.param])


def rel(a, b):
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    if a.numel() == 0:
        return 0.0
    scale = 1 + b.abs().flatten(-2).amax(-1)
    return float(((a - b).abs().flatten(-2).amax(-1) / scale).max())


def cond(g):
    """max-norm condition number ||g|| ||g^-1|| per element (float64): no algorithm can be
    more accurate than ~eps * cond(g), so tolerances for boosted elements scale with it."""
    g = torch.as_tensor(g, dtype=torch.float64)
    return g.abs().flatten(-2).amax(-1) * torch.linalg.pinv(g).abs().flatten(-2).amax(-1)


def assert_close(actual, expected, bound, conds, dtype):
    """Per element: error / (1 + |expected|) <= max(bound, K eps cond); elements whose exact
    value float32 cannot hold (eps cond > 1e-3) are not compared."""
    eps = torch.finfo(dtype).eps
    k = 1000
    actual, expected = torch.as_tensor(actual, dtype=torch.float64), torch.as_tensor(expected, dtype=torch.float64)
    if actual.dim() >= 2 and actual.shape[-1] == actual.shape[-2] and actual.dim() == expected.dim() and actual.shape[-1] > 0:
        err = (actual - expected).abs().flatten(-2).amax(-1) / (1 + expected.abs().flatten(-2).amax(-1))
    else:
        err = (actual - expected).abs().amax(-1) / (1 + expected.abs().amax(-1)) if actual.shape[-1] else torch.zeros(actual.shape[:-1])
    tol = torch.clamp(k * eps * conds, min=bound)
    keep = eps * conds < 1e-3
    bad = keep & ~(err <= tol)
    assert not bool(bad.any()), f"worst {float(err[keep].max()):.3e} (tol {float(tol[keep].min()):.1e}) at {int(bad.nonzero()[0, 0])}"


def batch(G, seed, scale, n=64):
    gen = torch.Generator().manual_seed(seed)
    return principal_samples(G, n, gen, torch.float64, scale=scale)


@given(seed=st.integers(0, 2**31 - 1), scale=st.sampled_from([1e-9, 1e-4, 0.1, 1.0, 3.0]))
def test_exp_matches_scipy_expm(G, seed, scale):
    a = batch(G, seed, scale)
    ref = np.stack([scipy.linalg.expm(x) for x in G.hat(a).numpy()])
    c = cond(ref)
    assert_close(G.exp(a), ref, 1e-10, c, torch.float64)
    assert_close(G.exp(a.float()), ref, f32(G, "exp"), c, torch.float32)


@given(seed=st.integers(0, 2**31 - 1), scale=st.sampled_from([1e-9, 1e-4, 0.1, 1.0, 3.0]))
def test_log_inverts_exp_on_principal_domain(G, seed, scale):
    a = batch(G, seed, scale)
    if G.lie_dim == 0:
        assert G.log(G.exp(a)).shape == a.shape
        return
    g = G.exp(a)
    c = cond(g)
    assert_close(G.log(g), a, 1e-9, c, torch.float64)
    assert_close(G.log(G.exp(a.float())), a, f32(G, "log_exp"), c, torch.float32)


@given(seed=st.integers(0, 2**31 - 1), gap=st.sampled_from([0.0, 1e-12, 1e-9, 1e-6, 1e-3, 0.5]))
def test_exp_log_roundtrip_near_the_cut(G, seed, gap):
    gen = torch.Generator().manual_seed(seed)
    c = near_cut_samples(G, 32, gen, gap)
    if len(c) == 0:  # no rotations: no cut
        c = batch(G, seed, 2.0)
    if not G.closed_form and gap < 0.1:
        return  # numeric fallback: eigen-decomposition log is not accurate at the cut (documented)
    g = G.exp(c)
    k = cond(g)
    assert_close(G.exp(G.log(g)), g, 1e-10, k, torch.float64)
    # float32: against the float64 roundtrip of the same float32 input, which measures the
    # float32 log and exp alone (g32 is up to ~eps cond(basis) off the group, and the exact g is
    # not what any log of g32 can return).  A wrong branch or a lossy float32 formula fails.
    g32 = G.exp(c.float())
    assert_close(G.exp(G.log(g32)), G.exp(G.log(g32.double())), f32(G, "exp_log"), k, torch.float32)


@given(seed=st.integers(0, 2**31 - 1))
def test_inverse(G, seed):
    g = G.exp(batch(G, seed, 2.0))
    k = cond(g)
    eye = torch.eye(G.rep_dim, dtype=torch.float64).expand_as(g)
    assert_close(G.inv(g) @ g, eye, 1e-10, k, torch.float64)
    assert_close(g @ G.inv(g), eye, 1e-10, k, torch.float64)
    g32 = g.float()
    assert_close(G.inv(g32) @ g32, eye, f32(G, "inv"), k, torch.float32)


@given(seed=st.integers(0, 2**31 - 1))
def test_bracket_hat_vee_ad(G, seed):
    gen = torch.Generator().manual_seed(seed)
    a, b = torch.randn(2, 16, G.lie_dim, generator=gen, dtype=torch.float64)
    A, B = G.hat(a), G.hat(b)
    assert rel(G.hat(G.bracket(a, b)), A @ B - B @ A) <= 1e-12
    assert rel(G.vee(A)[..., None], a[..., None]) <= 1e-12
    assert rel(G.ad(a) @ b[..., None], G.bracket(a, b)[..., None]) <= 1e-12
    for dt in (torch.float32, torch.float64):
        assert G.exp(a.to(dt)).dtype == dt and G.log(G.exp(a.to(dt))).dtype == dt


def test_finite_gradients_at_identity_and_near_cut(G):
    if G.lie_dim == 0:
        pytest.skip("trivial group has no coordinates")
    gen = torch.Generator().manual_seed(0)
    for dtype in (torch.float64, torch.float32):
        points = [torch.zeros(1, G.lie_dim, dtype=dtype), 1e-8 * torch.ones(1, G.lie_dim, dtype=dtype)]
        c = near_cut_samples(G, 4, gen, 1e-9, dtype)
        if len(c) and G.closed_form:  # numeric fallback: not within sqrt(eps) of pi (documented limit)
            points.append(c)
        for p in points:
            p = p.clone().requires_grad_(True)
            g = G.exp(p)
            (g.sum() + G.log(g).pow(2).sum() + G.inv(g).sum()).backward()
            assert torch.isfinite(p.grad).all(), (dtype, p)


def test_exp_gradient_at_identity_is_the_generators(G):
    """d exp(a) / d a_i at a = 0 is the i-th generator (checks the series branch's gradient)."""
    if G.lie_dim == 0:
        pytest.skip("trivial group has no coordinates")
    a = torch.zeros(G.lie_dim, dtype=torch.float64, requires_grad=True)
    jac = torch.autograd.functional.jacobian(G.exp, a)  # (n, n, d)
    assert torch.allclose(jac.permute(2, 0, 1), G.generators(a), atol=1e-12)


def test_exp_gradient_matches_finite_differences(G):
    if G.lie_dim == 0:
        pytest.skip("trivial group has no coordinates")
    a = batch(G, 3, 1.0, n=4)
    torch.autograd.gradcheck(lambda x: G.exp(x), (a.clone().requires_grad_(True),))
    torch.autograd.gradcheck(lambda x: G.log(G.exp(x)), (a.clone().requires_grad_(True),))


def test_batched_over_leading_dims(G):
    if G.lie_dim == 0:
        g = G.exp(torch.zeros(2, 3, 0, dtype=torch.float64))
        assert g.shape == (2, 3, G.rep_dim, G.rep_dim) and torch.equal(g, torch.eye(G.rep_dim).double().expand_as(g))
        return
    a = batch(G, 5, 1.0, n=24).reshape(2, 3, 4, G.lie_dim)
    g = G.exp(a)
    assert g.shape == (2, 3, 4, G.rep_dim, G.rep_dim)
    assert torch.allclose(g.reshape(-1, G.rep_dim, G.rep_dim), G.exp(a.reshape(-1, G.lie_dim)))
    assert G.log(g).shape == a.shape and G.inv(g).shape == g.shape
    one = a[0, 0, 0]  # unbatched input
    assert G.exp(one).shape == (G.rep_dim, G.rep_dim) and G.log(G.exp(one)).shape == (G.lie_dim,)
    assert torch.allclose(G.log(G.exp(one)), G.log(G.exp(a))[0, 0, 0])


def test_rotation_extent_helper_is_basis_independent(groups):
    so3 = load_group("SO3")
    rebased = load_group("SO3_rebased1", search_path=groups["SO3_rebased1"])
    a = torch.tensor([[0.3, -1.0, 2.0]], dtype=torch.float64)
    assert math.isclose(float(rotation_extent(so3, a)), float(a.norm()), rel_tol=1e-12)
    assert float(rotation_extent(rebased, a)) > 0
