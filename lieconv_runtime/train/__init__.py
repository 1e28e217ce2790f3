"""Training utilities: cosine learning-rate schedule and a resumable trainer."""

from lieconv_runtime.train.schedule import CosineSchedule, cosine_factor
from lieconv_runtime.train.trainer import Trainer, default_predict, seed_everything

__all__ = ["CosineSchedule", "cosine_factor", "Trainer", "default_predict", "seed_everything"]
