"""Load generated group modules by name (no sympy needed at run time).

Modules live in the package `lieconv_runtime.generated` (the repository's `generated/`
folder, shipped with the package) or in any folder passed as `search_path`.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

from lieconv_runtime.group_base import GeneratedGroup

_MODULES: dict = {}


def default_search_path() -> Path:
    import lieconv_runtime.generated as generated

    return Path(list(generated.__path__)[0])


def available_groups(search_path: str | os.PathLike | None = None) -> list[str]:
    """Names of the generated groups in `search_path` (default: the shipped ones)."""
    folder = Path(search_path) if search_path is not None else default_search_path()
    return sorted(p.stem for p in folder.glob("*.py") if not p.stem.startswith("_"))


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


def load_group(name: str, search_path: str | os.PathLike | None = None, **options) -> GeneratedGroup:
    """Instantiate the generated group `name` (e.g. ``load_group("SE3", alpha=0.2)``).

    options: runtime settings such as ``alpha`` and ``lift_samples`` (defaults from the spec).
    """
    folder = Path(search_path) if search_path is not None else default_search_path()
    path = folder / f"{name}.py"
    if not path.is_file():
        known = ", ".join(available_groups(folder)) or "none"
        raise KeyError(f"no generated group {name!r} in {folder} (available: {known}); "
                       f"write group_specs/{name}.yaml and run `groupgen generate`")
    module = _load_module(path)
    return module.GROUP(**options)
