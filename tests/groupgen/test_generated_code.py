"""The generated modules read like the math: they hold only the imports, constants, helpers, locals
and parameters they use, each coefficient function once (named after its closed form), and no
function twice.  Checked with `ast` on every shipped module and every test group (extra specs,
re-based variants, the numeric fallback)."""

from __future__ import annotations

import ast
import builtins
from pathlib import Path

import pytest
import sympy

from groupgen.functions import coefficient_name, fallback_name, hermite_coefficient, t
from groupgen.printer import code
from tests.groupgen.groups import EXTRA_SPECS, REBASED_FROM, SHIPPED, build_test_groups

ROOT = Path(__file__).resolve().parents[2]
NAMES = SHIPPED + [Path(p).stem for p in EXTRA_SPECS] + [f"{b}_rebased1" for b in REBASED_FROM]
PUBLIC = {"GROUP"}  # the one top-level name a module exports without using it itself


def dead_code(source: str) -> list[str]:
    """Unused imports, top-level names, parameters and locals, and functions with the same body."""
    tree = ast.parse(source)
    loaded = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    out = []
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            out += [f"unused import {a.asname or a.name}" for a in node.names if (a.asname or a.name) not in loaded]
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name not in loaded | PUBLIC:
            out.append(f"unused top-level name {node.name}")
        elif isinstance(node, ast.Assign):
            out += [f"unused top-level name {x.id}" for x in node.targets
                    if isinstance(x, ast.Name) and x.id not in loaded | PUBLIC]
    bodies: dict[str, str] = {}
    for node in ast.walk(tree):
        if not isinstance(node, (ast.FunctionDef, ast.Lambda)):
            continue
        name = getattr(node, "name", "<lambda>")
        body = node.body if isinstance(node, ast.FunctionDef) else [node.body]
        names = [n for b in body for n in ast.walk(b) if isinstance(n, ast.Name)]
        used = {n.id for n in names if isinstance(n.ctx, ast.Load)}
        stored = {n.id for n in names if isinstance(n.ctx, ast.Store)}
        out += [f"unused parameter {a.arg} of {name}" for a in node.args.args + node.args.kwonlyargs if a.arg not in used]
        out += [f"unused local {s} in {name}" for s in sorted(stored - used)]
        if isinstance(node, ast.FunctionDef) and node in tree.body:
            if ast.get_docstring(node) is not None:
                body = body[1:]
            key = "\n".join(ast.dump(b) for b in body)
            if key in bodies:
                out.append(f"{name} repeats {bodies[key]}")
            bodies.setdefault(key, name)
    return out


def undefined(source: str) -> set[str]:
    """Names loaded but bound nowhere in the module (nor builtins)."""
    tree = ast.parse(source)
    bound = set(dir(builtins))
    for n in ast.walk(tree):
        if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store):
            bound.add(n.id)
        elif isinstance(n, (ast.FunctionDef, ast.ClassDef)):
            bound.add(n.name)
        elif isinstance(n, ast.arg):
            bound.add(n.arg)
        elif isinstance(n, (ast.Import, ast.ImportFrom)):
            bound |= {(a.asname or a.name).split(".")[0] for a in n.names}
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)} - bound


@pytest.fixture(scope="module")
def groups(tmp_path_factory):
    return build_test_groups(str(tmp_path_factory.mktemp("groups")))


def source_of(name, groups) -> str:
    return (Path(groups[name]) / f"{name}.py").read_text()


def test_the_check_finds_dead_code():
    """What the shipped modules used to carry: an unused import, constant, helper, local and parameter,
    and one series under two names."""
    old = '''
import torch
from lieconv_runtime.group_base import det, piecewise, trace
TAU = 0.25
BLOCK0_FORM = [[1.0]]


def _hC_p1_j0_trig(d):
    return piecewise(d, (0.5, 0.04), TAU)


def _hD_p0_j0_trig(d):
    return piecewise(d, (0.5, 0.04), TAU)


def _restrict(M, left, right):
    return left @ M @ right


def exp(a, mu):
    a3 = a[..., 3]
    return torch.exp(trace(a)) * _hC_p1_j0_trig(a) * _hD_p0_j0_trig(a)


GROUP = exp
'''
    found = dead_code(old)
    for problem in ("unused import det", "unused top-level name BLOCK0_FORM", "unused top-level name _restrict",
                    "unused local a3 in exp", "unused parameter mu of exp", "_hD_p0_j0_trig repeats _hC_p1_j0_trig"):
        assert problem in found, (problem, found)
    assert len(found) == 6, found


@pytest.mark.parametrize("name", NAMES)
def test_generated_module_has_no_dead_code(name, groups):
    source = source_of(name, groups)
    assert dead_code(source) == []
    assert undefined(source) == set()
    assert "noqa" not in source


@pytest.mark.parametrize("name", NAMES)
def test_each_coefficient_function_once_named_after_its_closed_form(name, groups):
    tree = ast.parse(source_of(name, groups))
    series = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and any(isinstance(n, ast.Name) and n.id == "piecewise" for n in ast.walk(node)):
            value = ast.literal_eval(next(n.value for n in node.body if isinstance(n, ast.Assign)))
            assert value not in series.values(), f"{node.name} repeats the series of another function"
            series[node.name] = value
            assert not node.name.startswith("_h"), node.name
    if name == "SE3":
        assert set(series) == {"one_minus_cos_over_t2", "sin_over_t", "t_minus_sin_over_t3",
                               "one_minus_half_t_cot_half_t_over_t2", "t_over_sin_minus_one_over_cos_minus_one"}


def test_se3_uses_one_function_for_both_interpolations_of_one_minus_cos():
    """(1 - cos t)/t^2 is h_0 of cosh(sqrt u) after one Taylor term (exp) and of (cosh(sqrt u) - 1)/u (V)."""
    text = (ROOT / "generated" / "SE3.py").read_text()
    assert text.count("def one_minus_cos_over_t2(") == 1
    assert "[one_minus_cos_over_t2(d)]) + B @" in text  # exp: even part
    assert "B @ hermite_matrix(U, d, (), [one_minus_cos_over_t2(d)])" in text  # V: odd part


@pytest.mark.parametrize("name", NAMES)
def test_header_lists_the_coordinates(name, groups):
    source = source_of(name, groups)
    d = len(ast.literal_eval(next(n.value for n in ast.parse(source).body
                                  if isinstance(n, ast.Assign) and n.targets[0].id == "GENERATORS")))
    doc = ast.get_docstring(ast.parse(source))
    assert "GENERATED by groupgen from" in doc and "sha256" in doc
    if d and "NUMERIC FALLBACK" not in doc:
        expected = {1: "a = (a0,)", 2: "a = (a0, a1)", 3: "a = (a0, a1, a2)"}.get(d, f"a = (a0, ..., a{d - 1})")
        assert expected in doc, doc


@pytest.mark.parametrize("family, p, side, expected", [
    ("S", 0, "neg", "sin_over_t"),
    ("S", 0, "pos", "sinh_over_t"),
    ("C", 0, "neg", "cos_t"),
    ("C", 1, "neg", "one_minus_cos_over_t2"),
    ("D", 0, "neg", "one_minus_cos_over_t2"),
    ("C", 1, "pos", "cosh_minus_one_over_t2"),
    ("S", 1, "neg", "t_minus_sin_over_t3"),
    ("S", 1, "pos", "sinh_minus_t_over_t3"),
    ("E", 0, "neg", "half_t_cot_half_t"),
    ("E", 1, "neg", "one_minus_half_t_cot_half_t_over_t2"),
    ("G", 0, "neg", "t_over_sin"),
    ("G", 1, "neg", "t_over_sin_minus_one_over_cos_minus_one"),
])
def test_coefficient_names_say_what_the_function_is(family, p, side, expected):
    h = hermite_coefficient(family, p, 0, (side,))
    assert coefficient_name(h.closed, fallback_name(family, p, 0)) == expected


def test_coefficient_names_fall_back_for_long_closed_forms():
    h = hermite_coefficient("G", 2, 1, ("neg",))  # a derivative of a Hermite remainder: pages of sympy
    assert coefficient_name(h.closed, fallback_name("G", 2, 1)) == "arccoshc_p2_h1"
    assert coefficient_name({"neg": (t - sympy.sin(t)) / t**3, "pos": (sympy.sinh(t) - t) / t**3}, "x") == "t_minus_sin_over_t3"


def test_one_printer_for_closed_forms_and_nan_safe_lift_expressions():
    x0, x1 = sympy.symbols("x0 x1")
    assert code(sympy.sqrt(x0**2 + x1**2)) == "torch.sqrt(x0**2 + x1**2)"
    assert code(sympy.sqrt(x0**2 + x1**2), nan_safe=True) == "safe_sqrt(x0**2 + x1**2)"
    assert code(sympy.atan2(x1, x0), nan_safe=True) == "safe_atan2(x1, x0)"
    assert code(sympy.log(x0), nan_safe=True) == "safe_log(x0)" and code(sympy.log(x0)) == "torch.log(x0)"
    assert code(1 / sympy.sqrt(x0), nan_safe=True) == "1/safe_sqrt(x0)"
    assert code(sympy.Max(x0, 1), nan_safe=True) == "torch.maximum((1 + zero), (x0 + zero))"
    assert code(sympy.Rational(1, 3) * x0**2) == "(0.3333333333333333)*x0**2"


# shapes of blocks no shipped or test spec has: a block every generator fixes (zero), a pure scaling block
# in an affine group (V by quadrature), the affine trivial group, minimal polynomial (x^2 - delta)^2
EDGE_SPECS = {
    "SE2z": """name: SE2z
action: affine
generators:
  theta: [[0,-1,0,0],[1,0,0,0],[0,0,0,0],[0,0,0,0]]
  tx: [[0,0,0,1],[0,0,0,0],[0,0,0,0],[0,0,0,0]]
  ty: [[0,0,0,0],[0,0,0,1],[0,0,0,0],[0,0,0,0]]
""",
    "Dilations": """name: Dilations
action: affine
generators:
  s: [[1,0,0],[0,1,0],[0,0,0]]
  tx: [[0,0,1],[0,0,0],[0,0,0]]
  ty: [[0,0,0],[0,0,1],[0,0,0]]
""",
    "TrivialAffine": "name: TrivialAffine\naction: affine\ngenerators: {}\nspace_dim: 2\n",
    "RotationJordan": """name: RotationJordan
action: linear
generators:
  r: [[0,-1,0,0],[1,0,0,0],[0,0,0,-1],[0,0,1,0]]
  n: [[0,0,1,0],[0,0,0,1],[0,0,0,0],[0,0,0,0]]
""",
}


@pytest.mark.parametrize("name", sorted(EDGE_SPECS))
def test_unusual_blocks_generate_lean_correct_code(name, tmp_path):
    import numpy as np
    import scipy.linalg
    import torch

    from groupgen.emit import render
    from lieconv_runtime.io import atomic_write_text
    from groupgen.spec import parse_spec
    from lieconv_runtime import load_group

    source = render(parse_spec(EDGE_SPECS[name], f"{name}.yaml"))
    assert dead_code(source) == [] and undefined(source) == set()
    atomic_write_text(tmp_path / f"{name}.py", source)
    G = load_group(name, search_path=tmp_path)
    a = 0.7 * torch.randn(16, G.lie_dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    g = G.exp(a)
    ref = np.stack([scipy.linalg.expm(x) for x in G.hat(a).numpy()])
    assert np.abs(g.numpy() - ref).max() < 1e-13
    assert torch.allclose(G.log(g), a, atol=1e-12)
    assert torch.allclose(G.inv(g) @ g, torch.eye(G.rep_dim, dtype=torch.float64).expand_as(g), atol=1e-13)
