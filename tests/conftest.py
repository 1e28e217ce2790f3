"""Shared test configuration: hypothesis profiles and generated test groups.

Profiles: `ci` (the default: few examples, derandomized, so every run of the suite checks the
same examples and a failure reproduces) and `dev` (60 random examples per property: exploration,
e.g. `HYPOTHESIS_PROFILE=dev python -m pytest tests/groupgen`).
"""

import os

import torch
from hypothesis import HealthCheck, settings

settings.register_profile("ci", max_examples=12, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.register_profile("dev", max_examples=60, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# Keep the suite fast and stable on a loaded 2-core machine.
torch.set_num_threads(1)
