"""Learning-rate schedule of the LieConv paper, stepped per iteration.

``lr(e) = base_lr * max(0.5 * (1 + cos(pi * e / E)), floor) * warmup(e)`` with
``e = step / steps_per_epoch`` the fractional epoch, ``E`` the number of epochs,
``floor = 1e-3`` and, if ``warmup_frac > 0``, ``warmup(e) = min(e / (warmup_frac * E), 1)``
(the paper's QM9 setting is ``warmup_frac = 0.01``; as in the original the very
first step of a warm-up run then has learning rate 0).
"""

from __future__ import annotations

import math

import torch

__all__ = ["cosine_factor", "CosineSchedule"]


def cosine_factor(e: float, total_epochs: float, warmup_frac: float = 0.0, floor: float = 1e-3) -> float:
    """Multiplier of the base learning rate at fractional epoch ``e``."""
    f = max(0.5 * (1.0 + math.cos(math.pi * e / total_epochs)), floor)
    if warmup_frac > 0:
        f *= min(e / (warmup_frac * total_epochs), 1.0)
    return f


class CosineSchedule:
    """Sets ``lr`` of every param group of ``optimizer`` from the step counter.

    Call :meth:`step` once per optimizer step (after ``optimizer.step()``); the
    learning rate for step ``i`` is ``base_lr * cosine_factor(i / steps_per_epoch, ...)``.
    State (``state_dict``) is just the step counter and the settings, so a resumed
    run reproduces the schedule exactly.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, base_lr: float, total_epochs: int,
                 steps_per_epoch: int, warmup_frac: float = 0.0, floor: float = 1e-3):
        if steps_per_epoch < 1 or total_epochs <= 0:
            raise ValueError("need steps_per_epoch >= 1 and total_epochs > 0")
        self.optimizer = optimizer
        self.base_lr = float(base_lr)
        self.total_epochs = total_epochs
        self.steps_per_epoch = steps_per_epoch
        self.warmup_frac = float(warmup_frac)
        self.floor = float(floor)
        self.step_count = 0
        self._apply()

    @property
    def epoch(self) -> float:
        """Fractional epoch of the next step."""
        return self.step_count / self.steps_per_epoch

    def get_lr(self) -> float:
        return self.base_lr * cosine_factor(self.epoch, self.total_epochs, self.warmup_frac, self.floor)

    def _apply(self) -> None:
        lr = self.get_lr()
        for g in self.optimizer.param_groups:
            g["lr"] = lr

    def step(self) -> None:
        self.step_count += 1
        self._apply()

    def state_dict(self) -> dict:
        return {
            "step_count": self.step_count,
            "base_lr": self.base_lr,
            "total_epochs": self.total_epochs,
            "steps_per_epoch": self.steps_per_epoch,
            "warmup_frac": self.warmup_frac,
            "floor": self.floor,
        }

    def load_state_dict(self, state: dict) -> None:
        for key in ("base_lr", "total_epochs", "steps_per_epoch", "warmup_frac", "floor"):
            setattr(self, key, state[key])
        self.step_count = int(state["step_count"])
        self._apply()
