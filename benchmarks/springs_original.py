"""Springs training side by side with the original LieConv code (mfinzi/LieConv): test MSE and seconds per epoch.

    python benchmarks/springs_original.py --original /path/to/LieConv                   # T2, both codes, defaults below
    python benchmarks/springs_original.py --original DIR --groups T2 SO2 --epochs 30 --n-train 400 --n-test 500
    python benchmarks/springs_original.py --code ours --groups T2 --n-train 20 --n-test 20 --epochs 1   # one run, here

Both codes train the paper's HLieResNet (width 384, 4 blocks, no batch norm, all 6 particles in
every neighbourhood, mean pooling, one lift sample) on the same arrays with the same protocol; only
the network code differs:

* data: the springs task's data set (`lieconv_runtime.tasks.springs`, i.e. `load_spring_splits`:
  exact trajectories of --n-systems systems, data seed --data-seed, one seeded chunk of 5 steps per
  system; train = the first --n-train systems, test = the last --n-test), float32.  The default
  1,000 systems are the data set of `lieconv study springs --preset cpu`.  The task's state layout,
  z = [q, p] with q and p particle-major (q[i*D + d]), is the layout the original's `HNet.compute_H`
  reads, and its system parameters are stack([m, k], -1) of shape (bs, n, 2), masses first, as its
  `SpringDynamics` builds them: both networks get the same tensors, unconverted.  Each row carries
  `data_sha256` (of every tensor given to the networks) and `zero_motion_test_mse` (predicting
  z(t) = z0); the original's row adds `layout_energy_rel_diff`, the largest relative difference
  between the original's `lie_conv.hamiltonian.SpringH` and this project's `energy` on the test
  states (0 up to roundoff when both read z, m and k the same way), and `frac_pairs_outside_ball`,
  the fraction of particle pairs of the data states outside its neighbourhood ball at its initial
  radius 2 (its own group distance: 0.2 |q_i - q_j| for T(2), 0.8 |q_i - q_j| for Trivial(2), < 2
  for SO2); with fill 1 the radius only grows in training, so the paper's "every particle in every
  neighbourhood" holds for it when this is 0.
* training: both go through `tasks.base.train_run`, the function `lieconv train springs` uses, so
  the seeded batch order (the trainer's per-epoch permutation), Adam, the paper's cosine schedule
  over all --epochs x ceil(n_train / batch) steps, the batch size (200) and the loss (the mean
  squared error over the 5 states of each chunk, RK4 on the chunk's time grid with torchdiffeq) are
  the same code.  No validation set and no best-epoch choice: the test MSE is that of the final
  weights on both sides, computed by the same trainer code (sum of squared errors / count).
* ours: the task's model (`HLieResNet` from the registry) and objective (`predict_chunks`).
* the original: its checkout's root goes on sys.path and only its public API is used:
  `lie_conv.dynamicsTrainer.HLieResNet(d, sys_dim=2, k=width, num_layers, group)` with its own
  defaults otherwise (nbhd 100, fill 1, mean pooling, no batch norm, positions centred), groups from
  `lie_conv.lieGroups` (T(2), SO2() with its default alpha 0.2, Trivial(2)), and predictions from
  its own `IntegratedDynamicsTrainer._rollout_model` (RK4 on the chunk grid, called unbound on
  an object holding the model and its default tol).  `lie_conv.dynamicsTrainer` imports its
  training library (oil) and, through `lie_conv.moleculeTrainer` and `lie_conv.datasets`, data
  libraries (torchvision, h5py) that the model classes never use: the modules that are not
  installed are replaced by empty placeholder modules before the import (listed in
  `stubbed_modules`).

* --init original (T2 only): ours starts from the original's initial weights for the same seed
  (`copy_original_init`: its first kernel layer negated, its output map's columns permuted and its
  conv bias divided by the 6 particles, because the two codes write the pair embedding, the
  contracted channels and the mean with different conventions), so that both start from the same
  potential (`init_potential_rel_diff`, float32 rounding when the mapping holds) and differ only in
  how they compute it.  The two codes draw their initial weights in different orders, so with
  --init own the same seed gives different (equally distributed) networks; at 60 steps the draw
  alone moves the test MSE by up to a quarter (the original's seeds 0-2: 0.0155-0.0197).

* --compile: ours trains as `lieconv train springs --compile` does (its training derivatives by
  torch.compile); the first step compiles, and that time counts in its s/epoch and training time.
  Inductor keeps compiled graphs in its on-disk cache, so a later run of the same shapes compiles
  faster: run with TORCHINDUCTOR_CACHE_DIR set to an empty folder to measure a machine's first
  run (the row records the folder as `inductor_cache_dir`).

Each (group, code) runs in a fresh subprocess with --code both (default): for each group ours, then
the original, then a comparison line (speedup = original s/epoch / ours, mse_ratio = ours /
original, same_data).  Keys of a run: code, group, n_train, n_test, epochs, steps, test_mse,
zero_motion_test_mse, s_per_epoch (training steps' wall time / epochs), s_per_epoch_median (over the
epochs after the first), first_epoch_s, s_per_step, train_wall_s, wall_s (training, checkpoints and
the test pass), peak_rss_mb (VmHWM, the loaded data set included: about 100 MB for 1,000 systems),
threads, torch, date (UTC), load_avg_start / load_avg_end (1-minute load), matmul_gflops.  Each
code's own model differences remain: the original centres positions before its potential (ours
does not: no effect for T2, a different model for SO2 and Trivial2) and starts its ball at radius 2.
A missing or invalid --original prints one line and exits with status 2.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(1, ROOT)
from original import child_argv, run_child  # noqa: E402

GROUPS = ("T2", "SO2", "Trivial2")
CODES = ("ours", "original")
MODEL = "HLieResNet"


def fail(message: str) -> None:
    print(f"springs_original.py: {message}", file=sys.stderr)
    sys.exit(2)


# --------------------------------------------------------------------------- shared protocol
def run_config(args, group: str) -> dict:
    """The run as `lieconv train springs --model HLieResNet --group G ...` describes it (no validation set)."""
    from lieconv_runtime.models.registry import paper_lr

    model_kw = {k: v for k, v in (("width", args.width), ("num_layers", args.num_layers))
                if v != {"width": 384, "num_layers": 4}[k]}
    return {"task": "springs", "model": MODEL, "group": group, "model_kw": model_kw, "n_particles": 6, "dim": 2,
            "n_train": args.n_train, "dtype": "float32", "epochs": args.epochs,
            "lr": args.lr if args.lr is not None else paper_lr(MODEL, group), "batch_size": args.batch_size,
            "seed": args.seed, "patience": None,
            "data": {"n_systems": args.n_systems, "n_val": 0, "n_test": args.n_test, "n_times": 500, "t_end": 5.0,
                     "seed": args.data_seed, "chunk_len": 5}}


def load_splits(args, config: dict):
    from lieconv_runtime.tasks.base import TaskError
    from lieconv_runtime.tasks.springs import TASK

    try:
        TASK.check(config)
        return TASK.load_data(config, args.data_dir, progress=False, say=lambda text: None)
    except (TaskError, OSError) as e:
        fail(str(e))


def fingerprint(splits) -> str:
    """sha256 of every tensor the networks see (train and test chunks: z0, ts, zs, m, k)."""
    h = hashlib.sha256()
    for part in (splits.train, splits.test):
        for name in ("z0", "ts", "zs", "m", "k"):
            t = getattr(part, name).contiguous()
            h.update(f"{name}{tuple(t.shape)}{t.dtype}".encode())
            h.update(t.numpy().tobytes())
    return h.hexdigest()[:16]


def zero_motion_mse(test) -> float:
    return float(((test.zs.double() - test.z0.double()[:, None]) ** 2).mean())


def context(args) -> dict:
    import torch

    from layers import matmul_gflops

    return {"threads": args.threads, "device": args.device, "torch": torch.__version__,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "load_avg_start": round(os.getloadavg()[0], 2), "matmul_gflops": round(matmul_gflops(), 1)}


# --------------------------------------------------------------------------- the original
class _PlaceholderType(type):
    def __getattr__(cls, attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _PlaceholderType(attr, (), {"__module__": cls.__module__})


def _stub_module(name: str):
    import types

    class Stub(types.ModuleType):
        """Stands for a module of the original's training or data libraries that is not installed: every
        attribute is an empty class, and so is every attribute of those (enough for its module-level
        imports and base classes)."""

        def __getattr__(self, attr):
            if attr.startswith("__"):
                raise AttributeError(attr)
            cls = _PlaceholderType(attr, (), {"__module__": self.__name__})
            setattr(self, attr, cls)
            return cls

    parts = name.split(".")
    for i in range(1, len(parts) + 1):
        full = ".".join(parts[:i])
        if full not in sys.modules:
            module = Stub(full)
            module.__path__ = []  # a package: its submodules are looked up (and stubbed) in turn
            sys.modules[full] = module
            if i > 1:
                setattr(sys.modules[".".join(parts[:i - 1])], parts[i - 1], module)


def import_original_dynamics(root: str | None):
    """(lie_conv.dynamicsTrainer, lie_conv.lieGroups, lie_conv.hamiltonian, stubbed module names) from the
    checkout ``root``; modules it imports that are not installed (and not in the checkout) become
    placeholders.  Exits with status 2 and one line when that fails."""
    import importlib
    import importlib.util

    from original import import_original

    os.environ.setdefault("MPLBACKEND", "Agg")  # lie_conv.hamiltonian imports matplotlib.pyplot
    _, lg = import_original(root)
    stubbed: list = []
    for _ in range(64):
        try:
            dt = importlib.import_module("lie_conv.dynamicsTrainer")
            break
        except ModuleNotFoundError as e:
            name, top = e.name or "", (e.name or "").split(".")[0]
            stub_top = top in {s.split(".")[0] for s in stubbed}
            if not name or top == "lie_conv" or (not stub_top and importlib.util.find_spec(top) is not None):
                fail(f"importing lie_conv.dynamicsTrainer from {root} failed: {e}")
            _stub_module(name)
            stubbed.append(name)
        except Exception as e:  # noqa: BLE001 - one line, no traceback
            fail(f"importing lie_conv.dynamicsTrainer from {root} failed ({type(e).__name__}: {e})")
    else:
        fail(f"importing lie_conv.dynamicsTrainer from {root}: too many missing modules ({', '.join(stubbed)})")
    import lie_conv.hamiltonian as ham

    return dt, lg, ham, stubbed


def original_group(lg, name: str):
    return {"T2": lambda: lg.T(2), "SO2": lambda: lg.SO2(), "Trivial2": lambda: lg.Trivial(2)}[name]()


def original_task(dt, lg, width: int, num_layers: int):
    """The springs task with the original's HLieResNet and the original's rollout in place of ours."""
    import types

    import torch

    from lieconv_runtime.tasks.springs import Springs
    from lieconv_runtime.train.trainer import Regression

    def predict(model, batch):
        owner = types.SimpleNamespace(model=model, hypers={"tol": 1e-4})  # IntegratedDynamicsTrainer's default tol
        sys_params = torch.stack([batch.m, batch.k], -1)  # (bs, n, 2): masses, spring constants
        ts = batch.ts[None].expand(len(batch.z0), -1)  # (bs, T), as its data loader gives them
        return dt.IntegratedDynamicsTrainer._rollout_model(owner, batch.z0, ts, sys_params), batch.zs

    class OriginalSprings(Springs):
        def build_model(self, config):
            return dt.HLieResNet(d=config["dim"], sys_dim=2, k=width, num_layers=num_layers,
                                 group=original_group(lg, config["group"]))

        def objective(self, config, splits):
            return Regression(predict)

    return OriginalSprings()


def copy_original_init(ours, orig, n_particles: int) -> None:
    """Give our HLieResNet(T2) the original's weights so that both compute the same potential: the
    original's block j is net.{j+1}, its kernel MLP conv.weightnet.{0,3,6}, and three conventions
    differ, none of them in distribution at initialisation: its pair embedding is q_i - q_j (ours
    q_j - q_i: the first kernel layer is negated), its output map reads the contracted channels
    (c, w)-major (ours (w, c): columns permuted), and it divides the output map's bias by the
    neighbour count too (all n particles here: ours gets bias / n)."""
    import torch

    theirs = dict(orig.named_parameters())
    names = {"potential.embedding": "net.0.module", "potential.head.1": "net.7.module"}
    for j in range(len(ours.potential.blocks)):
        b = f"net.{j + 1}"
        names.update({f"potential.blocks.{j}.pre.1": f"{b}.net.2.module", f"potential.blocks.{j}.post.1":
                      f"{b}.net.8.module", f"potential.blocks.{j}.conv.linear": f"{b}.conv.linear"})
        names.update({f"potential.blocks.{j}.conv.kernel.linears.{i}": f"{b}.conv.weightnet.{o}.module"
                      for i, o in enumerate((0, 3, 6))})
    with torch.no_grad():
        for name, p in ours.named_parameters():
            module, kind = name.rsplit(".", 1)
            w = theirs[names[module] + "." + kind].detach()
            if name.endswith("conv.linear.weight"):
                kc = ours.potential.blocks[0].conv.kernel.out  # kernel channels (16 in both)
                w = w.view(w.shape[0], -1, kc).transpose(1, 2).reshape(w.shape[0], -1)
            elif name.endswith("conv.linear.bias"):
                w = w / n_particles
            elif name.endswith("kernel.linears.0.weight"):
                w = -w
            p.copy_(w.to(p.dtype))


def same_potential(ours, orig, test) -> float:
    """Largest |V_ours - V_original| / max |V_original| over (up to) 64 test states."""
    import torch

    n = test.n_particles
    q = test.zs[:64, 0, : test.zs.shape[-1] // 2].reshape(-1, n, test.dim)
    with torch.no_grad():
        vo = orig.compute_V((q, torch.stack([test.m[:64], test.k[:64]], -1)))
        vm = ours.potential(q, test.m[:64], test.k[:64]).reshape(vo.shape)
    return float((vm - vo).abs().max() / vo.abs().max())


def ours_from_original_init(dt, lg, width: int, num_layers: int, test, extra: dict):
    """The springs task whose model starts from the original's initial weights for the same seed (its
    model is built first, from the same random state as in the original's own run, and the random
    state is left as that run leaves it); `extra["init_potential_rel_diff"]` gets same_potential on
    ``test``, computed on copies in eval mode so that the training model's state is untouched."""
    import copy

    import torch

    from lieconv_runtime.tasks.springs import Springs

    theirs = original_task(dt, lg, width, num_layers)

    class OursFromOriginal(Springs):
        def build_model(self, config):
            orig = theirs.build_model(config)
            state = torch.get_rng_state()
            ours = super().build_model(config)
            torch.set_rng_state(state)
            copy_original_init(ours, orig, config["n_particles"])
            extra["init_potential_rel_diff"] = same_potential(copy.deepcopy(ours).eval(), orig.eval(), test)
            return ours

    return OursFromOriginal()


def layout_check(ham, test) -> float:
    """Largest |SpringH_original(z, m, k) - energy_ours(z, m, k)| / |energy_ours| over the test states."""
    from lieconv_runtime.data.springs import energy

    z = test.zs.double().reshape(-1, test.zs.shape[-1])
    m = test.m.double().repeat_interleave(test.zs.shape[1], 0)
    k = test.k.double().repeat_interleave(test.zs.shape[1], 0)
    ours, theirs = energy(z, m, k), ham.SpringH(z, m, k)
    return float(((theirs - ours).abs() / ours.abs().clamp(min=1e-12)).max())


def outside_ball(G, splits, center: bool, r: float = 2.0) -> float:
    """Fraction of the particle pairs (i != j) of the train and test states that lie outside the original's
    neighbourhood ball at its initial radius ``r`` = 2, by its own group's `lift` and `distance` (with fill 1
    its radius only grows in training, so these pairs are the most it ever leaves out of a data state)."""
    import torch

    fr = []
    for part in (splits.train, splits.test):
        n = part.n_particles
        q = part.zs[..., :part.zs.shape[-1] // 2].reshape(-1, n, part.dim)
        if center:  # as its HLieResNet.compute_V does
            q = q - q.mean(1, keepdim=True)
        lifted = G.lift((q, torch.zeros(*q.shape[:2], 1), torch.ones(q.shape[:2], dtype=torch.bool)), 1)
        dist = G.distance(lifted[0])
        fr.append((dist[:, ~torch.eye(n, dtype=torch.bool)] > r).double().mean())
    return float(torch.stack(fr).mean())


# --------------------------------------------------------------------------- one run
def run_one(args, group: str, code: str) -> dict:
    import torch

    from layers import rss_mb
    from lieconv_runtime.perf import tune_malloc
    from lieconv_runtime.tasks.base import train_run
    from lieconv_runtime.tasks.springs import TASK
    from lieconv_runtime.train.trainer import read_metrics

    tune_malloc()  # the allocator setting `lieconv` uses, for both codes
    torch.set_num_threads(args.threads)
    extra = {}
    if code == "ours":
        task, name = TASK, "ours"
    else:
        from original import CODE

        dt, lg, ham, stubbed = import_original_dynamics(args.original)
        task, name = original_task(dt, lg, args.width, args.num_layers), CODE
        extra["stubbed_modules"] = stubbed
    config = run_config(args, group)
    if code == "ours" and args.compile:
        config["compile"] = True  # `lieconv train springs --compile`
    splits = load_splits(args, config)
    if code == "ours" and args.init == "original":
        dt, lg, _, _ = import_original_dynamics(args.original)
        task = ours_from_original_init(dt, lg, args.width, args.num_layers, splits.test, extra)
        extra["init"] = "original"
    row = {"benchmark": "springs_original", "code": name, "group": group, "model": MODEL, "n_train": len(splits.train),
           "n_test": len(splits.test), "n_systems": args.n_systems, "data_seed": args.data_seed,
           "epochs": args.epochs, "batch_size": args.batch_size, "lr": config["lr"], "width": args.width,
           **({"compile": True, "inductor_cache_dir": os.environ.get("TORCHINDUCTOR_CACHE_DIR", "default")}
              if config.get("compile") else {}),
           "num_layers": args.num_layers, "seed": args.seed, **context(args),
           "data_sha256": fingerprint(splits), "zero_motion_test_mse": zero_motion_mse(splits.test)}
    if code == "original":
        row["layout_energy_rel_diff"] = layout_check(ham, splits.test)
        net = task.build_model(config)  # (only its group and centring are read)
        row["frac_pairs_outside_ball"] = outside_ball(net.group, splits, net.center)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        summary, model, _ = train_run(task, config, args.keep or tmp, progress=False, device=args.device,
                                      splits=splits)
        wall = time.perf_counter() - t0
        epochs = [r["epoch_time_s"] for r in read_metrics(os.path.join(args.keep or tmp, "metrics.jsonl"))]
    steps, done = summary["steps"], summary["epochs_completed"]
    train_s = (summary["s_per_step"] or 0.0) * steps
    row.update(steps=steps, steps_per_epoch=steps // max(done, 1), epochs_completed=done,
               test_mse=summary["test_mse"], final_train_mse=summary["last_train_mse"],
               diverged=summary["diverged"], s_per_epoch=round(train_s / max(done, 1), 3),
               s_per_epoch_median=round(statistics.median(epochs[1:] or epochs), 3) if epochs else None,
               first_epoch_s=round(epochs[0], 3) if epochs else None, s_per_step=summary["s_per_step"],
               train_wall_s=round(train_s, 2), wall_s=round(wall, 2),
               n_params=summary["n_params"], peak_rss_mb=round(rss_mb("VmHWM"), 1),
               load_avg_end=round(os.getloadavg()[0], 2), **extra)
    if code == "original":
        radii = [float(m.r) for m in model.modules() if isinstance(getattr(m, "r", None), torch.Tensor)]
        row["original_radius_end"] = [round(min(radii), 3), round(max(radii), 3)] if radii else None
    if torch.device(args.device).type == "cuda":
        row["peak_dev_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        row["device_name"] = torch.cuda.get_device_name()
    return row


# --------------------------------------------------------------------------- driver
def _argv(args, group: str, code: str) -> list:
    keys = ("data_dir", "n_systems", "data_seed", "n_train", "n_test", "epochs", "batch_size", "lr", "width",
            "num_layers", "seed", "threads", "device", "init")
    needs_original = code == "original" or args.init == "original"
    out = child_argv(__file__, args, group, code, keys + (("original",) if needs_original else ()))
    out += ["--compile"] if args.compile and code == "ours" else []
    return out + (["--keep", os.path.join(args.keep, group)] if args.keep and code == "ours" else [])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--original", help="root of a checkout of https://github.com/mfinzi/LieConv")
    parser.add_argument("--code", choices=["both", *CODES], default="both",
                        help="both: ours then the original per group, each in a fresh subprocess (default)")
    parser.add_argument("--groups", nargs="+", choices=GROUPS, default=["T2"], help="groups (default T2)")
    parser.add_argument("--data-dir", default=None,
                        help="folder of the springs data caches (the springs task's --data-dir; default its cache)")
    parser.add_argument("--n-systems", type=int, default=1000,
                        help="systems in the data set (default 1000: that of `lieconv study springs --preset cpu`)")
    parser.add_argument("--data-seed", type=int, default=0, help="seed of the data set and its chunks (default 0)")
    parser.add_argument("--n-train", type=int, default=400, help="training systems: the first N (default 400)")
    parser.add_argument("--n-test", type=int, default=500, help="test systems: the last N (default 500)")
    parser.add_argument("--epochs", type=int, default=30, help="epochs (default 30)")
    parser.add_argument("--batch-size", type=int, default=200, help="batch size (default 200, the paper's)")
    parser.add_argument("--lr", type=float, default=None,
                        help="Adam learning rate (default: the paper's per group, T2 and Trivial2 1e-3, SO2 3e-4)")
    parser.add_argument("--width", type=int, default=384, help="channels (default 384, the paper's)")
    parser.add_argument("--num-layers", type=int, default=4, help="blocks (default 4, the paper's)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initialisation and the batch order")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1, as each job of the cpu study preset: on a busy 2-core "
                             "machine two threads wait for each other)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or an accelerator, e.g. cuda")
    parser.add_argument("--repeats", type=int, default=1, help="with --code both: rounds of ours/original per group")
    parser.add_argument("--keep", default=None, metavar="DIR", help="keep ours' run folder (checkpoint, metrics) in DIR")
    parser.add_argument("--compile", action="store_true",
                        help="ours trains with `--compile` (torch.compile of its derivative; the compile time is part "
                             "of its first step, so of s/epoch and the training wall time; TORCHINDUCTOR_CACHE_DIR set "
                             "to an empty folder measures a machine's first compile, recorded as inductor_cache_dir)")
    parser.add_argument("--init", choices=["own", "original"], default="own",
                        help="ours' initial weights: its own draw (default) or the original's for the same seed, "
                             "mapped so that both start from the same potential (T2 only; needs --original)")
    args = parser.parse_args(argv)
    if min(args.n_train, args.n_test, args.epochs, args.batch_size, args.width, args.num_layers, args.threads,
           args.repeats) < 1:
        fail("--n-train, --n-test, --epochs, --batch-size, --width, --num-layers, --threads and --repeats must be "
             "positive")
    if args.init == "original" and set(args.groups) != {"T2"}:
        fail("--init original: only --groups T2 (the original centres positions for the other groups)")
    if args.n_train + args.n_test > args.n_systems:
        fail(f"--n-train {args.n_train} + --n-test {args.n_test} exceed --n-systems {args.n_systems}")
    if args.code != "ours" or args.init == "original":
        from original import import_original

        import_original(args.original)  # check the checkout before any work
    if args.code != "both":
        for group in args.groups:
            print(json.dumps(run_one(args, group, args.code)), flush=True)
        return
    load_splits(args, run_config(args, args.groups[0]))  # generate the data set once, before the runs
    for _ in range(args.repeats):
        for group in args.groups:
            rows = {}
            for code in CODES:
                row = run_child(_argv(args, group, code), "springs_original", code, group)
                rows[code] = row
                print(json.dumps(row), flush=True)
            a, b = rows["ours"], rows["original"]
            if "error" not in a and "error" not in b:
                print(json.dumps({"benchmark": "springs_original", "compare": group, "epochs": a["epochs"],
                                  "steps": a["steps"], "same_data": a["data_sha256"] == b["data_sha256"],
                                  "speedup": round(b["s_per_epoch"] / a["s_per_epoch"], 3),
                                  "mse_ratio": round(a["test_mse"] / b["test_mse"], 4) if a["test_mse"] and
                                  b["test_mse"] else None,
                                  "test_mse_ours": a["test_mse"], "test_mse_original": b["test_mse"],
                                  "zero_motion_test_mse": a["zero_motion_test_mse"]}), flush=True)


if __name__ == "__main__":
    main()
