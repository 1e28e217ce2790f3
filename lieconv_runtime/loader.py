"""Find and load generated group modules by name (no sympy needed at run time).

`load_group(name)` searches, in order:

1. the folders given as ``search_path=`` (one folder or a list; the CLI's ``--group-path``);
2. the folders in the environment variable ``LIECONV_GROUP_PATH`` (separated by ``os.pathsep``);
3. the user group folder, ``$XDG_DATA_HOME/lieconv/groups`` (default ``~/.local/share/lieconv/groups``),
   where ``groupgen generate SPEC.yaml`` writes when given no ``--out``;
4. the shipped groups (the repository's ``generated/``, installed as ``lieconv_runtime/generated``).

The first folder holding ``<name>.py`` wins, so a user group can shadow a shipped one.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Union

if TYPE_CHECKING:  # the folder functions stay importable without torch (groupgen uses them)
    from lieconv_runtime.group_base import GeneratedGroup

__all__ = ["GroupNotFoundError", "available_groups", "group_locations", "load_group", "search_folders",
           "shipped_folder", "user_group_folder"]

PathLike = Union[str, os.PathLike]
_MODULES: dict = {}


class GroupNotFoundError(KeyError):
    """No generated module for a group name in any searched folder."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


def shipped_folder() -> Path:
    """The shipped generated modules: ``lieconv_runtime/generated`` when installed, else the source
    checkout's ``generated/`` (running from the repository root must not hide them)."""
    here = Path(__file__).resolve().parent
    installed = here / "generated"
    return installed if installed.is_dir() else here.parent / "generated"


def user_group_folder() -> Path:
    """``$XDG_DATA_HOME/lieconv/groups`` (default ``~/.local/share/lieconv/groups``)."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "lieconv" / "groups"


def _as_list(search_path: PathLike | Iterable[PathLike] | None) -> list[Path]:
    if search_path is None:
        return []
    if isinstance(search_path, (str, os.PathLike)):
        return [Path(search_path)]
    return [Path(p) for p in search_path]


def search_folders(search_path: PathLike | Iterable[PathLike] | None = None) -> list[Path]:
    """The folders `load_group` searches, in order (see the module docstring)."""
    env = [Path(p) for p in os.environ.get("LIECONV_GROUP_PATH", "").split(os.pathsep) if p]
    out: list[Path] = []
    for folder in _as_list(search_path) + env + [user_group_folder(), shipped_folder()]:
        if folder not in out:
            out.append(folder)
    return out


def group_locations(search_path: PathLike | Iterable[PathLike] | None = None) -> dict[str, Path]:
    """name -> module file, for every group found (the first folder wins)."""
    found: dict[str, Path] = {}
    for folder in search_folders(search_path):
        if folder.is_dir():
            for p in sorted(folder.glob("*.py")):
                if not p.stem.startswith("_") and p.stem.isidentifier():
                    found.setdefault(p.stem, p)
    return found


def available_groups(search_path: PathLike | Iterable[PathLike] | None = None) -> list[str]:
    """Names of every group `load_group` can find, sorted."""
    return sorted(group_locations(search_path))


def _load_module(path: Path):
    key = str(path.resolve())
    mtime = path.stat().st_mtime_ns
    hit = _MODULES.get(key)
    if hit is not None and hit[0] == mtime:
        return hit[1]
    mod_name = f"lieconv_runtime._loaded_groups.{path.stem}_{abs(hash(key)) & 0xFFFFFFFF:08x}"
    spec = importlib.util.spec_from_file_location(mod_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    spec.loader.exec_module(module)
    _MODULES[key] = (mtime, module)
    return module


def load_group(name: str, search_path: PathLike | Iterable[PathLike] | None = None, **options) -> GeneratedGroup:
    """Instantiate the generated group `name` (e.g. ``load_group("SE3", alpha=0.2)``).

    search_path: extra folder(s) searched first.  options: runtime settings such as ``alpha`` and
    ``lift_samples`` (defaults from the spec).  Raises `GroupNotFoundError` naming the folders searched.
    """
    for folder in search_folders(search_path):
        path = folder / f"{name}.py"
        if path.is_file():
            module = _load_module(path)
            return module.GROUP(**options)
    folders = ", ".join(str(f) for f in search_folders(search_path))
    known = ", ".join(available_groups(search_path)) or "none"
    raise GroupNotFoundError(
        f"no generated group {name!r} in {folders} (available: {known}); write a spec and run "
        f"`groupgen generate SPEC.yaml` (it writes to {user_group_folder()}), or pass the module's folder "
        "as search_path / --group-path")
