"""No pair embedding is wrong near rotation angle pi (issue 4), in float32 and float64, on the paths
LieConv uses (PairGeometry.embed per pair, and per query, which runs the native kernel on the CPU)
and on the group's generated log; the textbook acos formula, run through the same check, is wrong
on most such pairs (so the check can fail)."""

import importlib.util
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("pairs_near_pi",
                                               Path(__file__).parents[2] / "benchmarks" / "pairs_near_pi.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


@pytest.mark.parametrize("name", ["SE3", "SE2"])
def test_no_wrong_pairs_near_pi(name, dtype):
    rows = {r["path"]: r for r in bench.measure(name, dtype, 3000, seed=1)}
    for path in ("geometry", "geometry_per_query", "group"):
        assert rows[path]["wrong"] == 0, rows[path]
    if name == "SE3":
        assert rows["textbook"]["wrong_frac"] > 0.1, rows["textbook"]
