"""sympy -> torch source: the one printer of groupgen (closed forms and the spec's lift expressions).

Numbers become float literals (repr, 17 significant digits), integer powers become
``x**n`` (exact for small n, no torch.pow dispatch), functions map to torch.*.

With ``nan_safe=True`` (the user's expressions of a `lift:` block) square roots, logs and atan2
become the runtime's NaN-safe ``safe_sqrt``, ``safe_log`` and ``safe_atan2``
(`lieconv_runtime.lift`), and Min/Max broadcast against the tensor ``zero`` in scope.
"""

from __future__ import annotations

import sympy
from sympy.printing.precedence import precedence
from sympy.printing.pytorch import TorchPrinter


class TorchCodePrinter(TorchPrinter):
    def __init__(self, nan_safe: bool = False):
        super().__init__()
        self.nan_safe = nan_safe

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
        if self.nan_safe and exp.is_Rational and exp.q == 2:  # sqrt(max(z, tiny))^p
            root, p = f"safe_sqrt({self._print(base)})", int(exp.p)
            return root if p == 1 else f"{root}**{p}" if p > 0 else f"1/{root}" if p == -1 else f"1/{root}**{-p}"
        return super()._print_Pow(expr)

    def _print_NumberSymbol(self, expr):
        return repr(float(expr))

    def _print_Exp1(self, expr):
        return repr(float(expr))

    _print_Pi = _print_NumberSymbol

    def _print_log(self, expr):
        if self.nan_safe:
            return f"safe_log({self._print(expr.args[0])})"
        return self._print_Function(expr)

    def _print_atan2(self, expr):
        if self.nan_safe:
            return f"safe_atan2({self._print(expr.args[0])}, {self._print(expr.args[1])})"
        return self._print_Function(expr)

    def _minmax(self, expr, fn):
        args = [f"({self._print(a)} + zero)" for a in expr.args]
        out = args[0]
        for a in args[1:]:
            out = f"{fn}({out}, {a})"
        return out

    def _print_Max(self, expr):
        return self._minmax(expr, "torch.maximum") if self.nan_safe else self._print_Function(expr)

    def _print_Min(self, expr):
        return self._minmax(expr, "torch.minimum") if self.nan_safe else self._print_Function(expr)


_PRINTERS = {False: TorchCodePrinter(), True: TorchCodePrinter(nan_safe=True)}


def code(expr, nan_safe: bool = False) -> str:
    """Torch source for a sympy expression (NaN-safe sqrt/log/atan2 for the spec's own expressions)."""
    expr = sympy.sympify(expr)
    if expr.is_number:
        return repr(float(expr))
    return _PRINTERS[nan_safe].doprint(expr)


def matrix_literal(mat) -> str:
    """Nested Python list of floats for a sympy Matrix (exact values rounded once)."""
    rows = [", ".join(repr(float(v)) for v in mat.row(i)) for i in range(mat.shape[0])]
    return "[" + ", ".join(f"[{r}]" for r in rows) + "]"
