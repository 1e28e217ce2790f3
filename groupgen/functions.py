"""Univariate analytic functions that closed-form exp/log are built from, and their
Hermite interpolation coefficients.

Every closed form in this compiler is a polynomial in a matrix whose coefficients are
*divided differences* of one of the functions below over two eigenvalue nodes: a fixed
node at y = 0 (multiplicity p) and a variable node y = d (multiplicity q).  For
``F(y) = sum_m f_m y^m`` the Hermite interpolant on these nodes is

    r(y) = T_p(y) + y^p * sum_{j<q} h_j(d) (y - d)^j,      T_p = sum_{m<p} f_m y^m,
    h_j(d) = H^{(j)}(d) / j!,   H(y) = (F(y) - T_p(y)) / y^p.

``h_j`` is analytic in d but its closed form has a removable singularity at d = 0.  We
derive, with sympy, (a) the exact Taylor series of h_j in d (rational coefficients) and
(b) its closed form on each side of 0 (d < 0: trigonometric, d > 0: hyperbolic), where
d is parametrised by an auxiliary variable t (for example d = -t^2 for rotations).  The
emitted code evaluates the series for |d| < tau and the closed form otherwise, with
gradient-safe masking.

Functions (u = x^2 for an eigenvalue pair +-x of the shifted generic element):

=====  ===============================  ======================  =====================
name   F(y)                             d < 0 (y = -t^2 ...)     d > 0
=====  ===============================  ======================  =====================
C      cosh(sqrt(u))                    cos t                    cosh t
S      sinh(sqrt(u)) / sqrt(u)          sin t / t                sinh t / t
D      (cosh(sqrt(u)) - 1) / u          (1 - cos t) / t^2        (cosh t - 1) / t^2
E      (x/2) coth(x/2), u = x^2         (t/2) cot(t/2)           (t/2) coth(t/2)
G      arccosh(c)/sqrt(c^2-1), y = c-1  t / sin t, y = cos t - 1  t / sinh t, y = cosh t - 1
=====  ===============================  ======================  =====================

exp(X) = C(X^2) + X S(X^2);  (exp(X) - I)/X = S(X^2) + X D(X^2);
X/(exp(X) - I) = E(X^2) - X/2;  X = sinh(X) G(cosh X).

`coefficient_name` names each h_j after its closed form (sin_over_t, one_minus_cos_over_t2, ...), so
the emitted code says what it computes; one function serves every interpolation with the same series.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from math import comb, factorial

import sympy

t = sympy.Symbol("t", positive=True)

# Series in s = t^2 (exact Fractions): F(s) and the node variable y(s) on the d > 0 side.
N_SERIES = 48


def _recip(series: list[Fraction]) -> list[Fraction]:
    out = [Fraction(0)] * len(series)
    out[0] = 1 / series[0]
    for n in range(1, len(series)):
        out[n] = -sum(series[k] * out[n - k] for k in range(1, n + 1)) / series[0]
    return out


def _series_in_s(name: str) -> tuple[list[Fraction], list[Fraction]]:
    n = N_SERIES
    ident = [Fraction(0), Fraction(1)] + [Fraction(0)] * (n - 2)
    if name == "C":
        return [Fraction(1, factorial(2 * m)) for m in range(n)], ident
    if name == "S":
        return [Fraction(1, factorial(2 * m + 1)) for m in range(n)], ident
    if name == "D":
        return [Fraction(1, factorial(2 * m + 2)) for m in range(n)], ident
    if name == "E":
        coeffs = []
        for m in range(n):
            b = sympy.bernoulli(2 * m) if m > 0 else sympy.Integer(1)
            coeffs.append(Fraction(int(b.p), int(b.q)) / factorial(2 * m))
        return coeffs, ident
    if name == "G":
        sinc = [Fraction(1, factorial(2 * m + 1)) for m in range(n)]
        y = [Fraction(0)] + [Fraction(1, factorial(2 * m)) for m in range(1, n)]
        return _recip(sinc), y
    raise KeyError(name)


@lru_cache(maxsize=None)
def taylor_in_y(name: str) -> tuple[Fraction, ...]:
    """Exact Taylor coefficients f_m of F in its node variable y (F = sum f_m y^m)."""
    fs, ys = _series_in_s(name)
    n = len(fs)
    # powers of y(s) as series in s; y = y1 s + ..., y1 != 0, so F = sum f_m y^m is triangular.
    powers = [[Fraction(1)] + [Fraction(0)] * (n - 1)]
    for _ in range(1, n):
        prev = powers[-1]
        powers.append([sum(prev[k] * ys[i - k] for k in range(i + 1)) for i in range(n)])
    f = []
    for m in range(n):
        rest = fs[m] - sum(f[j] * powers[j][m] for j in range(m))
        f.append(rest / powers[m][m])
    return tuple(f)


@dataclass(frozen=True)
class Branch:
    """One side of the removable singularity: y = node(t), F = value(t).

    `kind` names the node for the runtime (`lieconv_runtime.group_base.piecewise`, which computes t
    from y): "square" (y = -t^2 / t^2) or "cosine" (y = cos t - 1 / cosh t - 1)."""

    node: sympy.Expr  # y as a function of t
    kind: str  # "square" | "cosine"
    value: sympy.Expr  # F as a function of t


BRANCHES: dict[str, dict[str, Branch]] = {
    "C": {
        "neg": Branch(-t**2, "square", sympy.cos(t)),
        "pos": Branch(t**2, "square", sympy.cosh(t)),
    },
    "S": {
        "neg": Branch(-t**2, "square", sympy.sin(t) / t),
        "pos": Branch(t**2, "square", sympy.sinh(t) / t),
    },
    "D": {
        "neg": Branch(-t**2, "square", (1 - sympy.cos(t)) / t**2),
        "pos": Branch(t**2, "square", (sympy.cosh(t) - 1) / t**2),
    },
    "E": {
        "neg": Branch(-t**2, "square", (t / 2) * sympy.cos(t / 2) / sympy.sin(t / 2)),
        "pos": Branch(t**2, "square", (t / 2) * sympy.cosh(t / 2) / sympy.sinh(t / 2)),
    },
    "G": {
        "neg": Branch(sympy.cos(t) - 1, "cosine", t / sympy.sin(t)),
        "pos": Branch(sympy.cosh(t) - 1, "cosine", t / sympy.sinh(t)),
    },
}

DESCRIPTIONS = {
    "C": "cosh(sqrt(u))",
    "S": "sinh(sqrt(u))/sqrt(u)",
    "D": "(cosh(sqrt(u)) - 1)/u",
    "E": "(x/2)coth(x/2) with u = x^2",
    "G": "arccosh(c)/sqrt(c^2 - 1) with y = c - 1",
}

# The series branch is used for |d| < TAU; the closed forms lose at most ~eps/TAU^(p+j)
# to cancellation there, and the series is truncated where its terms fall below 1e-20.
TAU = 0.25


@dataclass(frozen=True)
class HermiteCoefficient:
    """h_j(d) for function `name` with p fixed nodes at 0: series and closed forms."""

    name: str
    p: int
    j: int
    series: tuple[Fraction, ...]  # h_j(d) = sum_k series[k] d^k for |d| < TAU
    closed: dict[str, sympy.Expr]  # branch -> expression in t


def _series_of_hj(name: str, p: int, j: int) -> tuple[Fraction, ...]:
    """Taylor series of h_j(d), truncated where the tail is below 1e-20 at |d| = TAU."""
    f = taylor_in_y(name)
    # H(y) = sum_m f_{m+p} y^m, so h_j(d) = sum_{m>=j} C(m, j) f_{m+p} d^(m-j)
    out = [comb(m, j) * f[m + p] for m in range(j, len(f) - p)]
    size = [abs(float(c)) * TAU**k for k, c in enumerate(out)]
    keep = max(k for k, s in enumerate(size) if s >= 1e-20) + 1 if any(s >= 1e-20 for s in size) else 1
    return tuple(out[:keep])


@lru_cache(maxsize=None)
def hermite_coefficient(name: str, p: int, j: int, branches: tuple[str, ...]) -> HermiteCoefficient:
    """Derive h_j for F = `name` with p nodes at 0 (sympy; closed forms per branch)."""
    f = taylor_in_y(name)
    closed = {}
    for side in branches:
        br = BRANCHES[name][side]
        y = br.node
        taylor = sum((sympy.Rational(f[m].numerator, f[m].denominator) * y**m for m in range(p)), sympy.Integer(0))
        h = (br.value - taylor) / y**p
        dy_dt = sympy.diff(y, t)
        for k in range(1, j + 1):
            h = sympy.diff(h, t) / dy_dt / k
        closed[side] = sympy.simplify(h) if j == 0 else sympy.together(h)
    return HermiteCoefficient(name, p, j, _series_of_hj(name, p, j), closed)


# --------------------------------------------------------------------------------------------
# names that say what a coefficient function is
# --------------------------------------------------------------------------------------------

MAX_NAME = 44
_SMALL = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 8: "eight", 12: "twelve"}
_RECIPROCAL = {sympy.tan: "cot", sympy.tanh: "coth"}
_FAMILY = {"C": "cosh_sqrt", "S": "sinhc_sqrt", "D": "coshc_sqrt", "E": "half_coth_half", "G": "arccoshc"}


def _number(n: sympy.Rational) -> str:
    if n == sympy.Rational(1, 2):
        return "half"
    if n.is_Integer:
        return _SMALL.get(int(n), f"n{int(n)}")
    return f"{_number(sympy.Integer(n.p))}_over_{_number(sympy.Integer(n.q))}"


def _terms(expr: sympy.Expr) -> str:
    """Tokens of an expression in t: sums with _plus_/_minus_, products joined by _, quotients _over_."""
    if expr == t:
        return "t"
    if expr.is_Rational:
        return ("minus_" if expr < 0 else "") + _number(abs(expr))
    if expr.is_Add:
        terms = list(expr.as_ordered_terms())
        terms = [x for x in terms if not x.could_extract_minus_sign()] + [x for x in terms if x.could_extract_minus_sign()]
        out = ""
        for i, term in enumerate(terms):
            neg = term.could_extract_minus_sign()
            body = _terms(-term if neg else term)
            out += (("minus_" if neg else "") if i == 0 else ("_minus_" if neg else "_plus_")) + body
        return out
    if expr.is_Pow and expr.exp.is_Integer and expr.exp > 0:
        base = _terms(expr.base)
        return f"{base}{int(expr.exp)}" if expr.base == t else f"{base}_pow{int(expr.exp)}"
    if expr.is_Mul or (expr.is_Pow and expr.exp.is_Integer and expr.exp < 0):
        coeff, rest = expr.as_coeff_Mul()
        factors = sympy.Mul.make_args(rest)
        top = [f for f in factors if not (f.is_Pow and f.exp.is_Integer and f.exp < 0)]
        bottom = [f for f in factors if f.is_Pow and f.exp.is_Integer and f.exp < 0]
        if coeff != 1 and len(top) == 1 and top[0].is_Add:  # c (u - v) / w -> (c u - c v) / w
            top, coeff = [sympy.Add(*[coeff * x for x in top[0].args])], sympy.Integer(1)
        if coeff < 0:
            return "minus_" + _terms(-expr)
        num, den = [], []
        for f in top:
            num.append(_terms(f))
        for f in bottom:
            base, k = f.base, -int(f.exp)
            if isinstance(base, tuple(_RECIPROCAL)) and k == 1:  # t / tan(t/2) -> t_cot_half_t
                num.append(_RECIPROCAL[type(base)] + _terms(base)[len(type(base).__name__):])
            else:
                den.append(_terms(base**k))
        if coeff == sympy.Rational(1, 2):
            num.insert(0, "half")
        else:
            if coeff.q != 1:
                den.insert(0, _number(sympy.Integer(coeff.q)))
            if coeff.p != 1:
                num.insert(0, _number(sympy.Integer(coeff.p)))
        return ("_".join(num) or "one") + ("_over_" + "_".join(den) if den else "")
    if isinstance(expr, sympy.Function) and len(expr.args) == 1:
        name = type(expr).__name__
        return name if expr.args[0] == t else f"{name}_{_terms(expr.args[0])}"
    raise ValueError(f"no name for {expr}")


def coefficient_name(closed: dict[str, sympy.Expr], fallback: str) -> str:
    """A deterministic Python identifier that says what a coefficient function is, from its closed form
    in t (the trigonometric one when there is one: sin_over_t, one_minus_cos_over_t2,
    t_minus_sin_over_t3, half_t_cot_half_t, ...); `fallback` when that would be longer than MAX_NAME."""
    expr = closed["neg"] if "neg" in closed else closed["pos"]
    try:
        name = _terms(expr)
    except ValueError:
        return fallback
    if "_" not in name:  # a bare function of t: cos -> cos_t
        name += "_t"
    if len(name) > MAX_NAME or not name.isidentifier():
        return fallback
    return name


def fallback_name(name: str, p: int, j: int) -> str:
    """The name of h_j for F = `name` after p Taylor terms when its closed form is too long to spell."""
    return f"{_FAMILY[name]}_p{p}_h{j}"
