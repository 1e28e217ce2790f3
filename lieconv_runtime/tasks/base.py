"""The task interface, and the pipeline that every `lieconv` command runs through it.

A task (springs, rotmnist, qm9) is one module holding one `Task` subclass: its data, model, objective
(loss and metrics), defaults and presets, evaluation and plots.  The command line (`lieconv_runtime.cli`),
`train_run` / `evaluate_run` below and the study runner (`tasks.study`) only ever talk to this interface,
so adding a task adds one module (and one line in `lieconv_runtime.tasks.TASKS`).

A run is described by its *config*, a JSON dict stored in every checkpoint: ``task``, the task's own
fields (model, group, data sizes, ...) and the training settings (``epochs``, ``lr``, ``batch_size``,
``seed``, ...).  Everything needed to rebuild the model and the data comes from it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from lieconv_runtime.io import atomic_write_text
from lieconv_runtime.train import distributed as D
from lieconv_runtime.train.trainer import CheckpointError, Objective, Trainer, read_checkpoint

__all__ = ["DTYPES", "PlannedRun", "RUN_FILES", "Splits", "Task", "TaskError", "config_diff", "evaluate_run",
           "learning_curves", "model_from_checkpoint", "run_evaluation", "run_records", "train_run"]

DTYPES = {"float32": torch.float32, "float64": torch.float64}
#: Files of a run folder that `--overwrite` replaces (with the task's evaluation files in OUT/eval).
RUN_FILES = ("checkpoint.pt", "metrics.jsonl", "train_summary.json", "run.json", "summary.json")
#: Training settings every task's config holds (the trainer's arguments).
TRAIN_KEYS = ("epochs", "lr", "batch_size", "seed", "patience", "val_every", "max_steps", "warmup_frac", "grad_clip")


class TaskError(ValueError):
    """A user error about a task's data or settings: one line."""


@dataclass
class Splits:
    """A run's data: map-style train/val/test sets and task-specific extras (e.g. statistics)."""

    train: object
    val: object
    test: object
    extra: dict = field(default_factory=dict)


@dataclass
class PlannedRun:
    """One run of a study: its label, config, evaluation options after training (None: no evaluation)
    and its folder under ``<study>/runs/<label>/``."""

    label: str
    config: dict
    evaluate: dict | None = None
    folder: str = ""


class Task:
    """One experiment.  Subclasses set the attributes and implement the methods below."""

    name = ""
    description = ""
    #: `lieconv train TASK` defaults of the generic training options (epochs, lr, batch_size, ...)
    train_defaults: dict = {}
    #: the task's main job: `lieconv run TASK` = train with these defaults, then evaluate
    quick: dict = {}
    quick_description = ""
    presets: dict = {}  # study preset name -> one-line description
    collate: Callable | None = None  # for DataLoader data sets (None: in-memory `batched` sets)

    # --- command line -------------------------------------------------------------------------------
    def add_options(self, parser, defaults: dict) -> None:
        """Task options of `train` / `run` (model, group, data sizes, ...); ``defaults`` overrides."""

    def add_eval_options(self, parser, defaults: dict) -> None:
        """Options of the evaluation (`eval`, and `train --eval` / `run`)."""

    def add_data_options(self, parser) -> None:
        """Options of `lieconv data TASK` (list, clean, download, ...)."""

    def data_dir_help(self) -> str:
        return f"folder of the {self.name} data (default: the task's cache folder)"

    def config(self, args) -> dict:
        """The run config from parsed options (raises TaskError for impossible combinations)."""
        raise NotImplementedError

    def default_out(self, config: dict) -> Path:
        return Path("runs") / self.name / f"{self.label(config).replace('(', '-').replace(')', '')}-s{config['seed']}"

    def label(self, config: dict) -> str:
        return f"{config.get('model', self.name)}({config['group']})" if config.get("group") else config.get("model", self.name)

    # --- pieces -------------------------------------------------------------------------------------
    def load_data(self, config: dict, data_dir, *, progress: bool, say: Callable) -> Splits:
        raise NotImplementedError

    def build_model(self, config: dict) -> nn.Module:
        raise NotImplementedError

    def objective(self, config: dict, splits: Splits) -> Objective:
        raise NotImplementedError

    def evaluate(self, model: nn.Module, config: dict, splits: Splits, out_dir: Path, *, args, meta: dict,
                 say: Callable) -> dict:
        """Test metrics, plots and ``out_dir/summary.json``; returns the summary (with ``"files"``)."""
        raise NotImplementedError

    def data_command(self, args, say: Callable) -> tuple[dict, str]:
        """`lieconv data TASK`: (result, last line)."""
        raise TaskError(f"`lieconv data {self.name}` has nothing to do")

    def compare(self, results: list[dict], out: Path, plots: bool) -> list[str]:
        """`lieconv eval` of several checkpoints: a comparison in ``out``; returns the file names."""
        return []

    # --- study --------------------------------------------------------------------------------------
    def add_study_options(self, parser) -> None:
        """Options of `lieconv study TASK` besides --preset, --jobs, --out."""

    def study_plan(self, preset: str, args) -> tuple[list, dict]:
        """(PlannedRun list, info dict with at least ``jobs``) for `lieconv study TASK --preset NAME`."""
        raise TaskError(f"task {self.name} has no study presets")

    def study_row(self, run: PlannedRun, summary: dict, evaluation: dict | None) -> dict:
        """One row of results.jsonl for a finished run."""
        return {"label": run.label, **{k: v for k, v in summary.items() if k.startswith(("test_", "best_val_"))}}

    def study_report(self, rows: list[dict], out: Path, info: dict) -> list[str]:
        """Tables and plots of a finished study in ``out``; returns the file names."""
        return []


def config_diff(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested config dicts."""
    out = []
    for key in sorted(set(old) | set(new), key=str):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_diff(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a} -> {b}")
    return out


def _settings(config: dict) -> dict:
    return {k: config[k] for k in TRAIN_KEYS if config.get(k) is not None}


def train_run(task: Task, config: dict, out_dir, *, data_dir=None, resume: bool = False, progress: bool = True,
              say: Callable = lambda text: None, stop_after: int | None = None, device="cpu", workers: int = 0,
              precision: str = "32", splits: Splits | None = None):
    """Train the run ``config`` of ``task`` into ``out_dir``; returns ``(summary, model, splits)``.

    ``checkpoint.pt`` records the config (``--resume`` needs the same one); ``run.json`` notes the
    config and the data folder for `lieconv eval`."""
    out = Path(out_dir)
    torch.manual_seed(config["seed"])
    model = task.build_model(config).to(device=device, dtype=DTYPES[config.get("dtype", "float32")])
    if splits is None:
        splits = task.load_data(config, data_dir, progress=progress, say=say)
    trainer = Trainer(model, task.objective(config, splits), splits.train, splits.val, splits.test, out_dir=out,
                      **_settings(config), config={k: v for k, v in config.items() if k not in TRAIN_KEYS},
                      collate=task.collate, workers=workers, device=device, precision=precision, resume=resume,
                      progress=progress)
    if D.is_main():
        out.mkdir(parents=True, exist_ok=True)
        sidecar = {"run": config, "data_dir": None if data_dir is None else str(Path(data_dir).resolve())}
        atomic_write_text(out / "run.json", json.dumps(sidecar, indent=1) + "\n")
    full = max(1, math.ceil(config["epochs"] * trainer.steps_per_epoch))
    length = (f"{config['epochs']:g} epochs of {trainer.steps_per_epoch:,}" if trainer.total_steps == full else
              f"capped by --max-steps; {config['epochs']:g} epochs would be {full:,}")
    say(f"train: {task.label(config)} on {len(splits.train):,} examples (val {len(splits.val):,}), "
        f"{trainer.total_steps:,} steps ({length}), batch "
        f"{config['batch_size']}, lr {config['lr']:g}, on {torch.device(device)}, into {out}")
    summary = trainer.fit(stop_after_epochs=stop_after)
    summary = {"task": task.name, "model": config.get("model"), "group": config.get("group"), **summary,
               "checkpoint": str(trainer.checkpoint_path), "out_dir": str(out)}
    if summary["finished"] and D.is_main():
        atomic_write_text(trainer.summary_path, json.dumps(summary, indent=1) + "\n")
        _write_run_summary(out, {**{k: summary[k] for k in ("task", "model", "group")}, "evaluated": False,
                                 "how_to_evaluate": f"lieconv eval {task.name} {out}", "train": summary})
    return summary, model, splits


def _write_run_summary(run_dir: Path, summary: dict) -> None:
    """``RUN/summary.json``: the run's test metrics once evaluated into RUN/eval, else its training summary."""
    atomic_write_text(Path(run_dir) / "summary.json", json.dumps(summary, indent=1) + "\n")


def run_evaluation(task: Task, model: nn.Module, config: dict, splits: Splits, out_dir, *, args, meta: dict,
                   say: Callable = lambda text: None) -> dict:
    """``task.evaluate`` into ``out_dir``; when that is the run's own ``RUN/eval`` (the default), the
    summary is also ``RUN/summary.json``, with the training summary under ``"train"``."""
    out = Path(out_dir)
    summary = task.evaluate(model, config, splits, out, args=args, meta=meta, say=say)
    run_dir = Path(meta["checkpoint"]).parent if meta.get("checkpoint") else None
    if D.is_main() and run_dir is not None and out.resolve() == (run_dir / "eval").resolve():
        try:
            train = json.loads((run_dir / "train_summary.json").read_text())
        except (OSError, ValueError):
            train = None
        _write_run_summary(run_dir, {**summary, "evaluated": True, "eval_dir": str(out),
                                     "train": summary.get("train") or train})
    return summary


def model_from_checkpoint(task: Task, state: dict, device="cpu") -> nn.Module:
    """The model of a checkpoint with its best-validation weights, in eval mode, on ``device``."""
    config = state["config"]
    model = task.build_model(config)
    weights = state.get("best_state") or state["model"]
    try:
        model.load_state_dict(weights)
    except (RuntimeError, KeyError) as e:
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise CheckpointError(f"weights in {state.get('path')} do not fit {task.label(config)}: "
                              f"{type(e).__name__}: {first}") from None
    return model.to(device=device, dtype=DTYPES[config.get("dtype", "float32")]).eval()


def evaluate_run(task: Task, path, *, out_dir=None, data_dir=None, args=None, progress: bool = True,
                 say: Callable = lambda text: None, device="cpu", splits: Splits | None = None) -> dict:
    """Evaluate the checkpoint at ``path`` (a file or run folder) into ``out_dir`` (default RUN/eval)."""
    state = read_checkpoint(path, task.name)
    ckpt = Path(state["path"])
    config = state["config"]
    out = Path(out_dir) if out_dir else ckpt.parent / "eval"
    if data_dir is None:
        try:
            data_dir = json.loads((ckpt.parent / "run.json").read_text()).get("data_dir")
        except (OSError, ValueError):
            data_dir = None
    say(f"eval: {task.label(config)} from {ckpt} into {out}")
    if splits is None:
        splits = task.load_data(config, data_dir, progress=progress, say=say)
    model = model_from_checkpoint(task, state, device)
    best = {k: v for k, v in state.items() if k == "best_val"}
    meta = {"task": task.name, "model": config.get("model"), "group": config.get("group"),
            "n_train": config.get("n_train"), "seed": config.get("seed"), "label": task.label(config),
            "checkpoint": str(ckpt), "epochs_completed": state.get("epoch"), "steps": state.get("step"),
            "checkpoint_finished": state.get("finished"),
            **({"best_val": finite_or_none(best["best_val"])} if best else {}), "out_dir": str(out)}
    return run_evaluation(task, model, config, splits, out, args=args, meta=meta, say=say)


def run_records(run_dir) -> list[dict]:
    """The ``metrics.jsonl`` records of a run folder; [] for None or a missing or unreadable file."""
    from lieconv_runtime.train.trainer import read_metrics

    if run_dir is None:
        return []
    try:
        return read_metrics(Path(run_dir) / "metrics.jsonl")
    except (OSError, UnicodeDecodeError):
        return []


def learning_curves(runs: dict, out_dir, title: str) -> list[str]:
    """Plot ``runs`` (label -> metrics records; empty ones left out) to ``out_dir/learning_curves.png``;
    returns the names of the files written ([] when no run has records)."""
    runs = {label: records for label, records in runs.items() if records}
    if not runs:
        return []
    from lieconv_runtime.train.plots import plot_learning_curves

    plot_learning_curves(runs, Path(out_dir) / "learning_curves.png", title=title)
    return ["learning_curves.png"]


def finite_or_none(x):
    """float(x), or None for None, inf and NaN (JSON has no infinities)."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None
