"""Public equivariance checks for LieConv models (in the spirit of e3nn's `assert_equivariant`).

    from lieconv_runtime.testing import equivariance_error
    report = equivariance_error(model, G, (coords, values, mask))            # deterministic
    assert report.error < 1e-9
    report = equivariance_error(model, G, inputs, mode="distribution", trials=200)
    assert report.pvalue > 1e-3

The model is called as model(coords, values, mask, stabilizer=h) (LieResNet and its wrappers with
point-cloud inputs).  How its output should transform:

* a tensor, ``output="invariant"`` (default): f(g.x) = f(x) (pooled outputs);
* a tensor of points (bs, n, d), ``output="points"``: f(g.x) = g.f(x) (a returned cloud moves with g);
* a Lifted cloud (pool=None, detected): its values are invariant element by element (the same
  elements are chosen for g.x as for x), its points move with g (coords -> g.coords) and its group
  elements are multiplied by g from the left (u -> g u); every part is compared.

* mode="deterministic": the same random draws for x and g.x: every layer's random stream is
  restarted before each call, and the lifting samples are transformed along,
  h' = u_{g x}^-1 g u_x h, so that the lifted g.x is exactly g times the lifted x.  error is the
  relative discrepancy |f(g.x) - f(x)| / |f(x)|.
* mode="distribution" (paper §4.4): f(x) and f(g.x) with independent draws (fresh lifting samples
  and neighbourhoods on every call) must have the same distribution.  Each output entry gets a
  two-sample Kolmogorov-Smirnov test over `trials` calls; pvalue is the smallest p-value times the
  number of entries (Bonferroni), error the largest KS statistic.

The model's state (batch-norm running statistics, ball radii, random streams) is restored
afterwards, and radii never adapt during a check.
"""

from __future__ import annotations

import copy
import math
from typing import NamedTuple

import torch

from lieconv_runtime.lift import Lifted
from lieconv_runtime.nn.lieconv import frozen_radius, reset_rngs, set_stream

__all__ = ["EquivarianceReport", "equivariance_error", "ks_2samp", "random_group_elements", "transform_inputs"]


class EquivarianceReport(NamedTuple):
    error: float  # deterministic: relative error; distribution: largest KS statistic
    pvalue: float | None  # distribution mode only (Bonferroni-corrected)
    mode: str

    def __float__(self) -> float:
        return self.error


def random_group_elements(group, bs: int, *, generator: torch.Generator | None = None, scale: float = 1.0,
                          dtype=torch.float64, device=None) -> torch.Tensor:
    """bs random elements (bs, r, r): Haar samples for compact groups, else exp(scale N(0, I))."""
    if group.compact:
        return group.sample_haar((bs,), generator=generator, dtype=dtype, device=device)
    a = scale * torch.randn(bs, group.lie_dim, generator=generator, dtype=torch.float64)
    return group.exp(a).to(dtype=dtype, device=device)


def _stabilizer_samples(model, group, coords, mask, generator):
    if group.stabilizer_dim == 0:
        return None
    bs, n, _ = coords.shape
    K = int(getattr(model, "lift_samples", None) or group.lift_samples)
    return group.sample_stabilizer((bs, n, K), generator=generator, dtype=coords.dtype, device=coords.device)


def transform_inputs(group, g: torch.Tensor, coords: torch.Tensor, mask: torch.Tensor,
                     stabilizer: torch.Tensor | None = None):
    """g.x for g (bs, r, r), coords (bs, n, d); and the stabilizer samples transformed along.

    Returns (coords', stabilizer') with lift(coords', stabilizer') = g lift(coords, stabilizer).
    """
    x = torch.where(mask[..., None], coords, torch.zeros_like(coords))
    x2 = group.act(g[:, None], x)
    if stabilizer is None:
        return x2, None
    u, u2 = group.section(x), group.section(x2)
    rel = group.inv(u2) @ g[:, None] @ u  # (bs, n, r, r), in the stabilizer of o_q
    return x2, rel[:, :, None] @ stabilizer


def _flat(out) -> torch.Tensor:
    if isinstance(out, Lifted):
        return torch.where(out.mask[..., None], out.values, torch.zeros_like(out.values)).reshape(out.values.shape[0], -1)
    return out.reshape(out.shape[0], -1)


def _relative(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got - want).norm() / want.norm().clamp_min(torch.finfo(want.dtype).tiny))


def _discrepancy(group, g: torch.Tensor, y1, y2, output: str, mask: torch.Tensor) -> float:
    """Relative discrepancy between f(g.x) = y2 and what it should be given f(x) = y1 (the largest over parts)."""
    if isinstance(y1, Lifted):
        valid = y1.mask[..., None]
        zero = lambda t: torch.where(valid, t, torch.zeros_like(t))  # noqa: E731
        gg = g[:, None]
        parts = [(_flat(y2), _flat(y1)),
                 (zero(y2.coords), zero(group.act(gg, y1.coords))),
                 (zero(y2.g.flatten(-2)), zero((gg @ y1.g).flatten(-2)))]
        return max(_relative(a.detach(), b.detach()) for a, b in parts)
    if output == "points":  # (bs, n, d), compared at the valid input points
        keep = mask[..., None]
        want = torch.where(keep, group.act(g[:, None], y1), torch.zeros_like(y1))
        return _relative(torch.where(keep, y2, torch.zeros_like(y2)).detach(), want.detach())
    if output != "invariant":
        raise ValueError(f"output must be 'invariant' or 'points', got {output!r}")
    return _relative(_flat(y2).detach(), _flat(y1).detach())


def ks_2samp(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov statistic and asymptotic p-value of 1-d samples a, b."""
    a, b = a.double().sort().values, b.double().sort().values
    both = torch.cat([a, b])
    cdf_a = torch.searchsorted(a, both, right=True).double() / len(a)
    cdf_b = torch.searchsorted(b, both, right=True).double() / len(b)
    d = float((cdf_a - cdf_b).abs().max())
    en = math.sqrt(len(a) * len(b) / (len(a) + len(b)))
    lam = (en + 0.12 + 0.11 / en) * d
    p = 2 * sum((-1) ** (k - 1) * math.exp(-2 * (k * lam) ** 2) for k in range(1, 101))
    return d, min(max(p, 0.0), 1.0) if lam > 0 else 1.0


def equivariance_error(model, group, inputs, *, mode: str = "deterministic", g: torch.Tensor | None = None,
                       stabilizer: torch.Tensor | None = None, seed: int = 0, scale: float = 1.0,
                       trials: int = 100, output: str = "invariant") -> EquivarianceReport:
    """Transform inputs = (coords (bs, n, d), values (bs, n, c), mask (bs, n) or None) by random
    group elements g (or the given g (bs, r, r)) and compare model outputs (see module docstring).
    """
    coords, values, mask = (tuple(inputs) + (None,))[:3]
    if mask is None:
        mask = torch.ones(coords.shape[:2], dtype=torch.bool, device=coords.device)
    gen = torch.Generator().manual_seed(seed)
    if g is None:
        g = random_group_elements(group, coords.shape[0], generator=gen, scale=scale, dtype=coords.dtype,
                                  device=coords.device)
    state = copy.deepcopy(model.state_dict())
    try:
        with frozen_radius(model):
            if mode == "deterministic":
                if stabilizer is None:
                    stabilizer = _stabilizer_samples(model, group, coords, mask, gen)
                coords2, stabilizer2 = transform_inputs(group, g, coords, mask, stabilizer)
                reset_rngs(model)
                y1 = model(coords, values, mask, stabilizer=stabilizer)
                reset_rngs(model)
                y2 = model(coords2, values, mask, stabilizer=stabilizer2)
                return EquivarianceReport(_discrepancy(group, g, y1, y2, output, mask), None, mode)
            if mode != "distribution":
                raise ValueError(f"mode must be 'deterministic' or 'distribution', got {mode!r}")
            coords2, _ = transform_inputs(group, g, coords, mask)
            ys1, ys2 = [], []
            for t in range(trials):
                set_stream(model, 2 * t + 1)
                ys1.append(_flat(model(coords, values, mask)).detach())
                set_stream(model, 2 * t + 2)
                ys2.append(_flat(model(coords2, values, mask)).detach())
            ys1, ys2 = torch.stack(ys1).flatten(1), torch.stack(ys2).flatten(1)  # (trials, entries)
            tests = [ks_2samp(ys1[:, e], ys2[:, e]) for e in range(ys1.shape[1])]
            stat = max(t[0] for t in tests)
            pval = min(1.0, min(t[1] for t in tests) * len(tests))
            return EquivarianceReport(stat, pval, mode)
    finally:
        set_stream(model, 0)
        model.load_state_dict(state)
