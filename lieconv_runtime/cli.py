"""``lieconv``: spring-dynamics training, evaluation, data-size study, quick main job, plots, data cache.

    lieconv train springs --model HFC [--group G] [--n-train N] [--epochs E] [--eval] ...
    lieconv eval  springs --checkpoint RUN_DIR/checkpoint.pt [--solver dopri5] [--max-steps S] ...
    lieconv study springs --preset cpu|full [--models HFC FC ...]
    lieconv run   springs            # quick main job: HLieResNet(T2), train, evaluate, plots (a few min, 2 cores)
    lieconv plot  RUN_DIR [RUN_DIR ...] [--out FILE]      # learning curves from metrics.jsonl
    lieconv data  springs [--list | --clean] [--data-dir DIR]

Also ``python -m lieconv_runtime ...``. stdout carries one JSON document (the result); stderr
carries the phase lines (``lieconv: data: ...``, ``lieconv: train: ...``), progress bars and,
last, one line naming the results folder and its files. Bad inputs print one line
``lieconv: error: ...`` to stderr and exit with status 2; Ctrl-C exits with status 130.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

#: Model of ``lieconv run springs``: the paper's LieConv Hamiltonian model with T(2) symmetry.
QUICK_MODEL = ("HLieResNet", "T2")

PROG = "lieconv"

#: Files of a training run folder (``--out``) and of its ``eval`` folder; ``--overwrite`` removes these.
RUN_FILES = ("checkpoint.pt", "metrics.jsonl", "train_summary.json", "run.json")
EVAL_FILES = ("summary.json", "curves.npz", "trajectories.png", "conservation.png")


class CLIError(Exception):
    """A user error: reported as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of usage + message
        raise CLIError(f"{message} (see `{self.prog} --help`)")


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Appends ``(default: X)`` to every option help that does not state its default itself."""

    def _get_help_string(self, action):
        text = action.help or ""
        if ("default" not in text and action.option_strings
                and not any(action.default is v for v in (None, False, argparse.SUPPRESS))):
            text += " (default: %(default)s)"
        return text


def _say(text: str) -> None:
    """A phase line on stderr (above any running progress bar)."""
    from tqdm.auto import tqdm

    tqdm.write(f"{PROG}: {text}", file=sys.stderr)
    sys.stderr.flush()


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lieconv-groupgen")
    except PackageNotFoundError:
        return "unknown (not installed; run from a source tree)"


# --------------------------------------------------------------------------- argument types
def _int_at_least(low: int):
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if v < low:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {text}")
        return v

    parse.__name__ = "integer"
    return parse


_pos_int = _int_at_least(1)
_nonneg_int = _int_at_least(0)


def _float_check(positive: bool):
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(v) or (v <= 0 if positive else v < 0):
            kind = "positive" if positive else "non-negative"
            raise argparse.ArgumentTypeError(f"expected a {kind} finite number, got {text}")
        return v

    parse.__name__ = "number"
    return parse


_pos_float = _float_check(positive=True)
_nonneg_float = _float_check(positive=False)


def _kv(text: str):
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


# --------------------------------------------------------------------------- training pipeline
def make_run(args) -> dict:
    """The run config stored in the checkpoint (everything needed to rebuild model and data)."""
    from lieconv_runtime.models.registry import get_spec, paper_lr

    spec = get_spec(args.model)
    group = args.group
    if getattr(args, "command", None) == "run" and group == QUICK_MODEL[1] and not spec.needs_group:
        group = None  # `lieconv run springs --model HFC`: the quick job's default group does not apply
    return {
        "task": "springs", "model": spec.name, "group": group, "model_kw": dict(args.model_kw or []),
        "n_particles": args.n_particles, "dim": args.dim, "n_train": args.n_train, "dtype": args.dtype,
        "epochs": args.epochs, "lr": args.lr if args.lr is not None else paper_lr(spec.name, group),
        "batch_size": args.batch_size, "seed": args.seed, "patience": args.patience,
        **({"val_every": args.val_every} if args.val_every != 1 else {}),
        "data": {"n_systems": args.n_systems, "n_val": args.n_val, "n_test": args.n_test, "n_times": args.n_times,
                 "t_end": args.t_end, "seed": args.data_seed, "chunk_len": 5},
    }


def default_out(run: dict) -> Path:
    g = f"-{run['group']}" if run["group"] else ""
    return Path("runs") / "springs" / f"{run['model']}{g}-n{run['n_train']}-s{run['seed']}"


def _check_split_sizes(run: dict) -> None:
    d = run["data"]
    avail = d["n_systems"] - d["n_val"] - d["n_test"]
    if run["n_train"] > avail:
        raise CLIError(f"n_train={run['n_train']} exceeds the {max(avail, 0)} training systems of the data "
                       f"(n_systems={d['n_systems']} - n_val={d['n_val']} - n_test={d['n_test']}); raise --n-systems")


def _clear_run(out: Path) -> None:
    """Remove the files of an earlier run in ``out`` (``--overwrite``); nothing else."""
    for path in [out / f for f in RUN_FILES] + [out / "eval" / f for f in EVAL_FILES]:
        path.unlink(missing_ok=True)


def train_springs(run: dict, out_dir, *, data_dir=None, resume: bool = False, progress: bool = True,
                  stop_after: int | None = None, notify=None, overwrite: bool = False):
    """Train the model of ``run`` (see :func:`make_run`) into ``out_dir``.

    Returns ``(summary, model, splits)``; ``checkpoint.pt`` records ``run`` under
    ``config["run"]``; ``run.json`` notes the data folder for ``lieconv eval``.
    ``overwrite``: remove an earlier run's files once model and data are ready.
    ``notify(text)`` is told each phase.
    """
    import torch

    from lieconv_runtime.io import atomic_write_text
    from lieconv_runtime.models.registry import build_model
    from lieconv_runtime.train import Trainer
    from lieconv_runtime.train.evaluate import DTYPES, load_run_splits, read_checkpoint

    say = notify or (lambda text: None)
    out = Path(out_dir)
    _check_split_sizes(run)
    torch.manual_seed(run["seed"])
    model = build_model(run["model"], run["n_particles"], run["dim"], run["group"], **run["model_kw"])
    model = model.to(DTYPES[run["dtype"]])
    try:
        splits = load_run_splits(run, data_dir, progress=progress, notify=say)
    except ValueError as e:
        raise CLIError(str(e)) from None

    class SpringTrainer(Trainer):
        def _config(self):  # the run config travels in every checkpoint (and guards --resume)
            return {**super()._config(), "run": run}

    trainer = SpringTrainer(model, splits.train, splits.val, splits.test, out_dir=out, epochs=run["epochs"],
                            lr=run["lr"], batch_size=run["batch_size"], patience=run["patience"],
                            val_every=run.get("val_every", 1),
                            seed=run["seed"], resume=resume, progress=progress)
    if resume and trainer.checkpoint_path.exists():
        diff = _diff(read_checkpoint(trainer.checkpoint_path)["config"], trainer._config())
        if diff:
            raise CLIError(f"--resume: {trainer.checkpoint_path} was made with other settings "
                           f"({', '.join(diff)}); use the same options or another --out")
    if overwrite:
        _clear_run(out)
    out.mkdir(parents=True, exist_ok=True)
    sidecar = {"run": run, "data_dir": None if data_dir is None else str(Path(data_dir).resolve())}
    atomic_write_text(out / "run.json", json.dumps(sidecar, indent=1) + "\n")
    label = f"{run['model']}({run['group']})" if run["group"] else run["model"]
    say(f"train: {label} on {len(splits.train):,} systems (val {len(splits.val):,}), {run['epochs']} epochs, "
        f"batch {run['batch_size']}, lr {run['lr']:g}, into {out}")
    summary = trainer.fit(stop_after_epochs=stop_after)
    times = [json.loads(line)["epoch_time_s"] for line in trainer.metrics_path.read_text().splitlines() if line]
    summary.pop("run", None)
    summary = {"model": run["model"], "group": run["group"], **summary,
               "epoch_time_s_mean": round(sum(times) / len(times), 4) if times else None,
               "checkpoint": str(trainer.checkpoint_path), "out_dir": str(out)}
    if summary["finished"]:
        atomic_write_text(trainer.summary_path, json.dumps(summary, indent=1) + "\n")
    return summary, model, splits


def _diff(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested config dicts."""
    out = []
    for key in sorted(set(old) | set(new), key=str):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _diff(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a} -> {b}")
    return out


# --------------------------------------------------------------------------- commands
def _eval_kwargs(args) -> dict:
    from lieconv_runtime.train.evaluate import DTYPES

    return dict(n_rollouts=args.n_rollouts, solver=args.solver, rtol=args.rtol, atol=args.atol,
                step_size=args.step_size, net_momentum_std=args.net_momentum,
                rollout_dtype=DTYPES[args.rollout_dtype], plots=not args.no_plots, max_steps=args.max_steps,
                batch_size=args.rollout_batch, progress=not args.no_progress, notify=_say)


def _check_writable(folder: Path, option: str) -> None:
    """Fail before any work when ``folder`` (or the folder it would be made in) cannot take files."""
    import tempfile

    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        if not probe.is_dir():
            raise NotADirectoryError(20, "not a folder", str(probe))
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as e:
        raise CLIError(f"{option} {folder}: cannot write there ({e.strerror or e}); "
                       f"choose a writable folder") from None


def _check_out(out: Path, args) -> None:
    """Refuse to mix runs: --resume needs a checkpoint, an existing run needs --resume or --overwrite."""
    ckpt = out / "checkpoint.pt"
    if args.resume and args.overwrite:
        raise CLIError("--resume and --overwrite exclude each other: continue the run in --out, or replace it")
    if args.resume and not ckpt.is_file():
        raise CLIError(f"--resume: there is no checkpoint {ckpt} to continue from; "
                       f"drop --resume to start a new run there, or point --out at an existing run")
    found = [f for f in ("checkpoint.pt", "train_summary.json", "eval/summary.json") if (out / f).exists()]
    if found and not (args.resume or args.overwrite):
        raise CLIError(f"{out} already holds a run ({', '.join(found)}); continue it with --resume, "
                       f"replace it with --overwrite, or choose another --out")
    _check_writable(out, "--out")


def _files_line(folder: Path, files) -> str:
    return f"results in {folder}: {', '.join(str(f) for f in files)}"


def cmd_train(args):
    from lieconv_runtime.models.registry import check_model

    run = make_run(args)
    check_model(run["model"], run["dim"], run["group"])
    _check_split_sizes(run)
    out = Path(args.out) if args.out else default_out(run)
    _check_out(out, args)
    if args.resume:  # before any data work: a foreign or corrupt checkpoint, other settings
        from lieconv_runtime.train.evaluate import read_checkpoint

        ckpt = out / "checkpoint.pt"
        diff = _diff(read_checkpoint(ckpt)["config"].get("run", {}), run)
        if diff:
            raise CLIError(f"--resume: {ckpt} was made with other settings ({', '.join(diff)}); "
                           f"use the same options or another --out")
    summary, model, splits = train_springs(run, out, data_dir=args.data_dir, resume=args.resume,
                                           progress=not args.no_progress, stop_after=args.stop_after,
                                           notify=_say, overwrite=args.overwrite)
    files = [f for f in RUN_FILES if (out / f).exists()]
    if not summary["finished"]:
        return summary, (f"stopped after epoch {summary['epochs_completed']} of {run['epochs']}: "
                         f"{_files_line(out, files)}; continue with --resume")
    if args.eval:
        from lieconv_runtime.train.evaluate import evaluate_model

        meta = {"model": run["model"], "group": run["group"], "n_train": run["n_train"], "seed": run["seed"],
                "checkpoint": summary["checkpoint"], "epochs_completed": summary["epochs_completed"],
                "best_val_mse": summary["best_val_mse"], "train_time_s": summary["wall_time_s"]}
        ev = evaluate_model(model, splits, out_dir=out / "eval", meta=meta, **_eval_kwargs(args))
        summary = {**ev, "train": summary, "eval_dir": str(out / "eval")}
        files += [f"eval/{f}" for f in ev["files"]]
    return summary, _files_line(out, files)


def cmd_eval(args):
    from lieconv_runtime.train.evaluate import evaluate_model, load_run_splits, model_from_checkpoint, read_checkpoint

    states = [read_checkpoint(p) for p in args.checkpoint]  # fail fast on any bad path
    base_out = Path(args.out) if args.out else Path(states[0]["path"]).parent / "eval"
    _check_writable(base_out, "--out")
    results, data_cache, files = [], {}, []
    for i, state in enumerate(states):
        run = state["config"]["run"]
        ckpt = Path(state["path"])
        base = Path(args.out) if args.out else ckpt.parent / "eval"
        label = f"{run['model']}({run['group']})" if run["group"] else run["model"]
        sub = "" if len(states) == 1 else f"{i}-{label.replace('(', '-').replace(')', '')}"
        out = base / sub if sub else base
        data_dir = args.data_dir or _sidecar_data_dir(ckpt.parent)
        key = json.dumps([run["data"], run["n_train"], run["n_particles"], run["dim"], run["dtype"], data_dir])
        _say(f"eval: {label} from {ckpt} into {out}")
        if key not in data_cache:
            try:
                data_cache[key] = load_run_splits(run, data_dir, progress=not args.no_progress, notify=_say)
            except ValueError as e:
                raise CLIError(str(e)) from None
        model = model_from_checkpoint(state)
        meta = {"model": run["model"], "group": run["group"], "n_train": run["n_train"], "seed": run["seed"],
                "label": label, "checkpoint": str(ckpt), "epochs_completed": state.get("epoch"),
                "checkpoint_finished": state.get("finished"), "best_val_mse": state.get("best_val"),
                "out_dir": str(out)}
        results.append(evaluate_model(model, data_cache[key], out_dir=out, meta=meta, **_eval_kwargs(args)))
        files += [f"{sub}/{f}" if sub else f for f in results[-1]["files"]]
    if len(results) == 1:
        return results[0], _files_line(base_out, files)
    files += _compare_plot(results, base_out, args)
    return results, _files_line(base_out, files)


def _sidecar_data_dir(run_dir: Path):
    try:
        return json.loads((run_dir / "run.json").read_text()).get("data_dir")
    except (OSError, ValueError):
        return None


def _compare_plot(results: list, out: Path, args) -> list[str]:
    """Overlay the conservation curves of several evaluated checkpoints (paper Fig. 7); returns the files."""
    import numpy as np

    from lieconv_runtime.io import atomic_write_text
    from lieconv_runtime.train.evaluate import METRICS
    from lieconv_runtime.train.plots import plot_conservation

    labels = [r["label"] for r in results]
    if len(set(labels)) < len(labels):  # same model/group: tell the runs apart
        labels = [f"{r['label']} n={r['n_train']} seed={r['seed']} #{i}" for i, r in enumerate(results)]
    curves = {}
    for label, r in zip(labels, results):
        with np.load(Path(r["out_dir"]) / "curves.npz") as z:
            curves[label] = {"ts": z["ts"], **{k: z[k] for k in METRICS}}
    files = ["comparison.json"]
    if not args.no_plots:
        plot_conservation(curves, out / "conservation_comparison.png")
        files.append("conservation_comparison.png")
    atomic_write_text(out / "comparison.json", json.dumps(results, indent=1) + "\n")
    return files


def cmd_study(args):
    from lieconv_runtime.train.study import run_study

    if args.out and not args.dry_run:
        _check_writable(Path(args.out), "--out")
    result = run_study(args.preset, models=args.models, out_dir=args.out, data_dir=args.data_dir,
                       n_train=args.n_train, repeats=args.repeats, jobs=args.jobs, threads=args.threads,
                       progress=not args.no_progress, dry_run=args.dry_run)
    if args.dry_run:
        return result, f"dry run: {len(result['runs'])} runs planned (nothing written)"
    out = Path(args.out or f"runs/springs/study-{args.preset}")
    files = ["study.json", "results.jsonl"] + [result[k] for k in ("table", "plot", "rollout_table",
                                                                   "conservation_plot") if k in result]
    return result, _files_line(out, files)


def _read_metrics(arg: str) -> tuple[Path, list[dict]]:
    path = Path(arg)
    metrics = path if path.is_file() else path / "metrics.jsonl"
    if not metrics.is_file():
        raise CLIError(f"{metrics} not found: RUN_DIR must be the --out folder of `lieconv train springs` "
                       f"(it holds metrics.jsonl)")
    records = []
    try:
        lines = metrics.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise CLIError(f"cannot read {metrics}: {e}") from None
    for line in lines:
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a crash
        if isinstance(r, dict) and "epoch" in r:
            records.append(r)
    if not records:
        raise CLIError(f"{metrics} has no epoch records: the run has not finished an epoch yet "
                       f"(or this is not a metrics file of `lieconv train springs`)")
    return metrics, records


def cmd_plot(args):
    from lieconv_runtime.train.plots import plot_learning_curves

    runs, labels, dirs = {}, [], []
    for arg in args.run_dir:
        metrics, records = _read_metrics(arg)
        run = {}
        try:
            run = json.loads((metrics.parent / "run.json").read_text())["run"]
        except (OSError, ValueError, KeyError, TypeError):
            pass
        label = metrics.parent.name
        if run.get("model"):
            label = (f"{run['model']}({run['group']})" if run.get("group") else run["model"]) + f" n={run['n_train']}"
        labels.append(label)
        dirs.append(metrics.parent)
        runs[(label, len(runs))] = records
    if len(set(labels)) < len(labels):  # tell equal labels apart by their folders
        labels = [f"{l} [{d}]" for l, d in zip(labels, dirs)]
    runs = {label: records for label, records in zip(labels, runs.values())}
    if args.out:
        out = Path(args.out)
    elif len(dirs) == 1:
        out = dirs[0] / "learning_curves.png"
    else:
        import os

        out = Path(os.path.commonpath([str(d.resolve()) for d in dirs])) / "learning_curves.png"
    if out.suffix.lower() not in (".png", ".pdf", ".svg"):
        raise CLIError(f"--out {out}: the file must end in .png, .pdf or .svg")
    _check_writable(out.parent, "--out")
    plot_learning_curves(runs, out, title="Learning curves: train (solid) and validation (dashed) MSE")
    n_epochs = {label: len(r) for label, r in runs.items()}
    return {"plot": str(out), "runs": [str(d) for d in dirs], "epochs": n_epochs}, f"wrote {out}"


def cmd_data(args):
    from lieconv_runtime.data.springs import clean_caches, default_cache_dir, list_caches

    folder = Path(args.data_dir) if args.data_dir else default_cache_dir()
    if args.clean:
        removed = clean_caches(folder)
        return {"data_dir": str(folder), "removed": [str(p) for p in removed]}, \
            f"removed {len(removed)} files from {folder}"
    rows = list_caches(folder)
    for r in rows:
        c = r["config"] or {}
        if c:
            what = (f"{c['n_systems']:,} systems x {c['n_times']} steps, {c['n_particles']} particles in "
                    f"{c['dim']}D, t_end {c['t_end']:g}, seed {c['seed']}")
        elif r.get("temp"):
            what = "stale temp file: its writer is gone; --clean removes it" if r["stale"] else \
                "temp file of a writer still at work"
        else:
            what = "no valid .json sidecar: regenerated when next used"
        _say(f"data: {Path(r['path']).name}  {r['size_bytes'] / 1e6:,.1f} MB  ({what})")
    total = sum(r["size_bytes"] for r in rows)
    return ({"data_dir": str(folder), "caches": rows, "total_bytes": total},
            f"{len(rows)} cache files, {total / 1e6:,.1f} MB in {folder}")


# --------------------------------------------------------------------------- parser
def _data_dir_help() -> str:
    from lieconv_runtime.data.springs import default_cache_dir

    return ("folder of the cached springs data sets (default: $LIECONV_CACHE/springs, else "
            f"$XDG_CACHE_HOME/lieconv/springs, else ~/.cache/lieconv/springs; here: {default_cache_dir()})")


def _add_data_options(p, d: dict) -> None:
    p.add_argument("--n-systems", type=_pos_int, default=d.get("n_systems", 10000),
                   help="systems in the generated data set; train = the first --n-train, val and test its last "
                        "ones. Cached as float64: n_systems x n_times x 4 x n_particles x dim x 8 bytes "
                        "(960 MB for 10,000 systems of 6 particles in 2D at 500 times)")
    p.add_argument("--n-particles", type=_int_at_least(2), default=6, help="particles per system")
    p.add_argument("--dim", type=int, default=2, choices=[2, 3], help="space dimension")
    p.add_argument("--n-times", type=_int_at_least(5), default=500,
                   help="time points of each trajectory (grid of the rollouts; training chunks are 5 points)")
    p.add_argument("--t-end", type=_pos_float, default=5.0, help="length of each trajectory in time units")
    p.add_argument("--data-seed", type=_nonneg_int, default=0, help="seed of the generated data set")
    p.add_argument("--data-dir", default=None, help=_data_dir_help())


def _add_data_train_options(p, d: dict) -> None:
    from lieconv_runtime import available_groups
    from lieconv_runtime.models.registry import describe_models

    p.add_argument("--model", default=d.get("model"), required="model" not in d,
                   help=f"model to train: {describe_models()}")
    p.add_argument("--group", default=d.get("group"),
                   help=f"symmetry group of group-based models (must act on R^dim): {', '.join(available_groups())}")
    p.add_argument("--model-kw", type=_kv, nargs="*", metavar="KEY=VALUE",
                   help="extra builder options of the model, e.g. width=64 num_layers=2 (default: none)")
    p.add_argument("--n-train", type=_pos_int, default=d.get("n_train", 3000), help="training systems")
    p.add_argument("--n-val", type=_pos_int, default=d.get("n_val", 200), help="validation systems")
    p.add_argument("--n-test", type=_pos_int, default=d.get("n_test", 2000),
                   help="test systems (test MSE on their chunks; rollouts start from the first --n-rollouts)")
    _add_data_options(p, d)
    p.add_argument("--epochs", type=_pos_int, default=d.get("epochs", 100), help="training epochs (cosine schedule)")
    p.add_argument("--lr", type=_pos_float, default=None,
                   help="learning rate (default: the paper's for the model/group, listed under --model)")
    p.add_argument("--batch-size", type=_pos_int, default=200, help="training batch size")
    p.add_argument("--patience", type=_pos_int, default=None, help="early stopping patience in epochs (default: off; "
                   "the best-validation weights are always kept)")
    p.add_argument("--val-every", type=_pos_int, default=1, metavar="EPOCHS",
                   help="validate every this many epochs and after the last")
    p.add_argument("--seed", type=_nonneg_int, default=0, help="seed of the initialisation and the shuffling")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32", help="training dtype")
    out_default = d.get("out")
    p.add_argument("--out", default=out_default,
                   help="run folder: checkpoint.pt, metrics.jsonl, train_summary.json, run.json, eval/"
                        + ("" if out_default else " (default: runs/springs/<model>[-<group>]-n<n_train>-s<seed>)"))
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its checkpoint.pt (error if there is none)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier run in --out (without it, or --resume, an existing run is refused)")
    p.add_argument("--stop-after", type=_pos_int, default=None, metavar="EPOCHS",
                   help="leave after this many epochs of this call (continue later with --resume; default: off)")


def _add_eval_options(p, d: dict) -> None:
    from lieconv_runtime.train.evaluate import RK4_BATCH, ROLLOUT_BATCH, STEPS_PER_GRID_STEP, worst_case_evaluations

    p.add_argument("--n-rollouts", type=_pos_int, default=d.get("n_rollouts", 100),
                   help="test trajectories rolled out over their full length")
    p.add_argument("--solver", choices=["dopri5", "rk4"], default="dopri5",
                   help="rollout solver: adaptive dopri5 (with a step budget and RK4 fallback) or fixed-step rk4")
    p.add_argument("--rtol", type=_pos_float, default=1e-8, help="relative tolerance of dopri5")
    p.add_argument("--atol", type=_pos_float, default=1e-10, help="absolute tolerance of dopri5")
    p.add_argument("--max-steps", type=_pos_int, default=None, metavar="STEPS",
                   help=f"step budget of one dopri5 rollout batch: attempted steps (accepted or rejected) over the "
                        f"whole trajectory. A batch over it, on pace to go over it, with a step underflow or a "
                        f"non-finite state is redone with RK4 on the data grid (counted in summary.json as "
                        f"rk4_fallback_rollouts). Default: {STEPS_PER_GRID_STEP} x (n_times - 1) = "
                        f"{STEPS_PER_GRID_STEP * 499} for 500 times. Worst case per trajectory: 2 + 6 x STEPS model "
                        f"evaluations (dopri5) + 4 x (n_times - 1) (RK4) = {worst_case_evaluations(500):,} at the "
                        f"defaults")
    p.add_argument("--rollout-batch", type=_pos_int, default=ROLLOUT_BATCH, metavar="N",
                   help=f"trajectories per dopri5 batch (they share the step size, so one stiff trajectory sends "
                        f"its batch to RK4; the RK4 fallback runs in batches of {RK4_BATCH})")
    p.add_argument("--step-size", type=_pos_float, default=None, help="rk4 step (default: the data grid)")
    p.add_argument("--net-momentum", type=_nonneg_float, default=None,
                   help="std of the net momentum given to test systems by an exact boost, 0 = none "
                        "(default: 0.6 sqrt(n_particles))")
    p.add_argument("--rollout-dtype", choices=["float32", "float64"], default="float64", help="rollout dtype")
    p.add_argument("--no-plots", action="store_true", help="skip trajectories.png and conservation.png")


def _add_common(p, threads: int = 1) -> None:
    p.add_argument("task", choices=["springs"], help="the task (springs: spring dynamics, paper §6)")
    p.add_argument("--threads", type=_pos_int, default=threads,
                   help="torch intra-op threads" + (" (default 1: fastest for these small models on a busy 2-core "
                                                    "CPU)" if threads == 1 else ""))
    p.add_argument("--no-progress", action="store_true", help="no progress bars (phase lines stay)")


QUICK_DEFAULTS = {"model": QUICK_MODEL[0], "group": QUICK_MODEL[1], "n_train": 400, "n_val": 100, "n_test": 200,
                  "n_systems": 1100, "epochs": 20, "n_rollouts": 10, "out": "runs/springs/quick"}


def build_parser() -> argparse.ArgumentParser:
    kw = dict(formatter_class=_HelpFormatter)
    parser = _Parser(prog=PROG, description="LieConv runtime: spring-dynamics experiments (paper §6). "
                     "Results go to stdout as JSON; phase lines, progress bars and a last line naming the "
                     "results folder go to stderr.", **kw)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}",
                        help="print the installed version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{train,eval,study,run,plot,data}",
                                parser_class=_Parser)
    p = sub.add_parser("train", help="train a dynamics model", description="Train a spring-dynamics model.", **kw)
    _add_common(p)
    _add_data_train_options(p, {})
    p.add_argument("--eval", action="store_true", help="evaluate after training (writes OUT/eval)")
    _add_eval_options(p, {})
    p = sub.add_parser("eval", help="evaluate a checkpoint", description="Test MSE, long rollouts, plots.", **kw)
    _add_common(p)
    p.add_argument("--checkpoint", nargs="+", required=True, help="checkpoint file(s) or run folder(s)")
    p.add_argument("--out", default=None, help="output folder (default: <checkpoint folder>/eval)")
    p.add_argument("--data-dir", default=None, help=_data_dir_help().replace(
        "(default:", "(default: the one noted in the run's run.json, else"))
    _add_eval_options(p, {})
    p = sub.add_parser("study", help="data-size study (paper Fig. 8)", description="Test MSE vs n_train.", **kw)
    _add_common(p)
    p.add_argument("--preset", choices=["cpu", "full"], default="cpu",
                   help="cpu: 7 models x n_train 25/100/400 at 1/8 of the paper's epochs; full: the paper's grid "
                        "(n_train 10 ... 96000, 3 seeds)")
    p.add_argument("--models", nargs="+", default=None,
                   help="MODEL or MODEL:GROUP entries (default: the preset's)")
    p.add_argument("--n-train", type=_pos_int, nargs="+", default=None, help="training sizes (default: the preset's)")
    p.add_argument("--repeats", type=_pos_int, default=None, help="seeds per size (default: the preset's)")
    p.add_argument("--jobs", type=_pos_int, default=None,
                   help="runs trained in parallel processes (default: cpu preset 2, full 1)")
    p.add_argument("--out", default=None, help="study folder (default: runs/springs/study-<preset>)")
    p.add_argument("--data-dir", default=None, help=_data_dir_help())
    p.add_argument("--dry-run", action="store_true", help="list the runs and exit")
    q = QUICK_DEFAULTS
    p = sub.add_parser("run", help="quick main job: train + eval + plots",
                       description=f"Quick springs run: {q['model']}({q['group']}), n_train {q['n_train']}, "
                                   f"{q['epochs']} epochs, then evaluation of {q['n_rollouts']} rollouts and plots "
                                   f"in OUT/eval (OUT: --out, default {q['out']}).", **kw)
    _add_common(p, threads=2)  # one process: both cores
    _add_data_train_options(p, QUICK_DEFAULTS)
    _add_eval_options(p, QUICK_DEFAULTS)
    p.set_defaults(eval=True)
    p = sub.add_parser("plot", help="learning curves of training runs",
                       description="Train and validation MSE per epoch (log scale) from each run's metrics.jsonl, "
                                   "several runs overlaid.", **kw)
    p.add_argument("run_dir", nargs="+", metavar="RUN_DIR", help="run folder(s) (the --out of `lieconv train`)")
    p.add_argument("--out", default=None, help="image file, .png/.pdf/.svg (default: RUN_DIR/learning_curves.png; "
                                               "for several runs learning_curves.png in their common folder)")
    p = sub.add_parser("data", help="list or remove cached data sets",
                       description="List the cached springs data sets with their sizes, or remove them.", **kw)
    p.add_argument("task", choices=["springs"], help="the task whose caches to list or remove")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--list", action="store_true", help="list the caches and their sizes (what it does by default)")
    g.add_argument("--clean", action="store_true",
                   help="remove every cached data set and stale temp file in the folder (files being written by "
                        "a running process are kept)")
    p.add_argument("--data-dir", default=None, help=_data_dir_help())
    return parser


def _resume_hint(args) -> str:
    """`` (continue with --resume)`` when the interrupted run left a checkpoint."""
    try:
        out = Path(args.out) if args.out else default_out(make_run(args))
        return " (continue with --resume)" if (out / "checkpoint.pt").is_file() else ""
    except Exception:  # the hint is a courtesy
        return ""


COMMANDS = {"train": cmd_train, "eval": cmd_eval, "study": cmd_study, "run": cmd_train, "plot": cmd_plot,
            "data": cmd_data}


def main(argv=None) -> int:
    """Entry point of the ``lieconv`` script; returns the exit status."""
    from lieconv_runtime.models.registry import RegistryError
    from lieconv_runtime.train.evaluate import CheckpointError

    command = None
    try:
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as e:  # --help, --version
            return int(e.code or 0)
        command = args.command
        if getattr(args, "threads", None):
            import torch

            torch.set_num_threads(args.threads)
        from lieconv_runtime.perf import tune_malloc

        tune_malloc()  # this process trains: keep freed tensor memory for reuse (LIECONV_TUNE_MALLOC=0: off)
        result, last_line = COMMANDS[args.command](args)
    except (CLIError, RegistryError, CheckpointError) as e:
        print(f"{PROG}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except OSError as e:  # writing outputs: a full disk, a read-only folder, ...
        where = f"{e.filename}: " if e.filename else ""
        print(f"{PROG}: error: {where}{e.strerror or e}; check that the folder is writable and has free space "
              f"(--out, --data-dir)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted{_resume_hint(args) if command in ('train', 'run') else ''}", file=sys.stderr)
        return 130
    try:
        print(json.dumps(result, indent=1), flush=True)
    except BrokenPipeError:  # e.g. `lieconv ... | head`
        sys.stdout = None
    print(f"{PROG}: done: {last_line}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
