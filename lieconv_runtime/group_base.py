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

    def identity(self, shape=(), ref: torch.Tensor | None = None) -> torch.Tensor:
        ref = torch.empty(0) if ref is None else ref
        return eye(self.rep_dim, ref).expand(*shape, self.rep_dim, self.rep_dim)

    def act(self, g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Action on points: g (..., n, n), x (..., space_dim) -> (..., space_dim)."""
        if self.action == "linear":
            return (g @ x[..., None])[..., 0]
        m = self.space_dim
        return (g[..., :m, :m] @ x[..., None])[..., 0] + g[..., :m, m]
