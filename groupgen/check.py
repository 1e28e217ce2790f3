"""`groupgen check SPEC`: derive, emit and property-test one spec; print a report.

The reference for exp is torch.linalg.matrix_exp (Pade scaling-and-squaring, float64), which
shares nothing with the closed forms under test.  Tolerances (relative to 1 + |value|):

=============================  =========  =========
property                       float64    float32
=============================  =========  =========
exp == matrix_exp              1e-10      2e-5
log(exp(a)) == a (principal)   1e-9       1e-3
exp(log(g)) == g (incl. ~pi)   1e-10      2e-5
inv(g) @ g == I                1e-10      2e-5
bracket == commutator          1e-12      1e-5
=============================  =========  =========
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from groupgen import steps
from groupgen.algebra import ClosedFormError, analyze
from groupgen.emit import render
from groupgen.lift import lift_check_rows
from groupgen.spec import SpecError, load_spec

TOLERANCES = {
    torch.float64: {"exp": 1e-10, "log_exp": 1e-9, "exp_log": 1e-10, "inv": 1e-10, "bracket": 1e-12},
    torch.float32: {"exp": 2e-5, "log_exp": 1e-3, "exp_log": 2e-5, "inv": 2e-5, "bracket": 1e-5},
}


@dataclass
class Row:
    name: str
    worst: float
    tol: float
    limitation: bool = False  # a documented limit of numeric fallbacks: reported, never fails the check

    @property
    def passed(self) -> bool:
        return self.limitation or (math.isfinite(self.worst) and self.worst <= self.tol)

    @property
    def status(self) -> str:
        if self.limitation:
            return "note" if math.isfinite(self.worst) and self.worst <= self.tol else "LIMIT"
        return "pass" if self.passed else "FAIL"


@dataclass
class Report:
    spec: str
    header: str = ""
    rows: list = field(default_factory=list)
    error: str = ""
    spec_error: bool = False  # the error is the spec's (exit status 2), not an internal failure (1)
    no_lift: str = ""  # why the group cannot lift points (so LieConv cannot use it), if it cannot
    warnings: list = field(default_factory=list)  # settings that have no effect

    @property
    def passed(self) -> bool:
        return not self.error and all(r.passed for r in self.rows)

    def text(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        if self.passed and self.no_lift:
            verdict = "PASS for exp/log/inv; lifting NOT available, so LieConv cannot use this group yet"
        lines = [f"groupgen check {self.spec}: {verdict}"]
        if self.header:
            lines.append(f"  {self.header}")
        if self.error:
            lines.append(f"  error: {self.error}")
        if self.no_lift:
            lines.append(f"  lifting: {self.no_lift}")
        lines += [f"  warning: {w}" for w in self.warnings]
        for r in self.rows:
            lines.append(f"  [{r.status}] {r.name:<52s} worst {r.worst:9.2e}  (tol {r.tol:.0e})")
        if any(r.status == "LIMIT" for r in self.rows):
            lines.append("  LIMIT: numeric fallback (eigen-decomposition log): inaccurate within sqrt(eps) of "
                         "rotation angle pi (no real principal log at pi itself); the closed forms are exact there")
        return "\n".join(lines)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.numel() == 0:
        return 0.0
    scale = 1.0 + b.abs().flatten(-2).amax(-1) if b.dim() >= 2 else 1.0 + b.abs()
    err = (a - b).abs().flatten(-2).amax(-1) if a.dim() >= 2 else (a - b).abs()
    return float((err / scale).max())


def spectral_extent(G, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(rotation, growth) of exp(a) in float64 (`GeneratedGroup.spectrum`, closed form for derived
    groups): the angle that log's branch cut limits, and log of the condition number / 2."""
    return G.spectrum(a.to(torch.float64))


def rotation_extent(G, a: torch.Tensor) -> torch.Tensor:
    return spectral_extent(G, a)[0]


MAX_GROWTH = 4.0  # samples keep |Re(eigenvalue)| <= 4: elements with condition number <= e^8


def principal_samples(G, n: int, generator: torch.Generator, dtype=torch.float64, scale: float = 1.0) -> torch.Tensor:
    """Random coefficients with every rotation angle below 0.9 pi (log's principal domain)
    and growth |Re(eigenvalue)| <= MAX_GROWTH."""
    a = torch.randn(n, G.lie_dim, generator=generator, dtype=torch.float64) * scale
    rot, grow = spectral_extent(G, a)
    shrink = torch.ones_like(rot)
    shrink = torch.where(rot > 0.9 * math.pi, 0.9 * math.pi / rot.clamp_min(1e-300), shrink)
    shrink = torch.minimum(shrink, torch.where(grow > MAX_GROWTH, MAX_GROWTH / grow.clamp_min(1e-300), torch.ones_like(grow)))
    return (a * shrink[:, None]).to(dtype)


def near_cut_samples(G, n: int, generator: torch.Generator, gap: float, dtype=torch.float64) -> torch.Tensor:
    """Coefficients whose largest rotation angle is pi - gap (empty if the group has no rotations)."""
    a = torch.randn(n, G.lie_dim, generator=generator, dtype=torch.float64)
    rot, grow = spectral_extent(G, a)
    keep = (rot > 0.25 * a.norm(dim=-1)) & (grow * math.pi <= MAX_GROWTH * rot.clamp_min(1e-300))
    a, rot = a[keep], rot[keep]
    return (a * ((math.pi - gap) / rot)[:, None]).to(dtype)


def run_properties(G, samples: int = 200, seed: int = 0) -> list[Row]:
    rows = []
    gen = torch.Generator().manual_seed(seed)
    for dtype in (torch.float64, torch.float32):
        tol = TOLERANCES[dtype]
        tag = str(dtype).replace("torch.", "")
        a = principal_samples(G, samples, gen, torch.float64, scale=1.0)
        ref = torch.linalg.matrix_exp(G.hat(a))
        g = G.exp(a.to(dtype))
        rows.append(Row(f"exp vs matrix_exp ({tag})", _rel(g.double(), ref), tol["exp"]))
        back = G.log(g)
        rows.append(Row(f"log(exp(a)) == a ({tag})", _rel(back.double(), a), tol["log_exp"]))
        rows.append(Row(f"exp(log(g)) == g ({tag})", _rel(G.exp(back).double(), g.double()), tol["exp_log"]))
        worst = {}  # far: pi - angle >= sqrt(eps); at: closer (the input cannot resolve the gap)
        for gap in (1e-3, 1e-6, 1e-9, 0.0):
            c = near_cut_samples(G, max(8, samples // 8), gen, gap, dtype)
            if len(c):
                gc = G.exp(c)
                key = "far" if gap >= torch.finfo(dtype).eps ** 0.5 else "at"
                worst[key] = max(worst.get(key, 0.0), _rel(G.exp(G.log(gc)).double(), gc.double()))
        rows.append(Row(f"exp(log(g)) == g, angle -> pi ({tag})", worst.get("far", 0.0), tol["exp_log"]))
        rows.append(Row(f"exp(log(g)) == g, pi - angle < sqrt(eps) ({tag})", worst.get("at", 0.0), tol["exp_log"],
                        limitation=not G.closed_form))
        eye = torch.eye(G.rep_dim, dtype=dtype)
        rows.append(Row(f"inv(g) @ g == I ({tag})", _rel(G.inv(g) @ g, eye.expand_as(g)), tol["inv"]))
        b = torch.randn(samples, G.lie_dim, generator=gen, dtype=torch.float64).to(dtype)
        A, Bm = G.hat(a.to(dtype)), G.hat(b)
        rows.append(Row(f"bracket == commutator ({tag})", _rel(G.hat(G.bracket(a.to(dtype), b)), A @ Bm - Bm @ A), tol["bracket"]))
        # gradients at the identity and near the cut must be finite
        pts = [torch.zeros(1, G.lie_dim, dtype=dtype)]
        c = near_cut_samples(G, 4, gen, 1e-9, dtype)
        if len(c):
            pts.append(c)
        bad = 0.0
        for p in pts:
            p = p.clone().requires_grad_(G.lie_dim > 0)
            if G.lie_dim:
                (G.exp(p).sum() + G.log(G.exp(p)).pow(2).sum()).backward()
                bad = max(bad, float((~torch.isfinite(p.grad)).sum()))
        rows.append(Row(f"finite gradients at 0 and near pi ({tag})", bad, 0.0))
    return rows


def check_spec(path, samples: int = 200, seed: int = 0) -> Report:
    """Run every property on one spec (nothing is written outside a temporary folder)."""
    from lieconv_runtime.io import atomic_write_text
    from lieconv_runtime.loader import load_group

    report = Report(str(path))
    try:
        t0 = time.perf_counter()
        spec = load_spec(path)
        alg = analyze(spec)
        source = render(spec, alg)
        kind = "numeric fallback" if spec.numeric_fallback else "closed form"
        report.header = (f"{spec.name}: lie_dim {len(spec.generators)}, rep_dim {spec.rep_dim}, {spec.action}, {kind}, "
                         f"{len(alg.blocks)} block(s), derived in {time.perf_counter() - t0:.2f}s")
    except (SpecError, ClosedFormError) as err:
        report.error, report.spec_error = str(err), True
        return report
    with tempfile.TemporaryDirectory() as tmp:
        atomic_write_text(Path(tmp) / f"{spec.name}.py", source)
        G = load_group(spec.name, search_path=tmp)
        with steps.step("property checks", f"{samples} samples"):
            report.rows = run_properties(G, samples, seed)
        with steps.step("lifting checks", f"{samples} samples"):
            lift_rows = lift_check_rows(G, samples, seed)
        report.rows += [Row(name, worst, tol) for name, worst, tol in lift_rows]
        if not lift_rows:
            report.no_lift = str(G.LIFT.get("reason") or "no lifting data was derived")
        if "alpha" in spec.defaults and G.alpha_unused():
            report.warnings.append(
                f"defaults.alpha = {spec.defaults['alpha']:g} has no effect ({G.alpha_unused()}: alpha weighs the "
                "distance between orbits); remove it, and weigh the generators with `metric:` instead")
    return report
