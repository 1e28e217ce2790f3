"""Groups under test: every shipped spec, the extra specs in tests/specs/, and
re-based variants (generators permuted, rescaled and conjugated by an invertible matrix)
that must behave exactly like the originals."""

from __future__ import annotations

import random
from functools import lru_cache
from pathlib import Path

import sympy
import yaml

from groupgen.emit import render
from lieconv_runtime.io import atomic_write_text
from groupgen.spec import find_specs, load_spec

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = [Path(p).stem for p in find_specs(ROOT / "group_specs")]
EXTRA_SPECS = find_specs(ROOT / "tests" / "specs")
REBASED_FROM = ["SO3", "SE3", "Sim2", "SO2xSO2", "SO21", "Heisenberg", "Boost", "SE2"]


def rebased_yaml(spec, seed: int) -> str:
    """The same group in another basis: x -> P x (affine: [[P, c], [0, 1]]), generators
    permuted and rescaled by rationals."""
    rng = random.Random(seed)
    n = spec.rep_dim
    m = n - 1 if spec.action == "affine" else n
    while True:
        P = sympy.Matrix(m, m, lambda i, j: sympy.Integer(rng.randint(-2, 2)) + (1 if i == j else 0))
        if P.det() != 0:
            break
    T = sympy.eye(n)
    T[:m, :m] = P
    if spec.action == "affine":
        for i in range(m):
            T[i, m] = sympy.Rational(rng.randint(-3, 3), 2)
    Tinv = T.inv()
    order = list(range(len(spec.generators)))
    rng.shuffle(order)
    gens = {}
    for i in order:
        scale = sympy.Rational(rng.choice([-3, -1, 1, 2, 5]), rng.choice([1, 2, 3]))
        G = scale * T * sympy.Matrix(spec.generators[i]) * Tinv
        gens[f"{spec.generator_names[i]}_b"] = [[str(v) for v in G.row(r)] for r in range(n)]
    data = {"name": f"{spec.name}_rebased{seed}", "description": f"{spec.name} in another basis",
            "action": spec.action, "generators": gens}
    return yaml.safe_dump(data, sort_keys=False)


@lru_cache(maxsize=None)
def build_test_groups(folder: str) -> dict[str, Path]:
    """Generate extra and rebased groups into `folder`; name -> search path."""
    out = Path(folder)
    paths = {name: ROOT / "generated" for name in SHIPPED}
    sources = {Path(p).stem: load_spec(p) for p in EXTRA_SPECS}
    for p in find_specs(ROOT / "group_specs"):
        sources.setdefault(Path(p).stem, load_spec(p))
    for spec in [load_spec(p) for p in EXTRA_SPECS]:
        atomic_write_text(out / f"{spec.name}.py", render(spec))
        paths[spec.name] = out
    for base in REBASED_FROM:
        spec_file = out / f"{base}_rebased1.yaml"
        spec_file.write_text(rebased_yaml(sources[base], 1))
        spec = load_spec(spec_file)
        atomic_write_text(out / f"{spec.name}.py", render(spec))
        paths[spec.name] = out
    return paths
