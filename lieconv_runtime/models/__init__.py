"""Task models: dynamics (Hamiltonian networks and baselines), images and molecules.

The generic layers and LieResNet are in `lieconv_runtime.nn`; these are the paper's networks for
its three experiments, built on them.
"""

from lieconv_runtime.models.dynamics_baselines import FC, HFC, HOGN, OGN, make_baseline
from lieconv_runtime.models.hamiltonian import (
    DynamicsModel,
    HamiltonianDynamics,
    HamiltonianModel,
    LieResNetPotential,
    SpringPotential,
    build_hlieresnet,
    predict_chunks,
    rollout,
)
from lieconv_runtime.models.images import ImgLieResNet, image_points
from lieconv_runtime.models.molecules import MolecLieResNet

__all__ = [
    "DynamicsModel", "FC", "HFC", "HOGN", "HamiltonianDynamics", "HamiltonianModel", "ImgLieResNet", "LieResNetPotential",
    "MolecLieResNet", "OGN", "SpringPotential", "build_hlieresnet", "image_points", "make_baseline", "predict_chunks",
    "rollout",
]
