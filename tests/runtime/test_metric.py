"""The metric on the Lie algebra (spec `metric:`, `load_group(..., metric=...)`): one distance
d^2 = a^T M a + alpha |q_i - q_j|^2 wherever the code measures distance.

For SE2, SE3, SO2, T2, Sim2, RxSO2 and a re-based (non-orthogonal) SE2 from tests/specs' rebasing,
each with non-default metrics, in float32 and float64, with stabilizer samples near angle pi: ball
selection (the geometry's own strategy, with and without the native kernel, and the exact general
strategy), kNN and farthest point sampling pick exactly what brute force over `G.distance` picks,
and a LieResNet with the metric is invariant to 1e-9 in float64.
"""

from __future__ import annotations

import math
import re

import pytest
import torch

from groupgen.spec import SpecError, parse_spec
from lieconv_runtime import load_group
from lieconv_runtime.nn import LieResNet, PairGeometry, farthest_point_sample, select_neighbours
from lieconv_runtime.testing import equivariance_error
from tests.groupgen.groups import build_test_groups
from tests.runtime.test_native import _near_pi_stabilizer

#: (group, metric override, strategy PairGeometry picks for it)
CASES = {
    "SE2-rot": ("SE2", {"theta": 0.0028}, "orthogonal"),  # the original's alpha = 0.05 weighting
    "SE2-mixed": ("SE2", [[1.0, 0.3, 0.0], [0.3, 2.0, 0.1], [0.0, 0.1, 0.5]], "general"),
    "SE3-rot": ("SE3", {"rx": 0.0625, "ry": 0.0625, "rz": 0.0625}, "orthogonal"),
    "SE3-aniso": ("SE3", {"rx": 0.3, "tz": 2.0}, "general"),
    "SO2": ("SO2", {"theta": 3.0}, "orthogonal"),
    "T2": ("T2", [[2.0, 0.5], [0.5, 1.0]], "flat"),
    "Sim2": ("Sim2", {"s": 0.5, "theta": 0.2}, "general"),
    "RxSO2": ("RxSO2", [[0.7, 0.2], [0.2, 1.5]], "general"),
    "SE2_rebased1": ("SE2_rebased1", [[1.0, 0.2, 0.0], [0.2, 0.5, 0.0], [0.0, 0.0, 3.0]], "general"),
}


@pytest.fixture(scope="module")
def groups(tmp_path_factory):
    return build_test_groups(str(tmp_path_factory.mktemp("groups")))


def _group(case, groups, **kw):
    name, metric, _ = CASES[case]
    return load_group(name, search_path=groups.get(name), metric=metric, **kw)


def _cloud(G, dtype, seed=0, bs=2, n=14):
    gen = torch.Generator().manual_seed(seed)
    x = (1.5 * torch.randn(bs, n, G.space_dim, generator=gen, dtype=torch.float64)).to(dtype)
    mask = torch.ones(bs, n, dtype=torch.bool)
    mask[1, 10:] = False
    if G.name in ("SE2", "SE3"):
        h = _near_pi_stabilizer(G, bs, n, dtype, gen)  # many pairs of one point's elements near angle pi
    elif G.stabilizer_dim:
        h = G.sample_stabilizer((bs, n, 3), generator=gen, dtype=dtype)
    else:
        h = None
    return G.lift(x, torch.randn(bs, n, 2, generator=gen, dtype=torch.float64).to(dtype), mask, nsamples=3,
                  stabilizer=h, generator=gen)


def _brute(G, cloud) -> torch.Tensor:
    """All pair distances (bs, N, N) by the group's own log and metric (float64 reference: G.distance)."""
    bs, N = cloud.mask.shape
    i = torch.arange(N)[None, :, None].expand(bs, N, 1)
    j = torch.arange(N)[None, None, :].expand(bs, 1, N)
    return G.distance(cloud, i, j)


def _radius_in_a_gap(d: torch.Tensor, rel: float) -> float:
    """A radius near the median distance with no pair distance within ``rel`` (relative) of it."""
    v = d[torch.isfinite(d) & (d > 0)].double().sort().values
    mid = len(v) // 2
    for k in range(mid, len(v) - 1):
        if (v[k + 1] - v[k]) > 4 * rel * v[k + 1]:
            return float((v[k] + v[k + 1]) / 2)
    raise AssertionError("no gap")


@pytest.mark.parametrize("case", CASES)
def test_every_path_selects_what_the_distance_ranks(case, dtype, groups, monkeypatch):
    G = _group(case, groups)
    cloud = _cloud(G, dtype)
    geometry = PairGeometry(G, cloud)
    assert geometry.kind == CASES[case][2]
    ref = _brute(G, _cloud(G, torch.float64))  # the truth, in float64
    bs, N = cloud.mask.shape
    qidx = torch.arange(N).expand(bs, N)
    tol = 1e-9 if dtype == torch.float64 else 1e-4
    r = _radius_in_a_gap(ref, tol)
    want = (ref < r) & cloud.mask[:, :, None] & cloud.mask[:, None, :]
    runs = {}
    for label, native, kind in [("native", True, None), ("torch", False, None), ("general", False, "general")]:
        monkeypatch.setattr("lieconv_runtime.nn.sampling.USE_NATIVE", native)
        geo = PairGeometry(G, cloud)
        if kind:
            geo.kind = kind
        nb = select_neighbours(geo, qidx, cloud.mask, N, r, generator=torch.Generator().manual_seed(1))
        got = torch.zeros(bs, N, N, dtype=torch.long).scatter_add_(2, nb.idx, nb.valid.long()) > 0
        runs[label] = got
        assert torch.equal(got, want), f"{label}: {int((got ^ want).sum())} pairs differ from G.distance"
    # kNN ranks by the same distance
    k = 5
    nb = select_neighbours(PairGeometry(G, cloud), qidx, cloud.mask, k, math.inf, knn=True)
    rows = geometry.rows(qidx)
    assert torch.allclose(rows[torch.isfinite(rows)].double(), ref[torch.isfinite(ref)], rtol=1e-4 if dtype ==
                          torch.float32 else 1e-9, atol=1e-5 if dtype == torch.float32 else 1e-10)
    kth = ref.sort(-1).values[..., k - 1:k]
    chosen = ref.gather(2, nb.idx)
    assert bool(((chosen <= kth * (1 + 10 * tol)) | ~nb.valid).all())


@pytest.mark.parametrize("case", CASES)
def test_farthest_point_sampling_follows_the_metric(case, groups):
    """FPS through the geometry picks the points a brute-force FPS over G.distance picks."""
    G = _group(case, groups)
    cloud = _cloud(G, torch.float64, seed=3)
    idx, mask = farthest_point_sample(PairGeometry(G, cloud), 0.4, torch.Generator().manual_seed(0))
    d = _brute(G, cloud)
    bs, M = idx.shape
    for b in range(bs):
        chosen = [int(idx[b, 0])]
        score = d[b, chosen[0]].clone()
        score[~cloud.mask[b]] = -1
        score[chosen[0]] = -2
        for _ in range(int(mask[b].sum()) - 1):
            c = int(score.argmax())
            chosen.append(c)
            score = torch.minimum(score, d[b, c])
            score[~cloud.mask[b]] = -1
            score[chosen] = -2
        assert idx[b, :len(chosen)].tolist() == chosen


@pytest.mark.parametrize("case", ["SE2-rot", "SE2-mixed", "SE3-aniso", "SO2", "T2", "Sim2"])
def test_a_network_with_the_metric_is_invariant(case, groups):
    torch.manual_seed(0)
    G = _group(case, groups, lift_samples=2)
    net = LieResNet(2, G, k=12, num_layers=2, nbhd=6, fill=0.5).double().eval()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 12, G.space_dim, generator=gen, dtype=torch.float64)
    v = torch.randn(2, 12, 2, generator=gen, dtype=torch.float64)
    mask = torch.ones(2, 12, dtype=torch.bool)
    mask[1, 9:] = False
    err = equivariance_error(net, G, (x, v, mask)).error
    assert err < 1e-9, err


def test_the_metric_changes_the_neighbourhoods():
    """The same cloud and radius give other balls under the original's SE(2) weighting: the check
    above can fail."""
    a, b = load_group("SE2"), load_group("SE2", metric={"theta": 0.0028})
    cloud = _cloud(a, torch.float64)
    assert not torch.equal(_brute(a, cloud) < 1.5, _brute(b, cloud) < 1.5)


# --------------------------------------------------------------------------- spec, load, repr
SE2 = """name: SE2m
action: affine
generators:
  theta: [[0,-1,0],[1,0,0],[0,0,0]]
  tx: [[0,0,1],[0,0,0],[0,0,0]]
  ty: [[0,0,0],[0,0,1],[0,0,0]]
"""


def test_spec_metric_forms_and_default(tmp_path):
    from groupgen.emit import metric_matrix

    assert parse_spec(SE2).metric is None
    assert metric_matrix(parse_spec(SE2)).tolist() == [[2, 0, 0], [0, 1, 0], [0, 0, 1]]  # Frobenius
    spec = parse_spec(SE2 + "metric: {theta: 0.0028}\n")
    assert [float(v) for v in spec.metric.diagonal()] == [0.0028, 1.0, 1.0]
    spec = parse_spec(SE2 + "metric: [[1, 0.5, 0], [0.5, 1, 0], [0, 0, \"1/2\"]]\n")
    assert float(spec.metric[2, 2]) == 0.5 and float(spec.metric[0, 1]) == 0.5


@pytest.mark.parametrize("text,needle", [
    ("metric: {rz: 1}", "unknown generator 'rz'"),
    ("metric: {theta: 0}", "weight 0 is not positive"),
    ("metric: {theta: -1}", "not positive"),
    ("metric: [[1, 0], [0, 1]]", "2 x 2, but there are 3 generators"),
    ("metric: [[1, 0.5, 0], [0, 1, 0], [0, 0, 1]]", "not symmetric"),
    ("metric: [[1, 2, 0], [2, 1, 0], [0, 0, 1]]", "not positive definite"),
    ("metric: 3", "metric is a int"),
])
def test_spec_metric_errors_are_one_line(text, needle, tmp_path):
    with pytest.raises(SpecError) as err:
        parse_spec(SE2 + text + "\n", "my.yaml")
    msg = str(err.value)
    assert needle in msg and "\n" not in msg and msg.startswith("my.yaml: metric")
    from groupgen.cli import main

    path = tmp_path / "bad.yaml"
    path.write_text(SE2 + text + "\n")
    assert main(["generate", "--out", str(tmp_path / "o"), str(path)]) == 2
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("metric,needle", [({"rz": 1.0}, "unknown generator"), ({"theta": -1.0}, "not a positive"),
                                           ([[1.0, 0.0], [0.0, 1.0]], "shape (2, 2)"),
                                           ([[1, 2, 0], [0, 1, 0], [0, 0, 1]], "not symmetric"),
                                           ([[1, 2, 0], [2, 1, 0], [0, 0, 1]], "not positive definite")])
def test_load_group_metric_errors(metric, needle):
    with pytest.raises(ValueError, match=re.escape(needle)):
        load_group("SE2", metric=metric)


def test_repr_shows_the_metric_and_an_unused_alpha(tmp_path):
    assert "metric=frobenius" in repr(load_group("SO3")) and "unused" not in repr(load_group("SO3"))
    text = repr(load_group("SE2", metric={"theta": 0.0028}))
    assert "metric=diag(theta=0.0028, tx=1, ty=1) [override]" in text and "(unused: one orbit)" in text
    (tmp_path / "SE2m.yaml").write_text(SE2 + "metric: {theta: 0.5}\n")
    from groupgen.cli import main

    assert main(["generate", "--quiet", "--out", str(tmp_path / "g"), str(tmp_path / "SE2m.yaml")]) == 0
    G = load_group("SE2m", search_path=tmp_path / "g")
    assert "diag(theta=0.5, tx=1, ty=1) [spec]" in repr(G)
    assert torch.equal(G.metric(torch.empty(0, dtype=torch.float64)), torch.diag(torch.tensor([0.5, 1.0, 1.0],
                                                                                              dtype=torch.float64)))
