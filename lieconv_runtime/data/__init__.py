"""Data sets for the LieConv runtime (spring dynamics, QM9 molecules, RotMNIST images)."""

from lieconv_runtime.data.errors import DataError

from lieconv_runtime.data.rotmnist import (
    RotMNIST,
    build_from_mnist,
    download_rotmnist,
    load_amat,
    load_rotmnist,
    read_amat,
    rotate_images,
    write_amat,
)
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
from lieconv_runtime.data.qm9 import (
    QM9,
    collate_molecules,
    download_qm9,
    load_qm9,
    load_qm9_splits,
)

__all__ = [
    "DataError",
    "QM9",
    "ChunkData",
    "RotMNIST",
    "SpringSplits",
    "SpringTrajectories",
    "angular_momentum",
    "build_from_mnist",
    "collate_molecules",
    "download_qm9",
    "download_rotmnist",
    "energy",
    "generate_springs",
    "linear_momentum",
    "load_amat",
    "load_qm9",
    "load_qm9_splits",
    "load_rotmnist",
    "load_spring_splits",
    "load_springs",
    "make_chunks",
    "read_amat",
    "rotate_images",
    "simulate",
    "write_amat",
]
