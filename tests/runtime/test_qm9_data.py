"""QM9 data layer: xyz/CSV/archive parsing, targets in paper units, split, caches, download, errors.

Everything runs on a handful of molecules written here (official xyz files, a tar.bz2 of them and
a qm9pack-style CSV); only ``test_real_qm9pack`` reads the installed qm9pack data (skipped without it).
"""

import csv
import functools
import hashlib
import http.server
import importlib.util
import io
import os
import socket
import tarfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from lieconv_runtime.data import qm9
from lieconv_runtime.data.qm9 import (
    ARCHIVE_NAME,
    QM9,
    TARGETS,
    UNITS,
    DataError,
    check_target,
    collate_molecules,
    download_qm9,
    excluded_indices,
    included_indices,
    load_qm9,
    load_qm9_splits,
    paper_targets,
    parse_xyz,
    split_indices,
    target_stats,
)


# gdb index, elements, positions (Å), the 15 properties (A, B, C, mu, alpha, homo, lumo, gap, r2,
# zpve, U0, U, H, G, Cv) as in the official files. 1-5 and 11 are the real molecules (4: one
# coordinate changed to exercise the ``*^`` exponent); 58 is an excluded index (data made up).
MOLS = [
    (1, "CHHHH", [[-0.0126981359, 1.0858041578, 0.0080009958], [0.002150416, -0.0060313176, 0.0019761204],
                  [1.0117308433, 1.4637511618, 0.0002765748], [-0.540815069, 1.4475266138, -0.8766437152],
                  [-0.5238136345, 1.4379326443, 0.9063972942]],
     [157.7118, 157.70997, 157.70699, 0.0, 13.21, -0.3877, 0.1171, 0.5048, 35.3641, 0.044749, -40.47893,
      -40.476062, -40.475117, -40.498597, 6.469]),
    (2, "NHHH", [[-0.0404260543, 1.0241077531, 0.0625637998], [0.0172574639, 0.0125452063, -0.0273771593],
                 [0.9157893661, 1.3587451948, -0.0287577581], [-0.5202777357, 1.3435321258, -0.7755426124]],
     [293.60975, 293.54111, 191.39397, 1.6256, 9.46, -0.257, 0.0829, 0.3399, 26.1563, 0.034358, -56.525887,
      -56.523026, -56.522082, -56.544961, 6.316]),
    (3, "OHH", [[-0.0343604951, 0.9775395708, 0.0076015923], [0.0647664923, 0.0205721989, 0.0015346341],
                [0.8717903737, 1.3007924048, 0.0006931336]],
     [799.58812, 437.90386, 282.94545, 1.8511, 6.31, -0.2928, 0.0687, 0.3615, 19.0002, 0.021375, -76.404702,
      -76.401867, -76.400922, -76.422349, 6.002]),
    (4, "CCHH", [[0.5995394918, 2.1997e-6, 1.0], [-0.5995394918, 0.0, 1.0], [-1.6616385861, 0.0, 1.0],
                 [1.6616385861, 0.0, 1.0]],
     [0.0, 35.6100361, 35.6100361, 0.0, 16.28, -0.2845, 0.0506, 0.3351, 59.5248, 0.026841, -77.308427,
      -77.305527, -77.304583, -77.327429, 8.574]),
    (5, "CNH", [[-0.0133239314, 1.1324657151, 0.0082758861], [0.0023107217, -0.0191585871, 0.0019287305],
                [-0.0278026991, 2.1989492963, 0.0141537903]],
     [0.0, 44.593883, 44.593883, 2.8937, 12.99, -0.3604, 0.0191, 0.3796, 48.7476, 0.016601, -93.411888,
      -93.40937, -93.408425, -93.431246, 6.278]),
    (11, "CCOHHHH", [[-0.0029448212, 1.5099136648, 0.0086727849], [0.0260828384, 0.0032756259, -0.037459115],
                     [0.9422880119, -0.6550703513, -0.4568257611], [0.9227880213, 1.926342418, -0.3914655687],
                     [-0.8620154031, 1.878524808, -0.5647953841], [-0.1505063787, 1.8439338318, 1.0428910048],
                     [-0.8944300885, -0.4864340773, 0.3577486492]],
     [57.22434, 10.11122, 9.07368, 2.5682, 25.11, -0.254, -0.0198, 0.2342, 166.9728, 0.055355, -153.787612,
      -153.783728, -153.782784, -153.812518, 11.219]),
    (58, "CHHHH", [[0.0, 0.0, 0.0], [0.6, 0.6, 0.6], [-0.6, -0.6, 0.6], [-0.6, 0.6, -0.6], [0.6, -0.6, -0.6]],
     [1.0, 1.0, 1.0, 0.0, 13.0, -0.4, 0.1, 0.5, 35.0, 0.04, -40.0, -40.0, -40.0, -40.0, 6.0]),
]
INCLUDED = [m[0] for m in MOLS if m[0] != 58]
Z = {"H": 1, "C": 6, "N": 7, "O": 8, "F": 9}
QM9PACK_HEADER = ["XYZ_file", "Index", "SMILES", "InChi", "N_atoms", "Stoichiometry", "Elements", "XYZ_Ang",
                  "Mulliken_pop", "Harmonic_Freq_cmi", *qm9.QM9PACK_COLUMNS]

# CH4 (gdb 1) by hand, paper units: e.g. U0 = (-40.47893 - (-37.846772 + 4 * -0.500273)) * 27211.4 meV.
CH4_TARGETS = {"mu": 0.0, "alpha": 13.21, "homo": -10549.85978, "lumo": 3186.45494, "gap": 13736.31472,
               "r2": 35.3641, "zpve": 1217.6829386, "U0": -17172.1893524, "U": -17286.8309806,
               "H": -17389.6628612, "G": -16151.9251208, "Cv": 6.469 - 5 * 2.981}


def _num(x: float, star: bool = False) -> str:
    if star and x != 0 and abs(x) < 1e-4:
        mant, exp = f"{x:.4e}".split("e")
        return f"{mant}*^{int(exp)}"
    return repr(float(x))


def xyz_text(mol) -> str:
    """Official dsgdb9nsd_NNNNNN.xyz text (tabs, ``*^`` exponents)."""
    gdb, els, pos, props = mol
    lines = [str(len(els)), "\t".join([f"gdb {gdb}", *(_num(p) for p in props)])]
    lines += ["\t".join([e, *(_num(c, star=True) for c in xyz), "0.1"]) for e, xyz in zip(els, pos)]
    lines += ["\t".join(["1000.0"] * max(1, 3 * len(els) - 6)), "C\tC", "InChI=1S/X\tInChI=1S/X"]
    return "\n".join(lines) + "\n"


def csv_row(mol) -> list[str]:
    gdb, els, pos, props = mol
    counts = [els.count(e) for e in "HCNOF"]
    return [f"dsgdb9nsd_{gdb:06d}.xyz", str(gdb), "C", "InChI=1S/X", str(len(els)),
            "[" + ",".join(map(str, counts)) + "]", "[" + ",".join(f"'{e}'" for e in els) + "]",
            "[" + ",".join("[" + ",".join(repr(float(c)) for c in xyz) + "]" for xyz in pos) + "]",
            "[" + ",".join(["0.1"] * len(els)) + "]", "[1000.0]", *(repr(float(p)) for p in props)]


def write_xyz_folder(folder: Path, mols=MOLS) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for m in mols:
        (folder / f"dsgdb9nsd_{m[0]:06d}.xyz").write_text(xyz_text(m))
    return folder


def write_archive(path: Path, mols=MOLS, texts: dict | None = None) -> Path:
    """tar.bz2 of the molecules' xyz files (``texts``: name -> text overrides/extra members)."""
    members = {f"dsgdb9nsd_{m[0]:06d}.xyz": xyz_text(m) for m in mols}
    members.update(texts or {})
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:bz2") as tar:
        for name, text in members.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def write_qm9pack(folder: Path, mols=MOLS, rows: list | None = None) -> Path:
    """qm9pack-style data folder: qm9_part{1,2,3}.csv (the molecules spread over parts 1-2)."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [csv_row(m) for m in mols] if rows is None else rows
    half = len(rows) // 2
    for k, part in enumerate([rows[:half], rows[half:], []]):
        with open(folder / f"qm9_part{k + 1}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(QM9PACK_HEADER)
            w.writerows(part)
    return folder


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Caches under tmp; qm9pack points at a missing folder unless a test sets it."""
    monkeypatch.setenv("LIECONV_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(qm9, "_qm9pack_data_dir", lambda: None)


@pytest.fixture
def qm9pack_dir(tmp_path, monkeypatch):
    folder = write_qm9pack(tmp_path / "qm9pack" / "data")
    monkeypatch.setattr(qm9, "_qm9pack_data_dir", lambda: folder)
    return folder


def _one_line(err) -> str:
    msg = str(err.value)
    assert "\n" not in msg and msg.strip() == msg
    return msg


def _cache_files():
    return sorted((Path(os.environ["LIECONV_CACHE"]) / "qm9").glob("*qm9_*"))


# --------------------------------------------------------------------------- parsing
def test_parse_xyz_official_text_with_star_exponent():
    text = ("5\ngdb 1\t157.7118\t157.70997\t157.70699\t0.\t13.21\t-0.3877\t0.1171\t0.5048\t35.3641\t0.044749"
            "\t-40.47893\t-40.476062\t-40.475117\t-40.498597\t6.469\n"
            "C\t-0.0126981359\t 1.0858041578\t 0.0080009958\t-0.535689\n"
            "H\t 0.002150416\t-0.0060313176\t 0.0019761204\t 0.133921\n"
            "H\t 1.0117308433\t 1.4637511618\t 0.0002765748\t 0.133922\n"
            "H\t-0.540815069\t 1.4475266138\t-0.8766437152\t 0.133923\n"
            "H\t-0.5238136345\t 1.4379326443\t 1.2*^-6\t 0.133923\n"
            "1341.307\t1341.3284\t1341.365\t1562.6731\t1562.7453\t3038.3205\t3151.6034\t3151.6788\t3151.7078\n"
            "C\tC\nInChI=1S/CH4/h1H4\tInChI=1S/CH4/h1H4\n")
    mol = parse_xyz(text, "dsgdb9nsd_000001.xyz", 1)
    assert mol.index == 1 and mol.charges == [6, 1, 1, 1, 1]
    assert mol.positions[0] == -0.0126981359 and mol.positions[-1] == 1.2e-6
    assert mol.properties == MOLS[0][3]


def test_xyz_folder_archive_and_csv_give_the_same_molecules(tmp_path, qm9pack_dir, dtype):
    write_xyz_folder(tmp_path / "xyz")
    write_archive(tmp_path / "arc" / ARCHIVE_NAME)
    loaded = {}
    for name, data_dir, source in [("folder", tmp_path / "xyz", "official"), ("archive", tmp_path / "arc", "official"),
                                   ("csv", None, "qm9pack")]:
        loaded[name] = load_qm9_splits(data_dir, source=source, progress=False, dtype=dtype)
    for split in ("train", "valid", "test"):
        ref = loaded["csv"][split]
        for other in ("folder", "archive"):
            ds = loaded[other][split]
            assert torch.equal(ds.index, ref.index) and torch.equal(ds.n_atoms, ref.n_atoms)
            assert torch.equal(ds.charges, ref.charges) and torch.equal(ds.targets, ref.targets)
            assert ds.positions.dtype == dtype and torch.equal(ds.positions, ref.positions)
    found = sorted(i for s in ("train", "valid", "test") for i in loaded["csv"][s].index.tolist())
    assert found == INCLUDED  # 58 is excluded
    assert loaded["csv"]["valid"].index.tolist() == [3] and loaded["csv"]["test"].index.tolist() == [11]
    c2h2 = loaded["archive"]["train"][loaded["archive"]["train"].index.tolist().index(4)]
    assert c2h2["positions"][0, 1] == torch.tensor(2.1997e-6, dtype=dtype)  # from "2.1997*^-6"


# --------------------------------------------------------------------------- targets
def test_ch4_targets_by_hand(tmp_path, qm9pack_dir):
    ds = load_qm9(None, "train", source="qm9pack", progress=False)
    item = ds[ds.index.tolist().index(1)]
    assert item["targets"].dtype == torch.float64 and item["index"] == 1
    got = dict(zip(TARGETS, item["targets"].tolist()))
    for name, want in CH4_TARGETS.items():
        assert got[name] == pytest.approx(want, abs=1e-9), name
    direct = paper_targets(np.array([MOLS[0][3]]), [6, 1, 1, 1, 1], [5])
    assert direct.dtype == np.float64 and np.allclose(direct[0], [CH4_TARGETS[t] for t in TARGETS], atol=1e-9, rtol=0)
    assert list(UNITS) == list(TARGETS) and UNITS["U0"] == "meV" and UNITS["Cv"] == "cal/mol K"


def test_water_and_ammonia_references():
    props = np.array([MOLS[1][3], MOLS[2][3]])
    out = paper_targets(props, [7, 1, 1, 1, 8, 1, 1], [4, 3])
    u0 = TARGETS.index("U0")
    assert out[0, u0] == pytest.approx((-56.525887 - (-54.583861 + 3 * -0.500273)) * 27211.4, abs=1e-9)
    assert out[1, u0] == pytest.approx((-76.404702 - (-75.064579 + 2 * -0.500273)) * 27211.4, abs=1e-9)
    assert out[1, TARGETS.index("Cv")] == pytest.approx(6.002 - 3 * 2.981, abs=1e-12)


def test_target_names_and_stats(qm9pack_dir):
    assert check_target("U0") == TARGETS.index("U0")
    with pytest.raises(DataError) as e:
        check_target("energy")
    msg = _one_line(e)
    assert "'energy'" in msg and ", ".join(TARGETS) in msg
    ds = load_qm9(None, "train", source="qm9pack", progress=False)
    mean, std = target_stats(ds, "gap")
    col = ds.targets[:, TARGETS.index("gap")].numpy()
    assert mean == pytest.approx(col.mean(), rel=1e-15) and std == pytest.approx(col.std(ddof=1), rel=1e-14)
    with pytest.raises(DataError):
        target_stats(ds, "nope")


# --------------------------------------------------------------------------- exclusion list, split
def test_exclusion_list():
    ex = excluded_indices()
    assert len(ex) == 3054 and ex[:5].tolist() == [58, 61, 80, 185, 186]
    assert np.all(np.diff(ex) > 0) and ex[-1] <= 133885
    inc = included_indices()
    assert len(inc) == 130831 and not np.isin(ex, inc).any()
    header = (Path(qm9.__file__).parent / "qm9_excluded.txt").read_text().splitlines()[0]
    assert header.startswith("#")


def test_split_is_the_cormorant_split_and_reproducible():
    state = np.random.get_state()
    try:
        np.random.seed(0)
        perm = np.random.permutation(130831)
    finally:
        np.random.set_state(state)
    inc = included_indices()
    train, valid, test = (split_indices(s) for s in ("train", "valid", "test"))
    assert np.array_equal(train, inc[perm[:100000]])
    assert np.array_equal(valid, inc[perm[100000:117748]])
    assert np.array_equal(test, inc[perm[117748:]])
    assert (len(train), len(valid), len(test)) == (100000, 17748, 13083)
    assert np.array_equal(np.sort(np.concatenate([train, valid, test])), inc)
    split_indices.cache_clear()
    assert np.array_equal(split_indices("train"), train)
    with pytest.raises(DataError) as e:
        split_indices("val")
    assert "train, valid, test" in _one_line(e)


def test_n_takes_the_first_molecules_of_the_split(qm9pack_dir):
    full = load_qm9(None, "train", source="qm9pack", progress=False)
    order = [int(i) for i in split_indices("train") if i in INCLUDED]
    assert full.index.tolist() == order
    two = load_qm9(None, "train", source="qm9pack", n=2, progress=False)
    assert two.index.tolist() == order[:2]
    assert torch.equal(two.targets, full.targets[:2])
    assert len(load_qm9(None, "train", source="qm9pack", n=0, progress=False)) == 0
    with pytest.raises(DataError):
        load_qm9(None, "train", source="qm9pack", n=-1, progress=False)


# --------------------------------------------------------------------------- collate
def test_collate_pads_and_masks(qm9pack_dir, dtype):
    ds = load_qm9(None, "train", source="qm9pack", progress=False, dtype=dtype)
    items = [ds[i] for i in range(len(ds))]
    batch = collate_molecules(items)
    sizes = [len(it["charges"]) for it in items]
    bs, n = len(items), max(sizes)
    assert batch["positions"].shape == (bs, n, 3) and batch["positions"].dtype == dtype
    assert batch["charges"].shape == (bs, n) and batch["charges"].dtype == torch.int64
    assert batch["one_hot"].shape == (bs, n, 5) and batch["one_hot"].dtype == dtype
    assert batch["targets"].shape == (bs, 12) and batch["targets"].dtype == torch.float64
    assert batch["index"].tolist() == ds.index.tolist()
    for b, (it, k) in enumerate(zip(items, sizes)):
        assert batch["mask"][b].tolist() == [True] * k + [False] * (n - k)
        assert torch.equal(batch["positions"][b, :k], it["positions"])
        assert not batch["positions"][b, k:].any() and not batch["charges"][b, k:].any()
        assert not batch["one_hot"][b, k:].any()
        cols = batch["one_hot"][b, :k].argmax(-1)
        assert torch.equal(torch.tensor([1, 6, 7, 8, 9])[cols], it["charges"])
        assert torch.all(batch["one_hot"][b, :k].sum(-1) == 1)
    with pytest.raises(ValueError):
        collate_molecules([])


# --------------------------------------------------------------------------- caches
@pytest.fixture
def count_reads(monkeypatch):
    calls = []
    real = qm9._Source.read

    def read(self, progress):
        calls.append(self.form)
        return real(self, progress)

    monkeypatch.setattr(qm9._Source, "read", read)
    return calls


def test_cache_is_reused(qm9pack_dir, count_reads):
    a = load_qm9(None, "train", source="qm9pack", progress=False)
    b = load_qm9(None, "valid", source="qm9pack", progress=False)
    assert count_reads == ["csv"]
    caches = [p for p in _cache_files() if p.suffix == ".pt"]
    assert len(caches) == 1 and caches[0].name.startswith("qm9_qm9pack_")
    assert len(a) == 4 and len(b) == 1


@pytest.mark.parametrize("damage", ["flip", "truncate", "garbage"])
def test_damaged_cache_is_rebuilt(qm9pack_dir, count_reads, capsys, damage):
    ref = load_qm9(None, "train", source="qm9pack", progress=False)
    (path,) = [p for p in _cache_files() if p.suffix == ".pt"]
    data = bytearray(path.read_bytes())
    if damage == "flip":  # a byte of the positions tensor's data
        pos = torch.load(path, weights_only=True)["positions"].numpy().tobytes()
        at = bytes(data).find(pos[:64])
        assert at > 0
        data[at + 3] ^= 0x40
    elif damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data = bytearray(b"not a torch file")
    path.write_bytes(bytes(data))
    capsys.readouterr()
    again = load_qm9(None, "train", source="qm9pack", progress=False)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "failed its checksum" in err[0] and str(path) in err[0]
    assert count_reads == ["csv", "csv"]
    assert torch.equal(again.positions, ref.positions) and torch.equal(again.targets, ref.targets)
    load_qm9(None, "train", source="qm9pack", progress=False)  # the rebuilt cache is good
    assert count_reads == ["csv", "csv"] and capsys.readouterr().err == ""


def test_changed_source_or_parser_gets_a_new_cache(tmp_path, qm9pack_dir, count_reads, monkeypatch):
    load_qm9(None, "train", source="qm9pack", progress=False)
    part = qm9pack_dir / "qm9_part1.csv"
    text = part.read_text()
    assert "13.21" in text
    part.write_text(text.replace("13.21", "13.25"))  # same size: found by the hash (new mtime)
    st = part.stat()
    os.utime(part, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    ds = load_qm9(None, "train", source="qm9pack", progress=False)
    assert count_reads == ["csv", "csv"]
    assert ds.target("alpha")[ds.index.tolist().index(1)] == 13.25
    monkeypatch.setattr(qm9, "PARSER_VERSION", qm9.PARSER_VERSION + 1)
    load_qm9(None, "train", source="qm9pack", progress=False)
    assert count_reads == ["csv", "csv", "csv"]
    assert len([p for p in _cache_files() if p.suffix == ".pt"]) == 3
    assert not [p for p in _cache_files() if p.name.endswith(".tmp")]


def test_official_folder_and_archive_caches(tmp_path, count_reads):
    write_xyz_folder(tmp_path / "xyz")
    write_archive(tmp_path / "xyz" / ARCHIVE_NAME)  # both present: the archive is used
    load_qm9(tmp_path / "xyz", "train", progress=False)
    load_qm9(tmp_path / "xyz", "train", progress=False)
    assert count_reads == ["archive"]
    (tmp_path / "xyz" / ARCHIVE_NAME).unlink()
    load_qm9(tmp_path / "xyz", "train", progress=False)
    load_qm9(tmp_path / "xyz", "test", progress=False)
    assert count_reads == ["archive", "folder"]


# --------------------------------------------------------------------------- bad input
def _xyz(mol=MOLS[0], edit=None) -> str:
    text = xyz_text(mol)
    return edit(text) if edit else text


def _lines(fn):
    return lambda t: "\n".join(fn(t.split("\n")))


BAD_XYZ = {
    "empty": (lambda t: "", "empty file"),
    "count-not-int": (_lines(lambda ls: ["five"] + ls[1:]), "line 1"),
    "count-too-large": (_lines(lambda ls: ["6"] + ls[1:]), "atom count does not match"),
    "count-too-small": (_lines(lambda ls: ["4"] + ls[1:]), "atom count does not match"),
    "property-fields": (_lines(lambda ls: [ls[0], ls[1].rsplit("\t", 1)[0]] + ls[2:]), "16 fields, expected 17"),
    "property-number": (_lines(lambda ls: [ls[0], ls[1].replace("13.21", "13.2x")] + ls[2:]), "'13.2x'"),
    "unknown-element": (_lines(lambda ls: ls[:3] + ["Cl" + ls[3][1:]] + ls[4:]), "unknown element 'Cl'"),
    "atom-fields": (_lines(lambda ls: ls[:3] + [ls[3].rsplit("\t", 1)[0]] + ls[4:]), "expected atom 2 of 5"),
    "truncated-atoms": (_lines(lambda ls: ls[:4]), "truncated at atom 3 of 5"),
    "truncated-tail": (_lines(lambda ls: ls[:8]), "truncated"),
    "index-mismatch": (_lines(lambda ls: [ls[0], ls[1].replace("gdb 1", "gdb 7")] + ls[2:]), "says gdb 7"),
}


@pytest.mark.parametrize("case", sorted(BAD_XYZ))
@pytest.mark.parametrize("form", ["folder", "archive"])
def test_bad_xyz_is_one_line_naming_file_and_molecule(tmp_path, case, form):
    edit, expect = BAD_XYZ[case]
    text = _xyz(edit=edit)
    good = [m for m in MOLS if m[0] != 1]
    if form == "folder":
        write_xyz_folder(tmp_path / "d", good)
        (tmp_path / "d" / "dsgdb9nsd_000001.xyz").write_text(text)
    else:
        write_archive(tmp_path / "d" / ARCHIVE_NAME, good, {"dsgdb9nsd_000001.xyz": text})
    with pytest.raises(DataError) as e:
        load_qm9(tmp_path / "d", "train", source="official", progress=False)
    msg = _one_line(e)
    assert "dsgdb9nsd_000001.xyz" in msg and expect in msg, msg
    assert "re-download" in msg or "re-extract" in msg
    if case not in ("empty", "count-not-int", "property-fields"):
        assert "gdb 1" in msg
    assert not _cache_files() or all(p.name == "fingerprints.json" for p in _cache_files())


def test_bad_archive(tmp_path):
    arc = write_archive(tmp_path / "d" / ARCHIVE_NAME)
    data = arc.read_bytes()
    for name, content in [("truncated", data[: len(data) // 2]), ("garbage", b"BZh9" + b"\x00" * 500), ("empty", b"")]:
        arc.write_bytes(content)
        with pytest.raises(DataError) as e:
            load_qm9(tmp_path / "d", "train", source="official", progress=False)
        msg = _one_line(e)
        assert str(arc) in msg and "download it again" in msg, (name, msg)
    arc.unlink()
    write_archive(arc, MOLS[:1], {"notes/readme.xyz": "x"})
    with pytest.raises(DataError) as e:
        load_qm9(tmp_path / "d", "train", source="official", progress=False)
    assert "readme.xyz" in _one_line(e)
    write_archive(arc, MOLS[:1], {"dsgdb9nsd_200000.xyz": xyz_text((200000,) + MOLS[0][1:])})
    with pytest.raises(DataError) as e:
        load_qm9(tmp_path / "d", "train", source="official", progress=False)
    assert "200000" in _one_line(e)


def _bad_rows():
    rows = [csv_row(m) for m in MOLS]
    ch4 = rows[0]
    el, xyz, n = QM9PACK_HEADER.index("Elements"), QM9PACK_HEADER.index("XYZ_Ang"), QM9PACK_HEADER.index("N_atoms")
    alpha = QM9PACK_HEADER.index("Polarizability_bohr3")
    return {
        "fields": ([ch4[:-1]] + rows[1:], "24 fields, expected 25"),
        "unknown-element": ([ch4[:el] + [ch4[el].replace("'C'", "'Cl'")] + ch4[el + 1:]] + rows[1:],
                            "unknown element 'Cl'"),
        "atom-count": ([ch4[:n] + ["6"] + ch4[n + 1:]] + rows[1:], "atom count does not match"),
        "coordinates": ([ch4[:xyz] + [ch4[xyz].replace("[0.002150416,", "[")] + ch4[xyz + 1:]] + rows[1:],
                        "atom count does not match"),
        "number": ([ch4[:alpha] + ["n/a"] + ch4[alpha + 1:]] + rows[1:], "'n/a'"),
        "duplicate": (rows + [rows[1]], "appears twice"),
    }


@pytest.mark.parametrize("case", sorted(_bad_rows()))
def test_bad_csv_is_one_line(tmp_path, monkeypatch, case):
    rows, expect = _bad_rows()[case]
    folder = write_qm9pack(tmp_path / "p", rows=rows)
    monkeypatch.setattr(qm9, "_qm9pack_data_dir", lambda: folder)
    with pytest.raises(DataError) as e:
        load_qm9(None, "train", source="qm9pack", progress=False)
    msg = _one_line(e)
    assert "qm9_part" in msg and "line " in msg and expect in msg and "reinstall" in msg, msg
    if case not in ("fields",):
        assert "gdb " in msg


def test_bad_csv_files(tmp_path, monkeypatch):
    folder = write_qm9pack(tmp_path / "p")
    monkeypatch.setattr(qm9, "_qm9pack_data_dir", lambda: folder)
    part = folder / "qm9_part1.csv"
    good = part.read_text()
    cases = [
        (good.replace("Polarizability_bohr3", "Alpha"), "missing columns Polarizability_bohr3"),
        ("", "empty file"),
        (good[: good.index("[[") + 10], "cannot be read"),  # cut inside a quoted field
        (good[: good.rindex("\n", 0, -1) + 30], "fields, expected 25"),  # cut inside the last row
    ]
    for text, expect in cases:
        part.write_text(text)
        with pytest.raises(DataError) as e:
            load_qm9(None, "train", source="qm9pack", progress=False)
        msg = _one_line(e)
        assert "qm9_part1.csv" in msg and expect in msg, msg
    part.unlink()
    with pytest.raises(DataError) as e:
        load_qm9(None, "train", source="qm9pack", progress=False)
    assert "qm9_part1.csv" in _one_line(e) and "reinstall" in str(e.value)


def test_missing_sources(tmp_path):
    with pytest.raises(DataError) as e:
        load_qm9(tmp_path, "train", progress=False)
    msg = _one_line(e)
    assert str(tmp_path) in msg and 'pip install ".[qm9]"' in msg and "lieconv data qm9 --download" in msg
    with pytest.raises(DataError) as e:
        load_qm9(tmp_path, "train", source="official", progress=False)
    assert "lieconv data qm9 --download" in _one_line(e)
    with pytest.raises(DataError) as e:
        load_qm9(tmp_path, "train", source="qm9pack", progress=False)
    assert 'pip install ".[qm9]"' in _one_line(e)
    for bad in [dict(split="val"), dict(source="web")]:
        with pytest.raises(DataError) as e:
            load_qm9(tmp_path, **{"split": "train", **bad}, progress=False)
        _one_line(e)


def test_progress_and_partial_source_note(tmp_path, qm9pack_dir, capsys):
    write_archive(tmp_path / "arc" / ARCHIVE_NAME)
    for data_dir, source in [(tmp_path / "arc", "official"), (None, "qm9pack")]:
        ds = load_qm9(data_dir, "train", source=source, progress=True)
        err = capsys.readouterr().err
        assert "reading" in err and "holds 6 of the 130831 QM9 molecules" in err
        assert ds[-1]["index"] == ds.index[-1] and len(ds[0]["charges"]) == ds.n_atoms[0]
        with pytest.raises(IndexError):
            ds[len(ds)]


def test_auto_prefers_official_then_qm9pack(tmp_path, qm9pack_dir, count_reads):
    load_qm9(tmp_path / "nothing", "train", progress=False)
    write_xyz_folder(tmp_path / "xyz")
    load_qm9(tmp_path / "xyz", "train", progress=False)
    assert count_reads == ["csv", "folder"]


# --------------------------------------------------------------------------- download
class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


def _closed_port_url() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}/{ARCHIVE_NAME}"


def test_download(tmp_path, server):
    root, base = server
    arc = write_archive(root / ARCHIVE_NAME)
    data = arc.read_bytes()
    sha, size = hashlib.sha256(data).hexdigest(), len(data)
    dest = tmp_path / "data"
    url = f"{base}/{ARCHIVE_NAME}"

    for kw, expect in [(dict(sha256="0" * 64, size=size), "sha256"), (dict(sha256=sha, size=size + 1), "bytes")]:
        with pytest.raises(DataError) as e:
            download_qm9(dest, url=url, timeout=10, progress=False, **kw)
        msg = _one_line(e)
        assert expect in msg and "nothing was written" in msg and "qm9pack" in msg
        assert not dest.exists() or not any(dest.iterdir())

    with pytest.raises(DataError) as e:
        download_qm9(dest, url=f"{base}/missing.tar.bz2", sha256=sha, size=size, timeout=10, progress=False)
    assert "HTTP 404" in _one_line(e)

    path = download_qm9(dest, url=url, sha256=sha, size=size, timeout=10, progress=False)
    assert path == dest / ARCHIVE_NAME and path.read_bytes() == data
    assert sorted(p.name for p in dest.iterdir()) == [ARCHIVE_NAME]
    # a good file is kept: no request is made
    assert download_qm9(dest, url=_closed_port_url(), sha256=sha, size=size, timeout=5, progress=False) == path
    ds = load_qm9(dest, "valid", source="official", progress=False)
    assert ds.index.tolist() == [3]


def test_download_offline_is_one_line(tmp_path):
    start = time.perf_counter()
    with pytest.raises(DataError) as e:
        download_qm9(tmp_path, url=_closed_port_url(), timeout=5, progress=False)
    msg = _one_line(e)
    assert "needs network access" in msg and 'pip install ".[qm9]"' in msg and 'source="qm9pack"' in msg
    assert not any(tmp_path.iterdir()) and time.perf_counter() - start < 10


def test_download_file_url(tmp_path):
    arc = write_archive(tmp_path / "src" / ARCHIVE_NAME, MOLS[:2])
    sha = hashlib.sha256(arc.read_bytes()).hexdigest()
    path = download_qm9(tmp_path / "dst", url=arc.as_uri(), sha256=sha, size=arc.stat().st_size, progress=False)
    assert path.read_bytes() == arc.read_bytes()


def test_published_checksum_constants():
    assert qm9.QM9_URL.endswith("/files/3195389") and qm9.QM9_SIZE == 86_144_227
    assert len(qm9.QM9_SHA256) == 64 and int(qm9.QM9_SHA256, 16)


# --------------------------------------------------------------------------- the real data
def _real_qm9pack_dir():
    spec = importlib.util.find_spec("qm9pack")
    return None if spec is None else Path(list(spec.submodule_search_locations)[0]) / "data"


@pytest.mark.skipif(_real_qm9pack_dir() is None, reason="qm9pack is not installed (pip install '.[qm9]')")
def test_real_qm9pack(monkeypatch):
    monkeypatch.setattr(qm9, "_qm9pack_data_dir", _real_qm9pack_dir)
    start = time.perf_counter()
    splits = load_qm9_splits(None, source="qm9pack", progress=False)
    assert time.perf_counter() - start < 60
    assert {s: len(d) for s, d in splits.items()} == {"train": 100000, "valid": 17748, "test": 13083}
    for s, d in splits.items():
        assert np.array_equal(d.index.numpy(), split_indices(s))
    train = splits["train"]
    assert int(train.n_atoms.max()) == 29 and set(train.charges.unique().tolist()) == {1, 6, 7, 8, 9}
    ch4 = train[train.index.tolist().index(1)]
    assert ch4["charges"].tolist() == [6, 1, 1, 1, 1]
    assert np.allclose(ch4["targets"].numpy(), [CH4_TARGETS[t] for t in TARGETS], atol=1e-9, rtol=0)
    assert isinstance(splits["test"], QM9)
