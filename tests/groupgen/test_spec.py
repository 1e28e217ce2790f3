"""Tests for groupgen.spec: parsing, exact entries, and one test per malformed case."""

from __future__ import annotations

import ast
import hashlib
import textwrap

import pytest
import sympy

from groupgen.spec import GroupSpec, SpecError, find_specs, load_spec, parse_spec

SE2 = """\
name: SE2
description: rotations and translations of the plane
action: affine
generators:
  theta: [[0,-1,0],[1,0,0],[0,0,0]]
  tx: [[0,0,1],[0,0,0],[0,0,0]]
  ty: [[0,0,0],[0,0,1],[0,0,0]]
defaults: {alpha: 0.2, lift_samples: 2}
"""

SO2 = """\
name: SO2
action: linear
generators:
  rz: [[0,-1],[1,0]]
"""


def write(tmp_path, text, name="spec.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def expect_error(tmp_path, text, field, *keywords, name="bad.yaml"):
    """Load ``text`` from a file and check the one-line SpecError it raises."""
    path = write(tmp_path, text, name)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    err = info.value
    msg = str(err)
    assert "\n" not in msg
    assert msg == f"{err.file}: {err.field}: {err.message}"
    assert name in msg and err.file == str(path)
    assert err.field == field, msg
    for word in keywords:
        assert word.lower() in msg.lower(), (word, msg)
    return err


# ---------------------------------------------------------------------------
# valid specs
# ---------------------------------------------------------------------------


def test_se2(tmp_path):
    path = write(tmp_path, SE2, "se2.yaml")
    spec = load_spec(path)
    assert isinstance(spec, GroupSpec)
    assert spec.name == "SE2"
    assert spec.description == "rotations and translations of the plane"
    assert spec.action == "affine"
    assert spec.generator_names == ("theta", "tx", "ty")
    assert spec.rep_dim == 3 and spec.space_dim == 2
    assert all(isinstance(g, sympy.ImmutableMatrix) for g in spec.generators)
    assert spec.generators[0] == sympy.Matrix([[0, -1, 0], [1, 0, 0], [0, 0, 0]])
    assert spec.defaults == {"alpha": 0.2, "lift_samples": 2}
    assert spec.lift is None and spec.numeric_fallback is False
    assert spec.path == str(path)
    assert spec.source_hash == hashlib.sha256(path.read_bytes()).hexdigest()

    c = spec.structure_constants
    # [theta, tx] = ty, [theta, ty] = -tx, [tx, ty] = 0, antisymmetric
    assert c[0][1] == (0, 0, 1)
    assert c[1][0] == (0, 0, -1)
    assert c[0][2] == (0, -1, 0)
    assert c[1][2] == (0, 0, 0)
    assert all(c[i][i] == (0, 0, 0) for i in range(3))
    gens = spec.generators
    for i in range(3):
        for j in range(3):
            bracket = gens[i] * gens[j] - gens[j] * gens[i]
            combo = sum((c[i][j][k] * gens[k] for k in range(3)), sympy.zeros(3, 3))
            assert bracket == combo


def test_parse_spec_string_and_hash():
    spec = parse_spec(SO2)
    assert spec.path == "<string>"
    assert spec.source_hash == hashlib.sha256(SO2.encode()).hexdigest()
    assert spec.rep_dim == spec.space_dim == 2
    assert spec.structure_constants == (((0,),),)


def test_trivial_group(tmp_path):
    spec = load_spec(write(tmp_path, "name: Trivial\naction: linear\ngenerators: {}\nspace_dim: 3\n"))
    assert spec.generator_names == () and spec.generators == ()
    assert spec.rep_dim == 3 and spec.space_dim == 3
    assert spec.structure_constants == ()
    affine = parse_spec("name: T\naction: affine\ngenerators: {}\nspace_dim: 3\n")
    assert affine.rep_dim == 4 and affine.space_dim == 3


def test_exact_string_and_float_entries():
    spec = parse_spec(
        """\
name: Scaled
action: linear
generators:
  h: [["sqrt(2)", 0], [0, "1/2"]]
  e: [[0, 0.1], [0, 0]]
"""
    )
    h, e = spec.generators
    assert h[0, 0] == sympy.sqrt(2)
    assert h[1, 1] == sympy.Rational(1, 2)
    assert e[0, 1] == sympy.Rational(1, 10)  # exact, not the binary float
    # [h, e] = (sqrt(2) - 1/2) e
    assert spec.structure_constants[0][1] == (0, sympy.sqrt(2) - sympy.Rational(1, 2))
    assert spec.structure_constants[1][0] == (0, sympy.Rational(1, 2) - sympy.sqrt(2))


def test_space_dim_consistent_and_optional_fields():
    spec = parse_spec(
        SE2 + "space_dim: 2\nlift: {method: sample}\nnumeric_fallback: true\n", "x.yaml"
    )
    assert spec.space_dim == 2
    assert spec.lift == {"method": "sample"}
    assert spec.numeric_fallback is True


def test_se3_six_generators_fast():
    import time

    def e(i, j):
        m = [[0] * 4 for _ in range(4)]
        m[i][j] = 1
        return m

    def rot(i, j):
        m = e(i, j)
        m[j][i] = -1
        return m

    gens = {"rx": rot(2, 1), "ry": rot(0, 2), "rz": rot(1, 0), "tx": e(0, 3), "ty": e(1, 3), "tz": e(2, 3)}
    body = "\n".join(f"  {k}: {v}" for k, v in gens.items())
    start = time.perf_counter()
    spec = parse_spec(f"name: SE3\naction: affine\ngenerators:\n{body}\n")
    assert time.perf_counter() - start < 1.0
    assert spec.space_dim == 3
    assert spec.structure_constants[0][1] == (0, 0, 1, 0, 0, 0)  # [rx, ry] = rz
    assert spec.structure_constants[0][4] == (0, 0, 0, 0, 0, 1)  # [rx, ty] = tz


def test_find_specs(tmp_path):
    for name in ("b.yaml", "a.yml", "c.txt"):
        (tmp_path / name).write_text(SO2)
    (tmp_path / "sub.yaml").mkdir()
    assert find_specs(tmp_path) == [str(tmp_path / "a.yml"), str(tmp_path / "b.yaml")]


def test_spec_does_not_import_torch():
    import groupgen.spec as mod

    with open(mod.__file__) as fh:
        tree = ast.parse(fh.read())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert "torch" not in imported


# ---------------------------------------------------------------------------
# malformed specs: one test per case
# ---------------------------------------------------------------------------


L = "name: X\naction: linear\ngenerators:\n"  # a spec's head, generators to follow
#: case -> (spec text, field the error names, words the message must contain)
MALFORMED = {
    "top level not a mapping": ("- name\n- action\n", "(root)", "not a mapping"),
    "empty file": ("", "(root)", "empty"),
    "missing required field": ("name: X\ngenerators: {}\nspace_dim: 2\n", "action", "missing"),
    "unknown field": (SO2 + "colour: red\n", "colour", "unknown field"),
    "unknown field, suggested": ("name: X\naction: linear\ngenerator: {}\n", "generator", "did you mean 'generators'"),
    "bad name": (SO2.replace("name: SO2", "name: 2-sphere"), "name", "identifier"),
    "bad action": (SO2.replace("action: linear", "action: projective"), "action", "invalid action"),
    "generators not a mapping": (L + "  - [[0,-1],[1,0]]\n", "generators", "not a mapping"),
    "bad generator name": (L + "  r-z: [[0,-1],[1,0]]\n", "generators.r-z", "identifier"),
    "duplicate generator name": (L + "  a: [[1,0],[0,0]]\n  a: [[0,0],[0,1]]\n", "generators.a", "duplicate"),
    "matrix not a list of lists": (L + "  rz: [0, -1, 1, 0]\n", "generators.rz", "list of lists"),
    "ragged matrix": (L + "  rz: [[0,-1],[1]]\n", "generators.rz", "ragged"),
    "unparsable entry": (L + "  a: [[0, '1/'],[1, 0]]\n", "generators.a", "row 1, column 2", "cannot be parsed"),
    "unsafe entry": (L + "  a: [[0, '__import__(\"os\")'],[1, 0]]\n", "generators.a", "row 1, column 2", "not a number"),
    "boolean entry": (L + "  a: [[0, true],[1, 0]]\n", "generators.a", "row 1, column 2", "boolean"),
    "complex entry": (L + "  a: [[0, '1 + I'],[1, 0]]\n", "generators.a", "row 1, column 2", "complex"),
    "nan entry": (L + "  a: [[0, 'nan'],[1, 0]]\n", "generators.a", "row 1, column 2", "not finite"),
    "oo entry": (L + "  a: [[0, 'oo'],[1, 0]]\n", "generators.a", "row 1, column 2", "not finite"),
    "inf entry": (L + "  a: [[0, .inf],[1, 0]]\n", "generators.a", "row 1, column 2", "not finite"),
    "huge entry": (L + "  a: [[0, -1e300],[1e300, 0]]\n", "generators.a", "row 1, column 2", "rescale"),
    "empty generators without space_dim": ("name: X\naction: linear\ngenerators: {}\n", "space_dim", "required"),
    "bad space_dim": ("name: X\naction: linear\ngenerators: {}\nspace_dim: two\n", "space_dim", "positive integer"),
    "affine last row not zero": (SE2.replace("tx: [[0,0,1],[0,0,0],[0,0,0]]", "tx: [[0,0,1],[0,0,0],[0,0,1]]"),
                                 "generators.tx", "last row", "not zero"),
    "zero generator": (L + "  a: [[0,0],[0,0]]\n", "generators.a", "linearly dependent", "zero matrix"),
    "unknown default": (SO2 + "defaults: {alpha: 0.2, beta: 1}\n", "defaults.beta", "unknown default"),
    "negative alpha": (SO2 + "defaults: {alpha: -1}\n", "defaults.alpha", ">= 0"),
    "alpha not a number": (SO2 + "defaults: {alpha: big}\n", "defaults.alpha", "real number"),
    "lift_samples 0": (SO2 + "defaults: {lift_samples: 0}\n", "defaults.lift_samples", "integer >= 1"),
    "lift_samples 1.5": (SO2 + "defaults: {lift_samples: 1.5}\n", "defaults.lift_samples", "integer >= 1"),
    "defaults not a mapping": (SO2 + "defaults: [0.2]\n", "defaults", "not a mapping"),
    "numeric_fallback not a boolean": (SO2 + "numeric_fallback: 'yes please'\n", "numeric_fallback", "true or false"),
    "lift not a mapping": (SO2 + "lift: sample\n", "lift", "not a mapping"),
    "description not a string": (SO2 + "description: [a, b]\n", "description", "not a string"),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_spec_is_one_line_naming_the_field(tmp_path, case):
    text, fld, *needles = MALFORMED[case]
    expect_error(tmp_path, text, fld, *needles)



def test_unreadable_file(tmp_path):
    with pytest.raises(SpecError) as info:
        load_spec(tmp_path / "missing.yaml")
    msg = str(info.value)
    assert "\n" not in msg and "missing.yaml" in msg and info.value.field == "file"
    assert "cannot read" in msg


def test_yaml_syntax_error(tmp_path):
    err = expect_error(tmp_path, "name: X\naction: [linear\ngenerators: {}\n", "yaml", "invalid YAML")
    assert "line 3" in err.message and "column" in err.message


def test_non_square_matrix(tmp_path):
    text = "name: X\naction: linear\ngenerators:\n  tx: [[0,0,1],[0,0,0]]\n"
    err = expect_error(tmp_path, text, "generators.tx", "not square")
    assert "2 rows" in err.message and "3 entries" in err.message


def test_size_mismatch(tmp_path):
    text = "name: X\naction: linear\ngenerators:\n  a: [[0,-1],[1,0]]\n  b: [[1,0,0],[0,0,0],[0,0,0]]\n"
    err = expect_error(tmp_path, text, "generators.b", "size mismatch")
    assert " a " in err.message and "b " in err.message


def test_non_numeric_entry(tmp_path):
    text = "name: X\naction: linear\ngenerators:\n  a: [[0, x],[1, 0]]\n"
    err = expect_error(tmp_path, text, "generators.a", "not a number")
    assert "row 1, column 2" in err.message


def test_space_dim_mismatch(tmp_path):
    err = expect_error(tmp_path, SE2 + "space_dim: 3\n", "space_dim", "space_dim is 3")
    assert "space_dim: 2" in err.message


def test_linearly_dependent(tmp_path):
    text = """\
name: X
action: linear
generators:
  a: [[1,0],[0,0]]
  b: [[0,0],[0,1]]
  c: [[2,0],[0,-1]]
"""
    err = expect_error(tmp_path, text, "generators.c", "linearly dependent")
    assert "c = 2*a - b" in err.message



def test_so3_not_closed(tmp_path):
    text = """\
name: SO3
action: linear
generators:
  rx: [[0,0,0],[0,0,-1],[0,1,0]]
  ry: [[0,0,1],[0,0,0],[-1,0,0]]
"""
    err = expect_error(tmp_path, text, "generators", "[rx, ry]", "not in the span", "not closed")
    assert "[[0, -1, 0], [1, 0, 0], [0, 0, 0]]" in err.message  # = rz





def test_find_specs_bad_directory(tmp_path):
    with pytest.raises(SpecError):
        find_specs(tmp_path / "nope")


def test_one_expression_parser_for_entries_and_the_lift_block():
    """groupgen.expressions.parse serves both: exact numbers, the allowed characters, sympy's namespace for
    entries and a given vocabulary for lift expressions; its error kinds become each caller's message."""
    from groupgen.expressions import MINIMAL_GLOBALS, ExpressionError, parse

    assert parse(3, max_len=10) == 3 and parse(0.1, max_len=10) == sympy.Rational(1, 10)
    assert parse("sqrt(2)/2", max_len=20) == sympy.sqrt(2) / 2
    x0 = sympy.Symbol("x0", real=True)
    assert parse("atan2(x0, 1)", max_len=50, local_dict={"atan2": sympy.atan2, "x0": x0},
                 global_dict=MINIMAL_GLOBALS) == sympy.atan2(x0, 1)
    for value, kind in ((True, "type"), (None, "type"), (float("inf"), "not-finite"), ("  ", "empty"),
                        ("x" * 30, "invalid"), ("a[0]", "invalid"), ("2**", "unparsable"), ("(1, 2)", "not-expression")):
        with pytest.raises(ExpressionError) as err:
            parse(value, max_len=20)
        assert err.value.kind == kind, value
