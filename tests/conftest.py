"""Shared test configuration: hypothesis profiles and generated test groups.

Profiles: `ci` (the default: few examples, derandomized, so every run of the suite checks the
same examples and a failure reproduces) and `dev` (60 random examples per property: exploration,
e.g. `HYPOTHESIS_PROFILE=dev python -m pytest tests/groupgen`).
"""

import os
import tempfile

import pytest
import torch
from hypothesis import HealthCheck, settings

settings.register_profile("ci", max_examples=12, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.register_profile("dev", max_examples=60, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# Keep the suite fast and stable on a loaded 2-core machine: one intra-op thread (tiny tensors, where
# OpenMP spin-waiting on a busy 2-core box costs more than it buys), here and in `_one_thread`.
torch.set_num_threads(1)

# Tests never read or write the user's group folder: load_group searches LIECONV_GROUP_PATH and
# $XDG_DATA_HOME/lieconv/groups before the shipped groups.
os.environ.pop("LIECONV_GROUP_PATH", None)
os.environ["XDG_DATA_HOME"] = tempfile.mkdtemp(prefix="lieconv-test-data-")


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Every test module starts with one intra-op thread, and leaves one behind (a test that sets
    another count cannot change the next module's)."""
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _no_progress_lines(monkeypatch):
    """groupgen prints a progress line when a derivation step takes more than 2 s, which a loaded
    machine can make happen anywhere; tests that count stderr lines must not see it (the test of the
    progress line sets its own threshold)."""
    from groupgen import steps

    monkeypatch.setattr(steps, "SLOW_S", 1e9)


@pytest.fixture(params=[torch.float64, torch.float32], ids=["float64", "float32"])
def dtype(request):
    """Numeric tests take ``dtype`` and run in float64 and in float32 (as e3nn's tests do)."""
    return request.param
