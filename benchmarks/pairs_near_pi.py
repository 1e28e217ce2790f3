"""Exactness of pair embeddings near rotation angle pi: one JSON line per (group, dtype, path).

    python benchmarks/pairs_near_pi.py [--pairs 200000]

Clouds of lifted elements u_i (random rotations and translations) are paired with
u_j = u_i exp(B) where B rotates by theta = pi - 10^-s (s uniform in [0, 8], i.e. angles from
pi - 1 to pi - 1e-8) about a random axis, plus a random translation part.  For every pair the
embedding a = log(u_i^-1 u_j) is computed in the benchmark's dtype by

* `geometry`: PairGeometry.embed, what LieConv uses (closed-form orthogonal log without gradients);
* `group`: the group's generated log (G.pair_embedding), used when gradients flow to the elements;

* `textbook`: the textbook formula theta = acos((tr R - 1) / 2), B = theta / (2 sin theta) (R - R^T)
  on the same dtype (the form the original code used), to show that the check catches wrong logs;

and checked against the float64 construction: a pair is *wrong* when exp(a) differs from
u_i^-1 u_j by more than `tol` (relative Frobenius; 1e-3 in float32, 1e-9 in float64) or when a
leaves log's principal domain (rotation angle > pi (1 + 1e-6)).  Both signs of the axis are right
at theta = pi exactly, so the check is on exp(a), not on a.  The original LieConv code gets 74.9 %
of these SE3 pairs wrong in float32 (benchmarks/original.py --near-pi).
"""

from __future__ import annotations

import argparse
import json
import math

import torch


def near_pi_cloud(G, n_pairs: int, gen: torch.Generator):
    """float64 elements u (n_pairs, 2, r, r) and the exact relative elements g = u_0^-1 u_1."""
    m = G.space_dim
    L = G.lie_dim
    a_i = torch.randn(n_pairs, L, generator=gen, dtype=torch.float64)
    u_i = G.exp(a_i)
    s = 8 * torch.rand(n_pairs, generator=gen, dtype=torch.float64)
    theta = math.pi - 10.0 ** (-s)
    # a rotation by theta about a random axis (m = 3) / in the plane (m = 2), plus a translation
    if m == 3:
        axis = torch.randn(n_pairs, 3, generator=gen, dtype=torch.float64)
        axis = axis / axis.norm(dim=-1, keepdim=True)
        K = torch.zeros(n_pairs, 3, 3, dtype=torch.float64)
        K[:, 0, 1], K[:, 0, 2], K[:, 1, 2] = -axis[:, 2], axis[:, 1], -axis[:, 0]
        K = K - K.transpose(1, 2)
    else:
        K = torch.tensor([[0.0, -1.0], [1.0, 0.0]], dtype=torch.float64).expand(n_pairs, 2, 2)
    X = torch.zeros(n_pairs, m + 1, m + 1, dtype=torch.float64)
    X[:, :m, :m] = theta[:, None, None] * K
    X[:, :m, m] = torch.randn(n_pairs, m, generator=gen, dtype=torch.float64)
    g = torch.linalg.matrix_exp(X)
    u_j = u_i @ g
    return torch.stack([u_i, u_j], 1), g


def lifted(G, u: torch.Tensor, dtype):
    """A Lifted cloud holding the elements u (bs, N, r, r) (what LieConv sees after lifting)."""
    from lieconv_runtime.lift import Lifted

    u = u.to(dtype)
    bs, N = u.shape[:2]
    zeros = torch.zeros(bs, N, 0, dtype=dtype)
    return Lifted(coords=u[..., :G.space_dim, G.space_dim], g=u, g_inv=G.inv(u), a=G.log(u), q=zeros,
                  values=torch.zeros(bs, N, 1, dtype=dtype), mask=torch.ones(bs, N, dtype=torch.bool), nsamples=1)


def textbook_log(G, g: torch.Tensor) -> torch.Tensor:
    """Textbook log of [[R, t], [0, 1]]: acos for the angle, theta / (2 sin theta) (R - R^T), V^-1 t."""
    m = G.space_dim
    R, t = g[..., :m, :m], g[..., :m, m]
    cos = ((R.diagonal(dim1=-2, dim2=-1).sum(-1) - (m - 2)) / 2).clamp(-1, 1)
    theta = torch.acos(cos)
    sin = torch.sin(theta)
    f = torch.where(sin.abs() > 1e-6, theta / (2 * sin), torch.full_like(sin, 0.5))
    B = f[..., None, None] * (R - R.transpose(-1, -2))
    c = torch.where(theta > 1e-3, (1 - (theta / 2) / torch.tan(theta / 2)) / theta**2, torch.full_like(theta, 1 / 12))
    Bt = (B @ t[..., None])[..., 0]
    tau = t - Bt / 2 + c[..., None] * (B @ Bt[..., None])[..., 0]
    X = torch.zeros_like(g)
    X[..., :m, :m], X[..., :m, m] = B, tau
    return G.vee(X)


def measure(name: str, dtype, n_pairs: int, seed: int = 0) -> list[dict]:
    from lieconv_runtime import load_group
    from lieconv_runtime.nn.geometry import PairGeometry

    G = load_group(name)
    gen = torch.Generator().manual_seed(seed)
    u, g = near_pi_cloud(G, n_pairs, gen)
    cloud = lifted(G, u[None].reshape(1, 2 * n_pairs, *u.shape[-2:]), dtype)
    i = torch.arange(0, 2 * n_pairs, 2)[None]
    j = i + 1
    tol = 1e-3 if dtype == torch.float32 else 1e-9
    rows = []
    paths = {"geometry": lambda: PairGeometry(G, cloud).embed(i, j),
             # (query, neighbours) form, as LieConv calls it: the native kernel on the CPU when it builds
             "geometry_per_query": lambda: PairGeometry(G, cloud).embed(i[..., None], j[..., None])[:, :, 0],
             "group": lambda: G.pair_embedding(cloud, i, j),
             "textbook": lambda: textbook_log(G, cloud.g_inv[:, 0::2] @ cloud.g[:, 1::2])}
    for path, fn in paths.items():
        with torch.no_grad():
            a = fn()[0, :, :G.lie_dim].double()
        e = G.exp(a)
        err = (e - g).flatten(1).norm(dim=1) / g.flatten(1).norm(dim=1)
        outside = G.extent(a) > math.pi * (1 + 1e-6)
        wrong = (err > tol) | outside | ~torch.isfinite(err)
        rows.append({"group": name, "dtype": str(dtype).replace("torch.", ""), "path": path, "pairs": n_pairs,
                     "wrong": int(wrong.sum()), "wrong_frac": float(wrong.double().mean()),
                     "max_rel_err_exp": float(err[torch.isfinite(err)].max()), "tol": tol,
                     "outside_principal": int(outside.sum())})
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=200_000)
    p.add_argument("--groups", nargs="+", default=["SE3", "SE2"])
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    for name in args.groups:
        for dtype in (torch.float32, torch.float64):
            for row in measure(name, dtype, args.pairs):
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
