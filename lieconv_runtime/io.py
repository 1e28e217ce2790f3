"""File output of the runtime: atomic writes, the cache folder, stale temp files.

* :func:`atomic_write` (and :func:`atomic_write_text`, :func:`atomic_torch_save`): a temp file
  in the target's folder, fsync, then ``os.replace``; readers see the old file or the new one,
  never half of one. The file gets mode ``0o666 & ~umask``, as ``open()`` would give it.
* Temp files are named ``.<name>.<pid>@<host>.<random>.tmp``; :func:`clean_stale_temps`
  removes those whose writer is gone (a dead pid on this host, or untouched for
  :data:`STALE_AFTER_S`), so a SIGKILL mid-write leaves nothing behind for long.
* :func:`cache_dir`: ``$LIECONV_CACHE/<name>``, else ``$XDG_CACHE_HOME/lieconv/<name>``,
  else ``~/.cache/lieconv/<name>``.
"""

from __future__ import annotations

import os
import re
import socket
import tempfile
import threading
import time
from pathlib import Path

__all__ = [
    "STALE_AFTER_S",
    "atomic_torch_save",
    "atomic_write",
    "atomic_write_text",
    "cache_dir",
    "clean_stale_temps",
    "current_umask",
    "ensure_writable_dir",
    "is_stale_temp",
]

#: A temp file untouched for this long is stale whatever its pid says (a writer writes continuously).
STALE_AFTER_S = 3600.0

_UMASK_LOCK = threading.Lock()
_TMP_RE = re.compile(r"^\.(?P<name>.+?)\.(?:(?P<pid>\d+)@(?P<host>[A-Za-z0-9-]*)\.)?[a-z0-9_]+\.tmp$")


def current_umask() -> int:
    """The process umask, read without changing it (``/proc``) or under a lock (set and restore)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40]


def atomic_write(path, write_fn, mode: int | None = None) -> None:
    """Write ``path`` via ``write_fn(binary_file)`` atomically, with mode ``0o666 & ~umask``.

    An ``OSError`` names ``path`` (not the temp file). Parent folders are created.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}@{_host()}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o666 & ~current_umask() if mode is None else mode)
            try:
                write_fn(f)
            except Exception as e:  # e.g. torch.save's zip writer fails on exit after a Ctrl-C
                if _caused_by_interrupt(e):
                    raise KeyboardInterrupt from e
                raise
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        raise OSError(e.errno, e.strerror or str(e), str(path)) from e
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def _caused_by_interrupt(e: BaseException) -> bool:
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, KeyboardInterrupt):
            return True
        seen.add(id(e))
        e = e.__context__
    return False


def atomic_write_text(path, text: str) -> None:
    """:func:`atomic_write` of UTF-8 text."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def atomic_torch_save(path, obj) -> None:
    """:func:`atomic_write` of ``torch.save(obj)``."""
    import torch

    atomic_write(path, lambda f: torch.save(obj, f))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. EPERM: it exists
        return True
    return True


def is_stale_temp(path, max_age_s: float = STALE_AFTER_S) -> bool | None:
    """Whether ``path`` is a temp file of :func:`atomic_write` whose writer is gone (``None``: not
    such a temp file). Stale: written on this host by a process that no longer runs, or untouched
    for ``max_age_s`` (a writer writes continuously). ``FileNotFoundError`` if it vanished."""
    path = Path(path)
    m = _TMP_RE.match(path.name)
    if m is None:
        return None
    if m["pid"] is not None and m["host"] == _host() and not _pid_alive(int(m["pid"])):
        return True
    return time.time() - path.stat().st_mtime > max_age_s


def clean_stale_temps(folder, pattern: str = "*", max_age_s: float = STALE_AFTER_S) -> list[Path]:
    """Remove the stale temp files (:func:`is_stale_temp`) of targets matching ``pattern`` in
    ``folder``; files of live writers are kept. Returns the removed paths."""
    removed = []
    try:
        candidates = sorted(Path(folder).glob(f".{pattern}.*.tmp"))
    except OSError:
        return removed
    for p in candidates:
        try:
            if is_stale_temp(p, max_age_s):
                p.unlink()
                removed.append(p)
        except FileNotFoundError:  # renamed into place or removed meanwhile
            continue
    return removed


def cache_dir(name: str = "") -> Path:
    """Cache folder ``name``: ``$LIECONV_CACHE/<name>``, ``$XDG_CACHE_HOME/lieconv/<name>``
    or ``~/.cache/lieconv/<name>`` (the first that is set; XDG paths must be absolute)."""
    root = os.environ.get("LIECONV_CACHE")
    if not root:
        xdg = os.environ.get("XDG_CACHE_HOME", "")
        base = xdg if os.path.isabs(xdg) else os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(base, "lieconv")
    return Path(root) / name if name else Path(root)


def ensure_writable_dir(folder) -> Path:
    """Create ``folder`` if needed and check that files can be created in it (``OSError`` naming it)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise OSError(e.errno, e.strerror or str(e), str(folder)) from e
    return folder
