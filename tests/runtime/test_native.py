"""lieconv_runtime.native: the C ball selection chooses exactly the torch path's neighbours (flat
groups; orthogonal ones, near rotation angle pi too), the C farthest point sampling picks the torch
loop's elements, the C gather-contraction equals the gathered einsum (forward and backward, on its
register tiles and their remainders, with one or two threads), and the library degrades to the torch paths (with one warning) when it cannot be
built."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
import torch

from lieconv_runtime import load_group, native
from lieconv_runtime.nn import sampling
from lieconv_runtime.nn.geometry import PairGeometry

pytestmark = pytest.mark.skipif(not native.available(), reason="no C compiler: the native kernels are optional")


def _select(geometry, qidx, qmask, k, radius, use_native, monkeypatch):
    monkeypatch.setattr(sampling, "USE_NATIVE", use_native)
    nb = sampling.select_neighbours(geometry, qidx, qmask, k, radius, generator=torch.Generator().manual_seed(7))
    chosen = torch.where(nb.valid, nb.idx, -1).sort(-1).values  # the order within a row is free
    return chosen, nb.valid.sum(-1), nb.inside


@pytest.mark.parametrize("name", ["T2", "T3", "Trivial2"])
def test_native_selection_is_the_torch_selection(name, dtype, monkeypatch):
    G = load_group(name)
    gen = torch.Generator().manual_seed(1)
    bs, n = 3, 90
    x = (2 * torch.randn(bs, n, G.space_dim, generator=gen, dtype=torch.float64)).to(dtype)
    mask = torch.rand(bs, n, generator=gen) < 0.85
    x[~mask] = float("nan")  # padding holds garbage
    cloud = G.lift(x, torch.randn(bs, n, 2, generator=gen, dtype=dtype), mask)
    qidx = torch.randint(0, n, (bs, 40), generator=gen)
    qmask = mask.gather(1, qidx)
    for radius in (0.3, 1.5, 4.0, 1e3, float("inf")):
        for k in (1, 7, 25, n):
            nat = _select(PairGeometry(G, cloud), qidx, qmask, k, radius, True, monkeypatch)
            ref = _select(PairGeometry(G, cloud), qidx, qmask, k, radius, False, monkeypatch)
            assert torch.equal(nat[0], ref[0]), f"{name} r={radius} k={k}: different neighbours"
            assert torch.equal(nat[1], ref[1]) and nat[2] == ref[2]
            if (radius, k) == (1.5, 7):  # both regimes ran: more candidates than k, and fewer
                assert bool((nat[1][qmask] == 7).any()) and bool((nat[1][qmask] < 7).any())


def _near_pi_stabilizer(G, bs: int, n: int, dtype, gen):
    """Per point K = 3 stabilizer elements: the identity, a rotation by pi - 10^-s (s uniform in
    [0, 8]) about a random axis, and a Haar sample: many pairs of one point's elements sit near
    angle pi, where the closed form switches formulas."""
    h = G.sample_stabilizer((bs, n, 3), generator=gen, dtype=torch.float64)
    r = G.rep_dim
    h[:, :, 0] = torch.eye(r, dtype=torch.float64)
    eps = 10 ** (-8 * torch.rand(bs, n, generator=gen, dtype=torch.float64))
    angle = math.pi - eps
    if G.space_dim == 3:
        axis = torch.randn(bs, n, 3, generator=gen, dtype=torch.float64)
        axis = axis / axis.norm(dim=-1, keepdim=True)
        K = torch.zeros(bs, n, 3, 3, dtype=torch.float64)
        K[..., 0, 1], K[..., 0, 2], K[..., 1, 2] = -axis[..., 2], axis[..., 1], -axis[..., 0]
        K = K - K.transpose(-1, -2)
        rot = torch.linalg.matrix_exp(angle[..., None, None] * K)
    else:
        c, s_ = torch.cos(angle), torch.sin(angle)
        rot = torch.stack([torch.stack([c, -s_], -1), torch.stack([s_, c], -1)], -2)
    m = rot.shape[-1]
    h[:, :, 1] = torch.eye(r, dtype=torch.float64)
    h[:, :, 1, :m, :m] = rot
    return h.to(dtype)


@pytest.mark.parametrize("name", ["SE3", "SE2", "SO3", "SO2"])
@pytest.mark.parametrize("distance", ["quadrature", "sum"])
def test_native_orthogonal_selection_is_the_torch_selection(name, distance, dtype, monkeypatch):
    G = load_group(name, alpha=0.3)
    if distance == "sum":  # the paper's weighting, parts added as norms
        G = load_group(name, alpha=0.3, metric=G.original_weighting(0.2), distance="sum")
    gen = torch.Generator().manual_seed(2)
    bs, n = 3, 30
    x = (1.5 * torch.randn(bs, n, G.space_dim, generator=gen, dtype=torch.float64)).to(dtype)
    mask = torch.rand(bs, n, generator=gen) < 0.85
    x[~mask] = float("nan")
    h = _near_pi_stabilizer(G, bs, n, dtype, gen)
    cloud = G.lift(x, torch.randn(bs, n, 2, generator=gen, dtype=dtype), mask, stabilizer=h)
    N = cloud.mask.shape[1]
    qidx = torch.randint(0, N, (bs, 50), generator=gen)
    qmask = cloud.mask.gather(1, qidx)
    geometry = PairGeometry(G, cloud)
    assert geometry.kind == "orthogonal"
    near = float(geometry.rows(qidx)[qmask][:, :1].median()) * (1 + (1e-6 if dtype == torch.float64 else 1e-3))
    for radius in (0.5, 2.0, 4.0, 1e3, near):  # near: just above a pair's distance (beyond rounding)
        for k in (1, 7, 25):
            nat = _select(PairGeometry(G, cloud), qidx, qmask, k, radius, True, monkeypatch)
            ref = _select(PairGeometry(G, cloud), qidx, qmask, k, radius, False, monkeypatch)
            assert torch.equal(nat[0], ref[0]), f"{name} r={radius} k={k}: different neighbours"
            assert torch.equal(nat[1], ref[1]) and nat[2] == ref[2]


def _as_float64(cloud):
    return cloud._replace(**{k: v.double() for k, v in cloud._asdict().items()
                             if isinstance(v, torch.Tensor) and v.is_floating_point()})


@pytest.mark.parametrize("name", ["T2", "T3", "SE3", "SE2", "SO3", "SO2"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("distance", ["quadrature", "sum"])
def test_native_fps_is_the_torch_fps(name, weighted, distance, dtype, monkeypatch):
    """The native farthest point sampling picks the torch loop's elements, in order, with padding,
    clouds of different sizes, a metric, either distance form and (orthogonal groups) many pairs
    near angle pi.  It measures in double, so a float32 cloud picks what the torch loop picks on
    its float64 copy."""
    G = load_group(name, alpha=0.3, distance=distance)
    if weighted:
        G = load_group(name, alpha=0.3, metric=G.original_weighting(0.1) or {G.generator_names[0]: 4.0},
                       distance=distance)
    gen = torch.Generator().manual_seed(3)
    bs, n = 4, 40
    x = (1.5 * torch.randn(bs, n, G.space_dim, generator=gen, dtype=torch.float64)).to(dtype)
    mask = torch.rand(bs, n, generator=gen) < 0.85
    mask[1, 10:] = False  # a small cloud: its entries past its own count are padding
    x[~mask] = float("nan")
    stabilizer = _near_pi_stabilizer(G, bs, n, dtype, gen) if G.stabilizer_dim else None
    cloud = G.lift(x, torch.randn(bs, n, 2, generator=gen, dtype=dtype), mask, stabilizer=stabilizer)
    picks = {}
    for use_native in (True, False):
        monkeypatch.setattr(sampling, "USE_NATIVE", use_native)
        geometry = PairGeometry(G, cloud if use_native else _as_float64(cloud))
        assert sampling._native_fps_ok(geometry) == use_native
        idx, keep = sampling.farthest_point_sample(geometry, 0.6, torch.Generator().manual_seed(5))
        picks[use_native] = torch.where(keep, idx, -1)
    assert torch.equal(picks[True], picks[False])
    assert int((picks[True][1] >= 0).sum()) == round(0.6 * int(cloud.mask[1].sum()))


@pytest.mark.parametrize("name", ["SE3", "SE2", "SO3", "SO2"])
def test_closed_form_embeddings_near_pi(name, dtype):
    """Pair embeddings log(u_i^-1 u_j) of the closed form, a third of the pairs near angle pi,
    padding included: exp(embedding) = u_i^-1 u_j, and the generic group log agrees."""
    G = load_group(name, alpha=0.3)
    gen = torch.Generator().manual_seed(4)
    bs, n = 3, 30
    x = (1.5 * torch.randn(bs, n, G.space_dim, generator=gen, dtype=torch.float64)).to(dtype)
    mask = torch.rand(bs, n, generator=gen) < 0.85
    h = _near_pi_stabilizer(G, bs, n, dtype, gen)
    cloud = G.lift(x, torch.randn(bs, n, 2, generator=gen, dtype=dtype), mask, stabilizer=h)
    N = cloud.mask.shape[1]
    qidx = torch.randint(0, N, (bs, 40), generator=gen)
    nb = torch.randint(0, N, (bs, 40, 9), generator=gen)
    nb[:, :, 0] = qidx  # the pair (i, i) and
    nb[:, :, 1] = (qidx // 3) * 3 + (qidx % 3 + 1) % 3  # pairs of one point's elements (near pi)
    emb = PairGeometry(G, cloud).embed(qidx[:, :, None], nb)
    generic = G.pair_embedding(cloud, qidx[:, :, None], nb)
    generic_ok = (math.pi - G.extent(generic[..., :G.lie_dim].double())) > 1e-3  # the generic log's own domain
    err = float((emb - generic)[generic_ok].abs().max()) / float(generic.abs().max())
    assert err < (1e-12 if dtype == torch.float64 else 2e-5), f"{name}: {err:.2e}"
    a = emb[..., :G.lie_dim].double()  # exp(a) = u_i^-1 u_j for the valid pairs
    g = cloud.g.double()
    gi, gj = g[torch.arange(bs)[:, None], qidx], g[torch.arange(bs)[:, None, None], nb]
    rel = torch.linalg.inv(gi)[:, :, None] @ gj
    valid = cloud.mask.gather(1, qidx)[..., None] & cloud.mask[torch.arange(bs)[:, None, None], nb]
    diff = (G.exp(a) - rel)[valid].abs().max()
    assert float(diff) < (1e-10 if dtype == torch.float64 else 1e-4)
    assert float(emb[~valid].abs().max()) == 0


def test_native_selection_is_uniform_over_the_ball(monkeypatch):
    """Twelve points inside a ball, 4 picked per query, many seeds: each point is picked with
    probability 1/3 (chi^2 over the 12 points)."""
    G = load_group("T2")
    x = torch.randn(1, 12, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 0.1
    cloud = G.lift(x, torch.zeros(1, 12, 1, dtype=torch.float64), torch.ones(1, 12, dtype=torch.bool))
    counts = torch.zeros(12)
    qidx, qmask = torch.zeros(1, 1, dtype=torch.long), torch.ones(1, 1, dtype=torch.bool)
    trials = 3000
    for t in range(trials):
        nb = sampling.select_neighbours(PairGeometry(G, cloud), qidx, qmask, 4, 10.0,
                                        generator=torch.Generator().manual_seed(t))
        counts[nb.idx[nb.valid]] += 1
    expected = trials * 4 / 12
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 31.3  # 99.9 % quantile of chi^2 with 11 degrees of freedom


def _probe(env: dict) -> list[str]:
    code = ("import warnings; warnings.simplefilter('always'); from lieconv_runtime import native; "
            "print(native.available())")
    full = {**os.environ, **env}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full, check=True)
    return [out.stdout.strip(), out.stderr]


def test_disabled_or_unbuildable_native_falls_back(tmp_path):
    assert _probe({"LIECONV_NATIVE": "0"})[0] == "False"
    ok, err = _probe({"CC": "/bin/false", "LIECONV_NATIVE_CACHE": str(tmp_path)})
    assert ok == "False" and "building the C kernels failed" in err and "Traceback" not in err
    assert _probe({"LIECONV_NATIVE_CACHE": str(tmp_path)})[0] == "True"
    assert [p.suffix for p in tmp_path.iterdir()] == [".so"]  # only the finished library is left


@pytest.mark.parametrize("use_native", [True, False], ids=["native", "torch"])
@pytest.mark.parametrize("name", ["T2", "SE3"])
def test_selection_edge_cases(name, use_native, monkeypatch):
    """No queries, a cloud that is all padding, one point: both paths agree and return the shapes."""
    G = load_group(name, lift_samples=2)
    x = torch.randn(3, 5, G.space_dim, dtype=torch.float64)
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[0] = False
    mask[1, 1:] = False
    cloud = G.lift(x, torch.randn(3, 5, 1, dtype=torch.float64), mask)
    geometry = PairGeometry(G, cloud)
    none = torch.zeros(3, 0, dtype=torch.long)
    chosen, counts, inside = _select(geometry, none, none.bool(), 4, 1.5, use_native, monkeypatch)
    assert chosen.shape == (3, 0, 4) and inside == 0
    N = cloud.mask.shape[1]
    qidx = torch.arange(N).expand(3, N)
    chosen, counts, inside = _select(PairGeometry(G, cloud), qidx, cloud.mask, 4, 1.5, use_native, monkeypatch)
    assert int(counts[0].sum()) == 0 and int(counts[1].max()) <= int(cloud.mask[1].sum())


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("shape", [(13, 25, 16, 64), (9, 8, 8, 32), (6, 3, 5, 7), (11, 10, 24, 40)],
                         ids=["qm9_tiles", "exact_tiles", "no_full_tile", "tiles_and_rest"])
def test_gather_contract_is_the_gathered_einsum(shape, threads, dtype, monkeypatch):
    """p = sum_k s[q, k, :]^T values[rows[q, k], :], d/ds and d/dvalues (added into what is there)
    equal the einsum on gathered rows; rows repeat within and across queries (the scatter adds)."""
    Q, K, W, C = shape
    gen = torch.Generator().manual_seed(sum(shape))
    s = torch.randn(Q, K, W, generator=gen, dtype=torch.float64).to(dtype)
    values = torch.randn(2 * K, C, generator=gen, dtype=torch.float64).to(dtype)
    rows = torch.randint(0, 2 * K, (Q, K), generator=gen)
    grad = torch.randn(Q, W, C, generator=gen, dtype=torch.float64).to(dtype)
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads)  # the kernels' thread count
    nbr = values.double()[rows]  # (Q, K, C)
    want_p = torch.einsum("qkw,qkc->qwc", s.double(), nbr)
    want_gs = torch.einsum("qkc,qwc->qkw", nbr, grad.double())
    want_gv = torch.ones_like(values, dtype=torch.float64).index_add(
        0, rows.reshape(-1), torch.einsum("qkw,qwc->qkc", s.double(), grad.double()).reshape(-1, C))
    tol = 1e-12 if dtype == torch.float64 else 2e-5
    got_p = native.gather_contract(s, values, rows)
    gv = torch.ones_like(values)
    got_gs = native.gather_contract_backward(s, values, rows, grad, gv)
    for got, want in ((got_p, want_p), (got_gs, want_gs), (gv, want_gv)):
        assert got.dtype == dtype
        assert float((got.double() - want).abs().max()) <= tol * (1 + float(want.abs().max()))
    assert native.gather_contract_backward(s, values, rows, grad, None, need_s=False) is None


def test_gather_contract_rejects_mismatched_operands():
    s, values, rows = torch.zeros(2, 3, 4), torch.zeros(5, 6), torch.zeros(2, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="rows"):
        native.gather_contract(s, values, rows[:, :2])
    with pytest.raises(ValueError, match="out must be"):
        native.gather_contract(s, values, rows, out=torch.zeros(2, 4, 5))
    with pytest.raises(ValueError, match="grad_values"):
        native.gather_contract_backward(s, values, rows, torch.zeros(2, 4, 6), torch.zeros(5, 6).t())
