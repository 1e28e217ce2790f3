"""argparse value types shared by the command line and the tasks: each bad value is one line."""

from __future__ import annotations

import argparse
import json
import math

__all__ = ["int_at_least", "key_value", "nonneg_float", "nonneg_int", "pos_float", "pos_int"]


def int_at_least(low: int):
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if v < low:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {text}")
        return v

    parse.__name__ = "integer"
    return parse


def _float_check(positive: bool):
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(v) or (v <= 0 if positive else v < 0):
            kind = "positive" if positive else "non-negative"
            raise argparse.ArgumentTypeError(f"expected a {kind} finite number, got {text}")
        return v

    parse.__name__ = "number"
    return parse


pos_int = int_at_least(1)
nonneg_int = int_at_least(0)
pos_float = _float_check(positive=True)
nonneg_float = _float_check(positive=False)


def key_value(text: str):
    """KEY=VALUE with VALUE parsed as JSON when it is JSON (``width=64`` -> ("width", 64))."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value
