"""The base every generated group module fills in, and the generic helpers the generated
code calls: constants, linear combinations and vee, block restriction, the scalar coefficient
functions, Hermite matrix polynomials, the log near rotation angle pi, the closed-form V of
similarity blocks, quadrature.

Nothing here knows any particular group: the generated module supplies the generator
matrices, the dual basis for ``vee``, the structure constants, each block's constants and the
closed-form ``exp``/``log``/``inv`` that put these helpers together.

Shapes: coefficients ``a`` are ``(..., lie_dim)``, matrices ``(..., rep_dim, rep_dim)``,
points ``(..., space_dim)``; "scalar fields" are ``(...)``; every function is batched over the
leading dims.  Constant tables (nested lists of floats) are passed as the module's constants and
turned into tensors on the argument's dtype/device by `const` (cached).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch

from lieconv_runtime.lift import LiftMixin, safe_atan2, safe_log, safe_sqrt

# everything a generated module may import (groupgen writes each module's import line from this list)
__all__ = [
    "GeneratedGroup", "affine", "combine", "complex_structure", "const", "det", "eigvals", "embed", "eye",
    "hermite_matrix", "horner", "identity_like", "log_by_square_roots", "log_near_cut", "mat", "matrix_polynomial",
    "numeric_log", "phi1_coefficients", "piecewise", "quadrature_v", "restrict", "safe_atan2", "safe_log",
    "safe_sqrt", "trace", "vee", "where_near_cut", "zero_spectrum",
]

_CONST_CACHE: dict = {}


def const(values, ref: torch.Tensor) -> torch.Tensor:
    """A constant table (nested lists of floats) as a tensor on ref's dtype/device (cached; not
    while torch.compile traces, whose graph would otherwise hand the traced tensor out to the cache)."""
    if torch.compiler.is_compiling():
        return torch.tensor(values, dtype=ref.dtype, device=ref.device)
    key = (id(values), ref.dtype, ref.device)
    hit = _CONST_CACHE.get(key)
    if hit is None or hit[0] is not values:
        tensor = torch.tensor(values, dtype=ref.dtype, device=ref.device)
        hit = (values, tensor)
        _CONST_CACHE[key] = hit
    return hit[1]


def eye(n: int, ref: torch.Tensor) -> torch.Tensor:
    """(n, n) identity on ref's dtype/device."""
    return torch.eye(n, dtype=ref.dtype, device=ref.device)


def identity_like(M: torch.Tensor) -> torch.Tensor:
    """The identity broadcast to M's shape (..., n, n) (a view: the block of a group element that every
    generator fixes, its V and its inverse)."""
    return eye(M.shape[-1], M).expand_as(M)


def trace(m: torch.Tensor) -> torch.Tensor:
    """(..., n, n) -> (...)."""
    return m.diagonal(dim1=-2, dim2=-1).sum(-1)


def det(m: torch.Tensor) -> torch.Tensor:
    """(..., n, n) -> (...): explicit cofactor formulas for n <= 3, LU beyond."""
    n = m.shape[-1]
    if n == 1:
        return m[..., 0, 0]
    if n == 2:
        return m[..., 0, 0] * m[..., 1, 1] - m[..., 0, 1] * m[..., 1, 0]
    if n == 3:
        return (m[..., 0, 0] * (m[..., 1, 1] * m[..., 2, 2] - m[..., 1, 2] * m[..., 2, 1])
                - m[..., 0, 1] * (m[..., 1, 0] * m[..., 2, 2] - m[..., 1, 2] * m[..., 2, 0])
                + m[..., 0, 2] * (m[..., 1, 0] * m[..., 2, 1] - m[..., 1, 1] * m[..., 2, 0]))
    return torch.linalg.det(m)


def mat(x: torch.Tensor) -> torch.Tensor:
    """Scalar field (...) -> (..., 1, 1) for broadcasting against matrices."""
    return x[..., None, None]


# --- linear algebra on the module's constant tables ---------------------------------------------


def combine(a: torch.Tensor, table) -> torch.Tensor:
    """sum_i a[..., i] table[i]: a (..., d), table (d, *shape) -> (..., *shape).

    hat(a) = combine(a, GENERATORS); the linear part B(a) = combine(a, LINEAR) and the translation
    t(a) = combine(a, TRANSLATION) of an affine group."""
    t = const(table, a)
    if t.dim() == 3:
        return torch.einsum("...i,ijk->...jk", a, t)
    return torch.einsum("...i,ij->...j", a, t)


def vee(X: torch.Tensor, dual) -> torch.Tensor:
    """(..., n, n) -> (..., d) with the dual basis (d, n*n): exact on the algebra, least squares off it."""
    return torch.einsum("ij,...j->...i", const(dual, X), X.flatten(-2))


def affine(R: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """[[R, u], [0, 1]] (..., m + 1, m + 1) from R (..., m, m) and u (..., m)."""
    top = torch.cat([R, u[..., None]], dim=-1)
    bottom = torch.zeros_like(top[..., :1, :])
    bottom[..., 0, -1] = 1.0
    return torch.cat([top, bottom], dim=-2)


def restrict(M: torch.Tensor, left, right) -> torch.Tensor:
    """A matrix (..., m, m) restricted to an invariant block: left @ M @ right (..., s, s), with the
    block's basis right (m, s) and its dual left (s, m), left @ right = I."""
    return const(left, M) @ M @ const(right, M)


def embed(M: torch.Tensor, left, right) -> torch.Tensor:
    """A block's matrix (..., s, s) back in the whole space: right @ M @ left (..., m, m)."""
    return const(right, M) @ M @ const(left, M)


# --- coefficient functions and matrix polynomials ------------------------------------------------


def horner(d: torch.Tensor, coeffs: Sequence[float]) -> torch.Tensor:
    """sum_k coeffs[k] d^k (same shape as d)."""
    out = torch.full_like(d, coeffs[-1])
    for c in reversed(coeffs[:-1]):
        out = out * d + c
    return out


# t as a function of the node variable y on each side of the removable singularity at y = 0
_NODES = {
    "square": (lambda y: torch.sqrt(-y), lambda y: torch.sqrt(y)),  # y = -t^2 / y = t^2
    "cosine": (lambda y: torch.arccos(1 + y), lambda y: torch.arccosh(1 + y)),  # y = cos t - 1 / cosh t - 1
}


def piecewise(d: torch.Tensor, series: Sequence[float], tau: float, neg: Callable | None = None,
              pos: Callable | None = None, node: str = "square") -> torch.Tensor:
    """An analytic coefficient function of d (...) with a removable singularity at d = 0.

    Evaluates the Taylor series for |d| < tau, and elsewhere the closed form `neg(t)` (d <= -tau) or
    `pos(t)` (d >= tau) of t, where d = -t^2 / t^2 (node "square") or cos t - 1 / cosh t - 1 (node
    "cosine").  Each closed form only ever sees safe inputs (masked entries get d = -+1), so no NaN/inf
    reaches autograd from a discarded branch; branches that no entry needs are skipped.
    """
    small = d.abs() < tau
    out = horner(d, series) if bool(small.any()) else torch.zeros_like(d)
    for side, fn, t_of in ((-1.0, neg, _NODES[node][0]), (1.0, pos, _NODES[node][1])):
        if fn is None:
            continue
        use = (d * side) >= tau
        if bool(use.any()):
            out = torch.where(use, fn(t_of(torch.where(use, d, torch.full_like(d, side)))), out)
    return out


def hermite_matrix(U: torch.Tensor, d: torch.Tensor | None, taylor: Sequence[float], hs: Sequence[torch.Tensor]) -> torch.Tensor:
    """Evaluate T_p(U) + U^p sum_j h_j (U - d I)^j  (see groupgen.functions).

    U: (..., m, m); d: (...); taylor: f_0..f_{p-1}; hs: h_j(d) tensors of shape (...).
    """
    n = U.shape[-1]
    I = eye(n, U)
    p = len(taylor)
    if p == 0 and len(hs) == 1:
        return mat(hs[0]) * I
    if p == 1 and len(hs) == 1:
        return taylor[0] * I + mat(hs[0]) * U
    out = torch.zeros_like(U)
    power = I.expand_as(U)
    for c in taylor:
        out = out + c * power
        power = power @ U
    if hs:
        shifted = U - mat(d) * I
        tail = mat(hs[-1]) * I
        for h in reversed(hs[:-1]):
            tail = mat(h) * I + shifted @ tail
        out = out + (power @ tail if p else tail)
    return out


def matrix_polynomial(Y: torch.Tensor, coeffs: Sequence) -> torch.Tensor:
    """sum_j coeffs[j] Y^j for Y (..., n, n); each coefficient a float or a scalar field (...).

    The inverse by Cayley-Hamilton: Y^-1 = sum_j c_j Y^j from Y's minimal polynomial."""
    out = torch.zeros_like(Y)
    power = eye(Y.shape[-1], Y).expand_as(Y)
    for j, c in enumerate(coeffs):
        out = out + (mat(c) if isinstance(c, torch.Tensor) else c) * power
        if j + 1 < len(coeffs):
            power = power @ Y
    return out


# --- the log near rotation angle pi --------------------------------------------------------------


def complex_structure(J0: torch.Tensor, P: torch.Tensor, iters: int = 3) -> torch.Tensor:
    """Nearest J with J^2 = -P (J = P J P) by Newton-Schulz: J <- J (3P + J^2) / 2.

    J0: (..., m, m) with eigenvalues near +-i*c on range(P); it is first rescaled so c ~ 1.
    """
    J = P @ J0 @ P
    c2 = -trace(J @ J) / trace(P).clamp_min(1.0)
    J = J / mat(c2.clamp_min(torch.finfo(J.dtype).tiny).sqrt())
    for _ in range(iters):
        J = 0.5 * J @ (3.0 * P + J @ J)
    return J


def log_near_cut(C: torch.Tensor, S: torch.Tensor, cos: torch.Tensor, *, pairs: int, traceless,
                 orthogonal: bool = False, form=None, form_inv=None) -> torch.Tensor:
    """Principal log X (..., m, m) of a block's element Y = exp(X) whose rotation angle theta is near pi.

    Y has a trace-free log (mu already divided out); C = (Y + Y^-1)/2 = cosh X and
    S = (Y - Y^-1)/2 = sinh X (..., m, m); cos = cos theta (...) < -1/2; `pairs` eigenvalue pairs +-i theta
    (the block's alg_k).  P = (C - I)/(cos theta - 1) projects on the rotation plane(s), sin theta
    comes from P S S, theta = atan2(sin theta, cos theta), and J (J^2 = -P) from the part of S in the
    algebra: antisymmetric (`orthogonal`), form-antisymmetric (M^-1 = form_inv, M = form), or S
    itself, refined by Newton-Schulz.  At theta = pi exactly (S = 0) J comes from the traceless
    generators (k, m, m) of the block, projected on the plane.  X = (I - P) S + theta J.
    """
    m = C.shape[-1]
    I = eye(m, C)
    P = (C - I) / mat(cos - 1)
    sin2 = -trace(P @ S @ S) / (2 * pairs)
    tiny = torch.finfo(C.dtype).tiny
    sin = sin2.clamp_min(tiny).sqrt()
    theta = torch.atan2(sin, cos)
    PGP = P[..., None, :, :] @ const(traceless, C) @ P[..., None, :, :]
    pick = PGP.flatten(-2).norm(dim=-1).argmax(-1)
    fallback = PGP.gather(-3, pick[..., None, None, None].expand(pick.shape + (1, m, m)))[..., 0, :, :]
    if orthogonal:  # exact sinh(X) is antisymmetric in an orthogonal block
        S_alg = 0.5 * (S - S.transpose(-1, -2))
    elif form is not None:  # exact sinh(X) is in the algebra of the form's group
        S_alg = 0.5 * (S - const(form_inv, C) @ S.transpose(-1, -2) @ const(form, C))
    else:
        S_alg = S
    J0 = torch.where(mat(sin2 > tiny**0.5), P @ S_alg @ P / mat(sin), fallback)
    J = complex_structure(J0, P)
    return (I - P) @ S + mat(theta) * J


def where_near_cut(X: torch.Tensor, cut: torch.Tensor, C: torch.Tensor, S: torch.Tensor, cos: torch.Tensor,
                   **block) -> torch.Tensor:
    """X (..., m, m) with the entries where cut (...) holds replaced by `log_near_cut(C, S, cos, **block)`,
    computed on those entries only (the log of a block away from the cut, fixed near it)."""
    if not bool(cut.any()):
        return X
    m = X.shape[-1]
    pick = cut.reshape(-1)

    def flat(M):
        return M.reshape(-1, m, m)[pick]

    fixed = log_near_cut(flat(C), flat(S), cos.reshape(-1)[pick], **block)
    return X.reshape(-1, m, m).index_put((pick,), fixed).reshape(X.shape)


# --- V = (exp(B) - I) / B ---------------------------------------------------------------------------

# phi1(z) = (e^z - 1)/z = sum_n z^n / (n+1)!; 16 terms reach 2^-60 for |z| < 1/2
PHI1_SERIES = tuple(1.0 / math.factorial(n + 1) for n in range(16))
PHI1_RADIUS2 = 0.25


def phi1_coefficients(mu: torch.Tensor, d: torch.Tensor, C: torch.Tensor, S: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """alpha, beta (...) with V = (exp(B) - I) B^-1 = alpha I + beta X for B = mu I + X, X^2 = d I, d <= 0.

    With theta = sqrt(-d), z = mu + i theta: alpha + i theta beta = phi1(z) = (e^z - 1)/z.
    mu, d: (...); C = cos(theta), S = sin(theta)/theta (...), the block's coefficient functions at d.
    For |z|^2 = mu^2 - d >= 1/4: alpha = (e^mu (C mu - S d) - mu) / |z|^2, beta = (e^mu (S mu - C) + 1) / |z|^2.
    Below, the series of phi1 in the algebra spanned by 1 and X (X^2 = d): Horner on p + q X with
    (p, q) <- (p mu + d q + c_n, p + mu q), a polynomial in mu and d, so values and gradients are exact
    at mu = d = 0 (no square root, no division by theta).
    """
    r2 = mu**2 - d
    small = r2 < PHI1_RADIUS2
    den = torch.where(small, torch.ones_like(r2), r2)
    e = torch.exp(mu)
    alpha = (e * (C * mu - S * d) - mu) / den
    beta = (e * (S * mu - C) + 1) / den
    if bool(small.any()):  # the series only where it is needed
        pick = small.reshape(-1)
        mu_s, d_s = mu.reshape(-1)[pick], d.reshape(-1)[pick]
        p, q = torch.full_like(mu_s, PHI1_SERIES[-1]), torch.zeros_like(mu_s)
        for c in reversed(PHI1_SERIES[:-1]):
            p, q = p * mu_s + d_s * q + c, p + mu_s * q
        alpha = alpha.reshape(-1).index_put((pick,), p).reshape(alpha.shape)
        beta = beta.reshape(-1).index_put((pick,), q).reshape(beta.shape)
    return alpha, beta


# Gauss-Legendre rule on [0, 1] for V = int_0^1 exp(sB) ds
_GL_X, _GL_W = np.polynomial.legendre.leggauss(32)
QUAD_NODES = tuple(float(v) for v in (_GL_X + 1) / 2)
QUAD_WEIGHTS = tuple(float(v) for v in _GL_W / 2)


def quadrature_v(exp_block: Callable, B: torch.Tensor, mu: torch.Tensor, d: torch.Tensor | None = None) -> torch.Tensor:
    """V = (exp(B) - I) / B = int_0^1 exp(sB) ds (..., s, s) by the 32-point Gauss-Legendre rule, for a
    block with mu != 0 and no closed form; exp_block(sB, s mu[, s^2 d]) is the block's exp."""
    s = const(QUAD_NODES, B)
    w = const(QUAD_WEIGHTS, B)
    Bs = s[:, None, None] * B[..., None, :, :]
    if d is None:
        return (mat(w) * exp_block(Bs, s * mu[..., None])).sum(-3)
    return (mat(w) * exp_block(Bs, s * mu[..., None], s**2 * d[..., None])).sum(-3)


def zero_spectrum(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The spectrum (rotation, growth) of groups whose linear parts are all nilpotent or zero: (0, 0)."""
    zero = a.new_zeros(a.shape[:-1])
    return zero, zero


def eigvals(M: torch.Tensor) -> torch.Tensor:
    """Eigenvalues (..., n) complex of general real matrices (..., n, n), for numeric-fallback groups
    only.  torch's LAPACK (MKL) fails to converge on ordinary matrices on some CPUs; the call is then
    retried with numpy's LAPACK."""
    try:
        return torch.linalg.eigvals(M)
    except torch.linalg.LinAlgError:
        return torch.from_numpy(np.linalg.eigvals(M.detach().cpu().double().numpy())).to(M.device)


def numeric_log(g: torch.Tensor) -> torch.Tensor:
    """Principal matrix log (..., n, n) for numeric-fallback groups.  Elements near the identity
    (|g - I| < 1/4, row sums) use the log series, which is exact there and differentiable (the
    eigen-decomposition's gradient is undefined at repeated eigenvalues); the others use an
    eigen-decomposition, or, where LAPACK's eigensolver fails, inverse scaling and squaring."""
    n = g.shape[-1]
    flat = g.reshape(-1, n, n)
    near = (flat - eye(n, g)).abs().sum(-1).amax(-1) < 0.25
    out = torch.zeros_like(flat)
    if bool(near.any()):
        out = out.index_put((near,), _log_series(flat[near] - eye(n, g)))
    far = ~near
    if bool(far.any()):
        h = flat[far]
        try:
            vals, vecs = torch.linalg.eig(h)
            X = (vecs @ torch.diag_embed(torch.log(vals)) @ torch.linalg.inv(vecs)).real
        except torch.linalg.LinAlgError:
            X = log_by_square_roots(h)
        out = out.index_put((far,), X)
    return out.reshape(g.shape)


def _log_series(E: torch.Tensor, terms: int = 40) -> torch.Tensor:
    """log(I + E) = sum_k (-1)^(k+1) E^k / k for |E| < 1/4 (40 terms reach float64 roundoff)."""
    out, power = torch.zeros_like(E), eye(E.shape[-1], E).expand_as(E)
    for k in range(1, terms + 1):
        power = power @ E
        out = out + ((-1) ** (k + 1) / k) * power
    return out


def log_by_square_roots(g: torch.Tensor, tol: float = 0.25, max_roots: int = 60) -> torch.Tensor:
    """Principal log of real matrices (..., n, n) with no eigenvalue on (-inf, 0], without an
    eigensolver: take s square roots (Denman-Beavers iteration) until |X - I| < tol, then
    log g = 2^s log(X) by its series.  Less accurate than the eigen-decomposition close to angle pi."""
    n = g.shape[-1]
    I = eye(n, g)
    X, s = g, 0
    while s < max_roots and float((X - I).abs().sum(-1).amax()) >= tol:
        Y, Z = X, I.expand_as(X)
        for _ in range(100):
            Y, Z = 0.5 * (Y + torch.linalg.inv(Z)), 0.5 * (Z + torch.linalg.inv(Y))
            if float((Y @ Y - X).abs().amax()) <= 64 * torch.finfo(X.dtype).eps * (1 + float(X.abs().amax())):
                break
        X, s = Y, s + 1
    return _log_series(X - I) * 2.0**s


class GeneratedGroup(LiftMixin):
    """A matrix Lie group emitted by groupgen (see the module's header for its spec)."""

    name: str = ""
    description: str = ""
    action: str = "linear"
    lie_dim: int = 0
    rep_dim: int = 0
    space_dim: int = 0
    generator_names: tuple = ()
    abelian: bool = True
    closed_form: bool = True
    spec_path: str = ""
    spec_hash: str = ""
    defaults: dict = {}
    GENERATORS: list = []
    DUAL: list = []
    STRUCTURE_CONSTANTS: list = []
    _exp: Callable
    _log: Callable
    _inv: Callable
    _spectrum: Callable | None = None  # closed form emitted by groupgen (None: numeric fallback)

    METRIC: list = []
    METRIC_SOURCE: str = "frobenius"

    DISTANCE_FORMS = ("quadrature", "sum")

    def __init__(self, alpha: float | None = None, lift_samples: int | None = None, metric=None,
                 distance: str | None = None):
        """alpha, lift_samples: runtime settings (default: the spec's ``defaults``).  metric: the metric
        on the Lie algebra, overriding the spec's (default: the spec's ``metric:``, else the Frobenius
        Gram): a mapping generator name -> positive weight (diagonal; unlisted generators weigh 1) or a
        symmetric positive-definite (lie_dim, lie_dim) matrix in generator order.  distance: how the
        rotation part and the rest of a pair add up, "quadrature" (d^2 = a^T M a + alpha |dq|^2; also
        None) or "sum" (d = |rotation part| + |rest|, each in the metric, as the original code added
        them; see `distance`)."""
        self.alpha = float(self.defaults.get("alpha", 0.2) if alpha is None else alpha)
        self.lift_samples = int(self.defaults.get("lift_samples", 1) if lift_samples is None else lift_samples)
        self.metric_source = self.METRIC_SOURCE if metric is None else "override"
        self._metric = self.METRIC if metric is None else self._check_metric(metric)
        self.distance_form = self.check_distance_form(distance or "quadrature")

    def check_distance_form(self, form: str | None) -> str:
        """`form` (None: this group's `distance_form`) if this group can use it, else ValueError in one
        line: an unknown form, or "sum" with a metric that mixes rotation generators with the others.
        The group's own form was checked when it was built, so asking for it again costs nothing."""
        own = self.__dict__.get("distance_form")
        if form is None or form == own:
            return own
        if form not in self.DISTANCE_FORMS:
            raise ValueError(f"{self.name}: distance must be one of {', '.join(self.DISTANCE_FORMS)}, got {form!r}")
        if form == "sum":
            rot = np.asarray(self.rotation_generators_mask())
            M = np.asarray(self._metric, dtype=float).reshape(self.lie_dim, self.lie_dim)
            if self.lie_dim and np.abs(M[np.ix_(rot, ~rot)]).max(initial=0.0) > 0:
                raise ValueError(f"{self.name}: distance 'sum' needs a metric that does not mix rotation "
                                 "generators with the others; use distance 'quadrature' or a block-diagonal metric")
        return form

    def _check_metric(self, metric) -> list:
        """A metric override as nested lists of floats (ValueError, one line, if it is not one)."""
        import numpy as np

        names, n = self.generator_names, self.lie_dim
        how = "give {generator: positive weight} or a symmetric positive-definite matrix in generator order"
        if isinstance(metric, dict):
            M = np.eye(n)
            for key, w in metric.items():
                if key not in names:
                    raise ValueError(f"{self.name}: metric: unknown generator {key!r}; the generators are "
                                     f"{', '.join(names)}")
                w = float(w)
                if not (w > 0 and math.isfinite(w)):
                    raise ValueError(f"{self.name}: metric.{key}: weight {w} is not a positive finite number; {how}")
                M[names.index(key), names.index(key)] = w
            return M.tolist()
        M = np.asarray(metric.detach().cpu() if isinstance(metric, torch.Tensor) else metric, dtype=float)
        if M.shape != (n, n):
            raise ValueError(f"{self.name}: metric: shape {M.shape}, but there are {n} generators "
                             f"({', '.join(names)}); {how}")
        if not np.all(np.isfinite(M)) or np.abs(M - M.T).max(initial=0) > 1e-12 * max(1.0, np.abs(M).max(initial=0)):
            raise ValueError(f"{self.name}: metric: the matrix is not symmetric (or not finite); {how}")
        if n and np.linalg.eigvalsh(0.5 * (M + M.T)).min() <= 0:
            raise ValueError(f"{self.name}: metric: the matrix is not positive definite; {how}")
        return (0.5 * (M + M.T)).tolist()

    def metric(self, ref: torch.Tensor | None = None) -> torch.Tensor:
        """The metric M (lie_dim, lie_dim) on the Lie algebra: d^2 = a^T M a + alpha |q_i - q_j|^2."""
        ref = torch.empty(0) if ref is None else ref
        if not self.lie_dim:
            return torch.zeros(0, 0, dtype=ref.dtype, device=ref.device)
        return const(self._metric, ref)

    def describe_metric(self) -> str:
        """'frobenius', 'diag(theta=0.0028, tx=1, ty=1)' or 'matrix [[...]]' (with where it came from)."""
        import numpy as np

        M = np.asarray(self._metric, dtype=float).reshape(self.lie_dim, self.lie_dim)
        if self.metric_source == "frobenius":
            return "frobenius"
        if np.count_nonzero(M - np.diag(np.diag(M))) == 0:
            body = "diag(" + ", ".join(f"{g}={w:.4g}" for g, w in zip(self.generator_names, np.diag(M))) + ")"
        else:
            body = "matrix " + str(np.round(M, 4).tolist())
        return f"{body} [{self.metric_source}]"

    def original_weighting(self, alpha: float) -> dict:
        """The metric with the relative weights of the original LieConv code's alpha: it computed
        alpha |rotation part| + (1 - alpha) |the rest| (SE2, SE3, SO2, RxSO2, Sim2), so here
        rotation generators (antisymmetric linear part, no translation) get weight
        (alpha / (1 - alpha))^2 and every other generator 1 (e.g. SE2 at the paper's alpha = 0.05:
        {"theta": 0.00277}).  Pass it as ``load_group(name, metric=...)``; the two parts then add in
        quadrature, or as the original added them with ``distance="sum"`` (docs/spec.md)."""
        if not 0 < alpha < 1:
            raise ValueError(f"{self.name}: the original's alpha must be in (0, 1), got {alpha}")
        return {name: (alpha / (1 - alpha)) ** 2
                for name, rot in zip(self.generator_names, self.rotation_generators_mask()) if rot}

    def rotation_generators_mask(self) -> tuple:
        """Per generator, whether it is a rotation: antisymmetric, nonzero linear part and no
        translation.  These make the "rotation part" of a pair for `original_weighting` and for the
        "sum" distance."""
        hit = self.__dict__.get("_rotation_mask")
        if hit is not None:
            return hit
        m = self.space_dim if self.action == "affine" else self.rep_dim
        G = self.generators(torch.empty(0, dtype=torch.float64))
        out = []
        for X in G:
            B = X[:m, :m]
            out.append(bool((B + B.T).abs().max() == 0) and bool(B.abs().max() > 0) and (
                self.action != "affine" or bool(X[:m, m].abs().max() == 0)))
        self._rotation_mask = tuple(out)
        return self._rotation_mask

    def alpha_unused(self) -> str | None:
        """Why alpha has no effect (one orbit, or no lifting), or None when it weighs the orbit distance."""
        if not self.can_lift:
            return "no lifting"
        return "one orbit" if self.q_dim == 0 else None

    def __repr__(self) -> str:
        kind = "closed form" if self.closed_form else "numeric fallback"
        unused = self.alpha_unused()
        alpha = f"alpha={self.alpha}" + (f" (unused: {unused})" if unused else "")
        return (f"{self.name}(lie_dim={self.lie_dim}, rep_dim={self.rep_dim}, action={self.action!r}, "
                f"{alpha}, metric={self.describe_metric()}, {kind})")

    # --- Lie algebra ---------------------------------------------------------------
    def generators(self, ref: torch.Tensor | None = None) -> torch.Tensor:
        """(lie_dim, rep_dim, rep_dim)."""
        ref = torch.empty(0) if ref is None else ref
        if not self.lie_dim:
            return torch.zeros(0, self.rep_dim, self.rep_dim, dtype=ref.dtype, device=ref.device)
        return const(self.GENERATORS, ref)

    def hat(self, a: torch.Tensor) -> torch.Tensor:
        """(..., lie_dim) -> (..., rep_dim, rep_dim)."""
        if not self.lie_dim:
            return a.new_zeros(a.shape[:-1] + (self.rep_dim, self.rep_dim))
        return combine(a, self.GENERATORS)

    def vee(self, X: torch.Tensor) -> torch.Tensor:
        """(..., rep_dim, rep_dim) -> (..., lie_dim): exact on the algebra, least squares off it."""
        if not self.lie_dim:
            return X.new_zeros(X.shape[:-2] + (0,))
        return vee(X, self.DUAL)

    def structure_constants(self, ref: torch.Tensor | None = None) -> torch.Tensor:
        """c[i, j, k] with [G_i, G_j] = sum_k c[i, j, k] G_k."""
        ref = torch.empty(0) if ref is None else ref
        if not self.lie_dim:
            return torch.zeros(0, 0, 0, dtype=ref.dtype, device=ref.device)
        return const(self.STRUCTURE_CONSTANTS, ref)

    def bracket(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """[a, b] in coefficients: (..., d), (..., d) -> (..., d)."""
        return torch.einsum("ijk,...i,...j->...k", self.structure_constants(a), a, b)

    def ad(self, a: torch.Tensor) -> torch.Tensor:
        """(..., d) -> (..., d, d) with ad(a) @ b = [a, b]."""
        return torch.einsum("...i,ijk->...kj", a, self.structure_constants(a))

    # --- group --------------------------------------------------------------------
    def exp(self, a: torch.Tensor) -> torch.Tensor:
        """(..., lie_dim) -> (..., rep_dim, rep_dim)."""
        return self._exp(a)

    def log(self, g: torch.Tensor) -> torch.Tensor:
        """(..., rep_dim, rep_dim) -> (..., lie_dim), principal branch."""
        return self._log(g)

    def inv(self, g: torch.Tensor) -> torch.Tensor:
        """(..., rep_dim, rep_dim) -> (..., rep_dim, rep_dim)."""
        return self._inv(g)

    def spectrum(self, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(rotation, growth), each (...): the largest |Im| and |Re| of an eigenvalue of the linear part
        of hat(a) for a (..., lie_dim).  rotation < pi is log's principal domain; growth bounds the
        condition number of exp(a) by e^(2 growth).  Closed form for derived groups (no eigensolver);
        numeric-fallback groups use `eigvals`."""
        if self._spectrum is not None:
            return self._spectrum(a)
        m = self.space_dim if self.action == "affine" else self.rep_dim
        if m == 0 or a.numel() == 0 or self.lie_dim == 0:
            zero = a.new_zeros(a.shape[:-1])
            return zero, zero
        lam = eigvals(self.hat(a)[..., :m, :m].double())
        return lam.imag.abs().amax(-1).to(a.dtype), lam.real.abs().amax(-1).to(a.dtype)

    def identity(self, shape=(), ref: torch.Tensor | None = None) -> torch.Tensor:
        ref = torch.empty(0) if ref is None else ref
        return eye(self.rep_dim, ref).expand(*shape, self.rep_dim, self.rep_dim)

    def act(self, g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Action on points: g (..., n, n), x (..., space_dim) -> (..., space_dim)."""
        if self.action == "linear":
            return (g @ x[..., None])[..., 0]
        m = self.space_dim
        return (g[..., :m, :m] @ x[..., None])[..., 0] + g[..., :m, m]
