"""lieconv_runtime.perf: importing the package changes no process-wide state; tune_malloc is an
explicit opt-in, idempotent, and LIECONV_TUNE_MALLOC=0 disables it; chunk_scale enlarges chunks on
accelerators."""

import subprocess
import sys

import torch


def _run(code: str, env_value: str) -> str:
    env = {"LIECONV_TUNE_MALLOC": env_value, "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return out.stdout.strip()


def test_import_leaves_the_allocator_alone():
    code = ("import lieconv_runtime, lieconv_runtime.nn, lieconv_runtime.testing, lieconv_runtime.perf as p; "
            "print(p._applied)")
    assert _run(code, "1") == "None"  # tune_malloc was never called


def test_tune_malloc_is_an_idempotent_opt_in():
    code = "import lieconv_runtime.perf as p; print(p.tune_malloc(), p.tune_malloc())"
    expected = "True True" if sys.platform.startswith("linux") else "False False"
    assert _run(code, "1") == expected
    assert _run(code, "0") == "False False"


def test_chunks_are_larger_on_accelerators():
    from lieconv_runtime.perf import ACCELERATOR_CHUNK_SCALE, chunk_scale

    assert chunk_scale("cpu") == 1 and chunk_scale(torch.device("cpu")) == 1
    assert chunk_scale("cuda:0") == chunk_scale(torch.device("cuda", 1)) == ACCELERATOR_CHUNK_SCALE > 1
