"""Lifting point clouds to group elements, pair embeddings, distances, Haar sampling."""

from __future__ import annotations


class LiftMixin:
    """Methods every generated group gets for lifting (filled in from the module's LIFT data)."""

    LIFT = None
