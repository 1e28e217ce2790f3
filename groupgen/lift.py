"""Lifting, orbits, stabilizers and Haar sampling derived from a spec (issue 3; in progress)."""

from __future__ import annotations


def lift_context(spec, alg) -> dict:
    """Template context for templates/lift.py.j2."""
    return {}
