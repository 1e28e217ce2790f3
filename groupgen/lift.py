"""Lifting, orbits, stabilizers and Haar sampling derived from a spec (paper §4.1, §4.5, Alg. 1).

Everything here is derived from the generators (and, where needed, the spec's `lift:` block);
nothing depends on a group's name.  Pure sympy/numpy, except `lift_check_rows` (torch, for
`groupgen check`).

Orbits and sections (`LiftPlan`):

* ``translations``: the algebra contains every translation of R^m (affine groups such as T(d),
  SE(d), Sim(d)).  One orbit, origin 0, u_x = the translation by x (a linear map x -> a(x)).
* ``translation-subspace``: every generator is a pure translation (T(k) inside T(d); also the
  trivial group).  q(x) = C x with C's rows spanning the orthogonal complement V^perp of the
  translations V, o_q = C^T (C C^T)^-1 q, u_x = the translation by the projection of x on V.
* ``declared``: the spec's `lift:` block gives q(x), o_q and u_x as sympy expressions.
* ``none``: none of the above; lifting raises at run time, everything else still works.

Stabilizer of the origin: the exact nullspace of a -> hat(a) [o; 1] (affine) or hat(a) o (linear),
computed at three random orbits (it must not depend on q).  Its basis is the reduced row echelon
form, so the stabilizer coordinates b are the coefficients of the pivot generators.

Haar sampling (`Sampler`), for the stabilizer and, if compact, the whole group: rejection
sampling of b in exponential coordinates, uniform in a box, accepted when exp is principal there
(largest rotation angle < pi, the branch of the emitted log), inside the declared window, and with
probability |det dexp(b)| / max.  The density is derived from ad restricted to the subalgebra:
when its characteristic polynomial is lambda^e (lambda^2 - delta)^k, |det dexp| = |F(delta)|^k with
F(d) = 2 (cosh sqrt(d) - 1) / d (= sinc^2(theta/2) for rotations); otherwise the runtime uses
the eigenvalues of ad numerically.  Compactness: a positive-definite form invariant under the
linear parts (found exactly), plus a common fixed point for the whole affine group.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np
import sympy

from groupgen.expressions import MINIMAL_GLOBALS, ExpressionError, parse
from groupgen.printer import code
from groupgen.spec import SpecError

__all__ = ["LiftPlan", "Sampler", "derive_lift", "lift_context", "lift_check_rows", "parse_lift_block",
           "stabilizer_basis", "invariant_pd_form", "derive_sampler", "CHECK_TOLERANCES"]

LIFT_KEYS = ("orbit", "origin", "section", "window", "test_points")
_FUNCTIONS = {
    "sqrt": sympy.sqrt, "atan2": sympy.atan2, "log": sympy.log, "exp": sympy.exp,
    "sin": sympy.sin, "cos": sympy.cos, "tan": sympy.tan, "asin": sympy.asin, "acos": sympy.acos,
    "atan": sympy.atan, "sinh": sympy.sinh, "cosh": sympy.cosh, "tanh": sympy.tanh,
    "Abs": sympy.Abs, "abs": sympy.Abs, "sign": sympy.sign, "Min": sympy.Min, "Max": sympy.Max,
    "min": sympy.Min, "max": sympy.Max, "pi": sympy.pi,
}


# --------------------------------------------------------------------------------------------
# the spec's lift: block
# --------------------------------------------------------------------------------------------


def _xsyms(d: int) -> tuple[sympy.Symbol, ...]:
    return tuple(sympy.Symbol(f"x{i}", real=True) for i in range(d))


def _qsyms(k: int) -> tuple[sympy.Symbol, ...]:
    return tuple(sympy.Symbol(f"q{i}", real=True) for i in range(k))


def _expr(value: Any, allowed: dict, file: str, fld: str, what: str) -> sympy.Expr:
    """One expression of the lift block (number or string) -> sympy, only `allowed` symbols."""
    names = ", ".join(allowed) or "none"
    how = f"write a quoted sympy expression in {names} (functions: sqrt, atan2, log, exp, sin, cos, Abs, sign, Min, Max)"
    if isinstance(value, bool) or value is None or isinstance(value, (list, dict)):
        raise SpecError(file, fld, f"{what} must be a number or an expression string, got {value!r}; {how}")
    try:
        expr = parse(value, max_len=500, local_dict={**_FUNCTIONS, **allowed}, global_dict=MINIMAL_GLOBALS)
    except ExpressionError as exc:
        problem = {
            "type": "is not a number or a string",
            "not-finite": "is not finite",
            "empty": "is not a valid expression",
            "invalid": "is not a valid expression",
            "unparsable": f"cannot be parsed ({exc.detail})",
            "not-expression": "is not an expression",
        }[exc.kind]
        raise SpecError(file, fld, f"{what} {value!r} {problem}; {how}") from None
    unknown = sorted({str(f.func) for f in expr.atoms(sympy.core.function.AppliedUndef)})
    if unknown:
        raise SpecError(file, fld, f"{what} {value!r} uses unknown function(s) {', '.join(unknown)}; {how}")
    bad = sorted(str(s) for s in expr.free_symbols if s not in set(allowed.values()))
    if bad:
        raise SpecError(file, fld, f"{what} {value!r} uses unknown symbol(s) {', '.join(bad)}; {how}")
    if expr.has(sympy.nan, sympy.zoo, sympy.oo, -sympy.oo):
        raise SpecError(file, fld, f"{what} {value!r} is not finite; {how}")
    return expr


def _positive_number(value: Any, file: str, fld: str) -> float:
    expr = _expr(value, {}, file, fld, "window half-width")
    num = float(expr) if expr.is_number and expr.is_real is not False else float("nan")
    if not math.isfinite(num) or num <= 0:
        raise SpecError(file, fld, f"window half-width must be a positive number, got {value!r}")
    return num


def parse_lift_block(spec) -> dict:
    """Validate ``spec.lift`` (raw YAML) into exact sympy pieces; one-line SpecError on problems.

    Returns {} for no block, else a dict with any of: orbit (list of exprs in x), origin (exprs in
    q), section (list of factors, each a lie_dim list of exprs in x and q), window ({index: w}),
    test_points (list of float lists).
    """
    raw = spec.lift
    if raw is None:
        return {}
    file, d, names = spec.path, spec.space_dim, spec.generator_names
    out: dict = {}
    for key in raw:
        if key not in LIFT_KEYS:
            import difflib

            close = difflib.get_close_matches(str(key), LIFT_KEYS, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise SpecError(file, f"lift.{key}", f"unknown lift key; {hint}allowed keys are {', '.join(LIFT_KEYS)}")
    declared = [k for k in ("orbit", "origin", "section") if k in raw]
    if declared and len(declared) != 3:
        missing = [k for k in ("orbit", "origin", "section") if k not in raw]
        raise SpecError(file, f"lift.{missing[0]}", "orbit, origin and section must be declared together; "
                        f"add '{missing[0]}' (see the README section 'The lift: block')")
    xs = _xsyms(d)
    xmap = {str(s): s for s in xs}
    if declared:
        orbit = raw["orbit"]
        if orbit is None:
            orbit = []
        if not isinstance(orbit, list):
            raise SpecError(file, "lift.orbit", f"orbit must be a list of expressions in {', '.join(xmap)} "
                            "(the orbit embedding q(x)); use [] for a single orbit")
        out["orbit"] = [_expr(v, xmap, file, f"lift.orbit[{i}]", "orbit component") for i, v in enumerate(orbit)]
        qs = _qsyms(len(orbit))
        qmap = {str(s): s for s in qs}
        origin = raw["origin"]
        if not isinstance(origin, list) or len(origin) != d:
            raise SpecError(file, "lift.origin", f"origin must be a list of {d} expressions in "
                            f"{', '.join(qmap) or 'no symbols (one orbit)'} (the point o_q), got {origin!r}")
        out["origin"] = [_expr(v, qmap, file, f"lift.origin[{i}]", "origin component") for i, v in enumerate(origin)]
        section = raw["section"]
        factors = section if isinstance(section, list) else [section]
        if not factors or not all(isinstance(f, dict) for f in factors):
            raise SpecError(file, "lift.section", "section must be a mapping {generator: expression} or a list of "
                            "such mappings (u_x = exp(first) @ exp(second) @ ...), e.g. {theta: 'atan2(x1, x0)'}")
        both = dict(xmap)
        both.update(qmap)
        out["section"] = []
        for k, fac in enumerate(factors):
            coeffs = [sympy.Integer(0)] * len(names)
            for gname, value in fac.items():
                fld = f"lift.section[{k}].{gname}" if isinstance(section, list) else f"lift.section.{gname}"
                if gname not in names:
                    raise SpecError(file, fld, f"unknown generator {gname!r}; the generators are {', '.join(names)}")
                coeffs[names.index(gname)] = _expr(value, both, file, fld, "section coefficient")
            out["section"].append(coeffs)
    if "window" in raw:
        win = raw["window"]
        if not isinstance(win, dict) or not win:
            raise SpecError(file, "lift.window", "window must be a mapping {generator: half-width}, e.g. {s: 1.0}")
        out["window"] = {}
        for gname, value in win.items():
            fld = f"lift.window.{gname}"
            if gname not in names:
                raise SpecError(file, fld, f"unknown generator {gname!r}; the generators are {', '.join(names)}")
            out["window"][names.index(gname)] = _positive_number(value, file, fld)
    if "test_points" in raw:
        pts = raw["test_points"]
        if not isinstance(pts, list):
            raise SpecError(file, "lift.test_points", f"test_points must be a list of points with {d} numbers each")
        out["test_points"] = []
        for i, p in enumerate(pts):
            fld = f"lift.test_points[{i}]"
            if not isinstance(p, list) or len(p) != d:
                raise SpecError(file, fld, f"a test point must be a list of {d} numbers, got {p!r}")
            out["test_points"].append([float(_expr(v, {}, file, fld, "coordinate")) for v in p])
    return out


# --------------------------------------------------------------------------------------------
# exact linear algebra helpers
# --------------------------------------------------------------------------------------------


def _rref_basis(vectors: list[sympy.Matrix], n: int) -> sympy.Matrix:
    """Columns spanning the same space, canonical: the transposed reduced row echelon form."""
    if not vectors:
        return sympy.zeros(n, 0)
    rows = sympy.Matrix.hstack(*vectors).T
    rref, pivots = rows.rref(simplify=True)
    return rref[: len(pivots), :].T.applyfunc(sympy.nsimplify)


def _pivots(basis: sympy.Matrix) -> list[int]:
    """Row index of the leading 1 of each column of an rref basis."""
    out = []
    for j in range(basis.shape[1]):
        out.append(next(i for i in range(basis.shape[0]) if basis[i, j] != 0))
    return out


def _random_rational(rng: random.Random) -> sympy.Rational:
    return sympy.Rational(rng.choice([-1, 1]) * rng.randint(7, 97), rng.randint(5, 31))


def _hat(spec, coeffs) -> sympy.Matrix:
    out = sympy.zeros(spec.rep_dim, spec.rep_dim)
    for c, g in zip(coeffs, spec.generators):
        if c != 0:
            out += c * sympy.Matrix(g)
    return out


def _linear_part(spec, M: sympy.Matrix) -> sympy.Matrix:
    m = spec.space_dim
    return M[:m, :m]


def _homog(spec, point) -> sympy.Matrix:
    vec = sympy.Matrix(list(point))
    return vec.col_join(sympy.Matrix([1])) if spec.action == "affine" else vec


def _vector_field(spec, G, xs) -> list[sympy.Expr]:
    """d/dt exp(tG) x at t = 0, as expressions in x."""
    v = sympy.Matrix(G) * _homog(spec, xs)
    return list(v[: spec.space_dim])


def invariant_pd_form(mats: list[sympy.Matrix], size: int, seed: int = 0) -> sympy.Matrix | None:
    """A symmetric positive-definite M with X^T M + M X = 0 for every X in `mats`, or None.

    Exact: the invariant symmetric forms are solved for, then a positive-definite member is
    searched for (identity, basis elements, best random combination, rounded and verified exactly).
    """
    if all(all(v == 0 for v in (X.T + X)) for X in mats):
        return sympy.eye(size)  # all skew-symmetric (includes no generators)
    syms = []
    M = sympy.zeros(size, size)
    for i in range(size):
        for j in range(i, size):
            s = sympy.Symbol(f"m{i}_{j}")
            syms.append(s)
            M[i, j] = M[j, i] = s
    eqs = []
    for X in mats:
        eqs.extend(v for v in (X.T * M + M * X) if v != 0)
    sol = sympy.linsolve(eqs, syms) if eqs else sympy.FiniteSet(tuple(syms))
    if not sol:
        return None
    (vals,) = list(sol)
    general = M.subs(dict(zip(syms, vals)), simultaneous=True)
    free = sorted(general.free_symbols, key=str)
    if not free:
        return None
    basis = [general.subs({f: (1 if f == g else 0) for f in free}) for g in free]

    def is_pd(cand):
        return cand.is_symmetric() and cand.is_positive_definite

    for B in basis:
        for sgn in (1, -1):
            if is_pd(sgn * B):
                return sgn * B
    # numeric search for the combination with the largest smallest eigenvalue, then exact check
    rng = np.random.default_rng(seed)
    fb = [np.array(B.evalf(), dtype=float) for B in basis]
    best, best_c = -np.inf, None
    for _ in range(4000):
        c = rng.standard_normal(len(fb))
        c /= np.linalg.norm(c)
        ev = np.linalg.eigvalsh(sum(ci * Bi for ci, Bi in zip(c, fb)))
        if ev[0] > best:
            best, best_c = ev[0], c
    if best <= 0:
        return None
    for den in (10, 100, 1000, 10000):
        cand = sum((sympy.Rational(Fraction(float(ci)).limit_denominator(den)) * B for ci, B in zip(best_c, basis)),
                   sympy.zeros(size, size))
        if is_pd(cand):
            return cand
    return None


def stabilizer_basis(spec, orbit, origin, seed: int = 0) -> sympy.Matrix:
    """Basis (lie_dim, h) of the stabilizer subalgebra {a : hat(a) o_q = 0} (exact, rref).

    Evaluated at o_{q(x)} for three random rational x; raises ValueError if it differs between
    them (the stabilizer must be the same for every generic orbit) or if the origin is not
    algebraic (then the nullspace could not be found exactly).
    """
    lie = len(spec.generators)
    if lie == 0:
        return sympy.zeros(0, 0)
    rng = random.Random(seed)
    xs, qs = _xsyms(spec.space_dim), _qsyms(len(orbit))
    found = None
    for _ in range(3):
        xv = {s: _random_rational(rng) for s in xs}
        qv = {q: sympy.nsimplify(sympy.simplify(e.subs(xv))) for q, e in zip(qs, orbit)}
        ov = [sympy.simplify(e.subs(qv)) for e in origin]
        if not all(v.is_number and v.is_algebraic is not False and not v.has(sympy.exp, sympy.log, sympy.atan2,
                   sympy.sin, sympy.cos, sympy.tan, sympy.atan, sympy.asin, sympy.acos, sympy.sinh, sympy.cosh,
                   sympy.tanh) for v in ov):
            raise ValueError("the origin o_q is not algebraic at a random orbit (values "
                             f"{[str(v) for v in ov]}); write o_q with polynomials, sqrt, Abs and sign of q")
        oh = _homog(spec, ov)
        cols = [sympy.Matrix(g) * oh for g in spec.generators]
        Mat = sympy.Matrix.hstack(*cols).applyfunc(sympy.nsimplify)
        basis = _rref_basis(Mat.nullspace(simplify=True), lie)
        if found is None:
            found = basis
        elif basis.shape != found.shape or (basis - found).applyfunc(sympy.simplify) != sympy.zeros(*basis.shape):
            raise ValueError("the stabilizer of o_q depends on the orbit (different subalgebras at random orbits); "
                             "choose origins o_q that share one stabilizer")
    return found


# --------------------------------------------------------------------------------------------
# Haar samplers (stabilizer, whole group)
# --------------------------------------------------------------------------------------------


def _haar_F(d: float) -> float:
    """F(d) = 2 (cosh sqrt(d) - 1) / d (entire; sinc^2 for d < 0)."""
    if abs(d) < 1e-8:
        return 1.0 + d / 12.0
    if d < 0:
        t = math.sqrt(-d)
        return 2.0 * (1.0 - math.cos(t)) / (t * t)
    t = math.sqrt(d)
    return 2.0 * (math.cosh(t) - 1.0) / (t * t) if t < 700 else math.inf


@dataclass
class Sampler:
    """Rejection sampler of Haar measure on exp(span basis) in exponential coordinates b."""

    basis: sympy.Matrix  # (lie_dim, h), rref: b_j is the coefficient of generator pivots[j]
    pivots: list
    compact: bool
    window: dict  # generator index -> half-width (|a_i| <= w)
    box: list  # half-widths of the sampling box for b
    density: str  # 'uniform' | 'pair' | 'eig'
    delta: sympy.Expr | None = None  # 'pair': |det dexp| = |F(delta(b))|^k
    k: int = 0
    ad: list | None = None  # 'eig': ad restricted to the subalgebra, one (h, h) matrix per b_j
    density_max: float = 1.0
    reason: str | None = None  # why it cannot sample (non-compact without window)
    bsyms: tuple = ()

    @property
    def dim(self) -> int:
        return self.basis.shape[1]

    def names(self, spec) -> str:
        parts = []
        for j in range(self.dim):
            terms = []
            for i in range(self.basis.shape[0]):
                c = self.basis[i, j]
                if c != 0:
                    terms.append(spec.generator_names[i] if c == 1 else f"{sympy.sstr(c)}*{spec.generator_names[i]}")
            parts.append(" + ".join(terms))
        return "span{" + ", ".join(parts) + "}"


def _ad_restricted(spec, basis: sympy.Matrix, pivots, bsyms) -> sympy.Matrix:
    """ad(a) restricted to the subalgebra, in its coordinates b (a = basis @ b)."""
    c = spec.structure_constants
    lie = len(spec.generators)
    a = basis * sympy.Matrix(bsyms)
    AD = sympy.Matrix(lie, lie, lambda k, j: sum(a[i] * c[i][j][k] for i in range(lie)))
    return sympy.expand((AD * basis)[pivots, :]) if basis.shape[1] else sympy.zeros(0, 0)


def _pair_structure(M: sympy.Matrix, syms) -> tuple[sympy.Expr, int] | None:
    """(delta, k) if charpoly(M) = lam^e (lam^2 - delta)^k with delta polynomial, else None."""
    lam, u = sympy.Symbol("lam"), sympy.Symbol("u")
    cp = sympy.expand(M.charpoly(lam).as_expr())
    poly = sympy.Poly(cp, lam)
    e = min(deg for (deg,), c in zip(poly.monoms(), poly.coeffs()) if c != 0)
    rest = sympy.expand(sympy.cancel(cp / lam**e))
    if sympy.expand(rest.subs(lam, -lam) - rest) != 0:
        return None
    Q = sympy.expand(rest.subs(lam, sympy.sqrt(u)))
    if not Q.has(u):
        return None
    _, facs = sympy.factor_list(Q, u, *syms)
    lin = [(f, mult) for f, mult in facs if f.has(u)]
    if len(lin) != 1 or sympy.Poly(lin[0][0], u).degree() != 1:
        return None
    f, k = lin[0]
    fp = sympy.Poly(f, u)
    delta = sympy.expand(-fp.coeff_monomial(1) / fp.coeff_monomial(u))
    if not delta.is_polynomial(*syms):
        return None
    return delta, int(k)


def _box(Qtr: np.ndarray, Qw: np.ndarray | None, m: int, nw: int, clip: np.ndarray) -> list | None:
    """Half-widths of a box containing {b : Qtr(b) <= m pi^2, sum_w (a_i/w_i)^2 <= nw}, each at most clip.

    Uses Qtr + c Qw (positive definite for some c >= 0), choosing c for the smallest box.
    """
    best = None
    cs = [0.0] + list(np.logspace(-6, 6, 121)) if Qw is not None else [0.0]
    for c in cs:
        M = Qtr + (c * Qw if Qw is not None else 0.0)
        ev = np.linalg.eigvalsh(M)
        if ev[0] <= 1e-12 * max(1.0, abs(ev[-1])):
            continue
        inv = np.linalg.inv(M)
        box = np.minimum(np.sqrt((m * math.pi**2 + c * nw) * np.clip(np.diag(inv), 0, None)), clip)
        if best is None or np.sum(np.log(box)) < np.sum(np.log(best)):
            best = box
    return None if best is None else [float(v) * (1 + 1e-9) for v in best]


def derive_sampler(spec, alg, basis: sympy.Matrix, window: dict | None, what: str, seed: int = 0) -> Sampler:
    """Haar sampler on exp(span basis); `what` names it in messages ('stabilizer' or 'group')."""
    h = basis.shape[1]
    pivots = _pivots(basis)
    bsyms = tuple(sympy.Symbol(f"b{j}", real=True) for j in range(h))
    if h == 0:
        return Sampler(basis, pivots, True, {}, [], "uniform", bsyms=bsyms)
    mats = [_hat(spec, list(basis[:, j])) for j in range(h)]
    lin = [_linear_part(spec, X) for X in mats]
    compact = invariant_pd_form(lin, spec.space_dim, seed) is not None
    if compact and what == "group" and spec.action == "affine":
        # an affine group is compact only if it fixes a point (then it is conjugate to a linear one)
        o = sympy.Matrix(sympy.symbols(f"o0:{spec.space_dim}"))
        eqs = [v for X in mats for v in (X * o.col_join(sympy.Matrix([1])))[: spec.space_dim] if v != 0]
        compact = not eqs or bool(sympy.linsolve(eqs, list(o)))
    window = {i: w for i, w in (window or {}).items() if any(basis[i, j] != 0 for j in range(h))}
    # extent < pi bounds a quadratic form: with lambda_k = x_k + i y_k the m eigenvalues of the
    # linear part B, sum y_k^2 = sum x_k^2 - tr(B^2) >= tr(B)^2 / m - tr(B^2) = -tr(B0^2) (B0 traceless),
    # and sum y_k^2 <= m extent^2 < m pi^2.
    n = spec.space_dim
    lin0 = [B - (B.trace() / n) * sympy.eye(n) for B in lin]
    Qtr = np.array([[float(-(lin0[i] * lin0[j]).trace()) for j in range(h)] for i in range(h)])
    Qw, nw = None, len(window)
    if window:
        Qw = np.zeros((h, h))
        for i, w in window.items():
            row = np.array([float(basis[i, j]) for j in range(h)])
            Qw += np.outer(row, row) / w**2
    sampler = Sampler(basis, pivots, compact, window, [], "uniform", bsyms=bsyms)
    clip = np.array([window.get(p, np.inf) for p in pivots])  # b_j is the coefficient of generator pivots[j]
    box = _box(Qtr, Qw, n, nw, clip)
    if box is None:
        if window:
            raise SpecError(spec.path, "lift.window", f"the window {{{', '.join(spec.generator_names[i] for i in window)}}} "
                            f"does not bound the {what} {sampler.names(spec)}; add a half-width for its other "
                            "non-compact directions")
        sampler.reason = (f"the {what} {sampler.names(spec)} is not compact, so its Haar measure needs a window: "
                          f"declare one in the spec, e.g. lift: {{window: {{{_window_hint(spec, basis, pivots)}: 1.0}}}}")
        return sampler
    sampler.box = box
    ad = _ad_restricted(spec, basis, pivots, bsyms)
    if all(v == 0 for v in ad):
        return sampler
    pair = _pair_structure(ad, bsyms) if h <= 6 else None
    if pair is not None:
        sampler.density, (sampler.delta, sampler.k) = "pair", pair
        if compact:
            sampler.density_max = 1.0  # |F| = sinc^2 <= 1 on imaginary eigenvalues
        else:
            poly = sympy.Poly(sampler.delta, *bsyms)
            bound = sum(abs(float(cf)) * math.prod(box[j] ** e for j, e in enumerate(mon))
                        for mon, cf in zip(poly.monoms(), poly.coeffs()))
            sampler.density_max = max(1.0, _haar_F(bound)) ** sampler.k * (1 + 1e-9)
    else:
        sampler.density = "eig"
        sampler.ad = [ad.diff(b) for b in bsyms]
        if compact:
            sampler.density_max = 1.0
        else:
            rng = np.random.default_rng(seed)
            A = np.array([np.array(M.evalf(), dtype=float) for M in sampler.ad])
            bs = (2 * rng.random((4000, h)) - 1) * np.array(box)
            sampler.density_max = float(np.abs(_dexp_det(np.einsum("nj,jkl->nkl", bs, A))).max()) * 1.5
    return sampler


def _dexp_det(M: np.ndarray) -> np.ndarray:
    """det((I - e^-M) / M) for M (n, h, h): the upper-right block of exp([[-M, I], [0, 0]]) (torch's
    Pade matrix_exp; no eigensolver, which fails to converge on some CPUs), then LU."""
    import torch

    h = M.shape[-1]
    aug = np.zeros(M.shape[:-2] + (2 * h, 2 * h))
    aug[..., :h, :h], aug[..., :h, h:] = -M, np.eye(h)
    return np.linalg.det(torch.linalg.matrix_exp(torch.from_numpy(aug)).numpy()[..., :h, h:])


def _window_hint(spec, basis, pivots) -> str:
    return spec.generator_names[pivots[-1]] if pivots else "s"


# --------------------------------------------------------------------------------------------
# orbits and sections
# --------------------------------------------------------------------------------------------


@dataclass
class LiftPlan:
    kind: str  # 'translations' | 'translation-subspace' | 'declared' | 'none'
    reason: str | None = None
    orbit: list = field(default_factory=list)  # q(x), exprs in x0..
    origin: list = field(default_factory=list)  # o_q, exprs in q0..
    factors: list = field(default_factory=list)  # u_x = prod exp(hat(factor)), each lie_dim exprs in x
    stabilizer: Sampler | None = None
    haar: Sampler | None = None
    haar_reason: str | None = None
    test_points: list = field(default_factory=list)
    verified: dict = field(default_factory=dict)

    @property
    def available(self) -> bool:
        return self.kind != "none" and self.stabilizer is not None and self.stabilizer.reason is None

    @property
    def q_dim(self) -> int:
        return len(self.orbit)


def _translation_plan(spec, alg) -> LiftPlan | None:
    """Automatic lifts: all translations (one orbit) or a pure translation / trivial group."""
    d, lie = spec.space_dim, len(spec.generators)
    xs = sympy.Matrix(_xsyms(d))
    if lie == 0:
        qs = _qsyms(d)
        return LiftPlan("translation-subspace", orbit=list(xs), origin=list(qs), factors=[])
    if spec.action != "affine":
        return None
    T = sympy.Matrix.hstack(*[alg.translation.diff(c) for c in alg.coords])  # (m, lie)
    L = sympy.Matrix.hstack(*[alg.linear_generic.diff(c).reshape(d * d, 1) for c in alg.coords])  # (m^2, lie)
    K = sympy.Matrix.hstack(*L.nullspace()) if L.nullspace() else sympy.zeros(lie, 0)
    if K.shape[1] and (T * K).rank() == d:
        TK = T * K
        A = K * TK.T * (TK * TK.T).inv()  # (lie, m): B(A x) = 0, t(A x) = x
        return LiftPlan("translations", orbit=[], origin=[sympy.Integer(0)] * d,
                        factors=[list(sympy.expand(A * xs))])
    if all(v == 0 for v in L):
        perp = T.T.nullspace()  # rows of C span the complement of the translations
        C = _rref_basis(perp, d).T if perp else sympy.zeros(0, d)
        qs = sympy.Matrix(_qsyms(C.shape[0]))
        E = C.T * (C * C.T).inv() if C.shape[0] else sympy.zeros(d, 0)
        P = sympy.eye(d) - E * C
        A = (T.T * T).inv() * T.T * P
        return LiftPlan("translation-subspace", orbit=list(C * xs), origin=list(sympy.expand(E * qs)),
                        factors=[list(sympy.expand(A * xs))])
    return None


def _verify_orbit(spec, orbit) -> str:
    """Try to prove infinitesimal invariance of q symbolically: dq . (G x) = 0 for every generator."""
    if not orbit:
        return "one orbit (nothing to check)"
    xs = _xsyms(spec.space_dim)
    for gname, G in zip(spec.generator_names, spec.generators):
        v = _vector_field(spec, G, xs)
        for k, q in enumerate(orbit):
            r = sum((sympy.diff(q, x) * vx for x, vx in zip(xs, v)), sympy.Integer(0))
            r = r.replace(lambda e: isinstance(e, sympy.DiracDelta), lambda e: sympy.Integer(0))
            if r == 0:
                continue
            if sympy.count_ops(r) > 300:
                return "not proved symbolically (expression too large); checked numerically"
            r = sympy.simplify(r)
            if r != 0:
                return (f"not proved symbolically (d q{k} along {gname} simplifies to {sympy.sstr(r)[:80]}); "
                        "checked numerically")
    return "proved symbolically (dq . G x = 0 for every generator)"


def derive_lift(spec, alg, seed: int = 0) -> LiftPlan:
    """Derive the lift of `spec` (raises SpecError for an invalid `lift:` block)."""
    block = parse_lift_block(spec)
    if "orbit" in block:
        plan = LiftPlan("declared", orbit=block["orbit"], origin=block["origin"])
        qsub = dict(zip(_qsyms(len(plan.orbit)), plan.orbit))
        plan.factors = [[c.subs(qsub, simultaneous=True) for c in fac] for fac in block["section"]]
    else:
        plan = _translation_plan(spec, alg) or LiftPlan(
            "none", reason=(f"{spec.name} does not contain all translations of R^{spec.space_dim}, so its orbits "
                            "cannot be derived automatically: add a `lift:` block (orbit, origin, section) to "
                            f"{spec.path} (see the README section 'The lift: block')"))
    plan.test_points = block.get("test_points", [])
    window = block.get("window")
    if plan.kind != "none":
        try:
            basis = stabilizer_basis(spec, plan.orbit, plan.origin, seed)
        except ValueError as err:
            raise SpecError(spec.path, "lift.origin", str(err)) from None
        plan.stabilizer = derive_sampler(spec, alg, basis, window, "stabilizer", seed)
        if plan.stabilizer.reason:
            plan.reason = f"cannot lift: {plan.stabilizer.reason}"
        plan.verified = {
            "orbit": _verify_orbit(spec, plan.orbit),
            "stabilizer": "exact nullspace at three random orbits",
            "section": "checked numerically (groupgen check)",
        }
    elif window:
        raise SpecError(spec.path, "lift.window", "a window needs a lift: declare orbit, origin and section too")
    lie = len(spec.generators)
    try:
        haar = derive_sampler(spec, alg, sympy.eye(lie), None, "group", seed) if lie else None
    except SpecError:
        haar = None
    if haar is not None and haar.compact and haar.reason is None:
        plan.haar = haar
    else:
        plan.haar_reason = (f"{spec.name} is not compact (no invariant positive-definite form, or it moves every "
                            "point), so it has no Haar probability measure; sample_stabilizer() samples the "
                            "stabilizer" if lie else f"{spec.name} is the trivial group")
    return plan


# --------------------------------------------------------------------------------------------
# emission
# --------------------------------------------------------------------------------------------


def _used(exprs, prefix: str) -> list[int]:
    idx = set()
    for e in exprs:
        for s in sympy.sympify(e).free_symbols:
            if str(s).startswith(prefix) and str(s)[len(prefix):].isdigit():
                idx.add(int(str(s)[len(prefix):]))
    return sorted(idx)


def _literal(rows) -> str:
    return "[" + ", ".join("[" + ", ".join(repr(float(v)) for v in r) + "]" for r in rows) + "]"


def _sampler_context(spec, s: Sampler | None, prefix: str) -> dict | None:
    if s is None:
        return None
    h = s.dim
    ctx = {
        "prefix": prefix,
        "dim": h,
        "names": s.names(spec),
        "basis": _literal([list(s.basis[:, j]) for j in range(h)]),
        "box": "(" + ", ".join(repr(v) for v in s.box) + ("," if len(s.box) == 1 else "") + ")",
        "window": "[" + ", ".join(f"({i}, {w!r})" for i, w in sorted(s.window.items())) + "]",
        "window_doc": ", ".join(f"|{spec.generator_names[i]}| <= {w:g}" for i, w in sorted(s.window.items())) or "none",
        "compact": s.compact,
        "density": s.density,
        "delta": code(s.delta) if s.delta is not None else None,
        "delta_sym": sympy.sstr(s.delta) if s.delta is not None else "",
        "b_used": _used([s.delta], "b") if s.delta is not None else [],
        "k": s.k,
        "ad": "[" + ", ".join(_literal(M.tolist()) for M in s.ad) + "]" if s.ad else "None",
        "density_max": repr(float(s.density_max)),
        "reason": repr(s.reason),
    }
    return ctx


def _has_rotation(alg) -> bool:
    """Whether some element has a rotation-type eigenvalue pair (always assumed for numeric fallbacks)."""
    if alg.spec.numeric_fallback:
        return True
    return any(b.k and b.delta != 0 and b.sign in ("neg", "both") for b in alg.blocks)


def lift_context(spec, alg) -> dict:
    """Template context for templates/lift.py.j2 (raises SpecError for an invalid `lift:` block)."""
    plan = derive_lift(spec, alg)
    d, lie = spec.space_dim, len(spec.generators)
    ctx = {
        "available": plan.available,
        "kind": plan.kind,
        "reason": repr(plan.reason),
        "q_dim": plan.q_dim,
        "orbit": [code(e, nan_safe=True) for e in plan.orbit],
        "orbit_sym": [sympy.sstr(e) for e in plan.orbit],
        "origin": [code(e, nan_safe=True) for e in plan.origin],
        "origin_sym": [sympy.sstr(e) for e in plan.origin],
        "factors": [[code(c, nan_safe=True) for c in fac] for fac in plan.factors],
        "factors_sym": [", ".join(f"{spec.generator_names[i]}: {sympy.sstr(c)}" for i, c in enumerate(fac) if c != 0)
                        or "identity" for fac in plan.factors],
        "x_used_orbit": _used(plan.orbit, "x"),
        "q_used": _used(plan.origin, "q"),
        "x_used_section": _used([c for fac in plan.factors for c in fac], "x"),
        "stabilizer": _sampler_context(spec, plan.stabilizer, "STABILIZER"),
        "haar": _sampler_context(spec, plan.haar, "HAAR"),
        "haar_reason": repr(plan.haar_reason),
        "has_rotation": _has_rotation(alg),
        "test_points": repr(plan.test_points),
        "verified": repr(dict(sorted(plan.verified.items()))),
        "lie": lie,
        "d": d,
    }
    return ctx


# --------------------------------------------------------------------------------------------
# numerical checks for `groupgen check`
# --------------------------------------------------------------------------------------------

# worst error relative to (1 + |value|)
CHECK_TOLERANCES = {"float64": {"orbit": 1e-9, "section": 1e-9, "stabilizer": 1e-9},
                    "float32": {"orbit": 2e-4, "section": 2e-4, "stabilizer": 2e-5}}


def special_points(G, dtype):
    """Points where sections are typically singular: 0, +-axes (radius 1 and 1e-3), tiny
    perturbations of them, and the spec's test_points.  (P, d)."""
    import torch

    d = G.space_dim
    eye = torch.eye(d, dtype=torch.float64)
    pts = [torch.zeros(1, d, dtype=torch.float64)]
    eps = 1e-7 if dtype == torch.float64 else 1e-3
    for r in (1.0, 1e-3, 10.0):
        pts += [r * eye, -r * eye, r * (eye + eps * eye.roll(1, 0)), -r * (eye - eps * eye.roll(1, 0))]
    extra = (G.LIFT or {}).get("test_points") or []
    if extra:
        pts.append(torch.tensor(extra, dtype=torch.float64))
    return torch.cat(pts).to(dtype)


def lift_check_rows(G, samples: int = 200, seed: int = 0) -> list[tuple[str, float, float]]:
    """Numerical checks of a generated group's lift, as (name, worst error, tolerance) rows.

    For float64 and float32, with random x (scales 1e-2..1e2) and g = exp(a), a ~ N(0, 1):
    q(g.x) == q(x); u_x . o_q(x) == x; both again at special points (0, axes, their tiny
    perturbations, the spec's test_points) plus finiteness of the whole lift there; and
    h . o_q == o_q for stabilizer samples h.  Errors are max |difference| / (1 + |value|).
    Returns [] when the group cannot lift (G.LIFT['reason'] says why).
    """
    import torch

    data = G.LIFT
    if not data or not data.get("available"):
        return []
    rows = []
    gen = torch.Generator().manual_seed(seed)
    note = data.get("verified", {}).get("orbit", "")
    proved = " [proved symbolically]" if note.startswith("proved") else ""

    def rel(a, b):
        if a.numel() == 0:
            return 0.0
        err = (a.double() - b.double()).abs().amax(-1) / (1.0 + b.double().abs().amax(-1))
        err = torch.where(torch.isfinite(err), err, torch.full_like(err, math.inf))
        return float(err.max())

    for dtype in (torch.float64, torch.float32):
        tag = str(dtype).replace("torch.", "")
        tol = CHECK_TOLERANCES[tag]
        d = G.space_dim
        scale = 10.0 ** (4 * torch.rand(samples, 1, generator=gen, dtype=torch.float64) - 2)
        x = (torch.randn(samples, d, generator=gen, dtype=torch.float64) * scale).to(dtype)
        a = torch.randn(samples, G.lie_dim, generator=gen, dtype=torch.float64)
        g = G.exp(a).to(dtype)
        q = G.orbit(x)
        rows.append((f"lift: q(g.x) == q(x){proved} ({tag})", rel(G.orbit(G.act(g, x)), q), tol["orbit"]))
        ux = G.section(x)
        rows.append((f"lift: u_x . o_q(x) == x ({tag})", rel(G.act(ux, G.origin(q)), x), tol["section"]))
        sp = special_points(G, dtype)
        sq = G.orbit(sp)
        gs = G.exp(a[: 1].expand(len(sp), -1)).to(dtype)
        worst = max(rel(G.orbit(G.act(gs, sp)), sq), rel(G.act(G.section(sp), G.origin(sq)), sp))
        rows.append((f"lift: both at 0, axes, test_points ({tag})", worst, max(tol["orbit"], tol["section"])))
        mask = torch.ones(1, len(sp), dtype=torch.bool)
        lifted = G.lift(sp[None], torch.zeros(1, len(sp), 1, dtype=dtype), mask, generator=gen)
        bad = sum(float((~torch.isfinite(t)).sum()) for t in (lifted.g, lifted.a, lifted.q, lifted.g_inv))
        rows.append((f"lift: finite lift at special points ({tag})", bad, 0.0))
        if G.stabilizer_dim:
            h = G.sample_stabilizer((samples,), generator=gen, dtype=dtype)
            o = G.origin(q)
            rows.append((f"lift: stabilizer samples fix o_q ({tag})", rel(G.act(h, o), o), tol["stabilizer"]))
    # Haar samples are exact only if exp maps log's principal domain onto H exactly once:
    # log of elements exp(a), a far outside the domain, must land back in the subalgebra.
    for key, what in (("stabilizer", "stabilizer"), ("haar", "group")):
        s = data.get(key)
        if s and s["dim"] and s["compact"]:
            S = torch.tensor(s["basis"], dtype=torch.float64)  # (h, lie)
            a = 3.0 * torch.randn(samples, s["dim"], generator=gen, dtype=torch.float64) @ S
            g = G.exp(a)
            back = G.log(g)
            inside = back - torch.linalg.lstsq(S.T, back.T).solution.T @ S
            worst = max(rel(G.exp(back).flatten(-2), g.flatten(-2)), rel(inside, torch.zeros_like(inside)),
                        float((G.extent(back) - math.pi).clamp_min(0).max()))
            rows.append((f"haar: exp covers the {what} once from log's domain (float64)", worst,
                         CHECK_TOLERANCES["float64"]["stabilizer"]))
    return rows
