"""Process-level performance settings.

`chunk_scale(device)`: pair computations run in chunks sized for a CPU's caches; on an
accelerator each chunk is a handful of kernel launches and host syncs, so chunks are
ACCELERATOR_CHUNK_SCALE times larger there (memory is plentiful, launches are the cost).

`tune_malloc()`: with glibc's defaults, every tensor above ~128 KB-32 MB is a fresh mmap and every
free returns it to the system, so each training step page-faults its pair tensors in again
(measured: a third of the time of an img_layer step on this CPU).  Raising the mmap threshold to
glibc's maximum (32 MiB on 64-bit) and the trim threshold keeps freed blocks in the heap for
reuse.  Memory is not lost: it is reused by the next step; the process keeps its peak heap.

It changes the allocator of the whole process, so nothing calls it on import: an application opts
in by calling it once at start-up (the `lieconv` CLI and `benchmarks/` do).  LIECONV_TUNE_MALLOC=0
makes it a no-op; so does a C library other than glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

__all__ = ["ACCELERATOR_CHUNK_SCALE", "chunk_scale", "tune_malloc"]

ACCELERATOR_CHUNK_SCALE = 64


def chunk_scale(device) -> int:
    """1 on the CPU, ACCELERATOR_CHUNK_SCALE on any other device (a torch.device or its name)."""
    return 1 if str(device).split(":")[0] == "cpu" else ACCELERATOR_CHUNK_SCALE

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_MAX = 4 * 1024 * 1024 * ctypes.sizeof(ctypes.c_long)  # glibc's DEFAULT_MMAP_THRESHOLD_MAX
_applied: bool | None = None


def tune_malloc(mmap_threshold: int = _MMAP_THRESHOLD_MAX, trim_threshold: int = 1 << 30) -> bool:
    """Set glibc's M_MMAP_THRESHOLD and M_TRIM_THRESHOLD (bytes); True if applied.

    Idempotent; returns False (and changes nothing) off glibc or when LIECONV_TUNE_MALLOC=0.
    """
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if os.environ.get("LIECONV_TUNE_MALLOC", "1") == "0":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = mallopt(_M_MMAP_THRESHOLD, min(int(mmap_threshold), _MMAP_THRESHOLD_MAX))
    ok = mallopt(_M_TRIM_THRESHOLD, min(int(trim_threshold), 2**31 - 1)) and ok
    _applied = bool(ok)
    return _applied
