"""``lieconv study springs``: test MSE vs training-set size (paper Fig. 8).

Every (model, group, n_train, repeat) is one ``lieconv train springs`` run in
``<out>/runs/<label>/n<N>/seed<r>`` (resumable: finished runs are reused, an
interrupted one continues from its checkpoint). All runs share one data set, so
validation and test systems are the same for every size. Outputs in ``<out>``:
``results.jsonl`` (one row per run), ``table.md`` (mean ± std over repeats),
``study.png`` and ``study.json``.

Runs at the largest size are also rolled out over the long test trajectories (dopri5, float64,
``n_rollouts`` of them, net momentum added by a Galilean boost as in ``lieconv eval``): their
energy error and momentum drifts go to ``rollouts.md`` and ``conservation.png`` (paper Fig. 7).

Presets (epochs ``E(n) = max(1, floor(sqrt(1e7 / n) * scale))``, the paper's rule at scale 1,
raised where needed to give at least ``min_steps`` optimizer steps):

* ``cpu``:  HLieResNet over T2, SO2 and Trivial2 (width 384, 4 blocks: the paper's network) and
  the four baselines; n_train 25/100/400, 1 repeat (``--repeats 2`` doubles the time), scale 1/8
  with at least 60 steps (79/60/30 epochs: at n = 400 the 30 epochs at which the original was
  measured), about 15 validations per run, val 100, test 500, 10 rollouts (dopri5 rtol 1e-5,
  atol 1e-8; a rollout batch over 2000 attempted steps is redone with RK4 on the data grid), 2 parallel jobs
  of 1 thread, largest training sets first.  At scale 1/8 alone, n = 400 would get 38 steps and
  the lr-1e-3 HLieResNet would be compared undertrained.
* ``full``: the paper: n_train 10 ... 96000, 3 repeats, scale 1, val 200, test 2000, 100 rollouts.
  Needs 98,200 systems (~9.4 GB float64 cache) and a GPU-class budget.

Entries ``MODEL:GROUP`` whose model is not registered are skipped with a note.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["PRESETS", "Preset", "epochs_for", "run_study"]


@dataclass(frozen=True)
class Preset:
    models: tuple
    n_train: tuple
    repeats: int
    epoch_scale: float
    n_val: int
    n_test: int
    jobs: int = 1
    batch_size: int = 200
    n_rollouts: int = 100
    min_steps: int = 0
    validations: int | None = None  # about this many validations per run (None: every epoch)
    # evaluate_model's solver options for the rollouts (solver, rtol, atol, step_size, max_steps)
    rollout: dict = field(default_factory=lambda: {"solver": "dopri5", "rtol": 1e-8, "atol": 1e-10})


PRESETS = {
    "cpu": Preset(("HLieResNet:T2", "HLieResNet:SO2", "HLieResNet:Trivial2", "HFC", "FC", "OGN", "HOGN"),
                  (25, 100, 400), 1, 1 / 8, 100, 500, jobs=2, n_rollouts=10, min_steps=60, validations=15,
                  rollout={"solver": "dopri5", "rtol": 1e-5, "atol": 1e-8, "max_steps": 2000}),
    "full": Preset(("HLieResNet:T2", "HLieResNet:SO2", "HLieResNet:SE2", "HLieResNet:Trivial2", "HFC", "FC", "OGN",
                    "HOGN"), (10, 25, 50, 100, 400, 1000, 3000, 10000, 30000, 96000), 3, 1.0, 200, 2000),
}


def epochs_for(n_train: int, scale: float = 1.0, min_steps: int = 0, batch_size: int = 200) -> int:
    """Paper rule ``floor(sqrt(1e7 / n))``, scaled, and at least ``min_steps`` optimizer steps."""
    epochs = max(1, int(math.floor(math.sqrt(1e7 / n_train) * scale)))
    return max(epochs, math.ceil(min_steps / math.ceil(n_train / batch_size)))


def _epochs(p: Preset, n_train: int) -> int:
    return epochs_for(n_train, p.epoch_scale, p.min_steps, p.batch_size)


def _val_every(p: Preset, n_train: int) -> int:
    return max(1, round(_epochs(p, n_train) / p.validations)) if p.validations else 1


def _parse_entries(entries, strict: bool) -> list[tuple[str, str | None]]:
    """``"MODEL[:GROUP]"`` -> ``(canonical name, group)``; unknown models raise if ``strict`` else are skipped."""
    from lieconv_runtime.models.registry import RegistryError, check_group, get_spec

    out = []
    for entry in entries:
        name, _, group = entry.partition(":")
        try:
            spec = get_spec(name)
        except RegistryError:
            if strict:
                raise
            print(f"lieconv study: note: {entry} skipped ({name} is not registered yet)", file=sys.stderr)
            continue
        if group and not spec.needs_group:
            raise RegistryError(f"model {spec.name} takes no group: write {spec.name}, not {entry}")
        if group:
            check_group(group)
        elif spec.needs_group:
            raise RegistryError(f"model {spec.name} needs a group: write {spec.name}:GROUP (e.g. {spec.name}:T2)")
        out.append((spec.name, group or None))
    return out


def _label(model: str, group: str | None) -> str:
    return f"{model}({group})" if group else model


def _run_args(preset: Preset, model, group, n, seed, n_systems) -> dict:
    from lieconv_runtime.models.registry import paper_lr

    val_every = _val_every(preset, n)
    return {
        "task": "springs", "model": model, "group": group, "model_kw": {}, "n_particles": 6, "dim": 2,
        "n_train": n, "dtype": "float32", "epochs": _epochs(preset, n),
        "lr": paper_lr(model, group), "batch_size": preset.batch_size, "seed": seed, "patience": None,
        **({"val_every": val_every} if val_every > 1 else {}),
        "data": {"n_systems": n_systems, "n_val": preset.n_val, "n_test": preset.n_test, "n_times": 500,
                 "t_end": 5.0, "seed": 0, "chunk_len": 5},
    }


def run_study(preset: str = "cpu", *, models=None, out_dir=None, data_dir=None, n_train=None, repeats=None,
              jobs: int | None = None, threads: int = 1, progress: bool = True, dry_run: bool = False) -> dict:
    """Run (or resume) the study; returns the ``study.json`` dict.

    ``jobs``: runs trained in parallel processes (default: the preset's), each with
    ``threads`` torch threads. Results do not depend on ``jobs``.
    """
    from lieconv_runtime.io import atomic_write_text

    p = PRESETS[preset]
    entries = _parse_entries(models or p.models, strict=models is not None)
    sizes = tuple(sorted(n_train or p.n_train))
    reps = repeats or p.repeats
    jobs = jobs or p.jobs
    out = Path(out_dir or f"runs/springs/study-{preset}")
    n_systems = max(sizes) + p.n_val + p.n_test
    plan = [(m, g, n, r) for m, g in entries for n in sizes for r in range(reps)]
    if dry_run:
        return {"preset": preset, "n_systems": n_systems, "jobs": jobs, "runs": [
            {"label": _label(m, g), "n_train": n, "seed": r, "epochs": _epochs(p, n)}
            for m, g, n, r in plan]}
    t0 = time.time()
    zero_mse = _zero_motion_mse(p, n_systems, data_dir, progress)  # also generates the shared data set once
    tasks = []
    for model, group, n, seed in plan:
        label = _label(model, group)
        run_dir = out / "runs" / label.replace("(", "-").replace(")", "") / f"n{n}" / f"seed{seed}"
        rollouts = (p.n_rollouts, p.rollout) if n == max(sizes) else None
        tasks.append((label, _run_args(p, model, group, n, seed, n_systems), run_dir, data_dir,
                      progress and jobs == 1, threads, rollouts))
    # largest training sets first (they also roll out), so the parallel jobs finish together
    order = sorted(range(len(tasks)), key=lambda i: -tasks[i][1]["n_train"])
    done, rows = {}, []
    for k, (i, summary) in enumerate(_run_tasks(jobs, tasks, order)):
        label, run = tasks[i][0], tasks[i][1]
        print(f"[{k + 1}/{len(tasks)}] {label} n_train={run['n_train']} seed={run['seed']}: "
              f"test MSE {summary['test_mse']}", file=sys.stderr)
        done[i] = {"label": label, "model": run["model"], "group": run["group"], "n_train": run["n_train"],
                   "seed": run["seed"], "epochs": summary["epochs_completed"], "test_mse": summary["test_mse"],
                   "best_val_mse": summary["best_val_mse"], "epoch_time_s": summary.get("epoch_time_s_mean"),
                   "wall_time_s": summary["wall_time_s"],
                   **{key: summary["rollouts"].get(key) for key in ROLLOUT_KEYS if "rollouts" in summary}}
        rows = [done[j] for j in sorted(done)]  # plan order
        atomic_write_text(out / "results.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    result = {"preset": preset, "n_systems": n_systems, "sizes": list(sizes), "repeats": reps, "jobs": jobs,
              "zero_motion_test_mse": zero_mse, "table": "table.md", "plot": "study.png",
              "wall_time_s": round(time.time() - t0, 1), "rows": rows}
    if rows:
        from lieconv_runtime.train.plots import plot_study

        plot_study(rows, out / "study.png", reference=zero_mse)
        atomic_write_text(out / "table.md", markdown_table(rows, sizes, zero_mse))
        evaluated = [(t[0], t[2]) for t, r in zip(tasks, rows) if "energy_rel_error" in r]
        if evaluated:
            atomic_write_text(out / "rollouts.md", rollout_table(rows, max(sizes)))
            _conservation_plot(evaluated, out / "conservation.png")
            result.update(rollout_table="rollouts.md", conservation_plot="conservation.png")
    atomic_write_text(out / "study.json", json.dumps(result, indent=1) + "\n")
    return result


def _train_one(task) -> dict:
    """One study run (module level so worker processes can run it): its training summary."""
    import torch

    from lieconv_runtime.cli import train_springs

    label, run, run_dir, data_dir, progress, threads, n_rollouts = task
    torch.set_num_threads(threads)
    _set_aside_stale(run_dir, run)
    summary = _finished_summary(run_dir, run)
    splits = None
    if summary is None:
        summary, _, splits = train_springs(run, run_dir, data_dir=data_dir, resume=True, progress=progress)
    if n_rollouts:
        summary = dict(summary, rollouts=_rollouts(label, run, run_dir, data_dir, *n_rollouts, splits=splits))
    return summary


def _rollouts(label, run, run_dir: Path, data_dir, n_rollouts: int, options: dict, splits=None) -> dict:
    """Rollout summary of a trained run (``<run_dir>/eval/summary.json``; reused when it exists)."""
    from lieconv_runtime.train.evaluate import evaluate_model, load_run_splits, model_from_checkpoint, read_checkpoint

    path = run_dir / "eval" / "summary.json"
    try:
        ev = json.loads(path.read_text())
        asked = {"n_rollouts": n_rollouts, "checkpoint": str(run_dir / "checkpoint.pt"),
                 **{key: value for key, value in options.items() if key != "max_steps"}}
        if all(ev.get(key) == value for key, value in asked.items()):
            return ev
    except (OSError, ValueError):
        pass
    state = read_checkpoint(run_dir / "checkpoint.pt")
    model = model_from_checkpoint(state)  # the best (early-stopping) weights, as test_mse uses
    splits = splits or load_run_splits(run, data_dir, progress=False)
    meta = {"model": run["model"], "group": run["group"], "n_train": run["n_train"], "seed": run["seed"],
            "label": label, "checkpoint": str(run_dir / "checkpoint.pt")}
    return evaluate_model(model, splits, out_dir=run_dir / "eval", meta=meta, n_rollouts=n_rollouts, **options)


ROLLOUT_KEYS = ("rollout_rel_error", "energy_rel_error", "linear_momentum_drift", "angular_momentum_drift",
                "rollout_time_s", "solver", "rtol", "atol", "step_size", "solver_fallback_batches",
                "rk4_fallback_rollouts")


def rollout_table(rows: list[dict], n_train: int) -> str:
    """Long-rollout metrics at the end of the test trajectories (mean over trajectories and repeats)."""
    import numpy as np

    head = ("| model | rollout rel. error | energy rel. error | linear momentum drift | angular momentum drift |\n"
            "|---|---|---|---|---|")
    lines = [head]
    for label in dict.fromkeys(r["label"] for r in rows):
        mine = [r for r in rows if r["label"] == label and r["n_train"] == n_train and "energy_rel_error" in r]
        if not mine:
            continue
        cells = []
        for key in ROLLOUT_KEYS[:4]:
            v = [r[key] for r in mine if r[key] is not None]
            cells.append(f"{np.mean(v):.3g}" if v else "–")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    solver = next((_solver_text(r) for r in rows if r.get("solver")), "")
    return (f"Long rollouts (n_train = {n_train}): values at the end of the test trajectories (t = 5), mean "
            f"over trajectories and repeats; {solver}, float64.\n\n" + "\n".join(lines) + "\n")


def _solver_text(row: dict) -> str:
    if row.get("rtol") is not None:
        return f"{row['solver']} rtol {row['rtol']:g} / atol {row['atol']:g}"
    step = f"step {row['step_size']:g}" if row.get("step_size") else "steps on the data grid"
    return f"{row['solver'].upper()}, fixed {step}"


def _conservation_plot(evaluated, path: Path) -> None:
    """Paper Fig. 7: conservation curves of the evaluated runs (first seed per label) in one figure."""
    import numpy as np

    from lieconv_runtime.train.evaluate import METRICS
    from lieconv_runtime.train.plots import plot_conservation

    curves = {}
    for label, run_dir in evaluated:
        if label not in curves:
            with np.load(run_dir / "eval" / "curves.npz") as z:
                curves[label] = {"ts": z["ts"], **{key: z[key] for key in METRICS}}
    plot_conservation(curves, path)


def _run_tasks(jobs: int, tasks: list, order: list):
    """Yield ``(index, summary)`` for ``tasks`` submitted in ``order``, as they finish: in this
    process (``jobs == 1``) or in ``jobs`` spawned worker processes."""
    if jobs <= 1:
        for i in order:
            yield i, _train_one(tasks[i])
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(_train_one, tasks[i]): i for i in order}
        for future in as_completed(futures):
            yield futures[future], future.result()


def _set_aside_stale(run_dir: Path, run: dict) -> None:
    """A run folder made with other settings (e.g. an older preset) is renamed, not resumed or reused."""
    try:
        old = json.loads((run_dir / "run.json").read_text())["run"]
    except (OSError, ValueError, KeyError):
        return
    if old != run:
        stale = run_dir.with_name(f"{run_dir.name}.stale-{time.strftime('%Y%m%d-%H%M%S')}")
        run_dir.rename(stale)
        print(f"lieconv study: note: {run_dir} was made with other settings; moved to {stale.name}", file=sys.stderr)


def _finished_summary(run_dir: Path, run: dict) -> dict | None:
    """The summary of a finished run with the same settings, else ``None``."""
    try:
        s = json.loads((run_dir / "train_summary.json").read_text())
        same = json.loads((run_dir / "run.json").read_text())["run"] == run
    except (OSError, ValueError, KeyError):
        return None
    return s if same and s.get("finished") else None


def _zero_motion_mse(p: Preset, n_systems: int, data_dir, progress: bool = True) -> float:
    """Test MSE of the trivial predictor ``z(t) = z0`` (reference line)."""
    from lieconv_runtime.data.springs import load_spring_splits

    test = load_spring_splits(1, p.n_val, p.n_test, n_systems=n_systems, data_dir=data_dir, progress=progress).test
    return float(((test.zs - test.z0[:, None]) ** 2).mean())


def markdown_table(rows: list[dict], sizes, zero_mse: float | None = None) -> str:
    """Test MSE mean ± std over repeats per label and size, plus mean seconds per epoch."""
    import numpy as np

    labels = list(dict.fromkeys(r["label"] for r in rows))
    head = "| model | " + " | ".join(f"n={n}" for n in sizes) + " | s/epoch (largest n) |"
    lines = [head, "|" + "---|" * (len(sizes) + 2)]
    for label in labels:
        mine, cells = [r for r in rows if r["label"] == label], []
        for n in sizes:
            v = [r["test_mse"] for r in mine if r["n_train"] == n and r["test_mse"] is not None]
            cells.append((f"{np.mean(v):.4g} ± {np.std(v):.2g}" if len(v) > 1 else f"{v[0]:.4g}") if v else "–")
        t = [r["epoch_time_s"] for r in mine if r["n_train"] == max(sizes) and r["epoch_time_s"]]
        per_epoch = f"{np.mean(t):.3g}" if t else "–"
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {per_epoch} |")
    if zero_mse is not None:
        lines.append(f"\nReference: predicting z(t) = z0 gives test MSE {zero_mse:.4g}.")
    return "\n".join(lines) + "\n"
