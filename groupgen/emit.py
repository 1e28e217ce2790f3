"""Turn a spec's derived structure into a torch module (jinja2 template + printer).

`render(spec)` returns the module source; `generate(paths, out_dir)` writes one module
per spec.  Output is deterministic: the same spec always gives the same bytes.

The template (`templates/group_module.py.j2`) says which blocks, constants and calls a module
has; the algorithms live in `lieconv_runtime.group_base`.  A module holds only what it uses: its
imports are read off the rendered code, constants are emitted only for the code that needs them,
and each coefficient function is emitted once however many interpolations need it.
"""

from __future__ import annotations

import ast
import functools
import math
import textwrap
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import jinja2
import sympy

from groupgen import steps
from groupgen.algebra import Algebra, Block, analyze
from groupgen.functions import (BRANCHES, DESCRIPTIONS, TAU, coefficient_name, fallback_name, hermite_coefficient,
                                taylor_in_y)
from groupgen.lift import lift_context
from groupgen.printer import code, matrix_literal

TEMPLATE_DIR = Path(__file__).parent / "templates"


@functools.lru_cache(maxsize=None)
def runtime_helpers() -> frozenset:
    """The names `lieconv_runtime.group_base` exports (its ``__all__``), read from its source: the
    compiler emits imports of them without importing the runtime (and torch)."""
    import importlib.util

    spec = importlib.util.find_spec("lieconv_runtime")  # finds the package without importing it
    source = (Path(spec.submodule_search_locations[0]) / "group_base.py").read_text(encoding="utf-8")
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets):
            return frozenset(ast.literal_eval(node.value))
    raise RuntimeError("lieconv_runtime/group_base.py has no __all__")


_IMPORTS = "# groupgen: runtime imports"  # replaced by the imports the rendered module uses


def _env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)),
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )


def _floats(seq) -> str:
    return "(" + ", ".join(repr(float(x)) for x in seq) + ("," if len(seq) == 1 else "") + ")"


def _nested(values) -> str:
    if isinstance(values, (list, tuple)):
        return "[" + ", ".join(_nested(v) for v in values) + "]"
    return repr(float(values))


def _matrices(mats) -> str:
    return "[" + ", ".join(matrix_literal(g) for g in mats) + "]"


@dataclass
class CoefficientFn:
    """One scalar coefficient function h(d) of a module: its exact series and closed forms (one per
    side of d = 0), and the interpolations (roles) that use it."""

    kind: str  # the node: "square" (d = -+t^2) or "cosine" (d = cos t - 1 / cosh t - 1)
    series: tuple[Fraction, ...]
    closed: dict = field(default_factory=dict)  # side -> sympy expression in t
    roles: list = field(default_factory=list)
    fallback: str = ""
    name: str = ""

    @property
    def series_literal(self) -> str:
        return _floats(self.series)

    @property
    def branches(self) -> list[tuple[str, str]]:
        return [(side, code(self.closed[side])) for side in ("neg", "pos") if side in self.closed]

    @property
    def doc(self) -> str:
        family = "G" if self.kind == "cosine" else "C"  # only the node y(t) of the family is used
        forms = "; ".join(f"{sympy.sstr(self.closed[side])} with d = {sympy.sstr(BRANCHES[family][side].node)}"
                          for side in ("neg", "pos") if side in self.closed)
        roles = textwrap.fill(f"The Hermite coefficient {'; and '.join(self.roles)}.", 100, subsequent_indent="    ")
        return f"{forms}; analytic at d = 0 (Taylor series for |d| < TAU).\n\n    {roles}"


class _Functions:
    """The scalar coefficient functions a module needs, each once (keyed by node and exact series)."""

    def __init__(self):
        self.fns: list[CoefficientFn] = []

    def need(self, fname: str, p: int, k: int, branches: tuple[str, ...]) -> list[CoefficientFn]:
        out = []
        for j in range(k):
            h = hermite_coefficient(fname, p, j, branches)
            kind = BRANCHES[fname][branches[0]].kind
            fn = next((f for f in self.fns if f.kind == kind and f.series == h.series and all(
                sympy.simplify(f.closed[s] - h.closed[s]) == 0 for s in h.closed if s in f.closed)), None)
            if fn is None:
                fn = CoefficientFn(kind, h.series, fallback=fallback_name(fname, p, j))
                self.fns.append(fn)
            for side in branches:
                fn.closed.setdefault(side, h.closed[side])
            role = f"h_{j} over the nodes {{0 (x{p}), d}} of {DESCRIPTIONS[fname]}"
            if role not in fn.roles:
                fn.roles.append(role)
            out.append(fn)
        return out

    def finish(self) -> list[CoefficientFn]:
        """Name every function (from its closed form; unique in the module) and sort them by name."""
        taken = set(runtime_helpers()) | {"exp", "log", "inv", "spectrum", "torch", "GROUP", "LIFT"}
        for fn in self.fns:
            name = coefficient_name(fn.closed, fn.fallback)
            base, n = name, 2
            while name in taken:
                name, n = f"{base}_{n}", n + 1
            fn.name = name
            taken.add(name)
        return sorted(self.fns, key=lambda f: f.name)


def _taylor(fname: str, p: int) -> str:
    return _floats(taylor_in_y(fname)[:p]) if p else "()"


def _inverse_coefficients(block: Block) -> list[str]:
    """Coefficients c_j(kappa) with Y^-1 = sum_j c_j Y^j from the minimal polynomial of Y = exp(X)."""
    y, kappa = sympy.symbols("y kappa")
    poly = (y - 1) ** block.e
    if block.k:
        poly = poly * (y**2 - 2 * kappa * y + 1) ** block.k
    coeffs = sympy.Poly(sympy.expand(poly), y).all_coeffs()[::-1]  # alpha_0 .. alpha_deg
    return [code(sympy.expand(-c / coeffs[0])) for c in coeffs[1:]]


def _used_coords(exprs, coords) -> list[int]:
    return sorted({i for i, c in enumerate(coords) for e in exprs if e is not None and sympy.sympify(e).has(c)})


def _block_context(alg: Algebra, block: Block, fns: _Functions, single: bool) -> dict:
    e, k, branches, i = block.e, block.k, block.branches, block.index
    pC, pS = math.ceil(e / 2), e // 2
    gens = [block.left * alg.linear_generic.diff(c) * block.right for c in alg.coords]
    traceless = []  # the distinct nonzero traceless parts (all the near-cut log's fallback needs)
    for g in gens:
        g = g - (g.trace() / block.size) * sympy.eye(block.size)
        if not g.is_zero_matrix and g not in traceless:
            traceless.append(g)
    has_mu = block.mu != 0
    orthogonal = block.form is not None and block.form == sympy.eye(block.size)
    affine = alg.translation is not None
    ctx = {
        "idx": i,
        "size": block.size,
        "embedded": not block.is_identity_embedding,
        "right": matrix_literal(block.right),
        "left": matrix_literal(block.left),
        "mu": code(block.mu) if has_mu else None,
        "delta": code(block.delta) if k else None,
        "summary": (f"block {i} (size {block.size}): mu = {sympy.sstr(block.mu)}, delta = {sympy.sstr(block.delta)}, "
                    f"minimal polynomial x^{e}" + (f" (x^2 - delta)^{k}" if k else "") + f", delta sign: {block.sign}"),
        "params": ", ".join(["B"] + (["mu"] if has_mu else []) + (["d"] if k else [])),
        "args": ", ".join([f"B{i}" if not single else "B"] + ([f"mu{i}"] if has_mu else []) + ([f"d{i}"] if k else [])),
        "B": "B" if single else f"B{i}",
        "L": "B" if single else f"L{i}",
        "e": e,
        "k": k,
        # X = 0 on the block (minimal polynomial x): B = mu I, exp(B) = e^mu I, log = mu I
        "scalar": e == 1 and k == 0,
        "alg_k": block.alg_k,
        "pS": pS,
        "taylor_C": _taylor("C", pC),
        "taylor_S": _taylor("S", pS),
        "taylor_G": _taylor("G", pC),
        "hC": fns.need("C", pC, k, branches),
        "hS": fns.need("S", pS, k, branches),
        "hG": fns.need("G", pC, k, branches),
        "cut": k == 1 and e <= 2 and block.sign in ("neg", "both"),
        "traceless": _matrices(traceless),
        # orthogonal block (form = I): h^-1 = e^(-2 mu) h^T, the form-antisymmetric part is the antisymmetric part
        "orthogonal": orthogonal,
        "form": matrix_literal(block.form) if block.form is not None and not orthogonal else None,
        "form_inv": matrix_literal(block.form.inv()) if block.form is not None and not orthogonal else None,
        "inv_coeffs": _inverse_coefficients(block) if block.form is None else [],
        "kappa_shift": block.size - 2 * block.alg_k,
        # similarity-type blocks (mu != 0, no zero eigenvalue, one rotation pair: X^2 = delta I): V in closed form
        "v_closed": bool(affine and has_mu and e == 0 and k == 1 and block.sign == "neg"),
    }
    if affine and ctx["v_closed"]:
        ctx["cos"], ctx["sinc"] = fns.need("C", 0, 1, branches)[0], fns.need("S", 0, 1, branches)[0]
    if affine and not has_mu:
        ctx.update({"taylor_Vs": _taylor("S", pC), "taylor_Vd": _taylor("D", pS), "taylor_E": _taylor("E", pC),
                    "hVs": fns.need("S", pC, k, branches), "hVd": fns.need("D", pS, k, branches),
                    "hE": fns.need("E", pC, k, branches)})
    return ctx


# what each of a block's functions depends on: blocks that agree on it share one function
_EXP = ("size", "mu", "scalar", "k", "pS", "taylor_C", "taylor_S", "hC", "hS")
_DEPENDS = {
    "exp": _EXP,
    "v": _EXP + ("v_closed", "cos", "sinc", "taylor_Vs", "taylor_Vd", "hVs", "hVd"),
    "v_inv": _EXP + ("alg_k", "v_closed", "cos", "sinc", "taylor_E", "hE"),
    "inv": ("size", "mu", "scalar", "orthogonal", "form", "e", "k", "alg_k", "inv_coeffs", "kappa_shift"),
    "log": ("size", "mu", "scalar", "k", "alg_k", "kappa_shift", "cut", "taylor_G", "hG", "traceless", "orthogonal",
            "form"),
}


def _share_functions(blocks: list[dict]) -> list[dict]:
    """b["impl"][fn]: the first block whose function fn (exp, v, v_inv, inv, log) block b can call, and
    b["users"][fn]: the blocks that call b's own."""
    def frozen(v):
        return tuple(map(frozen, v)) if isinstance(v, list) else id(v) if isinstance(v, CoefficientFn) else v

    for b in blocks:
        b["impl"], b["users"] = {}, {}
    for fn, keys in _DEPENDS.items():
        seen: dict = {}
        for b in blocks:
            key = tuple(b["mu"] is not None if k == "mu" else frozen(b.get(k)) for k in keys)
            owner = blocks[seen.setdefault(key, b["idx"])]
            b["impl"][fn] = owner["idx"]
            owner["users"].setdefault(fn, []).append(b["idx"])
    for b in blocks:
        # what exp(), log(), ... call for this block, and which of its own functions the module defines; a
        # block every generator fixes (X = 0, mu = 0) needs none: exp, V, V^-1 and inv are I, log is 0
        fixed = b["scalar"] and b["mu"] is None
        b["call"] = {fn: ("torch.zeros_like" if fn == "log" else "identity_like") if fixed else f"_{fn}_block{i}"
                     for fn, i in b["impl"].items()}
        b["emit"] = {fn: not fixed and i == b["idx"] for fn, i in b["impl"].items()}
        b["of"] = {fn: f"block {users[0]}" if len(users) == 1 else "blocks " + ", ".join(map(str, users))
                   for fn, users in b["users"].items()}
        # the constants the block's own functions read
        b["own_form"] = bool(b["form"]) and (b["emit"]["inv"] or (b["cut"] and b["emit"]["log"]))
        b["own_traceless"] = b["cut"] and b["emit"]["log"]
        parts = (["basis (right) and dual basis (left)"] if b["embedded"] else []) + \
            (["invariant form M and M^-1"] if b["own_form"] else []) + \
            (["traceless generators (for the log at angle pi)"] if b["own_traceless"] else [])
        b["constants"] = f"block {b['idx']}: its " + "; its ".join(parts) if parts else ""
    return blocks


def _coordinates(d: int) -> str:
    """'a = (a0, a1)' for the module header."""
    if d <= 3:
        return "(" + ", ".join(f"a{i}" for i in range(d)) + ("," if d == 1 else "") + ")"
    return f"(a0, ..., a{d - 1})"


def module_context(spec, alg: Algebra | None = None) -> dict:
    alg = alg or analyze(spec)
    fns = _Functions()
    n, m = spec.rep_dim, alg.linear_dim
    d = len(spec.generators)
    lin = [alg.linear_generic.diff(c) for c in alg.coords]
    ctx = {
        "spec": spec,
        "spec_path": "/".join(Path(spec.path).parts[-2:]),  # machine-independent (folder/file)
        "imports": _IMPORTS,
        "n": n,
        "m": m,
        "d": d,
        "coordinates": _coordinates(d),
        "affine": spec.action == "affine",
        "closed_form": not spec.numeric_fallback,
        "abelian": alg.abelian,
        "generators": _matrices(spec.generators),
        "dual": matrix_literal(alg.dual) if d else "[]",
        "structure_constants": _nested([[list(col) for col in row] for row in spec.structure_constants]) if d else "[]",
        "linear": _matrices(lin),
        "translation": ("[" + ", ".join("[" + ", ".join(repr(float(v)) for v in alg.translation.diff(c)) + "]"
                                        for c in alg.coords) + "]") if alg.translation is not None and d else "[]",
        "defaults": repr(dict(sorted(spec.defaults.items()))),
        "metric": matrix_literal(metric_matrix(spec)) if d else "[]",
        "metric_source": "spec" if spec.metric is not None else "frobenius",
        "generator_names": repr(tuple(spec.generator_names)),
        "tau": repr(TAU),
        "blocks": [],
        "functions": [],
    }
    with steps.step("lifting: orbits, stabilizer, Haar sampler", f"R^{spec.space_dim}"):
        ctx["lift"] = lift_context(spec, alg)
    ctx["spectrum"] = {"rotation": [], "growth": [], "a_used": []}
    if spec.numeric_fallback:
        ctx["kind"] = "numeric"
        return ctx
    # the trivial group emits no block code; nor do pure translations (every linear part zero): exp, log and
    # inv only move the translation column
    ctx["kind"] = ("trivial" if not d else
                   "translations" if ctx["affine"] and all(g.is_zero_matrix for g in lin) else "blocks")
    if ctx["kind"] == "blocks":
        single = len(alg.blocks) == 1 and alg.blocks[0].is_identity_embedding
        with steps.step("closed-form coefficient functions", f"{len(alg.blocks)} block(s)"):
            ctx["blocks"] = _share_functions([_block_context(alg, b, fns, single) for b in alg.blocks])
        ctx["single"] = single
        ctx["a_used"] = _used_coords([b.mu for b in alg.blocks] + [b.delta for b in alg.blocks if b.k], alg.coords)
    ctx["functions"] = fns.finish()
    ctx["spectrum"] = _spectrum_context(alg, ctx["kind"] != "blocks")
    return ctx


def _spectrum_context(alg: Algebra, no_blocks: bool) -> dict:
    """Torch expressions for the largest |Im| (rotation) and |Re| (growth) of the eigenvalues of the
    linear part: each block contributes mu and mu +- sqrt(delta), so no eigensolver is ever needed."""
    rotation, growth, used = [], [], set()
    for b in [] if no_blocks else alg.blocks:
        has_pair = bool(b.k) and b.delta != 0
        if has_pair and b.sign in ("neg", "both"):
            rotation.append(f"torch.sqrt(torch.clamp({code(sympy.expand(-b.delta))}, min=0.0))")
        terms = [f"torch.abs({code(b.mu)})"] if b.mu != 0 else []
        if has_pair and b.sign in ("pos", "both"):
            terms.append(f"torch.sqrt(torch.clamp({code(b.delta)}, min=0.0))")
        if terms:
            growth.append(" + ".join(terms))
        used |= {i for i, c in enumerate(alg.coords) if b.mu.has(c) or (has_pair and b.delta.has(c))}
    return {"rotation": rotation, "growth": growth, "a_used": sorted(used)}


def _with_imports(source: str) -> str:
    """Replace the imports placeholder by `import torch` and the runtime helpers the module uses."""
    used = {node.id for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Name)}
    helpers = sorted(used & runtime_helpers())
    lines = ["import torch", ""] if "torch" in used else []
    one = f"from lieconv_runtime.group_base import {', '.join(helpers)}"
    if len(one) <= 110:
        lines.append(one)
    else:
        lines.append("from lieconv_runtime.group_base import (")
        row = "   "
        for name in helpers:
            if len(row) + len(name) + 2 > 110:
                lines.append(row)
                row = "   "
            row += f" {name},"
        lines += [row, ")"]
    return source.replace(_IMPORTS, "\n".join(lines), 1)


def metric_matrix(spec) -> sympy.Matrix:
    """The metric on the Lie algebra (exact): the spec's ``metric:``, else the Frobenius Gram
    tr(G_k^T G_l) of the generators, so that a^T M a = |hat(a)|_F^2 (basis-independent)."""
    if spec.metric is not None:
        return sympy.Matrix(spec.metric)
    gens = [sympy.Matrix(g) for g in spec.generators]
    return sympy.Matrix(len(gens), len(gens), lambda k, l: (gens[k].T * gens[l]).trace())


def render(spec, alg: Algebra | None = None) -> str:
    """Module source for a validated spec (raises ClosedFormError if no closed form)."""
    context = module_context(spec, alg)
    with steps.step("rendering the module"):
        return _with_imports(_env().get_template("group_module.py.j2").render(**context))

