"""No general (non-symmetric) eigensolver on any path of a closed-form group.

torch's LAPACK (MKL) fails to converge on ordinary matrices on some CPUs (AMD EPYC: e.g. batches of
3 x 3 skew-symmetric matrices such as hat(1.0672, -0.5698, -1.1938)), so the derived groups'
operations, `groupgen check`, lifting, Haar sampling, frames and the layers must never reach
torch.linalg.eig/eigvals (or numpy's).  The `no_eigensolver` fixture makes every such call raise, so
these tests fail wherever an eigensolver would be reached, on any CPU.  Numeric-fallback groups may
use one, but must survive its failure.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from groupgen.check import check_spec, principal_samples
from lieconv_runtime import load_group
from lieconv_runtime.lift import dexp_det
from tests.groupgen.groups import EXTRA_SPECS, REBASED_FROM, SHIPPED, build_test_groups

ROOT = Path(__file__).resolve().parents[2]
NAMES = SHIPPED + [Path(p).stem for p in EXTRA_SPECS] + [f"{b}_rebased1" for b in REBASED_FROM]
MKL_BREAKER = (1.0672, -0.5698, -1.1938)  # an SO3 element whose hat MKL's eigvals failed on (alone and batched)


class EigensolverReached(AssertionError):
    pass


def _refuse(*args, **kwargs):
    raise EigensolverReached("a general eigensolver was reached")


@pytest.fixture
def no_eigensolver(monkeypatch):
    for mod, names in ((torch.linalg, ("eig", "eigvals")), (np.linalg, ("eig", "eigvals"))):
        for name in names:
            monkeypatch.setattr(mod, name, _refuse)


@pytest.fixture(scope="module")
def groups(tmp_path_factory):
    return build_test_groups(str(tmp_path_factory.mktemp("groups")))


def _inputs(G, seed: int) -> torch.Tensor:
    """Principal samples at several scales, plus the MKL-breaking SO3 rotation placed on the first
    three coordinates (any group), and the batch that broke `groupgen.check` on SE3."""
    gen = torch.Generator().manual_seed(seed)
    parts = [principal_samples(G, 64, gen, scale=s) for s in (1e-9, 1e-4, 1.0, 3.0)]
    if G.lie_dim >= 3:
        a = torch.zeros(4, G.lie_dim, dtype=torch.float64)
        a[:, :3] = torch.tensor(MKL_BREAKER, dtype=torch.float64) * torch.tensor([[1.0], [0.5], [1e-3], [1e-9]])
        parts.append(a)
    parts.append(principal_samples(G, 64, torch.Generator().manual_seed(39916801), scale=1e-9))
    return torch.cat(parts)


@pytest.mark.parametrize("name", NAMES)
def test_group_operations_reach_no_eigensolver(name, dtype, groups):
    G = load_group(name, search_path=groups[name])
    if not G.closed_form:
        pytest.skip("numeric fallback: may use an eigensolver (see the fallback test below)")
    a = torch.cat([_inputs(G, seed) for seed in range(3)])
    m = G.space_dim if G.action == "affine" else G.rep_dim
    lam = np.linalg.eigvals(G.hat(a)[..., :m, :m].numpy()).astype(complex)  # reference, before the patch
    ref_rot, ref_grow = np.abs(lam.imag).max(-1), np.abs(lam.real).max(-1)
    mp = pytest.MonkeyPatch()
    try:
        for mod in (torch.linalg, np.linalg):
            mp.setattr(mod, "eig", _refuse)
            mp.setattr(mod, "eigvals", _refuse)
        x = a.to(dtype)
        g = G.exp(x)
        G.log(g), G.inv(g)
        rot, grow = G.spectrum(a)
        G.extent(x)
    finally:
        mp.undo()
    # closed-form spectrum vs numpy's eigenvalues (which are only ~eps^(1/3) accurate on defective,
    # e.g. nilpotent, linear parts: hence 1e-4)
    assert np.abs(rot.numpy() - ref_rot).max() <= 1e-4 * (1 + ref_rot.max())
    assert np.abs(grow.numpy() - ref_grow).max() <= 1e-4 * (1 + ref_grow.max())


@pytest.mark.parametrize("spec", sorted((ROOT / "group_specs").glob("*.yaml")) + sorted(
    p for p in (ROOT / "tests" / "specs").glob("*.yaml") if "numeric" not in p.stem), ids=lambda p: p.stem)
def test_groupgen_check_reaches_no_eigensolver(spec, no_eigensolver):
    report = check_spec(spec, samples=16)
    assert report.passed, report.text()


def _can_lift(G) -> bool:
    return G.can_lift and G.LIFT["stabilizer"]["reason"] is None


@pytest.mark.parametrize("name", [n for n in NAMES if not n.startswith(("SO4",))])
def test_lifting_and_haar_sampling_reach_no_eigensolver(name, groups, no_eigensolver):
    G = load_group(name, search_path=groups[name])
    if not G.closed_form:
        pytest.skip("numeric fallback")
    gen = torch.Generator().manual_seed(0)
    if G.compact:
        h = G.sample_haar((64,), generator=gen, dtype=torch.float64)
        assert torch.isfinite(h).all()
    if not _can_lift(G):
        return
    x = torch.randn(2, 12, G.space_dim, generator=gen, dtype=torch.float64)
    mask = torch.ones(2, 12, dtype=torch.bool)
    mask[1, 9:] = False
    lifted = G.lift(x, torch.randn(2, 12, 3, generator=gen, dtype=torch.float64), mask, nsamples=3, generator=gen)
    i, j = torch.arange(lifted.g.shape[1])[None, :, None], torch.arange(lifted.g.shape[1])[None, None, :]
    d = G.distance(lifted, i.expand(2, -1, -1), j.expand(2, -1, -1))
    assert torch.isfinite(d[0]).all()
    if G.frame_support() is None:
        h = G.stabilizer_frame(x, mask, 2)
        assert torch.isfinite(h[mask]).all()


@pytest.mark.parametrize("name", ["SE3", "SO3", "SE2", "Sim2"])
def test_lieconv_network_reaches_no_eigensolver(name, no_eigensolver):
    from lieconv_runtime.nn import LieResNet

    torch.manual_seed(0)
    G = load_group(name, lift_samples=2)
    net = LieResNet(2, G, k=8, num_layers=1, nbhd=6, fill=0.5).double()
    x = torch.randn(2, 10, G.space_dim, dtype=torch.float64)
    out = net(x, torch.randn(2, 10, 2, dtype=torch.float64), torch.ones(2, 10, dtype=torch.bool))
    out.sum().backward()
    assert torch.isfinite(out).all()


def test_frame_test_is_exact_without_an_eigensolver(no_eigensolver):
    """The frame test (spectrum {0, +-i w}) is algebraic: SE2 and SO3 pass, Sim2's two-dimensional
    stabilizer is refused with one line."""
    assert load_group("SE2").frame_support() is None
    assert load_group("SO3").frame_support() is None
    msg = load_group("Sim2").frame_support()
    assert msg is not None and "\n" not in msg


def test_dexp_det_matches_the_eigenvalue_formula(dtype):
    gen = torch.Generator().manual_seed(1)
    M = torch.randn(200, 4, 4, generator=gen, dtype=torch.float64) * torch.tensor([0.0, 1e-6, 0.5, 3.0]).repeat(50)[:, None, None]
    lam = np.linalg.eigvals(M.numpy())
    small = np.abs(lam) < 1e-8
    f = np.where(small, 1 - lam / 2, (1 - np.exp(-lam)) / np.where(small, 1, lam))
    ref = np.prod(f, axis=-1).real
    got = dexp_det(M.to(dtype)).double().numpy()
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    assert np.abs(got - ref).max() <= tol * (1 + np.abs(ref).max())


def test_numeric_fallback_survives_a_failing_eigensolver(groups, monkeypatch):
    G = load_group("SO4numeric", search_path=groups["SO4numeric"])
    a = torch.cat([_inputs(G, seed) for seed in range(2)])
    g = G.exp(a)
    ref_log, ref_spec = G.log(g), G.spectrum(a)

    def fail(*args, **kwargs):
        raise torch.linalg.LinAlgError("failed to converge (error code: 3)")

    monkeypatch.setattr(torch.linalg, "eig", fail)
    monkeypatch.setattr(torch.linalg, "eigvals", fail)
    back = G.log(g)
    assert torch.allclose(G.exp(back), g, atol=1e-9)
    assert torch.allclose(back, ref_log, atol=1e-7)
    rot, grow = G.spectrum(a)
    assert torch.allclose(rot, ref_spec[0], atol=1e-9) and torch.allclose(grow, ref_spec[1], atol=1e-9)
    assert math.isfinite(float(G.log(G.exp(torch.zeros(1, G.lie_dim, dtype=torch.float64))).abs().max()))
