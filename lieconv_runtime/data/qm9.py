"""QM9 molecules for the LieConv paper's Tables 2-3: reading, splits, targets, caches, download.

Molecules
---------
The GDB-9 set has 133,885 molecules; the 3,054 "uncharacterized" ones (package data
``qm9_excluded.txt``, see its header for provenance) are left out, leaving :data:`N_INCLUDED`
= 130,831. A molecule has ``n <= 29`` atoms of H, C, N, O, F with positions in Å and nuclear
charges (1, 6, 7, 8, 9).

Split (Cormorant, as the paper's code)
--------------------------------------
List the included molecules by increasing GDB-9 index; ``np.random.seed(0); perm =
np.random.permutation(130831)``; positions ``perm[:100000]`` are train, the next 17,748 valid, the
last 13,083 test. :func:`split_indices` gives each split's GDB indices in that permutation order,
so the first ``n`` molecules of a split (``load_qm9(..., n=n)``) are a fixed random subset. The split
of a molecule depends on its GDB index only: a source holding a subset of QM9 yields, per split,
the molecules it has.

Targets (:data:`TARGETS`, in :data:`UNITS`)
------------------------------------------
``mu`` (D), ``alpha`` (bohr^3), ``homo``, ``lumo``, ``gap`` (meV), ``r2`` (bohr^2), ``zpve`` (meV),
``U0``, ``U``, ``H``, ``G`` (meV), ``Cv`` (cal/mol K). U0, U, H, G have the sum of the per-atom
reference energies (:data:`ATOM_REFERENCE_HARTREE`) subtracted and Cv has 2.981 per atom
subtracted; energies go from Hartree to meV by x27211.4. All of it is done in float64
(:func:`paper_targets`; the original code did it in float32, rounding by up to ~0.4 meV).
Normalising by train statistics is the task's job (:func:`target_stats` gives them).

Sources (:func:`load_qm9`)
--------------------------
* ``"official"``: the release ``dsgdb9nsd.xyz.tar.bz2`` in ``data_dir`` (streamed, never
  extracted) or its extracted ``dsgdb9nsd_NNNNNN.xyz`` files in ``data_dir``
  (:func:`parse_xyz`; :func:`download_qm9` fetches the archive).
* ``"qm9pack"``: the CSV copy of the PyPI package ``qm9pack`` (``pip install ".[qm9]"``), read
  with the csv module (the package itself is never imported).
* ``"auto"``: official if present, else qm9pack if installed, else a one-line :class:`DataError`.

Cache
-----
Each source is parsed once into ``cache_dir("qm9")/qm9_<kind>_<key>.pt`` (one torch file of all
its included molecules), keyed by the source files' sha256 and size (an extracted folder: its
file names, sizes and mtimes), the exclusion list and :data:`PARSER_VERSION`. The file carries
a sha256 of its tensors; it is written atomically, and one that fails its checksum is rebuilt
with a one-line message on stderr. File hashes are remembered in ``fingerprints.json`` beside
it (by path, size, mtime), so a load does not re-hash unchanged sources.

Errors
------
Bad input raises :class:`DataError` (a ``ValueError``) with one line naming the file, the molecule
(GDB index or line) and the fix. Nothing is half-written: caches and downloads are atomic.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import http.client
import importlib.util
import json
import math
import posixpath
import re
import sys
import tarfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from lieconv_runtime.io import atomic_write, atomic_write_text, cache_dir, clean_stale_temps
from lieconv_runtime.data.errors import DataError

__all__ = [
    "ARCHIVE_NAME",
    "ATOM_REFERENCE_HARTREE",
    "CHARGES",
    "CV_PER_ATOM",
    "DataError",
    "ELEMENTS",
    "HARTREE_TO_MEV",
    "MAX_ATOMS",
    "N_GDB9",
    "N_INCLUDED",
    "PARSER_VERSION",
    "PROPERTIES",
    "QM9",
    "QM9PACK_COLUMNS",
    "QM9_SHA256",
    "QM9_SIZE",
    "QM9_URL",
    "RawMolecule",
    "SPLITS",
    "SPLIT_SIZES",
    "TARGETS",
    "UNITS",
    "check_target",
    "collate_molecules",
    "default_data_dir",
    "download_qm9",
    "excluded_indices",
    "included_indices",
    "load_qm9",
    "load_qm9_splits",
    "paper_targets",
    "parse_xyz",
    "split_indices",
    "target_stats",
]

# --------------------------------------------------------------------------- constants
N_GDB9 = 133_885
N_INCLUDED = 130_831
MAX_ATOMS = 29
SPLITS = ("train", "valid", "test")
SPLIT_SIZES = {"train": 100_000, "valid": 17_748, "test": 13_083}

ELEMENTS = ("H", "C", "N", "O", "F")
CHARGES = {"H": 1, "C": 6, "N": 7, "O": 8, "F": 9}
_Z = np.array([CHARGES[e] for e in ELEMENTS])
_Z_TO_COLUMN = np.full(10, -1, dtype=np.int64)
_Z_TO_COLUMN[_Z] = np.arange(len(ELEMENTS))

#: The 15 numbers of a file's property line (after ``gdb N``), in file units: rotational
#: constants A, B, C (GHz), mu (D), alpha (bohr^3), homo, lumo, gap (Ha), r2 (bohr^2),
#: zpve, U0, U, H, G (Ha), Cv (cal/mol K).
PROPERTIES = ("A", "B", "C", "mu", "alpha", "homo", "lumo", "gap", "r2", "zpve", "U0", "U", "H", "G", "Cv")
#: The 12 regression targets, in this fixed order (columns of ``QM9.targets``).
TARGETS = PROPERTIES[3:]
UNITS = {"mu": "D", "alpha": "bohr^3", "homo": "meV", "lumo": "meV", "gap": "meV", "r2": "bohr^2",
         "zpve": "meV", "U0": "meV", "U": "meV", "H": "meV", "G": "meV", "Cv": "cal/mol K"}
_ENERGIES = ("homo", "lumo", "gap", "zpve", "U0", "U", "H", "G")
_THERMO = ("U0", "U", "H", "G")

#: 27.2114 eV per Hartree x 1000.
HARTREE_TO_MEV = 27211.4
#: Per-atom reference energies (Hartree) for the columns U0, U, H, G (QM9 atomref).
ATOM_REFERENCE_HARTREE = {
    "H": (-0.500273, -0.498857, -0.497912, -0.510927),
    "C": (-37.846772, -37.845355, -37.844411, -37.861317),
    "N": (-54.583861, -54.582445, -54.581501, -54.598897),
    "O": (-75.064579, -75.063163, -75.062219, -75.079532),
    "F": (-99.718730, -99.717314, -99.716370, -99.733544),
}
_REF = np.array([ATOM_REFERENCE_HARTREE[e] for e in ELEMENTS], dtype=np.float64)  # (5, 4)
#: Cv reference per atom (cal/mol K).
CV_PER_ATOM = 2.981

#: qm9pack CSV column -> property (all in the file units of :data:`PROPERTIES`; checked on
#: molecule 1, CH4, against the official dsgdb9nsd_000001.xyz values).
QM9PACK_COLUMNS = {
    "RotA_GHz": "A", "RotB_GHz": "B", "RotC_GHz": "C", "Dipole_debye": "mu",
    "Polarizability_bohr3": "alpha", "HOMO_au": "homo", "LUMO_au": "lumo", "HOMO_LUMO_gap_au": "gap",
    "R2_bohr2": "r2", "ZPVE_au": "zpve", "InternalEnergy_0K_au": "U0", "InternalEnergy_298K_au": "U",
    "Enthalphy_298K_au": "H", "GibbsFreeEnergy_298K_au": "G", "Heatcapacity_Cv_cal_mol_K": "Cv",
}
_QM9PACK_FILES = ("qm9_part1.csv", "qm9_part2.csv", "qm9_part3.csv")

#: Official archive (figshare file 3195389) and its published size and sha256 (the
#: tensorflow_datasets checksums for this URL; figshare's md5 is ad1ebd51ee7f5b3a6e32e974e5d54012).
QM9_URL = "https://springernature.figshare.com/ndownloader/files/3195389"
ARCHIVE_NAME = "dsgdb9nsd.xyz.tar.bz2"
QM9_SIZE = 86_144_227
QM9_SHA256 = "3a63848ac80691bdb8d41834b575afad345b9300d7a2db0c38adb7f6eaa8360c"

#: Bump when parsing or target conversion changes: it invalidates old caches.
PARSER_VERSION = 1

_XYZ_NAME = re.compile(r"^dsgdb9nsd_(\d+)\.xyz$")
_HOW_TO_GET = ('install the qm9pack copy with `pip install ".[qm9]"`, or fetch the official archive '
               "with `lieconv data qm9 --download`")




def _fail(msg: str) -> DataError:
    return DataError(" ".join(msg.split()))  # always one line


# --------------------------------------------------------------------------- names, lists, splits
def check_target(name: str) -> int:
    """Column of target ``name`` in :data:`TARGETS`; a one-line :class:`DataError` listing them if unknown."""
    if name not in TARGETS:
        raise _fail(f"unknown QM9 target {name!r}; choose one of: {', '.join(TARGETS)}")
    return TARGETS.index(name)


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise _fail(f"unknown QM9 split {split!r}; choose one of: {', '.join(SPLITS)}")


@functools.lru_cache(maxsize=1)
def excluded_indices() -> np.ndarray:
    """The 3,054 excluded GDB-9 indices (package data ``qm9_excluded.txt``), ascending, int64."""
    ref = resources.files("lieconv_runtime.data").joinpath("qm9_excluded.txt")
    text = ref.read_text(encoding="utf-8")
    vals = [int(t) for t in (ln.split("#", 1)[0].strip() for ln in text.splitlines()) if t]
    out = np.array(sorted(set(vals)), dtype=np.int64)
    if len(out) != N_GDB9 - N_INCLUDED or out[0] < 1 or out[-1] > N_GDB9:
        raise _fail(f"{ref}: lists {len(out)} indices, expected {N_GDB9 - N_INCLUDED} in 1..{N_GDB9};"
                    " reinstall lieconv-groupgen")
    out.flags.writeable = False
    return out


@functools.lru_cache(maxsize=1)
def included_indices() -> np.ndarray:
    """The 130,831 included GDB-9 indices, ascending, int64."""
    keep = np.ones(N_GDB9 + 1, dtype=bool)
    keep[0] = False
    keep[excluded_indices()] = False
    out = np.flatnonzero(keep).astype(np.int64)
    out.flags.writeable = False
    return out


@functools.lru_cache(maxsize=None)
def split_indices(split: str) -> np.ndarray:
    """GDB-9 indices of ``split`` (Cormorant split), in permutation order: (100000,), (17748,) or (13083,)."""
    _check_split(split)
    perm = np.random.RandomState(0).permutation(N_INCLUDED)  # == np.random.seed(0); np.random.permutation
    start = 0
    for name in SPLITS:
        if name == split:
            out = included_indices()[perm[start:start + SPLIT_SIZES[name]]]
            out.flags.writeable = False
            return out
        start += SPLIT_SIZES[name]
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------- targets
def paper_targets(properties, charges, n_atoms) -> np.ndarray:
    """Paper-unit targets (m, 12) float64 from file properties (m, 15) (:data:`PROPERTIES`),
    the molecules' concatenated charges (A,) and atom counts (m,): reference energies and
    Cv per atom subtracted, energies in meV. All in float64."""
    props = np.asarray(properties, dtype=np.float64)
    charges = np.asarray(charges, dtype=np.int64)
    n_atoms = np.asarray(n_atoms, dtype=np.int64)
    m = len(props)
    mol = np.repeat(np.arange(m), n_atoms)
    counts = np.bincount(mol * len(ELEMENTS) + _Z_TO_COLUMN[charges], minlength=m * len(ELEMENTS))
    reference = counts.reshape(m, len(ELEMENTS)).astype(np.float64) @ _REF  # (m, 4) Hartree
    out = props[:, 3:].copy()
    col = {t: i for i, t in enumerate(TARGETS)}
    for j, t in enumerate(_THERMO):
        out[:, col[t]] -= reference[:, j]
    for t in _ENERGIES:
        out[:, col[t]] *= HARTREE_TO_MEV
    out[:, col["Cv"]] -= CV_PER_ATOM * n_atoms
    return out


# --------------------------------------------------------------------------- the data set
class QM9(Dataset):
    """Molecules with their 12 targets in paper units.

    Item ``i``: ``{"positions": (n, 3) dtype (Å), "charges": (n,) int64, "targets": (12,) float64,
    "index": int}`` (GDB-9 index). Attributes: ``index (M,)``, ``n_atoms (M,)``, ``targets (M, 12)``
    float64, ``properties (M, 15)`` float64 (file units), ``positions (A, 3)``, ``charges (A,)``
    (all molecules' atoms, concatenated), ``offsets (M + 1,)``.
    """

    def __init__(self, index, n_atoms, charges, positions, properties, dtype: torch.dtype = torch.float64):
        self.index = torch.as_tensor(np.asarray(index), dtype=torch.int64)
        self.n_atoms = torch.as_tensor(np.asarray(n_atoms), dtype=torch.int64)
        self.offsets = torch.cat([torch.zeros(1, dtype=torch.int64), torch.cumsum(self.n_atoms, 0)])
        self.charges = torch.as_tensor(np.asarray(charges), dtype=torch.int64)
        self.positions = torch.as_tensor(np.asarray(positions, dtype=np.float64)).to(dtype)
        self.properties = torch.as_tensor(np.asarray(properties, dtype=np.float64))
        self.targets = torch.as_tensor(paper_targets(self.properties.numpy(), self.charges.numpy(),
                                                     self.n_atoms.numpy()))

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict:
        if not -len(self) <= i < len(self):
            raise IndexError(f"molecule {i} out of range for {len(self)} molecules")
        i = i % len(self)
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        return {"positions": self.positions[a:b], "charges": self.charges[a:b],
                "targets": self.targets[i], "index": int(self.index[i])}

    def target(self, name: str) -> torch.Tensor:
        """Column ``name`` of the targets: (M,) float64."""
        return self.targets[:, check_target(name)]

    @classmethod
    def _from_table(cls, table: "_Table", rows: np.ndarray, dtype: torch.dtype) -> "QM9":
        """The molecules at positions ``rows`` of ``table``, in that order."""
        atoms = _atom_rows(table.offsets, table.n_atoms, rows)
        return cls(table.index[rows], table.n_atoms[rows], table.charges[atoms], table.positions[atoms],
                   table.properties[rows], dtype=dtype)


def collate_molecules(items: list[dict]) -> dict:
    """Pad a list of :class:`QM9` items to the batch's largest molecule (N atoms).

    Returns ``positions (bs, N, 3)`` (the items' dtype, 0 at padding), ``charges (bs, N)`` int64
    (0 = padding), ``one_hot (bs, N, 5)`` over (H, C, N, O, F) in the positions' dtype,
    ``mask (bs, N)`` bool, ``targets (bs, 12)`` float64 and ``index (bs,)`` int64.
    """
    if not items:
        raise ValueError("collate_molecules needs at least one molecule")
    bs, n = len(items), max(len(it["charges"]) for it in items)
    dtype = items[0]["positions"].dtype
    positions = torch.zeros(bs, n, 3, dtype=dtype)
    charges = torch.zeros(bs, n, dtype=torch.int64)
    for b, it in enumerate(items):
        k = len(it["charges"])
        positions[b, :k] = it["positions"]
        charges[b, :k] = it["charges"]
    mask = charges > 0
    one_hot = (charges[..., None] == torch.as_tensor(_Z)).to(dtype)
    return {"positions": positions, "charges": charges, "one_hot": one_hot, "mask": mask,
            "targets": torch.stack([torch.as_tensor(it["targets"], dtype=torch.float64) for it in items]),
            "index": torch.as_tensor([int(it["index"]) for it in items], dtype=torch.int64)}


def target_stats(dataset: QM9, target: str) -> tuple[float, float]:
    """Mean and standard deviation (unbiased, as ``torch.std``) of ``target`` over ``dataset``, in float64."""
    col = dataset.target(target).to(torch.float64)
    if len(col) < 2:
        raise _fail(f"target_stats needs at least 2 molecules, got {len(col)}")
    return float(col.mean()), float(col.std())


# --------------------------------------------------------------------------- parsing
@dataclass
class RawMolecule:
    """One parsed molecule: GDB index, charges (n ints), positions (3n floats, Å, atom-major) and
    the 15 :data:`PROPERTIES` in file units."""

    index: int
    charges: list
    positions: list  # 3n floats
    properties: list  # 15 floats


@dataclass
class _Table:
    """All molecules of a source, ascending GDB index: index (M,), n_atoms (M,), charges (A,) int8,
    positions (A, 3) float64, properties (M, 15) float64."""

    index: np.ndarray
    n_atoms: np.ndarray
    charges: np.ndarray
    positions: np.ndarray
    properties: np.ndarray

    @property
    def offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.n_atoms)])


def _float(tok: str, where: str, fix: str) -> float:
    try:
        v = float(tok.replace("*^", "e"))
    except ValueError:
        raise _fail(f"{where}: {tok!r} is not a number; {fix}") from None
    if not math.isfinite(v):
        raise _fail(f"{where}: {tok!r} is not a finite number; {fix}")
    return v


def _short(line: str) -> str:
    return repr(line.strip()[:60])


def _is_atom_line(fields: list[str]) -> bool:
    return len(fields) == 5 and fields[0].isalpha()


def parse_xyz(text: str, name: str, index: int | None = None) -> RawMolecule:
    """Parse one official ``dsgdb9nsd_NNNNNN.xyz`` (``name`` for messages; ``index``: the GDB
    index from the file name, checked against line 2). Returns the index, charges (n,),
    positions (3n floats, Å) and the 15 :data:`PROPERTIES` in file units."""
    fix = "the file is corrupt or truncated: re-download or re-extract the QM9 archive"
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        raise _fail(f"{name}: empty file; {fix}")
    try:
        n = int(lines[0])
    except ValueError:
        raise _fail(f"{name}, line 1: expected the atom count, got {_short(lines[0])}; {fix}") from None
    if not 1 <= n <= MAX_ATOMS:
        raise _fail(f"{name}, line 1: atom count {n} is outside 1..{MAX_ATOMS}; {fix}")
    if len(lines) < 2:
        raise _fail(f"{name}: truncated after line 1 (no property line); {fix}")
    fields = lines[1].split()
    if fields[:1] != ["gdb"] or len(fields) != 2 + len(PROPERTIES):
        raise _fail(f"{name}, line 2: the property line has {len(fields)} fields, expected "
                    f"{2 + len(PROPERTIES)} ('gdb', index, {len(PROPERTIES)} properties); {fix}")
    try:
        gdb = int(fields[1])
    except ValueError:
        raise _fail(f"{name}, line 2: {fields[1]!r} is not a GDB index; {fix}") from None
    if index is not None and gdb != index:
        raise _fail(f"{name}, line 2: says gdb {gdb} but the file name says gdb {index}; {fix}")
    where = f"{name} (gdb {gdb})"
    props = [_float(t, f"{where}, line 2", fix) for t in fields[2:]]
    charges, positions = [], []
    for j in range(n):
        ln = 3 + j
        if ln > len(lines):
            raise _fail(f"{where}: truncated at atom {j + 1} of {n} (line {ln}); {fix}")
        f = lines[ln - 1].split()
        if not _is_atom_line(f):
            raise _fail(f"{where}, line {ln}: expected atom {j + 1} of {n} ('element x y z charge'), got "
                        f"{_short(lines[ln - 1])}: the atom count does not match the atom lines; {fix}")
        if f[0] not in CHARGES:
            raise _fail(f"{where}, line {ln}: unknown element {f[0]!r} (QM9 has {', '.join(ELEMENTS)}); {fix}")
        charges.append(CHARGES[f[0]])
        positions += [_float(t, f"{where}, line {ln}", fix) for t in f[1:4]]
    if len(lines) > n + 2 and _is_atom_line(lines[n + 2].split()):
        raise _fail(f"{where}, line {n + 3}: another atom line after the {n} atoms of line 1: "
                    f"the atom count does not match the atom lines; {fix}")
    if len(lines) < n + 5:
        raise _fail(f"{where}: truncated: {len(lines)} lines, expected {n + 5} (count, properties, {n} atoms, "
                    f"frequencies, SMILES, InChI); {fix}")
    return RawMolecule(gdb, charges, positions, props)


def _qm9pack_row(row: list[str], col: dict, where: str) -> RawMolecule:
    """One qm9pack CSV row -> molecule (``where``: file and line for messages)."""
    fix = "the CSV is corrupt: reinstall it with `pip install --force-reinstall qm9pack`"
    try:
        index, n = int(row[col["Index"]]), int(row[col["N_atoms"]])
    except ValueError:
        raise _fail(f"{where}: Index/N_atoms are not integers; {fix}") from None
    where = f"{where} (gdb {index})"
    elements = [e.strip().strip("'\"") for e in row[col["Elements"]].strip("[] ").split(",")]
    unknown = [e for e in elements if e not in CHARGES]
    if unknown:
        raise _fail(f"{where}: unknown element {unknown[0]!r} (QM9 has {', '.join(ELEMENTS)}); {fix}")
    xyz = row[col["XYZ_Ang"]].replace("[", "").replace("]", "").split(",")
    if len(elements) != n or len(xyz) != 3 * n:
        raise _fail(f"{where}: N_atoms is {n} but there are {len(elements)} elements and {len(xyz)} "
                    f"coordinates (expected {3 * n}): the atom count does not match; {fix}")
    positions = [_float(t, where, fix) for t in xyz]
    props = [_float(row[col[c]], f"{where}, column {c}", fix) for c in QM9PACK_COLUMNS]
    return RawMolecule(index, [CHARGES[e] for e in elements], positions, props)


class _TableBuilder:
    """Collects molecules, drops the excluded ones, checks indices, sorts."""

    def __init__(self, source: str, fix: str):
        self.source, self.fix = source, fix
        self.excluded = set(excluded_indices().tolist())
        self.index, self.n_atoms, self.charges, self.positions, self.props = [], [], [], [], []
        self.where = {}

    def add(self, mol: RawMolecule, where: str) -> None:
        if not 1 <= mol.index <= N_GDB9:
            raise _fail(f"{where}: GDB index {mol.index} is outside 1..{N_GDB9}; this is not a QM9 molecule file")
        if mol.index in self.excluded:
            return
        if mol.index in self.where:
            raise _fail(f"{where}: molecule gdb {mol.index} appears twice (also in {self.where[mol.index]}); "
                        f"{self.fix}")
        self.where[mol.index] = where
        self.index.append(mol.index)
        self.n_atoms.append(len(mol.charges))
        self.charges += mol.charges
        self.positions += mol.positions
        self.props.append(mol.properties)

    def table(self) -> _Table:
        if not self.index:
            raise _fail(f"{self.source}: no QM9 molecules found; {_HOW_TO_GET}")
        index = np.array(self.index, dtype=np.int64)
        n_atoms = np.array(self.n_atoms, dtype=np.int64)
        t = _Table(index, n_atoms, np.array(self.charges, dtype=np.int8),
                   np.array(self.positions, dtype=np.float64).reshape(-1, 3),
                   np.array(self.props, dtype=np.float64).reshape(-1, len(PROPERTIES)))
        order = np.argsort(index, kind="stable")
        if np.any(order != np.arange(len(order))):
            atoms = _atom_rows(t.offsets, n_atoms, order)
            t = _Table(index[order], n_atoms[order], t.charges[atoms], t.positions[atoms], t.properties[order])
        return t


def _atom_rows(offsets: np.ndarray, n_atoms: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Atom positions of molecules ``rows`` (concatenated, in that order)."""
    starts, lengths = offsets[rows], n_atoms[rows]
    return np.repeat(starts - (np.cumsum(lengths) - lengths), lengths) + np.arange(int(lengths.sum()))


class _CountingReader:
    """File wrapper that reports bytes read to a tqdm bar."""

    def __init__(self, f, bar):
        self.f, self.bar = f, bar

    def read(self, size=-1):
        b = self.f.read(size)
        self.bar.update(len(b))
        return b


def _read_archive(path: Path, progress: bool) -> _Table:
    """Stream ``dsgdb9nsd.xyz.tar.bz2`` (no extraction)."""
    fix = f"delete {path} and download it again (`lieconv data qm9 --download`)"
    builder = _TableBuilder(str(path), fix)
    member = None
    try:
        with open(path, "rb") as raw, tqdm(total=path.stat().st_size, unit="B", unit_scale=True,
                                           desc="QM9 archive", disable=not progress, file=sys.stderr) as bar:
            with tarfile.open(fileobj=_CountingReader(raw, bar), mode="r|bz2") as tar:
                for member in tar:
                    base = posixpath.basename(member.name)
                    if not member.isfile() or not base.endswith(".xyz"):
                        continue
                    m = _XYZ_NAME.match(base)
                    if m is None:
                        raise _fail(f"{path}:{member.name}: not a dsgdb9nsd_NNNNNN.xyz name; {fix}")
                    index = int(m.group(1))
                    if index in builder.excluded:
                        continue
                    name = f"{path}:{base}"
                    try:
                        text = tar.extractfile(member).read().decode("ascii")
                    except UnicodeDecodeError:
                        raise _fail(f"{name} (gdb {index}): not a text file; {fix}") from None
                    builder.add(parse_xyz(text, name, index), name)
                member = None
    except (tarfile.TarError, EOFError, OSError, ValueError) as e:
        if isinstance(e, DataError):
            raise
        at = f" at {member.name}" if member is not None else ""
        raise _fail(f"{path}: corrupt or truncated archive{at} ({type(e).__name__}: {e}); {fix}") from None
    return builder.table()


def _xyz_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("dsgdb9nsd_*.xyz") if p.is_file())


def _read_xyz_folder(folder: Path, progress: bool) -> _Table:
    """Read the extracted ``dsgdb9nsd_NNNNNN.xyz`` files in ``folder``."""
    builder = _TableBuilder(str(folder), "remove the duplicate file")
    for path in tqdm(_xyz_files(folder), desc="QM9 xyz files", unit="mol", disable=not progress, file=sys.stderr):
        m = _XYZ_NAME.match(path.name)
        if m is None:
            raise _fail(f"{path}: not a dsgdb9nsd_NNNNNN.xyz name; rename or remove it")
        index = int(m.group(1))
        if index in builder.excluded:
            continue
        try:
            text = path.read_text(encoding="ascii")
        except UnicodeDecodeError:
            raise _fail(f"{path} (gdb {index}): not a text file; re-extract the QM9 archive") from None
        except OSError as e:
            raise _fail(f"{path} (gdb {index}): cannot be read ({e.strerror or e}); check the file") from None
        builder.add(parse_xyz(text, str(path), index), str(path))
    return builder.table()


def _read_qm9pack(paths: list[Path], progress: bool) -> _Table:
    """Read qm9pack's CSVs with the csv module."""
    builder = _TableBuilder("qm9pack", "reinstall it with `pip install --force-reinstall qm9pack`")
    with tqdm(total=None, desc="QM9 qm9pack", unit="mol", disable=not progress, file=sys.stderr) as bar:
        for path in paths:
            _read_qm9pack_file(path, builder, bar)
    return builder.table()


def _read_qm9pack_file(path: Path, builder: _TableBuilder, bar) -> None:
    """Add the molecules of one qm9pack CSV to ``builder``."""
    fix = "reinstall it with `pip install --force-reinstall qm9pack`"
    need = ["Index", "N_atoms", "Elements", "XYZ_Ang", *QM9PACK_COLUMNS]
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f, strict=True)
            header = next(reader, None)
            if not header:
                raise _fail(f"{path}: empty file (no header line); {fix}")
            col = {c: i for i, c in enumerate(header)}
            missing = [c for c in need if c not in col]
            if missing:
                raise _fail(f"{path}, line 1: missing columns {', '.join(missing)}; not a qm9pack CSV: {fix}")
            for row in reader:
                where = f"{path}, line {reader.line_num}"
                if len(row) != len(header):
                    raise _fail(f"{where}: {len(row)} fields, expected {len(header)}: "
                                f"the file is truncated or corrupt; {fix}")
                builder.add(_qm9pack_row(row, col, where), where)
                bar.update(1)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise _fail(f"{path}: cannot be read ({type(e).__name__}: {e}); {fix}") from None


# --------------------------------------------------------------------------- sources
@dataclass
class _Source:
    kind: str  # "official" or "qm9pack"
    paths: list  # [archive] | [folder] | CSV files
    form: str  # "archive", "folder", "csv"

    def read(self, progress: bool) -> _Table:
        if self.form == "archive":
            return _read_archive(self.paths[0], progress)
        if self.form == "folder":
            return _read_xyz_folder(self.paths[0], progress)
        return _read_qm9pack(self.paths, progress)


def default_data_dir() -> Path:
    """Where :func:`download_qm9` puts the archive by default: ``cache_dir("qm9")/raw``."""
    return cache_dir("qm9") / "raw"


def _official_source(data_dir) -> _Source | None:
    if data_dir is None:
        return None
    d = Path(data_dir)
    if (d / ARCHIVE_NAME).is_file():
        return _Source("official", [d / ARCHIVE_NAME], "archive")
    if d.is_dir() and next(iter(d.glob("dsgdb9nsd_*.xyz")), None) is not None:
        return _Source("official", [d], "folder")
    return None


def _qm9pack_data_dir() -> Path | None:
    """qm9pack's data folder if the package is installed (found without importing it)."""
    try:
        spec = importlib.util.find_spec("qm9pack")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def _qm9pack_source() -> _Source | None:
    d = _qm9pack_data_dir()
    if d is None:
        return None
    paths = [d / name for name in _QM9PACK_FILES]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise _fail(f"{missing[0]}: missing from the installed qm9pack; reinstall it with "
                    "`pip install --force-reinstall qm9pack`")
    return _Source("qm9pack", paths, "csv")


def _resolve_source(data_dir, source: str) -> _Source:
    if source not in ("auto", "official", "qm9pack"):
        raise _fail(f"unknown QM9 source {source!r}; choose one of: auto, official, qm9pack")
    where = Path(data_dir) if data_dir is not None else default_data_dir()
    if source in ("auto", "official"):
        found = _official_source(where)
        if found is not None:
            return found
        if source == "official":
            raise _fail(f"no {ARCHIVE_NAME} or dsgdb9nsd_*.xyz files in {where}; "
                        "fetch the archive with `lieconv data qm9 --download` (or download_qm9)")
    found = _qm9pack_source()
    if found is not None:
        return found
    if source == "qm9pack":
        raise _fail('qm9pack is not installed; install it with `pip install ".[qm9]"` (or `pip install qm9pack`)')
    raise _fail(f"no QM9 data: no {ARCHIVE_NAME} or dsgdb9nsd_*.xyz files in {where} and qm9pack is not "
                f"installed; {_HOW_TO_GET}")


# --------------------------------------------------------------------------- fingerprints and cache
def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _file_fingerprint(path: Path, memo: dict) -> dict:
    """``{"name", "size", "sha256"}`` of a file, the hash remembered by (path, size, mtime, inode)."""
    st = path.stat()
    stamp = [st.st_size, st.st_mtime_ns, st.st_ino]
    key = str(path.resolve())
    hit = memo.get(key)
    if not isinstance(hit, dict) or hit.get("stamp") != stamp or not isinstance(hit.get("sha256"), str):
        memo[key] = hit = {"stamp": stamp, "sha256": _sha256_file(path)}
    return {"name": path.name, "size": st.st_size, "sha256": hit["sha256"]}


def _folder_fingerprint(folder: Path) -> dict:
    """sha256 over the names, sizes and mtimes of the folder's xyz files (not their contents)."""
    h, count = hashlib.sha256(), 0
    for p in _xyz_files(folder):
        st = p.stat()
        h.update(f"{p.name} {st.st_size} {st.st_mtime_ns}\n".encode())
        count += 1
    return {"name": folder.name, "files": count, "listing_sha256": h.hexdigest()}


def _source_key(src: _Source, folder: Path) -> tuple[str, list]:
    memo_path = folder / "fingerprints.json"
    try:
        memo = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    memo = memo if isinstance(memo, dict) else {}
    before = json.dumps(memo, sort_keys=True)
    if src.form == "folder":
        prints = [_folder_fingerprint(src.paths[0])]
    else:
        prints = [_file_fingerprint(p, memo) for p in src.paths]
    if json.dumps(memo, sort_keys=True) != before:
        try:
            atomic_write_text(memo_path, json.dumps(memo, indent=1, sort_keys=True))
        except OSError:
            pass  # a read-only cache only costs re-hashing
    excluded = hashlib.sha256(excluded_indices().tobytes()).hexdigest()
    blob = json.dumps({"parser": PARSER_VERSION, "kind": src.kind, "form": src.form, "files": prints,
                       "excluded": excluded}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest(), prints


_CACHE_TENSORS = ("index", "n_atoms", "charges", "positions", "properties")


def _checksum(payload: dict) -> str:
    h = hashlib.sha256(payload["key"].encode())
    for name in _CACHE_TENSORS:
        a = np.ascontiguousarray(payload[name].numpy())
        h.update(f"{name}:{a.dtype}:{a.shape}".encode())
        h.update(a.data)
    return h.hexdigest()


def _cache_path(src: _Source, key: str, folder: Path) -> Path:
    return folder / f"qm9_{src.kind}_{src.form}_{key[:20]}.pt"


def _save_cache(path: Path, key: str, prints: list, table: _Table) -> None:
    payload = {"format": "lieconv-qm9-cache", "parser_version": PARSER_VERSION, "key": key,
               "sources": json.dumps(prints)}
    payload.update({name: torch.from_numpy(np.ascontiguousarray(getattr(table, name))) for name in _CACHE_TENSORS})
    payload["sha256"] = _checksum(payload)
    atomic_write(path, lambda f: torch.save(payload, f))


def _load_cache(path: Path, key: str) -> _Table | None:
    """The cached table, or None if absent; a damaged or mismatched cache is reported and ignored."""
    if not path.exists():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        ok = (isinstance(payload, dict) and payload.get("key") == key
              and payload.get("parser_version") == PARSER_VERSION and payload.get("sha256") == _checksum(payload))
    except Exception:  # noqa: BLE001 - any unreadable cache is rebuilt
        ok = False
    if not ok:
        print(f"qm9: cache {path} failed its checksum or is unreadable; rebuilding it", file=sys.stderr)
        return None
    return _Table(*(payload[name].numpy() for name in _CACHE_TENSORS))


def _load_table(src: _Source, progress: bool) -> _Table:
    folder = cache_dir("qm9")
    clean_stale_temps(folder, "qm9_*")
    key, prints = _source_key(src, folder)
    path = _cache_path(src, key, folder)
    table = _load_cache(path, key)
    if table is not None:
        return table
    if progress:
        print(f"qm9: reading {', '.join(str(p) for p in src.paths)} once into the cache {path}", file=sys.stderr)
    table = src.read(progress)
    if progress and len(table.index) < N_INCLUDED:
        print(f"qm9: {src.paths[0]} holds {len(table.index)} of the {N_INCLUDED} QM9 molecules; "
              "each split keeps only the ones present", file=sys.stderr)
    try:
        _save_cache(path, key, prints, table)
    except OSError as e:
        print(f"qm9: could not write the cache {path} ({e.strerror or e}); continuing without it", file=sys.stderr)
    return table


def _split_rows(table: _Table, split: str, n: int | None) -> np.ndarray:
    """Rows of ``table`` holding ``split``'s molecules, in split order (the first ``n``)."""
    wanted = split_indices(split)
    pos = np.searchsorted(table.index, wanted).clip(max=len(table.index) - 1)
    rows = pos[table.index[pos] == wanted]
    return rows if n is None else rows[:n]


def _check_n(n) -> None:
    if n is not None and (isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0):
        raise _fail(f"n must be a non-negative integer or None, got {n!r}")


def load_qm9(data_dir, split: str, *, source: str = "auto", n: int | None = None,
             progress: bool = True, dtype: torch.dtype = torch.float64) -> QM9:
    """The molecules of ``split`` ("train", "valid", "test") from ``source`` ("auto", "official",
    "qm9pack"; see the module docstring), in split order; ``n``: only the first ``n``.
    ``data_dir``: where the official files are (default :func:`default_data_dir`); ``dtype``:
    of the positions. Builds the source's cache on first use."""
    _check_split(split)
    _check_n(n)
    table = _load_table(_resolve_source(data_dir, source), progress)
    return QM9._from_table(table, _split_rows(table, split, n), dtype)


def load_qm9_splits(data_dir=None, *, source: str = "auto", n: int | None = None, progress: bool = True,
                    dtype: torch.dtype = torch.float64) -> dict[str, QM9]:
    """``{"train", "valid", "test"}`` -> :class:`QM9`, as :func:`load_qm9` but reading the cache once."""
    _check_n(n)
    table = _load_table(_resolve_source(data_dir, source), progress)
    return {s: QM9._from_table(table, _split_rows(table, s, n), dtype) for s in SPLITS}


# --------------------------------------------------------------------------- download
def download_qm9(data_dir=None, *, url: str = QM9_URL, sha256: str | None = QM9_SHA256,
                 size: int | None = QM9_SIZE, timeout: float = 60.0, progress: bool = True) -> Path:
    """Fetch the official archive to ``data_dir/dsgdb9nsd.xyz.tar.bz2`` (default
    :func:`default_data_dir`), check its size and sha256, and write it atomically; an existing
    file that matches is kept. Returns its path. Offline or on a mismatch: a one-line
    :class:`DataError`, and nothing is written."""
    dest = Path(data_dir if data_dir is not None else default_data_dir()) / ARCHIVE_NAME
    if dest.is_file():
        if (size is None or dest.stat().st_size == size) and (sha256 is None or _sha256_file(dest) == sha256):
            return dest
        print(f"qm9: {dest} does not match the published checksum; downloading it again", file=sys.stderr)
    offline = ('offline, use the qm9pack copy instead: `pip install ".[qm9]"`, then '
               'load_qm9(..., source="qm9pack")')
    request = urllib.request.Request(url, headers={"User-Agent": "lieconv-groupgen"})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        raise _fail(f"downloading QM9 from {url} failed: HTTP {e.code} {e.reason}; try again later, or "
                    f"{offline}") from None
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as e:
        reason = getattr(e, "reason", e)
        raise _fail(f"downloading QM9 from {url} needs network access ({reason}); {offline}") from None
    with response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else size

        def write(f):
            h, got = hashlib.sha256(), 0
            with tqdm(total=total, unit="B", unit_scale=True, desc="QM9 download", disable=not progress,
                      file=sys.stderr) as bar:
                while True:
                    try:
                        chunk = response.read(1 << 20)
                    except (OSError, http.client.HTTPException) as e:
                        raise _fail(f"downloading QM9 from {url} was interrupted ({e}); nothing was written: "
                                    f"run it again, or {offline}") from None
                    if not chunk:
                        break
                    f.write(chunk)
                    h.update(chunk)
                    got += len(chunk)
                    bar.update(len(chunk))
            if size is not None and got != size:
                raise _fail(f"downloaded {got} bytes from {url}, expected {size}; nothing was written: run it "
                            f"again, or {offline}")
            if sha256 is not None and h.hexdigest() != sha256:
                raise _fail(f"the file downloaded from {url} has sha256 {h.hexdigest()}, not the published "
                            f"{sha256}; nothing was written: run it again, or {offline}")

        atomic_write(dest, write)
    return dest
