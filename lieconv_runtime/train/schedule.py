"""Learning-rate schedule of the LieConv paper, as a `torch.optim.lr_scheduler.LambdaLR` stepped per iteration.

``lr(s) = base_lr * max(0.5 (1 + cos(pi s / S)), floor) * warmup(s)`` at optimizer step ``s`` of ``S``
(``s / S`` = the fractional epoch over the epochs), ``floor = 1e-3`` and, if ``warmup_frac > 0``,
``warmup(s) = min(s / (warmup_frac S), 1)`` (the paper's QM9 setting is ``warmup_frac = 0.01``; as
in the original the very first step of a warm-up run then has learning rate 0).
"""

from __future__ import annotations

import math

import torch

__all__ = ["cosine_factor", "cosine_schedule"]


def cosine_factor(e: float, total: float, warmup_frac: float = 0.0, floor: float = 1e-3) -> float:
    """Multiplier of the base learning rate at progress ``e`` of ``total`` (epochs or steps)."""
    f = max(0.5 * (1.0 + math.cos(math.pi * e / total)), floor)
    if warmup_frac > 0:
        f *= min(e / (warmup_frac * total), 1.0)
    return f


def cosine_schedule(optimizer: torch.optim.Optimizer, total_steps: int, warmup_frac: float = 0.0,
                    floor: float = 1e-3) -> torch.optim.lr_scheduler.LambdaLR:
    """The paper's cosine schedule over ``total_steps`` optimizer steps (call ``.step()`` after each)."""
    if total_steps < 1:
        raise ValueError(f"need total_steps >= 1, got {total_steps}")
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: cosine_factor(step, total_steps, warmup_frac, floor))
