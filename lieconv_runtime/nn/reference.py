"""LieConv as the paper writes it: Algorithm 2 with the PointConv kernel of App. A.1, dense and plain.

`reference_lieconv` computes what `lieconv_runtime.nn.LieConv` computes, from the same parameters,
with nothing but the group's own distance and log and plain torch ops on every (query, element) pair
(O(m N) memory).  It is what the fast layer is tested against (tests/runtime/test_reference.py, values
and gradients, training and eval, padded and not) and the place to read the paper's equations:

    nbhd_i = {j : d((u_i, q_i), (u_j, q_j)) < r}            Alg. 2 line 3, eq. 5 and §4.5
    a_ij   = [log(u_i^-1 u_j), q_i, q_j]                     Alg. 2 line 5
    h_i    = (1/n_i) sum_{j in nbhd_i} k_theta(a_ij) f_j     Alg. 2 line 7, eq. 4
    k_theta(a) f = W (mlp(a) (x) f) + b                      App. A.1 (PointConv trick)
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from lieconv_runtime.lift import Lifted
from lieconv_runtime.nn.sampling import pair_keys

__all__ = ["reference_lieconv"]


def reference_lieconv(layer, cloud: Lifted, query=None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Values (bs, m, c_out) of `layer` (a LieConv) on `cloud` (values (bs, N, c_in)) at the queries
    `query` = (idx (bs, m), mask (bs, m)) (None: every element), zero at invalid queries.

    At most `layer.nbhd` neighbours per query: those inside the ball of radius `layer.radius`, and among
    them a uniformly random subset, chosen by the largest `pair_keys` seeded from `generator` (the
    fast layer's rule, so both choose the same subset); or the `nbhd` nearest when `layer.knn`.
    """
    G, (bs, N) = layer.group, cloud.mask.shape
    qidx, qmask = query if query is not None else (torch.arange(N).expand(bs, N), cloud.mask)
    i, j = qidx[:, :, None], torch.arange(N)[None, None, :]                     # every pair (i, j)
    d = G.distance(cloud, i, j)                                                  # (bs, m, N), +inf if padded
    k = min(layer.nbhd, N)
    if layer.knn:                                                                # the k nearest
        keys = -d
    else:                                                                        # inside the ball, random keys
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        b = torch.arange(bs)[:, None, None]
        keys = pair_keys(seed, b, i, j).double()
        keys = torch.where(d < float(layer.radius), keys, torch.full_like(keys, -torch.inf))
    top = keys.topk(k, dim=-1).indices
    nbhd = torch.zeros_like(keys, dtype=torch.bool).scatter(-1, top, True)
    nbhd &= torch.isfinite(keys) & torch.isfinite(d) & qmask[..., None]          # nbhd_i
    a = G.pair_embedding(cloud, i, j)                                            # a_ij: (bs, m, N, D)
    x = a[nbhd]                                                                  # the chosen pairs (P, D)
    for lin, norm in zip(layer.kernel.linears, layer.kernel.norms or [None] * 3):  # mlp: (Linear, BN, swish) x 3
        x = lin(x)
        x = F.silu(x if norm is None else norm(x))
    mlp = torch.zeros(nbhd.shape + (x.shape[-1],), dtype=x.dtype).index_put((nbhd,), x)  # (bs, m, N, kc)
    pooled = torch.einsum("bmnw,bnc->bmwc", mlp, cloud.values)                   # sum_j mlp(a_ij) (x) f_j
    h = F.linear(pooled.flatten(-2), layer.linear.weight)                         # W (...)
    n_i = nbhd.sum(-1, keepdim=True).clamp_min(1) if layer.mean else 1
    h = h / n_i + layer.linear.bias
    return torch.where(qmask[..., None], h, torch.zeros_like(h))
