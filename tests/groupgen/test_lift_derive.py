"""groupgen.lift: derived orbits, stabilizers, Haar densities, `lift:` validation, and the
numerical lift checks reporting a deliberately wrong declared lift."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import pytest
import sympy
import torch

from groupgen.algebra import analyze
from groupgen.emit import render
from lieconv_runtime.io import atomic_write_text
from groupgen.lift import derive_lift, invariant_pd_form, lift_check_rows
from groupgen.spec import SpecError, load_spec, parse_spec
from lieconv_runtime import load_group


ROOT = Path(__file__).resolve().parents[2]


def plan_of(path):
    spec = load_spec(ROOT / path)
    return spec, derive_lift(spec, analyze(spec))


def build(tmp_path, text):
    """Generate and load the group of spec `text` in a temporary folder."""
    spec = parse_spec(textwrap.dedent(text), str(tmp_path / "spec.yaml"))
    out = tmp_path / "generated"
    atomic_write_text(out / f"{spec.name}.py", render(spec))
    return load_group(spec.name, search_path=out)


SO2 = """\
name: SO2L
action: linear
generators:
  theta: [[0,-1],[1,0]]
"""

SO2_LIFT = SO2 + """\
lift:
  orbit: ["sqrt(x0**2 + x1**2)"]
  origin: [q0, 0]
  section: {theta: "atan2(x1, x0)"}
"""

SIM2 = """\
name: Sim2L
action: affine
generators:
  theta: [[0,-1,0],[1,0,0],[0,0,0]]
  s: [[1,0,0],[0,1,0],[0,0,0]]
  tx: [[0,0,1],[0,0,0],[0,0,0]]
  ty: [[0,0,0],[0,0,1],[0,0,0]]
"""


# --------------------------------------------------------------------------------------------
# what is derived
# --------------------------------------------------------------------------------------------


def test_translation_groups_derive_one_orbit_and_rotation_stabilizer():
    spec, plan = plan_of("group_specs/SE3.yaml")
    assert plan.kind == "translations" and plan.orbit == [] and plan.origin == [0, 0, 0]
    x0, x1, x2 = sympy.symbols("x0:3", real=True)
    assert plan.factors == [[0, 0, 0, x0, x1, x2]]
    st = plan.stabilizer
    assert st.names(spec) == "span{rx, ry, rz}" and st.compact and st.reason is None
    assert st.density == "pair" and st.k == 1
    b = st.bsyms
    assert sympy.expand(st.delta + b[0] ** 2 + b[1] ** 2 + b[2] ** 2) == 0  # ad eigenvalues 0, +-i|b|
    assert plan.haar is None and "not compact" in plan.haar_reason


def test_rescaled_permuted_generators():
    """SE2perm: u, r = 3J, v: stabilizer span{r}, principal box |b| <= pi/3 (exp(3bJ) has period 2pi/3)."""
    spec, plan = plan_of("tests/specs/SE2perm.yaml")
    assert plan.kind == "translations" and plan.stabilizer.names(spec) == "span{r}"
    assert plan.stabilizer.box[0] == pytest.approx(math.pi / 3)


def test_translation_subspaces_and_trivial():
    x0, x1 = sympy.symbols("x0:2", real=True)
    assert plan_of("group_specs/Tx.yaml")[1].orbit == [x1]
    assert plan_of("group_specs/Ty.yaml")[1].orbit == [x0]
    assert plan_of("group_specs/Trivial2.yaml")[1].orbit == [x0, x1]
    for path in ["group_specs/Tx.yaml", "group_specs/T2.yaml", "group_specs/Trivial3.yaml"]:
        assert plan_of(path)[1].stabilizer.dim == 0


def test_declared_lifts_stabilizers():
    spec, plan = plan_of("group_specs/SO3.yaml")
    assert plan.kind == "declared" and plan.stabilizer.names(spec) == "span{rz}" and plan.stabilizer.compact
    assert plan.verified["orbit"].startswith("proved")
    assert plan.haar.density == "pair" and plan.haar.density_max == 1.0
    for path in ["group_specs/SO2.yaml", "group_specs/RxSO2.yaml", "group_specs/Rx.yaml", "group_specs/Boost.yaml"]:
        assert plan_of(path)[1].stabilizer.dim == 0, path


def test_noncompact_stabilizer_needs_window():
    spec, plan = plan_of("tests/specs/Sim3.yaml")
    assert not plan.available and "window" in plan.reason and "not compact" in plan.reason
    spec, plan = plan_of("group_specs/Sim2.yaml")
    st = plan.stabilizer
    assert plan.available and not st.compact and st.window == {1: 1.0}
    assert st.box == pytest.approx([math.pi, 1.0])


def test_haar_density_kinds():
    assert plan_of("tests/specs/SO2xSO2.yaml")[1].haar.density == "uniform"  # abelian: ad = 0
    assert plan_of("tests/specs/SO4numeric.yaml")[1].haar.density == "eig"  # two eigenvalue pairs
    for path in ["tests/specs/SO21.yaml", "tests/specs/Heisenberg.yaml", "group_specs/Boost.yaml", "group_specs/Rx.yaml"]:
        assert plan_of(path)[1].haar is None, path


def test_invariant_pd_form_is_basis_independent():
    J = sympy.Matrix([[0, -1, 0], [1, 0, 0], [0, 0, 0]])
    gens = [J, sympy.Matrix([[0, 0, 1], [0, 0, 0], [-1, 0, 0]]), sympy.Matrix([[0, 0, 0], [0, 0, -1], [0, 1, 0]])]
    P = sympy.Matrix([[1, 2, 0], [0, 1, -1], [1, 0, 3]])
    conj = [P * G * P.inv() for G in gens]
    M = invariant_pd_form(conj, 3)
    assert M is not None and M.is_positive_definite and all(X.T * M + M * X == sympy.zeros(3) for X in conj)
    two = [sympy.diag(sympy.Matrix([[0, -1], [1, 0]]), sympy.zeros(2)), sympy.diag(sympy.zeros(2), sympy.Matrix([[0, -2], [2, 0]]))]
    Q = sympy.Matrix([[1, 1, 0, 0], [0, 1, 0, 1], [0, 0, 2, 0], [1, 0, 0, 1]])
    assert invariant_pd_form([Q * X * Q.inv() for X in two], 4) is not None
    assert invariant_pd_form([sympy.Matrix([[0, 1], [1, 0]])], 2) is None  # boost
    assert invariant_pd_form([sympy.Matrix([[0, 1], [0, 0]])], 2) is None  # shear


# --------------------------------------------------------------------------------------------
# validation of the lift: block (one-line SpecErrors)
# --------------------------------------------------------------------------------------------


BAD = [
    (SO2 + "lift: {orbits: []}\n", "lift.orbits", "did you mean 'orbit'"),
    (SO2 + "lift: {orbit: [], origin: [1, 0]}\n", "lift.section", "together"),
    (SO2 + "lift: {orbit: x0, origin: [1, 0], section: {theta: 0}}\n", "lift.orbit", "list"),
    (SO2 + "lift: {orbit: ['x0; import os'], origin: [q0, 0], section: {theta: 0}}\n", "lift.orbit[0]", "not a valid"),
    (SO2 + "lift: {orbit: [y0], origin: [q0, 0], section: {theta: 0}}\n", "lift.orbit[0]", "unknown symbol"),
    (SO2 + "lift: {orbit: ['foo(x0)'], origin: [q0, 0], section: {theta: 0}}\n", "lift.orbit[0]", "unknown function"),
    (SO2 + "lift: {orbit: [x0], origin: [q0], section: {theta: 0}}\n", "lift.origin", "2 expressions"),
    (SO2 + "lift: {orbit: [x0], origin: [x0, 0], section: {theta: 0}}\n", "lift.origin[0]", "unknown symbol"),
    (SO2 + "lift: {orbit: [x0], origin: [q0, 0], section: {phi: 1}}\n", "lift.section.phi", "unknown generator"),
    (SO2 + "lift: {orbit: [x0], origin: [q0, 0], section: [1]}\n", "lift.section", "mapping"),
    (SO2 + "lift: {orbit: [x0], origin: [q0, 0], section: {theta: [1]}}\n", "lift.section.theta", "number or an expression"),
    (SO2 + "lift: {window: {theta: -1}}\n", "lift.window.theta", "positive"),
    (SO2 + "lift: {window: {phi: 1}}\n", "lift.window.phi", "unknown generator"),
    (SO2 + "lift: {window: 1}\n", "lift.window", "mapping"),
    (SO2 + "lift: {window: {theta: 1}}\n", "lift.window", "needs a lift"),
    (SO2_LIFT + "  test_points: [[1, 2, 3]]\n", "lift.test_points[0]", "2 numbers"),
    (SIM2 + "lift: {window: {theta: 1}}\n", "lift.window", "does not bound"),
    (SO2 + "lift: {orbit: ['sqrt(x0**2+x1**2)'], origin: ['cos(q0)', 'sin(q0)'], section: {theta: 0}}\n",
     "lift.origin", "not algebraic"),
    (SIM2.replace("Sim2L", "SE2L").replace("  s: [[1,0,0],[0,1,0],[0,0,0]]\n", "")
     + "lift: {orbit: [x0], origin: [q0, 0], section: {tx: x0}}\n", "lift.origin", "depends on the orbit"),
]


@pytest.mark.parametrize("text, field, words", BAD, ids=[b[1] + ":" + b[2] for b in BAD])
def test_invalid_lift_blocks(text, field, words):
    spec = parse_spec(text, "bad.yaml")
    with pytest.raises(SpecError) as info:
        derive_lift(spec, analyze(spec))
    msg = str(info.value)
    assert "\n" not in msg and info.value.field == field, msg
    assert words.lower() in msg.lower(), msg


# --------------------------------------------------------------------------------------------
# generated modules
# --------------------------------------------------------------------------------------------


def test_spec_without_lift_still_generates_and_loads(tmp_path):
    G = build(tmp_path, (ROOT / "tests/specs/SO2xSO2.yaml").read_text())
    a = torch.tensor([[0.3, -1.2]], dtype=torch.float64)
    assert torch.allclose(G.log(G.exp(a)), a)
    assert not G.can_lift
    with pytest.raises(ValueError, match=r"cannot lift points: .*add a `lift:` block"):
        G.lift(torch.zeros(1, 2, 4), torch.zeros(1, 2, 1), torch.ones(1, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="lift:"):
        G.orbit(torch.zeros(4))
    assert G.sample_haar((5,)).shape == (5, 4, 4)  # compact: Haar sampling works without a lift
    assert lift_check_rows(G) == []


def test_declared_window_makes_sim3_lift(tmp_path):
    text = (ROOT / "tests/specs/Sim3.yaml").read_text().replace("name: Sim3", "name: Sim3w") + "lift: {window: {s: 0.5}}\n"
    G = build(tmp_path, text)
    assert G.can_lift and G.stabilizer_dim == 4
    _, a = G.sample_stabilizer((2000,), generator=torch.Generator().manual_seed(0), dtype=torch.float64, return_log=True)
    assert float(a[:, 3].abs().max()) <= 0.5 and float(a[:, :3].norm(dim=-1).max()) < math.pi
    rows = lift_check_rows(G, samples=32)
    assert all(w <= t for _, w, t in rows), rows


WRONG = {
    # swapped atan2 arguments: q is right, u_x . o_q(x) != x
    "section": SO2_LIFT.replace("atan2(x1, x0)", "atan2(x0, x1)"),
    # an orbit embedding that is not invariant
    "orbit": SO2_LIFT.replace('"sqrt(x0**2 + x1**2)"', '"sqrt(x0**2 + 2*x1**2)"'),
}


@pytest.mark.parametrize("what", sorted(WRONG))
def test_wrong_declared_lift_is_reported(tmp_path, what):
    G = build(tmp_path, WRONG[what])
    rows = {name: (worst, tol) for name, worst, tol in lift_check_rows(G, samples=64)}
    failed = [name for name, (worst, tol) in rows.items() if not worst <= tol]
    key = "u_x . o_q(x) == x" if what == "section" else "q(g.x) == q(x)"
    hits = [name for name in failed if key in name]
    assert len(hits) == 2, failed  # float64 and float32
    for name in hits:
        assert rows[name][0] > 1e3 * rows[name][1]  # by how much: far above the tolerance
    if what == "section":
        assert not any("q(g.x)" in name for name in failed)
    else:
        assert "not proved symbolically" in G.LIFT["verified"]["orbit"]


def test_correct_declared_lift_passes(tmp_path):
    G = build(tmp_path, SO2_LIFT)
    rows = lift_check_rows(G, samples=64)
    assert rows and all(w <= t for _, w, t in rows), rows
    assert any("[proved symbolically]" in name for name, _, _ in rows)
