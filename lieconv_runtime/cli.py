"""``lieconv``: train, evaluate, study and plot every task (`lieconv_runtime.tasks`).

    lieconv train TASK [--group G] [--epochs E] [--eval] ...      # springs, rotmnist, qm9
    lieconv eval  TASK --checkpoint RUN_DIR [...]
    lieconv study TASK --preset cpu|... [--jobs J]
    lieconv run   TASK                                           # the task's main job: train, evaluate, plots
    lieconv plot  RUN_DIR [RUN_DIR ...] [--out FILE]             # learning curves from metrics.jsonl
    lieconv data  TASK [...]                                     # prepare, download, list or clean data

Groups: ``--group NAME`` searches each ``--group-path DIR``, then $LIECONV_GROUP_PATH, the user group
folder and the shipped groups (`lieconv_runtime.loader`); ``--group path/to/spec.yaml`` compiles the
spec (groupgen) into a cache folder keyed by its content.  Also ``python -m lieconv_runtime ...``.
stdout carries one JSON document (the result); stderr the phase lines (``lieconv: data: ...``),
progress bars and, last, one line naming the results.  Bad input is one line ``lieconv: error: ...``
with exit status 2; Ctrl-C exits with status 130.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from lieconv_runtime.tasks import TASKS, TaskError, get_task
from lieconv_runtime.tasks.options import nonneg_int, pos_float, pos_int

PROG = "lieconv"


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
    """A phase line on stderr (above any running progress bar); rank 0 only."""
    from tqdm.auto import tqdm

    from lieconv_runtime.train import distributed as D

    if D.is_main():
        tqdm.write(f"{PROG}: {text}", file=sys.stderr)
        sys.stderr.flush()


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lieconv-groupgen")
    except PackageNotFoundError:
        return "unknown (not installed; run from a source tree)"


# --------------------------------------------------------------------------- groups
def _metric(text: str):
    """--metric: 'name=w,name=w' -> {name: w}, or a JSON matrix -> nested lists."""
    text = text.strip()
    if text.startswith("["):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as e:
            raise argparse.ArgumentTypeError(f"not a JSON matrix ({e.msg}): {text!r}") from None
        return value
    out = {}
    for part in text.split(","):
        key, eq, val = part.partition("=")
        try:
            out[key.strip()] = float(val)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected NAME=WEIGHT[,NAME=WEIGHT...] or a JSON matrix, got {text!r}") \
                from None
        if not eq or not key.strip():
            raise argparse.ArgumentTypeError(f"expected NAME=WEIGHT[,NAME=WEIGHT...], got {text!r}")
    return out


def _resolve_group(args) -> None:
    """Make ``args.group`` a name that `load_group` finds: ``--group-path`` folders and the folder of a
    compiled ``--group spec.yaml`` go in front of $LIECONV_GROUP_PATH (for this process and its workers),
    and are recorded in ``args.group_folders``."""
    folders = [str(Path(p).resolve()) for p in (getattr(args, "group_path", None) or [])]
    for f in folders:
        if not Path(f).is_dir():
            raise CLIError(f"--group-path {f}: no such folder")
    group = getattr(args, "group", None)
    if group and group.endswith((".yaml", ".yml")):
        name, folder = _compile_spec(Path(group))
        args.group = name
        folders.insert(0, str(folder))
    args.group_folders = folders
    if folders:
        old = [p for p in os.environ.get("LIECONV_GROUP_PATH", "").split(os.pathsep) if p and p not in folders]
        os.environ["LIECONV_GROUP_PATH"] = os.pathsep.join(folders + old)
    if getattr(args, "group", None):
        from lieconv_runtime.loader import available_groups, search_folders

        known = available_groups()
        if args.group in known and getattr(args, "metric", None) is not None:
            from lieconv_runtime import load_group

            try:
                load_group(args.group, metric=args.metric, distance=getattr(args, "distance", None))
            except ValueError as e:
                raise CLIError(f"--metric: {e}") from None
        if args.group not in known:
            where = ", ".join(str(f) for f in search_folders())
            raise CLIError(f"unknown group {args.group!r} (available: {', '.join(known)}): no {args.group}.py in "
                           f"{where}; generate it with `groupgen generate SPEC.yaml`, pass --group-path DIR, or "
                           "--group path/to/spec.yaml")


def _compile_spec(path: Path) -> tuple[str, Path]:
    """Compile a spec into ``cache_dir("groups")/<sha256 of the spec>/<Name>.py`` (once; atomic)."""
    import hashlib

    from lieconv_runtime.io import atomic_write_text, cache_dir

    try:
        data = path.read_bytes()
    except OSError as e:
        raise CLIError(f"--group {path}: cannot read the spec ({e.strerror or e})") from None
    try:
        from groupgen.algebra import ClosedFormError, analyze
        from groupgen.emit import render
        from groupgen.spec import SpecError, load_spec
    except ImportError as e:  # sympy missing, say
        raise CLIError(f"--group {path}: compiling a spec needs groupgen ({e})") from None
    try:
        spec = load_spec(path)
    except SpecError as e:
        raise CLIError(str(e)) from None
    folder = cache_dir("groups") / hashlib.sha256(data).hexdigest()[:16]
    target = folder / f"{spec.name}.py"
    if not target.is_file():
        _say(f"group: compiling {path} into {target}")
        try:
            source = render(spec, analyze(spec))
        except ClosedFormError as e:
            raise CLIError(f"{path}: generators: {' '.join(str(e).split())}") from None
        atomic_write_text(target, source)
    return spec.name, folder


# --------------------------------------------------------------------------- run folders
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
        raise CLIError(f"{option} {folder}: cannot write there ({e.strerror or e}); choose a writable folder") from None


def _check_out(out: Path, args) -> None:
    """Refuse to mix runs: --resume needs a checkpoint, an existing run needs --resume or --overwrite."""
    ckpt = out / "checkpoint.pt"
    if args.resume and args.overwrite:
        raise CLIError("--resume and --overwrite exclude each other: continue the run in --out, or replace it")
    if args.resume and not ckpt.is_file():
        raise CLIError(f"--resume: there is no checkpoint {ckpt} to continue from; "
                       f"drop --resume to start a new run there, or point --out at an existing run")
    found = [f for f in ("checkpoint.pt", "train_summary.json", "summary.json", "eval/summary.json")
             if (out / f).exists()]
    if found and not (args.resume or args.overwrite):
        raise CLIError(f"{out} already holds a run ({', '.join(found)}); continue it with --resume, "
                       f"replace it with --overwrite, or choose another --out")
    _check_writable(out, "--out")


def _clear_run(out: Path) -> None:
    """Remove the files of an earlier run in ``out`` (``--overwrite``): the run's files and its eval folder."""
    import shutil

    from lieconv_runtime.tasks.base import RUN_FILES

    for name in RUN_FILES:
        (out / name).unlink(missing_ok=True)
    shutil.rmtree(out / "eval", ignore_errors=True)


def _files_line(folder: Path, files) -> str:
    return f"results in {folder}: {', '.join(str(f) for f in files)}"


def _device(args):
    """``--device``: auto (CUDA when there is one) / cpu / cuda / cuda:N, checked; joins torchrun's group."""
    import torch

    from lieconv_runtime.train import distributed as D

    name = getattr(args, "device", "cpu") or "cpu"
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise CLIError(f"--device {name}: not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise CLIError(f"--device {name}: this torch build or machine has no CUDA device; use --device cpu")
        if device.index is None:  # set_device needs an index
            device = torch.device("cuda", D.local_rank() if D.launched_by_torchrun() else torch.cuda.current_device())
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise CLIError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s)")
        torch.cuda.set_device(device)
    elif device.type != "cpu":
        raise CLIError(f"--device {name}: only cpu and cuda devices are supported")
    precision = getattr(args, "precision", "32")
    if precision == "16" and device.type != "cuda":
        raise CLIError("--precision 16 (float16 with loss scaling) needs a CUDA device; use 32 or bf16 on the CPU")
    D.init_from_env(device)
    return device


# --------------------------------------------------------------------------- commands
def cmd_train(args):
    from lieconv_runtime.tasks.base import config_diff, run_evaluation, train_run
    from lieconv_runtime.train.trainer import read_checkpoint

    task = get_task(args.task)
    _resolve_group(args)
    device = _device(args)
    config = task.config(args)
    if args.group_folders:
        config["group_path"] = args.group_folders
    out = Path(args.out) if args.out else task.default_out(config)
    _check_out(out, args)
    if args.resume:  # before any data work: a foreign or corrupt checkpoint, other settings
        ckpt = out / "checkpoint.pt"
        old = read_checkpoint(ckpt, task.name)["config"]
        diff = config_diff({k: v for k, v in old.items() if k in config}, config)
        if diff:
            raise CLIError(f"--resume: {ckpt} was made with other settings ({', '.join(diff)}); "
                           f"use the same options or another --out")
    if args.overwrite:
        _clear_run(out)
    summary, model, splits = train_run(task, config, out, data_dir=args.data_dir, resume=args.resume,
                                       progress=not args.no_progress, say=_say, stop_after=args.stop_after,
                                       device=device, workers=args.workers, precision=args.precision)
    files = [f for f in ("checkpoint.pt", "metrics.jsonl", "train_summary.json", "run.json", "summary.json")
             if (out / f).exists()]
    if not summary["finished"]:
        return summary, (f"stopped after epoch {summary['epochs_completed']} ({summary['steps']} steps): "
                         f"{_files_line(out, files)}; continue with --resume")
    if getattr(args, "eval", False):
        from lieconv_runtime.train import distributed as D

        meta = {"task": task.name, "model": config.get("model"), "group": config.get("group"),
                "n_train": config.get("n_train"), "seed": config["seed"], "label": task.label(config),
                "checkpoint": summary["checkpoint"], "epochs_completed": summary["epochs_completed"],
                "steps": summary["steps"], "train_time_s": summary["wall_time_s"],
                **{k: v for k, v in summary.items() if k.startswith("best_val_")}}
        ev = run_evaluation(task, model.eval(), config, splits, out / "eval", args=args, meta=meta, say=_say) \
            if D.is_main() or getattr(task, "distributed_eval", False) else {"files": []}
        summary = {**ev, "train": summary, "eval_dir": str(out / "eval")}
        files += [f"eval/{f}" for f in ev.get("files", [])]
    return summary, _files_line(out, files)


def cmd_eval(args):
    from lieconv_runtime.tasks.base import evaluate_run
    from lieconv_runtime.train.trainer import read_checkpoint

    task = get_task(args.task)
    states = [read_checkpoint(p, task.name) for p in args.checkpoint]  # fail fast on any bad path
    for state in states:  # the groups the runs were trained with
        folders = state["config"].get("group_path") or []
        if folders:
            old = [p for p in os.environ.get("LIECONV_GROUP_PATH", "").split(os.pathsep) if p]
            os.environ["LIECONV_GROUP_PATH"] = os.pathsep.join(folders + [p for p in old if p not in folders])
    device = _device(args)
    base = Path(args.out) if args.out else Path(states[0]["path"]).parent / "eval"
    _check_writable(base, "--out")
    results, files = [], []
    for i, state in enumerate(states):
        label = task.label(state["config"])
        sub = "" if len(states) == 1 else f"{i}-{label.replace('(', '-').replace(')', '')}"
        out = base / sub if sub else base
        res = evaluate_run(task, state["path"], out_dir=out, data_dir=args.data_dir, args=args,
                           progress=not args.no_progress, say=_say, device=device)
        results.append(res)
        files += [f"{sub}/{f}" if sub else f for f in res.get("files", [])]
    if len(results) == 1:
        return results[0], _files_line(base, files)
    files += task.compare(results, base, plots=not getattr(args, "no_plots", False))
    return results, _files_line(base, files)


def cmd_study(args):
    from lieconv_runtime.tasks.study import run_study

    task = get_task(args.task)
    out = Path(args.out or f"runs/{task.name}/study-{args.preset}")
    if not args.dry_run:
        _check_writable(out, "--out")
    result = run_study(task, args.preset, args, out_dir=out, data_dir=args.data_dir, jobs=args.jobs,
                       threads=args.threads, progress=not args.no_progress, dry_run=args.dry_run, say=_say,
                       device=_device(args))
    if args.dry_run:
        return result, f"dry run: {len(result['runs'])} runs planned (nothing written)"
    return result, _files_line(out, result["files"])


def _read_metrics(arg: str) -> tuple[Path, list[dict]]:
    path = Path(arg)
    metrics = path if path.is_file() else path / "metrics.jsonl"
    if not metrics.is_file():
        raise CLIError(f"{metrics} not found: RUN_DIR must be the --out folder of `lieconv train` "
                       f"(it holds metrics.jsonl)")
    from lieconv_runtime.train.trainer import read_metrics

    try:
        records = read_metrics(metrics)
    except (OSError, UnicodeDecodeError) as e:
        raise CLIError(f"cannot read {metrics}: {e}") from None
    if not records:
        raise CLIError(f"{metrics} has no epoch records: the run has not finished an epoch yet "
                       f"(or this is not a metrics file of `lieconv train`)")
    return metrics, records


def cmd_plot(args):
    from lieconv_runtime.train.plots import plot_learning_curves

    labels, dirs, all_records = [], [], []
    for arg in args.run_dir:
        metrics, records = _read_metrics(arg)
        label = metrics.parent.name
        try:
            run = json.loads((metrics.parent / "run.json").read_text())["run"]
            label = get_task(run["task"]).label(run) + (f" n={run['n_train']}" if run.get("n_train") else "")
        except (OSError, ValueError, KeyError, TypeError, TaskError):
            pass
        labels.append(label)
        dirs.append(metrics.parent)
        all_records.append(records)
    if len(set(labels)) < len(labels):  # tell equal labels apart by their folders
        labels = [f"{label} [{d}]" for label, d in zip(labels, dirs)]
    runs = dict(zip(labels, all_records))
    if args.out:
        out = Path(args.out)
    elif len(dirs) == 1:
        out = dirs[0] / "learning_curves.png"
    else:
        out = Path(os.path.commonpath([str(d.resolve()) for d in dirs])) / "learning_curves.png"
    if out.suffix.lower() not in (".png", ".pdf", ".svg"):
        raise CLIError(f"--out {out}: the file must end in .png, .pdf or .svg")
    _check_writable(out.parent, "--out")
    plot_learning_curves(runs, out, title="Learning curves: training loss (solid) and validation metric (dashed)")
    return {"plot": str(out), "runs": [str(d) for d in dirs],
            "epochs": {label: len(r) for label, r in runs.items()}}, f"wrote {out}"


def cmd_data(args):
    task = get_task(args.task)
    return task.data_command(args, _say)


# --------------------------------------------------------------------------- parser
def _add_common(p, task, threads: int = 1) -> None:
    p.add_argument("--threads", type=pos_int, default=threads,
                   help="torch intra-op threads" + (" (default 1: fastest for small models on a busy 2-core CPU)"
                                                    if threads == 1 else ""))
    p.add_argument("--no-progress", action="store_true", help="no progress bars (phase lines stay)")
    p.add_argument("--device", default="auto", help="auto (CUDA when there is one, else the CPU), cpu, cuda, cuda:N")
    p.add_argument("--data-dir", default=None, help=task.data_dir_help())


def _add_group_options(p, d: dict) -> None:
    from lieconv_runtime import available_groups

    p.add_argument("--group", default=d.get("group"),
                   help="symmetry group: a name (searched in --group-path folders, $LIECONV_GROUP_PATH, the user "
                        f"group folder and the shipped groups: {', '.join(available_groups())}) or a spec file "
                        "(path/to/spec.yaml, compiled and cached)")
    p.add_argument("--group-path", action="append", default=None, metavar="DIR",
                   help="folder of generated group modules, searched first (repeatable)")
    p.add_argument("--metric", type=_metric, default=None, metavar="METRIC",
                   help="metric on the group's Lie algebra, d^2 = a^T M a + alpha |dq|^2 (default: the spec's, else "
                        "Frobenius): generator weights 'theta=0.0028,tx=1' (unlisted: 1) or a JSON matrix "
                        "'[[...], ...]' in generator order")
    p.add_argument("--distance", choices=("quadrature", "sum"), default=None,
                   help="how a pair's rotation part and the rest add up in the distance that picks neighbours: "
                        "quadrature (d^2 = a^T M a + alpha |dq|^2, the default) or sum (d = |rotation part| + "
                        "|rest|, each in the metric, as the original code adds them)")


def _add_train_options(p, task, d: dict) -> None:
    t = {**task.train_defaults, **d}
    p.add_argument("--epochs", type=pos_float, default=t.get("epochs", 100),
                   help="training epochs (may be fractional; the cosine schedule spans the run)")
    p.add_argument("--max-steps", type=pos_int, default=t.get("max_steps"),
                   help="cap the run at this many optimizer steps (default: none)")
    p.add_argument("--lr", type=pos_float, default=t.get("lr"),
                   help="learning rate" + ("" if t.get("lr") else " (default: the paper's for the model/group)"))
    p.add_argument("--batch-size", type=pos_int, default=t.get("batch_size", 200),
                   help="training batch size (over all processes)")
    p.add_argument("--patience", type=pos_int, default=t.get("patience"),
                   help="early stopping patience in epochs (default: off; the best-validation weights are kept)")
    p.add_argument("--val-every", type=pos_int, default=t.get("val_every", 1), metavar="EPOCHS",
                   help="validate every this many epochs and after the last")
    p.add_argument("--seed", type=nonneg_int, default=0, help="seed of the initialisation and the shuffling")
    p.add_argument("--dtype", choices=["float32", "float64"], default=t.get("dtype", "float32"), help="training dtype")
    p.add_argument("--precision", choices=["32", "bf16", "16"], default="32",
                   help="32, or autocast to bf16 / (CUDA only) fp16 with loss scaling; lifting, logs, distances and "
                        "neighbourhoods stay in the --dtype")
    p.add_argument("--workers", type=nonneg_int, default=0, help="DataLoader worker processes (0: load in this one)")
    out_default = d.get("out")
    p.add_argument("--out", default=out_default,
                   help="run folder: checkpoint.pt, metrics.jsonl, train_summary.json, run.json, summary.json, eval/"
                        + ("" if out_default else " (default: runs/<task>/<model>[-<group>]...)"))
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its checkpoint.pt (error if there is none)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier run in --out (without it, or --resume, an existing run is refused)")
    p.add_argument("--stop-after", type=pos_int, default=None, metavar="EPOCHS",
                   help="leave after this many epochs of this call (continue later with --resume; default: off)")


def _task_parsers(sub, command: str, help_: str, kw: dict):
    p = sub.add_parser(command, help=help_, description=help_, **kw)
    tasks = p.add_subparsers(dest="task", required=True, metavar="{" + ",".join(TASKS) + "}", parser_class=_Parser)
    return [(tasks.add_parser(name, help=get_task(name).description, description=get_task(name).description, **kw),
             get_task(name)) for name in TASKS]


def build_parser() -> argparse.ArgumentParser:
    kw = dict(formatter_class=_HelpFormatter)
    parser = _Parser(prog=PROG, description="LieConv runtime: train, evaluate and study the tasks (springs, paper §6; "
                     "rotmnist, Table 1; qm9, Tables 2-3). Results go to stdout as JSON; phase lines, progress bars "
                     "and a last line naming the results go to stderr.", **kw)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}",
                        help="print the installed version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{train,eval,study,run,plot,data}",
                                parser_class=_Parser)
    for p, task in _task_parsers(sub, "train", "train a model of a task", kw):
        _add_common(p, task)
        _add_group_options(p, {"group": task.train_defaults.get("group")})
        task.add_options(p, {})
        _add_train_options(p, task, {})
        p.add_argument("--eval", action="store_true", help="evaluate after training (writes OUT/eval)")
        task.add_eval_options(p, {})
    for p, task in _task_parsers(sub, "eval", "evaluate checkpoints of a task", kw):
        _add_common(p, task)
        p.add_argument("--checkpoint", nargs="+", required=True, help="checkpoint file(s) or run folder(s)")
        p.add_argument("--out", default=None, help="output folder (default: <checkpoint folder>/eval)")
        task.add_eval_options(p, {})
    for p, task in _task_parsers(sub, "study", "run a task's study preset", kw):
        _add_common(p, task)
        p.add_argument("--preset", choices=sorted(task.presets) or None, default=next(iter(task.presets), None),
                       help="; ".join(f"{k}: {v}" for k, v in task.presets.items()) or "no presets")
        task.add_study_options(p)
        p.add_argument("--jobs", type=pos_int, default=None, help="runs trained in parallel processes "
                                                                  "(default: the preset's)")
        p.add_argument("--out", default=None, help="study folder (default: runs/<task>/study-<preset>)")
        p.add_argument("--dry-run", action="store_true", help="list the runs and exit")
    for p, task in _task_parsers(sub, "run", "the main job of a task: train, evaluate, plots", kw):
        p.description = f"The main job of {task.name}: {task.quick_description}"
        _add_common(p, task, threads=task.quick.get("threads", 2))  # one process: both cores, unless the task says
        _add_group_options(p, task.quick)
        task.add_options(p, task.quick)
        _add_train_options(p, task, task.quick)
        task.add_eval_options(p, task.quick)
        p.set_defaults(eval=True)
    p = sub.add_parser("plot", help="learning curves of training runs",
                       description="Training loss and validation metric per epoch (log scale) from each run's "
                                   "metrics.jsonl, several runs overlaid.", **kw)
    p.add_argument("run_dir", nargs="+", metavar="RUN_DIR", help="run folder(s) (the --out of `lieconv train`)")
    p.add_argument("--out", default=None, help="image file, .png/.pdf/.svg (default: RUN_DIR/learning_curves.png; "
                                               "for several runs learning_curves.png in their common folder)")
    for p, task in _task_parsers(sub, "data", "prepare, download, list or remove a task's data", kw):
        p.add_argument("--data-dir", default=None, help=task.data_dir_help())
        p.add_argument("--no-progress", action="store_true", help="no progress bars")
        task.add_data_options(p)
    return parser


def _resume_hint(args) -> str:
    """`` (continue with --resume)`` when the interrupted run left a checkpoint."""
    try:
        out = Path(args.out) if args.out else get_task(args.task).default_out(get_task(args.task).config(args))
        return " (continue with --resume)" if (out / "checkpoint.pt").is_file() else ""
    except Exception:  # the hint is a courtesy
        return ""


COMMANDS = {"train": cmd_train, "eval": cmd_eval, "study": cmd_study, "run": cmd_train, "plot": cmd_plot,
            "data": cmd_data}


def main(argv=None) -> int:
    """Entry point of the ``lieconv`` script; returns the exit status (in a torchrun job, after
    leaving the process group)."""
    from lieconv_runtime.train import distributed as D

    try:
        status = _main(argv)
    except BaseException:
        D.shutdown(ok=False)
        raise
    D.shutdown(ok=status == 0)
    return status


def _main(argv) -> int:
    from lieconv_runtime.data.errors import DataError
    from lieconv_runtime.loader import GroupNotFoundError
    from lieconv_runtime.models.registry import RegistryError
    from lieconv_runtime.train.trainer import CheckpointError

    command, args = None, None
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
    except (CLIError, TaskError, RegistryError, CheckpointError, DataError, GroupNotFoundError) as e:
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
    except Exception as e:  # noqa: BLE001 - only the failure of another process of a torchrun job
        import torch.distributed as dist

        peer = dist.is_initialized() and isinstance(e, RuntimeError) and any(
            w in str(e) for w in ("Connection closed by peer", "Connection reset", "gloo", "NCCL", "timed out"))
        if not (isinstance(e, dist.DistError) or peer):
            raise
        print(f"{PROG}: error: another process of this job failed ({type(e).__name__}: "
              f"{' '.join(str(e).split())[:200]}){_resume_hint(args) if command in ('train', 'run') else ''}",
              file=sys.stderr)
        return 1
    from lieconv_runtime.train import distributed as D

    if D.is_main():
        try:
            print(json.dumps(result, indent=1, default=str), flush=True)
        except BrokenPipeError:  # e.g. `lieconv ... | head`
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        _say(f"done: {last_line}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
