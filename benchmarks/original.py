"""The original LieConv code (mfinzi/LieConv), measured with the protocol of layers.py: one JSON line per config.

    git clone https://github.com/mfinzi/LieConv /path/to/LieConv     # needs only torch + numpy
    python benchmarks/original.py --original /path/to/LieConv [--config NAME] [--repeats 5] [--warmup 2]
    python benchmarks/original.py --original /path/to/LieConv --near-pi [--pairs 200000]

The checkout's root goes on sys.path and `lie_conv` is imported from it; this file only calls its
public API (G.lift, LieConv, ImgLieResnet, G.log, G.elems2pairs). Inputs, seeds, threads (2), the
fresh subprocess per config and the keys follow layers.py; every row adds "code".

* Layer configs: lift_ms = the original's G.lift((coords, values, mask), nsamples) (it materialises
  all (bs, n, n, d) pairs); fwd/fwdbwd = its LieConv on the lifted tuple, training mode.
* Radius: the original starts every layer at r = 2 and adapts r in training, so its neighbourhoods
  (and work) would depend on how many warm-up calls ran. Before timing, each layer's r is set to
  the equilibrium of that update (the radius at which the observed fill equals the target);
  "settled_radius" lists the values.
* img_resnet: the original's ImgLieResnet caches the lift of the first batch and its FPS indices
  (as in its training). first_call_ms is one fwd+bwd of a fresh net(images) (lift and FPS
  uncached, one sample); fwd_train_ms / fwdbwd_train_ms / total_ms are later, cached calls
  (layers.py's img_resnet lifts every batch and reuses cached FPS queries).
* --near-pi: the original's pair embedding G.elems2pairs(G.log(u))[..., 1, 0] = log(u_i^-1 u_j)
  on the pairs of pairs_near_pi.py (same draws), with its wrong-pair rule, per (group, dtype),
  plus rows for generic SE3 pairs (independent exp(N(0, I)) elements).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from layers import device_measured, disc_points, live_peak_mb, matmul_gflops, rss_mb, timed  # noqa: E402

CONFIGS = ["img_layer", "img_layer_se2", "molec_layer", "molec_layer_se3", "img_resnet"]
CODE = "original mfinzi/LieConv"


def fail(message: str) -> None:
    print(f"original.py: {message}", file=sys.stderr)
    sys.exit(2)


def import_original(root: str | None):
    """Put the checkout `root` on sys.path and import lie_conv from it, or exit 2 with one line."""
    fix = "clone it with: git clone https://github.com/mfinzi/LieConv, then pass --original <that folder>"
    if not root:
        fail(f"no checkout of the original LieConv given (--original); {fix}")
    root = os.path.abspath(root)
    if not os.path.isfile(os.path.join(root, "lie_conv", "lieConv.py")):
        fail(f"{root} is not a LieConv checkout (no lie_conv/lieConv.py there); {fix}")
    sys.path.insert(0, root)
    warnings.filterwarnings("ignore")
    try:
        import lie_conv.lieConv
        import lie_conv.lieGroups
    except Exception as e:  # noqa: BLE001 - one line, no traceback
        fail(f"importing lie_conv from {root} failed ({type(e).__name__}: {e}); "
                 "it needs torch and numpy in this Python")
    where = os.path.dirname(os.path.abspath(lie_conv.lieConv.__file__))
    if os.path.dirname(where) != root:
        fail(f"lie_conv was imported from {where}, not from {root}; uninstall that copy")
    return lie_conv.lieConv, lie_conv.lieGroups


def child_argv(script: str, args, group: str, code: str, keys) -> list:
    """The command line that reruns the side-by-side ``script`` for one group and one code: every
    option in ``keys`` that ``args`` sets (``--code both`` runs each code in a fresh process)."""
    out = [sys.executable, os.path.abspath(script), "--code", code, "--groups", group]
    for key in keys:
        value = getattr(args, key)
        if value is not None:
            out += ["--" + key.replace("_", "-"), str(value)]
    return out


def model_kw_argv(model_kw) -> list:
    """``--model-kw KEY=VALUE ...`` for a child process, from the parsed pairs (nothing if none)."""
    if not model_kw:
        return []
    return ["--model-kw", *(f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in model_kw)]


def run_child(argv: list, benchmark: str, code: str, group: str) -> dict:
    """Run ``argv`` (from `child_argv`) and return its JSON row, or a row naming its last error line."""
    out = subprocess.run(argv, capture_output=True, text=True)
    if out.returncode:
        return {"benchmark": benchmark, "code": code, "group": group,
                "error": (out.stderr.strip().splitlines() or ["(no output)"])[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def setup(name: str, lc, lg, device: str = "cpu"):
    """Returns (lift(), fwd(lifted), loss(out), module) of a layer config, on `device`."""
    import torch

    gen = torch.Generator().manual_seed(0)
    if name.startswith("img_layer"):
        G, ns = (lg.SE2(alpha=0.05), 2) if name.endswith("se2") else (lg.T(2), 1)
        coords, c, nbhd, fill = disc_points(8, 700, 14.0, gen), 32, 25, 0.1
    else:
        G, ns = (lg.SE3(alpha=0.2), 4) if name.endswith("se3") else (lg.T(3), 1)
        coords, c = 1.5 * torch.randn(32, 29, 3, generator=gen), 64
        nbhd, fill = (25, 0.5) if name.endswith("se3") else (29, 1.0)
    values = torch.randn(coords.shape[0], coords.shape[1], c, generator=gen).to(device)
    coords = coords.to(device)
    mask = torch.ones(coords.shape[:2], dtype=torch.bool, device=device)
    layer = lc.LieConv(c, c, mc_samples=nbhd, group=G, fill=fill, bn=True, act="swish", mean=True).train().to(device)

    def lift():
        with torch.no_grad():  # inputs without gradients, as in the original's models
            return tuple(G.lift((coords, values, mask), ns))

    return lift, layer, (lambda out: out[1].pow(2).mean()), layer


def settle_radius(lc, module, forward) -> list:
    """Set every original LieConv layer's ball radius r to its equilibrium: the value the original's
    own update r += 0.5 (fill - observed) converges to, i.e. the radius at which the observed fill
    equals the target (median over queries of the fill-quantile distance; every point when fill = 1)."""
    import torch

    orig = lc.LieConv.extract_neighborhood
    radii = []

    def patched(self, inp, query_indices):
        pairs_ab, vals, mask = inp
        if query_indices is not None:
            B = torch.arange(pairs_ab.shape[0]).long()[:, None]
            ab, qmask = pairs_ab[B, query_indices], mask[B, query_indices]
        else:
            ab, qmask = pairs_ab, mask
        d = self.group.distance(ab)
        d = torch.where(mask[:, None, :].expand(*d.shape), d, torch.full_like(d, math.inf)).sort(-1).values
        if self.fill_frac >= 1:
            r = float(d[torch.isfinite(d)].max()) * 1.01 + 1e-6
        else:
            kth = (torch.ceil(self.fill_frac * mask.sum(-1).double()).long() - 1).clamp(min=0)
            q = d.gather(-1, kth[:, None, None].expand(-1, d.shape[1], 1))[..., 0][qmask]
            r = float(q.double().median()) * (1 + 1e-6)
        self.r.fill_(r)
        radii.append(r)
        return orig(self, inp, query_indices)

    lc.LieConv.extract_neighborhood = patched
    try:
        with torch.no_grad():
            module.eval()  # eval: the original does not adapt r, so only the patch sets it
            forward()
            module.train()
    finally:
        lc.LieConv.extract_neighborhood = orig
    return [round(r, 4) for r in radii]


def resnet_row(row: dict, lc, lg, repeats: int, warmup: int, device: str = "cpu") -> None:
    """img_resnet through the original's own net(images): first (uncached) call, then cached calls."""
    import torch
    import torch.nn.functional as F

    gen = torch.Generator().manual_seed(0)
    images = torch.randn(8, 1, 28, 28, generator=gen).to(device)
    labels = torch.randint(0, 10, (8,), generator=gen).to(device)

    def build():
        return lc.ImgLieResnet(chin=1, total_ds=0.1, num_layers=6, group=lg.T(2), fill=0.1, k=128, nbhd=25,
                               num_targets=10).train().to(device)

    settled = build()
    row["settled_radius"] = settle_radius(lc, settled, lambda: settled(images))
    net = build()  # fresh, so nothing is cached yet; weights and the settled r (a buffer) copied over
    net.load_state_dict(settled.state_dict())
    settled = None  # free its cached lift before the base RSS
    row["rss_base_mb"] = round(rss_mb(), 1)

    def step():
        net.zero_grad(set_to_none=True)
        F.cross_entropy(net(images), labels).backward()

    (row["first_call_ms"], _), peak = timed(step, repeats=1, warmup=0)
    row["peak_rss_first_call_mb"] = round(peak, 1)
    row["peak_rss_first_call_above_base_mb"] = round(peak - row["rss_base_mb"], 1)
    (row["fwd_train_ms"], row["fwd_train_min_ms"]), _ = timed(lambda: net(images), repeats, warmup)
    if device != "cpu":
        row["fwdbwd_train_ms"], row["fwdbwd_train_min_ms"], row["peak_dev_fwdbwd_above_base_mb"] = \
            device_measured(step, repeats, warmup, device)
        row["total_ms"] = row["fwdbwd_train_ms"]
        return
    (row["fwdbwd_train_ms"], row["fwdbwd_train_min_ms"]), peak = timed(step, repeats, warmup)
    row["peak_rss_fwdbwd_mb"] = round(peak, 1)
    row["peak_rss_fwdbwd_above_base_mb"] = round(peak - row["rss_base_mb"], 1)
    row["peak_live_fwdbwd_mb"] = round(live_peak_mb(step), 1)
    row["total_ms"] = row["fwdbwd_train_ms"]
    row["cached"] = "lift and FPS indices of the first call (ImgLieResnet, cache=True)"


def run_config(name: str, root: str, threads: int = 2, repeats: int = 5, warmup: int = 2,
               device: str = "cpu") -> dict:
    lc, lg = import_original(root)
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    row = {"config": name, "code": CODE, "torch": torch.__version__, "threads": threads, "repeats": repeats,
           "warmup": warmup, "load_avg": round(os.getloadavg()[0], 2), "matmul_gflops": round(matmul_gflops(), 1)}
    if device != "cpu":
        row.update(device=device, device_name=torch.cuda.get_device_name(device))
    if name == "img_resnet":
        resnet_row(row, lc, lg, repeats, warmup, device)
    elif device != "cpu":
        lift, fwd, loss, module = setup(name, lc, lg, device)
        cloud = lift()
        row["settled_radius"] = settle_radius(lc, module, lambda: fwd(cloud))
        row["lift_ms"], row["lift_min_ms"], row["peak_dev_lift_above_base_mb"] = \
            device_measured(lift, repeats, warmup, device)
        row["fwd_train_ms"], row["fwd_train_min_ms"], _ = device_measured(lambda: fwd(cloud), repeats, warmup, device)

        def step():
            module.zero_grad(set_to_none=True)
            loss(fwd(cloud)).backward()

        row["fwdbwd_train_ms"], row["fwdbwd_train_min_ms"], row["peak_dev_fwdbwd_above_base_mb"] = \
            device_measured(step, repeats, warmup, device)
        row["total_ms"] = row["lift_ms"] + row["fwdbwd_train_ms"]
    else:
        lift, fwd, loss, module = setup(name, lc, lg)
        cloud = lift()
        row["settled_radius"] = settle_radius(lc, module, lambda: fwd(cloud))
        row["rss_base_mb"] = round(rss_mb(), 1)
        (row["lift_ms"], row["lift_min_ms"]), peak = timed(lift, repeats, warmup)
        row["peak_rss_lift_mb"] = round(peak, 1)
        row["peak_rss_lift_above_base_mb"] = round(peak - row["rss_base_mb"], 1)
        (row["fwd_train_ms"], row["fwd_train_min_ms"]), _ = timed(lambda: fwd(cloud), repeats, warmup)

        def step():
            module.zero_grad(set_to_none=True)
            loss(fwd(cloud)).backward()

        (row["fwdbwd_train_ms"], row["fwdbwd_train_min_ms"]), peak = timed(step, repeats, warmup)
        row["peak_rss_fwdbwd_mb"] = round(peak, 1)
        row["peak_rss_fwdbwd_above_base_mb"] = round(peak - row["rss_base_mb"], 1)
        row["peak_live_fwdbwd_mb"] = round(live_peak_mb(step), 1)
        row["total_ms"] = row["lift_ms"] + row["fwdbwd_train_ms"]
    for key in row:
        if key.endswith("_ms") and isinstance(row[key], float):
            row[key] = round(row[key], 2)
    return row


# --near-pi ---------------------------------------------------------------------------------------

def hat(name: str, a):
    """Lie algebra matrix of coefficients a, basis [rx, ry, rz, tx, ty, tz] / [theta, tx, ty]: the
    order of both the original's and this project's SE3 / SE2."""
    import torch

    if name == "SE3":
        X = torch.zeros(*a.shape[:-1], 4, 4, dtype=a.dtype)
        w = a[..., :3]
        X[..., 0, 1], X[..., 0, 2], X[..., 1, 2] = -w[..., 2], w[..., 1], -w[..., 0]
        X[..., 1, 0], X[..., 2, 0], X[..., 2, 1] = w[..., 2], -w[..., 1], w[..., 0]
        X[..., :3, 3] = a[..., 3:]
        return X
    X = torch.zeros(*a.shape[:-1], 3, 3, dtype=a.dtype)
    X[..., 0, 1], X[..., 1, 0] = -a[..., 0], a[..., 0]
    X[..., :2, 2] = a[..., 1:]
    return X


class Reference:
    """The float64 group pairs_near_pi.near_pi_cloud draws from (exp = matrix_exp of hat)."""

    def __init__(self, name: str):
        self.name = name
        self.space_dim, self.lie_dim = (3, 6) if name == "SE3" else (2, 3)

    def exp(self, a):
        import torch

        return torch.linalg.matrix_exp(hat(self.name, a))

    def extent(self, a):
        return a[..., :3].norm(dim=-1) if self.name == "SE3" else a[..., 0].abs()


def check_pairs(G, ref: Reference, u, g, dtype, sampling: str, chunk: int = 50_000) -> dict:
    """The original's log(u_i^-1 u_j) in dtype for u (n, 2, r, r), against g = u_i^-1 u_j (float64)."""
    import torch

    with torch.no_grad():  # G.log(u): the lifted elements as the original stores them
        a = torch.cat([G.elems2pairs(G.log(u[k:k + chunk].to(dtype)))[:, 1, 0]
                       for k in range(0, len(u), chunk)]).double()
    finite = torch.isfinite(a).all(-1)
    e = ref.exp(torch.where(finite[:, None], a, torch.zeros_like(a)))
    err = (e - g).flatten(1).norm(dim=1) / g.flatten(1).norm(dim=1)
    err = torch.where(finite, err, torch.full_like(err, math.inf))
    tol = 1e-3 if dtype == torch.float32 else 1e-9
    outside = ref.extent(a) > math.pi * (1 + 1e-6)
    wrong = (err > tol) | outside | ~finite
    return {"group": ref.name, "dtype": str(dtype).replace("torch.", ""), "path": "original", "code": CODE,
            "sampling": sampling, "pairs": len(u), "wrong": int(wrong.sum()),
            "wrong_frac": float(wrong.double().mean()),
            "max_rel_err_exp": float(err[finite].max()) if finite.any() else math.nan, "tol": tol,
            "outside_principal": int(outside.sum()), "nonfinite": int((~finite).sum())}


def near_pi(root: str, n_pairs: int, threads: int) -> None:
    _, lg = import_original(root)
    import torch

    from pairs_near_pi import near_pi_cloud

    torch.set_num_threads(threads)
    groups = {"SE3": lg.SE3(alpha=0.2), "SE2": lg.SE2(alpha=0.05)}
    for name, G in groups.items():
        ref = Reference(name)
        for dtype in (torch.float32, torch.float64):
            u, g = near_pi_cloud(ref, n_pairs, torch.Generator().manual_seed(0))
            print(json.dumps(check_pairs(G, ref, u, g, dtype, "near_pi")), flush=True)
    ref = Reference("SE3")
    for dtype in (torch.float32, torch.float64):
        gen = torch.Generator().manual_seed(0)
        u = ref.exp(torch.randn(n_pairs, 2, ref.lie_dim, generator=gen, dtype=torch.float64))
        g = torch.linalg.inv(u[:, 0]) @ u[:, 1]
        print(json.dumps(check_pairs(groups["SE3"], ref, u, g, dtype, "generic")), flush=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--original", help="root of a checkout of https://github.com/mfinzi/LieConv")
    parser.add_argument("--config", choices=CONFIGS, help="run one configuration in this process")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per phase (after warm-up)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls per phase before timing")
    parser.add_argument("--device", default="cpu", help="cpu (the published tables) or an accelerator, e.g. cuda")
    parser.add_argument("--near-pi", action="store_true", help="exactness of the original's pair logs near pi")
    parser.add_argument("--pairs", type=int, default=200_000, help="pairs per --near-pi row")
    args = parser.parse_args(argv)
    import_original(args.original)  # check the checkout before any work
    if args.near_pi:
        near_pi(args.original, args.pairs, args.threads)
        return
    if args.config:
        row = run_config(args.config, args.original, args.threads, args.repeats, args.warmup, args.device)
        print(json.dumps(row), flush=True)
        return
    for name in CONFIGS:  # each in a fresh subprocess: clean peak RSS and allocator state
        out = subprocess.run([sys.executable, os.path.abspath(__file__), "--original", args.original, "--config",
                              name, "--threads", str(args.threads), "--repeats", str(args.repeats), "--warmup",
                              str(args.warmup), "--device", args.device], capture_output=True, text=True)
        if out.returncode:
            print(json.dumps({"config": name, "code": CODE, "error": out.stderr.strip().splitlines()[-1:]}),
                  flush=True)
        else:
            print(out.stdout.strip(), flush=True)


if __name__ == "__main__":
    main()
