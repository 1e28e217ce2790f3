"""Optional native CPU kernels, compiled on first use with the system's C compiler.

    from lieconv_runtime import native
    native.available()          # True once the library is built and loaded
    native.flat_ball_select(f, mask, qidx, qmask, r2, seed, k)            # T2, T3, Trivial, ...
    native.orthogonal_ball_select(R, t, qs, mask, qidx, qmask, r2, seed, k)  # SE2, SE3, SO2, SO3
    native.fps_flat(f, mask, start, M)                           # farthest point sampling
    native.fps_orthogonal(R, t, qs, mask, start, M)
    native.gather_contract(s, values, rows)                      # the PointConv contraction
    native.kernel_mlp_forward(xc, A, c, W2, ..., act)            # the kernel MLP in training mode

The C sources next to this file (ball_select.c, fps.c, gather_contract.c, kernel_mlp.c and their
headers) are compiled in
parallel with `cc -O3 -march=native -fopenmp` and per-source flags (`_SOURCES`: the selection keeps
-ffp-contract=off so its distances round as torch's) into a cache folder (LIECONV_NATIVE_CACHE,
default io.cache_dir("native"): $LIECONV_CACHE/native, $XDG_CACHE_HOME/lieconv/native or ~/.cache/lieconv/native), named by a hash of the sources, the compiler, the flags and the
CPU's feature flags, written atomically, and loaded with ctypes (no torch headers: a build takes
5-10 s once).  Without a compiler, or with LIECONV_NATIVE=0, `available()` is False and callers
use their torch paths, which compute the same results.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import torch

__all__ = ["available", "flat_ball_select", "fps_flat", "fps_orthogonal",
           "gather_contract", "gather_contract_backward", "kernel_mlp_backward", "kernel_mlp_forward",
           "kernel_mlp_supported", "orthogonal_ball_select", "usable"]

#: sources and their own flags: the ball selection must round as torch does (no fused multiply-add)
_SOURCES = {"ball_select.c": ["-ffp-contract=off", "-fno-math-errno"],
            "fps.c": ["-ffp-contract=off", "-fno-math-errno"],
            "gather_contract.c": ["-ffp-contract=fast"],
            "kernel_mlp.c": ["-ffp-contract=fast", "-fno-math-errno"]}
_FLAGS = ["-O3", "-march=native", "-fPIC", "-std=c11"]
_lib: ctypes.CDLL | None | bool = None  # None: not tried yet; False: unavailable


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return line
    except OSError:
        pass
    return platform.processor()


def _compile(cc: str, sources: list[Path], out: Path, openmp: bool) -> str | None:
    """Compile each source with its flags (in parallel) and link them into `out`; the error line or None."""
    omp = ["-fopenmp"] if openmp else []
    objects = [str(out.with_name(src.stem + ".o")) for src in sources]
    jobs = [subprocess.Popen([cc, *_FLAGS, *_SOURCES[src.name], *omp, "-c", str(src), "-o", obj],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for src, obj in zip(sources, objects)]
    errors = [job.communicate()[1] for job in jobs]  # waits; sets returncode
    for job, err in zip(jobs, errors):
        if job.returncode:
            return err.strip().splitlines()[-1] if err.strip() else "compiler failed"
    done = subprocess.run([cc, "-shared", *omp, *objects, "-o", str(out), "-lm"], capture_output=True, text=True)
    if done.returncode:
        return done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "linker failed"
    return None


def _build(cache: Path, cc: str) -> Path:
    here = Path(__file__).parent
    sources = [here / s for s in _SOURCES]
    version = subprocess.run([cc, "--version"], capture_output=True, text=True).stdout
    h = hashlib.sha256()
    headers = sorted(here.glob("*.h"))
    for part in [*(s.read_bytes() for s in sources + headers), version.encode(), repr((_FLAGS, _SOURCES)).encode(),
                 _cpu_flags().encode(), platform.machine().encode()]:
        h.update(part)
    target = cache / f"lieconv_native_{h.hexdigest()[:16]}.so"
    if target.is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        out = Path(tmp) / target.name
        error = _compile(cc, sources, out, openmp=True)
        if error is not None:  # no OpenMP: one thread per call
            error = _compile(cc, sources, out, openmp=False)
        if error is not None:
            raise RuntimeError(error)
        os.replace(out, target)  # atomic: concurrent builders never load a half-written library
    return target


def _load():
    global _lib
    if _lib is not None:
        return _lib or None
    _lib = False
    if os.environ.get("LIECONV_NATIVE", "1") == "0":
        return None
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None
    from lieconv_runtime.io import cache_dir

    cache = Path(os.environ.get("LIECONV_NATIVE_CACHE") or cache_dir("native"))
    try:
        lib = ctypes.CDLL(str(_build(cache, cc)))
    except (OSError, RuntimeError, subprocess.SubprocessError) as e:
        warnings.warn(f"lieconv_runtime.native: building the C kernels failed ({e}); using the torch paths "
                      "(same results, slower); set LIECONV_NATIVE=0 to skip the attempt", stacklevel=3)
        return None
    p, i64 = ctypes.c_void_p, ctypes.c_int64
    for name in ("lc_flat_ball_select_f64", "lc_flat_ball_select_f32"):
        fn = getattr(lib, name)
        fn.argtypes = [p, p, i64, i64, i64, p, p, i64, ctypes.c_double, ctypes.c_uint64, i64, p, p, ctypes.c_int]
        fn.restype = i64
    for name in ("lc_orth_ball_select_f64", "lc_orth_ball_select_f32"):
        fn = getattr(lib, name)
        fn.argtypes = [p, p, p, p, p, p, i64, i64, p, i64, i64, p, p, i64, ctypes.c_double, ctypes.c_double,
                       ctypes.c_uint64, i64, p, p, ctypes.c_int, ctypes.c_int]
        fn.restype = i64
    lib.lc_fps_flat_f64.argtypes, lib.lc_fps_flat_f64.restype = [p, p, i64, i64, i64, p, i64, p, ctypes.c_int], None
    lib.lc_fps_orth_f64.argtypes = [p, p, p, p, i64, i64, i64, p, i64, i64, p, i64, p, ctypes.c_int, ctypes.c_int]
    lib.lc_fps_orth_f64.restype = None
    for sfx in ("f32", "f64"):
        fn = getattr(lib, f"lc_gather_contract_fwd_{sfx}")
        fn.argtypes, fn.restype = [p, p, p, i64, i64, i64, i64, p, ctypes.c_int], None
        fn = getattr(lib, f"lc_gather_contract_bwd_{sfx}")
        fn.argtypes, fn.restype = [p, p, p, p, i64, i64, i64, i64, p, p, ctypes.c_int], None
        fn = getattr(lib, f"lc_kmlp_fwd_{sfx}")
        fn.argtypes = [p, i64, i64, p, p, p, p, p, p, p, p, i64, i64, ctypes.c_double, ctypes.c_double, ctypes.c_int,
                       p, p, p, p, p, p, p, ctypes.c_int]
        fn.restype = None
        fn = getattr(lib, f"lc_kmlp_bwd_{sfx}")
        fn.argtypes = [p, i64, i64, p, p, p, p, p, p, p, p, i64, i64, p, p, p, p, ctypes.c_int, p, p, p, p, p, p, p,
                       p, p, p, p, p, ctypes.c_int]
        fn.restype = None
    lib.lc_vec_bytes.argtypes, lib.lc_vec_bytes.restype = [], ctypes.c_int
    _lib = lib
    return lib


def available() -> bool:
    """Whether the native kernels are built and loaded (builds them on the first call)."""
    return _load() is not None


def usable(t: torch.Tensor) -> bool:
    """Whether the kernels can take t's data: a float32/float64 tensor on the CPU, kernels built."""
    return t.device.type == "cpu" and t.dtype in (torch.float32, torch.float64) and available()


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _sfx(t: torch.Tensor) -> str:
    """The C entry point's suffix for t's dtype (float64 or float32)."""
    return "f64" if t.dtype == torch.float64 else "f32"


def _u8(mask: torch.Tensor) -> torch.Tensor:
    """A bool mask as contiguous uint8 (keep the result alive while C reads it)."""
    return mask.contiguous().view(torch.uint8)


def flat_ball_select(f: torch.Tensor, mask: torch.Tensor, qidx: torch.Tensor, qmask: torch.Tensor, r2: float,
                     seed: int, k: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Up to k random neighbours inside the ball |f_i - f_j|^2 < r2 of each query, on the CPU.

    f (bs, N, D) float32/float64, mask (bs, N) bool, qidx (bs, c) long, qmask (bs, c) bool.
    Returns idx (bs, c, k) long (chosen j ascending, 0 where unused), valid (bs, c, k) bool and
    the number of valid pairs inside the ball: the pairs and keys of sampling.select_neighbours.
    """
    lib = _load()
    fn = getattr(lib, f"lc_flat_ball_select_{_sfx(f)}")
    bs, n, d = f.shape
    c = qidx.shape[1]
    ft = f.detach().transpose(1, 2).contiguous()  # (bs, D, N): the distance loop runs along N
    mask8, qmask8, qidx = _u8(mask), _u8(qmask), qidx.contiguous()  # held: the C call reads their memory
    idx = torch.empty(bs, c, k, dtype=torch.long)
    valid = torch.empty(bs, c, k, dtype=torch.bool)
    inside = fn(ft.data_ptr(), mask8.data_ptr(), bs, n, d, qidx.data_ptr(), qmask8.data_ptr(), c, float(r2),
                seed % 2**64, k, idx.data_ptr(), valid.data_ptr(), torch.get_num_threads())
    return idx, valid, int(inside)


def orthogonal_ball_select(R: torch.Tensor, t: torch.Tensor | None, qs: torch.Tensor | None, mask: torch.Tensor,
                           qidx: torch.Tensor, qmask: torch.Tensor, r2: float, seed: int, k: int,
                           tol: float, sum_form: bool = False) -> tuple[torch.Tensor, torch.Tensor, int]:
    """`flat_ball_select` for groups with orthogonal linear parts and one rotation plane: the
    ball d^2 < r2 in the closed form of geometry.orthogonal_sq_norm_parts, from the linear parts
    R (bs, N, m, m) (m = 2 or 3), translations t (bs, N, m) (None for linear groups) and scaled
    orbit coordinates qs (bs, N, q) (sqrt(alpha) q, or None).  Double-precision bounds decide
    most pairs in one SIMD pass; pairs within the relative band tol of r2 get the closed form in
    R's precision.  sum_form: the ball (|rotation part| + |rest|)^2 < r2 instead (the "sum" distance)."""
    lib = _load()
    fn = getattr(lib, f"lc_orth_ball_select_{_sfx(R)}")
    bs, n, m = R.shape[:3]
    c = qidx.shape[1]
    R = R.detach().reshape(bs, n, m * m).contiguous()
    t = None if t is None else t.detach().contiguous()
    qs = None if qs is None or qs.shape[-1] == 0 else qs.detach().contiguous()
    # (bs, ., N) in double: the SIMD pass runs along N
    RT, tT, qT = (None if x is None else x.transpose(1, 2).to(torch.float64).contiguous() for x in (R, t, qs))
    mask8, qmask8, qidx = _u8(mask), _u8(qmask), qidx.contiguous()  # held: the C call reads their memory
    idx = torch.empty(bs, c, k, dtype=torch.long)
    valid = torch.empty(bs, c, k, dtype=torch.bool)
    inside = fn(R.data_ptr(), _ptr(t), _ptr(qs), RT.data_ptr(), _ptr(tT), _ptr(qT), 0 if qs is None else qs.shape[-1],
                m, mask8.data_ptr(), bs, n, qidx.data_ptr(), qmask8.data_ptr(), c, float(r2), tol,
                seed % 2**64, k, idx.data_ptr(), valid.data_ptr(), torch.get_num_threads(), int(sum_form))
    return idx, valid, int(inside)


def fps_flat(f: torch.Tensor, mask: torch.Tensor, start: torch.Tensor, M: int) -> torch.Tensor:
    """Farthest point sampling in |f_i - f_j|^2 on the CPU, in double: f (bs, N, D), mask (bs, N) bool,
    start (bs,) long (the first element of each cloud) -> idx (bs, M) long: M steps of the loop of
    sampling.farthest_point_sample (entries past a cloud's own count are whatever the loop picks)."""
    lib = _load()
    bs, n, d = f.shape
    f, mask8, start = f.detach().to(torch.float64).contiguous(), _u8(mask), start.contiguous()  # held: C reads them
    idx = torch.empty(bs, M, dtype=torch.long)
    lib.lc_fps_flat_f64(f.data_ptr(), mask8.data_ptr(), bs, n, d, start.data_ptr(), M, idx.data_ptr(),
                        torch.get_num_threads())
    return idx


def fps_orthogonal(R: torch.Tensor, t: torch.Tensor | None, qs: torch.Tensor | None, mask: torch.Tensor,
                   start: torch.Tensor, M: int, sum_form: bool = False) -> torch.Tensor:
    """`fps_flat` in the squared distance of `orthogonal_ball_select` (linear parts R (bs, N, m, m),
    m = 2 or 3, translations t (bs, N, m) or None, scaled orbit coordinates qs (bs, N, q) or None);
    sum_form: in (|rotation part| + |rest|)^2 instead (the "sum" distance)."""
    lib = _load()
    bs, n, m = R.shape[:3]
    f64 = lambda x: None if x is None else x.detach().to(torch.float64).contiguous()  # noqa: E731
    R, t = f64(R.reshape(bs, n, m * m)), f64(t)
    qs = None if qs is None or qs.shape[-1] == 0 else f64(qs)
    parts = [x for x in (t, qs) if x is not None]
    lb = torch.cat(parts, -1).contiguous() if parts else torch.zeros(bs, n, 0, dtype=torch.float64)
    mask8, start = _u8(mask), start.contiguous()
    idx = torch.empty(bs, M, dtype=torch.long)
    lib.lc_fps_orth_f64(R.data_ptr(), _ptr(t), _ptr(qs), lb.data_ptr(), lb.shape[-1], 0 if qs is None else qs.shape[-1],
                        m, mask8.data_ptr(), bs, n, start.data_ptr(), M, idx.data_ptr(), torch.get_num_threads(),
                        int(sum_form))
    return idx


def _contract_operands(s: torch.Tensor, values: torch.Tensor, rows: torch.Tensor):
    """s (Q, K, W), values (R, C), rows (Q, K) long, checked and made contiguous (keep them alive
    while C reads them)."""
    q, k, w = s.shape
    if values.dtype != s.dtype or rows.shape != (q, k) or rows.dtype != torch.long:
        raise ValueError(f"gather_contract: s {tuple(s.shape)} {s.dtype}, values {tuple(values.shape)} {values.dtype}, "
                         f"rows {tuple(rows.shape)} {rows.dtype}: want values of s's dtype and rows (Q, K) long")
    return s.detach().contiguous(), values.detach().contiguous(), rows.contiguous()


def gather_contract(s: torch.Tensor, values: torch.Tensor, rows: torch.Tensor,
                    out: torch.Tensor | None = None) -> torch.Tensor:
    """p[q, w, c] = sum_k s[q, k, w] values[rows[q, k], c]: s (Q, K, W), values (R, C), rows (Q, K)
    long (every entry in [0, R): not checked) -> (Q, W, C), written into `out` (contiguous) if
    given.  The neighbour rows are read in place, never gathered into a copy.  No autograd."""
    lib = _load()
    s, values, rows = _contract_operands(s, values, rows)
    q, k, w = s.shape
    c = values.shape[1]
    p = s.new_empty(q, w, c) if out is None else out
    if not (p.is_contiguous() and p.shape == (q, w, c) and p.dtype == s.dtype):
        raise ValueError(f"gather_contract: out must be a contiguous {(q, w, c)} {s.dtype} tensor")
    getattr(lib, f"lc_gather_contract_fwd_{_sfx(s)}")(s.data_ptr(), values.data_ptr(), rows.data_ptr(), q, k, w, c,
                                                      p.data_ptr(), torch.get_num_threads())
    return p


def gather_contract_backward(s: torch.Tensor, values: torch.Tensor, rows: torch.Tensor, grad: torch.Tensor,
                             grad_values: torch.Tensor | None, need_s: bool = True) -> torch.Tensor | None:
    """Gradients of `gather_contract` from grad = d/dp (Q, W, C): returns d/ds (Q, K, W) (None
    unless need_s) and adds d/dvalues into grad_values (R, C, contiguous, values' dtype) in place
    (skipped if None)."""
    lib = _load()
    s, values, rows = _contract_operands(s, values, rows)
    q, k, w = s.shape
    c = values.shape[1]
    grad = grad.detach().contiguous()
    if grad.shape != (q, w, c) or grad.dtype != s.dtype:
        raise ValueError(f"gather_contract_backward: grad must be {(q, w, c)} {s.dtype}")
    if grad_values is not None and not (grad_values.is_contiguous() and grad_values.shape == values.shape
                                        and grad_values.dtype == s.dtype):
        raise ValueError(f"gather_contract_backward: grad_values must be a contiguous {tuple(values.shape)} {s.dtype} tensor")
    gs = s.new_empty(q, k, w) if need_s else None
    getattr(lib, f"lc_gather_contract_bwd_{_sfx(s)}")(s.data_ptr(), values.data_ptr(), rows.data_ptr(), grad.data_ptr(),
                                                      q, k, w, c, _ptr(gs), _ptr(grad_values), torch.get_num_threads())
    return gs


def kernel_mlp_supported(hidden: int, out: int, dtype: torch.dtype) -> bool:
    """Whether `kernel_mlp_forward` takes these widths: multiples of the built vector length, at
    most 1024 (kernel_mlp.c's MAXC)."""
    lib = _load()
    if lib is None or dtype not in (torch.float32, torch.float64):
        return False
    lanes = lib.lc_vec_bytes() // (4 if dtype == torch.float32 else 8)
    return hidden % lanes == 0 and out % lanes == 0 and max(hidden, out) <= 1024


def _c(*tensors: torch.Tensor) -> list:
    """Detached contiguous copies (or the tensors themselves): keep them alive while C reads them."""
    return [t.detach().contiguous() for t in tensors]


def kernel_mlp_forward(xc: torch.Tensor, A: torch.Tensor, c: torch.Tensor, W2: torch.Tensor, g2: torch.Tensor,
                       be2: torch.Tensor, W3: torch.Tensor, g3: torch.Tensor, be3: torch.Tensor, eps2: float,
                       eps3: float, act: bool):
    """The kernel MLP in training mode (kernel_mlp.c): xc (P, D) (the centred input), A (D, H) and
    c (H,) (the first linear map with its batch norm folded in), W2 (H, H) and W3 (O, H) (weights
    as stored; their biases cancel in the batch norms after them), batch-norm weights g, be.
    Returns (y (P, O) = bn3(z3) (act: its swish), z2 (P, H), z3 (P, O), mean2, var2, mean3, var3),
    the statistics (biased var) in float64.  No autograd."""
    lib = _load()
    xc, A, c, g2, be2, g3, be3 = _c(xc, A, c, g2, be2, g3, be3)
    W2t, W3t = W2.detach().t().contiguous(), W3.detach().t().contiguous()
    P, D = xc.shape
    H, O = W2.shape[0], W3.shape[0]
    z2, z3, y = xc.new_empty(P, H), xc.new_empty(P, O), xc.new_empty(P, O)
    stats = [torch.empty(C, dtype=torch.float64) for C in (H, H, O, O)]
    getattr(lib, f"lc_kmlp_fwd_{_sfx(xc)}")(xc.data_ptr(), P, D, A.data_ptr(), c.data_ptr(), W2t.data_ptr(),
                                            g2.data_ptr(), be2.data_ptr(), W3t.data_ptr(), g3.data_ptr(),
                                            be3.data_ptr(), H, O, float(eps2), float(eps3), int(act), z2.data_ptr(),
                                            z3.data_ptr(), y.data_ptr(), *[t.data_ptr() for t in stats],
                                            torch.get_num_threads())
    return (y, z2, z3, *stats)


def kernel_mlp_backward(xc, A, c, W2, g2, be2, W3, g3, be3, mean2, invstd2, mean3, invstd3, act: bool, z2, z3,
                        gy: torch.Tensor):
    """Gradients of `kernel_mlp_forward` from gy = d/dy (P, O): (d/dA, d/dc, d/dW2, d/dW3, d/dg2,
    d/dbe2, d/dg3, d/dbe3), the batch-norm ones in float64; mean and invstd (float64) from the
    forward's statistics."""
    lib = _load()
    xc, A, c, W2, g2, be2, W3, g3, be3, z2, z3, gy = _c(xc, A, c, W2, g2, be2, W3, g3, be3, z2, z3, gy)
    stats = _c(mean2, invstd2, mean3, invstd3)
    P, D = xc.shape
    H, O = W2.shape[0], W3.shape[0]
    buf = xc.new_empty(P, H)
    gA, gc, gW2, gW3 = torch.empty_like(A), torch.empty_like(c), torch.empty_like(W2), torch.empty_like(W3)
    bn = [torch.empty(C, dtype=torch.float64) for C in (H, H, O, O)]
    getattr(lib, f"lc_kmlp_bwd_{_sfx(xc)}")(xc.data_ptr(), P, D, A.data_ptr(), c.data_ptr(), W2.data_ptr(),
                                            g2.data_ptr(), be2.data_ptr(), W3.data_ptr(), g3.data_ptr(),
                                            be3.data_ptr(), H, O, *[t.data_ptr() for t in stats], int(act),
                                            z2.data_ptr(), z3.data_ptr(), gy.data_ptr(), buf.data_ptr(),
                                            gA.data_ptr(), gc.data_ptr(), gW2.data_ptr(), gW3.data_ptr(),
                                            *[t.data_ptr() for t in bn], torch.get_num_threads())
    return (gA, gc, gW2, gW3, *bn)
