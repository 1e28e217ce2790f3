"""Turn a spec's derived structure into a torch module (jinja2 template + printer).

`render(spec)` returns the module source; `generate(paths, out_dir)` writes one module
per spec.  Output is deterministic: the same spec always gives the same bytes.
"""

from __future__ import annotations

import math
from fractions import Fraction
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
import numpy as np
import sympy

from lieconv_runtime.io import atomic_write

from groupgen import steps
from groupgen.algebra import Algebra, Block, analyze
from groupgen.lift import lift_context
from groupgen.functions import DESCRIPTIONS, TAU, BRANCHES, hermite_coefficient, taylor_in_y
from groupgen.printer import code, matrix_literal

QUADRATURE_POINTS = 32
TEMPLATE_DIR = Path(__file__).parent / "templates"


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


@dataclass
class CoefficientFn:
    name: str
    doc: str
    series: str
    branches: list = field(default_factory=list)  # (side, t_of_y, code)


class _Functions:
    """Collects the scalar coefficient functions a module needs (deduplicated)."""

    def __init__(self):
        self.fns: dict[str, CoefficientFn] = {}

    def need(self, fname: str, p: int, k: int, branches: tuple[str, ...]) -> list[str]:
        names = []
        for j in range(k):
            h = hermite_coefficient(fname, p, j, branches)
            name = h.fn_name + {("neg", "pos"): "", ("neg",): "_trig", ("pos",): "_hyp"}[branches]
            if name not in self.fns:
                forms = "; ".join(f"{side}: {sympy.sstr(h.closed[side])} with y = {sympy.sstr(BRANCHES[fname][side].node)}" for side in branches)
                doc = (f"h_{j}(d) for F = {DESCRIPTIONS[fname]} over nodes {{0 (x{p}), d}}: "
                       f"the {j}-th derivative / {j}! of (F(y) - T_{p}(y)) / y^{p} at y = d. Closed forms in t: {forms}.")
                self.fns[name] = CoefficientFn(
                    name, doc, _floats(h.series),
                    [(side, BRANCHES[fname][side].t_of_y, code(h.closed[side])) for side in branches],
                )
            names.append(name)
        return names


def _taylor(fname: str, p: int) -> str:
    return _floats(taylor_in_y(fname)[:p]) if p else "()"


def _inverse_coefficients(block: Block) -> list[tuple[str, bool]]:
    """Coefficients c_j(kappa) with Y^-1 = sum_j c_j Y^j from the minimal polynomial of Y = exp(X)."""
    y, kappa = sympy.symbols("y kappa")
    poly = (y - 1) ** block.e
    if block.k:
        poly = poly * (y**2 - 2 * kappa * y + 1) ** block.k
    coeffs = sympy.Poly(sympy.expand(poly), y).all_coeffs()[::-1]  # alpha_0 .. alpha_deg
    alpha0 = coeffs[0]
    out = []
    for c in coeffs[1:]:
        c = sympy.expand(-c / alpha0)
        out.append((code(c), bool(c.is_number)))
    return out


def _phi1_pair_series(order: int = 18) -> tuple[str, str]:
    """Exact bivariate series of V = alpha I + beta X = phi1(mu I + X), X^2 = delta I,
    phi1(z) = (e^z - 1)/z:  alpha = sum A[i][j] mu^i delta^j,  beta = sum B[i][j] mu^i delta^j."""
    A = [[Fraction(0)] * (order + 1) for _ in range(order + 1)]
    B = [[Fraction(0)] * (order + 1) for _ in range(order + 1)]
    for n in range(order + 1):
        c = Fraction(1, math.factorial(n + 1))
        for j in range(n + 1):  # (mu + x)^n = sum_j C(n, j) mu^(n-j) x^j, x^2 = delta
            term = c * math.comb(n, j)
            if j % 2 == 0:
                A[n - j][j // 2] += term
            else:
                B[n - j][(j - 1) // 2] += term
    return _nested(A), _nested(B)


def _block_context(alg: Algebra, block: Block, fns: _Functions) -> dict:
    coords = alg.coords
    e, k, branches = block.e, block.k, block.branches
    pC, pS = math.ceil(e / 2), e // 2
    gens = [block.left * alg.linear_generic.diff(c) * block.right for c in coords]
    traceless = [g - (g.trace() / block.size) * sympy.eye(block.size) for g in gens]
    ctx = {
        "idx": block.index,
        "size": block.size,
        "identity": block.is_identity_embedding,
        "right": matrix_literal(block.right),
        "left": matrix_literal(block.left),
        "gens": "[" + ", ".join(matrix_literal(g) for g in gens) + "]" if gens else "[]",
        "traceless": "[" + ", ".join(matrix_literal(g) for g in traceless) + "]" if gens else "[]",
        "mu": code(block.mu) if block.mu != 0 else None,
        "mu_sym": sympy.sstr(block.mu),
        "delta": code(block.delta) if k else None,
        "delta_sym": sympy.sstr(block.delta),
        "e": e,
        "k": k,
        "alg_k": block.alg_k,
        "sign": block.sign,
        "pC": pC,
        "pS": pS,
        "taylor_C": _taylor("C", pC),
        "taylor_S": _taylor("S", pS),
        "hC": fns.need("C", pC, k, branches),
        "hS": fns.need("S", pS, k, branches),
        "taylor_G": _taylor("G", pC),
        "hG": fns.need("G", pC, k, branches),
        "cut": k == 1 and e <= 2 and block.sign in ("neg", "both"),
        "form": matrix_literal(block.form) if block.form is not None else None,
        "form_inv": matrix_literal(block.form.inv()) if block.form is not None else None,
        # orthogonal block (form = I): h^-1 = e^(-2 mu) h^T, the form-antisymmetric part is the antisymmetric part
        "form_identity": block.form is not None and block.form == sympy.eye(block.size),
        "inv_coeffs": _inverse_coefficients(block),
        "minpoly": f"x^{e}" + (f" (x^2 - delta)^{k}" if k else ""),
    }
    # similarity-type blocks (mu != 0, no zero eigenvalue, one rotation pair: X^2 = delta I):
    # closed-form V and V^-1 with a joint series at mu = delta = 0
    ctx["v_closed"] = bool(block.mu != 0 and e == 0 and k == 1 and block.sign == "neg")
    if alg.translation is not None and ctx["v_closed"]:
        ctx["v_series_alpha"], ctx["v_series_beta"] = _phi1_pair_series()
        ctx["hC0"], ctx["hS0"] = fns.need("C", 0, 1, branches)[0], fns.need("S", 0, 1, branches)[0]
    if alg.translation is not None:
        ctx.update({
            "taylor_Vs": _taylor("S", pC),
            "taylor_Vd": _taylor("D", pS),
            "hVs": fns.need("S", pC, k, branches),
            "hVd": fns.need("D", pS, k, branches),
            "taylor_E": _taylor("E", pC),
            "hE": fns.need("E", pC, k, branches),
        })
    return ctx


def module_context(spec, alg: Algebra | None = None) -> dict:
    alg = alg or analyze(spec)
    fns = _Functions()
    n, m = spec.rep_dim, alg.linear_dim
    d = len(spec.generators)
    lin = [alg.linear_generic.diff(c) for c in alg.coords]
    ctx = {
        "spec": spec,
        "spec_path": "/".join(Path(spec.path).parts[-2:]),  # machine-independent (folder/file)
        "n": n,
        "m": m,
        "d": d,
        "affine": spec.action == "affine",
        "closed_form": not spec.numeric_fallback,
        "abelian": alg.abelian,
        "generators": "[" + ", ".join(matrix_literal(g) for g in spec.generators) + "]",
        "dual": matrix_literal(alg.dual) if d else "[]",
        "structure_constants": _nested([[list(col) for col in row] for row in spec.structure_constants]) if d else "[]",
        "linear": "[" + ", ".join(matrix_literal(g) for g in lin) + "]" if d else "[]",
        "translation": ("[" + ", ".join("[" + ", ".join(repr(float(v)) for v in alg.translation.diff(c)) + "]" for c in alg.coords) + "]")
        if alg.translation is not None and d else "[]",
        "defaults": repr(dict(sorted(spec.defaults.items()))),
        "generator_names": repr(tuple(spec.generator_names)),
        "tau": repr(TAU),
        "blocks": [],
        "quadrature": None,
    }
    with steps.step("lifting: orbits, stabilizer, Haar sampler", f"R^{spec.space_dim}"):
        ctx["lift"] = lift_context(spec, alg)
    if spec.numeric_fallback:
        ctx["functions"] = []
        ctx["spectrum"] = {"rotation": [], "growth": [], "a_used": []}
        return ctx
    # pure translations (every linear part zero): exp, log and inv only move the translation column,
    # so no block code is emitted
    ctx["translations_only"] = bool(ctx["affine"] and d and all(g.is_zero_matrix for g in lin))
    with steps.step("closed-form coefficient functions", f"{len(alg.blocks)} block(s)"):
        ctx["blocks"] = [] if ctx["translations_only"] else [_block_context(alg, b, fns) for b in alg.blocks]
    if ctx["affine"] and any(b["mu"] and not b["v_closed"] for b in ctx["blocks"]):
        x, w = np.polynomial.legendre.leggauss(QUADRATURE_POINTS)
        ctx["quadrature"] = {"nodes": _floats((x + 1) / 2), "weights": _floats(w / 2), "count": QUADRATURE_POINTS}
    ctx["functions"] = [fns.fns[name] for name in sorted(fns.fns)]
    ctx["spectrum"] = _spectrum_context(alg, ctx["translations_only"])
    return ctx


def _spectrum_context(alg: Algebra, translations_only: bool) -> dict:
    """Torch expressions for the largest |Im| (rotation) and |Re| (growth) of the eigenvalues of the
    linear part: each block contributes mu and mu +- sqrt(delta), so no eigensolver is ever needed."""
    rotation, growth, used = [], [], set()
    for b in [] if translations_only else alg.blocks:
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


def render(spec, alg: Algebra | None = None) -> str:
    """Module source for a validated spec (raises ClosedFormError if no closed form)."""
    context = module_context(spec, alg)
    with steps.step("rendering the module"):
        return _env().get_template("group_module.py.j2").render(**context)


def write_atomic(path: Path, text: str) -> None:
    """Write a generated module atomically (LF line endings, UTF-8)."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))
