"""Unit tests of the helpers every generated module calls (`lieconv_runtime.group_base`), in float32 and
float64, against independent references: scipy.linalg.expm / logm, mpmath at 50 digits, finite
differences."""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
import scipy.linalg
import torch

from groupgen.functions import hermite_coefficient
from lieconv_runtime.group_base import (PHI1_RADIUS2, affine, combine, complex_structure, const, embed, hermite_matrix,
                                        horner, log_near_cut, matrix_polynomial, phi1_coefficients, piecewise,
                                        quadrature_v, restrict, vee, where_near_cut)

DTYPES = [torch.float64, torch.float32]
TOL = {torch.float64: 1e-13, torch.float32: 2e-6}
TAU = 0.25
# cos(t) and sin(t)/t as functions of d = -t^2 (the shape of a generated coefficient function)
COS_SERIES = tuple(1 / math.factorial(2 * k) for k in range(10))
SINC_SERIES = tuple(1 / math.factorial(2 * k + 1) for k in range(10))
SO3 = [[[0.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]], [[0.0, 0.0, 1.0], [0.0, 0.0, 0.0], [-1.0, 0.0, 0.0]],
       [[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]]


def cos_t(d):
    return piecewise(d, COS_SERIES, TAU, neg=lambda t: torch.cos(t), pos=lambda t: torch.cosh(t))


def sin_over_t(d):
    return piecewise(d, SINC_SERIES, TAU, neg=lambda t: torch.sin(t) / t, pos=lambda t: torch.sinh(t) / t)


def rel(a, b) -> float:
    a, b = torch.as_tensor(a).detach().double(), torch.as_tensor(b).detach().double()
    return float(((a - b).abs() / (1 + b.abs())).max())


def rotation(axis, angle) -> np.ndarray:
    axis = np.asarray(axis, dtype=float) / np.linalg.norm(axis)
    K = np.einsum("i,ijk->jk", axis, np.array(SO3))
    return scipy.linalg.expm(angle * K)


# --- constants, linear combinations, blocks --------------------------------------------------------------


def test_combine_vee_affine_restrict_embed(dtype):
    a = torch.randn(5, 3, dtype=torch.float64).to(dtype)
    A = combine(a, SO3)
    assert A.shape == (5, 3, 3) and A.dtype == dtype
    assert rel(A, np.einsum("ni,ijk->njk", a.double().numpy(), np.array(SO3))) <= TOL[dtype]
    T = [[1.0, 0.0], [0.0, 0.0], [0.0, 2.0]]
    assert rel(combine(a, T), a.double() @ torch.tensor(T, dtype=torch.float64)) <= TOL[dtype]
    dual = np.linalg.pinv(np.array(SO3).reshape(3, 9).T)  # (3, 9): exact on the span
    assert rel(vee(A, dual.tolist()), a) <= 10 * TOL[dtype]
    g = affine(A, a)
    assert g.shape == (5, 4, 4) and torch.equal(g[:, :3, :3], A) and torch.equal(g[:, :3, 3], a)
    assert torch.equal(g[:, 3], torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=dtype).expand(5, 4))
    right, left = [[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]], [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]
    block = restrict(A, left, right)
    assert block.shape == (5, 2, 2) and torch.equal(block, A[:, :2, :2])
    assert torch.equal(embed(block, left, right)[:, :2, :2], block) and not embed(block, left, right)[:, 2].any()


def test_const_is_cached_per_dtype():
    table = [[1.0, 2.0]]
    x32, x64 = torch.zeros(1), torch.zeros(1, dtype=torch.float64)
    assert const(table, x32) is const(table, x32) and const(table, x64).dtype == torch.float64


def test_horner_and_matrix_polynomial(dtype):
    d = torch.linspace(-2, 2, 9, dtype=dtype)
    assert rel(horner(d, (1.0, -2.0, 0.5)), 1 - 2 * d.double() + 0.5 * d.double() ** 2) <= TOL[dtype]
    Y = torch.randn(4, 3, 3, dtype=torch.float64).to(dtype)
    c = torch.randn(4, dtype=torch.float64).to(dtype)
    out = matrix_polynomial(Y, [2.0, c, -1.0])
    Yd = Y.double()
    ref = 2 * torch.eye(3, dtype=torch.float64) + c.double()[:, None, None] * Yd - Yd @ Yd
    assert rel(out, ref) <= 10 * TOL[dtype]


# --- coefficient functions and Hermite matrix polynomials -----------------------------------------------


def test_piecewise_matches_mpmath_on_both_sides_and_across_tau(dtype):
    mpmath.mp.dps = 50
    ds = [-30.0, -4.0, -TAU - 1e-9, -TAU, -0.2, -1e-9, 0.0, 1e-9, 0.2, TAU, TAU + 1e-9, 3.0]
    d = torch.tensor(ds, dtype=dtype)
    for fn, ref in ((cos_t, lambda x: mpmath.cos(mpmath.sqrt(-x)) if x < 0 else mpmath.cosh(mpmath.sqrt(x))),
                    (sin_over_t, lambda x: 1 if x == 0 else (mpmath.sin(mpmath.sqrt(-x)) / mpmath.sqrt(-x) if x < 0
                                                              else mpmath.sinh(mpmath.sqrt(x)) / mpmath.sqrt(x)))):
        exact = torch.tensor([float(ref(mpmath.mpf(float(x)))) for x in d.double()], dtype=torch.float64)
        assert rel(fn(d), exact) <= 4 * TOL[dtype], fn.__name__


def test_piecewise_cosine_node_and_finite_gradients(dtype):
    """t/sin(t) with d = cos(t) - 1 (the log's G), and gradients finite at 0, at +-tau and beyond."""
    series = tuple(float(c) for c in hermite_coefficient("G", 0, 0, ("neg",)).series)  # t/sin t in d = cos t - 1
    theta = torch.tensor([1e-4, 0.5, 0.7227, 0.7228, 1.5, 2.5, 3.0], dtype=torch.float64)
    d = (torch.cos(theta) - 1).to(dtype).requires_grad_(True)
    out = piecewise(d, series, TAU, neg=lambda t: t / torch.sin(t), node="cosine")
    t = torch.arccos(1 + d.detach().double())
    assert rel(out, t / torch.sin(t)) <= 20 * TOL[dtype]
    out.sum().backward()
    assert torch.isfinite(d.grad).all()
    for fn in (cos_t, sin_over_t):
        x = torch.tensor([0.0, -TAU, TAU, -9.0, 9.0], dtype=dtype, requires_grad=True)
        fn(x).sum().backward()
        assert torch.isfinite(x.grad).all()


def test_hermite_matrix_gives_rotation_exp(dtype):
    a = torch.tensor([[0.3, -1.2, 2.0], [1e-5, 0.0, 2e-5], [0.0, 0.0, 0.0]], dtype=torch.float64)
    X = combine(a, SO3).to(dtype)
    d = -(a**2).sum(-1).to(dtype)
    U = X @ X
    one_minus_cos_over_t2 = piecewise(d, tuple(1 / math.factorial(2 * k + 2) for k in range(9)), TAU,
                                      neg=lambda t: (1 - torch.cos(t)) / t**2)
    R = hermite_matrix(U, d, (1.0,), [one_minus_cos_over_t2]) + X @ hermite_matrix(U, d, (), [sin_over_t(d)])
    ref = np.stack([scipy.linalg.expm(x) for x in combine(a, SO3).numpy()])
    assert rel(R, ref) <= 4 * TOL[dtype]
    # the general path (p = 2 Taylor terms, two h_j) is the Hermite form written out
    h0, h1 = torch.rand(3, dtype=dtype), torch.rand(3, dtype=dtype)
    I = torch.eye(3, dtype=dtype)
    expected = I + 0.5 * U + U @ U @ (h0[:, None, None] * I + h1[:, None, None] * (U - d[:, None, None] * I))
    assert rel(hermite_matrix(U, d, (1.0, 0.5), [h0, h1]), expected) <= 10 * TOL[dtype]


# --- the log near rotation angle pi ----------------------------------------------------------------------


def _cosh_sinh(R):
    Rinv = np.linalg.inv(R)
    return (R + Rinv) / 2, (R - Rinv) / 2


@pytest.mark.parametrize("gap", [1e-3, 1e-6, 1e-9, 0.0])
def test_log_near_cut_orthogonal_matches_logm(dtype, gap):
    rng = np.random.default_rng(0)
    axes = rng.normal(size=(6, 3))
    Rs = np.stack([rotation(ax, math.pi - gap) for ax in axes])
    C, S = map(np.stack, zip(*[_cosh_sinh(R) for R in Rs]))
    cos = (np.trace(C, axis1=1, axis2=2) - 1) / 2
    X = log_near_cut(*(torch.tensor(x, dtype=dtype) for x in (C, S, cos)), pairs=1, traceless=SO3, orthogonal=True).double()
    assert torch.allclose(X, -X.transpose(-1, -2), atol=10 * TOL[dtype])  # in the algebra
    back = np.stack([scipy.linalg.expm(x) for x in X.numpy()])
    tol = 1e-14 if dtype == torch.float64 else 1e-5  # float32: the input's own rounding near pi
    assert rel(back, Rs) <= tol
    angle = torch.linalg.matrix_norm(X) / math.sqrt(2)
    assert bool((angle <= math.pi + 1e-6).all())
    if gap and dtype == torch.float64:  # the exact log (pi - gap) K(axis), principal off pi
        unit = axes / np.linalg.norm(axes, axis=1, keepdims=True)
        ref = (math.pi - gap) * np.einsum("ni,ijk->njk", unit, np.array(SO3))
        assert rel(X, ref) <= 1e-14


def test_log_near_cut_with_an_invariant_form_and_without(dtype):
    """A rotation in a skewed basis (invariant form M = P^-T P^-1): the form-antisymmetric part of S."""
    P = np.array([[1.0, 0.5, 0.0], [0.0, 2.0, -1.0], [1.0, 0.0, 1.0]])
    Pinv = np.linalg.inv(P)
    M = Pinv.T @ Pinv
    gens = [(P @ np.array(G) @ Pinv).tolist() for G in SO3]
    R = np.stack([P @ rotation(ax, math.pi - 1e-4) @ Pinv for ax in ([1, 2, 3], [0, 0, 1], [-1, 1, 0])])
    C, S = map(np.stack, zip(*[_cosh_sinh(r) for r in R]))
    cos = (np.trace(C, axis1=1, axis2=2) - 1) / 2
    C, S, cos = (torch.tensor(x, dtype=dtype) for x in (C, S, cos))
    ref = np.stack([scipy.linalg.logm(r).real for r in R])
    X = log_near_cut(C, S, cos, pairs=1, traceless=gens, form=M.tolist(), form_inv=np.linalg.inv(M).tolist())
    tol = 1e-9 if dtype == torch.float64 else 2e-3  # cond(P)^2 ~ 30
    assert rel(X, ref) <= tol
    X = log_near_cut(C, S, cos, pairs=1, traceless=gens)  # no form: S itself (exact input)
    assert rel(X, ref) <= tol


def test_where_near_cut_replaces_only_the_selected_entries(dtype):
    R = np.stack([rotation([1, 2, 3], a) for a in (0.5, math.pi - 1e-7, 2.0, math.pi)]).reshape(2, 2, 3, 3)
    C, S = map(lambda x: torch.tensor(np.stack(x), dtype=dtype).reshape(2, 2, 3, 3), zip(*[_cosh_sinh(r) for r in R.reshape(4, 3, 3)]))
    cos = (C.diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2
    X0 = torch.full_like(C, 7.0)
    cut = cos < -0.5
    X = where_near_cut(X0, cut, C, S, cos, pairs=1, traceless=SO3, orthogonal=True)
    assert torch.equal(X[~cut], X0[~cut]) and X.shape == X0.shape
    back = np.stack([scipy.linalg.expm(x) for x in X[cut].double().numpy()])
    assert rel(back, R[cut.numpy()]) <= (1e-13 if dtype == torch.float64 else 1e-5)
    assert where_near_cut(X0, torch.zeros_like(cut), C, S, cos, pairs=1, traceless=SO3) is X0


def test_complex_structure(dtype):
    P = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]], dtype=dtype)
    J0 = torch.tensor([[0.01, -2.1, 0.3], [1.9, 0.02, 0.0], [0.1, 0.0, 0.5]], dtype=dtype)
    J = complex_structure(J0, P)
    assert rel(J @ J, -P) <= 10 * TOL[dtype] and rel(P @ J @ P, J) <= 10 * TOL[dtype]


# --- V = (exp(B) - I) / B ----------------------------------------------------------------------------------


def _phi1_reference(mu: float, d: float) -> tuple[float, float]:
    """alpha + i theta beta = (e^z - 1)/z at z = mu + i theta, theta = sqrt(-d), at 50 digits."""
    mpmath.mp.dps = 50
    mu, d = mpmath.mpf(mu), mpmath.mpf(d)
    phi = lambda z: mpmath.expm1(z) / z if z != 0 else mpmath.mpf(1)  # noqa: E731
    if d == 0:
        return float(phi(mu)), float(mpmath.diff(phi, mu) if mu != 0 else mpmath.mpf(1) / 2)
    theta = mpmath.sqrt(-d)
    w = phi(mpmath.mpc(mu, theta))
    return float(w.real), float(w.imag / theta)


POINTS = [(0.0, 0.0), (1e-9, -1e-18), (-1e-6, 0.0), (0.0, -1e-12), (1e-4, -3e-4), (0.3, -0.15), (-0.2, -0.2),
          (0.49, 0.0), (0.51, 0.0), (0.0, -0.26), (0.3, -0.17), (1.0, -2.0), (-3.0, -9.0), (4.0, -0.01), (0.1, -9.8)]


def test_phi1_coefficients_match_mpmath_near_zero_and_away(dtype):
    mu = torch.tensor([p[0] for p in POINTS], dtype=dtype)
    d = torch.tensor([p[1] for p in POINTS], dtype=dtype)
    alpha, beta = phi1_coefficients(mu, d, cos_t(d), sin_over_t(d))
    ref = [_phi1_reference(float(m), float(x)) for m, x in zip(mu.double(), d.double())]
    scale = torch.tensor([1 + math.exp(float(m)) for m in mu.double()], dtype=torch.float64)  # |V| ~ e^mu
    for got, want in ((alpha, [r[0] for r in ref]), (beta, [r[1] for r in ref])):
        err = (got.double() - torch.tensor(want, dtype=torch.float64)).abs() / scale
        assert float(err.max()) <= 8 * torch.finfo(dtype).eps, (err, dtype)


def test_phi1_coefficients_are_V_and_batch():
    """alpha I + beta X is (exp(B) - I) B^-1 for B = mu I + X (2x2 rotation-scaling), any batch shape."""
    mu = torch.tensor([[0.0, 0.2], [1.5, -2.0]], dtype=torch.float64)
    theta = torch.tensor([[0.0, 0.1], [2.0, 3.0]], dtype=torch.float64)
    d = -theta**2
    alpha, beta = phi1_coefficients(mu, d, cos_t(d), sin_over_t(d))
    J = torch.tensor([[0.0, -1.0], [1.0, 0.0]], dtype=torch.float64)
    I = torch.eye(2, dtype=torch.float64)
    for i in range(2):
        for j in range(2):
            B = (mu[i, j] * I + theta[i, j] * J).numpy()
            V = scipy.linalg.expm(np.block([[B, np.eye(2)], [np.zeros((2, 2)), np.zeros((2, 2))]]))[:2, 2:]
            assert rel(alpha[i, j] * I + beta[i, j] * theta[i, j] * J, V) <= 1e-13  # scipy's own error ~1e-14


def test_phi1_coefficients_gradients_are_finite_and_match_finite_differences():
    for mu0, d0 in [(0.0, 0.0), (1e-3, -1e-3), (0.2, -0.1), (0.6, -0.1), (1.0, -4.0), (-2.0, -1.0)]:
        mu = torch.tensor([mu0], dtype=torch.float64, requires_grad=True)
        d = torch.tensor([d0], dtype=torch.float64, requires_grad=True)

        def f(m, x):
            return phi1_coefficients(m, x, cos_t(x), sin_over_t(x))

        torch.autograd.gradcheck(f, (mu, d))
    for dtype in DTYPES:  # exactly at mu = d = 0, in both precisions
        mu = torch.zeros(3, dtype=dtype, requires_grad=True)
        d = torch.zeros(3, dtype=dtype, requires_grad=True)
        alpha, beta = phi1_coefficients(mu, d, cos_t(d), sin_over_t(d))
        (alpha + beta).sum().backward()
        assert torch.isfinite(mu.grad).all() and torch.isfinite(d.grad).all()
        assert torch.allclose(mu.grad, torch.full_like(mu, 0.5 + 1 / 3))  # d(alpha + beta)/dmu = 1/2 + 1/3


def test_phi1_coefficients_are_continuous_across_the_series_radius():
    r = math.sqrt(PHI1_RADIUS2)
    for angle in (0.0, 0.7, 1.5707963267948966):
        for eps in (-1e-12, 1e-12):
            mu = torch.tensor([(r + eps) * math.cos(angle)], dtype=torch.float64)
            d = torch.tensor([-((r + eps) * math.sin(angle)) ** 2], dtype=torch.float64)
            alpha, beta = phi1_coefficients(mu, d, cos_t(d), sin_over_t(d))
            ref = _phi1_reference(float(mu), float(d))
            assert abs(float(alpha) - ref[0]) <= 1e-15 and abs(float(beta) - ref[1]) <= 1e-15


def test_quadrature_v_matches_expm(dtype):
    """V = int_0^1 exp(sB) ds by Gauss-Legendre, for a rotation-scaling 3x3 block (Sim3's kind)."""
    a = torch.tensor([[0.3, -0.4, 1.0, 0.5], [0.0, 0.0, 0.0, 0.0], [1.0, 2.0, -0.5, -1.5]], dtype=torch.float64)
    B = (combine(a[:, :3], SO3) + a[:, 3, None, None] * torch.eye(3, dtype=torch.float64))
    V = quadrature_v(lambda Bs, mus: torch.linalg.matrix_exp(Bs), B.to(dtype), a[:, 3].to(dtype))
    Z = np.zeros((3, 3))
    ref = np.stack([scipy.linalg.expm(np.block([[b, np.eye(3)], [Z, Z]]))[:3, 3:] for b in B.numpy()])
    assert rel(V, ref) <= 10 * TOL[dtype]
