"""Parse and validate one group spec (YAML) into an exact sympy description.

A spec declares a matrix Lie group by the generators of its Lie algebra::

    name: SE2
    description: rotations and translations of the plane
    action: affine
    generators:
      theta: [[0,-1,0],[1,0,0],[0,0,0]]
      tx: [[0,0,1],[0,0,0],[0,0,0]]
      ty: [[0,0,0],[0,0,1],[0,0,0]]
    defaults: {alpha: 0.2, lift_samples: 2}

`load_spec` / `parse_spec` return a `GroupSpec` whose generators are exact
``sympy.ImmutableMatrix`` objects, together with the structure constants of
the algebra.  Every problem with a spec is reported as a one-line `SpecError`
("{file}: {field}: {message}") that says what is wrong and how to fix it.

All linear algebra is exact: generator entries are put into one exact domain
(the rationals, an algebraic number field such as QQ<sqrt(2)>, or sympy's
expression domain as a last resort) and the independence / closure checks are
done by a single reduced row echelon form of the stacked, flattened matrices.

This module must not import torch.
"""

from __future__ import annotations

import difflib
import hashlib
import keyword
import math
import os
from dataclasses import dataclass, field
from typing import Any

import sympy
import yaml
from sympy.polys.constructor import construct_domain
from sympy.polys.domains import EX
from sympy.polys.matrices import DomainMatrix

from groupgen.expressions import ExpressionError, parse

__all__ = ["GroupSpec", "SpecError", "find_specs", "load_spec", "parse_spec"]

REQUIRED_FIELDS = ("name", "action", "generators")
OPTIONAL_FIELDS = ("description", "defaults", "space_dim", "lift", "numeric_fallback", "metric")
ALLOWED_FIELDS = REQUIRED_FIELDS + OPTIONAL_FIELDS
ACTIONS = ("linear", "affine")
DEFAULT_KEYS = ("alpha", "lift_samples")

_REQUIRED_EXAMPLES = {
    "name": "name: SE2",
    "action": "action: linear   (or affine)",
    "generators": "generators: {rz: [[0,-1],[1,0]]}",
}


# --------------------------------------------------------------------------
# public types
# --------------------------------------------------------------------------


class SpecError(Exception):
    """A problem with a spec file; ``str(err)`` is ``"{file}: {field}: {message}"``."""

    def __init__(self, file: str, field: str, message: str):
        self.file = str(file)
        self.field = str(field)
        # Keep the report on one line whatever the message came from.
        self.message = " ".join(str(message).split())
        super().__init__(f"{self.file}: {self.field}: {self.message}")

    def __str__(self) -> str:
        return f"{self.file}: {self.field}: {self.message}"


@dataclass(frozen=True)
class GroupSpec:
    name: str
    description: str
    action: str  # 'linear' | 'affine'
    generator_names: tuple[str, ...]
    generators: tuple[sympy.ImmutableMatrix, ...]
    rep_dim: int
    space_dim: int
    # c[i][j][k] with [G_i, G_j] = sum_k c[i][j][k] G_k (antisymmetric in i, j)
    structure_constants: tuple
    defaults: dict = field(hash=False)
    lift: dict | None = field(hash=False)
    numeric_fallback: bool
    path: str
    source_hash: str
    # the metric on the Lie algebra: d^2 = a^T M a; None = the Frobenius Gram tr(G_k^T G_l)
    metric: sympy.ImmutableMatrix | None = None

    @property
    def dim(self) -> int:
        """Dimension of the Lie algebra (number of generators)."""
        return len(self.generators)


# --------------------------------------------------------------------------
# public functions
# --------------------------------------------------------------------------


def load_spec(path: str | os.PathLike) -> GroupSpec:
    """Read and validate the spec file at ``path``."""
    path_str = os.fspath(path)
    try:
        with open(path_str, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        reason = exc.strerror or exc.__class__.__name__
        raise SpecError(
            path_str, "file", f"cannot read the spec file ({reason}); check the path and permissions"
        ) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(
            path_str,
            "file",
            f"file is not valid UTF-8 (byte {exc.start}); save it as UTF-8 text",
        ) from None
    return _parse(text, path_str, hashlib.sha256(data).hexdigest())


def parse_spec(text: str, path: str = "<string>") -> GroupSpec:
    """Validate spec ``text``; ``path`` is only used in error messages and ``GroupSpec.path``."""
    return _parse(text, path, hashlib.sha256(text.encode("utf-8")).hexdigest())


def find_specs(directory: str | os.PathLike) -> list[str]:
    """Sorted paths of the ``*.yaml`` and ``*.yml`` files directly inside ``directory``."""
    dir_str = os.fspath(directory)
    try:
        names = os.listdir(dir_str)
    except OSError as exc:
        reason = exc.strerror or exc.__class__.__name__
        raise SpecError(
            dir_str, "directory", f"cannot list the spec directory ({reason}); check the path"
        ) from None
    paths = [
        os.path.join(dir_str, name)
        for name in names
        if name.endswith((".yaml", ".yml")) and os.path.isfile(os.path.join(dir_str, name))
    ]
    return sorted(paths)


# --------------------------------------------------------------------------
# YAML
# --------------------------------------------------------------------------


def _load_yaml(text: str, file: str) -> Any:
    """safe_load ``text``, rejecting duplicate mapping keys (PyYAML silently keeps the last)."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_duplicate_keys(node, "", file)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise SpecError(file, "yaml", _yaml_message(exc)) from None
    finally:
        loader.dispose()


def _yaml_message(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    what = f"{context}, {problem}" if context else problem
    return f"invalid YAML{where}: {what}; fix the YAML syntax there"


def _check_duplicate_keys(node: yaml.Node, prefix: str, file: str) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, yaml.Node] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            child = f"{prefix}.{key}" if prefix else str(key)
            if key is not None:
                if key in seen:
                    first = seen[key].start_mark.line + 1
                    again = key_node.start_mark.line + 1
                    raise SpecError(
                        file,
                        child,
                        f"duplicate key (lines {first} and {again}); "
                        "each key may appear only once, rename or remove one",
                    )
                seen[key] = key_node
            _check_duplicate_keys(value_node, child, file)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _check_duplicate_keys(item, f"{prefix}[{i}]", file)


# --------------------------------------------------------------------------
# exact entries
# --------------------------------------------------------------------------

_MAX_EXPR_LEN = 200


class _EntryError(ValueError):
    pass


#: Nonzero entries must lie in [1/MAX_ENTRY, MAX_ENTRY] in magnitude.  The emitted code multiplies up
#: to four entries (delta(a) is quadratic in a with coefficients quadratic in the entries) and the dual
#: basis (vee) scales like 1/entry, so this keeps every emitted constant inside 1e+-24, well within
#: float32's range (1e+-38) and far from float64 overflow.  Rescale a generator to fit.
MAX_ENTRY = 1e6


_HOW = 'use an int, a decimal, or an exact expression in quotes such as "1/2" or "sqrt(2)"'


def _exact_entry(value: Any) -> sympy.Expr:
    """Convert one matrix entry to an exact real sympy number, or raise _EntryError."""
    if isinstance(value, bool):
        raise _EntryError(f"{str(value).lower()} is a boolean, not a number; {_HOW}")
    if value is None:
        raise _EntryError(f"entry is empty (null); {_HOW}")
    if isinstance(value, (list, dict)):
        kind = "a list" if isinstance(value, list) else "a mapping"
        raise _EntryError(f"entry is {kind}, not a number; {_HOW}")
    try:
        expr = parse(value, max_len=_MAX_EXPR_LEN)
    except ExpressionError as exc:
        raise _EntryError({
            "type": f"{value!r} ({type(value).__name__}) is not a number; {_HOW}",
            "not-finite": f"{value!r} is not finite; {_HOW}",
            "empty": f"entry is an empty string; {_HOW}",
            "invalid": f"{value!r} is not a number expression; {_HOW}",
            "unparsable": f"{value!r} cannot be parsed as a number ({exc.detail}); {_HOW}",
            "not-expression": f"{value!r} is not a number; {_HOW}",
        }[exc.kind]) from None
    if expr.free_symbols:
        names = ", ".join(sorted(str(s) for s in expr.free_symbols))
        raise _EntryError(
            f"{value!r} is not a number (it contains the symbol(s) {names}); {_HOW}"
        )
    if expr.has(sympy.nan, sympy.zoo, sympy.oo, -sympy.oo) or expr.is_finite is False:
        raise _EntryError(f"{value!r} is not finite; {_HOW}")
    if not expr.is_number:
        raise _EntryError(f"{value!r} is not a number (unknown function); {_HOW}")
    if expr.is_real is False:
        raise _EntryError(f"{value!r} is complex; entries must be real numbers")
    if expr.is_real is None:
        imag = sympy.simplify(sympy.im(expr))
        if imag.is_zero is not True:
            raise _EntryError(
                f"{value!r} is complex (or cannot be shown to be real); entries must be real numbers"
            )
        expr = sympy.simplify(sympy.re(expr))
    return expr


# --------------------------------------------------------------------------
# field validation
# --------------------------------------------------------------------------


def _did_you_mean(word: Any, options: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(str(word), options, n=1)
    return f"did you mean '{close[0]}'? " if close else ""


def _check_identifier(value: Any, file: str, fld: str, what: str, example: str) -> str:
    if not isinstance(value, str):
        raise SpecError(
            file,
            fld,
            f"{what} {value!r} is of type {type(value).__name__}, not a string; use a Python "
            f"identifier such as {example} (quote it if YAML reads it as something else)",
        )
    if not value.isidentifier() or keyword.iskeyword(value):
        raise SpecError(
            file,
            fld,
            f"{what} {value!r} is not a valid Python identifier; use letters, digits and "
            "underscores, not starting with a digit and not a Python keyword",
        )
    return value


def _check_top_level(data: Any, file: str) -> dict:
    if data is None:
        raise SpecError(
            file, "(root)", "the spec is empty; give a mapping with the keys name, action and generators"
        )
    if not isinstance(data, dict):
        raise SpecError(
            file,
            "(root)",
            f"top level is a {type(data).__name__}, not a mapping; "
            "give a mapping with the keys name, action and generators",
        )
    for key in data:
        if key not in ALLOWED_FIELDS:
            raise SpecError(
                file,
                str(key),
                f"unknown field; {_did_you_mean(key, ALLOWED_FIELDS)}"
                f"allowed fields are {', '.join(ALLOWED_FIELDS)}",
            )
    for key in REQUIRED_FIELDS:
        if key not in data:
            raise SpecError(
                file, key, f"required field is missing; add it, e.g. '{_REQUIRED_EXAMPLES[key]}'"
            )
    return data


def _check_action(value: Any, file: str) -> str:
    if value not in ACTIONS or not isinstance(value, str):
        raise SpecError(
            file,
            "action",
            f"invalid action {value!r}; {_did_you_mean(value, ACTIONS)}"
            "use 'linear' (acts on R^n) or 'affine' (acts on R^(n-1) via [x; 1])",
        )
    return value


def _check_description(value: Any, file: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise SpecError(
            file,
            "description",
            f"description is a {type(value).__name__}, not a string; quote it",
        )
    return value


def _check_space_dim(value: Any, file: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SpecError(
            file, "space_dim", f"space_dim must be a positive integer, got {value!r}; give e.g. 'space_dim: 3'"
        )
    return value


def _check_defaults(value: Any, file: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SpecError(
            file,
            "defaults",
            f"defaults is a {type(value).__name__}, not a mapping; "
            "give e.g. 'defaults: {alpha: 0.2, lift_samples: 2}'",
        )
    out: dict[str, Any] = {}
    for key, item in value.items():
        fld = f"defaults.{key}"
        if key == "alpha":
            if isinstance(item, bool) or not isinstance(item, (int, float)) or not math.isfinite(item):
                raise SpecError(file, fld, f"alpha must be a real number >= 0, got {item!r}")
            if item < 0:
                raise SpecError(file, fld, f"alpha must be >= 0, got {item!r}; use a non-negative value")
            out["alpha"] = float(item)
        elif key == "lift_samples":
            if isinstance(item, bool) or not isinstance(item, int) or item < 1:
                raise SpecError(file, fld, f"lift_samples must be an integer >= 1, got {item!r}")
            out["lift_samples"] = item
        else:
            raise SpecError(
                file,
                fld,
                f"unknown default; {_did_you_mean(key, DEFAULT_KEYS)}"
                f"allowed defaults are {', '.join(DEFAULT_KEYS)}",
            )
    return out


def _check_lift(value: Any, file: str) -> dict | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise SpecError(
            file, "lift", f"lift is a {type(value).__name__}, not a mapping; give a mapping or leave it out"
        )
    return value


def _check_numeric_fallback(value: Any, file: str) -> bool:
    if not isinstance(value, bool):
        raise SpecError(
            file, "numeric_fallback", f"numeric_fallback must be true or false, got {value!r}"
        )
    return value


def _parse_matrix(name: str, value: Any, file: str) -> sympy.ImmutableMatrix:
    """One generator: an n x n list of rows of exact real entries."""
    fld = f"generators.{name}"
    how = "give an n x n list of rows, e.g. [[0,-1],[1,0]]"
    if not isinstance(value, list) or not all(isinstance(row, list) for row in value):
        raise SpecError(file, fld, f"matrix is not a list of lists (rows); {how}")
    if not value:
        raise SpecError(file, fld, f"matrix is empty; {how}")
    lengths = [len(row) for row in value]
    for r, length in enumerate(lengths):
        if length != lengths[0]:
            raise SpecError(
                file,
                fld,
                f"matrix is ragged (row 1 has {lengths[0]} entries, row {r + 1} has {length}); {how}",
            )
    n = len(value)
    if lengths[0] != n:
        raise SpecError(
            file,
            fld,
            f"matrix is not square ({n} rows, row 1 has {lengths[0]} entries); {how}",
        )
    rows = []
    for r, row in enumerate(value):
        exact_row = []
        for c, entry in enumerate(row):
            try:
                exact = _exact_entry(entry)
            except _EntryError as exc:
                raise SpecError(file, fld, f"row {r + 1}, column {c + 1}: {exc}") from None
            size = abs(float(exact)) if exact != 0 else 0.0
            if size and not 1 / MAX_ENTRY <= size <= MAX_ENTRY:
                raise SpecError(
                    file, fld,
                    f"row {r + 1}, column {c + 1}: entry {entry} is outside the range the emitted code can "
                    f"evaluate ({1 / MAX_ENTRY:g} <= |entry| <= {MAX_ENTRY:g} for nonzero entries; float32 would "
                    "overflow or lose it); rescale this generator",
                )
            exact_row.append(exact)
        rows.append(exact_row)
    return sympy.ImmutableMatrix(rows)


def _parse_generators(value: Any, file: str) -> tuple[tuple[str, ...], tuple[sympy.ImmutableMatrix, ...]]:
    if not isinstance(value, dict):
        kind = "empty" if value is None else f"a {type(value).__name__}"
        raise SpecError(
            file,
            "generators",
            f"generators is {kind}, not a mapping; give a mapping name -> matrix "
            "(use '{}' for the trivial group, with space_dim)",
        )
    names: list[str] = []
    mats: list[sympy.ImmutableMatrix] = []
    for key, matrix in value.items():
        name = _check_identifier(key, file, f"generators.{key}", "generator name", "tx")
        mat = _parse_matrix(name, matrix, file)
        if mats and mat.shape != mats[0].shape:
            raise SpecError(
                file,
                f"generators.{name}",
                f"size mismatch: {name} is {mat.rows} x {mat.cols} but {names[0]} is "
                f"{mats[0].rows} x {mats[0].cols}; all generators must have the same size",
            )
        names.append(name)
        mats.append(mat)
    return tuple(names), tuple(mats)


# --------------------------------------------------------------------------
# exact linear algebra
# --------------------------------------------------------------------------


def _field_of(entries: list[sympy.Expr]):
    """An exact field holding all ``entries`` and the entries converted into it."""
    try:
        dom, elems = construct_domain(entries, extension=True)
    except Exception:  # e.g. an algebraic number sympy cannot put in a number field
        dom, elems = EX, None
    if elems is None or dom.is_EX or dom.is_EXRAW:
        dom = EX
        elems = [EX.from_sympy(e) for e in entries]
    if not dom.is_Field:
        fld = dom.get_field()
        elems = [fld.convert_from(e, dom) for e in elems]
        dom = fld
    return dom, elems


def _format_matrix(mat: sympy.Matrix) -> str:
    return str(mat.tolist())


def _analyze_algebra(
    names: tuple[str, ...], mats: tuple[sympy.ImmutableMatrix, ...], file: str
) -> tuple:
    """Check independence and closure; return the structure constants c[i][j][k]."""
    m = len(mats)
    if m == 0:
        return ()
    n = mats[0].rows
    n2 = n * n

    # Put every entry in one exact field and do the matrix products there.
    flat = [entry for mat in mats for entry in mat]
    dom, elems = _field_of(flat)
    gens = [
        DomainMatrix([elems[g * n2 + r * n : g * n2 + (r + 1) * n] for r in range(n)], (n, n), dom)
        for g in range(m)
    ]
    pairs = [(i, j) for i in range(m) for j in range(i + 1, m)]
    brackets = [gens[i] * gens[j] - gens[j] * gens[i] for i, j in pairs]

    # Columns: flattened generators, then flattened brackets.  One rref answers
    # both "are the generators independent?" and "is each bracket in their span?".
    columns = [elems[g * n2 : (g + 1) * n2] for g in range(m)]
    columns += [[e for row in b.to_list() for e in row] for b in brackets]
    stacked = DomainMatrix([[col[r] for col in columns] for r in range(n2)], (n2, len(columns)), dom)
    rref, pivots = stacked.rref()
    rows = rref.to_list()

    # Independence: the first non-pivot generator column is a combination of
    # all the earlier ones, which are pivots 0..j-1 in rows 0..j-1.
    for j in range(m):
        if j >= len(pivots) or pivots[j] != j:
            coeffs = [dom.to_sympy(rows[i][j]) for i in range(j)]
            combo = sum(
                (c * sympy.Symbol(names[i]) for i, c in enumerate(coeffs)), sympy.Integer(0)
            )
            if combo == 0:
                message = f"{names[j]} is the zero matrix"
            else:
                message = f"{names[j]} = {combo} is a linear combination of the earlier generators"
            raise SpecError(
                file,
                f"generators.{names[j]}",
                f"generators are linearly dependent: {message}; remove it or change it",
            )

    # Closure: a pivot beyond the generator columns is a bracket outside the span.
    if len(pivots) > m:
        i, j = pairs[pivots[m] - m]
        bracket = mats[i] * mats[j] - mats[j] * mats[i]
        raise SpecError(
            file,
            "generators",
            f"[{names[i]}, {names[j]}] = {_format_matrix(bracket.applyfunc(sympy.expand))} "
            "is not in the span of the generators; the set is not closed under the "
            "bracket: add a generator for it",
        )

    zero = sympy.Integer(0)
    c = [[[zero] * m for _ in range(m)] for _ in range(m)]
    for p, (i, j) in enumerate(pairs):
        col = m + p
        for k in range(m):
            value = dom.to_sympy(rows[k][col])
            c[i][j][k] = value
            c[j][i][k] = -value
    return tuple(tuple(tuple(row) for row in plane) for plane in c)


# --------------------------------------------------------------------------
# the whole spec
# --------------------------------------------------------------------------


_METRIC_HOW = ("give a mapping generator -> positive weight (a diagonal metric, unlisted generators weigh 1), "
               "e.g. 'metric: {theta: 0.0028}', or a symmetric positive-definite matrix in generator order")


def _check_metric(value: Any, names: tuple[str, ...], file: str) -> sympy.ImmutableMatrix | None:
    """The spec's `metric:` as an exact symmetric positive-definite matrix in generator order (None: absent)."""
    if value is None:
        return None
    n = len(names)
    if not n:
        raise SpecError(file, "metric", "the trivial group has no Lie algebra to put a metric on; remove 'metric:'")
    if isinstance(value, dict):
        weights = [sympy.Integer(1)] * n
        for key, item in value.items():
            if key not in names:
                raise SpecError(file, f"metric.{key}", f"unknown generator {key!r}; "
                                f"{_did_you_mean(key, names)}the generators are {', '.join(names)}")
            try:
                w = _exact_entry(item)
            except _EntryError as exc:
                raise SpecError(file, f"metric.{key}", f"{exc}") from None
            if not w > 0:
                raise SpecError(file, f"metric.{key}", f"weight {item} is not positive; {_METRIC_HOW}")
            weights[names.index(key)] = w
        return sympy.ImmutableMatrix(sympy.diag(*weights))
    if not isinstance(value, list) or not all(isinstance(row, list) for row in value):
        raise SpecError(file, "metric", f"metric is a {type(value).__name__}; {_METRIC_HOW}")
    if len(value) != n or any(len(row) != n for row in value):
        shape = f"{len(value)} x {len(value[0]) if value and isinstance(value[0], list) else 0}"
        raise SpecError(file, "metric", f"the matrix is {shape}, but there are {n} generators ({', '.join(names)}); "
                        f"give a {n} x {n} matrix in generator order")
    rows = []
    for r, row in enumerate(value):
        try:
            rows.append([_exact_entry(v) for v in row])
        except _EntryError as exc:
            raise SpecError(file, "metric", f"row {r + 1}: {exc}") from None
    M = sympy.ImmutableMatrix(rows)
    if M != M.T:
        i, j = next((i, j) for i in range(n) for j in range(n) if M[i, j] != M[j, i])
        raise SpecError(file, "metric", f"the matrix is not symmetric (row {i + 1}, column {j + 1} is {M[i, j]}, "
                        f"row {j + 1}, column {i + 1} is {M[j, i]}); {_METRIC_HOW}")
    minors = [M[:k, :k].det() for k in range(1, n + 1)]
    if not all(m > 0 for m in minors):
        k = next(k for k, m in enumerate(minors) if not m > 0)
        raise SpecError(file, "metric", f"the matrix is not positive definite (its leading {k + 1} x {k + 1} "
                        f"minor is {minors[k]}); {_METRIC_HOW}")
    return M


def _parse(text: str, file: str, source_hash: str) -> GroupSpec:
    data = _check_top_level(_load_yaml(text, file), file)

    name = _check_identifier(data["name"], file, "name", "name", "SE2")
    action = _check_action(data["action"], file)
    description = _check_description(data.get("description"), file)
    space_dim = _check_space_dim(data.get("space_dim"), file)
    defaults = _check_defaults(data.get("defaults"), file)
    lift = _check_lift(data.get("lift"), file)
    numeric_fallback = _check_numeric_fallback(data.get("numeric_fallback", False), file)
    names, mats = _parse_generators(data["generators"], file)

    offset = 0 if action == "linear" else 1
    if mats:
        rep_dim = mats[0].rows
        implied = rep_dim - offset
        if space_dim is not None and space_dim != implied:
            raise SpecError(
                file,
                "space_dim",
                f"space_dim is {space_dim} but {rep_dim} x {rep_dim} generators with the "
                f"{action} action act on R^{implied}; set space_dim: {implied} or leave it out",
            )
        if action == "affine":
            if rep_dim < 2:
                raise SpecError(
                    file,
                    "generators",
                    "affine generators must be at least 2 x 2 (they act on R^(n-1)); use bigger matrices",
                )
            for gname, mat in zip(names, mats):
                last = mat.row(rep_dim - 1)
                if any(entry != 0 for entry in last):
                    raise SpecError(
                        file,
                        f"generators.{gname}",
                        f"last row {_format_matrix(last)[1:-1]} is not zero; with action 'affine' "
                        "the last row of every generator must be all zeros",
                    )
        space_dim = implied
    else:
        if space_dim is None:
            raise SpecError(
                file,
                "space_dim",
                "generators is empty (the trivial group), so space_dim is required; add e.g. 'space_dim: 3'",
            )
        rep_dim = space_dim + offset

    structure_constants = _analyze_algebra(names, mats, file)
    metric = _check_metric(data.get("metric"), names, file)

    return GroupSpec(
        name=name,
        description=description,
        action=action,
        generator_names=names,
        generators=mats,
        rep_dim=rep_dim,
        space_dim=space_dim,
        structure_constants=structure_constants,
        defaults=defaults,
        lift=lift,
        numeric_fallback=numeric_fallback,
        path=file,
        source_hash=source_hash,
        metric=metric,
    )
