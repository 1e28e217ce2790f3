"""Named derivation steps: which step an internal failure happened in, and one progress line for a
step that runs longer than `SLOW_S` seconds (a large spec visibly works instead of looking hung).

    with steps.spec("group_specs/SE3.yaml"):
        with steps.step("characteristic polynomial", "4x4"):
            ...

`steps.where()` names the innermost running step ("group_specs/SE3.yaml: characteristic polynomial
(4x4)").  The progress line goes to stderr, from a timer thread, at most once per step.
"""

from __future__ import annotations

import sys
import threading
from contextlib import contextmanager

__all__ = ["SLOW_S", "spec", "step", "where"]

SLOW_S = 2.0
_stack: list[str] = []
_spec: list[str] = []
_failed: list[str] = []  # the innermost step an exception left, until the next spec() starts
_failed_spec: list[str] = []  # the spec an exception left


def _say(text: str) -> None:
    print(f"groupgen: {text}", file=sys.stderr, flush=True)


def where() -> str:
    """'<spec>: <step> (<detail>)' for the innermost running step, or the step an exception left."""
    inner = _stack[-1] if _stack else (_failed[0] if _failed else "")
    outer = _spec[-1] if _spec else (_failed_spec[0] if _failed_spec else "")
    return ": ".join(p for p in (outer, inner) if p)


@contextmanager
def spec(path: str):
    """Steps inside this block belong to the spec at `path`."""
    _spec.append(str(path))
    _failed.clear()
    _failed_spec.clear()
    try:
        yield
    except BaseException:
        _failed_spec.append(str(path))
        raise
    finally:
        _spec.pop()


@contextmanager
def step(name: str, detail: str = ""):
    """Run one named step; if it takes longer than SLOW_S, print one line saying it is still running."""
    label = f"{name} ({detail})" if detail else name
    _stack.append(label)
    prefix = f"{_spec[-1]}: " if _spec else ""
    timer = threading.Timer(SLOW_S, _say, args=(f"{prefix}{label}: still running after {SLOW_S:g} s ...",))
    timer.daemon = True
    timer.start()
    try:
        yield
    except BaseException:
        if not _failed:
            _failed.append(label)
        raise
    finally:
        timer.cancel()
        _stack.pop()
