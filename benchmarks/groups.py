"""Speed of the generated exp / log / inv (closed forms) against torch's generic
matrix_exp / inv, per group; one JSON line per (group, dtype).

    python benchmarks/groups.py [--groups SE3 SO3 ...] [--n 100000] [--repeats 7]

Times are medians over repeats after a warm-up, torch.set_num_threads(2), seed 0, with
coefficients scaled into log's principal domain.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from groupgen.check import principal_samples
from lieconv_runtime import available_groups, load_group


def median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", nargs="*", default=None)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    for name in args.groups or available_groups():
        G = load_group(name)
        if G.lie_dim == 0:
            continue
        for dtype in (torch.float32, torch.float64):
            a = principal_samples(G, args.n, torch.Generator().manual_seed(0), dtype)
            g = G.exp(a)
            A = G.hat(a)
            row = {
                "group": name, "dtype": str(dtype).replace("torch.", ""), "n": args.n,
                "exp_ms": median_ms(lambda: G.exp(a), args.repeats),
                "log_ms": median_ms(lambda: G.log(g), args.repeats),
                "inv_ms": median_ms(lambda: G.inv(g), args.repeats),
                "torch_matrix_exp_ms": median_ms(lambda: torch.linalg.matrix_exp(A), args.repeats),
                "torch_inv_ms": median_ms(lambda: torch.linalg.inv(g), args.repeats),
            }
            print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()}), flush=True)


if __name__ == "__main__":
    main()
