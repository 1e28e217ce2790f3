"""sympy -> torch source printer used by the templates.

Numbers become float literals (repr, 17 significant digits), integer powers become
``x**n`` (exact for small n, no torch.pow dispatch), functions map to torch.*.
"""

from __future__ import annotations

import sympy
from sympy.printing.precedence import precedence
from sympy.printing.pytorch import TorchPrinter


class TorchCodePrinter(TorchPrinter):
    def _print_Rational(self, expr):
        return repr(float(expr))

    def _print_Integer(self, expr):
        return str(int(expr))

    def _print_Float(self, expr):
        return repr(float(expr))

    def _print_Pow(self, expr, rational=False):
        base, exp = expr.base, expr.exp
        if base.is_number and exp.is_number:
            return repr(float(expr))
        if exp.is_Integer:
            n = int(exp)
            b = self.parenthesize(base, precedence(expr), strict=False)
            if n == 1:
                return self._print(base)
            if n > 1:
                return f"{b}**{n}"
            if n == -1:
                return f"1/{b}"
            return f"1/{b}**{-n}"
        return super()._print_Pow(expr)

    def _print_NumberSymbol(self, expr):
        return repr(float(expr))

    def _print_Exp1(self, expr):
        return repr(float(expr))

    _print_Pi = _print_NumberSymbol


_PRINTER = TorchCodePrinter()


def code(expr) -> str:
    """Torch source for a sympy expression."""
    expr = sympy.sympify(expr)
    if expr.is_number:
        return repr(float(expr))
    return _PRINTER.doprint(expr)


def float_literal(x) -> str:
    return repr(float(x))  # correctly rounded for Fraction and sympy numbers


def matrix_literal(mat) -> str:
    """Nested Python list of floats for a sympy Matrix (exact values rounded once)."""
    rows = [", ".join(repr(float(v)) for v in mat.row(i)) for i in range(mat.shape[0])]
    return "[" + ", ".join(f"[{r}]" for r in rows) + "]"
