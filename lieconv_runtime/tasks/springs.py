"""The springs task (paper §6): learn the dynamics of spring systems; test MSE, long rollouts, Fig. 7-8.

Data: `lieconv_runtime.data.springs` (exact simulation, cached).  Models: the registry of
`lieconv_runtime.models.registry` (HLieResNet over any 2D/3D group, FC, HFC, OGN, HOGN).  Loss: the
MSE of the states predicted over a chunk of 5 time steps (RK4 on the chunk grid).  Evaluation: test
MSE and long rollouts (`tasks.springs_rollouts`): energy and momentum conservation, plots.  Study
presets: test MSE against n_train (paper Fig. 8).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path


from lieconv_runtime.io import atomic_write_text
from lieconv_runtime.tasks.base import DTYPES, PlannedRun, Splits, Task, TaskError
from lieconv_runtime.tasks.options import int_at_least, key_value, nonneg_float, nonneg_int, pos_float, pos_int
from lieconv_runtime.train.trainer import Regression

__all__ = ["Springs", "epochs_for"]


def epochs_for(n_train: int, scale: float = 1.0, min_steps: int = 0, batch_size: int = 200) -> int:
    """Paper rule ``floor(sqrt(1e7 / n))``, scaled, and at least ``min_steps`` optimizer steps."""
    epochs = max(1, int(math.floor(math.sqrt(1e7 / n_train) * scale)))
    return max(epochs, math.ceil(min_steps / math.ceil(n_train / batch_size)))


#: Study presets: models, training sizes, repeats, epoch rule, split sizes, rollout settings.
PRESETS = {
    # cpu: batch 25 (the paper's is 200), so the paper's epochs at 1/8 give 79 / 156 / 304 steps for
    # n = 25 / 100 / 400: a larger training set also gets more steps, as in the paper's protocol.
    # At batch 200 every run got about 60 steps and the test error rose with n.
    "cpu": dict(models=("HLieResNet:T2", "HLieResNet:SO2", "HLieResNet:SE2", "HLieResNet:Trivial2", "HFC", "FC",
                        "OGN", "HOGN"),
                n_train=(25, 100, 400), repeats=1, epoch_scale=1 / 8, n_val=100, n_test=500, jobs=2, n_rollouts=10,
                min_steps=60, validations=15, batch_size=25, model_kw={"HLieResNet": {"width": 128}},
                rollout={"solver": "dopri5", "rtol": 1e-5, "atol": 1e-8, "max_steps": 2000},
                description="8 models x n_train 25/100/400, batch 25, 1/8 of the paper's epochs (79 / 156 / 304 "
                            "steps), HLieResNet at width 128, 1 seed, 2 parallel jobs"),
    "full": dict(models=("HLieResNet:T2", "HLieResNet:SO2", "HLieResNet:SE2", "HLieResNet:Trivial2", "HFC", "FC",
                         "OGN", "HOGN"), n_train=(10, 25, 50, 100, 400, 1000, 3000, 10000, 30000, 96000), repeats=3,
                 epoch_scale=1.0, n_val=200, n_test=2000, jobs=1, n_rollouts=100, min_steps=0, validations=None,
                 batch_size=200, model_kw={},
                 rollout={"solver": "dopri5", "rtol": 1e-8, "atol": 1e-10},
                 description="the paper: n_train 10 ... 96000, 3 seeds, epochs floor(sqrt(1e7 / n))"),
}


class Springs(Task):
    name = "springs"
    description = "spring dynamics (paper §6): learn dz/dt of 6 coupled particles; test MSE, long rollouts"
    train_defaults = {"epochs": 100, "batch_size": 200, "lr": None}
    #: The main job: the paper's HLieResNet(T2) at width 128 with batch 25 and lr 3e-3, so that 400
    #: systems give 16 steps per epoch (480 in all) instead of 2 (see docs/tasks/springs.md).  One
    #: thread: its GEMMs are small, and a second thread on a busy core made steps 100x slower.
    quick = {"model": "HLieResNet", "group": "T2", "n_train": 400, "n_val": 100, "n_test": 200, "n_systems": 1100,
             "epochs": 30, "batch_size": 25, "lr": 3e-3, "model_kw": [("width", 128)], "n_rollouts": 10,
             "threads": 1, "out": "runs/springs/quick"}
    quick_description = ("HLieResNet(T2) of width 128, n_train 400, 30 epochs of batch 25 at lr 3e-3 (these training "
                         "settings apply to any --model), then 10 long rollouts and plots in OUT/eval")
    presets = {name: p["description"] for name, p in PRESETS.items()}

    # --- command line -------------------------------------------------------------------------------
    def add_options(self, p, d: dict) -> None:
        from lieconv_runtime.models.registry import describe_models

        p.add_argument("--model", default=d.get("model"), required="model" not in d,
                       help=f"model to train: {describe_models()}")
        kw = d.get("model_kw")
        p.add_argument("--model-kw", type=key_value, nargs="*", metavar="KEY=VALUE", default=kw,
                       help="extra builder options of the model, e.g. width=64 num_layers=2 (default: "
                            + (" ".join(f"{k}={v}" for k, v in kw) if kw else "none") + ")")
        p.add_argument("--compile", action="store_true",
                       help="Hamiltonian models: training derivatives by torch.compile (one graph per batch shape, "
                            "compiled on first use: about 25 s on 2 CPU cores, 7 s when inductor's cache holds it "
                            "from an earlier run; epochs then about 2x faster for HLieResNet(T2)). Needs a C++ "
                            "compiler on the CPU; groups whose forward pass branches on the data (SO2, SE2) do not "
                            "compile")
        p.add_argument("--n-train", type=pos_int, default=d.get("n_train", 3000), help="training systems")
        p.add_argument("--n-val", type=pos_int, default=d.get("n_val", 200), help="validation systems")
        p.add_argument("--n-test", type=pos_int, default=d.get("n_test", 2000),
                       help="test systems (test MSE on their chunks; rollouts start from the first --n-rollouts)")
        self._add_data_options(p, d)

    def _add_data_options(self, p, d: dict) -> None:
        p.add_argument("--n-systems", type=pos_int, default=d.get("n_systems", 10000),
                       help="systems in the generated data set; train = the first --n-train, val and test its last "
                            "ones. Cached as float64: n_systems x n_times x 4 x n_particles x dim x 8 bytes "
                            "(960 MB for 10,000 systems of 6 particles in 2D at 500 times)")
        p.add_argument("--n-particles", type=int_at_least(2), default=6, help="particles per system")
        p.add_argument("--dim", type=int, default=2, choices=[2, 3], help="space dimension")
        p.add_argument("--n-times", type=int_at_least(5), default=500,
                       help="time points of each trajectory (grid of the rollouts; training chunks are 5 points)")
        p.add_argument("--t-end", type=pos_float, default=5.0, help="length of each trajectory in time units")
        p.add_argument("--data-seed", type=nonneg_int, default=0, help="seed of the generated data set")

    def add_eval_options(self, p, d: dict) -> None:
        from lieconv_runtime.tasks.springs_rollouts import (RK4_BATCH, ROLLOUT_BATCH, STEPS_PER_GRID_STEP,
                                                            worst_case_evaluations)

        p.add_argument("--n-rollouts", type=pos_int, default=d.get("n_rollouts", 100),
                       help="test trajectories rolled out over their full length")
        p.add_argument("--solver", choices=["dopri5", "rk4"], default="dopri5",
                       help="rollout solver: adaptive dopri5 (with a step budget and RK4 fallback) or fixed-step rk4")
        p.add_argument("--rtol", type=pos_float, default=1e-8, help="relative tolerance of dopri5")
        p.add_argument("--atol", type=pos_float, default=1e-10, help="absolute tolerance of dopri5")
        p.add_argument("--rollout-steps", type=pos_int, default=None, metavar="STEPS",
                       help=f"step budget of one dopri5 rollout batch: attempted steps (accepted or rejected) over "
                            f"the whole trajectory. A batch over it, on pace to go over it, with a step underflow or a "
                            f"non-finite state is redone with RK4 on the data grid (counted in summary.json as "
                            f"rk4_fallback_rollouts). Default: {STEPS_PER_GRID_STEP} x (n_times - 1) = "
                            f"{STEPS_PER_GRID_STEP * 499} for 500 times. Worst case per trajectory: 2 + 6 x STEPS "
                            f"model evaluations (dopri5) + 4 x (n_times - 1) (RK4) = "
                            f"{worst_case_evaluations(500):,} at the defaults")
        p.add_argument("--rollout-batch", type=pos_int, default=ROLLOUT_BATCH, metavar="N",
                       help=f"trajectories per dopri5 batch (they share the step size, so one stiff trajectory "
                            f"sends its batch to RK4; the RK4 fallback runs in batches of {RK4_BATCH})")
        p.add_argument("--step-size", type=pos_float, default=None, help="rk4 step (default: the data grid)")
        p.add_argument("--net-momentum", type=nonneg_float, default=None,
                       help="std of the net momentum given to test systems by an exact boost, 0 = none "
                            "(default: 0.6 sqrt(n_particles))")
        p.add_argument("--rollout-dtype", choices=["float32", "float64"], default="float64", help="rollout dtype")
        p.add_argument("--no-plots", action="store_true", help="skip trajectories.png and conservation.png")

    def add_data_options(self, p) -> None:
        g = p.add_mutually_exclusive_group()
        g.add_argument("--list", action="store_true", help="list the caches and their sizes (what it does by default)")
        g.add_argument("--clean", action="store_true",
                       help="remove every cached data set and stale temp file in the folder (files being written by "
                            "a running process are kept)")

    def add_study_options(self, p) -> None:
        p.add_argument("--models", nargs="+", default=None, help="MODEL or MODEL:GROUP entries (default: the preset's)")
        p.add_argument("--n-train", type=pos_int, nargs="+", default=None, help="training sizes (default: the preset's)")
        p.add_argument("--repeats", type=pos_int, default=None, help="seeds per size (default: the preset's)")

    def data_dir_help(self) -> str:
        from lieconv_runtime.data.springs import default_cache_dir

        return ("folder of the cached springs data sets (default: $LIECONV_CACHE/springs, else "
                f"$XDG_CACHE_HOME/lieconv/springs, else ~/.cache/lieconv/springs; here: {default_cache_dir()})")

    def config(self, args) -> dict:
        from lieconv_runtime.models.registry import RegistryError, check_model, get_spec, paper_lr

        try:
            spec = get_spec(args.model)
            group = args.group
            if getattr(args, "command", None) == "run" and group == self.quick["group"] and not spec.needs_group:
                group = None  # `lieconv run springs --model HFC`: the main job's default group does not apply
            check_model(spec.name, args.dim, group)
        except RegistryError as e:
            raise TaskError(str(e)) from None
        config = {
            "task": "springs", "model": spec.name, "group": group, "model_kw": dict(args.model_kw or []),
            "n_particles": args.n_particles, "dim": args.dim, "n_train": args.n_train, "dtype": args.dtype,
            "epochs": args.epochs, "lr": args.lr if args.lr is not None else paper_lr(spec.name, group),
            **({"metric": args.metric} if getattr(args, "metric", None) is not None else {}),
            **({"distance": args.distance} if getattr(args, "distance", None) else {}),
            "batch_size": args.batch_size, "seed": args.seed, "patience": args.patience,
            **({"val_every": args.val_every} if args.val_every != 1 else {}),
            **({"max_steps": args.max_steps} if args.max_steps is not None else {}),
            **({"compile": True} if getattr(args, "compile", False) else {}),
            "data": {"n_systems": args.n_systems, "n_val": args.n_val, "n_test": args.n_test, "n_times": args.n_times,
                     "t_end": args.t_end, "seed": args.data_seed, "chunk_len": 5},
        }
        self.check(config)
        return config

    def check(self, config: dict) -> None:
        d = config["data"]
        avail = d["n_systems"] - d["n_val"] - d["n_test"]
        if config["n_train"] > avail:
            raise TaskError(f"n_train={config['n_train']} exceeds the {max(avail, 0)} training systems of the data "
                            f"(n_systems={d['n_systems']} - n_val={d['n_val']} - n_test={d['n_test']}); "
                            "raise --n-systems")

    def default_out(self, config: dict) -> Path:
        g = f"-{config['group']}" if config["group"] else ""
        return Path("runs") / "springs" / f"{config['model']}{g}-n{config['n_train']}-s{config['seed']}"

    # --- pieces -------------------------------------------------------------------------------------
    def load_data(self, config: dict, data_dir, *, progress: bool, say) -> Splits:
        from lieconv_runtime.data.springs import load_spring_splits

        d = config["data"]
        try:
            s = load_spring_splits(
                config["n_train"], d["n_val"], d["n_test"], n_systems=d["n_systems"],
                n_particles=config["n_particles"], dim=config["dim"], n_times=d["n_times"], t_end=d["t_end"],
                seed=d["seed"], chunk_len=d["chunk_len"], dtype=DTYPES[config["dtype"]], data_dir=data_dir,
                progress=progress, notify=say)
        except ValueError as e:
            raise TaskError(str(e)) from None
        return Splits(s.train, s.val, s.test, {"test_long": s.test_long})

    def build_model(self, config: dict):
        from lieconv_runtime.models.registry import RegistryError, build_model

        kw = dict(config.get("model_kw", {}))
        if config.get("metric") is not None:
            if not config["group"]:
                raise TaskError(f"--metric: model {config['model']} has no group to put a metric on")
            kw["metric"] = config["metric"]
        if config.get("distance"):
            if not config["group"]:
                raise TaskError(f"--distance: model {config['model']} has no group to measure distances in")
            kw["distance"] = config["distance"]
        try:
            model = build_model(config["model"], config["n_particles"], config["dim"], config["group"], **kw)
        except RegistryError as e:
            raise TaskError(str(e)) from None
        if config.get("compile"):
            from lieconv_runtime.models.hamiltonian import HamiltonianModel

            if not isinstance(model, HamiltonianModel):
                raise TaskError(f"--compile: model {config['model']} is not a Hamiltonian model; train it without "
                                "--compile")
            model.compile_derivative()
        return model

    def objective(self, config: dict, splits: Splits):
        from lieconv_runtime.models.hamiltonian import CompileError, predict_chunks

        if not config.get("compile"):
            return Regression(predict_chunks)

        def predict(model, batch):
            try:
                return predict_chunks(model, batch)
            except CompileError as e:
                raise TaskError(str(e)) from None

        return Regression(predict)

    def evaluate(self, model, config: dict, splits: Splits, out_dir: Path, *, args, meta: dict, say) -> dict:
        from lieconv_runtime.tasks.springs_rollouts import evaluate_model

        from lieconv_runtime.data.springs import SpringSplits

        s = SpringSplits(splits.train, splits.val, splits.test, splits.extra["test_long"])
        meta = dict(meta)
        if "best_val" in meta:
            meta["best_val_mse"] = meta.pop("best_val")
        return evaluate_model(model, s, out_dir=out_dir, meta=meta, notify=say, **self.eval_options(args))

    @staticmethod
    def eval_options(args) -> dict:
        if args is None:
            return {}
        if isinstance(args, dict):
            return dict(args)
        return dict(n_rollouts=args.n_rollouts, solver=args.solver, rtol=args.rtol, atol=args.atol,
                    step_size=args.step_size, net_momentum_std=args.net_momentum,
                    rollout_dtype=DTYPES[args.rollout_dtype], plots=not args.no_plots, max_steps=args.rollout_steps,
                    batch_size=args.rollout_batch, progress=not args.no_progress)

    def compare(self, results: list[dict], out: Path, plots: bool) -> list[str]:
        return _compare(results, out, plots)

    def data_command(self, args, say) -> tuple[dict, str]:
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
            say(f"data: {Path(r['path']).name}  {r['size_bytes'] / 1e6:,.1f} MB  ({what})")
        total = sum(r["size_bytes"] for r in rows)
        return ({"data_dir": str(folder), "caches": rows, "total_bytes": total},
                f"{len(rows)} cache files, {total / 1e6:,.1f} MB in {folder}")

    # --- study (paper Fig. 8) -----------------------------------------------------------------------
    def study_plan(self, preset: str, args) -> tuple[list, dict]:
        """Every (model, group, n_train, repeat) of the preset as one run, all on one data set."""
        from lieconv_runtime.models.registry import paper_lr

        p = PRESETS[preset]
        entries = _parse_entries(getattr(args, "models", None) or p["models"],
                                 strict=getattr(args, "models", None) is not None)
        sizes = tuple(sorted(getattr(args, "n_train", None) or p["n_train"]))
        reps = getattr(args, "repeats", None) or p["repeats"]
        n_systems = max(sizes) + p["n_val"] + p["n_test"]
        runs = []
        batch_size = p.get("batch_size", 200)
        for model, group in entries:
            for n in sizes:
                epochs = epochs_for(n, p["epoch_scale"], p["min_steps"], batch_size)
                val_every = max(1, round(epochs / p["validations"])) if p["validations"] else 1
                for seed in range(reps):
                    config = {
                        "task": "springs", "model": model, "group": group,
                        "model_kw": dict(p.get("model_kw", {}).get(model, {})), "n_particles": 6,
                        "dim": 2, "n_train": n, "dtype": "float32", "epochs": epochs, "lr": paper_lr(model, group),
                        "batch_size": batch_size, "seed": seed, "patience": None,
                        **({"val_every": val_every} if val_every > 1 else {}),
                        "data": {"n_systems": n_systems, "n_val": p["n_val"], "n_test": p["n_test"], "n_times": 500,
                                 "t_end": 5.0, "seed": 0, "chunk_len": 5}}
                    label = f"{model}({group})" if group else model
                    evaluate = {"n_rollouts": p["n_rollouts"], **p["rollout"]} if n == max(sizes) else None
                    runs.append(PlannedRun(label, config, evaluate, f"n{n}/seed{seed}"))
        info = {"sizes": list(sizes), "repeats": reps, "n_systems": n_systems, "jobs": p["jobs"],
                "n_val": p["n_val"], "n_test": p["n_test"]}
        return runs, info

    def study_row(self, run, summary: dict, evaluation: dict | None) -> dict:
        from lieconv_runtime.tasks.springs_rollouts import METRICS

        c = run.config
        row = {"label": run.label, "model": c["model"], "group": c["group"], "n_train": c["n_train"],
               "seed": c["seed"], "epochs": summary["epochs_completed"], "test_mse": summary.get("test_mse"),
               "best_val_mse": summary.get("best_val_mse"), "s_per_step": summary.get("s_per_step"),
               "wall_time_s": summary["wall_time_s"]}
        if evaluation:
            row.update({k: evaluation.get(k) for k in (*METRICS, "rollout_time_s", "solver", "rtol", "atol",
                                                        "step_size", "rk4_fallback_rollouts")})
        return row

    def study_report(self, rows: list[dict], out: Path, info: dict) -> list[str]:
        from lieconv_runtime.train.plots import plot_study

        sizes = info["sizes"]
        zero = self.zero_motion_mse(info, info.get("data_dir"))
        files = ["table.md", "study.png"]
        plot_study(rows, out / "study.png", reference=zero)
        atomic_write_text(out / "table.md", markdown_table(rows, sizes, zero))
        evaluated = [r for r in rows if r.get("energy_rel_error") is not None or "energy_rel_error" in r]
        if evaluated:
            atomic_write_text(out / "rollouts.md", rollout_table(rows, max(sizes)))
            _conservation_plot(evaluated, out, out / "conservation.png")
            files += ["rollouts.md", "conservation.png"]
        info["zero_motion_test_mse"] = zero
        return files

    def zero_motion_mse(self, info: dict, data_dir) -> float:
        """Test MSE of the trivial predictor ``z(t) = z0`` (the reference line of the study)."""
        from lieconv_runtime.data.springs import load_spring_splits

        test = load_spring_splits(1, info["n_val"], info["n_test"], n_systems=info["n_systems"], data_dir=data_dir,
                                  progress=False).test
        return float(((test.zs - test.z0[:, None]) ** 2).mean())


def _parse_entries(entries, strict: bool) -> list:
    """``"MODEL[:GROUP]"`` -> ``(canonical name, group)``; unknown models raise if ``strict`` else are skipped."""
    from lieconv_runtime.models.registry import RegistryError, check_group, get_spec

    out = []
    for entry in entries:
        name, _, group = entry.partition(":")
        try:
            spec = get_spec(name)
            if group and not spec.needs_group:
                raise RegistryError(f"model {spec.name} takes no group: write {spec.name}, not {entry}")
            if group:
                check_group(group)
            elif spec.needs_group:
                raise RegistryError(f"model {spec.name} needs a group: write {spec.name}:GROUP (e.g. {spec.name}:T2)")
        except RegistryError as e:
            if strict:
                raise TaskError(str(e)) from None
            print(f"lieconv study: note: {entry} skipped ({e})", file=sys.stderr)
            continue
        out.append((spec.name, group or None))
    return out


ROLLOUT_KEYS = ("rollout_rel_error", "energy_rel_error", "linear_momentum_drift", "angular_momentum_drift")


def markdown_table(rows: list[dict], sizes, zero_mse: float | None = None) -> str:
    """Test MSE mean ± std over repeats per label and size, plus seconds per optimizer step."""
    import numpy as np

    labels = list(dict.fromkeys(r["label"] for r in rows))
    head = "| model | " + " | ".join(f"n={n}" for n in sizes) + " | s/step (largest n) |"
    lines = [head, "|" + "---|" * (len(sizes) + 2)]
    for label in labels:
        mine, cells = [r for r in rows if r["label"] == label], []
        for n in sizes:
            v = [r["test_mse"] for r in mine if r["n_train"] == n and r["test_mse"] is not None]
            cells.append((f"{np.mean(v):.4g} ± {np.std(v):.2g}" if len(v) > 1 else f"{v[0]:.4g}") if v else "–")
        t = [r["s_per_step"] for r in mine if r["n_train"] == max(sizes) and r.get("s_per_step")]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {np.mean(t):.3g} |" if t else
                     f"| {label} | " + " | ".join(cells) + " | – |")
    if zero_mse is not None:
        lines.append(f"\nReference: predicting z(t) = z0 gives test MSE {zero_mse:.4g}.")
    return "\n".join(lines) + "\n"


def rollout_table(rows: list[dict], n_train: int) -> str:
    """Long-rollout metrics at the end of the test trajectories (mean over trajectories and repeats)."""
    import numpy as np

    lines = ["| model | rollout rel. error | energy rel. error | linear momentum drift | angular momentum drift |",
             "|---|---|---|---|---|"]
    for label in dict.fromkeys(r["label"] for r in rows):
        mine = [r for r in rows if r["label"] == label and r["n_train"] == n_train and "energy_rel_error" in r]
        if not mine:
            continue
        cells = []
        for key in ROLLOUT_KEYS:
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


def _conservation_plot(rows: list[dict], study_dir: Path, path: Path) -> None:
    """Paper Fig. 7: conservation curves of the evaluated runs (first seed per label) in one figure."""
    import numpy as np

    from lieconv_runtime.tasks.springs_rollouts import METRICS
    from lieconv_runtime.train.plots import plot_conservation

    curves = {}
    for r in rows:
        if r["label"] not in curves and r.get("eval_dir"):
            with np.load(Path(r["eval_dir"]) / "curves.npz") as z:
                curves[r["label"]] = {"ts": z["ts"], **{key: z[key] for key in METRICS}}
    if curves:
        plot_conservation(curves, path)


def _compare(results: list, out: Path, plots: bool) -> list[str]:
    """Overlay the conservation curves of several evaluated checkpoints (paper Fig. 7); returns the files."""
    import numpy as np

    from lieconv_runtime.tasks.springs_rollouts import METRICS
    from lieconv_runtime.train.plots import plot_conservation

    labels = [r["label"] for r in results]
    if len(set(labels)) < len(labels):  # same model/group: tell the runs apart
        labels = [f"{r['label']} n={r['n_train']} seed={r['seed']} #{i}" for i, r in enumerate(results)]
    curves = {}
    for label, r in zip(labels, results):
        with np.load(Path(r["out_dir"]) / "curves.npz") as z:
            curves[label] = {"ts": z["ts"], **{k: z[k] for k in METRICS}}
    files = ["comparison.json"]
    if plots:
        plot_conservation(curves, out / "conservation_comparison.png")
        files.append("conservation_comparison.png")
    atomic_write_text(out / "comparison.json", json.dumps(results, indent=1) + "\n")
    return files


TASK = Springs()
