"""Data sets for the LieConv runtime (spring dynamics)."""

from lieconv_runtime.data.springs import (
    ChunkData,
    SpringSplits,
    SpringTrajectories,
    angular_momentum,
    energy,
    generate_springs,
    linear_momentum,
    load_spring_splits,
    load_springs,
    make_chunks,
    simulate,
)

__all__ = [
    "ChunkData",
    "SpringSplits",
    "SpringTrajectories",
    "angular_momentum",
    "energy",
    "generate_springs",
    "linear_momentum",
    "load_spring_splits",
    "load_springs",
    "make_chunks",
    "simulate",
]
