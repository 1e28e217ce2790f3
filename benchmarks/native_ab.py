"""Does each native CPU kernel win the whole training step?  One JSON line per configuration.

    python benchmarks/native_ab.py [--config NAME ...] [--rounds 15] [--threads 2] [--compile]

For each configuration of layers.py (the same inputs and layer), and for the QM9 networks
``qm9_se3`` / ``qm9_t3`` (the qm9 task's MolecLieResNet at width 256, 6 layers, on the first 75
training molecules, with the task's augmentation and loss; needs the QM9 data, e.g. ``pip install
".[qm9]"``), one whole training step (lifting, training-mode forward, loss, backward) is timed
under these variants, interleaved round by round (variant order shuffled per round, a seeded
shuffle) so that the machine's drift hits all alike:

* ``native``: every native kernel on (the default);
* ``torch``: every native kernel off (the torch paths: same neighbours and values);
* ``no_ball`` / ``no_contract`` / ``no_mlp``: one kernel off (ball selection, the
  gather-contraction of `silu_contract`, the training-mode kernel MLP);
* with ``--compile``: ``torch_compiled``: the torch paths with the orthogonal closed forms
  (`orthogonal_sq_norm_parts`, `orthogonal_log_parts`) compiled by torch.compile (inductor).

Keys: config, rounds, ``<variant>_ms`` (median), ``<variant>_min_ms``, and ``gain_<kernel>`` =
median step time without the kernel / with everything on, minus 1 (0.10 = the kernel saves 10 % of
the step); ``compile_s`` (first compiled call).  Times in ms; torch.set_num_threads(--threads).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from layers import setup  # noqa: E402

CONFIGS = ["img_layer", "img_layer_se2", "molec_layer", "molec_layer_se3", "img_resnet", "qm9_se3", "qm9_t3"]
SWITCHES = {"ball": ("lieconv_runtime.nn.sampling", "USE_NATIVE"),
            "contract": ("lieconv_runtime.nn.lean", "USE_NATIVE_CONTRACT"),
            "mlp": ("lieconv_runtime.nn.lean", "USE_NATIVE_MLP")}


def setup_qm9(group: str):
    """(batch(), loss(batch), identity, model) for the qm9 task's network on its first 75 training
    molecules (as benchmarks/qm9_original.py trains it): lift() returns the batch, fwd the loss."""
    from lieconv_runtime.data.qm9 import collate_molecules
    from lieconv_runtime.tasks import get_task

    task = get_task("qm9")
    config = task.make_config(group=group, target="homo", n_train=75, n_val=1, n_test=1, width=256, num_layers=6,
                              seed=0, batch_size=75)
    splits = task.load_data(config, None, progress=False, say=lambda text: None)
    model = task.build_model(config).float().train()
    objective = task.objective(config, splits)
    batch = collate_molecules([splits.train[i] for i in range(len(splits.train))])
    return (lambda: batch), (lambda b: objective.loss(model, b)), (lambda loss: loss), model


def _set(on: dict) -> None:
    import importlib

    for kernel, (module, flag) in SWITCHES.items():
        setattr(importlib.import_module(module), flag, on[kernel])


def run(name: str, rounds: int, compile_: bool) -> dict:
    import torch

    from lieconv_runtime import native
    from lieconv_runtime.nn import geometry

    lift, fwd, loss, module = setup_qm9(name[4:].upper()) if name.startswith("qm9_") else setup(name)
    variants = {"native": {k: True for k in SWITCHES}, "torch": {k: False for k in SWITCHES}}
    for kernel in SWITCHES:
        variants[f"no_{kernel}"] = {k: k != kernel for k in SWITCHES}
    row = {"config": name, "rounds": rounds, "threads": torch.get_num_threads(), "native_built": native.available(),
           "load_avg": round(os.getloadavg()[0], 2)}
    originals = (geometry.orthogonal_sq_norm_parts, geometry.orthogonal_log_parts)
    compiled = None
    if compile_:
        compiled = (torch.compile(originals[0], dynamic=True), torch.compile(originals[1], dynamic=True))
        variants["torch_compiled"] = {k: False for k in SWITCHES}

    def step(variant: str):
        _set(variants[variant])
        use = compiled if variant == "torch_compiled" else originals
        geometry.orthogonal_sq_norm_parts, geometry.orthogonal_log_parts = use
        module.zero_grad(set_to_none=True)
        loss(fwd(lift())).backward()

    if compile_:
        t = time.perf_counter()
        step("torch_compiled")
        row["compile_s"] = round(time.perf_counter() - t, 1)
    for v in variants:  # warm-up: builds, caches, allocator
        step(v)
        step(v)
    times = {v: [] for v in variants}
    order = list(variants)
    rng = random.Random(0)
    for _ in range(rounds):
        rng.shuffle(order)
        for v in order:
            t = time.perf_counter()
            step(v)
            times[v].append((time.perf_counter() - t) * 1e3)
    geometry.orthogonal_sq_norm_parts, geometry.orthogonal_log_parts = originals
    _set(variants["native"])
    for v, ts in times.items():
        row[f"{v}_ms"] = round(statistics.median(ts), 2)
        row[f"{v}_min_ms"] = round(min(ts), 2)
    base = row["native_ms"]
    for kernel in SWITCHES:
        row[f"gain_{kernel}"] = round(row[f"no_{kernel}_ms"] / base - 1, 3)
    row["gain_all"] = round(row["torch_ms"] / base - 1, 3)
    return row


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", nargs="+", choices=CONFIGS, default=CONFIGS)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--compile", action="store_true", help="also time the torch paths with torch.compile")
    args = parser.parse_args(argv)
    import torch

    from lieconv_runtime.perf import tune_malloc

    torch.set_num_threads(args.threads)
    tune_malloc()
    for name in args.config:
        torch.manual_seed(0)
        print(json.dumps(run(name, args.rounds, args.compile)), flush=True)


if __name__ == "__main__":
    main()
