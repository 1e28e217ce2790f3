"""Evaluation of spring-dynamics models: test MSE on chunks and long-rollout metrics.

Rollout metrics (per test trajectory ``b`` and time ``t``; ``z`` true, ``ẑ`` predicted,
both ``(K, T, 2ND)``; ``H`` the TRUE spring Hamiltonian):

* ``rollout_rel_error``      ``|ẑ_t - z_t| / (|ẑ_t| + |z_t|)`` (bounded in [0, 1]);
* ``energy_rel_error``       ``|H(ẑ_t) - H(z_0)| / |H(z_0)|``;
* ``linear_momentum_drift``  ``|Σp̂_t - Σp̂_0| / |Σp_0|``;
* ``angular_momentum_drift`` ``|L̂_t - L̂_0| / |L_0|``, ``L = Σ q_i × p_i`` about the origin.

The summary values are means over the trajectories at the last time.

Net momentum: the data set gives every system zero total momentum, which makes
the linear drift 0/0. Rollouts therefore start from the test systems after an
exact Galilean boost (``q_i(t) += v t``, ``p_i(t) += m_i v``, ``v = P / Σm``,
``P ~ N(0, s² I_D)`` seeded; the boosted trajectories are exact solutions because
the potential is translation invariant). The default ``s = 0.6 √N`` matches the
net-momentum spread of the original paper's data. ``s = 0`` disables the boost;
the linear drift is then reported as ``None``.

Adaptive rollouts (``dopri5``) control the error of every trajectory separately
(the step-size norm is the max over trajectories of their RMS error ratio), so
batching does not loosen the tolerance.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from torchdiffeq import odeint

from lieconv_runtime.data.springs import (
    SpringTrajectories,
    angular_momentum,
    energy,
    load_spring_splits,
    split_state,
)
from lieconv_runtime.models.hamiltonian import predict_chunks

__all__ = [
    "CheckpointError",
    "METRICS",
    "conservation_curves",
    "evaluate_model",
    "galilean_boost",
    "integrate",
    "load_run_splits",
    "model_from_checkpoint",
    "read_checkpoint",
    "rollout_metrics",
    "test_mse",
]

METRICS = ("rollout_rel_error", "energy_rel_error", "linear_momentum_drift", "angular_momentum_drift")
DTYPES = {"float32": torch.float32, "float64": torch.float64}


class CheckpointError(ValueError):
    """A missing, unreadable or foreign checkpoint."""


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:300]


# --------------------------------------------------------------------------- checkpoints
def read_checkpoint(path) -> dict:
    """Load a trainer checkpoint (``path`` or ``path/checkpoint.pt``) written by ``lieconv train springs``.

    Returns the checkpoint dict with ``state["config"]["run"]`` (model, group,
    data and training settings) and ``state["path"]``.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.pt"
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated / not a torch file / foreign pickle
        raise CheckpointError(f"cannot read checkpoint {path}: corrupt, truncated or not a torch checkpoint "
                              f"({type(e).__name__})") from None
    config = state.get("config") if isinstance(state, dict) else None
    run = config.get("run") if isinstance(config, dict) else None
    if not isinstance(run, dict) or run.get("task") != "springs" or "model" not in state:
        raise CheckpointError(f"{path} is not a checkpoint of `lieconv train springs` (no springs run config)")
    state["path"] = str(path)
    return state


def model_from_checkpoint(state: dict, dtype: torch.dtype | None = None):
    """Rebuild the model of a checkpoint with its best-validation weights (eval mode)."""
    from lieconv_runtime.models.registry import build_model

    run = state["config"]["run"]
    model = build_model(run["model"], run["n_particles"], run["dim"], run.get("group"), **run.get("model_kw", {}))
    weights = state.get("best_state") or state["model"]
    try:
        model.load_state_dict(weights)
    except (RuntimeError, KeyError) as e:
        raise CheckpointError(f"weights in {state.get('path')} do not fit {run['model']}: {_one_line(e)}") from None
    return model.to(dtype or DTYPES[run["dtype"]]).eval()


def load_run_splits(run: dict, data_dir=None, dtype: torch.dtype | None = None, progress: bool = True):
    """The :class:`~lieconv_runtime.data.springs.SpringSplits` a run config describes."""
    d = run["data"]
    return load_spring_splits(
        run["n_train"], d["n_val"], d["n_test"], n_systems=d["n_systems"], n_particles=run["n_particles"],
        dim=run["dim"], n_times=d["n_times"], t_end=d["t_end"], seed=d["seed"], chunk_len=d["chunk_len"],
        dtype=dtype or DTYPES[run["dtype"]], data_dir=data_dir, progress=progress,
    )


# --------------------------------------------------------------------------- metrics
def test_mse(model, chunks, batch_size: int = 500) -> float:
    """MSE over all elements of the chunk predictions (RK4 on the chunk grid), batch-size weighted."""
    sq, count = 0.0, 0
    with torch.no_grad():
        for b in chunks.batches(batch_size):
            pred, target = predict_chunks(model, b)
            sq += float(((pred - target) ** 2).sum(dtype=torch.float64))
            count += target.numel()
    return sq / max(count, 1)


def galilean_boost(traj: SpringTrajectories, std: float, seed: int = 0) -> SpringTrajectories:
    """Give each system a net momentum ``P ~ N(0, std² I_D)`` by an exact boost (see module doc)."""
    if std == 0:
        return traj
    n, n_t, _ = traj.zs.shape
    N, D = traj.n_particles, traj.dim
    g = torch.Generator().manual_seed(int(seed))
    P = torch.randn(n, D, generator=g, dtype=torch.float64).to(traj.zs.dtype) * std
    v = P / traj.m.sum(-1, keepdim=True)  # (n, D)
    q, p = split_state(traj.zs, N, D)  # (n, T, N, D)
    t = (traj.ts - traj.ts[0])[None, :, None, None]
    q = q + t * v[:, None, None, :]
    p = p + traj.m[:, None, :, None] * v[:, None, None, :]
    zs = torch.cat([q.reshape(n, n_t, N * D), p.reshape(n, n_t, N * D)], dim=-1)
    return SpringTrajectories(traj.ts, zs, traj.m, traj.k, dict(traj.config, net_momentum_std=std))


def _per_trajectory_rms(x: torch.Tensor) -> torch.Tensor:
    """Step-size norm: max over trajectories (dim 0) of the RMS error ratio."""
    if x.dim() < 2:
        return x.pow(2).mean().sqrt()
    return x.reshape(x.shape[0], -1).pow(2).mean(-1).sqrt().max()


def integrate(model, z0, m, k, ts, solver: str = "dopri5", rtol: float = 1e-8, atol: float = 1e-10,
              step_size: float | None = None, max_steps: int = 200_000) -> torch.Tensor:
    """Roll ``model`` out from ``z0 (bs, 2ND)`` over ``ts (T,)``: ``(bs, T, 2ND)``, no grad.

    ``rk4``: fixed steps on the ``ts`` grid (or ``step_size``); ``dopri5``/``dopri8``:
    adaptive with per-trajectory error control.
    """
    func = lambda t, z: model.derivative(z, m, k)
    if solver in ("rk4", "euler", "midpoint"):
        options = {"step_size": step_size} if step_size else None
    else:
        options = {"norm": _per_trajectory_rms, "max_num_steps": max_steps}
    with torch.no_grad():
        zs = odeint(func, z0, ts.to(z0), method=solver, rtol=rtol, atol=atol, options=options)
    return zs.transpose(0, 1)


def conservation_curves(pred: torch.Tensor, true: torch.Tensor, m: torch.Tensor, k: torch.Tensor) -> dict:
    """Per-trajectory metric curves ``(K, T)`` (float64 numpy) for ``pred, true (K, T, 2ND)``."""
    pred, true, m, k = (x.double() for x in (pred, true, m, k))
    N = m.shape[-1]
    D = true.shape[-1] // (2 * N)
    diff = (pred - true).norm(dim=-1)
    rel = diff / (pred.norm(dim=-1) + true.norm(dim=-1)).clamp_min(1e-300)
    h0 = energy(true[:, :1], m, k)  # (K, 1)
    e_rel = (energy(pred, m, k) - h0).abs() / h0.abs().clamp_min(1e-300)
    p_pred = split_state(pred, N, D)[1].sum(-2)  # (K, T, D)
    p0_true = split_state(true[:, 0], N, D)[1].sum(-2)  # (K, D)
    lin = (p_pred - p_pred[:, :1]).norm(dim=-1) / p0_true.norm(dim=-1, keepdim=True)
    if float(p0_true.norm(dim=-1).min()) < 1e-12:  # zero net momentum: relative drift undefined
        lin = torch.full_like(lin, math.nan)
    l_pred = angular_momentum(pred, N, D)
    l0 = angular_momentum(true[:, :1], N, D)
    if D == 2:
        ang = (l_pred - l_pred[:, :1]).abs() / l0.abs().clamp_min(1e-300)
    else:
        ang = (l_pred - l_pred[:, :1]).norm(dim=-1) / l0.norm(dim=-1).clamp_min(1e-300)
    out = {"rollout_rel_error": rel, "energy_rel_error": e_rel,
           "linear_momentum_drift": lin, "angular_momentum_drift": ang}
    return {key: v.cpu().numpy() for key, v in out.items()}


def rollout_metrics(model, traj: SpringTrajectories, *, solver: str = "dopri5", rtol: float = 1e-8,
                    atol: float = 1e-10, step_size: float | None = None, batch_size: int = 50,
                    dtype: torch.dtype = torch.float64, max_steps: int = 200_000) -> dict:
    """Roll out every trajectory of ``traj`` from its first state over its full time grid.

    Returns ``{"ts": (T,), "pred": (K, T, 2ND), <metric>: (K, T) ...}`` (numpy) plus
    ``"fallbacks"``: batches where the adaptive solver failed and RK4 on the data grid was used.
    """
    model = model.to(dtype).eval()
    ts = traj.ts.to(dtype)
    preds, fallbacks = [], 0
    for s in range(0, len(traj), batch_size):
        z0, m, k = (x[s:s + batch_size].to(dtype) for x in (traj.zs[:, 0], traj.m, traj.k))
        try:
            pred = integrate(model, z0, m, k, ts, solver, rtol, atol, step_size, max_steps)
        except (AssertionError, RuntimeError):  # step-size underflow / max steps / non-finite
            fallbacks += 1
            pred = integrate(model, z0, m, k, ts, "rk4")
        preds.append(pred)
    pred = torch.cat(preds)
    curves = conservation_curves(pred, traj.zs, traj.m, traj.k)
    return {"ts": ts.double().numpy(), "pred": pred.double().numpy(), "fallbacks": fallbacks, **curves}


def _num(x):
    """JSON-safe float: ``None`` for NaN/inf (e.g. a diverged rollout)."""
    x = float(x)
    return x if math.isfinite(x) else None


def _at_end(curve: np.ndarray, stat=np.mean):
    return _num(stat(curve[:, -1]))


def evaluate_model(model, splits, *, out_dir, meta: dict, n_rollouts: int = 100, solver: str = "dopri5",
                   rtol: float = 1e-8, atol: float = 1e-10, step_size: float | None = None,
                   net_momentum_std: float | None = None, rollout_dtype: torch.dtype = torch.float64,
                   batch_size: int = 50, plots: bool = True, boost_seed: int = 0, max_steps: int = 200_000) -> dict:
    """Test MSE + rollout metrics; writes ``summary.json``, ``curves.npz`` and PNG plots to ``out_dir``.

    ``meta`` (model, group, n_train, seed, ...) is copied into the summary.
    ``net_momentum_std``: ``None`` -> ``0.6 sqrt(N)``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    param = next(iter(model.parameters()), None)
    mse = test_mse(model, splits.test.to(dtype=param.dtype if param is not None else splits.test.z0.dtype))
    t_mse = time.time() - t0
    long = splits.test_long.subset(torch.arange(min(n_rollouts, len(splits.test_long))))
    std = 0.6 * math.sqrt(long.n_particles) if net_momentum_std is None else float(net_momentum_std)
    long = galilean_boost(long, std, boost_seed)
    t1 = time.time()
    r = rollout_metrics(model, long, solver=solver, rtol=rtol, atol=atol, step_size=step_size,
                        batch_size=batch_size, dtype=rollout_dtype, max_steps=max_steps)
    t_roll = time.time() - t1
    summary = {
        "test_mse": _num(mse),
        **{key: _at_end(r[key]) for key in METRICS},
        **meta,
        "n_test_chunks": len(splits.test),
        "n_rollouts": len(long),
        "rollout_t_end": float(r["ts"][-1] - r["ts"][0]),
        "solver": solver, "rtol": rtol if solver != "rk4" else None, "atol": atol if solver != "rk4" else None,
        "step_size": step_size if solver == "rk4" else None,
        "rollout_dtype": str(rollout_dtype).replace("torch.", ""),
        "net_momentum_std": std,
        "solver_fallback_batches": r["fallbacks"],
        "medians_at_end": {key: _at_end(r[key], np.median) for key in METRICS},
        "test_mse_time_s": round(t_mse, 3),
        "rollout_time_s": round(t_roll, 3),
        "curves_file": "curves.npz",
    }
    n_show = min(4, len(long))
    np.savez_compressed(out / "curves.npz", ts=r["ts"], **{key: r[key] for key in METRICS},
                        pred_examples=r["pred"][:n_show], true_examples=long.zs[:n_show].double().numpy())
    if plots:
        from lieconv_runtime.train import plots as P

        label = meta.get("label") or _label(meta)
        P.plot_trajectories(r["ts"], long.zs[:n_show].double().numpy(), r["pred"][:n_show],
                            long.n_particles, long.dim, out / "trajectories.png", title=label)
        P.plot_conservation({label: {"ts": r["ts"], **{key: r[key] for key in METRICS}}}, out / "conservation.png")
        summary["plots"] = ["trajectories.png", "conservation.png"]
    from lieconv_runtime.train.trainer import atomic_write_text

    atomic_write_text(json.dumps(summary, indent=1) + "\n", out / "summary.json")
    return summary


def _label(meta: dict) -> str:
    g = meta.get("group")
    return f"{meta.get('model')}({g})" if g else str(meta.get("model"))
