"""QM9 training side by side with the original LieConv code (mfinzi/LieConv): test MAE and seconds per step.

    python benchmarks/qm9_original.py --original /path/to/LieConv                    # T3 and SE3, both codes
    python benchmarks/qm9_original.py --original DIR --groups SE3 --steps 10 --n-test 75   # seconds per step only
    python benchmarks/qm9_original.py --original DIR --code ours --groups T3          # one run, in this process

Both codes train on the same molecules with the same everything except the network code: the qm9
task's data (`lieconv_runtime.tasks.qm9`: Cormorant split, the first --n-train / --n-test molecules,
target normalised by the train mean and std in float64, positions recentred and scaled for groups
with a stabilizer, as the paper), the same batches (the trainer's seeded permutation per epoch, batch
75), Adam at lr 3e-3 with the paper's cosine schedule and 1 % linear warm-up over --steps steps, L1
on the normalised target, and the paper's augmentation in training (a 0.5 N(0, I) translation, then a
Haar-random rotation).  Test MAE is in the paper's units with the final weights (no validation, so no
best-epoch choice on either side).

* ours: `lieconv_runtime.tasks.qm9` builds the run exactly as `lieconv train qm9` does (its
  `QM9Model`: MolecLieResNet with the augmentation, and its objective).
* the original: the checkout's root goes on sys.path and only its public API is used
  (`lie_conv.lieConv.LieResNet`, `lie_conv.lieGroups`: T(3), SE3(0.2), SO3(0.2), Trivial(3)).  Its
  `MolecLieResNet` (in `lie_conv.moleculeTrainer`) cannot be imported without its training library
  (oil), so this script gives `LieResNet` the arguments and inputs that class gives it: chin 15,
  ds_frac 1, mean pooling, swish, batch norm, and features one_hot x (1, Z/9, (Z/9)^2) as float32,
  and augments as its SE3aug does (positions + 0.5 N(0, I), then `SO3().sample` rotations).

One JSON line per run: code, group, s_per_step (median wall time of the steps after --warmup, each
step = batch collation, augmentation, forward, backward and Adam), s_per_step_mean, cpu_s_per_step
(process CPU time: less sensitive to other load), test_mae and baseline_mae (predicting the train
mean) in the target's unit, the sizes and settings, load_avg_start/end and matmul_gflops.  With
--code both (default) every group runs ours, then the original, each in a fresh subprocess, and a
comparison line follows: speedup = original s/step / ours, mae_ratio = ours / original.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from layers import matmul_gflops  # noqa: E402
from original import CODE, child_argv, import_original, model_kw_argv, run_child  # noqa: E402

from lieconv_runtime.tasks.options import key_value  # noqa: E402

GROUPS = ("T3", "SE3", "SO3", "Trivial3")
TARGET_SPEEDUP = 3.0


def _preset() -> dict:
    from lieconv_runtime.tasks.qm9 import PRESETS

    return PRESETS["cpu"]


def original_group(lg, name: str, alpha: float):
    """The original's group object for one of our group names."""
    return {"T3": lambda: lg.T(3), "SE3": lambda: lg.SE3(alpha), "SO3": lambda: lg.SO3(alpha),
            "Trivial3": lambda: lg.Trivial(3)}[name]()


def batch_order(n: int, steps: int, batch_size: int, seed: int) -> list:
    """The trainer's index batches in one process: each epoch a `DistributedSampler` (one replica,
    shuffled, seeded by ``seed`` and the epoch) cut into consecutive slices of ``batch_size``."""
    from torch.utils.data import DistributedSampler

    out, epoch = [], 0
    while len(out) < steps:
        sampler = DistributedSampler(range(n), num_replicas=1, rank=0, shuffle=True, seed=seed, drop_last=False)
        sampler.set_epoch(epoch)
        order = list(sampler)
        out += [order[k:k + batch_size] for k in range(0, n, batch_size)]
        epoch += 1
    return out[:steps]


class Ours:
    """The qm9 task's model and objective."""

    code = "ours"

    def __init__(self, task, config, splits, device):
        import torch

        torch.manual_seed(config["seed"])
        self.model = task.build_model(config).to(device=device, dtype=torch.float32)
        self.objective = task.objective(config, splits)

    def loss(self, batch):
        return self.objective.loss(self.model, batch)

    def predict(self, batch):
        return self.objective.forward(self.model, batch)


class Original:
    """The original's LieResNet as its MolecLieResNet configures and feeds it."""

    code = CODE

    def __init__(self, lc, lg, config, splits, device, charge_scale: float = 9.0):
        import torch

        n = config["net"]
        torch.manual_seed(config["seed"])
        self.group = original_group(lg, config["group"], n["paper_alpha"])
        # the paper's fill: 1 where ours runs its shrinking ball (T3: the original's own radius rule at fill 1)
        self.fill = 1.0 if n.get("radius") is not None else n["fill"]
        self.model = lc.LieResNet(chin=15, ds_frac=1, num_outputs=1, k=n["k"], nbhd=n["nbhd"], act="swish", bn=True,
                                  num_layers=n["num_layers"], mean=True, liftsamples=n["lift_samples"],
                                  fill=self.fill, group=self.group).to(device)
        self.so3 = lg.SO3()
        self.augment = config["augment"]
        self.charge_scale = charge_scale
        e = splits.extra
        self.column, self.mean, self.std = e["column"], e["mean"], e["std"]
        self.device = device

    def inputs(self, batch):
        import torch

        with torch.no_grad():
            z = batch["charges"].float() / self.charge_scale
            powers = torch.stack([torch.ones_like(z), z, z * z], -1)
            feats = (batch["one_hot"][..., :, None] * powers[..., None, :]).float().reshape(*z.shape, -1)
            coords, mask = batch["positions"].float(), batch["charges"] > 0
            if self.model.training and self.augment:
                coords = coords + 0.5 * torch.randn(coords.shape[0], 1, 3, device=coords.device, dtype=coords.dtype)
                rot = self.so3.sample(coords.shape[0], 1, device=coords.device, dtype=coords.dtype)
                coords = (rot @ coords.unsqueeze(-1)).squeeze(-1)
        return coords, feats, mask

    def predict(self, batch):
        return self.model(self.inputs(batch)).squeeze(-1)

    def loss(self, batch):
        pred = self.predict(batch)
        target = ((batch["targets"][:, self.column] - self.mean) / self.std).to(pred.dtype)
        return (pred - target).abs().mean()


def run_one(args, group: str, code: str) -> dict:
    import torch

    from lieconv_runtime.data.qm9 import collate_molecules
    from lieconv_runtime.perf import tune_malloc
    from lieconv_runtime.tasks import get_task
    from lieconv_runtime.train.schedule import cosine_schedule
    from lieconv_runtime.train.trainer import adam, to_device

    torch.set_num_threads(args.threads)
    tune_malloc()
    device = torch.device(args.device)
    task = get_task("qm9")
    config = task.make_config(group=group, target=args.target, source=args.source, n_train=args.n_train, n_val=1,
                              n_test=args.n_test, width=args.width, num_layers=args.num_layers,
                              fill=args.fill if code == "ours" else None, augment=not args.no_augment, seed=args.seed, batch_size=args.batch_size, lr=args.lr,
                              model_kw=dict(args.model_kw or []) if code == "ours" else None)
    splits = task.load_data(config, args.data_dir, progress=False, say=lambda text: None)
    if code == "ours":
        runner = Ours(task, config, splits, device)
    else:
        lc, lg = import_original(args.original)
        runner = Original(lc, lg, config, splits, device)
    model = runner.model
    steps = args.steps or _preset()["epochs"] * math.ceil(len(splits.train) / args.batch_size)
    opt = adam(model.parameters(), args.lr)  # the trainer's optimizer, for both codes (as benchmarks/rotmnist_original.py)
    schedule = cosine_schedule(opt, steps, 0.01)
    row = {"benchmark": "qm9_original", "code": runner.code, "group": group, "target": args.target,
           "unit": splits.extra["unit"], "n_train": len(splits.train), "n_test": len(splits.test), "steps": steps,
           "batch_size": args.batch_size, "lr": args.lr, "warmup_frac": 0.01, "width": args.width,
           "num_layers": args.num_layers, **{k: config["net"][k] for k in ("nbhd", "fill", "lift_samples")},
           **({k: config["net"].get(k) for k in ("radius", "radius_coeff")} if code == "ours" else
              {"fill": runner.fill}),
           "paper_alpha": config["net"]["paper_alpha"], "augment": config["augment"], "recenter": config["recenter"],
           "model_kw": config["net"]["model_kw"], "seed": args.seed, "threads": args.threads, "device": str(device),
           "torch": torch.__version__,
           "load_avg_start": round(os.getloadavg()[0], 2), "matmul_gflops": round(matmul_gflops(), 1)}
    wall, cpu, losses = [], [], []
    model.train()
    t_start = time.perf_counter()
    for idx in batch_order(len(splits.train), steps, args.batch_size, args.seed):
        t, c = time.perf_counter(), time.process_time()
        batch = to_device(collate_molecules([splits.train[i] for i in idx]), device)
        opt.zero_grad(set_to_none=True)
        loss = runner.loss(batch)
        loss.backward()
        opt.step()
        schedule.step()
        losses.append(float(loss.detach()))  # synchronises an accelerator
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
        if not math.isfinite(losses[-1]):
            break
    row["train_time_s"] = round(time.perf_counter() - t_start, 2)
    timed = wall[args.warmup:] or wall
    row["s_per_step"] = round(statistics.median(timed), 4)
    row["s_per_step_mean"] = round(statistics.fmean(timed), 4)
    row["cpu_s_per_step"] = round(statistics.median(cpu[args.warmup:] or cpu), 4)
    row["first_step_s"] = round(wall[0], 3)
    row["final_train_l1"] = round(statistics.fmean(losses[-50:]), 5)
    row["diverged"] = not math.isfinite(losses[-1])
    e = splits.extra
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for s in range(0, len(splits.test), args.batch_size):
            items = [splits.test[i] for i in range(s, min(s + args.batch_size, len(splits.test)))]
            batch = to_device(collate_molecules(items), device)
            pred = runner.predict(batch).double() * e["std"] + e["mean"]
            total += float((pred - batch["targets"][:, e["column"]]).abs().sum())
            count += len(items)
    row["test_mae"] = total / count
    row["baseline_mae"] = float((splits.test.targets[:, e["column"]] - e["mean"]).abs().mean())
    row["load_avg_end"] = round(os.getloadavg()[0], 2)
    return row


def _argv(args, group: str, code: str) -> list:
    keys = ("original", "target", "source", "data_dir", "n_train", "n_test", "steps", "width", "num_layers",
            "batch_size", "lr", "seed", "threads", "warmup", "device") + (("fill",) if code == "ours" else ())
    return (child_argv(__file__, args, group, code, keys) + (["--no-augment"] if args.no_augment else [])
            + (model_kw_argv(args.model_kw) if code == "ours" else []))


def main(argv=None) -> None:
    p = _preset()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--original", help="root of a checkout of https://github.com/mfinzi/LieConv")
    parser.add_argument("--code", choices=["both", "ours", "original"], default="both",
                        help="both: ours then the original per group, each in a fresh subprocess (default)")
    parser.add_argument("--groups", nargs="+", choices=GROUPS, default=["T3", "SE3"], help="groups (default T3 SE3)")
    parser.add_argument("--target", default="homo", help="QM9 target (default homo)")
    parser.add_argument("--source", choices=["auto", "official", "qm9pack"], default="auto", help="QM9 source")
    parser.add_argument("--data-dir", default=None, help="folder of the official QM9 files (qm9 task's --data-dir)")
    parser.add_argument("--n-train", type=int, default=p["n_train"],
                        help=f"first N train molecules (default {p['n_train']}, the cpu preset's)")
    parser.add_argument("--n-test", type=int, default=p["n_test"],
                        help=f"first N test molecules (default {p['n_test']}, the cpu preset's)")
    parser.add_argument("--steps", type=int, default=None,
                        help=f"optimizer steps (default: the cpu preset's {p['epochs']} epochs of --n-train)")
    parser.add_argument("--width", type=int, default=p["width"], help=f"channels (default {p['width']})")
    parser.add_argument("--num-layers", type=int, default=p["num_layers"],
                        help=f"BottleBlocks (default {p['num_layers']})")
    parser.add_argument("--fill", type=float, default=None,
                        help="ours' ball fill (default: the task's: 0.973 from 10 Å for T3, 1 for Trivial3, 1/2 for "
                             "SE3); the original always gets the paper's (1 for T3 and Trivial3, 1/2 for SE3)")
    parser.add_argument("--batch-size", type=int, default=75, help="batch size (default 75, the paper's)")
    parser.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate (default 3e-3, the paper's)")
    parser.add_argument("--no-augment", action="store_true", help="no training-time augmentation")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initialisation, batches and draws")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1, as each job of the cpu preset: on a busy 2-core machine two "
                             "threads wait for each other)")
    parser.add_argument("--warmup", type=int, default=2, help="steps left out of s_per_step (default 2)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--model-kw", type=key_value, nargs="*", metavar="KEY=VALUE",
                        help="extra options of ours' MolecLieResNet (the qm9 task's --model-kw), e.g. lift_mode=haar")
    parser.add_argument("--repeats", type=int, default=1, help="with --code both: rounds of ours/original per group")
    args = parser.parse_args(argv)
    if args.code != "ours" or args.repeats > 1:
        import_original(args.original)  # check the checkout before any work
    if args.code != "both":
        for group in args.groups:
            print(json.dumps(run_one(args, group, args.code)), flush=True)
        return
    for _ in range(args.repeats):
        for group in args.groups:
            rows = {}
            for code in ("ours", "original"):
                row = run_child(_argv(args, group, code), "qm9_original", code if code == "ours" else CODE, group)
                rows[code] = row
                print(json.dumps(row), flush=True)
            a, b = rows["ours"], rows["original"]
            if "error" not in a and "error" not in b:
                print(json.dumps({"benchmark": "qm9_original", "compare": group, "steps": a["steps"],
                                  "speedup": round(b["s_per_step"] / a["s_per_step"], 3),
                                  "cpu_speedup": round(b["cpu_s_per_step"] / a["cpu_s_per_step"], 3),
                                  "target_speedup": TARGET_SPEEDUP,
                                  "mae_ratio": round(a["test_mae"] / b["test_mae"], 4),
                                  "test_mae_ours": a["test_mae"], "test_mae_original": b["test_mae"],
                                  "unit": a["unit"]}), flush=True)


if __name__ == "__main__":
    main()
