"""``lieconv``: spring-dynamics training, evaluation, data-size study and a quick main job.

    lieconv train springs --model HFC [--group G] [--n-train N] [--epochs E] [--eval] ...
    lieconv eval  springs --checkpoint RUN_DIR/checkpoint.pt [--solver dopri5] ...
    lieconv study springs --preset cpu|full [--models HFC FC ...]
    lieconv run   springs            # quick main job: HLieResNet(T2), train, evaluate, plots (~4 min, 2 cores)

Bad inputs print one line ``lieconv: error: ...`` to stderr and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

#: Model of ``lieconv run springs``: the paper's LieConv Hamiltonian model with T(2) symmetry.
QUICK_MODEL = ("HLieResNet", "T2")

PROG = "lieconv"


class CLIError(Exception):
    """A user error: reported as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of usage + message
        raise CLIError(f"{message} (see `{self.prog} --help`)")


def _pos_int(text: str) -> int:
    v = int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return v


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


def train_springs(run: dict, out_dir, *, data_dir=None, resume: bool = False, progress: bool = True,
                  stop_after: int | None = None):
    """Train the model of ``run`` (see :func:`make_run`) into ``out_dir``.

    Returns ``(summary, model, splits)``; ``checkpoint.pt`` records ``run`` under
    ``config["run"]``; ``run.json`` notes the data folder for ``lieconv eval``.
    """
    import torch

    from lieconv_runtime.models.registry import build_model
    from lieconv_runtime.train import Trainer
    from lieconv_runtime.train.evaluate import DTYPES, load_run_splits, read_checkpoint
    from lieconv_runtime.train.trainer import atomic_write_text

    out = Path(out_dir)
    d = run["data"]
    avail = d["n_systems"] - d["n_val"] - d["n_test"]
    if run["n_train"] > avail:
        raise CLIError(f"n_train={run['n_train']} exceeds the {max(avail, 0)} training systems of the data "
                       f"(n_systems={d['n_systems']} - n_val={d['n_val']} - n_test={d['n_test']}); raise --n-systems")
    torch.manual_seed(run["seed"])
    model = build_model(run["model"], run["n_particles"], run["dim"], run["group"], **run["model_kw"])
    model = model.to(DTYPES[run["dtype"]])
    try:
        splits = load_run_splits(run, data_dir, progress=progress)
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
    out.mkdir(parents=True, exist_ok=True)
    sidecar = {"run": run, "data_dir": None if data_dir is None else str(Path(data_dir).resolve())}
    atomic_write_text(json.dumps(sidecar, indent=1) + "\n", out / "run.json")
    summary = trainer.fit(stop_after_epochs=stop_after)
    times = [json.loads(line)["epoch_time_s"] for line in trainer.metrics_path.read_text().splitlines() if line]
    summary.pop("run", None)
    summary = {"model": run["model"], "group": run["group"], **summary,
               "epoch_time_s_mean": round(sum(times) / len(times), 4) if times else None,
               "checkpoint": str(trainer.checkpoint_path), "out_dir": str(out)}
    if summary["finished"]:
        atomic_write_text(json.dumps(summary, indent=1) + "\n", trainer.summary_path)
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
                rollout_dtype=DTYPES[args.rollout_dtype], plots=not args.no_plots)


def cmd_train(args) -> dict:
    run = make_run(args)
    out = Path(args.out) if args.out else default_out(run)
    summary, model, splits = train_springs(run, out, data_dir=args.data_dir, resume=args.resume,
                                           progress=not args.no_progress, stop_after=args.stop_after)
    if args.eval and summary["finished"]:
        from lieconv_runtime.train.evaluate import evaluate_model

        meta = {"model": run["model"], "group": run["group"], "n_train": run["n_train"], "seed": run["seed"],
                "checkpoint": summary["checkpoint"], "epochs_completed": summary["epochs_completed"],
                "best_val_mse": summary["best_val_mse"], "train_time_s": summary["wall_time_s"]}
        ev = evaluate_model(model, splits, out_dir=out / "eval", meta=meta, **_eval_kwargs(args))
        summary = {**ev, "train": summary, "eval_dir": str(out / "eval")}
    return summary


def cmd_eval(args) -> dict | list:
    from lieconv_runtime.train.evaluate import evaluate_model, load_run_splits, model_from_checkpoint, read_checkpoint

    states = [read_checkpoint(p) for p in args.checkpoint]  # fail fast on any bad path
    results, data_cache = [], {}
    for i, state in enumerate(states):
        run = state["config"]["run"]
        ckpt = Path(state["path"])
        base = Path(args.out) if args.out else ckpt.parent / "eval"
        label = f"{run['model']}({run['group']})" if run["group"] else run["model"]
        out = base if len(states) == 1 else base / f"{i}-{label.replace('(', '-').replace(')', '')}"
        data_dir = args.data_dir or _sidecar_data_dir(ckpt.parent)
        key = json.dumps([run["data"], run["n_train"], run["n_particles"], run["dim"], run["dtype"], data_dir])
        if key not in data_cache:
            try:
                data_cache[key] = load_run_splits(run, data_dir, progress=not args.no_progress)
            except ValueError as e:
                raise CLIError(str(e)) from None
        model = model_from_checkpoint(state)
        meta = {"model": run["model"], "group": run["group"], "n_train": run["n_train"], "seed": run["seed"],
                "label": label, "checkpoint": str(ckpt), "epochs_completed": state.get("epoch"),
                "checkpoint_finished": state.get("finished"), "best_val_mse": state.get("best_val"),
                "out_dir": str(out)}
        results.append(evaluate_model(model, data_cache[key], out_dir=out, meta=meta, **_eval_kwargs(args)))
    if len(results) == 1:
        return results[0]
    _compare_plot(results, Path(args.out) if args.out else Path(states[0]["path"]).parent / "eval", args)
    return results


def _sidecar_data_dir(run_dir: Path):
    try:
        return json.loads((run_dir / "run.json").read_text()).get("data_dir")
    except (OSError, ValueError):
        return None


def _compare_plot(results: list, out: Path, args) -> None:
    """Overlay the conservation curves of several evaluated checkpoints (paper Fig. 7)."""
    import numpy as np

    from lieconv_runtime.train.evaluate import METRICS
    from lieconv_runtime.train.plots import plot_conservation
    from lieconv_runtime.train.trainer import atomic_write_text

    labels = [r["label"] for r in results]
    if len(set(labels)) < len(labels):  # same model/group: tell the runs apart
        labels = [f"{r['label']} n={r['n_train']} seed={r['seed']} #{i}" for i, r in enumerate(results)]
    curves = {}
    for label, r in zip(labels, results):
        with np.load(Path(r["out_dir"]) / "curves.npz") as z:
            curves[label] = {"ts": z["ts"], **{k: z[k] for k in METRICS}}
    if not args.no_plots:
        plot_conservation(curves, out / "conservation_comparison.png")
    atomic_write_text(json.dumps(results, indent=1) + "\n", out / "comparison.json")


def cmd_study(args) -> dict:
    from lieconv_runtime.train.study import run_study

    return run_study(args.preset, models=args.models, out_dir=args.out, data_dir=args.data_dir,
                     n_train=args.n_train, repeats=args.repeats, jobs=args.jobs, threads=args.threads,
                     progress=not args.no_progress, dry_run=args.dry_run)


# --------------------------------------------------------------------------- parser
def _add_data_train_options(p, d: dict) -> None:
    p.add_argument("--model", default=d.get("model"), required="model" not in d,
                   help="model name (FC, HFC, OGN, HOGN, ... see the error for the list)")
    p.add_argument("--group", default=d.get("group"), help="symmetry group for group-based models (e.g. T2)")
    p.add_argument("--model-kw", type=_kv, nargs="*", metavar="KEY=VALUE", help="extra builder options, e.g. width=64")
    p.add_argument("--n-train", type=_pos_int, default=d.get("n_train", 3000))
    p.add_argument("--n-val", type=_pos_int, default=d.get("n_val", 200))
    p.add_argument("--n-test", type=_pos_int, default=d.get("n_test", 2000))
    p.add_argument("--n-systems", type=_pos_int, default=d.get("n_systems", 10000),
                   help="systems in the generated data set (val/test are its last ones)")
    p.add_argument("--n-particles", type=_pos_int, default=6)
    p.add_argument("--dim", type=_pos_int, default=2, choices=[2, 3])
    p.add_argument("--n-times", type=_pos_int, default=500, help="time steps of each trajectory")
    p.add_argument("--t-end", type=float, default=5.0)
    p.add_argument("--data-seed", type=int, default=0)
    p.add_argument("--data-dir", default=None, help="data cache folder (default ~/.cache/lieconv/springs)")
    p.add_argument("--epochs", type=_pos_int, default=d.get("epochs", 100))
    p.add_argument("--lr", type=float, default=None, help="default: the paper's lr for the model/group")
    p.add_argument("--batch-size", type=_pos_int, default=200)
    p.add_argument("--patience", type=_pos_int, default=None, help="early stopping patience (default: off; "
                   "the best-validation weights are always kept)")
    p.add_argument("--val-every", type=_pos_int, default=1, metavar="EPOCHS",
                   help="validate every this many epochs and after the last (default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--out", default=d.get("out"), help="output folder (default runs/springs/<model>-n<N>-s<seed>)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--stop-after", type=_pos_int, default=None, metavar="EPOCHS",
                   help="leave after this many epochs of this call (continue later with --resume)")


def _add_eval_options(p, d: dict) -> None:
    p.add_argument("--n-rollouts", type=_pos_int, default=d.get("n_rollouts", 100),
                   help="test trajectories rolled out over their full length")
    p.add_argument("--solver", choices=["dopri5", "rk4"], default="dopri5")
    p.add_argument("--rtol", type=float, default=1e-8)
    p.add_argument("--atol", type=float, default=1e-10)
    p.add_argument("--step-size", type=float, default=None, help="rk4 step (default: the data grid)")
    p.add_argument("--net-momentum", type=float, default=None,
                   help="std of the net momentum given to test systems by an exact boost (default 0.6*sqrt(N))")
    p.add_argument("--rollout-dtype", choices=["float32", "float64"], default="float64")
    p.add_argument("--no-plots", action="store_true")


def _add_common(p) -> None:
    p.add_argument("task", choices=["springs"])
    p.add_argument("--threads", type=_pos_int, default=1,
                   help="torch intra-op threads (default 1: fastest for these small models on a busy 2-core CPU)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


QUICK_DEFAULTS = {"model": QUICK_MODEL[0], "group": QUICK_MODEL[1], "n_train": 400, "n_val": 100, "n_test": 200,
                  "n_systems": 1100, "epochs": 20, "n_rollouts": 10, "out": "runs/springs/quick"}


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="LieConv runtime: spring-dynamics experiments (paper §6).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{train,eval,study,run}")
    p = sub.add_parser("train", help="train a dynamics model", description="Train a spring-dynamics model.")
    _add_common(p)
    _add_data_train_options(p, {})
    p.add_argument("--eval", action="store_true", help="evaluate after training (writes OUT/eval)")
    _add_eval_options(p, {})
    p = sub.add_parser("eval", help="evaluate a checkpoint", description="Test MSE, long rollouts, plots.")
    _add_common(p)
    p.add_argument("--checkpoint", nargs="+", required=True, help="checkpoint file(s) or run folder(s)")
    p.add_argument("--out", default=None, help="output folder (default: <checkpoint folder>/eval)")
    p.add_argument("--data-dir", default=None)
    _add_eval_options(p, {})
    p = sub.add_parser("study", help="data-size study (paper Fig. 8)", description="Test MSE vs n_train.")
    _add_common(p)
    p.add_argument("--preset", choices=["cpu", "full"], default="cpu")
    p.add_argument("--models", nargs="+", default=None, help="MODEL or MODEL:GROUP entries (default: the preset's)")
    p.add_argument("--n-train", type=_pos_int, nargs="+", default=None, help="override the preset's sizes")
    p.add_argument("--repeats", type=_pos_int, default=None)
    p.add_argument("--jobs", type=_pos_int, default=None,
                   help="runs trained in parallel processes (default: cpu preset 2, full 1)")
    p.add_argument("--out", default=None, help="default runs/springs/study-<preset>")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--dry-run", action="store_true", help="list the runs and exit")
    q = QUICK_DEFAULTS
    p = sub.add_parser("run", help="quick main job: train + eval + plots",
                       description=f"Quick springs run: {q['model']}({q['group']}), n_train {q['n_train']}, "
                                   f"{q['epochs']} epochs, then evaluation and plots in {q['out']}/eval.")
    _add_common(p)
    p.set_defaults(threads=2)  # one process: both cores
    _add_data_train_options(p, QUICK_DEFAULTS)
    _add_eval_options(p, QUICK_DEFAULTS)
    p.set_defaults(eval=True)
    return parser


COMMANDS = {"train": cmd_train, "eval": cmd_eval, "study": cmd_study, "run": cmd_train}


def main(argv=None) -> int:
    """Entry point of the ``lieconv`` script; returns the exit status."""
    from lieconv_runtime.models.registry import RegistryError
    from lieconv_runtime.train.evaluate import CheckpointError

    try:
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as e:  # --help
            return int(e.code or 0)
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        result = COMMANDS[args.command](args)
    except (CLIError, RegistryError, CheckpointError) as e:
        print(f"{PROG}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted (continue with --resume)", file=sys.stderr)
        return 130
    try:
        print(json.dumps(result, indent=1))
    except BrokenPipeError:  # e.g. `lieconv ... | head`
        sys.stdout = None
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
