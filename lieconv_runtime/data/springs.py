"""Spring-dynamics data set of the LieConv paper (§6), with exact ground truth.

System
------
``N`` particles (default 6) in ``D`` dimensions (2 or 3) with masses
``m_i ~ U(0.1, 3.1)`` and per-particle spring constants ``k_i ~ U(0, 5)``; the pair
constant is ``k_i k_j``. The Hamiltonian is

    H(q, p) = sum_i |p_i|^2 / (2 m_i) + 1/2 sum_{i,j} k_i k_j |q_i - q_j|^2 .

A state is the flat vector ``z = [q, p]`` of length ``2ND``: all positions first,
then all momenta, each particle-major (``q[i*D + d]``).

Initial conditions: ``q0 ~ N(0, 0.4^2)``, ``p0 ~ N(0, 0.6^2)``, and the mean
momentum over the particles of EACH system is subtracted (so every system has
zero total linear momentum). The original code subtracted the mean over the
batch of systems instead, which leaves each system with a random net momentum;
we do not reproduce that defect.

Ground-truth solver
-------------------
The vector field is linear, ``dz/dt = M z`` with
``M = [[0, diag(1/m) (x) I_D], [-2 L (x) I_D, 0]]`` where ``L = diag(K 1) - K`` is
the graph Laplacian of ``K_ij = k_i k_j`` (see :func:`system_matrix`). We
therefore solve it exactly: ``z(t_j) = expm(M t_j) z0`` in float64 with
``torch.linalg.matrix_exp`` (Padé/Taylor scaling and squaring, accurate to a
small multiple of machine precision; there is no integrator tolerance). Two
exact identities are used for speed, neither of which adds approximation:

* ``M`` is ``A (x) I_D`` up to a permutation, with the ``2N x 2N`` matrix
  ``A = [[0, diag(1/m)], [-2L, 0]]``, so ``expm(M t)`` acts on each coordinate
  axis separately as ``expm(A t)``;
* on a uniform grid ``t_j = t_0 + j dt`` we write ``j = a B + r`` and use
  ``expm(A t_j) = expm(A r dt) expm(A (t_0 + a B dt))`` with ``B ~ sqrt(T)``,
  i.e. ``~2 sqrt(T)`` exponentials per system instead of ``T`` (each factor is an
  exact exponential: no error accumulates along the trajectory).

Measured on 1000 systems of the default size: relative energy drift ~1e-12,
total momentum ~1e-12, angular-momentum drift ~1e-11 over ``t in [0, 5]``.

Cache
-----
A data set is generated once per parameter set into ``data_dir`` (default
:func:`default_cache_dir`: ``$LIECONV_CACHE/springs``, else
``$XDG_CACHE_HOME/lieconv/springs``, else ``~/.cache/lieconv/springs``) as
``<name>.pt`` (tensors, ``n_systems * n_times * 2ND * 8`` bytes: 960 MB for the
paper's 10,000 systems) plus ``<name>.json`` (config + sha256 of the ``.pt``
file); both are written atomically (temp file in the same folder, then
``os.replace``). A missing, corrupted or mismatched cache is detected, logged as
a warning and regenerated, never silently used. Temp files left by a killed writer
are removed when the folder is next used (:func:`lieconv_runtime.io.clean_stale_temps`);
:func:`list_caches` and :func:`clean_caches` list and remove caches
(``lieconv data springs --list|--clean``).
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Iterator

import numpy as np
import torch

from lieconv_runtime.io import (
    atomic_torch_save,
    atomic_write_text,
    cache_dir,
    clean_stale_temps,
    ensure_writable_dir,
    is_stale_temp,
)

log = logging.getLogger(__name__)

#: Bump when the generation algorithm changes: it invalidates old caches.
GENERATOR_VERSION = 1

__all__ = [
    "GENERATOR_VERSION",
    "ChunkData",
    "SpringSplits",
    "SpringTrajectories",
    "angular_momentum",
    "cache_path",
    "cache_size_bytes",
    "clean_caches",
    "default_cache_dir",
    "energy",
    "generate_springs",
    "kinetic_energy",
    "linear_momentum",
    "list_caches",
    "load_spring_splits",
    "load_springs",
    "make_chunks",
    "sample_systems",
    "simulate",
    "split_state",
    "spring_config",
    "spring_potential",
    "system_matrix",
]


# --------------------------------------------------------------------------- physics
def split_state(z: torch.Tensor, n_particles: int, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``z (..., 2ND) -> q (..., N, D), p (..., N, D)`` (views)."""
    nd = n_particles * dim
    if z.shape[-1] != 2 * nd:
        raise ValueError(f"state has {z.shape[-1]} entries, expected 2*N*D = {2 * nd}")
    q = z[..., :nd].reshape(*z.shape[:-1], n_particles, dim)
    p = z[..., nd:].reshape(*z.shape[:-1], n_particles, dim)
    return q, p


def _expand_params(x: torch.Tensor, target_batch_dims: int) -> torch.Tensor:
    """Insert singleton dims before the particle axis so ``x (B..., N)`` broadcasts
    against a state with ``target_batch_dims`` leading dims (e.g. a time axis)."""
    while x.dim() - 1 < target_batch_dims:
        x = x.unsqueeze(-2)
    return x


def kinetic_energy(p: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """``sum_i |p_i|^2 / (2 m_i)``: ``p (..., N, D)``, ``m (..., N)`` -> ``(...)``."""
    return ((p * p).sum(-1) / (2 * m)).sum(-1)


def spring_potential(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """``1/2 sum_{i,j} k_i k_j |q_i - q_j|^2``: ``q (..., N, D)``, ``k (..., N)`` -> ``(...)``."""
    diff = q.unsqueeze(-2) - q.unsqueeze(-3)  # (..., N, N, D)
    kk = k.unsqueeze(-1) * k.unsqueeze(-2)  # (..., N, N)
    return 0.5 * (kk * (diff * diff).sum(-1)).sum((-1, -2))


def energy(z: torch.Tensor, m: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """True spring energy ``H(z)``.

    ``z (B..., [T,] 2ND)``; ``m, k (B..., N)``. If ``z`` has more leading dims than
    ``m`` (e.g. a time axis), ``m, k`` are broadcast over them. Returns ``(B..., [T])``.
    """
    n = m.shape[-1]
    dim = z.shape[-1] // (2 * n)
    q, p = split_state(z, n, dim)
    m = _expand_params(m, z.dim() - 1)
    k = _expand_params(k, z.dim() - 1)
    return kinetic_energy(p, m) + spring_potential(q, k)


def linear_momentum(z: torch.Tensor, n_particles: int, dim: int) -> torch.Tensor:
    """Total linear momentum ``sum_i p_i``: ``z (..., 2ND) -> (..., D)``."""
    _, p = split_state(z, n_particles, dim)
    return p.sum(-2)


def angular_momentum(z: torch.Tensor, n_particles: int, dim: int) -> torch.Tensor:
    """Total angular momentum ``sum_i q_i x p_i`` about the origin.

    ``z (..., 2ND)`` -> ``(...)`` for ``D = 2`` (scalar ``q_x p_y - q_y p_x``) or
    ``(..., 3)`` for ``D = 3``.
    """
    q, p = split_state(z, n_particles, dim)
    if dim == 2:
        return (q[..., 0] * p[..., 1] - q[..., 1] * p[..., 0]).sum(-1)
    if dim == 3:
        return torch.linalg.cross(q, p, dim=-1).sum(-2)
    raise ValueError(f"angular momentum is defined here for D = 2 or 3, got D = {dim}")


def _laplacian(k: torch.Tensor) -> torch.Tensor:
    """``k (bs, N) -> L (bs, N, N)``, graph Laplacian of ``K = k k^T``."""
    kk = k.unsqueeze(-1) * k.unsqueeze(-2)
    return torch.diag_embed(kk.sum(-1)) - kk


def _axis_matrix(m: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Per-axis system matrix ``A = [[0, diag(1/m)], [-2L, 0]]``: ``(bs, 2N, 2N)``."""
    bs, n = m.shape
    a = m.new_zeros(bs, 2 * n, 2 * n)
    a[:, :n, n:] = torch.diag_embed(1.0 / m)
    a[:, n:, :n] = -2.0 * _laplacian(k)
    return a


def system_matrix(m: torch.Tensor, k: torch.Tensor, dim: int) -> torch.Tensor:
    """Full linear vector field ``M`` with ``dz/dt = M z``: ``m, k (bs, N) -> (bs, 2ND, 2ND)``."""
    eye = torch.eye(dim, dtype=m.dtype, device=m.device)
    bs, n = m.shape
    nd = n * dim
    out = m.new_zeros(bs, 2 * nd, 2 * nd)
    # kron(X, I_D) for a batch of X (bs, N, N)
    kron = lambda x: (x[:, :, None, :, None] * eye[None, None, :, None, :]).reshape(bs, nd, nd)
    out[:, :nd, nd:] = kron(torch.diag_embed(1.0 / m))
    out[:, nd:, :nd] = kron(-2.0 * _laplacian(k))
    return out


def _is_uniform(ts: torch.Tensor) -> bool:
    if ts.numel() < 3:
        return True
    d = ts[1:] - ts[:-1]
    scale = float(ts.abs().max()) + 1e-300
    return bool((d - d[0]).abs().max() <= 1e-12 * scale)


def simulate(z0: torch.Tensor, m: torch.Tensor, k: torch.Tensor, ts: torch.Tensor) -> torch.Tensor:
    """Exact trajectories ``z(t_j) = expm(M t_j) z0`` (computed in float64).

    ``z0 (bs, 2ND)``, ``m, k (bs, N)``, ``ts (T,)`` -> ``(bs, T, 2ND)`` float64.
    Works for any ``ts``; uniform grids use the factorisation described in the
    module docstring.
    """
    z0, m, k, ts = (torch.as_tensor(x, dtype=torch.float64) for x in (z0, m, k, ts))
    bs, n = m.shape
    dim = z0.shape[-1] // (2 * n)
    q0, p0 = split_state(z0, n, dim)
    x0 = torch.cat([q0, p0], dim=1)  # (bs, 2N, D): per-axis state columns
    a = _axis_matrix(m, k)  # (bs, 2N, 2N)
    n_t = ts.shape[0]
    if n_t > 16 and _is_uniform(ts):
        dt = (ts[-1] - ts[0]) / (n_t - 1)
        block = int(math.ceil(math.sqrt(n_t)))
        n_blocks = int(math.ceil(n_t / block))
        r_t = torch.arange(block, dtype=torch.float64) * dt  # (B,)
        a_t = ts[0] + torch.arange(n_blocks, dtype=torch.float64) * (block * dt)  # (nb,)
        e_r = torch.linalg.matrix_exp(a[:, None] * r_t[None, :, None, None])  # (bs, B, 2N, 2N)
        e_a = torch.linalg.matrix_exp(a[:, None] * a_t[None, :, None, None])  # (bs, nb, 2N, 2N)
        xa = e_a @ x0[:, None]  # (bs, nb, 2N, D)
        xs = torch.einsum("brij,bajd->barid", e_r, xa).reshape(bs, n_blocks * block, 2 * n, dim)
        xs = xs[:, :n_t]
    else:
        e = torch.linalg.matrix_exp(a[:, None] * ts[None, :, None, None])  # (bs, T, 2N, 2N)
        xs = e @ x0[:, None]
    q, p = xs[:, :, :n], xs[:, :, n:]
    return torch.cat([q.reshape(bs, n_t, n * dim), p.reshape(bs, n_t, n * dim)], dim=-1)


def sample_systems(
    n_systems: int,
    n_particles: int,
    dim: int,
    rng: np.random.Generator,
    zero_momentum: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Draw ``(z0 (n, 2ND), m (n, N), k (n, N))`` in float64.

    Draws are made system by system, so the first ``n`` systems of a larger
    data set with the same seed are identical. ``zero_momentum`` subtracts each
    system's mean momentum over its particles.
    """
    z0 = np.empty((n_systems, 2 * n_particles * dim))
    m = np.empty((n_systems, n_particles))
    k = np.empty((n_systems, n_particles))
    for i in range(n_systems):
        m[i] = rng.uniform(0.1, 3.1, n_particles)
        k[i] = rng.uniform(0.0, 5.0, n_particles)
        q0 = rng.normal(0.0, 0.4, (n_particles, dim))
        p0 = rng.normal(0.0, 0.6, (n_particles, dim))
        if zero_momentum:
            p0 = p0 - p0.mean(0, keepdims=True)
        z0[i] = np.concatenate([q0.ravel(), p0.ravel()])
    return torch.from_numpy(z0), torch.from_numpy(m), torch.from_numpy(k)


# --------------------------------------------------------------------------- data sets
@dataclass
class SpringTrajectories:
    """Full trajectories. ``ts (T,)``, ``zs (n, T, 2ND)``, ``m, k (n, N)``."""

    ts: torch.Tensor
    zs: torch.Tensor
    m: torch.Tensor
    k: torch.Tensor
    config: dict = field(default_factory=dict)

    @property
    def n_particles(self) -> int:
        return self.m.shape[-1]

    @property
    def dim(self) -> int:
        return self.zs.shape[-1] // (2 * self.n_particles)

    def __len__(self) -> int:
        return self.zs.shape[0]

    def subset(self, idx) -> "SpringTrajectories":
        return SpringTrajectories(self.ts, self.zs[idx], self.m[idx], self.k[idx], dict(self.config))

    def to(self, dtype: torch.dtype | None = None, device=None) -> "SpringTrajectories":
        f = lambda x: x.to(device=device, dtype=dtype)
        return SpringTrajectories(f(self.ts), f(self.zs), f(self.m), f(self.k), dict(self.config))


def spring_config(
    n_systems: int, n_particles: int = 6, dim: int = 2, n_times: int = 500, t_end: float = 5.0, seed: int = 0
) -> dict:
    """The JSON-able parameter dict that identifies a generated data set."""
    if dim < 1 or n_particles < 2 or n_systems < 1 or n_times < 2:
        raise ValueError("need n_systems >= 1, n_particles >= 2, dim >= 1, n_times >= 2")
    return {
        "generator_version": GENERATOR_VERSION,
        "n_systems": int(n_systems),
        "n_particles": int(n_particles),
        "dim": int(dim),
        "n_times": int(n_times),
        "t_end": float(t_end),
        "seed": int(seed),
        "zero_momentum": "per_system",
        "solver": "expm_float64",
    }


def generate_springs(
    n_systems: int,
    n_particles: int = 6,
    dim: int = 2,
    n_times: int = 500,
    t_end: float = 5.0,
    seed: int = 0,
    progress: bool = True,
) -> SpringTrajectories:
    """Generate (no cache) ``n_systems`` trajectories on ``ts = linspace(0, t_end, n_times)``.

    Fully determined by the arguments (numpy ``Generator(seed)``); float64.
    A tqdm bar is shown when ``progress`` and ``n_systems > 1000``.
    """
    config = spring_config(n_systems, n_particles, dim, n_times, t_end, seed)
    rng = np.random.default_rng(seed)
    z0, m, k = sample_systems(n_systems, n_particles, dim, rng)
    ts = torch.linspace(0.0, float(t_end), n_times, dtype=torch.float64)
    zs = torch.empty(n_systems, n_times, z0.shape[-1], dtype=torch.float64)
    chunk = 250
    from tqdm.auto import tqdm

    with tqdm(total=n_systems, desc="springs ground truth", unit="sys",
              disable=not (progress and n_systems > 1000)) as bar:
        for s in range(0, n_systems, chunk):
            e = min(s + chunk, n_systems)
            zs[s:e] = simulate(z0[s:e], m[s:e], k[s:e], ts)
            bar.update(e - s)
    return SpringTrajectories(ts, zs, m, k, config)


def default_cache_dir() -> Path:
    """``$LIECONV_CACHE/springs``, else ``$XDG_CACHE_HOME/lieconv/springs``, else ``~/.cache/lieconv/springs``."""
    return cache_dir("springs")


def cache_size_bytes(config: dict) -> int:
    """Approximate size of the ``.pt`` file of ``config`` (float64 trajectories, masses, constants)."""
    c = config
    return 8 * c["n_systems"] * (c["n_times"] * 2 * c["n_particles"] * c["dim"] + 2 * c["n_particles"]) + 8 * c["n_times"]


def _mb(n_bytes: float) -> str:
    return f"{n_bytes / 1e6:,.0f} MB" if n_bytes >= 1e6 else f"{n_bytes / 1e3:,.0f} kB"


def cache_path(config: dict, data_dir: str | os.PathLike | None = None) -> Path:
    """Path of the ``.pt`` file for ``config`` (the ``.json`` sits next to it)."""
    d = Path(data_dir) if data_dir is not None else default_cache_dir()
    c = config
    name = (
        f"springs_v{c['generator_version']}_n{c['n_systems']}_N{c['n_particles']}_D{c['dim']}"
        f"_T{c['n_times']}_t{c['t_end']:g}_s{c['seed']}.pt"
    )
    return d / name


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _try_load_cache(pt: Path, config: dict) -> SpringTrajectories | None:
    meta_path = pt.with_suffix(".json")
    if not pt.exists() and not meta_path.exists():
        return None
    problem = None
    try:
        meta = json.loads(meta_path.read_text())
        if meta.get("config") != config:
            problem = "stored config differs from the requested one"
        elif _sha256(pt) != meta.get("sha256"):
            problem = "sha256 checksum mismatch (corrupted or truncated file)"
        else:
            blob = torch.load(pt, map_location="cpu", weights_only=True)
            if blob.get("config") != config:
                problem = "config inside the data file differs"
            else:
                traj = SpringTrajectories(blob["ts"], blob["zs"], blob["m"], blob["k"], config)
                n, t, nd2 = config["n_systems"], config["n_times"], 2 * config["n_particles"] * config["dim"]
                if tuple(traj.zs.shape) != (n, t, nd2) or tuple(traj.m.shape) != (n, config["n_particles"]):
                    problem = "tensor shapes do not match the config"
                else:
                    return traj
    except FileNotFoundError as e:
        problem = f"missing file {Path(e.filename).name if e.filename else e}"
    except Exception as e:  # unreadable json / pickle
        problem = f"unreadable cache ({type(e).__name__}: {e})"
    log.warning("springs cache %s is invalid: %s; regenerating", pt, problem)
    return None


def load_springs(
    n_systems: int = 10000,
    n_particles: int = 6,
    dim: int = 2,
    n_times: int = 500,
    t_end: float = 5.0,
    seed: int = 0,
    data_dir: str | os.PathLike | None = None,
    progress: bool = True,
    regenerate: bool = False,
    notify=None,
) -> SpringTrajectories:
    """Cached :func:`generate_springs`. Returns float64 trajectories.

    The cache is verified (config + sha256) before use; an invalid one is logged
    and regenerated. ``regenerate=True`` forces regeneration. Stale temp files of the
    cache folder are removed first. ``notify(text)`` (e.g. ``print``) is told which file
    is loaded or generated, its size and the disk space a generation takes; the folder
    is checked to be writable and to have room before generating (``OSError`` naming it).
    """
    config = spring_config(n_systems, n_particles, dim, n_times, t_end, seed)
    pt = cache_path(config, data_dir)
    say = notify or (lambda text: None)
    clean_stale_temps(pt.parent, "springs_*")
    what = f"{n_systems:,} systems x {n_times} time steps ({n_particles} particles in {dim}D)"
    if not regenerate:
        traj = _try_load_cache(pt, config)
        if traj is not None:
            say(f"data: {what} from the cache {pt}")
            return traj
    ensure_writable_dir(pt.parent)
    need, free = cache_size_bytes(config), shutil.disk_usage(pt.parent).free
    if free < need:
        raise OSError(errno.ENOSPC, f"the data set needs about {_mb(need)} but only {_mb(free)} are free there",
                      str(pt.parent))
    say(f"data: generating {what} into {pt} (about {_mb(cache_size_bytes(config))} on disk and in memory)")
    traj = generate_springs(n_systems, n_particles, dim, n_times, t_end, seed, progress=progress)
    blob = {"config": config, "ts": traj.ts, "zs": traj.zs, "m": traj.m, "k": traj.k}
    atomic_torch_save(pt, blob)
    meta = {"config": config, "sha256": _sha256(pt), "file": pt.name}
    atomic_write_text(pt.with_suffix(".json"), json.dumps(meta, indent=1))
    return traj


def list_caches(data_dir: str | os.PathLike | None = None) -> list[dict]:
    """The springs caches in ``data_dir`` (default :func:`default_cache_dir`): one dict per
    ``.pt`` file (``path``, ``size_bytes``, ``config`` from its ``.json`` or ``None``), plus
    temp files of writers (``"temp": True``, ``"stale"``: its writer is gone)."""
    d = Path(data_dir) if data_dir is not None else default_cache_dir()
    rows = []
    for pt in sorted(d.glob("springs_*.pt")):
        try:
            config = json.loads(pt.with_suffix(".json").read_text()).get("config")
        except (OSError, ValueError, AttributeError):
            config = None
        rows.append({"path": str(pt), "size_bytes": pt.stat().st_size, "config": config})
    for tmp in sorted(d.glob(".springs_*.tmp")):
        try:
            rows.append({"path": str(tmp), "size_bytes": tmp.stat().st_size, "config": None, "temp": True,
                         "stale": bool(is_stale_temp(tmp))})
        except FileNotFoundError:
            pass
    return rows


def clean_caches(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Remove every springs cache (``.pt`` + ``.json``) and stale temp file in ``data_dir``
    (temp files of writers still running are kept). Returns the removed paths."""
    d = Path(data_dir) if data_dir is not None else default_cache_dir()
    removed = clean_stale_temps(d, "springs_*")
    for path in sorted([*d.glob("springs_*.pt"), *d.glob("springs_*.json")]):
        try:
            path.unlink()
            removed.append(path)
        except FileNotFoundError:
            pass
    return removed


# --------------------------------------------------------------------------- chunks
@dataclass
class ChunkData:
    """Training chunks: ``z0 (n, 2ND)``, ``ts (L,)`` relative times from 0,
    ``zs (n, L, 2ND)`` target states (``zs[:, 0] == z0``), ``m, k (n, N)``.  In memory: a batch is
    ``data[LongTensor of indices]`` (``batched``; the trainer indexes it without a DataLoader)."""

    batched: ClassVar[bool] = True

    z0: torch.Tensor
    ts: torch.Tensor
    zs: torch.Tensor
    m: torch.Tensor
    k: torch.Tensor

    def __len__(self) -> int:
        return self.z0.shape[0]

    def __getitem__(self, idx) -> "ChunkData":
        return ChunkData(self.z0[idx], self.ts, self.zs[idx], self.m[idx], self.k[idx])

    @property
    def n_particles(self) -> int:
        return self.m.shape[-1]

    @property
    def dim(self) -> int:
        return self.z0.shape[-1] // (2 * self.n_particles)

    def to(self, dtype: torch.dtype | None = None, device=None) -> "ChunkData":
        f = lambda x: x.to(device=device, dtype=dtype)
        return ChunkData(f(self.z0), f(self.ts), f(self.zs), f(self.m), f(self.k))

    def batches(self, batch_size: int, shuffle: bool = False,
                generator: torch.Generator | None = None) -> Iterator["ChunkData"]:
        """Iterate mini-batches (the last one may be smaller)."""
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        for s in range(0, n, batch_size):
            yield self[order[s:s + batch_size]]


def chunk_starts(n_systems: int, n_times: int, chunk_len: int, seed: int) -> np.ndarray:
    """Seeded start index of the chunk of every system: ``(n_systems,)`` ints."""
    rng = np.random.default_rng([int(seed), 0x5C0FFEE])
    return rng.integers(0, n_times - chunk_len + 1, size=n_systems)


def make_chunks(traj: SpringTrajectories, idx=None, chunk_len: int = 5, seed: int = 0,
                dtype: torch.dtype = torch.float32) -> ChunkData:
    """One random chunk of ``chunk_len`` consecutive steps per system.

    Start indices are drawn for all systems of ``traj`` at once (seeded), so the
    chunk of a system does not depend on which split it is in. ``idx`` selects
    systems (default all).
    """
    n_t = traj.ts.shape[0]
    if not 1 <= chunk_len <= n_t:
        raise ValueError(f"chunk_len={chunk_len} must be in [1, n_times={n_t}]")
    starts = torch.from_numpy(chunk_starts(len(traj), n_t, chunk_len, seed))
    idx = torch.arange(len(traj)) if idx is None else torch.as_tensor(idx, dtype=torch.long)
    st = starts[idx]
    steps = st[:, None] + torch.arange(chunk_len)[None, :]  # (n, L)
    zs = traj.zs[idx[:, None], steps]  # (n, L, 2ND)
    ts = traj.ts[:chunk_len] - traj.ts[0]  # uniform grid: same relative times everywhere
    out = ChunkData(zs[:, 0].clone(), ts.clone(), zs, traj.m[idx], traj.k[idx])
    return out.to(dtype=dtype)


@dataclass
class SpringSplits:
    """``train/val/test`` chunks and the full ``test_long`` trajectories (float64)."""

    train: ChunkData
    val: ChunkData
    test: ChunkData
    test_long: SpringTrajectories


def load_spring_splits(
    n_train: int = 3000,
    n_val: int = 200,
    n_test: int = 2000,
    *,
    n_systems: int = 10000,
    n_particles: int = 6,
    dim: int = 2,
    n_times: int = 500,
    t_end: float = 5.0,
    seed: int = 0,
    chunk_len: int = 5,
    dtype: torch.dtype = torch.float32,
    data_dir: str | os.PathLike | None = None,
    progress: bool = True,
    notify=None,
) -> SpringSplits:
    """Paper splits from one cached data set of ``n_systems`` systems.

    Layout: train = first ``n_train`` systems; test = last ``n_test``; val = the
    ``n_val`` just before test. Val/test thus do not depend on ``n_train`` and
    smaller training sets are prefixes of larger ones.
    """
    if min(n_train, n_val, n_test) < 0:
        raise ValueError("split sizes must be non-negative")
    avail = n_systems - n_val - n_test
    if n_train > avail:
        raise ValueError(
            f"n_train={n_train} exceeds the {max(avail, 0)} systems available for training "
            f"(n_systems={n_systems} - n_val={n_val} - n_test={n_test}); increase n_systems"
        )
    traj = load_springs(n_systems, n_particles, dim, n_times, t_end, seed, data_dir=data_dir, progress=progress,
                        notify=notify)
    test_idx = torch.arange(n_systems - n_test, n_systems)
    val_idx = torch.arange(n_systems - n_test - n_val, n_systems - n_test)
    train_idx = torch.arange(n_train)
    mk = lambda idx: make_chunks(traj, idx, chunk_len=chunk_len, seed=seed, dtype=dtype)
    return SpringSplits(mk(train_idx), mk(val_idx), mk(test_idx), traj.subset(test_idx))
