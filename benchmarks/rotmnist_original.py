"""RotMNIST training side by side with the original code (mfinzi/LieConv): same data, budget and protocol.

    python benchmarks/rotmnist_original.py --original /path/to/LieConv --data-dir DIR --groups T2 SE2 --steps 400

Each (group, code) trains in a fresh subprocess (clean allocator and peak RSS) and prints one JSON line;
for each group ours runs first, then the original. Both train on the same images in the same batches
with the same augmentation angles, for the same number of optimizer steps, and are tested on the same
test images:

* data: the ``.amat`` files in --data-dir (`lieconv data rotmnist ...`), all train_valid rows
  (the paper's --no-val protocol; --n-train takes the first N) and the first --n-test test rows;
* training loop: both networks are trained by this project's trainer (`train.trainer.Trainer`) with
  the task's objective (`tasks.rotmnist.RotMNISTClassification`), so batches (the trainer's seeded
  shuffle, --batch-size 25), Adam, lr --lr (3e-3), the paper's cosine schedule over the run's steps and
  the cross-entropy are the same code for both;
* augmentation: each training image rotated by a uniform angle in [0, 2π) *before* the normalisation
  (x - 0.130) / 0.297 (`data.rotmnist.rotate_images`); ours draws the angles from torch's global
  generator (seeded with --seed by the trainer), the original from a generator of its own seeded the
  same way (it draws from the global one itself), so both see the same rotated images;
* networks: the paper's RotMNIST network in each code (k 128, 6 blocks, nbhd 25, fill 0.1, total_ds 0.1)
  with the paper's group settings (`tasks.rotmnist.PAPER_GROUP_SETTINGS`: the original's α of SO2 0.2,
  RxSO2 0.3 and SE2 0.05, which ours turns into the metric `G.original_weighting(α)`; SE2 with 2 lift
  samples).

Ours is the task itself: `lieconv_runtime.tasks.rotmnist` through `tasks.base.train_run` (the trainer
`lieconv train rotmnist` uses) and the task's evaluation. The original is imported from --original
(benchmarks/original.py's `import_original`) and used only through its public API:
`lie_conv.lieConv.ImgLieResnet` and the groups of `lie_conv.lieGroups`. Its `ImgLieResnet` lifts the
first batch once and reuses that lift (and its FPS indices) for every later batch, so its test batches
must have the training batch size: the last test batch is padded with blank images whose outputs are
dropped (eval-mode batch norm treats each image alone).

Keys: code, group, steps, batch_size, lr, seed, threads, n_train, n_test, test_error_pct, test_nll,
s_per_step (the trainer's: wall time of the training steps / steps, first step included),
s_per_step_median (median time between consecutive step starts, first step excluded), first_step_s,
train_wall_s, eval_s, peak_rss_mb, load_avg_start / load_avg_end (1-minute load), matmul_gflops,
torch. A missing or invalid --original prints one line and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(1, ROOT)

from original import model_kw_argv  # noqa: E402

from lieconv_runtime.tasks.options import key_value  # noqa: E402

GROUPS = ("Trivial2", "T2", "SO2", "RxSO2", "SE2")
CODES = ("ours", "original")


def fail(message: str) -> None:
    print(f"rotmnist_original.py: {message}", file=sys.stderr)
    sys.exit(2)


# --------------------------------------------------------------------------- shared protocol
def load_data(data_dir: str, n_train: int | None, n_test: int | None):
    """(train images, train labels, test images, test labels): raw pixels in [0, 1]."""
    from lieconv_runtime.data.rotmnist import load_rotmnist

    train = load_rotmnist(data_dir, "train", no_val=True, progress=False)
    test = load_rotmnist(data_dir, "test", progress=False)
    for name, ds, n in (("--n-train", train, n_train), ("--n-test", test, n_test)):
        if n is not None and n > len(ds):
            fail(f"{name} {n}: {data_dir} has only {len(ds)} rows there")
    a = len(train) if n_train is None else n_train
    b = len(test) if n_test is None else n_test
    return train.images[:a], train.labels[:a], test.images[:b], test.labels[:b]


def context(threads: int) -> dict:
    import torch

    from layers import matmul_gflops

    return {"threads": threads, "torch": torch.__version__, "load_avg_start": round(os.getloadavg()[0], 2),
            "matmul_gflops": round(matmul_gflops(), 1)}


def finish(row: dict, starts: list, t_train: float) -> dict:
    from layers import rss_mb

    steps = len(starts)
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    row.update(s_per_step=round(t_train / steps, 4),
               s_per_step_median=round(statistics.median(gaps[1:] or gaps), 4) if gaps else None,
               first_step_s=round(gaps[0], 3) if gaps else None, train_wall_s=round(t_train, 2),
               peak_rss_mb=round(rss_mb("VmHWM"), 1), load_avg_end=round(os.getloadavg()[0], 2))
    return row


# --------------------------------------------------------------------------- ours
def run_ours(args) -> dict:
    import torch

    from lieconv_runtime.perf import tune_malloc
    from lieconv_runtime.tasks.base import Splits, train_run
    from lieconv_runtime.tasks.rotmnist import ImageSet, RotMNISTClassification, RotMNISTTask

    tune_malloc()
    torch.set_num_threads(args.threads)
    xtr, ytr, xte, yte = load_data(args.data_dir, args.n_train, args.n_test)
    model_kw = dict(args.model_kw or [])
    row = {"code": "ours", "group": args.groups[0], "model_kw": model_kw,
           **({"distance": args.distance} if args.distance else {}), **context(args.threads)}
    starts: list = []

    class Timed(RotMNISTClassification):  # the task's objective, noting when each training step starts
        def loss(self, model, batch):
            starts.append(time.perf_counter())
            return super().loss(model, batch)

    class TimedTask(RotMNISTTask):
        def objective(self, config, splits):
            return Timed(config["augment"], torch.float32)

    task = TimedTask()
    config = {"task": "rotmnist", "model": "ImgLieResNet", "group": args.groups[0],
              "group_settings": task.check_group(args.groups[0], distance=args.distance), "model_kw": model_kw, "augment": True,
              "dtype": "float32", "epochs": 10 ** 6, "max_steps": args.steps, "lr": args.lr,
              "batch_size": args.batch_size, "seed": args.seed, "patience": None,
              "data": {"no_val": True, "train_rows": args.n_train, "test_rows": args.n_test}}
    empty = ImageSet(xtr[:0], ytr[:0])
    splits = Splits(ImageSet(xtr, ytr), empty, None)  # no test pass inside training: it is timed apart
    with tempfile.TemporaryDirectory() as tmp:
        summary, model, _ = train_run(task, config, args.keep or tmp, progress=False, device=args.device,
                                      splits=splits)
        t_train = summary["s_per_step"] * summary["steps"]
        finish(row, starts, t_train)
        row["s_per_step"] = summary["s_per_step"]  # the trainer's own figure (training steps only)
        t0 = time.perf_counter()
        meta = {"checkpoint": summary["checkpoint"], "steps": summary["steps"]}
        ev = task.evaluate(model.eval(), config, Splits(None, None, ImageSet(xte, yte)), args.keep or tmp,
                           args={"no_plots": True, "eval_draws": args.eval_draws}, meta=meta, say=lambda text: None)
    row.update(steps=summary["steps"], batch_size=args.batch_size, lr=args.lr, seed=args.seed, n_train=len(ytr),
               n_test=len(yte), eval_draws=args.eval_draws, test_error_pct=ev["test_error_pct"],
               test_nll=ev["test_nll"],
               eval_s=round(time.perf_counter() - t0, 2), device=args.device)
    return row


# --------------------------------------------------------------------------- original
def original_group(lg, name: str):
    """(group, lift samples) of the original code with the paper's settings (the task's PAPER_GROUP_SETTINGS)."""
    from lieconv_runtime.tasks.rotmnist import PAPER_GROUP_SETTINGS

    paper = PAPER_GROUP_SETTINGS.get(name, {})
    kw = {"alpha": paper["alpha"]} if "alpha" in paper else {}
    make = {"Trivial2": lambda: lg.Trivial(2), "T2": lambda: lg.T(2), "SO2": lambda: lg.SO2(**kw),
            "RxSO2": lambda: lg.RxSO2(**kw), "SE2": lambda: lg.SE2(**kw)}[name]
    return make(), paper.get("lift_samples", 1)


def run_original(args) -> dict:
    import torch
    import torch.nn.functional as F

    from original import import_original

    from lieconv_runtime.data.rotmnist import rotate_images
    from lieconv_runtime.perf import tune_malloc
    from lieconv_runtime.tasks.rotmnist import ImageSet, RotMNISTClassification, normalise
    from lieconv_runtime.train.trainer import Trainer

    lc, lg = import_original(args.original)
    tune_malloc()  # the allocator setting `lieconv` uses, for both codes
    torch.set_num_threads(args.threads)
    xtr, ytr, xte, yte = load_data(args.data_dir, args.n_train, args.n_test)
    group = args.groups[0]
    row = {"code": "original mfinzi/LieConv", "group": group, **context(args.threads)}
    device = torch.device(args.device)
    starts: list = []

    class Timed(RotMNISTClassification):
        """The task's objective; the angles come from a generator of their own, seeded as ours' global one,
        because the original draws its own random numbers from torch's global generator."""

        angles = torch.Generator().manual_seed(args.seed)

        def inputs(self, images, train):
            x = images.to(self.dtype)
            if train:
                theta = torch.rand(x.shape[0], dtype=torch.float64, generator=self.angles) * (2 * math.pi)
                x = rotate_images(x, theta)
            return normalise(x)

        def loss(self, model, batch):
            starts.append(time.perf_counter())
            return super().loss(model, batch)

    torch.manual_seed(args.seed)
    G, nsamples = original_group(lg, group)
    net = lc.ImgLieResnet(chin=1, total_ds=0.1, num_layers=6, group=G, fill=0.1, k=128, nbhd=25, num_targets=10,
                          liftsamples=nsamples).to(device)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(net, Timed(True, torch.float32), ImageSet(xtr, ytr), ImageSet(xtr[:0], ytr[:0]), None,
                          out_dir=tmp, epochs=10 ** 6, max_steps=args.steps, lr=args.lr, batch_size=args.batch_size,
                          seed=args.seed, device=device, progress=False)
        summary = trainer.fit()
    finish(row, starts, summary["s_per_step"] * summary["steps"])
    row["s_per_step"] = summary["s_per_step"]
    t0 = time.perf_counter()
    net.eval()
    torch.manual_seed(args.seed)  # the original draws neighbourhoods from torch's global RNG in eval too
    wrong, nll, bs = 0, 0.0, args.batch_size
    with torch.no_grad():
        for s in range(0, len(yte), bs):
            images, labels = xte[s:s + bs].to(device), yte[s:s + bs].to(device)
            n = len(labels)
            x = normalise(images)
            if n < bs:  # its cached lift has the training batch size
                x = torch.cat([x, normalise(torch.zeros(bs - n, *x.shape[1:], device=device))])
            logits = net(x)[:n].double()
            nll += float(F.cross_entropy(logits, labels, reduction="sum"))
            wrong += int((logits.argmax(-1) != labels).sum())
    row.update(steps=summary["steps"], batch_size=bs, lr=args.lr, seed=args.seed, n_train=len(ytr),
               n_test=len(yte), test_error_pct=100.0 * wrong / len(yte), test_nll=nll / len(yte),
               eval_s=round(time.perf_counter() - t0, 2), device=args.device)
    return row


# --------------------------------------------------------------------------- driver
def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--original", help="root of a checkout of https://github.com/mfinzi/LieConv")
    parser.add_argument("--data-dir", help="folder of the RotMNIST .amat files (lieconv data rotmnist ...)")
    parser.add_argument("--groups", nargs="+", default=["T2", "SE2"], choices=GROUPS, help="groups to compare")
    parser.add_argument("--steps", type=int, default=400, help="optimizer steps of each run")
    parser.add_argument("--batch-size", type=int, default=25)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-train", type=int, default=None, help="first N train_valid rows (default: all)")
    parser.add_argument("--n-test", type=int, default=None, help="first N test rows (default: all)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu or an accelerator, e.g. cuda")
    parser.add_argument("--code", choices=["both", *CODES], default="both",
                        help="both (each group: ours, then the original, in fresh subprocesses) or one code here")
    parser.add_argument("--model-kw", type=key_value, nargs="*", metavar="KEY=VALUE",
                        help="options of ours' ImgLieResNet, as `lieconv train rotmnist --model-kw` takes them (e.g. "
                             "lift_mode=haar); default: the task's")
    parser.add_argument("--eval-draws", type=int, default=1, metavar="D",
                        help="ours: average the test probabilities over D seeded draws (`lieconv eval rotmnist "
                             "--eval-draws`; default 1); the original evaluates once with its cached lift")
    parser.add_argument("--distance", choices=["quadrature", "sum"], default=None,
                        help="ours: how the rotation part and the rest add up in the distance (`lieconv train "
                             "--distance`; default: the task's, sum for SO2, RxSO2 and SE2)")
    parser.add_argument("--keep", default=None, metavar="DIR",
                        help="keep ours' run folder (checkpoint, metrics) in DIR")
    args = parser.parse_args(argv)
    if not args.data_dir or not os.path.isdir(args.data_dir):
        fail(f"--data-dir {args.data_dir}: no such folder; prepare one with `lieconv data rotmnist --download "
             "--data-dir DIR` or `lieconv data rotmnist --from-mnist MNIST_DIR --data-dir DIR`")
    if min(args.steps, args.batch_size, args.eval_draws) < 1 or min(x for x in (args.n_train, args.n_test, 1)
                                                                     if x is not None) < 1:
        fail("--steps, --batch-size, --eval-draws, --n-train and --n-test must be positive")
    if args.code != "ours":
        from original import import_original

        from lieconv_runtime.data.errors import DataError

        try:
            n = len(load_data(args.data_dir, args.n_train, 1)[1])
        except DataError as e:
            fail(str(e))
        if n % args.batch_size:
            fail(f"{n} training images are not a multiple of --batch-size {args.batch_size}: the original's "
                 "ImgLieResnet reuses the lift of its first batch, so every batch must have that size; choose "
                 "--n-train as a multiple")

        import_original(args.original)  # check the checkout before any work
    if args.code != "both":
        if len(args.groups) != 1:
            fail(f"--code {args.code} runs one group; got {' '.join(args.groups)}")
        from lieconv_runtime.data.errors import DataError

        try:
            row = run_ours(args) if args.code == "ours" else run_original(args)
        except DataError as e:
            fail(str(e))
        print(json.dumps(row), flush=True)
        return
    for group in args.groups:
        for code in CODES:
            cmd = [sys.executable, os.path.abspath(__file__), "--code", code, "--groups", group]
            for key in ("original", "data_dir", "steps", "batch_size", "lr", "seed", "n_train", "n_test", "threads",
                        "device", "keep", "eval_draws", "distance"):
                value = getattr(args, key)
                if value is not None and not (key in ("keep", "distance") and code != "ours"):
                    cmd += [f"--{key.replace('_', '-')}", str(value if key != "keep" else os.path.join(value, group))]
            cmd += model_kw_argv(args.model_kw) if code == "ours" else []
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode:
                print(json.dumps({"code": code, "group": group, "error": out.stderr.strip().splitlines()[-1:]}),
                      flush=True)
            else:
                print(out.stdout.strip(), flush=True)


if __name__ == "__main__":
    main()
