"""Lifting, orbits, pair embeddings, distances and Haar sampling of the shipped groups (issue 3).

Every numerical test runs in float64 (tight) and float32 (bounded).  KS tests use fixed seeds
and report their p-values in the assertion message.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from groupgen.lift import CHECK_TOLERANCES, lift_check_rows, special_points
from lieconv_runtime import available_groups, load_group


SHIPPED = available_groups()
TOL = {torch.float64: CHECK_TOLERANCES["float64"]["section"], torch.float32: CHECK_TOLERANCES["float32"]["section"]}
EQ_TOL = {torch.float64: 1e-13, torch.float32: 1e-5}  # pair embeddings, relative to 1 + |value|
EQUIVARIANT = ["T2", "SO2", "SE2", "SO3", "SE3", "RxSO2", "Sim2"]


def rel(a, b):
    """max |a - b| / (1 + |b|) over the last dim."""
    if a.numel() == 0:
        return 0.0
    return float(((a.double() - b.double()).abs().amax(-1) / (1 + b.double().abs().amax(-1))).max())


def random_points(G, n, gen, dtype, scale_range=(-2, 2)):
    lo, hi = scale_range
    scale = 10.0 ** ((hi - lo) * torch.rand(n, 1, generator=gen, dtype=torch.float64) + lo)
    return (torch.randn(n, G.space_dim, generator=gen, dtype=torch.float64) * scale).to(dtype)


def random_elements(G, n, gen, dtype, scale=1.0):
    return G.exp(scale * torch.randn(n, G.lie_dim, generator=gen, dtype=torch.float64)).to(dtype)


# --------------------------------------------------------------------------------------------
# orbits and sections
# --------------------------------------------------------------------------------------------


def test_every_shipped_spec_lifts():
    cannot = {name: load_group(name).LIFT["reason"] for name in SHIPPED if not load_group(name).can_lift}
    assert not cannot, cannot


def test_paper_orbits(dtype):
    """§4.5: SO(d) by |x|, scaling by x/|x|, T(k) by the other coordinates, trivial by x."""
    gen = torch.Generator().manual_seed(1)
    x2 = random_points(load_group("SO2"), 50, gen, dtype)
    x3 = random_points(load_group("SO3"), 50, gen, dtype)
    tol = TOL[dtype]
    assert rel(load_group("SO2").orbit(x2), x2.norm(dim=-1, keepdim=True)) < tol
    assert rel(load_group("SO3").orbit(x3), x3.norm(dim=-1, keepdim=True)) < tol
    assert rel(load_group("Rx").orbit(x2), x2 / x2.norm(dim=-1, keepdim=True)) < tol
    assert torch.equal(load_group("Tx").orbit(x2), x2[:, 1:])
    assert torch.equal(load_group("Ty").orbit(x2), x2[:, :1])
    assert torch.equal(load_group("Trivial2").orbit(x2), x2)
    assert torch.equal(load_group("Trivial3").orbit(x3), x3)
    for name in ["T2", "T3", "SE2", "SE3", "RxSO2", "Sim2"]:
        assert load_group(name).q_dim == 0, name  # one orbit
    # stabilizers: rotations for SE(d) (K = lift_samples), trivial for translations and RxSO2
    dims = {name: load_group(name).stabilizer_dim for name in ["SE2", "SE3", "T2", "T3", "RxSO2", "SO2", "SO3", "Sim2"]}
    assert dims == {"SE2": 1, "SE3": 3, "T2": 0, "T3": 0, "RxSO2": 0, "SO2": 0, "SO3": 1, "Sim2": 2}
    assert load_group("SE3").lift_samples == 4 and load_group("SE2").lift_samples == 2


@pytest.mark.parametrize("name", SHIPPED)
def test_section_and_orbit(name, dtype):
    """u_x . o_q(x) = x and q(g.x) = q(x), random x over 4 decades and the singular points."""
    G = load_group(name)
    gen = torch.Generator().manual_seed(2)
    x = torch.cat([random_points(G, 300, gen, dtype), special_points(G, dtype)])
    g = random_elements(G, len(x), gen, dtype)
    q = G.orbit(x)
    u = G.section(x)
    assert torch.isfinite(q).all() and torch.isfinite(u).all()
    assert rel(G.act(u, G.origin(q)), x) < TOL[dtype]
    assert rel(G.orbit(G.act(g, x)), q) < TOL[dtype]


@pytest.mark.parametrize("name", SHIPPED)
def test_lift_check_rows_pass(name):
    rows = lift_check_rows(load_group(name), samples=64, seed=3)
    assert rows and all(worst <= tol for _, worst, tol in rows), [r for r in rows if not r[1] <= r[2]]


@pytest.mark.parametrize("name", ["SO2", "SO3", "Rx", "RxSO2", "Boost", "SO2z"])
def test_singular_points_gradients_finite(name, dtype):
    """x = 0, the axes and the SO(3) antipode: finite lift and finite gradients."""
    G = load_group(name)
    x = special_points(G, dtype).requires_grad_(True)
    lifted = G.lift(x[None], torch.ones(1, len(x), 1, dtype=dtype), torch.ones(1, len(x), dtype=torch.bool),
                    generator=torch.Generator().manual_seed(0))
    assert all(torch.isfinite(t).all() for t in (lifted.g, lifted.a, lifted.q, lifted.g_inv))
    (lifted.q.sum() + lifted.g.sum()).backward()
    assert torch.isfinite(x.grad).all()


# --------------------------------------------------------------------------------------------
# lift structure and masks
# --------------------------------------------------------------------------------------------


def test_lift_shapes_and_samples(dtype):
    G = load_group("SE3")
    gen = torch.Generator().manual_seed(4)
    x, v = torch.randn(2, 5, 3, dtype=dtype), torch.randn(2, 5, 7, dtype=dtype)
    m = torch.ones(2, 5, dtype=torch.bool)
    lifted = G.lift(x, v, m, generator=gen)
    assert lifted.nsamples == 4 and lifted.g.shape == (2, 20, 4, 4) and lifted.a.shape == (2, 20, 6)
    assert lifted.q.shape == (2, 20, 0) and lifted.values.shape == (2, 20, 7) and lifted.mask.shape == (2, 20)
    assert lifted.g.dtype == dtype
    # every sample of a point maps the origin to the point; a = log(u)
    assert rel(lifted.g[..., :3, 3], x.repeat_interleave(4, 1)) < TOL[dtype]
    assert rel(G.exp(lifted.a).flatten(-2), lifted.g.flatten(-2)) < 10 * TOL[dtype]
    assert torch.equal(lifted.values, v.repeat_interleave(4, 1))
    assert G.lift(x, v, m, nsamples=2, generator=gen).g.shape == (2, 10, 4, 4)
    # trivial stabilizer: one element per point whatever K
    assert load_group("T3").lift(x, v, m, nsamples=5).g.shape == (2, 5, 4, 4)
    # seeded: same generator state, same lift
    a1 = G.lift(x, v, m, generator=torch.Generator().manual_seed(9)).a
    a2 = G.lift(x, v, m, generator=torch.Generator().manual_seed(9)).a
    assert torch.equal(a1, a2)


@pytest.mark.parametrize("name", ["SE3", "SO3", "SO2", "RxSO2", "Rx", "T2", "Sim2", "Boost"])
def test_mask(name, dtype):
    """Padded points may hold NaN/inf: no NaN anywhere, and valid points are unaffected."""
    G = load_group(name)
    gen = torch.Generator().manual_seed(5)
    n, K = 6, 2
    x = random_points(G, 2 * n, gen, dtype).reshape(2, n, -1)
    v = torch.randn(2, n, 3, dtype=dtype)
    mask = torch.tensor([[1, 1, 0, 1, 0, 1], [0, 1, 1, 1, 1, 0]], dtype=torch.bool)
    x_bad = x.clone()
    x_bad[~mask] = torch.tensor(float("nan"), dtype=dtype)
    x_bad[0, 2, 0] = float("inf")
    v_bad = v.clone()
    v_bad[~mask] = float("nan")
    h = G.sample_stabilizer((2, n, K), generator=gen, dtype=dtype) if G.stabilizer_dim else None
    lifted = G.lift(x_bad, v_bad, mask, nsamples=K, stabilizer=h)
    for t in (t for t in lifted if isinstance(t, torch.Tensor)):
        assert not torch.isnan(t).any()
    Kl = lifted.nsamples
    i = torch.arange(n * Kl)[None, :, None].expand(2, -1, 1)
    j = torch.arange(n * Kl)[None, None, :].expand(2, 1, -1)
    emb = G.pair_embedding(lifted, i, j)
    dist = G.distance(lifted, i, j)
    assert torch.isfinite(emb).all()
    valid = lifted.mask[:, :, None] & lifted.mask[:, None, :]
    assert (emb[~valid] == 0).all() and torch.isinf(dist[~valid]).all() and torch.isfinite(dist[valid]).all()
    # the valid points alone give the same lift and pairs
    for b in range(2):
        keep = mask[b]
        hb = None if h is None else h[b:b + 1, keep]
        alone = G.lift(x[b:b + 1, keep], v[b:b + 1, keep], torch.ones(1, int(keep.sum()), dtype=torch.bool),
                       nsamples=K, stabilizer=hb)
        sel = lifted.mask[b]
        assert torch.equal(lifted.a[b, sel], alone.a[0]) and torch.equal(lifted.q[b, sel], alone.q[0])
        m = int(sel.sum())
        ia, ja = torch.arange(m)[None, :, None], torch.arange(m)[None, None, :]
        # batched float32 matmuls may round differently for another batch composition
        atol = 1e-12 if dtype == torch.float64 else 1e-5
        assert torch.allclose(emb[b][sel][:, sel], G.pair_embedding(alone, ia, ja)[0], atol=atol)


# --------------------------------------------------------------------------------------------
# deterministic equivariance of the pair embeddings
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", EQUIVARIANT)
def test_pair_embeddings_invariant(name, dtype):
    """x -> g.x with the stabilizer samples transformed along (h -> u_{gx}^-1 g u_x h):
    every lifted element becomes g u, and all pair embeddings are unchanged."""
    G = load_group(name)
    gen = torch.Generator().manual_seed(6)
    bs, n = 2, 12
    x = random_points(G, bs * n, gen, torch.float64, (-1, 1)).reshape(bs, n, -1)
    g = random_elements(G, bs, gen, torch.float64, scale=0.7)
    gx = G.act(g[:, None], x)
    v, mask = torch.randn(bs, n, 2), torch.ones(bs, n, dtype=torch.bool)
    K = 3 if G.stabilizer_dim else 1
    h = G.sample_stabilizer((bs, n, K), generator=gen, dtype=torch.float64)
    s = G.inv(G.section(gx)) @ g[:, None] @ G.section(x)  # in the stabilizer of o_q(x)
    assert rel(G.act(s, G.origin(G.orbit(x))), G.origin(G.orbit(x))) < 1e-9
    h2 = s[:, :, None] @ h
    L1 = G.lift(x.to(dtype), v.to(dtype), mask, stabilizer=h.to(dtype))
    L2 = G.lift(gx.to(dtype), v.to(dtype), mask, stabilizer=h2.to(dtype))
    assert rel(L2.g.flatten(-2), (g[:, None].to(dtype) @ L1.g).flatten(-2)) < EQ_TOL[dtype]
    N = n * K
    i, j = torch.arange(N)[None, :, None].expand(bs, N, 1), torch.arange(N)[None, None, :].expand(bs, 1, N)
    e1, e2 = G.pair_embedding(L1, i, j), G.pair_embedding(L2, i, j)
    # the principal log is discontinuous at rotation angle pi: leave out pairs within 1e-3 of it
    away = (math.pi - G.extent(e1[..., :G.lie_dim].double())) > 1e-3
    assert away.float().mean() > 0.9
    assert rel(e2[away], e1[away]) < EQ_TOL[dtype]
    d1, d2 = G.distance(L1, i, j), G.distance(L2, i, j)
    assert float(((d1 - d2).abs()[away] / (1 + d1[away])).max()) < EQ_TOL[dtype]


@pytest.mark.parametrize("name", ["SO2", "RxSO2", "T2", "Rx", "SO2z", "Sim2"])
def test_abelian_fast_path_matches_log(name, dtype):
    """a_j - a_i (reduced where a rotation angle passes pi) == log(u_i^-1 u_j)."""
    G = load_group(name)
    gen = torch.Generator().manual_seed(7)
    x = random_points(G, 40, gen, dtype, (-1, 1))[None]
    lifted = G.lift(x, torch.zeros(1, 40, 1, dtype=dtype), torch.ones(1, 40, dtype=torch.bool), generator=gen)
    N = lifted.a.shape[1]
    i, j = torch.arange(N)[None, :, None], torch.arange(N)[None, None, :]
    fast = G.pair_log(lifted, i, j)
    ref = G.log(lifted.g_inv[:, :, None] @ lifted.g[:, None, :])
    away = (math.pi - G.extent(ref.double())) > 1e-3
    assert rel(fast[away], ref[away]) < EQ_TOL[dtype]
    if G.abelian and name in ("SO2", "RxSO2"):
        assert bool((G.extent(lifted.a[0, :, None] - lifted.a[0, None, :]) > math.pi).any())  # wrapping exercised


def test_distance_formula(dtype):
    """d^2 = ||hat(log(u_i^-1 u_j))||_F^2 + alpha ||q_i - q_j||^2, computed from matrices."""
    G = load_group("SO3", alpha=0.7)
    gen = torch.Generator().manual_seed(8)
    x = random_points(G, 10, gen, dtype, (-1, 1))[None]
    lifted = G.lift(x, torch.zeros(1, 10, 1, dtype=dtype), torch.ones(1, 10, dtype=torch.bool), generator=gen)
    i, j = torch.arange(10)[None, :, None], torch.arange(10)[None, None, :]
    X = G.hat(G.log(lifted.g_inv[:, :, None] @ lifted.g[:, None, :]))
    dq = lifted.q[:, :, None] - lifted.q[:, None, :]
    ref = (X.pow(2).sum((-1, -2)) + 0.7 * dq.pow(2).sum(-1)).sqrt()
    assert rel(G.distance(lifted, i, j)[..., None], ref[..., None]) < EQ_TOL[dtype]


# --------------------------------------------------------------------------------------------
# Haar sampling
# --------------------------------------------------------------------------------------------


def rotation_angle(R):
    c = ((R.diagonal(dim1=-2, dim2=-1).sum(-1) - (R.shape[-1] - 2)) / 2).clamp(-1, 1)
    return torch.arccos(c).numpy()


def test_so3_rotation_angle_law():
    G = load_group("SO3")
    R = G.sample_haar((20000,), generator=torch.Generator().manual_seed(10), dtype=torch.float64)
    assert rel((R.transpose(-1, -2) @ R).flatten(-2), torch.eye(3, dtype=torch.float64).flatten().expand(20000, 9)) < 1e-12
    res = stats.kstest(rotation_angle(R), lambda t: (t - np.sin(t)) / np.pi)
    assert res.pvalue > 0.01, f"angle law (theta - sin theta)/pi: KS p = {res.pvalue:.3g}"
    # the test has power: uniform exponential coordinates in the ball (no |det dexp|) are rejected
    a = torch.randn(20000, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(11))
    a = a / a.norm(dim=-1, keepdim=True) * math.pi * torch.rand(20000, 1, dtype=torch.float64) ** (1 / 3)
    assert stats.kstest(rotation_angle(G.exp(a)), lambda t: (t - np.sin(t)) / np.pi).pvalue < 1e-6


@pytest.mark.parametrize("which", ["SO3 haar", "SO2 haar", "SO2z haar", "SE3 stabilizer", "SE2 stabilizer",
                                   "SO3 stabilizer"])
def test_haar_left_invariance(which):
    """Two-sample KS: a class function (trace) of g.h vs h, g fixed, h Haar; plus a second
    statistic (the (0,0) entry) that is not a class function."""
    name, kind = which.split()
    G = load_group(name)
    sample = G.sample_haar if kind == "haar" else G.sample_stabilizer
    gen = torch.Generator().manual_seed(12)
    h1 = sample((4000,), generator=gen, dtype=torch.float64)
    h2 = sample((4000,), generator=gen, dtype=torch.float64)
    g = sample((1,), generator=gen, dtype=torch.float64)[0]
    for f in (lambda m: m.diagonal(dim1=-2, dim2=-1).sum(-1), lambda m: m[..., 0, 0]):
        p = stats.ks_2samp(f(g @ h1).numpy(), f(h2).numpy()).pvalue
        assert p > 0.01, f"{which}: KS p = {p:.3g}"


def test_so2_uniform_angle_and_stabilizer_fixes_origin():
    G = load_group("SE2")
    h = G.sample_stabilizer((5000,), generator=torch.Generator().manual_seed(13), dtype=torch.float64)
    theta = torch.atan2(h[:, 1, 0], h[:, 0, 0]).numpy()
    p = stats.kstest(theta, stats.uniform(loc=-math.pi, scale=2 * math.pi).cdf).pvalue
    assert p > 0.01, f"uniform angle: KS p = {p:.3g}"
    assert torch.equal(h[:, :2, 2], torch.zeros(5000, 2, dtype=torch.float64))


def test_noncompact_stabilizer_window():
    """Sim2: rotation uniform, log-scale uniform on the declared window |s| <= 1."""
    G = load_group("Sim2")
    h, a = G.sample_stabilizer((5000,), generator=torch.Generator().manual_seed(14), dtype=torch.float64,
                               return_log=True)
    s = a[:, G.generator_names.index("s")].numpy()
    theta = a[:, G.generator_names.index("theta")].numpy()
    assert stats.kstest(s, stats.uniform(loc=-1, scale=2).cdf).pvalue > 0.01
    assert stats.kstest(theta, stats.uniform(loc=-math.pi, scale=2 * math.pi).cdf).pvalue > 0.01
    assert rel(G.act(h, torch.zeros(5000, 2, dtype=torch.float64)), torch.zeros(5000, 2, dtype=torch.float64)) < 1e-12


def test_haar_errors_and_determinism():
    with pytest.raises(ValueError, match="not compact"):
        load_group("SE3").sample_haar((3,))
    with pytest.raises(ValueError, match="not compact"):
        load_group("Rx").sample_haar((3,))
    G = load_group("SO3")
    a = G.sample_haar((7, 2), generator=torch.Generator().manual_seed(1))
    b = G.sample_haar((7, 2), generator=torch.Generator().manual_seed(1))
    assert a.shape == (7, 2, 3, 3) and a.dtype == torch.float32 and torch.equal(a, b)
    assert load_group("T2").sample_stabilizer((4,)).shape == (4, 3, 3)  # trivial: identities


@pytest.mark.parametrize("name", ["SE2", "SE3"])
def test_padding_does_not_change_the_stabilizer_samples_of_valid_points(name):
    G = load_group(name)
    d = G.space_dim
    x = torch.randn(1, 5, d, dtype=torch.float64)
    v = torch.randn(1, 5, 1, dtype=torch.float64)
    plain = G.lift(x, v, torch.ones(1, 5, dtype=torch.bool), generator=torch.Generator().manual_seed(0))
    pad = torch.full((1, 3, d), float("nan"), dtype=torch.float64)
    xp = torch.cat([x[:, :2], pad, x[:, 2:]], 1)
    vp = torch.cat([v[:, :2], torch.zeros(1, 3, 1, dtype=torch.float64), v[:, 2:]], 1)
    mask = torch.tensor([[1, 1, 0, 0, 0, 1, 1, 1]], dtype=torch.bool)
    padded = G.lift(xp, vp, mask, generator=torch.Generator().manual_seed(0))
    assert torch.equal(plain.g, padded.g[:, padded.mask[0]])


@pytest.mark.parametrize("name", ["SO2", "SO3", "SO2z"])
def test_section_gradient_at_the_origin_is_bounded(name):
    """atan2(sqrt(x0^2 + x1^2), x2) at x = 0 once had a 1/sqrt(tiny) ~ 1e154 gradient."""
    G = load_group(name)
    x = torch.zeros(1, 1, G.space_dim, dtype=torch.float64, requires_grad=True)
    a = G.log(G._lift_data()["section"](x))
    (g1,) = torch.autograd.grad(a.sum(), x, create_graph=True)
    assert float(g1.abs().max()) < 1e3
    if g1.requires_grad:
        (g2,) = torch.autograd.grad(g1.sum(), x)
        assert torch.isfinite(g2).all()


@pytest.mark.parametrize("name", ["SE2", "SO3", "SE3"])
def test_stabilizer_frame_is_exactly_equivariant(name, dtype):
    """u_{g x_i} h_ik(g x) = g u_{x_i} h_ik(x): the frame moves with the cloud (no samples to carry along),
    its K elements differ by fixed stabilizer elements (evenly spaced for a one-dimensional stabilizer),
    and padding does not move the valid ones."""
    G = load_group(name)
    gen = torch.Generator().manual_seed(8)
    bs, n, K = 3, 7, 3
    x = random_points(G, bs * n, gen, torch.float64, (-1, 1)).reshape(bs, n, -1)
    g = random_elements(G, bs, gen, torch.float64, scale=0.7)
    gx = G.act(g[:, None], x)
    mask = torch.ones(bs, n, dtype=torch.bool)
    mask[0, -2:] = False
    h1 = G.stabilizer_frame(x.to(dtype), mask, K)
    h2 = G.stabilizer_frame(gx.to(dtype), mask, K)
    u1 = G.section(x.to(dtype))[:, :, None] @ h1
    u2 = G.section(gx.to(dtype))[:, :, None] @ h2
    assert rel(u2[mask].flatten(-2), (g[:, None, None].to(dtype) @ u1)[mask].flatten(-2)) < EQ_TOL[dtype]
    o = G.origin(G.orbit(x.to(dtype)))[:, :, None].expand(-1, -1, K, -1)
    assert rel(G.act(h1, o), o) < TOL[dtype]  # in the stabilizer of o_q
    steps = G.inv(h1[:, :, :1]) @ h1  # h_i0^-1 h_ik: the same fixed element for every point
    assert rel(steps[mask].flatten(-2), steps[mask][:1].expand_as(steps[mask]).flatten(-2)) < EQ_TOL[dtype]
    if G.stabilizer_dim == 1:
        angles = G.extent(G.log(steps).double())
        assert float((angles[..., 1] - 2 * math.pi / K).abs().max()) < 1e3 * torch.finfo(dtype).eps
    x_pad = x.clone()
    x_pad[0, -2:] = 1e3  # padded points must not move the references
    h3 = G.stabilizer_frame(x_pad.to(dtype), mask, K)
    assert torch.equal(h3[mask], h1[mask])


@pytest.mark.parametrize("name,K", [("SE2", 2), ("SE2", 3), ("SO3", 4), ("SE3", 2), ("SE3", 3), ("SE3", 4),
                                    ("SE3", 6)])
def test_stratified_offsets_are_spread_stabilizer_elements(name, K, dtype):
    """R_0 = I, every R_k fixes the orbit origins, and for K <= 4 (or a one-dimensional stabilizer) the R_k form
    a group whose elements all turn by the same angle: 2 pi / K, or pi for SE3's K = 4 (Klein four-group)."""
    G = load_group(name)
    R = G.stratified_offsets(K, dtype)
    assert R.shape == (K, G.rep_dim, G.rep_dim) and R.dtype == dtype
    tol = 1e-13 if dtype == torch.float64 else 1e-6
    assert float((R[0] - torch.eye(G.rep_dim, dtype=dtype)).abs().max()) <= tol
    x = torch.randn(5, G.space_dim, dtype=torch.float64)
    o = G.origin(G.orbit(x)).to(dtype)
    assert rel(G.act(R[:, None], o), o.expand(K, -1, -1)) <= tol  # stabilizer elements
    L = R[..., :3, :3].double() if name == "SE3" else R.double()
    L = L[..., :2, :2] if name == "SE2" else L
    if name == "SE3" and K > 4:  # seeded Haar draws: rotations, not a subgroup
        assert float((L.transpose(-1, -2) @ L - torch.eye(3, dtype=torch.float64)).abs().max()) <= tol
        return
    prod = L[:, None] @ L[None]  # closed under products: each R_i R_j is some R_k
    dist = (prod[:, :, None] - L[None, None]).abs().flatten(3).amax(-1).amin(-1)
    assert float(dist.max()) <= 10 * tol
    m = L.shape[-1]
    cos = ((L.diagonal(dim1=-2, dim2=-1).sum(-1) - (m - 2)) / 2)[1:]  # cos of each R_k's turn (k > 0)
    want = -1.0 if (name == "SE3" and K == 4) else None
    if want is None:
        want = torch.cos(2 * math.pi * torch.arange(1, K, dtype=torch.float64) / K)
        assert float((torch.sort(cos.double()).values - torch.sort(want).values).abs().max()) <= 10 * tol
    else:
        assert float((cos.double() - want).abs().max()) <= 10 * tol


def test_stratified_lift_is_fresh_haar_and_evenly_spaced():
    """lift_mode="stratified" (SE2, K = 3): within a point the K angles are 2 pi / 3 apart, each is uniform
    on the circle (KS), and two training batches draw different samples."""
    from lieconv_runtime.nn import LieResNet

    G = load_group("SE2")
    net = LieResNet(1, G, k=8, num_layers=1, lift_samples=3, lift_mode="stratified").double().train()
    x = torch.randn(1, 2000, 2, dtype=torch.float64)
    v = torch.ones(1, 2000, 1, dtype=torch.float64)
    first, second = net.lift(x, v).g, net.lift(x, v).g
    assert not torch.equal(first, second)
    h = (G.inv(G.section(x)).repeat_interleave(3, 1) @ first)[0]  # the stabilizer parts h_ik
    theta = torch.atan2(h[:, 1, 0], h[:, 0, 0]).reshape(2000, 3)
    gap = torch.remainder(theta[:, 1:] - theta[:, :1], 2 * math.pi)
    assert float((gap - torch.tensor([2 * math.pi / 3, 4 * math.pi / 3], dtype=torch.float64)).abs().max()) < 1e-9
    for k in range(3):
        p = stats.kstest(theta[:, k].numpy(), stats.uniform(loc=-math.pi, scale=2 * math.pi).cdf).pvalue
        assert p > 0.01, f"sample {k}: KS p = {p:.3g}"


@pytest.mark.parametrize("name", ["Sim2"])
def test_stabilizer_frame_refuses_other_stabilizers(name):
    from lieconv_runtime.nn import LieResNet

    G = load_group(name)
    msg = G.frame_support()
    assert msg is not None and "\n" not in msg and "lift='haar'" in msg
    for mode in ("frame", "stratified"):
        with pytest.raises(ValueError, match="frame or stratified lifting"):
            LieResNet(2, G, k=8, num_layers=1, lift_mode=mode)
