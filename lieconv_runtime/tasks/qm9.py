"""The QM9 task (paper §5, Tables 2-3): regress one molecular property from the atoms' positions and charges.

Data: `lieconv_runtime.data.qm9` (the official release or the qm9pack copy; the Cormorant split; the
12 targets in the paper's units, reference energies subtracted in float64).  Model: `MolecLieResNet`
over any generated group acting on R^3 (T3, SO3, SE3, Trivial3, user groups), with the paper's
settings per group, wrapped in `QM9Model` for the training-time augmentation.  Loss: L1 on the target
normalised by the TRAIN mean and std (float64 statistics); metric: MAE in the paper's units.
Evaluation: test MAE at the best-validation weights, the MAE of predicting the train mean, learning
curves and predicted against true.  Study presets: ``cpu`` (HOMO, T3 and SE3, small) and ``paper``.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import torch
from torch import nn

from lieconv_runtime.io import atomic_write_text
from lieconv_runtime.tasks.base import (DTYPES, PlannedRun, Splits, Task, TaskError, finite_or_none, learning_curves,
                                        run_records)
from lieconv_runtime.tasks.options import key_value, pos_float, pos_int
from lieconv_runtime.train.trainer import Objective

__all__ = ["PRESETS", "QM9Model", "QM9Objective", "RigidAugment", "haar_rotations", "net_settings"]

#: Translation scale of the augmentation (positions + scale x N(0, I), in the units the network sees).
AUGMENT_TRANSLATION = 0.5

#: Study presets.  ``runs``: (group, targets) pairs; sizes ``None`` = the whole split.
PRESETS = {
    "cpu": dict(runs=(("SE3", ("homo",)), ("T3", ("homo",))), n_train=12_000, n_val=1_000, n_test=2_000, epochs=7,
                width=256, num_layers=6, jobs=2,
                description="HOMO with SE3 and T3: the first 12,000 train / 1,000 valid / 2,000 test molecules, "
                            "width 256, 6 layers, 7 epochs (1,120 steps of 75), 2 parallel jobs of 1 thread"),
    "paper": dict(runs=(("T3", None), ("SE3", ("homo",)), ("SO3", ("homo",)), ("Trivial3", ("homo",))),
                  n_train=None, n_val=None, n_test=None, epochs=500, width=1536, num_layers=6, jobs=1,
                  description="the paper: full splits, width 1536, 6 layers, 500 epochs; T3 on all 12 targets "
                              "and SE3, SO3, Trivial3 on HOMO (a GPU-class budget)"),
}


# --------------------------------------------------------------------------- paper settings
#: The ball of groups with a Lie algebra but no stabilizer (T3): it starts at 10 Å, above nearly every pair
#: of atoms, and shrinks at 2.5 Å per unit of fill until 97.3 % of a batch's pairs of atoms lie inside.  That
#: is the original code's radius rule in this package's fill measure (its radius starts at 2 in its T(3)
#: distance 0.2 |dx|, i.e. 10 Å, and moves by 0.5 (fill - observed), where its observed fill, weighted by
#: molecule size, reads 1.028 of this one on QM9).  Measured at 200 steps (docs/tasks/qm9.md): T3's HOMO
#: MAE is 4.7 meV lower than with every pair inside; Trivial3's is 15 meV higher, so Trivial3 keeps every
#: pair.
TRANSLATION_BALL = {"fill": 0.973, "radius": 10.0, "radius_coeff": 2.5}
EVERY_PAIR = {"fill": 1.0, "radius": None, "radius_coeff": None}
#: Groups with a stabilizer (SE3, SO3): the paper's fill 1/2, the radius from the first batch's distances.
STABILIZER_BALL = {"fill": 0.5, "radius": None, "radius_coeff": None}


def net_settings(group: str, *, width: int = 1536, num_layers: int = 6, nbhd: int | None = None,
                 fill: float | None = None, lift_samples: int | None = None, alpha: float | None = None,
                 metric=None) -> dict:
    """The network settings of ``group``, the paper's where not given (App. C.3).

    Groups with a non-trivial stabilizer (SE3, SO3, ...): 4 lift samples, nbhd 25, fill 1/2 (the ball's
    radius starts at the fill quantile of the first batch); the others: 1 lift sample, nbhd 100, and
    the shrinking ball `TRANSLATION_BALL` for a group with a Lie algebra (T3), every pair for the
    trivial group (Trivial3); ``fill`` replaces the fill.  Distance: the original code's alpha = 0.2
    (``alpha``), which weighs rotations by alpha and the rest by 1 - alpha; here that is the metric
    ``G.original_weighting(alpha)`` (rotation generators (alpha / (1 - alpha))^2, the others 1) with
    the orbit term weighted 1 (``orbit_alpha``).  ``metric`` (the CLI's --metric) replaces that metric.
    Raises TaskError for a group that does not act on R^3."""
    G = _load_group(group)
    if G.space_dim != 3:
        raise TaskError(f"group {group} acts on R^{G.space_dim}, but molecules live in R^3; choose a group acting "
                        f"on R^3: {', '.join(groups_3d()) or 'none found'}")
    if alpha is not None and metric is not None:
        raise TaskError("--alpha and --metric both set the distance's metric: give one of them")
    if metric is None:
        alpha = 0.2 if alpha is None else float(alpha)
        if not 0 < alpha < 1:
            raise TaskError(f"--alpha {alpha:g}: the original code's alpha must be in (0, 1)")
        metric = G.original_weighting(alpha) or None
    lifts = G.stabilizer_dim > 0
    ball = STABILIZER_BALL if lifts else TRANSLATION_BALL if G.lie_dim > 0 else EVERY_PAIR
    return {"k": int(width), "num_layers": int(num_layers),
            "nbhd": int(nbhd) if nbhd is not None else (25 if lifts else 100),
            "fill": float(fill) if fill is not None else ball["fill"],
            "radius": ball["radius"], "radius_coeff": ball["radius_coeff"],
            "lift_samples": int(lift_samples) if lift_samples is not None else (4 if lifts else 1),
            "paper_alpha": alpha, "metric": metric, "orbit_alpha": 1.0}


def _load_group(name: str, **options):
    from lieconv_runtime.models.registry import RegistryError, load_group_checked

    try:
        return load_group_checked(name, **options)
    except RegistryError as e:
        raise TaskError(str(e)) from None


def groups_3d() -> list[str]:
    """Names of the groups found that act on R^3."""
    from lieconv_runtime import available_groups, load_group

    out = []
    for name in available_groups():
        try:
            if load_group(name).space_dim == 3:
                out.append(name)
        except Exception:  # noqa: BLE001 - a broken user module is simply not listed
            continue
    return out


# --------------------------------------------------------------------------- augmentation
def haar_rotations(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """n Haar-random rotations of R^3, (n, 3, 3) float64 on the CPU.

    The Q factor of a Gaussian matrix with the signs of R's diagonal moved into Q is Haar on O(3);
    multiplying by its determinant (-I is central in O(3)) maps that to Haar on SO(3)."""
    a = torch.randn(n, 3, 3, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(a)
    d = torch.diagonal(r, dim1=-2, dim2=-1)
    q = q * torch.where(d < 0, -1.0, 1.0).to(q.dtype)[:, None, :]
    return q * torch.linalg.det(q)[:, None, None]


class RigidAugment(nn.Module):
    """Training-time augmentation x -> R (x + t): t = scale x N(0, I) per molecule, then a Haar-random
    rotation R about the origin.  Draws come from its own CPU generator (seeded by ``seed``), whose state
    the trainer saves in every checkpoint (`module_rng_states`), so a resumed run draws what an
    uninterrupted one does.  Computed in float64; padding stays at 0.  Identity in eval mode."""

    def __init__(self, seed: int = 0, scale: float = AUGMENT_TRANSLATION):
        super().__init__()
        self.seed, self.scale = int(seed), float(scale)
        self._gen: torch.Generator | None = None

    def forward(self, positions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return positions
        if self._gen is None:
            self._gen = torch.Generator().manual_seed(self.seed)
        bs = positions.shape[0]
        t = self.scale * torch.randn(bs, 1, 3, generator=self._gen, dtype=torch.float64)
        rot = haar_rotations(bs, self._gen)
        x = (positions.double() + t.to(positions.device)) @ rot.to(positions.device).transpose(1, 2)
        x = torch.where(mask[..., None], x, torch.zeros((), dtype=x.dtype, device=x.device))
        return x.to(positions.dtype)


class QM9Model(nn.Module):
    """`MolecLieResNet` (``net``) with the training-time augmentation (``augment``, or None).

    forward(positions (bs, n, 3), one_hot (bs, n, 5), charges (bs, n), stabilizer=None) -> (bs,): the
    normalised target (x train std + train mean = the paper's units)."""

    def __init__(self, net: nn.Module, augment: RigidAugment | None):
        super().__init__()
        self.net = net
        self.augment = augment

    def forward(self, positions, one_hot, charges, stabilizer=None):
        if self.augment is not None and self.training:
            positions = self.augment(positions, charges > 0)
        return self.net(positions, one_hot, charges, stabilizer=stabilizer)


# --------------------------------------------------------------------------- objective
class QM9Objective(Objective):
    """Loss: mean |output - (y - mean) / std| (train statistics); metric ``mae``: sum |output x std + mean - y|
    in the paper's units (float64) and the count."""

    loss_name = "l1"
    primary = "mae"
    metrics = ("mae",)

    def __init__(self, column: int, mean: float, std: float):
        self.column, self.mean, self.std = int(column), float(mean), float(std)

    @staticmethod
    def forward(model, batch) -> torch.Tensor:
        return model(batch["positions"], batch["one_hot"], batch["charges"])

    def loss(self, model, batch):
        pred = self.forward(model, batch)
        target = ((batch["targets"][:, self.column] - self.mean) / self.std).to(pred.dtype)
        return (pred - target).abs().mean()

    def sums(self, model, batch):
        true = batch["targets"][:, self.column].double()
        pred = self.forward(model, batch).double() * self.std + self.mean
        return {"mae": ((pred - true).abs().sum(), true.numel())}


# --------------------------------------------------------------------------- data helpers
def _first(ds, n: int | None, shift=None, scale=None, dtype=torch.float32):
    """The first ``n`` molecules of a QM9 split (all if None) as a new QM9 with positions
    ``(x - shift) / scale`` (float64) in ``dtype``."""
    from lieconv_runtime.data.qm9 import QM9

    n = len(ds) if n is None else min(int(n), len(ds))
    atoms = int(ds.offsets[n])
    pos = ds.positions[:atoms].to(torch.float64)
    if shift is not None:
        pos = (pos - torch.as_tensor(shift, dtype=torch.float64)) / float(scale)
    return QM9(ds.index[:n], ds.n_atoms[:n], ds.charges[:atoms], pos, ds.properties[:n], dtype=dtype)


def resolved_source(data_dir, source: str) -> str:
    """The source ``load_qm9`` reads for ``source="auto"``: "official" when the release (archive or
    extracted xyz files) is in ``data_dir`` (default: the download folder), else "qm9pack"."""
    from lieconv_runtime.data.qm9 import ARCHIVE_NAME, default_data_dir

    if source != "auto":
        return source
    where = Path(data_dir) if data_dir is not None else default_data_dir()
    if (where / ARCHIVE_NAME).is_file() or (where.is_dir() and next(where.glob("dsgdb9nsd_*.xyz"), None)):
        return "official"
    return "qm9pack"


def _unit(target: str) -> str:
    from lieconv_runtime.data.qm9 import UNITS

    return UNITS[target]


# --------------------------------------------------------------------------- the task
class QM9Task(Task):
    name = "qm9"
    description = ("QM9 (paper Tables 2-3): regress one of 12 molecular properties from atom positions and charges; "
                   "MAE in the paper's units")
    train_defaults = {"group": "T3", "epochs": 500, "batch_size": 75, "lr": 3e-3}
    quick = {"group": "T3", "target": "homo", "n_train": 5_000, "n_val": 500, "n_test": 1_000, "width": 256,
             "num_layers": 6, "epochs": 5, "out": "runs/qm9/quick"}
    quick_description = ("MolecLieResNet(T3) on HOMO: the first 5,000 train / 500 valid / 1,000 test molecules, "
                         "width 256, 6 layers, 5 epochs, then the test MAE and plots in OUT/eval")
    presets = {name: p["description"] for name, p in PRESETS.items()}

    @property
    def collate(self):
        from lieconv_runtime.data.qm9 import collate_molecules

        return collate_molecules

    # --- command line -------------------------------------------------------------------------------
    def add_options(self, p, d: dict) -> None:
        from lieconv_runtime.data.qm9 import TARGETS, UNITS

        p.add_argument("--target", default=d.get("target", "homo"), metavar="NAME",
                       help="property to regress: " + ", ".join(f"{t} ({UNITS[t]})" for t in TARGETS))
        self._add_source_option(p)
        for split, what in (("train", "training"), ("val", "validation (`valid` split)"), ("test", "test")):
            n = d.get(f"n_{split}")
            p.add_argument(f"--n-{split}", type=pos_int, default=n, metavar="N",
                           help=f"{what} molecules: the first N of the split (default: {f'{n:,}' if n else 'all'})")
        p.add_argument("--width", type=pos_int, default=d.get("width", 1536),
                       help="channels of the network (the paper's 1536; e.g. 256 for CPU runs)")
        p.add_argument("--num-layers", type=pos_int, default=d.get("num_layers", 6),
                       help="BottleBlocks (the paper's 6)")
        p.add_argument("--nbhd", type=pos_int, default=None,
                       help="neighbours per query (default: the paper's, 25 for groups with a stabilizer such as "
                            "SE3/SO3, else 100)")
        p.add_argument("--fill", type=pos_float, default=None,
                       help="fraction of the pairs of atoms inside the balls (default: 1/2 with a stabilizer (SE3, SO3); "
                            "0.973 without (T3), a ball that starts at 10 Å and shrinks to it, as the original's; "
                            "1, every pair, for Trivial3)")
        p.add_argument("--lift-samples", type=pos_int, default=None,
                       help="stabilizer samples per atom (default: 4 with a stabilizer, else 1)")
        p.add_argument("--alpha", type=pos_float, default=None,
                       help="the original code's alpha: rotations weigh alpha against 1 - alpha for translations "
                            "and orbits, as the metric G.original_weighting(alpha) with orbit weight 1 (default: "
                            "the paper's 0.2; --metric sets a metric instead)")
        p.add_argument("--model-kw", type=key_value, nargs="*", metavar="KEY=VALUE",
                       help="extra MolecLieResNet options, e.g. kernel_channels=16 lift_mode=frame (default: none)")
        p.add_argument("--no-augment", action="store_true",
                       help="no training-time augmentation (default: each training molecule is translated by "
                            "0.5 N(0, I), then rotated by a Haar-random rotation)")
        p.add_argument("--recenter", choices=["auto", "on", "off"], default="auto",
                       help="subtract the train atoms' mean position and divide by the RMS deviation of their "
                            "coordinates before the network: auto = on for groups with a stabilizer (SE3, SO3), as "
                            "the paper")

    def _add_source_option(self, p) -> None:
        p.add_argument("--source", choices=["auto", "official", "qm9pack"], default="auto",
                       help="official: the release in --data-dir; qm9pack: the pip package's copy; auto: official "
                            "files if present, else qm9pack")

    def add_eval_options(self, p, d: dict) -> None:
        p.add_argument("--no-plots", action="store_true", help="skip learning_curves.png and predicted_vs_true.png")
        p.add_argument("--eval-batch-size", type=pos_int, default=None, metavar="N",
                       help="molecules per evaluation batch (default: the run's batch size)")

    def add_data_options(self, p) -> None:
        p.add_argument("--download", action="store_true",
                       help="fetch the official archive dsgdb9nsd.xyz.tar.bz2 (86 MB, sha256-checked) into --data-dir, "
                            "then build its cache")
        self._add_source_option(p)

    def add_study_options(self, p) -> None:
        p.add_argument("--groups", nargs="+", default=None, metavar="GROUP",
                       help="groups to train (default: the preset's)")
        p.add_argument("--targets", nargs="+", default=None, metavar="NAME",
                       help="targets for every group (default: the preset's)")

    def data_dir_help(self) -> str:
        from lieconv_runtime.data.qm9 import default_data_dir

        return ("folder of the official QM9 release: dsgdb9nsd.xyz.tar.bz2 or its extracted dsgdb9nsd_*.xyz files "
                f"(default: where --download puts it, here {default_data_dir()}); parsed molecules are cached in "
                "$LIECONV_CACHE/qm9 (else ~/.cache/lieconv/qm9)")

    def config(self, args) -> dict:
        if getattr(args, "lr", None) is None:
            args.lr = self.train_defaults["lr"]
        config = self.make_config(
            group=args.group, target=args.target, source=args.source, n_train=args.n_train, n_val=args.n_val,
            n_test=args.n_test, width=args.width, num_layers=args.num_layers, nbhd=args.nbhd, fill=args.fill,
            lift_samples=args.lift_samples, alpha=args.alpha, metric=getattr(args, "metric", None),
            distance=getattr(args, "distance", None), model_kw=dict(args.model_kw or []),
            augment=not args.no_augment, recenter=args.recenter, dtype=args.dtype, epochs=args.epochs, lr=args.lr,
            batch_size=args.batch_size, seed=args.seed, patience=args.patience, val_every=args.val_every,
            max_steps=args.max_steps)
        return config

    def make_config(self, *, group: str, target: str, source: str = "auto", n_train=None, n_val=None, n_test=None,
                    width: int = 1536, num_layers: int = 6, nbhd=None, fill=None, lift_samples=None, alpha=None,
                    metric=None, distance: str | None = None, model_kw: dict | None = None, augment: bool = True,
                    recenter: str = "auto",
                    dtype: str = "float32", epochs: float = 500, lr: float = 3e-3, batch_size: int = 75,
                    seed: int = 0, patience=None, val_every: int = 1, max_steps=None) -> dict:
        """A run config; every network setting is resolved (the paper's per group) and stored."""
        from lieconv_runtime.data.qm9 import DataError, check_target

        if not group:
            raise TaskError("the qm9 task needs a group (--group), e.g. T3 or SE3")
        try:
            check_target(target)
        except DataError as e:
            raise TaskError(str(e)) from None
        net = net_settings(group, width=width, num_layers=num_layers, nbhd=nbhd, fill=fill, lift_samples=lift_samples,
                           alpha=alpha, metric=metric)
        if net["k"] % 4:
            raise TaskError(f"--width {net['k']}: the BottleBlocks need a multiple of 4")
        try:
            lifts = _load_group(group, metric=net["metric"], distance=distance).stabilizer_dim > 0
        except ValueError as e:  # a metric that the distance form cannot use
            raise TaskError(f"--distance {distance}: {' '.join(str(e).split())}") from None
        return {
            "task": "qm9", "model": "MolecLieResNet", "group": group, "target": target, "dtype": dtype,
            "net": {**net, **({"distance": distance} if distance else {}), "model_kw": dict(model_kw or {})},
            "augment": bool(augment),
            "recenter": {"auto": lifts, "on": True, "off": False}[recenter],
            "data": {"source": source, "n_train": n_train, "n_val": n_val, "n_test": n_test},
            "epochs": epochs, "lr": lr, "batch_size": batch_size, "seed": seed, "patience": patience,
            "warmup_frac": 0.01,
            **({"val_every": val_every} if val_every != 1 else {}),
            **({"max_steps": max_steps} if max_steps is not None else {}),
        }

    def default_out(self, config: dict) -> Path:
        return Path("runs") / "qm9" / f"{config['group']}-{config['target']}-s{config['seed']}"

    # --- pieces -------------------------------------------------------------------------------------
    def load_data(self, config: dict, data_dir, *, progress: bool, say) -> Splits:
        from lieconv_runtime.data.qm9 import check_target, load_qm9_splits, target_stats

        d, target = config["data"], config["target"]
        full = load_qm9_splits(data_dir, source=d["source"], progress=progress, dtype=torch.float64)
        train64 = _first(full["train"], d["n_train"], dtype=torch.float64)
        if len(train64) < 2:
            raise TaskError(f"the QM9 data holds {len(train64)} training molecules; training needs at least 2")
        for split in ("valid", "test"):
            if len(full[split]) == 0:
                raise TaskError(f"the QM9 data holds no {split} molecules; use the full data set (qm9pack or the "
                                f"official release)")
        mean, std = target_stats(train64, target)
        shift = scale = None
        if config["recenter"]:
            pos = train64.positions  # (A, 3) float64
            shift = pos.mean(0)
            scale = float((pos - shift).square().mean().sqrt())
        dtype = DTYPES[config.get("dtype", "float32")]
        train = _first(full["train"], d["n_train"], shift, scale, dtype)
        val = _first(full["valid"], d["n_val"], shift, scale, dtype)
        test = _first(full["test"], d["n_test"], shift, scale, dtype)
        extra = {"target": target, "column": check_target(target), "unit": _unit(target), "mean": mean, "std": std,
                 "position_shift": None if shift is None else [float(v) for v in shift],
                 "position_scale": scale, "source": resolved_source(data_dir, d["source"])}
        say(f"data: QM9 {target} ({extra['unit']}) from {extra['source']}: {len(train):,} train / {len(val):,} valid / "
            f"{len(test):,} test molecules; train mean {mean:.6g}, std {std:.6g}"
            + (f"; positions recentred by {[round(v, 4) for v in extra['position_shift']]} and scaled by 1/{scale:.4g}"
               if shift is not None else ""))
        return Splits(train, val, test, extra)

    def build_model(self, config: dict) -> nn.Module:
        from lieconv_runtime.models.molecules import MolecLieResNet

        n = config["net"]
        G = _load_group(config["group"], alpha=n["orbit_alpha"], lift_samples=n["lift_samples"], metric=n["metric"],
                        distance=n.get("distance"))
        kw = {key: n[key] for key in ("radius", "radius_coeff") if n.get(key) is not None}  # absent: older runs
        kw.update(n.get("model_kw", {}))
        try:
            net = MolecLieResNet(G, k=n["k"], num_layers=n["num_layers"], nbhd=n["nbhd"], fill=n["fill"],
                                 lift_samples=n["lift_samples"], seed=config["seed"], **kw)
        except (TypeError, ValueError) as e:
            raise TaskError(f"cannot build MolecLieResNet({config['group']}) with {n}: {' '.join(str(e).split())}") \
                from None
        augment = RigidAugment(seed=config["seed"] * 1_000_003 + 7) if config.get("augment", True) else None
        return QM9Model(net, augment)

    def objective(self, config: dict, splits: Splits) -> Objective:
        e = splits.extra
        return QM9Objective(e["column"], e["mean"], e["std"])

    # --- evaluation ---------------------------------------------------------------------------------
    @staticmethod
    def eval_options(args, config: dict) -> dict:
        if args is None:
            args = {}
        if not isinstance(args, dict):
            args = {"plots": not getattr(args, "no_plots", False),
                    "batch_size": getattr(args, "eval_batch_size", None)}
        return {"plots": bool(args.get("plots", True)),
                "batch_size": int(args.get("batch_size") or config.get("batch_size", 75))}

    def evaluate(self, model, config: dict, splits: Splits, out_dir: Path, *, args, meta: dict, say) -> dict:
        import numpy as np

        opts = self.eval_options(args, config)
        e = splits.extra
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        pred, true, index = predict(model, splits.test, e["column"], e["mean"], e["std"], opts["batch_size"])
        err = np.abs(pred - true)
        train_true = splits.train.targets[:, e["column"]].numpy()
        run_dir = Path(meta["checkpoint"]).parent if meta.get("checkpoint") else None
        train_summary = _read_json(run_dir / "train_summary.json") if run_dir else {}
        unit = e["unit"]
        best_val = meta.get("best_val_mae", meta.get("best_val"))
        summary = {
            "task": "qm9", "model": config.get("model"), "group": config["group"], "label": self.label(config),
            "target": e["target"], "unit": unit,
            "test_mae": float(err.mean()), "baseline_mae": float(np.abs(true - e["mean"]).mean()),
            "test_rmse": float(np.sqrt(np.square(pred - true).mean())),
            "best_val_mae": finite_or_none(best_val), "n_train": len(splits.train), "n_val": len(splits.val),
            "n_test": len(true), "steps": meta.get("steps", train_summary.get("steps")),
            "epochs_completed": meta.get("epochs_completed", train_summary.get("epochs_completed")),
            "s_per_step": train_summary.get("s_per_step"), "train_time_s": train_summary.get("wall_time_s"),
            "seed": config.get("seed"), "target_mean": e["mean"], "target_std": e["std"],
            "train_mean_mae": float(np.abs(train_true - e["mean"]).mean()),
            "augment": config.get("augment"), "recenter": config.get("recenter"),
            "position_shift": e.get("position_shift"), "position_scale": e.get("position_scale"),
            "source": e.get("source"), "net": config.get("net"), "batch_size": config.get("batch_size"),
            "lr": config.get("lr"), "epochs": config.get("epochs"), "dtype": config.get("dtype"),
            "checkpoint": meta.get("checkpoint"), "checkpoint_finished": meta.get("checkpoint_finished"),
            "out_dir": str(out), "metrics": metric_definitions(unit),
        }
        files = ["summary.json", "test_predictions.csv"]
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["gdb_index", f"true_{e['target']}", f"predicted_{e['target']}"])
        w.writerows([int(i), repr(float(t)), repr(float(p))] for i, t, p in zip(index, true, pred))
        atomic_write_text(out / "test_predictions.csv", buf.getvalue())
        if opts["plots"]:
            from lieconv_runtime.train.plots import plot_predicted_vs_true

            files += learning_curves({self.label(config): _in_paper_units(run_records(run_dir), e["std"])}, out,
                                     f"{self.label(config)}, {e['target']}: training MAE (solid, augmented) and "
                                     f"validation MAE (dashed), {unit}")
            plot_predicted_vs_true(pred, true, out / "predicted_vs_true.png", quantity=e["target"], unit=unit,
                                   title=f"{self.label(config)}: {e['target']} on {len(true):,} test molecules")
            files.append("predicted_vs_true.png")
        summary["files"] = files
        atomic_write_text(out / "summary.json", json.dumps(summary, indent=1) + "\n")
        say(f"eval: test MAE {summary['test_mae']:.4g} {unit} on {len(true):,} molecules (predicting the train mean: "
            f"{summary['baseline_mae']:.4g} {unit})")
        return summary

    def compare(self, results: list[dict], out: Path, plots: bool) -> list[str]:
        rows = [{k: r.get(k) for k in ("label", "target", "unit", "test_mae", "baseline_mae", "n_test", "steps",
                                       "s_per_step", "checkpoint")} for r in results]
        atomic_write_text(out / "comparison.json", json.dumps(rows, indent=1) + "\n")
        files = ["comparison.json"]
        if plots:
            runs = {f"{r['label']} {r['target']} #{i}":
                    _in_paper_units(run_records(Path(r["checkpoint"]).parent), r["target_std"])
                    for i, r in enumerate(results)}
            files += learning_curves(runs, out, "QM9: training MAE (solid) and validation MAE (dashed)")
        return files

    # --- data command -------------------------------------------------------------------------------
    def data_command(self, args, say) -> tuple[dict, str]:
        from lieconv_runtime.data.qm9 import default_data_dir, download_qm9, load_qm9_splits

        progress = not getattr(args, "no_progress", False)
        data_dir, source = args.data_dir, args.source
        result: dict = {}
        if args.download:
            if source == "qm9pack":
                raise TaskError("--download fetches the official release; use it with --source official or auto")
            path = download_qm9(data_dir, progress=progress)
            say(f"data: {path} matches the published size and sha256")
            result["archive"] = str(path)
            data_dir, source = str(path.parent), "official"
        splits = load_qm9_splits(data_dir, source=source, progress=progress)
        kind = resolved_source(data_dir, source)
        counts = {name: len(ds) for name, ds in splits.items()}
        from lieconv_runtime.io import cache_dir

        result.update({"source": kind, "data_dir": str(Path(data_dir) if data_dir else default_data_dir()),
                       "cache_dir": str(cache_dir("qm9")), "molecules": counts})
        return result, (f"QM9 ready from {kind}: {counts['train']:,} train / {counts['valid']:,} valid / "
                        f"{counts['test']:,} test molecules (cache in {result['cache_dir']})")

    # --- study --------------------------------------------------------------------------------------
    def study_plan(self, preset: str, args) -> tuple[list, dict]:
        from lieconv_runtime.data.qm9 import TARGETS

        p = PRESETS[preset]
        groups = getattr(args, "groups", None)
        targets = getattr(args, "targets", None)
        preset_targets = {g: tuple(ts or TARGETS) for g, ts in p["runs"]}
        if groups:
            entries = [(g, tuple(targets) if targets else preset_targets.get(g, ("homo",))) for g in groups]
        else:
            entries = [(g, tuple(targets) if targets else ts) for g, ts in preset_targets.items()]
        runs = []
        for group, ts in entries:
            for target in ts:
                config = self.make_config(group=group, target=target, n_train=p["n_train"], n_val=p["n_val"],
                                          n_test=p["n_test"], width=p["width"], num_layers=p["num_layers"],
                                          epochs=p["epochs"], seed=0)
                runs.append(PlannedRun(self.label(config), config, {"plots": True}, f"{target}/seed0"))
        info = {"jobs": p["jobs"], "n_train": p["n_train"], "n_val": p["n_val"], "n_test": p["n_test"],
                "epochs": p["epochs"], "width": p["width"], "num_layers": p["num_layers"]}
        return runs, info

    def study_row(self, run: PlannedRun, summary: dict, evaluation: dict | None) -> dict:
        c = run.config
        row = {"label": run.label, "group": c["group"], "target": c["target"], "unit": _unit(c["target"]),
               "n_train": summary.get("n_train"), "epochs": summary.get("epochs_completed"),
               "steps": summary.get("steps"), "test_mae": summary.get("test_mae"),
               "best_val_mae": summary.get("best_val_mae"), "s_per_step": summary.get("s_per_step"),
               "wall_time_s": summary.get("wall_time_s")}
        if evaluation:
            row.update({k: evaluation.get(k) for k in ("baseline_mae", "n_test", "test_rmse")})
        return row

    def study_report(self, rows: list[dict], out: Path, info: dict) -> list[str]:
        atomic_write_text(out / "table.md", markdown_table(rows))
        files = ["table.md"]
        runs = {f"{r['label']} {r['target']}": run_records(r.get("run_dir")) for r in rows}
        return files + learning_curves(runs, out, "QM9 study: training L1 of the normalised target (solid) and "
                                                  "validation MAE (dashed, paper units)")


# --------------------------------------------------------------------------- helpers
def predict(model, dataset, column: int, mean: float, std: float, batch_size: int = 75):
    """Predictions and truths in the paper's units (float64 numpy arrays) and GDB indices of ``dataset``."""
    import numpy as np

    from lieconv_runtime.data.qm9 import collate_molecules
    from lieconv_runtime.train.trainer import to_device

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    preds, trues, index = [], [], []
    try:
        with torch.no_grad():
            for s in range(0, len(dataset), batch_size):
                batch = to_device(collate_molecules([dataset[i] for i in range(s, min(s + batch_size, len(dataset)))]),
                                  device)
                out = QM9Objective.forward(model, batch).double() * std + mean
                preds.append(out.cpu())
                trues.append(batch["targets"][:, column].double().cpu())
                index.append(batch["index"].cpu())
    finally:
        model.train(was_training)
    cat = lambda xs, dt: torch.cat(xs).numpy() if xs else np.zeros(0, dtype=dt)  # noqa: E731
    return cat(preds, np.float64), cat(trues, np.float64), cat(index, np.int64)


def metric_definitions(unit: str) -> dict:
    return {
        "test_mae": f"mean over the test molecules of |prediction - truth| in {unit}, with the best-validation "
                    "weights; prediction = network output x train std + train mean (float64)",
        "baseline_mae": f"the same for predicting the train mean of the target for every test molecule ({unit})",
        "test_rmse": f"root mean square error on the test molecules ({unit})",
        "best_val_mae": f"lowest validation MAE ({unit}) over the validations; its weights are the evaluated ones",
        "train_mean_mae": f"mean |truth - train mean| over the training molecules ({unit})",
        "train_l1": "metrics.jsonl: mean |output - (truth - train mean) / train std| over the epoch's augmented "
                    "training molecules (the loss; x target_std = MAE in the paper's units)",
        "s_per_step": "wall seconds per optimizer step (batch preparation, forward, backward, Adam; no validation)",
    }


def markdown_table(rows: list[dict]) -> str:
    lines = ["| model | target | test MAE | predicting the train mean | unit | best val MAE | steps | s/step |",
             "|---|---|---|---|---|---|---|---|"]
    fmt = lambda v, spec=".4g": "–" if v is None else format(v, spec)  # noqa: E731
    for r in rows:
        lines.append(f"| {r['label']} | {r['target']} | {fmt(r.get('test_mae'))} | {fmt(r.get('baseline_mae'))} | "
                     f"{r['unit']} | {fmt(r.get('best_val_mae'))} | {fmt(r.get('steps'), ',')} | "
                     f"{fmt(r.get('s_per_step'), '.3g')} |")
    return "\n".join(lines) + "\n"


def _in_paper_units(records: list[dict], std: float | None) -> list[dict]:
    """metrics.jsonl records with the training L1 (of the normalised target) as ``train_mae`` in the
    paper's units (unchanged without ``std``)."""
    if std is None:
        return records
    return [{**{k: v for k, v in r.items() if k != "train_l1"}, "train_mae": r["train_l1"] * std}
            if isinstance(r.get("train_l1"), (int, float)) else r for r in records]


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


TASK = QM9Task()
