"""The base every generated group module fills in, and the small generic helpers the
generated code calls (constants cache, Hermite matrix polynomials, Newton-Schulz).

Nothing here knows any particular group: the generated module supplies the generator
matrices, the dual basis for ``vee``, the structure constants and the closed-form
``exp``/``log``/``inv`` functions derived by groupgen.

Shapes: coefficients ``a`` are ``(..., lie_dim)``, matrices ``(..., rep_dim, rep_dim)``,
points ``(..., space_dim)``; every function is batched over the leading dims.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from lieconv_runtime.lift import LiftMixin

_CONST_CACHE: dict = {}


def const(values, ref: torch.Tensor) -> torch.Tensor:
    """A constant table (nested lists of floats) as a tensor on ref's dtype/device (cached)."""
    key = (id(values), ref.dtype, ref.device)
    hit = _CONST_CACHE.get(key)
    if hit is None or hit[0] is not values:
        tensor = torch.tensor(values, dtype=ref.dtype, device=ref.device)
        hit = (values, tensor)
        _CONST_CACHE[key] = hit
    return hit[1]


def eye(n: int, ref: torch.Tensor) -> torch.Tensor:
    return torch.eye(n, dtype=ref.dtype, device=ref.device)


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


def horner(d: torch.Tensor, coeffs: Sequence[float]) -> torch.Tensor:
    """sum_k coeffs[k] d^k."""
    out = torch.full_like(d, coeffs[-1])
    for c in reversed(coeffs[:-1]):
        out = out * d + c
    return out


def piecewise(d: torch.Tensor, series: Sequence[float], tau: float, neg=None, pos=None) -> torch.Tensor:
    """An analytic coefficient function with a removable singularity at d = 0.

    Evaluates the Taylor series for |d| < tau and the closed form `neg(y)` (d <= -tau) or
    `pos(y)` (d >= tau) elsewhere.  Each closed form only ever sees safe inputs (masked
    entries get y = -+1), so no NaN/inf reaches autograd from a discarded branch; branches
    that no entry needs are skipped.
    """
    small = d.abs() < tau
    out = horner(d, series) if bool(small.any()) else torch.zeros_like(d)
    for side, fn in ((-1.0, neg), (1.0, pos)):
        if fn is None:
            continue
        use = (d * side) >= tau
        if bool(use.any()):
            out = torch.where(use, fn(torch.where(use, d, torch.full_like(d, side))), out)
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

    def __init__(self, alpha: float | None = None, lift_samples: int | None = None):
        self.alpha = float(self.defaults.get("alpha", 0.2) if alpha is None else alpha)
        self.lift_samples = int(self.defaults.get("lift_samples", 1) if lift_samples is None else lift_samples)

    def __repr__(self) -> str:
        kind = "closed form" if self.closed_form else "numeric fallback"
        return (f"{self.name}(lie_dim={self.lie_dim}, rep_dim={self.rep_dim}, action={self.action!r}, "
                f"alpha={self.alpha}, {kind})")

    # --- Lie algebra ---------------------------------------------------------------
    def generators(self, ref: torch.Tensor | None = None) -> torch.Tensor:
        """(lie_dim, rep_dim, rep_dim)."""
        ref = torch.empty(0) if ref is None else ref
        if not self.lie_dim:
            return torch.zeros(0, self.rep_dim, self.rep_dim, dtype=ref.dtype, device=ref.device)
        return const(self.GENERATORS, ref)

    def hat(self, a: torch.Tensor) -> torch.Tensor:
        """(..., lie_dim) -> (..., rep_dim, rep_dim)."""
        return torch.einsum("...i,ijk->...jk", a, self.generators(a))

    def vee(self, X: torch.Tensor) -> torch.Tensor:
        """(..., rep_dim, rep_dim) -> (..., lie_dim): exact on the algebra, least squares off it."""
        if not self.lie_dim:
            return X.new_zeros(X.shape[:-2] + (0,))
        return torch.einsum("ij,...j->...i", const(self.DUAL, X), X.flatten(-2))

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
