"""Spring-dynamics data: exact ground truth, seeding, cache integrity, chunks and splits."""

import json
import logging
import os

import numpy as np
import pytest
import torch

from lieconv_runtime.data import springs
from lieconv_runtime.data.springs import (
    angular_momentum,
    cache_path,
    energy,
    generate_springs,
    linear_momentum,
    load_spring_splits,
    load_springs,
    make_chunks,
    sample_systems,
    simulate,
    spring_config,
    system_matrix,
)


@pytest.fixture(scope="module", params=[2, 3], ids=["2d", "3d"])
def paper_traj(request):
    """Paper-sized systems (6 particles, ts = linspace(0, 5, 500)), 48 of them."""
    return generate_springs(48, n_particles=6, dim=request.param, n_times=500, t_end=5.0, seed=3, progress=False)


def _rel_drift(x):
    """max_t |x_t - x_0| / max(1, |x_0|) per system, then over systems; x (bs, T[, D])."""
    x0 = x[:, :1]
    err = (x - x0).abs()
    scale = x0.abs().clamp_min(1.0)
    return float((err / scale).max())


def test_energy_conserved(paper_traj):
    h = energy(paper_traj.zs, paper_traj.m, paper_traj.k)  # (bs, T)
    assert h.shape == paper_traj.zs.shape[:2]
    drift = ((h - h[:, :1]).abs() / h[:, :1].abs()).max()
    assert drift <= 1e-8, drift


def test_total_momentum_zero_and_angular_momentum_conserved(paper_traj):
    n, d = paper_traj.n_particles, paper_traj.dim
    p_tot = linear_momentum(paper_traj.zs, n, d)  # (bs, T, D)
    assert p_tot.shape == (*paper_traj.zs.shape[:2], d)
    # per-system mean momentum subtracted at t = 0 -> zero total momentum throughout
    assert p_tot.abs().max() <= 1e-10
    ang = angular_momentum(paper_traj.zs, n, d)
    assert ang.shape == (paper_traj.zs.shape[:2] if d == 2 else (*paper_traj.zs.shape[:2], 3))
    assert _rel_drift(ang) <= 1e-10
    assert ang.abs().max() > 1e-3  # the check is not vacuous


@pytest.mark.parametrize("dim", [2, 3])
def test_nonzero_momentum_conserved(dim):
    rng = np.random.default_rng(11)
    z0, m, k = sample_systems(16, 5, dim, rng, zero_momentum=False)
    ts = torch.linspace(0, 5, 300, dtype=torch.float64)
    zs = simulate(z0, m, k, ts)
    p_tot = linear_momentum(zs, 5, dim)
    assert p_tot[:, 0].abs().max() > 0.1  # genuinely non-zero
    assert _rel_drift(p_tot) <= 1e-10
    assert _rel_drift(angular_momentum(zs, 5, dim)) <= 1e-10
    h = energy(zs, m, k)
    assert ((h - h[:, :1]).abs() / h[:, :1]).max() <= 1e-8


def test_simulate_equals_full_matrix_exponential():
    rng = np.random.default_rng(0)
    z0, m, k = sample_systems(3, 4, 3, rng)
    big_m = system_matrix(m, k, 3)  # (3, 24, 24)
    # dz/dt = M z is the true Hamiltonian vector field (J grad H of the spring energy)
    z = z0.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(energy(z, m, k).sum(), z)
    half = z.shape[-1] // 2
    assert torch.allclose(big_m @ z0[..., None], torch.cat([g[:, half:], -g[:, :half]], -1)[..., None], atol=1e-12)
    for ts in (torch.linspace(0, 2, 40, dtype=torch.float64),  # uniform: factorised path
               torch.tensor([0.0, 0.3, 0.31, 1.7, 2.0], dtype=torch.float64)):  # non-uniform: direct
        ref = (torch.linalg.matrix_exp(big_m[:, None] * ts[None, :, None, None]) @ z0[:, None, :, None])[..., 0]
        assert torch.allclose(simulate(z0, m, k, ts), ref, rtol=0, atol=1e-10)


def test_initial_conditions_per_system_zero_momentum():
    z0, m, k = sample_systems(50, 6, 2, np.random.default_rng(0))
    assert linear_momentum(z0, 6, 2).abs().max() < 1e-12
    assert float(m.min()) >= 0.1 and float(m.max()) <= 3.1
    assert float(k.min()) >= 0.0 and float(k.max()) <= 5.0


def test_helpers_float32_and_broadcasting():
    tr = generate_springs(4, 3, 2, 20, 1.0, seed=0, progress=False)
    z32, m32, k32 = tr.zs.float(), tr.m.float(), tr.k.float()
    h32 = energy(z32, m32, k32)
    assert h32.dtype == torch.float32 and h32.shape == (4, 20)
    assert torch.allclose(h32.double(), energy(tr.zs, tr.m, tr.k), rtol=1e-5)
    # a single state with its own params
    assert torch.allclose(energy(tr.zs[0, 5], tr.m[0], tr.k[0]), energy(tr.zs, tr.m, tr.k)[0, 5])
    assert linear_momentum(z32, 3, 2).dtype == torch.float32


def test_seeded_generation_is_bitwise_reproducible():
    a = generate_springs(6, 4, 2, 30, 2.0, seed=5, progress=False)
    b = generate_springs(6, 4, 2, 30, 2.0, seed=5, progress=False)
    c = generate_springs(6, 4, 2, 30, 2.0, seed=6, progress=False)
    big = generate_springs(9, 4, 2, 30, 2.0, seed=5, progress=False)
    for x, y in ((a.zs, b.zs), (a.m, b.m), (a.k, b.k), (a.ts, b.ts)):
        assert torch.equal(x, y)
    assert not torch.equal(a.zs, c.zs)
    assert torch.equal(big.zs[:6], a.zs)  # smaller data sets are prefixes


@pytest.fixture
def counted_generation(monkeypatch):
    calls = []
    real = springs.generate_springs

    def counting(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(springs, "generate_springs", counting)
    return calls


def test_cache_reuse_and_atomic_files(tmp_path, counted_generation):
    kw = dict(n_systems=10, n_particles=3, dim=2, n_times=25, t_end=1.0, seed=1, data_dir=tmp_path)
    first = load_springs(**kw)
    pt = cache_path(spring_config(10, 3, 2, 25, 1.0, 1), tmp_path)
    assert pt.exists() and pt.with_suffix(".json").exists()
    meta = json.loads(pt.with_suffix(".json").read_text())
    assert len(meta["sha256"]) == 64 and meta["config"]["n_systems"] == 10
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
    mtime = pt.stat().st_mtime_ns
    second = load_springs(**kw)
    assert len(counted_generation) == 1  # second call read the cache
    assert pt.stat().st_mtime_ns == mtime
    assert torch.equal(first.zs, second.zs) and torch.equal(first.m, second.m)


def test_corrupted_cache_is_regenerated(tmp_path, counted_generation, caplog):
    kw = dict(n_systems=8, n_particles=3, dim=2, n_times=25, t_end=1.0, seed=2, data_dir=tmp_path)
    ref = load_springs(**kw)
    pt = cache_path(spring_config(8, 3, 2, 25, 1.0, 2), tmp_path)
    with open(pt, "r+b") as f:
        f.truncate(pt.stat().st_size // 2)
    with caplog.at_level(logging.WARNING, logger="lieconv_runtime.data.springs"):
        again = load_springs(**kw)
    assert len(counted_generation) == 2
    assert "checksum" in caplog.text
    assert torch.equal(again.zs, ref.zs)
    # the regenerated cache is valid again
    load_springs(**kw)
    assert len(counted_generation) == 2
    # a tampered config in the sidecar is detected too
    meta_path = pt.with_suffix(".json")
    meta = json.loads(meta_path.read_text())
    meta["config"]["seed"] = 99
    meta_path.write_text(json.dumps(meta))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lieconv_runtime.data.springs"):
        load_springs(**kw)
    assert len(counted_generation) == 3 and "config" in caplog.text


def test_mismatched_params_use_another_file(tmp_path):
    base = spring_config(10, 3, 2, 25, 1.0, 1)
    paths = {cache_path(base, tmp_path)}
    for change in (dict(n_systems=11), dict(n_particles=4), dict(dim=3), dict(n_times=26),
                   dict(t_end=2.0), dict(seed=2)):
        args = {**dict(n_systems=10, n_particles=3, dim=2, n_times=25, t_end=1.0, seed=1), **change}
        paths.add(cache_path(spring_config(**args), tmp_path))
    assert len(paths) == 7


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert springs.default_cache_dir() == tmp_path / "lieconv" / "springs"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert str(springs.default_cache_dir()).endswith(os.path.join(".cache", "lieconv", "springs"))


def test_chunks_and_splits(tmp_path):
    kw = dict(n_systems=40, n_particles=4, dim=2, n_times=50, t_end=2.0, seed=0, data_dir=tmp_path)
    sp = load_spring_splits(20, 5, 10, **kw)
    nd2 = 2 * 4 * 2
    assert sp.train.z0.shape == (20, nd2) and sp.train.zs.shape == (20, 5, nd2)
    assert sp.val.z0.shape == (5, nd2) and sp.test.zs.shape == (10, 5, nd2)
    assert sp.train.m.shape == (20, 4) and sp.train.k.shape == (20, 4)
    assert sp.train.z0.dtype == torch.float32
    assert sp.test_long.zs.shape == (10, 50, nd2) and sp.test_long.zs.dtype == torch.float64
    assert sp.train.ts.shape == (5,) and float(sp.train.ts[0]) == 0.0
    assert torch.equal(sp.train.zs[:, 0], sp.train.z0)
    # every chunk is 5 consecutive steps of its system's trajectory
    full = load_springs(**kw)
    for i in range(20):
        starts = [s for s in range(46) if torch.equal(full.zs[i, s:s + 5].float(), sp.train.zs[i])]
        assert len(starts) == 1
    assert torch.equal(sp.test_long.zs, full.zs[30:])  # test = last systems
    assert torch.equal(sp.val.m, full.m[25:30].float())
    # val/test do not depend on n_train; smaller training sets are prefixes
    small = load_spring_splits(7, 5, 10, **kw)
    assert torch.equal(small.val.zs, sp.val.zs) and torch.equal(small.test.zs, sp.test.zs)
    assert torch.equal(small.train.zs, sp.train.zs[:7])
    # batching
    sizes = [len(b) for b in sp.train.batches(8, shuffle=True, generator=torch.Generator().manual_seed(0))]
    assert sizes == [8, 8, 4]


def test_n_train_too_large(tmp_path):
    with pytest.raises(ValueError) as err:
        load_spring_splits(26, 5, 10, n_systems=40, n_particles=3, n_times=20, data_dir=tmp_path)
    msg = str(err.value)
    assert "n_train=26" in msg and "\n" not in msg
    assert not os.listdir(tmp_path)  # rejected before generating anything


def test_make_chunks_dtype_and_seed():
    tr = generate_springs(12, 3, 2, 30, 1.0, seed=0, progress=False)
    a = make_chunks(tr, chunk_len=4, seed=0, dtype=torch.float64)
    b = make_chunks(tr, chunk_len=4, seed=0, dtype=torch.float64)
    c = make_chunks(tr, chunk_len=4, seed=1, dtype=torch.float64)
    assert a.zs.shape == (12, 4, 12) and a.zs.dtype == torch.float64
    assert torch.equal(a.zs, b.zs) and not torch.equal(a.zs, c.zs)
    assert torch.allclose(a.ts, tr.ts[:4])


def test_generation_needs_room_on_disk(tmp_path, monkeypatch, counted_generation):
    """A data set that does not fit is refused before any work, naming the folder and the sizes."""
    import collections

    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(springs.shutil, "disk_usage", lambda path: usage(10**6, 10**6 - 1000, 1000))
    with pytest.raises(OSError) as e:
        load_springs(n_systems=10, n_particles=3, dim=2, n_times=25, t_end=1.0, seed=1, data_dir=tmp_path)
    assert e.value.filename == str(tmp_path) and "needs about 25 kB but only 1 kB" in e.value.strerror
    assert counted_generation == [] and os.listdir(tmp_path) == []
    assert springs.cache_size_bytes(spring_config(10000)) // 10**6 == 960
