"""The one error type of the data layer."""

from __future__ import annotations

__all__ = ["DataError"]


class DataError(ValueError):
    """Bad or missing input data: one line naming the file, the record (line, row or molecule) and the fix."""
