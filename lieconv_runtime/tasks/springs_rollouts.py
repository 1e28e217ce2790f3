"""Evaluation of spring-dynamics models (the springs task): test MSE on chunks and long-rollout metrics.

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

Bounded cost. A batch of ``ROLLOUT_BATCH = 25`` trajectories gets a budget of
``max_steps`` attempted dopri5 steps (accepted or rejected), default
``4 (T - 1)`` for a data grid of ``T`` times (1996 for T = 500). torchdiffeq's own
``max_num_steps`` restarts at every output time, so the budget is counted over the
whole rollout (``callback_step``); a batch whose pace projects more than the budget
(checked from 2.5 % of it on) stops early. A batch over budget, with a step underflow or
a non-finite state is redone with RK4 on the data grid (batches of ``RK4_BATCH =
100``); ``summary.json`` counts those trajectories (``rk4_fallback_rollouts``).
Worst case per trajectory: ``2 + 6 max_steps`` model evaluations for dopri5 (2 to
pick the first step, then 6 per attempted step: 7 stages, the first reused) plus
``4 (T - 1)`` for RK4, i.e. ``28 (T - 1) + 2`` = 13,974 at the defaults.

Why these numbers (measured on a shared 2-core CPU): the exact spring Hamiltonian takes
1000-1750 attempted steps per batch at rtol 1e-8 over the default grid, and the main
job's HLieResNet(T2) (``lieconv run``) 1067 for its 10 rollouts, so ``4 (T - 1)`` leaves
good models on dopri5. HLieResNet(SO2) after 2 epochs on 50 systems gets 70 % of its
steps rejected (a field that is not smooth) and, since the step is shared, needs about
30-270 steps per trajectory *in* the batch: a batch of 25 is on pace for ~4000 steps
and leaves after ~50 (100 rollouts: 3.3 min instead of well over 15). Batches of 25
cost ~1.1 ms of model time per trajectory and evaluation (vs 0.8 ms at 50 and 1.9 ms
at 10), and one bad trajectory sends 24 others to RK4, not 49.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from torchdiffeq import odeint

from lieconv_runtime.data.springs import SpringTrajectories, angular_momentum, energy, split_state
from lieconv_runtime.io import atomic_write, atomic_write_text
from lieconv_runtime.models.hamiltonian import predict_chunks

__all__ = [
    "METRICS",
    "METRIC_DEFINITIONS",
    "StepBudgetExceeded",
    "conservation_curves",
    "default_max_steps",
    "evaluate_model",
    "galilean_boost",
    "integrate",
    "rollout_metrics",
    "test_mse",
    "worst_case_evaluations",
]

METRICS = ("rollout_rel_error", "energy_rel_error", "linear_momentum_drift", "angular_momentum_drift")


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


ADAPTIVE = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")
#: Default ``max_steps`` = this many attempted steps per interval of the data grid (see module doc).
STEPS_PER_GRID_STEP = 4
#: Trajectories per dopri5 batch (see module doc) and per batch of the RK4 fallback.
ROLLOUT_BATCH = 25
RK4_BATCH = 100


def default_max_steps(n_times: int) -> int:
    """Default step budget of an adaptive rollout batch: ``4 (n_times - 1)`` attempted steps."""
    return STEPS_PER_GRID_STEP * max(n_times - 1, 1)


def worst_case_evaluations(n_times: int, max_steps: int | None = None) -> int:
    """Model evaluations per trajectory at most: dopri5 ``2 + 6 max_steps``, then RK4 ``4 (n_times - 1)``."""
    s = default_max_steps(n_times) if max_steps is None else max_steps
    return 2 + 6 * s + 4 * (n_times - 1)


class StepBudgetExceeded(RuntimeError):
    """An adaptive rollout used (or is on pace to use) more than its step budget."""


class _Field(torch.nn.Module):
    """``dz/dt = model.derivative(z, m, k)``, counting its evaluations."""

    def __init__(self, model, m, k):
        super().__init__()
        self.model, self.m, self.k = model, m, k
        self.evaluations = 0

    def forward(self, t, z):
        self.evaluations += 1
        return self.model.derivative(z, self.m, self.k)


class _BudgetField(_Field):
    """:class:`_Field` for adaptive solvers: polices a step budget, reports accepted progress.

    torchdiffeq's ``max_num_steps`` restarts at every output time, so it bounds nothing over a
    500-point grid; ``callback_step`` sees every attempted step (accepted or rejected) instead.
    """

    def __init__(self, model, m, k, ts, max_steps=None, on_accept=None):
        super().__init__(model, m, k)
        self.t0, self.span = float(ts[0]), float(ts[-1] - ts[0]) or 1.0
        self.max_steps, self.on_accept = max_steps, on_accept
        self.steps = 0

    def callback_step(self, t0, y0, dt):
        self.steps += 1
        if self.max_steps is None:
            return
        done = max((float(t0) - self.t0) / self.span, 1e-12)
        if self.steps > self.max_steps:
            raise StepBudgetExceeded(f"more than {self.max_steps} steps (at t = {float(t0):.4g})")
        # on pace to exceed the budget (checked from 2.5 % of it on): stop now instead of spending it all
        if self.steps >= max(self.max_steps // 40, 10) and self.steps > self.max_steps * done:
            raise StepBudgetExceeded(f"{self.steps} steps reached only t = {float(t0):.4g}: on pace for "
                                     f"{self.steps / done:.0f} > {self.max_steps}")

    def callback_accept_step(self, t0, y0, dt):
        if self.on_accept is not None:
            self.on_accept(min((float(t0 + dt) - self.t0) / self.span, 1.0))


def integrate(model, z0, m, k, ts, solver: str = "dopri5", rtol: float = 1e-8, atol: float = 1e-10,
              step_size: float | None = None, max_steps: int | None = None, field: _Field | None = None
              ) -> torch.Tensor:
    """Roll ``model`` out from ``z0 (bs, 2ND)`` over ``ts (T,)``: ``(bs, T, 2ND)``, no grad.

    ``rk4``: fixed steps on the ``ts`` grid (or ``step_size``); ``dopri5``/``dopri8``:
    adaptive with per-trajectory error control, at most ``max_steps`` attempted steps
    (accepted or rejected) over the whole of ``ts`` (:class:`StepBudgetExceeded`, also
    raised early when the pace so far projects more). Underflow of the step or a
    non-finite state raises ``AssertionError`` (torchdiffeq).
    """
    if field is None:
        field = _BudgetField(model, m, k, ts, max_steps) if solver in ADAPTIVE else _Field(model, m, k)
    if solver in ADAPTIVE:
        options = {"norm": _per_trajectory_rms}
        if field.max_steps is not None:
            options["max_num_steps"] = field.max_steps  # per output time in torchdiffeq: a backstop only
    else:
        options = {"step_size": step_size} if step_size else None
    with torch.no_grad():
        zs = odeint(field, z0, ts.to(z0), method=solver, rtol=rtol, atol=atol, options=options)
    return zs.transpose(0, 1)


def _rk4_in_segments(model, z0, m, k, ts, on_segment, segment: int = 25) -> tuple[torch.Tensor, int]:
    """RK4 on the ``ts`` grid (same steps as one call), ``segment`` grid steps per call for progress."""
    field, out, z = _Field(model, m, k), [z0[:, None]], z0
    for a in range(0, len(ts) - 1, segment):
        b = min(a + segment, len(ts) - 1)
        part = integrate(model, z, m, k, ts[a:b + 1], "rk4", field=field)
        out.append(part[:, 1:])
        z = part[:, -1]
        on_segment((b + 1) / len(ts))
    return torch.cat(out, dim=1), field.evaluations


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


def _reason(e: BaseException) -> str:
    if isinstance(e, StepBudgetExceeded):
        return "step_budget"
    text = str(e)
    if "underflow" in text:
        return "step_underflow"
    if "non-finite" in text or "nan" in text.lower():
        return "non_finite"
    return type(e).__name__


def rollout_metrics(model, traj: SpringTrajectories, *, solver: str = "dopri5", rtol: float = 1e-8,
                    atol: float = 1e-10, step_size: float | None = None, batch_size: int = ROLLOUT_BATCH,
                    dtype: torch.dtype = torch.float64, max_steps: int | None = None,
                    progress: bool = False) -> dict:
    """Roll out every trajectory of ``traj`` from its first state over its full time grid.

    Adaptive solvers run ``batch_size`` trajectories at a time with a budget of ``max_steps``
    attempted steps per batch (default :func:`default_max_steps`); a batch over budget, with
    a step underflow or a non-finite state is redone with RK4 on the data grid (in batches
    of :data:`RK4_BATCH`, after the adaptive ones). ``progress``: a tqdm bar over trajectories.

    Returns ``{"ts": (T,), "pred": (K, T, 2ND), <metric>: (K, T) ...}`` (numpy) plus
    ``"fallback_rollouts"`` (trajectories redone with RK4), ``"fallback_batches"``,
    ``"fallback_reasons"`` (trajectories per reason), ``"evaluations"`` (batched model
    calls), ``"max_steps"`` and ``"nonfinite_rollouts"``.
    """
    from tqdm.auto import tqdm

    model = model.to(dtype).eval()
    dev = next((q.device for q in model.parameters()), torch.device("cpu"))  # roll out where the model is
    ts = traj.ts.to(dtype=dtype, device=dev)
    n, n_t = len(traj), len(ts)
    adaptive = solver in ADAPTIVE
    max_steps = (default_max_steps(n_t) if max_steps is None else int(max_steps)) if adaptive else None
    z0s, ms, ks = (x.to(dtype=dtype, device=dev) for x in (traj.zs[:, 0], traj.m, traj.k))
    preds: list = [None] * n
    redo, reasons, evaluations, fallback_batches = [], {}, 0, 0
    with tqdm(total=n, desc="rollouts", unit="traj", disable=not progress) as bar:
        done = 0.0

        def show(frac, size):  # trajectories done so far, fractions of the running batch included
            bar.update(round(done + size * frac, 2) - bar.n)

        if adaptive:
            bar.set_postfix(rk4=0)
        for s in range(0, n, batch_size):
            idx = list(range(s, min(s + batch_size, n)))
            field = (_BudgetField(model, ms[idx], ks[idx], ts, max_steps, on_accept=lambda f, size=len(idx): show(f, size))
                     if adaptive else _Field(model, ms[idx], ks[idx]))
            try:
                pred = integrate(model, z0s[idx], ms[idx], ks[idx], ts, solver, rtol, atol, step_size, field=field)
                if adaptive and not torch.isfinite(pred).all():
                    raise AssertionError("non-finite state")
            except (AssertionError, RuntimeError) as e:  # budget / step underflow / non-finite
                if not adaptive:
                    raise
                redo += idx
                fallback_batches += 1
                reasons[_reason(e)] = reasons.get(_reason(e), 0) + len(idx)
                bar.set_postfix(rk4=len(redo))
                show(0, 0)
            else:
                for j, i in enumerate(idx):
                    preds[i] = pred[j]
                done += len(idx)
                show(0, 0)
            evaluations += field.evaluations
        for s in range(0, len(redo), RK4_BATCH):
            idx = redo[s:s + RK4_BATCH]
            pred, evals = _rk4_in_segments(model, z0s[idx], ms[idx], ks[idx], ts, lambda f: show(f, len(idx)))
            evaluations += evals
            for j, i in enumerate(idx):
                preds[i] = pred[j]
            done += len(idx)
            show(0, 0)
    pred = torch.stack(preds).cpu()
    curves = conservation_curves(pred, traj.zs, traj.m, traj.k)
    return {"ts": ts.double().cpu().numpy(), "pred": pred.double().numpy(), "fallback_rollouts": len(redo),
            "fallback_batches": fallback_batches, "fallback_reasons": reasons, "evaluations": evaluations,
            "max_steps": max_steps, "nonfinite_rollouts": int((~torch.isfinite(pred).flatten(1).all(1)).sum()),
            **curves}


def _num(x):
    """JSON-safe float: ``None`` for NaN/inf (e.g. a diverged rollout)."""
    x = float(x)
    return x if math.isfinite(x) else None


def _at_end(curve: np.ndarray, stat=np.mean):
    return _num(stat(curve[:, -1]))


def _at_time(curve: np.ndarray, ts: np.ndarray, t: float, stat=np.mean):
    """stat over trajectories of ``curve`` (K, T) at time ts[0] + t, linearly interpolated; None past the end."""
    rel = ts - ts[0]
    if t > rel[-1] + 1e-12:
        return None
    return _num(stat([np.interp(t, rel, row) for row in curve]))


#: One-sentence definitions of the summary's metrics (copied into ``summary.json`` as ``"metrics"``).
METRIC_DEFINITIONS = {
    "test_mse": "Mean squared error of the predicted states over the test chunks (RK4 on the chunk grid, "
                "all state entries, both positions and momenta).",
    "rollout_rel_error": "Relative state error |z_pred - z_true| / (|z_pred| + |z_true|) at the last time of "
                         "the long test rollouts (0 = exact, 1 = unrelated), mean over trajectories.",
    "rollout_rel_error_t1": "The same relative state error at t = 1 (linearly interpolated on the rollout's "
                            "time grid), mean over trajectories; null when the rollouts are shorter.",
    "energy_rel_error": "Relative error |H(z_pred(t)) - H(z_true(0))| / |H(z_true(0))| of the true spring "
                        "energy at the last time, mean over trajectories.",
    "linear_momentum_drift": "Change of the predicted total momentum since t = 0 relative to the true total "
                             "momentum, |P(t) - P(0)| / |P_true(0)|, at the last time (null when the test "
                             "systems have no net momentum).",
    "angular_momentum_drift": "Change of the predicted total angular momentum about the origin since t = 0 "
                              "relative to the true one, |L(t) - L(0)| / |L_true(0)|, at the last time.",
    "medians_at_end": "The same rollout metrics as medians over trajectories instead of means.",
    "rk4_fallback_rollouts": "Test trajectories whose adaptive rollout went over the step budget (max_steps "
                             "per batch), underflowed or became non-finite, and were redone with RK4 on the "
                             "data grid.",
}


def evaluate_model(model, splits, *, out_dir, meta: dict, n_rollouts: int = 100, solver: str = "dopri5",
                   rtol: float = 1e-8, atol: float = 1e-10, step_size: float | None = None,
                   net_momentum_std: float | None = None, rollout_dtype: torch.dtype = torch.float64,
                   batch_size: int = ROLLOUT_BATCH, plots: bool = True, boost_seed: int = 0,
                   max_steps: int | None = None, progress: bool = False, notify=None) -> dict:
    """Test MSE + rollout metrics; writes ``summary.json``, ``curves.npz`` and PNG plots to ``out_dir``.

    ``meta`` (model, group, n_train, seed, ...) is copied into the summary.
    ``net_momentum_std``: ``None`` -> ``0.6 sqrt(N)``. ``max_steps``: step budget of an
    adaptive rollout batch (default :func:`default_max_steps`, see :func:`rollout_metrics`).
    ``notify(text)`` is told each phase; ``progress`` shows a tqdm bar over the rollouts.
    """
    say = notify or (lambda text: None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    param = next(iter(model.parameters()), None)
    say(f"eval: test MSE on {len(splits.test)} test chunks")
    mse = test_mse(model, splits.test.to(dtype=param.dtype if param is not None else splits.test.z0.dtype,
                                         device=param.device if param is not None else None))
    t_mse = time.time() - t0
    long = splits.test_long.subset(torch.arange(min(n_rollouts, len(splits.test_long))))
    std = 0.6 * math.sqrt(long.n_particles) if net_momentum_std is None else float(net_momentum_std)
    long = galilean_boost(long, std, boost_seed)
    n_t = len(long.ts)
    if solver in ADAPTIVE:
        budget = default_max_steps(n_t) if max_steps is None else max_steps
        how = (f"{solver} rtol {rtol:g} atol {atol:g}, batches of {batch_size}, at most {budget} steps per batch, "
               f"else RK4 on the data grid; at most {worst_case_evaluations(n_t, budget):,} model evaluations "
               f"per trajectory")
    else:
        how = f"{solver}, fixed steps {'of ' + format(step_size, 'g') if step_size else 'on the data grid'}"
    say(f"eval: rolling out {len(long)} test trajectories of {n_t} time steps ({how})")
    t1 = time.time()
    r = rollout_metrics(model, long, solver=solver, rtol=rtol, atol=atol, step_size=step_size,
                        batch_size=batch_size, dtype=rollout_dtype, max_steps=max_steps, progress=progress)
    t_roll = time.time() - t1
    if r["fallback_rollouts"]:
        say(f"eval: {r['fallback_rollouts']} of {len(long)} rollouts were redone with RK4 on the data grid "
            f"({', '.join(f'{k}: {v}' for k, v in r['fallback_reasons'].items())})")
    summary = {
        "test_mse": _num(mse),
        **{key: _at_end(r[key]) for key in METRICS},
        "rollout_rel_error_t1": _at_time(r["rollout_rel_error"], r["ts"], 1.0),
        **meta,
        "n_test_chunks": len(splits.test),
        "n_rollouts": len(long),
        "rollout_t_end": float(r["ts"][-1] - r["ts"][0]),
        "solver": solver, "rtol": rtol if solver != "rk4" else None, "atol": atol if solver != "rk4" else None,
        "step_size": step_size if solver == "rk4" else None,
        "max_steps": r["max_steps"],
        "rollout_batch_size": batch_size,
        "rollout_dtype": str(rollout_dtype).replace("torch.", ""),
        "net_momentum_std": std,
        "rk4_fallback_rollouts": r["fallback_rollouts"],
        "rk4_fallback_reasons": r["fallback_reasons"],
        "solver_fallback_batches": r["fallback_batches"],
        "nonfinite_rollouts": r["nonfinite_rollouts"],
        "rollout_model_evaluations": r["evaluations"],
        "medians_at_end": {key: _at_end(r[key], np.median) for key in METRICS},
        "test_mse_time_s": round(t_mse, 3),
        "rollout_time_s": round(t_roll, 3),
        "curves_file": "curves.npz",
        "metrics": METRIC_DEFINITIONS,
    }
    n_show = min(4, len(long))
    curves = {"ts": r["ts"], **{key: r[key] for key in METRICS}, "pred_examples": r["pred"][:n_show],
              "true_examples": long.zs[:n_show].double().numpy()}
    atomic_write(out / "curves.npz", lambda f: np.savez_compressed(f, **curves))
    files = ["summary.json", "curves.npz"]
    if plots:
        from lieconv_runtime.train import plots as P

        say(f"eval: writing plots to {out}")
        label = meta.get("label") or _label(meta)
        P.plot_trajectories(r["ts"], long.zs[:n_show].double().numpy(), r["pred"][:n_show],
                            long.n_particles, long.dim, out / "trajectories.png", title=label)
        P.plot_conservation({label: {"ts": r["ts"], **{key: r[key] for key in METRICS}}}, out / "conservation.png")
        summary["plots"] = ["trajectories.png", "conservation.png"]
        files += summary["plots"]
    summary["files"] = files
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1) + "\n")
    return summary


def _label(meta: dict) -> str:
    g = meta.get("group")
    return f"{meta.get('model')}({g})" if g else str(meta.get("model"))
