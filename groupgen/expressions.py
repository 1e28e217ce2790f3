"""The one parser for the expressions a spec may contain: generator entries ("1/2", "sqrt(2)") and the
`lift:` block's expressions in x and q ("atan2(x1, x0)").

`parse(value, ...)` turns an int, a float or a string into an exact sympy expression, or raises
`ExpressionError` whose `kind` says what is wrong; the callers (`groupgen.spec`, `groupgen.lift`)
turn it into their one-line `SpecError`s.  Exact: ints become Integers, floats the Rational of their
repr (0.1 is 1/10), decimals in strings are rationalized.  Strings are restricted to letters,
digits, whitespace and + - * / ^ ( ) . , before sympy sees them (no quotes, underscores, brackets).

This module must not import torch.
"""

from __future__ import annotations

import math
import re
from typing import Any

import sympy
from sympy.parsing.sympy_parser import convert_xor, parse_expr, rationalize, standard_transformations

__all__ = ["ExpressionError", "MINIMAL_GLOBALS", "parse", "sympy_namespace"]

_TRANSFORMS = standard_transformations + (convert_xor, rationalize)
_ALLOWED = re.compile(r"^[A-Za-z0-9\s+\-*/^().,]*$")
# what parse_expr itself needs when the caller names every function and symbol (local_dict)
MINIMAL_GLOBALS = {"Integer": sympy.Integer, "Float": sympy.Float, "Rational": sympy.Rational,
                   "Symbol": sympy.Symbol, "Function": sympy.Function, "__builtins__": {}}
_SYMPY_NAMESPACE: dict[str, Any] | None = None


def sympy_namespace() -> dict[str, Any]:
    """sympy's whole namespace for parse_expr, with the Python builtins removed."""
    global _SYMPY_NAMESPACE
    if _SYMPY_NAMESPACE is None:
        namespace: dict[str, Any] = {}
        exec("from sympy import *", namespace)  # noqa: S102 - fixed string
        namespace["__builtins__"] = {}
        _SYMPY_NAMESPACE = namespace
    return _SYMPY_NAMESPACE


class ExpressionError(ValueError):
    """Why a value is not an expression.

    kind: "type" (not an int, float or string; bool and None included), "not-finite" (a float inf or
    nan), "empty" (a blank string), "invalid" (too long, or characters outside the allowed set),
    "unparsable" (sympy failed; `detail` is the exception's class name) or "not-expression" (parsed
    to something that is not a sympy expression, e.g. a tuple).
    """

    def __init__(self, kind: str, detail: str = ""):
        super().__init__(kind if not detail else f"{kind} ({detail})")
        self.kind = kind
        self.detail = detail


def parse(value: Any, *, max_len: int, local_dict: dict | None = None, global_dict: dict | None = None) -> sympy.Expr:
    """An exact sympy expression from an int, a finite float or a string of at most max_len characters.

    Strings are parsed by sympy with `local_dict` / `global_dict` (default: sympy's whole namespace)."""
    if isinstance(value, bool) or value is None or not isinstance(value, (int, float, str)):
        raise ExpressionError("type")
    if isinstance(value, int):
        return sympy.Integer(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ExpressionError("not-finite")
        return sympy.Rational(repr(value))
    text = value.strip()
    if not text:
        raise ExpressionError("empty")
    if len(text) > max_len or not _ALLOWED.match(text):
        raise ExpressionError("invalid")
    try:
        expr = parse_expr(text, local_dict=local_dict, global_dict=sympy_namespace() if global_dict is None else global_dict,
                          transformations=_TRANSFORMS)
    except Exception as exc:  # sympy raises many kinds of errors on bad input
        raise ExpressionError("unparsable", exc.__class__.__name__) from None
    if not isinstance(expr, sympy.Expr):
        raise ExpressionError("not-expression")
    return expr
