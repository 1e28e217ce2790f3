"""The plots of the tasks (matplotlib, Agg backend).

* :func:`plot_trajectories` -- predicted vs true particle paths (paper Fig. 6);
* :func:`plot_conservation` -- rollout error, energy error and momentum drifts over
  time for one or several models (Fig. 7);
* :func:`plot_study`        -- test MSE vs training-set size (Fig. 8);
* :func:`plot_learning_curves` -- training loss / validation metric per epoch of one or several runs;
* :func:`plot_confusion`     -- a classifier's confusion matrix (RotMNIST);
* :func:`plot_predicted_vs_true` -- a regressor's test predictions against the truth (QM9).

Files are written atomically (:func:`lieconv_runtime.io.atomic_write`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

import matplotlib

from lieconv_runtime.io import atomic_write

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402

__all__ = ["plot_conservation", "plot_confusion", "plot_learning_curves", "plot_predicted_vs_true", "plot_study",
           "plot_trajectories"]

_FLOOR = 1e-17  # exact zeros on log axes
_TITLES = {
    "rollout_rel_error": "state error |ẑ−z|/(|ẑ|+|z|)",
    "energy_rel_error": "energy error |H(ẑ_t)−H_0|/|H_0|",
    "linear_momentum_drift": "linear momentum drift |ΣP_t−ΣP_0|/|ΣP_0|",
    "angular_momentum_drift": "angular momentum drift |L_t−L_0|/|L_0|",
}


def _save(fig, path) -> Path:
    path = Path(path)
    try:
        fmt = path.suffix[1:].lower() or "png"
        atomic_write(path, lambda f: fig.savefig(f, format=fmt, dpi=110, bbox_inches="tight"))
    finally:
        plt.close(fig)
    return path


def plot_trajectories(ts, true, pred, n_particles: int, dim: int, path, title: str = "", t_max: float | None = None):
    """Particle paths in the (x, y) plane: true solid, predicted dashed, one panel per system.

    ``ts (T,)``, ``true, pred (S, T, 2ND)`` numpy arrays; ``t_max`` cuts the time axis
    (default: the first 20 % of the rollout, where paths are still readable).
    """
    ts = np.asarray(ts)
    t_max = ts[0] + 0.2 * (ts[-1] - ts[0]) if t_max is None else t_max
    keep = ts <= t_max + 1e-12
    n_sys = true.shape[0]
    fig, axes = plt.subplots(1, n_sys, figsize=(3.2 * n_sys, 3.3), squeeze=False)
    colors = plt.cm.tab10(np.arange(n_particles) % 10)
    nd = n_particles * dim
    for s, ax in enumerate(axes[0]):
        for z, style in ((true[s], "-"), (pred[s], "--")):
            q = z[keep, :nd].reshape(-1, n_particles, dim)
            for i in range(n_particles):
                ax.plot(q[:, i, 0], q[:, i, 1], style, color=colors[i], lw=1.0 if style == "-" else 1.4)
        q0 = true[s, 0, :nd].reshape(n_particles, dim)
        ax.scatter(q0[:, 0], q0[:, 1], c=colors, s=18, zorder=3)
        ax.set_aspect("equal", adjustable="datalim")
        ax.set_title(f"test system {s}", fontsize=9)
        ax.set_xlabel("position x", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0][0].set_ylabel("position y", fontsize=8)
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color="k", ls="-", lw=1.0, label="true path"),
               Line2D([], [], color="k", ls="--", lw=1.4, label="model rollout"),
               Line2D([], [], color="k", ls="", marker="o", ms=4, label="initial position")]
    handles += [Line2D([], [], color=colors[i], lw=2, label=f"particle {i + 1}") for i in range(n_particles)]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 9), fontsize=7, frameon=False,
               bbox_to_anchor=(0.5, -0.06))
    fig.suptitle(f"{title}: true (solid) vs predicted (dashed), t ≤ {ts[keep][-1]:.3g}", fontsize=10)
    return _save(fig, path)


def plot_conservation(curves: dict, path, band: bool = True):
    """Four log-scale panels over time; ``curves = {label: {"ts": (T,), metric: (K, T)}}``.

    Lines are means over trajectories (as in ``summary.json``); the band is the
    interquartile range (25-75 %) over trajectories, as the caption says. ``t = 0``
    (all metrics exactly 0) is left out of the log axes.
    """
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.6))
    for label, c in curves.items():
        ts = np.asarray(c["ts"])[1:]
        for ax, key in zip(axes, _TITLES):
            y = np.asarray(c[key], dtype=float)[:, 1:]
            if np.isnan(y).all():
                continue
            line = ax.plot(ts, np.maximum(np.nanmean(y, 0), _FLOOR), label=label)[0]
            if band and y.shape[0] > 1:
                lo, hi = np.nanpercentile(y, [25, 75], axis=0)
                ax.fill_between(ts, np.maximum(lo, _FLOOR), np.maximum(hi, _FLOOR), color=line.get_color(), alpha=0.15)
    for ax, key in zip(axes, _TITLES):
        ax.set_yscale("log")
        ax.set_xlabel("t")
        ax.set_title(_TITLES[key], fontsize=9)
        ax.grid(alpha=0.3, which="both", lw=0.4)
    axes[0].legend(fontsize=8)
    axes[0].set_ylabel("relative error / drift (log)")
    caption = "lines: mean over test trajectories"
    if band:
        caption += "; shaded band: interquartile range (25-75 %) over trajectories"
    fig.text(0.5, -0.04, caption, ha="center", fontsize=8)
    return _save(fig, path)


def plot_study(rows: list[dict], path, title: str = "Spring dynamics: test MSE vs training-set size",
               reference: float | None = None):
    """Log-log test MSE vs ``n_train``: mean over repeats with min-max bars, one line per label.

    ``rows``: dicts with ``label``, ``n_train``, ``test_mse``; ``reference``: a
    horizontal dashed line (e.g. the MSE of predicting ``z(t) = z0``).
    """
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    labels = sorted({r["label"] for r in rows})
    for label in labels:
        by_n: dict[int, list[float]] = {}
        for r in rows:
            if r["label"] == label and r.get("test_mse") is not None:
                by_n.setdefault(int(r["n_train"]), []).append(float(r["test_mse"]))
        if not by_n:
            continue
        ns = sorted(by_n)
        mean = np.array([np.mean(by_n[n]) for n in ns])
        lo = mean - np.array([np.min(by_n[n]) for n in ns])
        hi = np.array([np.max(by_n[n]) for n in ns]) - mean
        ax.errorbar(ns, mean, yerr=[lo, hi], marker="o", ms=4, capsize=3, label=label)
    if reference is not None:
        ax.axhline(reference, color="gray", ls="--", lw=1, label="z(t) = z0")
    ax.set_xscale("log")
    ax.set_yscale("log")
    sizes = sorted({int(r["n_train"]) for r in rows})
    ax.set_xticks(sizes, [str(n) for n in sizes])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("training trajectories (n_train)")
    ax.set_ylabel("test MSE")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, which="both", lw=0.4)
    ax.legend(fontsize=8)
    return _save(fig, path)


def _curve_keys(records: list[dict]) -> tuple[str | None, str | None]:
    """The training-loss key (``train_*``) and the validation key of the primary metric (``val_*``
    named by ``best_val_*``) of metrics.jsonl records."""
    keys = {k for r in records for k in r}
    train = next((k for k in sorted(keys) if k.startswith("train_")), None)
    best = next((k for k in sorted(keys) if k.startswith("best_val_")), None)
    val = best.replace("best_", "", 1) if best else next((k for k in sorted(keys) if k.startswith("val_")), None)
    return train, val


def plot_learning_curves(runs: dict, path, title: str = "Learning curves"):
    """Training loss (solid) and the validation metric (dashed, markers) per epoch, log scale, one
    colour per run.  ``runs = {label: [metrics.jsonl record, ...]}``; the keys are read from the
    records (``train_<loss>``, ``val_<primary metric>``); ``None`` values (epochs without validation)
    are skipped."""
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    names = set()
    for i, (label, records) in enumerate(runs.items()):
        color = plt.cm.tab10(i % 10)
        for key, style in zip(_curve_keys(records), (dict(ls="-"), dict(ls="--", marker="o", ms=3))):
            if key is None:
                continue
            pts = [(r["epoch"], r[key]) for r in records if isinstance(r.get(key), (int, float)) and r[key] > 0]
            if pts:
                names.add(key)
                ax.plot(*zip(*pts), color=color, label=f"{label} {key}", **style)
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel(", ".join(sorted(names)) + " (log)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, which="both", lw=0.4)
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_confusion(matrix, path, title: str = "Confusion matrix (test)", labels=None):
    """Row-normalised confusion matrix ``matrix (C, C)`` (rows: true class, columns: predicted), with counts."""
    m = np.asarray(matrix, dtype=float)
    frac = m / np.clip(m.sum(1, keepdims=True), 1, None)
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    im = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    n = m.shape[0]
    labels = [str(i) for i in range(n)] if labels is None else labels
    ax.set_xticks(range(n), labels)
    ax.set_yticks(range(n), labels)
    for i in range(n):
        for j in range(n):
            if m[i, j]:
                ax.text(j, i, f"{int(m[i, j])}", ha="center", va="center", fontsize=6,
                        color="white" if frac[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.046, label="fraction of the true class")
    return _save(fig, path)


def plot_predicted_vs_true(pred, true, path, quantity: str, unit: str, title: str = ""):
    """Scatter of predicted against true values (test set) with the diagonal; MAE in the legend."""
    pred, true = np.asarray(pred, dtype=float), np.asarray(true, dtype=float)
    fig, ax = plt.subplots(figsize=(4.8, 4.6))
    ax.scatter(true, pred, s=3, alpha=0.4, lw=0, label=f"MAE {np.mean(np.abs(pred - true)):.4g} {unit}")
    lo, hi = float(min(true.min(), pred.min())), float(max(true.max(), pred.max()))
    ax.plot([lo, hi], [lo, hi], color="gray", lw=1, ls="--", label="predicted = true")
    ax.set_xlabel(f"true {quantity} ({unit})")
    ax.set_ylabel(f"predicted {quantity} ({unit})")
    ax.set_title(title or f"{quantity}: predicted vs true (test)", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, lw=0.4)
    return _save(fig, path)
