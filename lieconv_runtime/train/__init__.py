"""Training: the paper's cosine schedule, a generic resumable trainer, the data-size study."""

from lieconv_runtime.train.schedule import cosine_factor, cosine_schedule
from lieconv_runtime.train.trainer import CheckpointError, Objective, Regression, Trainer, read_checkpoint, seed_everything

__all__ = ["CheckpointError", "Objective", "Regression", "Trainer", "cosine_factor", "cosine_schedule",
           "read_checkpoint", "seed_everything"]
