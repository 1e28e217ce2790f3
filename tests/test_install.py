"""The README's set-up and "adding a group" example, in a fresh NON-editable virtualenv.

Installs the CPU torch and this repository with `pip install .` (as the README says), then, from the
repository root (where the source tree could shadow the installed package) and from another folder:
`groupgen check` and `groupgen generate` of a new spec, `load_group` of it and of a shipped group,
and a one-step `lieconv train` with the new group.  About a minute; set LIECONV_SKIP_INSTALL_TEST=1
to skip it while iterating.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SIM3 = """name: Sim3
description: similarities of 3D space
action: affine
generators:
  rx: [[0,0,0,0],[0,0,-1,0],[0,1,0,0],[0,0,0,0]]
  ry: [[0,0,1,0],[0,0,0,0],[-1,0,0,0],[0,0,0,0]]
  rz: [[0,-1,0,0],[1,0,0,0],[0,0,0,0],[0,0,0,0]]
  s:  [[1,0,0,0],[0,1,0,0],[0,0,1,0],[0,0,0,0]]
  tx: [[0,0,0,1],[0,0,0,0],[0,0,0,0],[0,0,0,0]]
  ty: [[0,0,0,0],[0,0,0,1],[0,0,0,0],[0,0,0,0]]
  tz: [[0,0,0,0],[0,0,0,0],[0,0,0,1],[0,0,0,0]]
lift: {window: {s: 1.0}}
"""

SKIP_VENV = pytest.mark.skipif(os.environ.get("LIECONV_SKIP_INSTALL_TEST") == "1",
                                reason="LIECONV_SKIP_INSTALL_TEST=1")


def _run(args, cwd, env, timeout=900):
    out = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{' '.join(map(str, args))} failed ({out.returncode}):\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"
    return out


@SKIP_VENV
def test_readme_setup_and_worked_example_in_a_fresh_venv(tmp_path):
    venv = tmp_path / "venv"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "LIECONV_GROUP_PATH")}
    env["XDG_DATA_HOME"] = str(tmp_path / "data")
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    _run([sys.executable, "-m", "venv", str(venv)], tmp_path, env)
    bin_ = venv / "bin"
    env["PATH"] = f"{bin_}{os.pathsep}{env.get('PATH', '')}"
    _run([bin_ / "pip", "install", "-q", "torch==2.13.0"], tmp_path, env)
    _run([bin_ / "pip", "install", "-q", str(ROOT)], tmp_path, env)
    site = _run([bin_ / "python", "-c", "import lieconv_runtime, groupgen; print(lieconv_runtime.__file__)"],
                tmp_path, env).stdout
    assert str(venv) in site, "the package must come from the venv, not from an editable install"

    specs = tmp_path / "my_specs"
    specs.mkdir()
    (specs / "Sim3.yaml").write_text(SIM3)
    check = _run([bin_ / "groupgen", "check", "--samples", "16", str(specs / "Sim3.yaml")], ROOT, env).stdout
    assert check.splitlines()[0].endswith("PASS"), check
    gen = _run([bin_ / "groupgen", "generate", str(specs / "Sim3.yaml")], ROOT, env).stdout
    assert str(tmp_path / "data" / "lieconv" / "groups" / "Sim3.py") in gen
    probe = "from lieconv_runtime import load_group; print(load_group('Sim3').lie_dim, load_group('SE3').lie_dim)"
    for cwd in (ROOT, tmp_path):  # the repository root, whose source tree shadows the installed package
        assert _run([bin_ / "python", "-c", probe], cwd, env).stdout.split() == ["7", "6"]
    listing = _run([bin_ / "groupgen", "list"], tmp_path, env).stdout
    assert "Sim3" in listing
    train = _run([bin_ / "lieconv", "train", "springs", "--model", "HLieResNet", "--group", "Sim3", "--dim", "3",
                  "--n-systems", "12", "--n-val", "4", "--n-test", "4", "--n-train", "4", "--n-times", "10",
                  "--batch-size", "4", "--epochs", "1", "--out", str(tmp_path / "run"),
                  "--data-dir", str(tmp_path / "springs"), "--no-progress"], tmp_path, env)
    assert (tmp_path / "run" / "checkpoint.pt").is_file(), train.stderr


def test_every_package_folder_is_installed():
    """pyproject.toml lists packages explicitly (generated/ is mapped into lieconv_runtime): a new
    folder with an __init__.py must be listed too, or `pip install .` leaves it out."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for top in ("groupgen", "lieconv_runtime")
             for p in (ROOT / top).rglob("__init__.py")}
    found.add("lieconv_runtime.generated")
    assert found <= listed, f"not installed: {sorted(found - listed)}"
