"""Symbolic structure of a Lie algebra given by generator matrices (pure sympy).

From a validated `GroupSpec` this module derives everything the closed forms need:

* the dual basis that implements ``vee`` (matrix -> coefficients),
* the *linear part* of the generic element (the whole matrix for a linear action, the
  upper-left block for an affine one),
* a constant decomposition of the linear part's space into blocks that every generator
  leaves invariant (generalised eigenspaces of the generic element, merged until each
  group of them is invariant), and, for every block,
* its *center* mu(a) = trace/size and the shifted element X = B - mu I, whose
  characteristic polynomial must be x^e (x^2 - delta(a))^k: one eigenvalue pair +-sqrt(delta)
  besides 0.  The minimal polynomial x^e' (x^2 - delta)^k' fixes the Hermite multiplicities.
  The sign of delta (always <= 0: rotation-like; >= 0: boost-like; or either) selects the
  trigonometric and/or hyperbolic closed forms.
* an invariant bilinear form of each block (X^T M + M X = 0), if one exists, for the
  closed-form inverse.

Anything outside this class raises `ClosedFormError` naming the step; a spec may then
ask for `numeric_fallback: true`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import sympy
from sympy.polys.matrices import DomainMatrix

from groupgen import steps


class ClosedFormError(Exception):
    """No closed form in the supported class; the message names the step."""


@dataclass
class Block:
    """One invariant block of the linear part (all sympy, exact)."""

    index: int
    size: int
    right: sympy.Matrix  # (m, size): columns span the block
    left: sympy.Matrix  # (size, m): rows of the dual basis (left @ right = I)
    generic: sympy.Matrix  # (size, size): left @ B(a) @ right
    mu: sympy.Expr  # center, linear in a
    delta: sympy.Expr  # node invariant (0 if none), quadratic in a
    e: int  # multiplicity of 0 in the minimal polynomial of X
    k: int  # multiplicity of (x^2 - delta) in the minimal polynomial
    alg_k: int  # multiplicity of (x^2 - delta) in the characteristic polynomial
    sign: str  # 'none', 'neg', 'pos', 'both'
    form: sympy.Matrix | None  # invariant bilinear form of the traceless part, or None
    charpoly_x: sympy.Expr = None

    @property
    def has_node(self) -> bool:
        return self.k > 0

    @property
    def branches(self) -> tuple[str, ...]:
        return {"none": (), "neg": ("neg",), "pos": ("pos",), "both": ("neg", "pos")}[self.sign]

    @property
    def is_identity_embedding(self) -> bool:
        return self.right == sympy.eye(self.right.shape[0])


@dataclass
class Algebra:
    spec: object
    coords: tuple[sympy.Symbol, ...]
    generic: sympy.Matrix  # hat(a), rep_dim x rep_dim
    dual: sympy.Matrix  # (lie_dim, rep_dim^2): vee(X) = dual @ vec(X)
    linear_dim: int  # m
    linear_generic: sympy.Matrix  # B(a), m x m
    translation: sympy.Matrix | None  # t(a), m x 1 (affine only)
    blocks: list[Block] = field(default_factory=list)
    abelian: bool = False

    @property
    def lie_dim(self) -> int:
        return len(self.coords)


def _generic(mats, coords, n):
    out = sympy.zeros(n, n)
    for c, g in zip(coords, mats):
        out += c * sympy.Matrix(g)
    return out


def _dual_basis(gens, n) -> sympy.Matrix:
    if not gens:
        return sympy.zeros(0, n * n)
    stack = sympy.Matrix([[g[i, j] for i in range(n) for j in range(n)] for g in gens])  # (d, n^2)
    gram = stack * stack.T
    return gram.inv() * stack  # least squares / exact on the span


def _extension(mats):
    algebraic = set()
    for m in mats:
        for x in m:
            for atom in sympy.Matrix([x]).atoms(sympy.Pow):
                if atom.exp.is_Rational and not atom.exp.is_Integer and atom.base.is_Rational:
                    algebraic.add(atom)
    return sorted(algebraic, key=sympy.default_sort_key)


def _random_point(coords, rng):
    return {c: sympy.Rational(rng.randint(-97, 97), rng.randint(5, 31)) for c in coords}


def _nullspace_basis(mat):
    ns = mat.nullspace()
    if not ns:
        return sympy.zeros(mat.shape[1], 0)
    return sympy.Matrix.hstack(*ns)


def _eval_poly_at_matrix(poly_expr, lam, mat):
    p = sympy.Poly(poly_expr, lam)
    out = sympy.zeros(*mat.shape)
    for (deg,), c in zip(p.monoms(), p.coeffs()):
        out += c * mat**deg
    return out


def _decompose(B, coords, m, ext, rng) -> list[tuple[sympy.Matrix, sympy.Matrix]]:
    """Constant invariant blocks: list of (right, left) pairs."""
    if m == 0:
        return []
    if all(x == 0 for x in B):
        return [(sympy.eye(m), sympy.eye(m))]
    lam = sympy.Symbol("lam")
    with steps.step("characteristic polynomial of the linear part", f"{m}x{m}"):
        cp = sympy.expand((lam * sympy.eye(m) - B).det(method="berkowitz"))
    with steps.step("factoring the characteristic polynomial", f"degree {m}"):
        _, factors = sympy.factor_list(cp, lam, *coords, extension=ext or None)
    point = _random_point(coords, rng)
    Bp = B.subs(point)
    spaces = []
    for f, mult in factors:
        if not f.has(lam):
            continue
        fp = sympy.expand(f.subs(point))
        ker = _nullspace_basis(_eval_poly_at_matrix(fp, lam, Bp) ** mult)
        spaces.append(ker)
    if sum(s.shape[1] for s in spaces) != m:
        return [(sympy.eye(m), sympy.eye(m))]
    full = sympy.Matrix.hstack(*spaces)
    if full.rank() != m:
        return [(sympy.eye(m), sympy.eye(m))]
    inv = full.inv()
    # connect two spaces when some generator maps one into the other
    gens = [B.diff(c) for c in coords]
    offsets = [0]
    for s in spaces:
        offsets.append(offsets[-1] + s.shape[1])
    parent = list(range(len(spaces)))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for g in gens:
        coords_img = inv * g * full
        for i in range(len(spaces)):
            for j in range(len(spaces)):
                if i != j:
                    sub = coords_img[offsets[j]:offsets[j + 1], offsets[i]:offsets[i + 1]]
                    if any(x != 0 for x in sub):
                        parent[find(i)] = find(j)
    groups: dict[int, list[int]] = {}
    for i in range(len(spaces)):
        groups.setdefault(find(i), []).append(i)
    if len(groups) == 1:
        return [(sympy.eye(m), sympy.eye(m))]
    blocks = []
    order = sorted(groups.values(), key=lambda idx: min(idx))
    for idx in order:
        right = sympy.Matrix.hstack(*[spaces[i] for i in idx])
        rows = [inv[offsets[i]:offsets[i + 1], :] for i in idx]
        left = sympy.Matrix.vstack(*rows)
        blocks.append((right, left))
    return blocks


def _quadratic_sign(delta, coords) -> str:
    if delta == 0:
        return "none"
    poly = sympy.Poly(delta, *coords)
    if poly.total_degree() != 2 or not poly.is_homogeneous:
        return "both"
    gram = sympy.hessian(delta, coords) / 2
    eig = [complex(v).real for v in sympy.Matrix(gram).evalf().eigenvals(multiple=True)]
    tol = 1e-12 * max(1.0, max(abs(v) for v in eig))
    if all(v <= tol for v in eig):
        return "neg"
    if all(v >= -tol for v in eig):
        return "pos"
    return "both"


def _invariant_form(X, coords, size):
    """A nondegenerate M with X^T M + M X = 0 for the whole traceless family, or None.

    Symmetric forms (orthogonal / Lorentz type) are preferred, then antisymmetric ones
    (symplectic type): for those, S -> M^-1 S^T M is an involution, which the near-cut
    log relies on.
    """
    for kind in ("symmetric", "antisymmetric"):
        syms = [sympy.Symbol(f"m_{i}_{j}") for i in range(size)
                for j in range(i if kind == "symmetric" else i + 1, size)]
        if not syms:
            continue
        Mg = _solve_form(X, coords, size, syms, kind)
        free = sorted(Mg.free_symbols, key=str)
        if not free:
            continue
        for trial in range(8):
            rng = random.Random(1000 + trial)
            subs = {s: sympy.Integer(1 if trial == 0 else rng.randint(-3, 3)) for s in free}
            cand = Mg.xreplace(subs)
            if DomainMatrix.from_Matrix(cand).det() != 0:
                return cand
    return None


def _solve_form(X, coords, size: int, syms: list, kind: str) -> sympy.Matrix:
    """The general solution M(free syms) of X_c^T M + M X_c = 0 for every generator X_c, M symmetric
    or antisymmetric with unknowns `syms` (m_i_j, i <= j): one sparse exact rref, so a 50 x 50 block
    takes seconds (sympy.linsolve on 1275 symbols takes minutes).  The free unknowns are the rref's
    non-pivot columns, each other unknown a combination of them."""
    col = {(i, j): k for k, (i, j) in enumerate((i, j) for i in range(size)
                                                   for j in range(i if kind == "symmetric" else i + 1, size))}

    def entry(i, j):  # M[i, j] as (column, sign) or None on the zero diagonal of an antisymmetric form
        if i == j and kind != "symmetric":
            return None
        return (col[(i, j)], 1) if i <= j else (col[(j, i)], 1 if kind == "symmetric" else -1)

    rows: dict[int, dict[int, sympy.Expr]] = {}
    for c in coords:
        Xi = X.diff(c)
        nz = [(r, q, Xi[r, q]) for r in range(size) for q in range(size) if Xi[r, q] != 0]
        eqs: dict[tuple, dict[int, sympy.Expr]] = {}
        for r, p, v in nz:  # (X^T M)[p, q] = sum_r X[r, p] M[r, q]
            for q in range(size):
                e = entry(r, q)
                if e is not None:
                    row = eqs.setdefault((p, q), {})
                    row[e[0]] = row.get(e[0], 0) + e[1] * v
        for r, q, v in nz:  # (M X)[p, q] = sum_r M[p, r] X[r, q]
            for p in range(size):
                e = entry(p, r)
                if e is not None:
                    row = eqs.setdefault((p, q), {})
                    row[e[0]] = row.get(e[0], 0) + e[1] * v
        for row in eqs.values():
            row = {k: v for k, v in row.items() if v != 0}
            if row:
                rows[len(rows)] = row
    n = len(syms)
    M = sympy.zeros(size, size)
    if rows:
        A = DomainMatrix.from_dict_sympy(len(rows), n, rows).to_field()
        R, pivots = A.rref()
        R = R.to_Matrix()
    else:
        R, pivots = sympy.zeros(0, n), ()
    value = {}
    free = [k for k in range(n) if k not in set(pivots)]
    for r, pc in enumerate(pivots):
        value[pc] = -sum((R[r, f] * syms[f] for f in free if R[r, f] != 0), sympy.Integer(0))
    for f in free:
        value[f] = syms[f]
    for (i, j), k in col.items():
        M[i, j] = value[k]
        M[j, i] = value[k] if kind == "symmetric" else -value[k]
    return M


def _block_structure(index, right, left, B, coords, ext) -> Block:
    Bf = sympy.expand(left * B * right)
    size = Bf.shape[0]
    mu = sympy.expand(Bf.trace() / size)
    X = sympy.expand(Bf - mu * sympy.eye(size))
    x = sympy.Symbol("x")
    cp = sympy.expand((x * sympy.eye(size) - X).det(method="berkowitz"))
    if sympy.expand(cp.subs(x, -x) - (-1) ** size * cp) != 0:
        raise ClosedFormError(
            f"exp (block {index}): the eigenvalues of the generic element are not symmetric about their "
            f"mean (characteristic polynomial {sympy.factor(cp)}); no closed form of the supported kind"
        )
    poly = sympy.Poly(cp, x)
    e_alg = min(deg for (deg,), c in zip(poly.monoms(), poly.coeffs()) if c != 0)
    u = sympy.Symbol("u")
    Q = sympy.expand(sympy.cancel(cp / x**e_alg).subs(x, sympy.sqrt(u)))
    delta = sympy.Integer(0)
    alg_k = 0
    if sympy.Poly(Q, u).degree() > 0:
        _, facs = sympy.factor_list(Q, u, *coords, extension=ext or None)
        lin = [(f, mlt) for f, mlt in facs if f.has(u)]
        if len(lin) != 1 or sympy.Poly(lin[0][0], u).degree() != 1:
            raise ClosedFormError(
                f"exp (block {index}): the squared eigenvalues solve {sympy.factor(Q)} = 0 in u, which has "
                f"more than one non-zero root that is not constant-separable; no closed form of the supported kind "
                f"(set numeric_fallback: true)"
            )
        f, alg_k = lin[0]
        fp = sympy.Poly(f, u)
        delta = sympy.expand(-fp.coeff_monomial(1) / fp.coeff_monomial(u))
        if not delta.is_polynomial(*coords):
            raise ClosedFormError(f"exp (block {index}): eigenvalue invariant {delta} is not polynomial")
    # minimal polynomial exponents
    I = sympy.eye(size)
    U = sympy.expand(X * X)
    node = sympy.expand(U - delta * I) if alg_k else None

    def vanishes(e, k):
        M = X**e if e else sympy.eye(size)
        if k:
            M = M * node**k
        return all(sympy.expand(v) == 0 for v in M)

    best = (e_alg, alg_k)
    for kk in range(0 if alg_k == 0 else 1, alg_k + 1):
        done = False
        for ee in range(0, e_alg + 1):
            if vanishes(ee, kk):
                best = (ee, kk)
                done = True
                break
        if done:
            break
    e, k = best
    sign = _quadratic_sign(delta, coords) if k else "none"
    with steps.step("invariant bilinear form", f"{size}x{size}"):
        form = _invariant_form(X, coords, size) if size > 1 or mu != 0 else None
    return Block(index, size, right, left, Bf, mu, delta, e, k, alg_k, sign, form, cp)


def analyze(spec, seed: int = 0) -> Algebra:
    """Derive the block structure of `spec` (raises ClosedFormError outside the class)."""
    n = spec.rep_dim
    coords = tuple(sympy.Symbol(f"a{i}", real=True) for i in range(len(spec.generators)))
    A = _generic(spec.generators, coords, n)
    dual = _dual_basis(spec.generators, n)
    if spec.action == "affine":
        m = n - 1
        B = A[:m, :m]
        t_vec = A[:m, m]
    else:
        m = n
        B = A
        t_vec = None
    abelian = all(c == 0 for row in spec.structure_constants for col in row for c in col)
    alg = Algebra(spec, coords, A, dual, m, B, t_vec, abelian=abelian)
    if spec.numeric_fallback:
        return alg
    ext = _extension(spec.generators)
    rng = random.Random(seed)
    with steps.step("invariant blocks", f"{m}x{m}"):
        parts = _decompose(B, coords, m, ext, rng)
    for idx, (right, left) in enumerate(parts):
        with steps.step(f"block {idx} structure", f"{right.shape[1]}x{right.shape[1]}"):
            alg.blocks.append(_block_structure(idx, right, left, B, coords, ext))
    return alg
