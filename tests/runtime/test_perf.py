"""lieconv_runtime.perf: tune_malloc is applied on import of lieconv_runtime.nn, idempotent, and
LIECONV_TUNE_MALLOC=0 leaves the allocator alone; chunk_scale enlarges chunks on accelerators."""

import subprocess
import sys

import torch


def _applied(env_value):
    code = "import lieconv_runtime.nn, lieconv_runtime.perf as p; print(p.tune_malloc())"
    env = {"LIECONV_TUNE_MALLOC": env_value, "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return out.stdout.strip()


def test_tune_malloc_on_import_and_opt_out():
    expected = "True" if sys.platform.startswith("linux") else "False"
    assert _applied("1") == expected
    assert _applied("0") == "False"


def test_chunks_are_larger_on_accelerators():
    from lieconv_runtime.perf import ACCELERATOR_CHUNK_SCALE, chunk_scale

    assert chunk_scale("cpu") == 1 and chunk_scale(torch.device("cpu")) == 1
    assert chunk_scale("cuda:0") == chunk_scale(torch.device("cuda", 1)) == ACCELERATOR_CHUNK_SCALE > 1
