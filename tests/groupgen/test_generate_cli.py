"""The groupgen CLI: deterministic generation (golden files), one-line errors, nothing
written on failure, numeric fallback, list and check."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from groupgen.cli import main
from groupgen.emit import render
from groupgen.spec import find_specs, load_spec

from .groups import rebased_yaml

ROOT = Path(__file__).resolve().parents[2]
SE2 = (ROOT / "group_specs" / "SE2.yaml").read_text()


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_regenerating_reproduces_generated_byte_for_byte(tmp_path):
    assert main(["generate", "--out", str(tmp_path), "--quiet", *find_specs(ROOT / "group_specs")]) == 0
    produced = sorted(p.name for p in tmp_path.glob("*.py"))
    committed = sorted(p.name for p in (ROOT / "generated").glob("*.py") if p.name != "__init__.py")
    assert produced == committed
    for name in produced:
        assert (tmp_path / name).read_bytes() == (ROOT / "generated" / name).read_bytes(), name


def test_generation_is_deterministic_across_processes(tmp_path):
    """Two processes with different string-hash seeds (set and dict orders that depend on hashing
    would show) write the same bytes."""
    import os

    specs = [str(ROOT / "group_specs" / f"{n}.yaml") for n in ("SE3", "Sim2")]
    for seed, out in (("1", tmp_path / "a"), ("2", tmp_path / "b")):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        run = subprocess.run([sys.executable, "-m", "groupgen", "generate", "--quiet", "--out", str(out), *specs],
                             capture_output=True, text=True, env=env, timeout=600)
        assert run.returncode == 0, run.stderr
    for name in ("SE3.py", "Sim2.py"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_translations_and_orthogonal_blocks_get_specialised_code(tmp_path):
    """Pure translation groups emit no block code (exp/log/inv move the translation column);
    orthogonal blocks invert by transposition, not by products with their identity form."""
    for name in ("T2", "T3", "Tx", "Ty"):
        text = (ROOT / "generated" / f"{name}.py").read_text()
        assert "Pure translations" in text and "_log_block" not in text and "hermite_matrix(" not in text, name
    for name in ("SO2", "SO3", "SE2", "SE3"):
        text = (ROOT / "generated" / f"{name}.py").read_text()
        assert "return h.transpose(-1, -2)" in text and "_FORM_INV, h) @" not in text, name
    # in another basis the SO3 block's form is no longer I: the general M^-1 h^T M is emitted
    so3 = load_spec(ROOT / "group_specs" / "SO3.yaml")
    rebased = render(load_spec(_write(tmp_path / "SO3_rebased1.yaml", rebased_yaml(so3, 1))))
    assert "_FORM_INV, h) @" in rebased and "return h.transpose(-1, -2)" not in rebased


def test_generated_module_imports_without_sympy(tmp_path):
    code = ("import sys; sys.modules['sympy'] = None\n"
            "from lieconv_runtime import load_group\n"
            "import torch\n"
            "G = load_group('SE3'); print(G.exp(torch.zeros(6)).shape)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "torch.Size([4, 4])" in out.stdout


BAD = {
    "yaml_syntax": ("name: X\naction: [linear\n", "yaml"),
    "missing_action": ("name: X\ngenerators: {}\nspace_dim: 2\n", "action"),
    "unknown_field": (SE2 + "colour: red\n", "colour"),
    "bad_action": (SE2.replace("action: affine", "action: projective"), "action"),
    "ragged": ("name: X\naction: linear\ngenerators:\n  a: [[0,1],[1]]\n", "generators.a"),
    "non_square": ("name: X\naction: linear\ngenerators:\n  a: [[0,1,0],[1,0,0]]\n", "generators.a"),
    "size_mismatch": ("name: X\naction: linear\ngenerators:\n  a: [[0,1],[1,0]]\n  b: [[0,0,0],[0,0,0],[0,0,1]]\n", "generators"),
    "non_numeric": ("name: X\naction: linear\ngenerators:\n  a: [[0,x],[1,0]]\n", "generators.a"),
    "empty_without_space_dim": ("name: X\naction: linear\ngenerators: {}\n", "space_dim"),
    "dependent": ("name: X\naction: linear\ngenerators:\n  a: [[0,-1],[1,0]]\n  b: [[0,-2],[2,0]]\n", "generators"),
    "not_closed": ("name: X\naction: linear\ngenerators:\n  rx: [[0,0,0],[0,0,-1],[0,1,0]]\n  ry: [[0,0,1],[0,0,0],[-1,0,0]]\n", "[rx, ry]"),
    "affine_last_row": ("name: X\naction: affine\ngenerators:\n  a: [[0,1],[1,0]]\n", "last row"),
    "no_closed_form": ((ROOT / "tests" / "specs_bad" / "SO4.yaml").read_text(), "numeric_fallback"),
    "huge_entry": ("name: X\naction: linear\ngenerators:\n  r: [[0, -1e300], [1e300, 0]]\n", "rescale"),
    "tiny_entry": ("name: X\naction: linear\ngenerators:\n  r: [[0, -1.0e-9], [1.0e-9, 0]]\n", "rescale"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_spec_gives_one_clear_line_and_writes_nothing(case, tmp_path, capsys):
    text, keyword = BAD[case]
    spec = tmp_path / f"{case}.yaml"
    spec.write_text(text)
    good = ROOT / "group_specs" / "SO2.yaml"
    out = tmp_path / "out"
    code = main(["generate", "--out", str(out), str(good), str(spec)])
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert str(spec) in lines[0] and keyword in lines[0], lines[0]
    assert "Traceback" not in err
    assert not out.exists() or not any(out.iterdir()), "nothing may be written on failure"


def test_bad_spec_exit_status_from_the_console(tmp_path):
    spec = tmp_path / "bad.yaml"
    spec.write_text(BAD["not_closed"][0])
    run = subprocess.run([sys.executable, "-m", "groupgen", "generate", "--out", str(tmp_path / "o"), str(spec)],
                         capture_output=True, text=True)
    assert run.returncode == 2
    assert run.stderr.count("\n") == 1 and "Traceback" not in run.stderr


def test_numeric_fallback_generates_and_says_so(tmp_path, capsys):
    spec = ROOT / "tests" / "specs" / "SO4numeric.yaml"
    assert main(["generate", "--out", str(tmp_path), "--quiet", str(spec)]) == 0
    source = (tmp_path / "SO4numeric.py").read_text()
    assert "NUMERIC FALLBACK" in source and "matrix_exp" in source
    specs_dir = tmp_path / "specs"
    specs_dir.mkdir()
    (specs_dir / "SO4numeric.yaml").write_text(spec.read_text())
    (specs_dir / "SO4.yaml").write_text((ROOT / "tests" / "specs_bad" / "SO4.yaml").read_text())
    capsys.readouterr()
    assert main(["list", "--specs-dir", str(specs_dir)]) == 0
    listing = capsys.readouterr().out
    assert "numeric fallback" in listing and "no closed form" in listing


def test_list_shows_every_shipped_spec(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for p in find_specs(ROOT / "group_specs"):
        assert Path(p).stem in out
    assert "closed form" in out


def test_check_passes_on_a_good_spec_and_reports(capsys):
    assert main(["check", "--samples", "48", str(ROOT / "group_specs" / "SE2.yaml")]) == 0
    out = capsys.readouterr().out
    assert "PASS" in out and "exp vs matrix_exp" in out and "angle -> pi" in out


def test_check_reports_a_bad_spec(tmp_path, capsys):
    spec = tmp_path / "bad.yaml"
    spec.write_text(BAD["not_closed"][0])
    assert main(["check", str(spec)]) == 2  # a spec error, like `generate`
    out = capsys.readouterr().out
    assert "FAIL" in out and "[rx, ry]" in out


def test_check_reports_a_wrong_declared_lift(tmp_path, capsys):
    """A spec whose section is wrong (x and y swapped) generates, but `check` names the failing property."""
    text = (ROOT / "group_specs" / "SO2.yaml").read_text().replace('atan2(x1, x0)', 'atan2(x0, x1)')
    assert 'atan2(x0, x1)' in text
    spec = tmp_path / "SO2wrong.yaml"
    spec.write_text(text.replace("name: SO2", "name: SO2wrong"))
    assert main(["check", "--samples", "48", str(spec)]) == 1
    out = capsys.readouterr().out
    failing = [line for line in out.splitlines() if "[FAIL]" in line]
    assert failing and any("u_x . o_q(x) == x" in line for line in failing), out
    worst = float(failing[0].split("worst")[1].split()[0])
    assert worst > 1e-3  # by how much


# --- where modules go, and failures that are not the spec's ---------------------------------------


def test_a_user_spec_goes_to_the_user_folder_and_loads_from_anywhere(tmp_path, monkeypatch, capsys):
    """`groupgen generate my.yaml` writes into the user group folder that load_group searches, so the
    group loads by name from any working directory (and a shipped spec would go to generated/)."""
    from lieconv_runtime import available_groups, load_group
    from lieconv_runtime.loader import user_group_folder

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    spec = _write(tmp_path / "Sim3.yaml", (ROOT / "tests" / "specs" / "Sim3.yaml").read_text())
    monkeypatch.chdir(tmp_path)
    assert main(["generate", str(spec)]) == 0
    target = user_group_folder() / "Sim3.py"
    assert target.is_file() and str(target) in capsys.readouterr().out
    assert "Sim3" in available_groups()
    G = load_group("Sim3")
    assert G.lie_dim == 7 and G.name == "Sim3"
    assert main(["list"]) == 0
    assert str(target) in capsys.readouterr().out


def test_unknown_group_names_the_folders_searched(tmp_path, monkeypatch):
    from lieconv_runtime import load_group
    from lieconv_runtime.loader import GroupNotFoundError

    monkeypatch.setenv("LIECONV_GROUP_PATH", str(tmp_path / "mine"))
    with pytest.raises(GroupNotFoundError) as err:
        load_group("NoSuchGroup")
    text = str(err.value)
    assert "\n" not in text and str(tmp_path / "mine") in text and "groupgen generate" in text


def test_a_directory_in_the_way_is_refused_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / "out"
    (out / "SO3.py").mkdir(parents=True)
    specs = [str(ROOT / "group_specs" / "SO2.yaml"), str(ROOT / "group_specs" / "SO3.yaml")]
    assert main(["generate", "--out", str(out), *specs]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "SO3.py" in err and ".tmp" not in err
    assert not (out / "SO2.py").exists()


@pytest.mark.parametrize("command", ["generate", "check"])
def test_an_internal_failure_is_one_line_naming_the_step(command, tmp_path, monkeypatch, capsys):
    import groupgen.algebra

    def broken(*args, **kwargs):
        raise ZeroDivisionError("simulated bug")

    monkeypatch.setattr(groupgen.algebra, "_invariant_form", broken)
    spec = str(ROOT / "group_specs" / "SO3.yaml")
    args = ["generate", "--out", str(tmp_path / "o"), spec] if command == "generate" else ["check", spec]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "SO3.yaml" in err and "invariant bilinear form" in err and "ZeroDivisionError" in err
    assert "Traceback" not in err and not (tmp_path / "o").exists()


def test_interrupt_is_one_line(monkeypatch, capsys, tmp_path):
    import groupgen.algebra

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(groupgen.algebra, "_decompose", interrupted)
    assert main(["check", str(ROOT / "group_specs" / "SO3.yaml")]) == 130
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "interrupted" in err and "Traceback" not in err


def test_a_slow_step_prints_one_progress_line(monkeypatch, tmp_path, capsys):
    from groupgen import steps

    monkeypatch.setattr(steps, "SLOW_S", 0.0)
    assert main(["generate", "--quiet", "--out", str(tmp_path), str(ROOT / "group_specs" / "SO2.yaml")]) == 0
    err = capsys.readouterr().err
    assert "SO2.yaml: characteristic polynomial of the linear part (2x2): still running" in err


def test_a_large_generator_derives_in_seconds(tmp_path):
    """SO(2) acting on R^40: the invariant form is one sparse exact solve (sympy.linsolve took minutes)."""
    import time

    n = 40
    rows = [[0] * n for _ in range(n)]
    rows[0][1], rows[1][0] = -1, 1
    spec = _write(tmp_path / "SO2on40.yaml", f"name: SO2on40\naction: linear\ngenerators:\n  r: {rows}\n")
    t0 = time.perf_counter()
    assert main(["generate", "--quiet", "--out", str(tmp_path / "o"), str(spec)]) == 0
    assert time.perf_counter() - t0 < 60
    from lieconv_runtime import load_group

    G = load_group("SO2on40", search_path=tmp_path / "o")
    a = torch.tensor([[0.7]], dtype=torch.float64)
    assert torch.allclose(G.exp(a), torch.linalg.matrix_exp(G.hat(a)), atol=1e-14)


def test_check_says_plainly_when_lifting_is_missing(capsys):
    assert main(["check", "--samples", "16", str(ROOT / "tests" / "specs" / "SO2xSO2.yaml")]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert "lifting NOT available" in first and "LieConv" in first


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("groupgen ")


def test_the_compiler_loads_no_runtime_module_outside_check():
    """emit reads the runtime helpers' names from source; generate / list use only the runtime's
    torch-free folder search and atomic writer."""
    import subprocess
    import sys

    code = ("import sys, groupgen.emit, groupgen.cli; "
            "print(sorted(m for m in sys.modules if m.startswith('lieconv_runtime')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "group_base" not in out and "nn" not in out, out
    code = "import sys, lieconv_runtime.loader, lieconv_runtime.io; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
