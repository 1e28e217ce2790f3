"""Non-LieConv dynamics baselines of the LieConv paper (§6): FC, HFC, OGN, HOGN.

All take ``n_particles`` (N) and ``dim`` (D) as constructor arguments, are batched
(``z (bs, 2ND)``, ``m, k (bs, N)``), plain torch, SiLU (swish) activations, and
work in float32 or float64 (``model.double()``). As in the paper's configurations
every baseline sees positions centred on their (unweighted) particle mean.

* :class:`FC`   -- 4 x 256 MLP on ``[q - q_mean, p, m, k]`` -> ``dz/dt`` directly.
* :class:`HFC`  -- ``H = kinetic + V``, ``V`` a 4 x 256 MLP on ``[q - q_mean, m, k]``.
* :class:`OGN`  -- one graph-network block on the complete graph with self-loops:
  edge MLP on ``[x_i, x_j]``, sum aggregation over ``j``, node MLP on
  ``[x_i, agg_i]`` -> ``(q_dot_i, p_dot_i)``; node inputs
  ``x_i = [q_i - q_mean, p_i, m_i, k_i]``; width 256.
* :class:`HOGN` -- the same block with node outputs of width 256, summed into a
  global feature, then a global MLP -> scalar ``H``; ``dz/dt = J grad H``.

Learning rates used in the paper: 1e-2 for all four (:data:`PAPER_LR`).
"""

from __future__ import annotations

import torch
from torch import nn

from lieconv_runtime.data.springs import split_state
from lieconv_runtime.models.hamiltonian import DynamicsModel, HamiltonianDynamics, HamiltonianModel

__all__ = ["FC", "HFC", "OGN", "HOGN", "MLPPotential", "GraphBlock", "mlp", "make_baseline", "PAPER_LR"]

PAPER_LR = {"FC": 1e-2, "HFC": 1e-2, "OGN": 1e-2, "HOGN": 1e-2}


def mlp(d_in: int, d_out: int, width: int = 256, n_hidden: int = 4) -> nn.Sequential:
    """``n_hidden`` Linear+SiLU layers of ``width``, then a linear output layer."""
    layers: list[nn.Module] = []
    d = d_in
    for _ in range(n_hidden):
        layers += [nn.Linear(d, width), nn.SiLU()]
        d = width
    layers.append(nn.Linear(d, d_out))
    return nn.Sequential(*layers)


def _node_features(z: torch.Tensor, m: torch.Tensor, k: torch.Tensor, with_p: bool = True) -> torch.Tensor:
    """``[q_i - q_mean, p_i, m_i, k_i]`` per particle: ``(bs, N, 2D+2)`` (``(bs, N, D+2)`` without p)."""
    n = m.shape[-1]
    q, p = split_state(z, n, z.shape[-1] // (2 * n))
    q = q - q.mean(-2, keepdim=True)
    feats = [q, p] if with_p else [q]
    return torch.cat(feats + [m.unsqueeze(-1), k.unsqueeze(-1)], dim=-1)


class FC(DynamicsModel):
    """Neural ODE: MLP ``(bs, N(2D+2)) -> dz/dt (bs, 2ND)``."""

    def __init__(self, n_particles: int = 6, dim: int = 2, width: int = 256, n_hidden: int = 4):
        super().__init__(n_particles, dim)
        self.net = mlp(n_particles * (2 * dim + 2), 2 * n_particles * dim, width, n_hidden)

    def derivative(self, z, m, k):
        x = _node_features(z, m, k).reshape(z.shape[0], -1)
        return self.net(x)


class MLPPotential(nn.Module):
    """``V(q (bs,N,D), m, k (bs,N)) -> (bs,)``: MLP on ``[q - q_mean, m, k]`` flattened."""

    def __init__(self, n_particles: int = 6, dim: int = 2, width: int = 256, n_hidden: int = 4):
        super().__init__()
        self.net = mlp(n_particles * (dim + 2), 1, width, n_hidden)

    def forward(self, q, m, k):
        q = q - q.mean(-2, keepdim=True)
        x = torch.cat([q, m.unsqueeze(-1), k.unsqueeze(-1)], dim=-1).reshape(q.shape[0], -1)
        return self.net(x).squeeze(-1)


class HFC(HamiltonianDynamics):
    """Hamiltonian FC: analytic kinetic energy + :class:`MLPPotential`."""

    def __init__(self, n_particles: int = 6, dim: int = 2, width: int = 256, n_hidden: int = 4):
        super().__init__(MLPPotential(n_particles, dim, width, n_hidden), n_particles, dim)


class GraphBlock(nn.Module):
    """One graph-network block on the complete graph with self-loops.

    ``x (bs, N, F) -> (bs, N, d_out)``: ``e_ij = phi_e([x_i, x_j])`` (width W),
    ``a_i = sum_j e_ij``, ``out_i = phi_v([x_i, a_i])``. Each MLP has 2 hidden
    SiLU layers of width W.
    """

    def __init__(self, d_in: int, d_out: int, width: int = 256, n_hidden: int = 2):
        super().__init__()
        self.edge = mlp(2 * d_in, width, width, n_hidden)
        self.node = mlp(d_in + width, d_out, width, n_hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bs, n, f = x.shape
        xi = x.unsqueeze(2).expand(bs, n, n, f)
        xj = x.unsqueeze(1).expand(bs, n, n, f)
        e = self.edge(torch.cat([xi, xj], dim=-1))  # (bs, N, N, W)
        agg = e.sum(2)  # (bs, N, W), incl. the self-loop j = i
        return self.node(torch.cat([x, agg], dim=-1))


class OGN(DynamicsModel):
    """ODE graph network: per-node ``(q_dot_i, p_dot_i)`` from one :class:`GraphBlock`."""

    def __init__(self, n_particles: int = 6, dim: int = 2, width: int = 256, n_hidden: int = 2):
        super().__init__(n_particles, dim)
        self.block = GraphBlock(2 * dim + 2, 2 * dim, width, n_hidden)

    def derivative(self, z, m, k):
        n = m.shape[-1]
        d = z.shape[-1] // (2 * n)
        out = self.block(_node_features(z, m, k))  # (bs, N, 2D)
        qdot, pdot = out[..., :d], out[..., d:]
        return torch.cat([qdot.reshape(z.shape[0], -1), pdot.reshape(z.shape[0], -1)], dim=-1)


class HOGN(HamiltonianModel):
    """Hamiltonian ODE graph network: ``H = phi_u(sum_i GraphBlock(x)_i)``, ``dz/dt = J grad H``."""

    def __init__(self, n_particles: int = 6, dim: int = 2, width: int = 256, n_hidden: int = 2):
        super().__init__(n_particles, dim)
        self.block = GraphBlock(2 * dim + 2, width, width, n_hidden)
        self.readout = mlp(width, 1, width, n_hidden)

    def hamiltonian(self, z, m, k):
        u = self.block(_node_features(z, m, k)).sum(1)  # (bs, W) global feature
        return self.readout(u).squeeze(-1)


def make_baseline(name: str, n_particles: int = 6, dim: int = 2, **kwargs) -> DynamicsModel:
    """``name`` in ``{'FC', 'HFC', 'OGN', 'HOGN'}`` (case-insensitive)."""
    table = {"FC": FC, "HFC": HFC, "OGN": OGN, "HOGN": HOGN}
    try:
        cls = table[name.upper()]
    except KeyError:
        raise ValueError(f"unknown baseline {name!r}; choose from {sorted(table)}") from None
    return cls(n_particles, dim, **kwargs)
