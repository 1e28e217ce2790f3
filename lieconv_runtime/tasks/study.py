"""`lieconv study TASK --preset NAME`: a task's planned runs, trained (in parallel processes) and reported.

Every planned run (`Task.study_plan`) is one `train_run` in ``<out>/runs/<label>/<folder>`` with
``resume=True``: finished runs are reused, an interrupted one continues from its checkpoint, and a
folder made with other settings is moved aside.  Runs whose plan asks for it are then evaluated
(`evaluate_run`, reused when its summary matches).  Outputs in ``<out>``: ``results.jsonl`` (one row
per run, `Task.study_row`, rewritten as runs finish), the task's tables and plots (`Task.study_report`)
and ``study.json``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from lieconv_runtime.io import atomic_write_text

__all__ = ["run_study"]


def _folder(run) -> str:
    return run.label.replace("(", "-").replace(")", "").replace(":", "-") + (f"/{run.folder}" if run.folder else "")


def run_study(task, preset: str, args, *, out_dir=None, data_dir=None, jobs: int | None = None, threads: int = 1,
              progress: bool = True, dry_run: bool = False, say=lambda text: None, device="cpu") -> dict:
    """Run (or resume) the study; returns the ``study.json`` dict.  Results do not depend on ``jobs``."""
    runs, info = task.study_plan(preset, args)
    jobs = jobs or info.get("jobs", 1)
    out = Path(out_dir or f"runs/{task.name}/study-{preset}")
    if dry_run:
        return {"task": task.name, "preset": preset, "jobs": jobs, **info,
                "runs": [{"label": r.label, "folder": _folder(r), "epochs": r.config["epochs"],
                          "n_train": r.config.get("n_train"), "seed": r.config["seed"],
                          "evaluate": r.evaluate is not None} for r in runs]}
    t0 = time.time()
    if runs:  # build the shared data once, before parallel workers would race for it
        task.load_data(runs[0].config, data_dir, progress=progress, say=say)
    work = [(task.name, r, out / "runs" / _folder(r), data_dir, progress and jobs == 1, threads, str(device))
            for r in runs]
    order = sorted(range(len(work)), key=lambda i: -(runs[i].config.get("n_train") or 0))  # largest first
    done: dict = {}
    rows: list = []
    for k, (i, summary, evaluation) in enumerate(_run_all(jobs, work, order)):
        run = runs[i]
        primary = next((f"{key}: {v:.4g}" for key, v in summary.items()
                        if key.startswith("test_") and isinstance(v, float)), "")
        say(f"study: [{k + 1}/{len(runs)}] {run.label} {run.folder}: {primary}")
        done[i] = {**task.study_row(run, summary, evaluation), "run_dir": str(work[i][2]),
                   **({"eval_dir": str(work[i][2] / "eval")} if evaluation else {})}
        rows = [done[j] for j in sorted(done)]  # plan order
        atomic_write_text(out / "results.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    result = {"task": task.name, "preset": preset, "jobs": jobs, **info, "wall_time_s": round(time.time() - t0, 1)}
    files = ["study.json", "results.jsonl"]
    if rows:
        files += task.study_report(rows, out, {**info, "data_dir": data_dir})
    result.update({k: v for k, v in info.items() if k not in result})
    result["files"] = files
    result["rows"] = rows
    atomic_write_text(out / "study.json", json.dumps(result, indent=1, default=str) + "\n")
    return result


def _train_one(item) -> tuple:
    """One study run (module level so that worker processes can run it): (summary, evaluation or None)."""
    import torch

    from lieconv_runtime.tasks import get_task
    from lieconv_runtime.tasks.base import evaluate_run, train_run

    name, run, run_dir, data_dir, progress, threads, device = item
    task = get_task(name)
    torch.set_num_threads(threads)
    _set_aside_stale(run_dir, run.config)
    summary = _finished_summary(run_dir, run.config)
    if summary is None:
        summary, _, _ = train_run(task, run.config, run_dir, data_dir=data_dir, resume=True, progress=progress,
                                  device=device)
    evaluation = None
    if run.evaluate is not None:
        evaluation = _reuse_evaluation(run_dir, run.evaluate)
        if evaluation is None:
            evaluation = evaluate_run(task, run_dir, data_dir=data_dir, args=run.evaluate, progress=False,
                                      device=device)
    return summary, evaluation


def _reuse_evaluation(run_dir: Path, options: dict):
    try:
        ev = json.loads((run_dir / "eval" / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    same = all(ev.get(k) == v for k, v in options.items() if k not in ("max_steps", "progress", "plots"))
    return ev if same and ev.get("checkpoint") == str(run_dir / "checkpoint.pt") else None


def _run_all(jobs: int, work: list, order: list):
    """Yield ``(index, summary, evaluation)`` as runs finish: here (``jobs == 1``) or in ``jobs`` spawned processes."""
    if jobs <= 1:
        for i in order:
            yield (i, *_train_one(work[i]))
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(_train_one, work[i]): i for i in order}
        for future in as_completed(futures):
            yield (futures[future], *future.result())


def _set_aside_stale(run_dir: Path, config: dict) -> None:
    """A run folder made with other settings (e.g. an older preset) is renamed, not resumed or reused."""
    try:
        old = json.loads((run_dir / "run.json").read_text())["run"]
    except (OSError, ValueError, KeyError):
        return
    if old != config:
        stale = run_dir.with_name(f"{run_dir.name}.stale-{time.strftime('%Y%m%d-%H%M%S')}")
        run_dir.rename(stale)
        print(f"lieconv study: note: {run_dir} was made with other settings; moved to {stale.name}", file=sys.stderr)


def _finished_summary(run_dir: Path, config: dict) -> dict | None:
    """The training summary of a finished run with the same settings, else None."""
    try:
        s = json.loads((run_dir / "train_summary.json").read_text())
        same = json.loads((run_dir / "run.json").read_text())["run"] == config
    except (OSError, ValueError, KeyError):
        return None
    return s if same and s.get("finished") else None
