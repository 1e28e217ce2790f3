"""Layer benchmarks of lieconv_runtime.nn: one JSON line per configuration.

    python benchmarks/layers.py                 # every configuration, each in a fresh subprocess
    python benchmarks/layers.py --config img_layer

Keys: config, lift_ms (everything before the first layer), fwd_train_ms (training-mode
forward), fwdbwd_train_ms (forward + mean(out^2) [cross-entropy for img_resnet] + backward),
total_ms (lift + fwd+bwd), rss_base_mb, peak_rss_fwdbwd_mb, peak_rss_lift_mb (peak VmHWM of
the phase, reset between phases through /proc/self/clear_refs) and the same minus the base,
peak_live_fwdbwd_mb (peak of live tensor memory in one fwd+bwd, torch profiler memory timeline:
free of allocator caching and fragmentation, so comparable across processes and allocators),
matmul_gflops (2048x2048 float32 matmul), threads, load_avg (1-minute load average of the machine
at the start: on a shared 2-core machine, 2-thread timings degrade sharply once other processes
run, because every parallel op waits for a descheduled thread), original_ms / original_peak_mb (the original LieConv code, measured on the 2-core CPU of docs/performance.md).
Times are medians (and minima, *_min_ms) over repeats after warm-up; torch.set_num_threads(2)
unless --threads says otherwise; seed 0.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

CONFIGS = ["img_layer", "img_layer_se2", "molec_layer", "molec_layer_se3", "img_resnet", "lift_pairs_se3",
           "lift_pairs_se2_img"]
ORIGINAL = {"img_layer": {"original_ms": 345}, "img_layer_se2": {"original_ms": 5650, "original_peak_lift_mb": 2000},
            "molec_layer": {"original_ms": 61}, "molec_layer_se3": {"original_ms": 398},
            "img_resnet": {"original_ms": 620}}
SPEEDUP = {"img_layer": 3, "img_layer_se2": 5, "molec_layer": 2, "molec_layer_se3": 3, "img_resnet": 3}


def rss_mb(field: str = "VmRSS") -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _sync() -> None:
    """Wait for queued accelerator work (a no-op on the CPU), so that wall times are complete."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def timed(fn, repeats: int, warmup: int = 2, budget_s: float = 20.0):
    """(median, min) wall time (ms) of fn() after warm-up, and the peak RSS (MB) during the timed calls."""
    for _ in range(warmup):
        fn()
    _sync()
    reset_peak()
    times, start = [], time.perf_counter()
    for i in range(repeats):
        t = time.perf_counter()
        fn()
        _sync()
        times.append((time.perf_counter() - t) * 1e3)
        if i >= 2 and time.perf_counter() - start > budget_s:
            break
    return (statistics.median(times), min(times)), rss_mb("VmHWM")


def live_peak_mb(step) -> float:
    """Peak of the live tensor memory (MB) during one step(), from the torch profiler's memory
    timeline: what autograd and the ops hold, without allocator caching or fragmentation (which
    the RSS peak includes)."""
    import json
    import tempfile
    import warnings

    from torch.profiler import profile

    with profile(profile_memory=True, record_shapes=True, with_stack=True) as prof:
        step()
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = os.path.join(tmp, "timeline.json")
        prof.export_memory_timeline(path, device="cpu")
        with open(path) as f:
            _, sizes = json.load(f)[:2]
    return max((sum(s) for s in sizes), default=0) / 2**20


def matmul_gflops() -> float:
    import torch

    a = torch.randn(2048, 2048)
    a @ a
    best = min(_t(lambda: a @ a) for _ in range(5))
    return 2 * 2048**3 / best / 1e9


def _t(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def disc_points(bs: int, n: int, radius: float, gen):
    import torch

    r = radius * torch.sqrt(torch.rand(bs, n, generator=gen))
    phi = 2 * torch.pi * torch.rand(bs, n, generator=gen)
    return torch.stack([r * torch.cos(phi), r * torch.sin(phi)], -1)


#: --metric: a non-default metric per configuration's group (the original's alpha weighting for SE(n),
#: an anisotropic one for T(n)); the speed must not depend on it
NONDEFAULT_METRIC = {"SE2": lambda G: G.original_weighting(0.05), "SE3": lambda G: G.original_weighting(0.2),
                     "T2": lambda G: {"tx": 2.0, "ty": 0.5}, "T3": lambda G: {"tx": 2.0, "ty": 0.5}}


def setup(name: str, device: str = "cpu", metric: bool = False):
    """Returns (lift(), fwd(cloud), loss(out), module) with inputs and module on `device`; ``metric``:
    the group gets NONDEFAULT_METRIC."""
    import torch

    from lieconv_runtime import load_group as _load

    def load_group(group, **kw):
        G = _load(group, **kw)
        return _load(group, metric=NONDEFAULT_METRIC[group](G), **kw) if metric else G
    from lieconv_runtime.models import ImgLieResNet
    from lieconv_runtime.nn import LieConv

    gen = torch.Generator().manual_seed(0)
    lift_gen = torch.Generator().manual_seed(0)
    if name == "img_resnet":
        G = load_group("T2")
        net = ImgLieResNet(G, k=128, nbhd=25, total_ds=0.1, fill=0.1, num_layers=6).train().to(device)
        images = torch.randn(8, 1, 28, 28, generator=gen).to(device)
        labels = torch.randint(0, 10, (8,), generator=gen).to(device)
        pts = lambda: net.lift(*net.points(images))
        return pts, net.forward_lifted, lambda out: torch.nn.functional.cross_entropy(out, labels), net
    base = name.replace("lift_pairs_se3", "molec_layer_se3").replace("lift_pairs_se2_img", "img_layer_se2")
    if base.startswith("img_layer"):
        G = load_group("SE2", alpha=0.05, lift_samples=2) if base.endswith("se2") else load_group("T2")
        coords, c, nbhd, fill = disc_points(8, 700, 14.0, gen), 32, 25, 0.1
    else:
        G = load_group("SE3", alpha=0.2, lift_samples=4) if base.endswith("se3") else load_group("T3")
        coords, c = 1.5 * torch.randn(32, 29, 3, generator=gen), 64
        nbhd, fill = (25, 0.5) if base.endswith("se3") else (29, 1.0)
    values = torch.randn(coords.shape[0], coords.shape[1], c, generator=gen).to(device)
    coords = coords.to(device)
    mask = torch.ones(coords.shape[:2], dtype=torch.bool, device=device)
    layer = LieConv(c, c, G, nbhd=nbhd, fill=fill, bn=True, mean=True).train().to(device)
    lift = lambda: G.lift(coords, values, mask, generator=lift_gen)
    return lift, layer, lambda out: out.values.pow(2).mean(), layer


def run_config(name: str, threads: int = 2, device: str = "cpu", metric: bool = False) -> dict:
    import torch

    from lieconv_runtime.perf import tune_malloc

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    tune_malloc()  # as a training process (the lieconv CLI) does
    row = {"config": name, "threads": threads, "load_avg": round(os.getloadavg()[0], 2),
           "matmul_gflops": round(matmul_gflops(), 1), **({"metric": "nondefault"} if metric else {})}
    if device != "cpu":
        return run_config_accelerator(name, device, row)
    lift, fwd, loss, module = setup(name, metric=metric)
    cloud = lift()
    row["rss_base_mb"] = round(rss_mb(), 1)
    (row["lift_ms"], row["lift_min_ms"]), peak = timed(lift, repeats=20)
    row["peak_rss_lift_mb"] = round(peak, 1)
    row["peak_rss_lift_above_base_mb"] = round(peak - row["rss_base_mb"], 1)
    if not name.startswith("lift_pairs"):
        (row["fwd_train_ms"], row["fwd_train_min_ms"]), _ = timed(lambda: fwd(cloud), repeats=15)

        def step():
            module.zero_grad(set_to_none=True)
            loss(fwd(cloud)).backward()

        (row["fwdbwd_train_ms"], row["fwdbwd_train_min_ms"]), peak = timed(step, repeats=15)
        row["peak_rss_fwdbwd_mb"] = round(peak, 1)
        row["peak_rss_fwdbwd_above_base_mb"] = round(peak - row["rss_base_mb"], 1)
        row["peak_live_fwdbwd_mb"] = round(live_peak_mb(step), 1)
        row["total_ms"] = row["lift_ms"] + row["fwdbwd_train_ms"]
        if name in ORIGINAL:
            row.update(ORIGINAL[name])
            row["speedup"] = round(ORIGINAL[name]["original_ms"] / row["total_ms"], 2)
            row["target_speedup"] = SPEEDUP[name]
    for key in ("lift_ms", "fwd_train_ms", "fwdbwd_train_ms", "total_ms", "lift_min_ms", "fwd_train_min_ms",
                "fwdbwd_train_min_ms"):
        if key in row:
            row[key] = round(row[key], 2)
    return row


def device_measured(fn, repeats: int, warmup: int, device: str):
    """(median ms, min ms, peak device memory above the memory held before, MB) of fn() on an accelerator."""
    import torch

    _sync()
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    (med, low), _ = timed(fn, repeats, warmup)
    return med, low, round((torch.cuda.max_memory_allocated(device) - base) / 2**20, 1)


def run_config_accelerator(name: str, device: str, row: dict) -> dict:
    """The same phases on an accelerator: synchronised wall times, and the allocator's peak of
    device memory above the memory held before the phase (peak_dev_*_above_base_mb)."""
    import torch

    row.update(device=device, device_name=torch.cuda.get_device_name(device))
    lift, fwd, loss, module = setup(name, device)
    cloud = lift()

    row["lift_ms"], row["lift_min_ms"], row["peak_dev_lift_above_base_mb"] = device_measured(lift, 20, 2, device)
    if not name.startswith("lift_pairs"):
        row["fwd_train_ms"], row["fwd_train_min_ms"], _ = device_measured(lambda: fwd(cloud), 15, 2, device)

        def step():
            module.zero_grad(set_to_none=True)
            loss(fwd(cloud)).backward()

        row["fwdbwd_train_ms"], row["fwdbwd_train_min_ms"], row["peak_dev_fwdbwd_above_base_mb"] = \
            device_measured(step, 15, 2, device)
        row["total_ms"] = row["lift_ms"] + row["fwdbwd_train_ms"]
    return {k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=CONFIGS, help="run one configuration in this process")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (the published tables use 2)")
    parser.add_argument("--device", default="cpu",
                        help="cpu (the published tables) or an accelerator, e.g. cuda: synchronised times, device memory")
    parser.add_argument("--metric", action="store_true",
                        help="give each group a non-default metric (NONDEFAULT_METRIC): the speed must not change")
    parser.add_argument("--plain-mlp", action="store_true",
                        help="kernel MLP as plain modules at every size (LEAN_MIN_ROWS = inf): faster, more memory")
    args = parser.parse_args(argv)
    if args.config:
        if args.plain_mlp:
            import math

            from lieconv_runtime.nn import lieconv

            lieconv.LEAN_MIN_ROWS = math.inf
        row = run_config(args.config, args.threads, args.device, args.metric)
        print(json.dumps({**row, "plain_mlp": True} if args.plain_mlp else row), flush=True)
        return
    for name in CONFIGS:  # each in a fresh subprocess: clean peak RSS and allocator state
        out = subprocess.run([sys.executable, __file__, "--config", name, "--threads", str(args.threads),
                              "--device", args.device] + (["--plain-mlp"] if args.plain_mlp else [])
                             + (["--metric"] if args.metric else []), capture_output=True, text=True)
        if out.returncode:
            print(json.dumps({"config": name, "error": out.stderr.strip().splitlines()[-1:]}), flush=True)
        else:
            print(out.stdout.strip(), flush=True)


if __name__ == "__main__":
    main()
