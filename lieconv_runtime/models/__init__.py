"""Models of the LieConv runtime: dynamics models (Hamiltonian + baselines)."""

from lieconv_runtime.models.hamiltonian import (
    DynamicsModel,
    HamiltonianDynamics,
    HamiltonianModel,
    SpringPotential,
    predict_chunks,
    rollout,
)
from lieconv_runtime.models.dynamics_baselines import FC, HFC, HOGN, OGN, make_baseline

__all__ = [
    "DynamicsModel",
    "HamiltonianDynamics",
    "HamiltonianModel",
    "SpringPotential",
    "predict_chunks",
    "rollout",
    "FC",
    "HFC",
    "OGN",
    "HOGN",
    "make_baseline",
]
