"""lieconv_runtime.perf.tune_malloc: applied on import of lieconv_runtime.nn, idempotent, and
LIECONV_TUNE_MALLOC=0 leaves the allocator alone."""

import subprocess
import sys


def _applied(env_value):
    code = "import lieconv_runtime.nn, lieconv_runtime.perf as p; print(p.tune_malloc())"
    env = {"LIECONV_TUNE_MALLOC": env_value, "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return out.stdout.strip()


def test_tune_malloc_on_import_and_opt_out():
    expected = "True" if sys.platform.startswith("linux") else "False"
    assert _applied("1") == expected
    assert _applied("0") == "False"
