"""Equivariance of LieResNets (issue 4, paper §4.3-4.4) through the public
`lieconv_runtime.testing.equivariance_error`.

Deterministic mode: the same random draws for x and g.x (lifting samples transformed along),
so the pooled output must agree to rounding.  Distribution mode: the Monte Carlo estimator's
output distribution under g.x matches that under x (KS tests, fixed seeds).  Both must be able
to fail: the Trivial group is not rotation invariant.
"""

from __future__ import annotations

import pytest
import torch

from lieconv_runtime import load_group
from lieconv_runtime.nn import LieResNet
from lieconv_runtime.nn.lieconv import set_stream
from lieconv_runtime.testing import equivariance_error, random_group_elements, transform_inputs


@pytest.fixture(autouse=True)
def _seed():
    """Every test starts from the same global RNG state (network initialisation)."""
    torch.manual_seed(0)


GROUPS = ["T2", "SO2", "RxSO2", "SE2", "Sim2", "T3", "SO3", "SE3"]
TOL = {torch.float64: 1e-9, torch.float32: 1e-4}


def inputs(G, dtype, bs=2, n=12, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(bs, n, G.space_dim, generator=gen, dtype=torch.float64).to(dtype)
    v = torch.randn(bs, n, 3, generator=gen, dtype=torch.float64).to(dtype)
    mask = torch.ones(bs, n, dtype=torch.bool)
    mask[-1, n - 3:] = False  # padding (with garbage coordinates)
    x[-1, n - 3:] = float("nan")
    return x, v, mask


def tiny_net(G, dtype, ds_frac, **kw):
    kw = {"num_outputs": 2, "k": 16, "num_layers": 2, "nbhd": 5, "fill": 0.4, **kw}
    return LieResNet(3, G, ds_frac=[1.0, ds_frac], **kw).to(dtype)


@pytest.mark.parametrize("ds_frac", [1.0, 0.6], ids=["full", "subsampled"])
@pytest.mark.parametrize("name", GROUPS)
def test_pooled_output_is_invariant(name, dtype, ds_frac):
    G = load_group(name)
    net = tiny_net(G, dtype, ds_frac).train()
    report = equivariance_error(net, G, inputs(G, dtype), seed=1)
    assert report.error <= TOL[dtype], f"{name}: relative error {report.error:.2e}"


@pytest.mark.parametrize("name", ["T2", "SE2", "SE3"])
def test_pooled_output_is_invariant_on_the_lean_path(name, dtype, monkeypatch):
    """The memory-lean kernel MLP and chunked contraction (used for large pair counts), forced on
    for a tiny network with chunks that do not divide the pairs."""
    monkeypatch.setattr("lieconv_runtime.nn.lieconv.LEAN_MIN_ROWS", 0)
    monkeypatch.setattr("lieconv_runtime.nn.lean._MLP_ROWS", 13)
    monkeypatch.setattr("lieconv_runtime.nn.lean._CHUNK_ROWS", 17)
    G = load_group(name)
    net = tiny_net(G, dtype, 0.6).train()
    report = equivariance_error(net, G, inputs(G, dtype), seed=1)
    assert report.error <= TOL[dtype], f"{name}: relative error {report.error:.2e}"


@pytest.mark.parametrize("name", ["SE2", "SO3"])
def test_per_element_outputs_are_equivariant(name):
    """Without pooling the output is a Lifted cloud: every element's values are invariant (the same
    elements are chosen), its points move with g and its group elements are g u."""
    G = load_group(name)
    net = tiny_net(G, torch.float64, 0.6, pool=False).eval()
    assert equivariance_error(net, G, inputs(G, torch.float64)).error <= 1e-9


class _PointMap(torch.nn.Module):
    """A network returning points (bs, n, d): pull every point halfway to the centroid of the valid
    points (equivariant for every affine action), or shift them by a constant (not equivariant)."""

    def __init__(self, equivariant: bool):
        super().__init__()
        self.equivariant = equivariant

    def forward(self, coords, values, mask, stabilizer=None):
        x = torch.where(mask[..., None], coords, torch.zeros_like(coords))
        if not self.equivariant:
            return x + 1.0
        c = x.sum(1, keepdim=True) / mask.sum(1)[:, None, None]
        return torch.where(mask[..., None], x + 0.5 * (c - x), torch.zeros_like(x))


@pytest.mark.parametrize("name", ["SE2", "SE3", "Sim2"])
def test_a_returned_cloud_must_move_with_g(name):
    G = load_group(name)
    x, v, mask = inputs(G, torch.float64)
    assert equivariance_error(_PointMap(True), G, (x, v, mask), output="points").error <= 1e-12
    assert equivariance_error(_PointMap(False), G, (x, v, mask), output="points").error > 1e-2
    # compared as invariant outputs, the equivariant map fails: the check needs to know what it checks
    assert equivariance_error(_PointMap(True), G, (x, v, mask)).error > 1e-2


@pytest.mark.parametrize("ds_frac", [1.0, 0.6], ids=["full", "subsampled"])
def test_trivial_group_is_not_invariant(ds_frac):
    """The check can fail: rotating the input of a Trivial2 network changes its output."""
    G = load_group("Trivial2")
    rot = random_group_elements(load_group("SO2"), 2, generator=torch.Generator().manual_seed(0))
    net = tiny_net(G, torch.float64, ds_frac)
    assert equivariance_error(net, G, inputs(G, torch.float64), g=rot).error > 1e-3


def test_transformed_lift_is_the_transformed_cloud():
    """transform_inputs carries the lifting samples along: lift(g.x, h') = g lift(x, h)."""
    G = load_group("SE3", lift_samples=3)
    x, v, mask = inputs(G, torch.float64)
    gen = torch.Generator().manual_seed(0)
    h = G.sample_stabilizer((2, 12, 3), generator=gen, dtype=torch.float64)
    g = random_group_elements(G, 2, generator=gen)
    x2, h2 = transform_inputs(G, g, x, mask, h)
    L1, L2 = G.lift(x, v, mask, stabilizer=h), G.lift(x2, v, mask, stabilizer=h2)
    valid = L1.mask
    assert float((L2.g - g[:, None] @ L1.g)[valid].abs().max()) < 1e-12


def _mc_net(G, lift_mode="haar"):
    # few neighbours out of many in the ball, lifting samples, subsampling: the estimator is random
    return LieResNet(3, G, num_outputs=1, k=8, num_layers=1, nbhd=3, ds_frac=1.0, fill=0.7, bn=False,
                     lift_samples=2, lift_mode=lift_mode).double().eval()


@pytest.mark.parametrize("lift_mode", ["haar", "stratified"])
def test_monte_carlo_estimator_is_equivariant_in_distribution(lift_mode):
    G = load_group("SE2")
    x, v, mask = inputs(G, torch.float64, bs=1, n=9, seed=3)
    mask[:] = True
    x = torch.randn(x.shape, generator=torch.Generator().manual_seed(4), dtype=x.dtype)
    net = _mc_net(G, lift_mode)
    draws = []
    for stream in (1, 2):  # the estimator is random: different streams, different outputs
        set_stream(net, stream)
        draws.append(net(x, v, mask))
    set_stream(net, 0)
    assert float((draws[0] - draws[1]).abs().max()) > 1e-7  # far above rounding (1e-16)
    report = equivariance_error(net, G, (x, v, mask), mode="distribution", trials=150, seed=2)
    assert report.pvalue > 1e-3, f"KS statistic {report.error:.3f}, p = {report.pvalue:.2e}"


def test_distribution_test_can_fail():
    """Same test, Trivial2 under rotations: the output distribution moves."""
    G = load_group("Trivial2")
    x, v, mask = inputs(G, torch.float64, bs=1, n=9, seed=3)
    mask[:] = True
    x = 3 * torch.randn(x.shape, generator=torch.Generator().manual_seed(4), dtype=x.dtype)
    rot = random_group_elements(load_group("SO2"), 1, generator=torch.Generator().manual_seed(0))
    net = LieResNet(3, G, num_outputs=1, k=8, num_layers=1, nbhd=3, fill=0.7, bn=False).double().eval()
    report = equivariance_error(net, G, (x, v, mask), g=rot, mode="distribution", trials=150, seed=2)
    assert report.pvalue < 1e-3, f"KS statistic {report.error:.3f}, p = {report.pvalue:.2e}"


@pytest.mark.parametrize("name", ["SE2", "SO3", "SE3"])
def test_frame_lifted_network_is_invariant_without_carrying_samples(name, dtype):
    """lift_mode="frame": the network chooses its own stabilizer elements, so f(g.x) = f(x) with
    nothing carried along (plain calls, padding with NaN coordinates included)."""
    G = load_group(name)
    net = tiny_net(G, dtype, 0.6, lift_mode="frame", lift_samples=2).eval()
    x, v, mask = inputs(G, dtype)
    g = random_group_elements(G, x.shape[0], generator=torch.Generator().manual_seed(3), dtype=dtype)
    gx, _ = transform_inputs(G, g, x, mask)
    out, out_g = net(x, v, mask), net(gx, v, mask)
    err = float((out_g - out).abs().max() / out.abs().max())
    assert err <= TOL[dtype], f"{name}: relative error {err:.2e}"
