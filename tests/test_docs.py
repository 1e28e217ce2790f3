"""The documentation stays true: links resolve and marked command blocks run.

Checked files: README.md, benchmarks/README.md and docs/**/*.md.

* Every relative link (``[text](path)``, ``![alt](path)``, ``[ref]: path``, ``src="path"``)
  points to an existing file or folder; a ``#anchor`` into a markdown file (or the same file)
  names one of its headings, slugged as GitHub does (lower case, punctuation other than ``-``
  and ``_`` removed, spaces to ``-``, ``-1``, ``-2``, ... for repeated headings).
* A fenced ``bash`` or ``python`` block preceded by the line ``<!-- runnable -->`` runs in full:
  python blocks with this interpreter in a temporary folder, bash blocks with ``bash -e -o
  pipefail`` from the repository root with this interpreter's folder first on PATH.
* A block preceded by ``<!-- runnable: help -->`` is too long to run here: each of its
  ``lieconv ...``, ``groupgen ...``, ``python benchmarks/...`` and ``python -m lieconv_runtime|groupgen``
  commands runs as ``PROGRAM [SUBCOMMANDS] --help`` instead, and every ``--option`` the command
  uses must appear in that help text.  Other lines of the block are not run.  ``lieconv`` and
  ``groupgen`` run in this process, through their console-script entry points (one import instead
  of one interpreter per command); benchmark scripts run as subprocesses.
* Blocks without a marker (installation, long jobs) are never run.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README_MAX_LINES = 250
FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)")
MARKER = re.compile(r"^\s*<!--\s*runnable(?::\s*([\w-]+))?\s*-->\s*$")
PROGRAMS = ("lieconv", "groupgen")
PYTHON_MODULES = {"lieconv_runtime": "lieconv", "groupgen": "groupgen"}  # python -m X is the same program


def doc_files() -> list[Path]:
    files = [ROOT / "README.md", ROOT / "benchmarks" / "README.md"]
    files += sorted((ROOT / "docs").rglob("*.md"))
    return [f for f in files if f.is_file()]


# --------------------------------------------------------------------------------------------
# parsing
# --------------------------------------------------------------------------------------------

def split_blocks(text: str):
    """(prose lines with their numbers, code blocks as dicts: lang, mode, code, line)."""
    prose, blocks = [], []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            prose.append((i + 1, lines[i]))
            i += 1
            continue
        fence, lang = m.group(2), m.group(3).lower()
        start = i
        i += 1
        body = []
        while i < len(lines) and not lines[i].strip().startswith(fence[0] * len(fence)):
            body.append(lines[i])
            i += 1
        i += 1  # the closing fence
        mode = None
        j = start - 1
        while j >= 0 and not lines[j].strip():
            j -= 1
        if j >= 0:
            mm = MARKER.match(lines[j])
            if mm:
                mode = mm.group(1) or "full"
        blocks.append({"lang": lang, "mode": mode, "code": "\n".join(body) + "\n", "line": start + 1})
    return prose, blocks


def strip_inline_code(line: str) -> str:
    return re.sub(r"(`+)(?:(?!\1).)+?\1", "", line)


def github_slug(heading: str) -> str:
    text = re.sub(r"`([^`]*)`", r"\1", heading)
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"<[^>]+>", "", text)
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    prose, _ = split_blocks(path.read_text(encoding="utf-8"))
    seen: dict[str, int] = {}
    out = set()
    for _, line in prose:
        m = re.match(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        slug = github_slug(m.group(2))
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    for _, line in prose:  # explicit HTML anchors
        out.update(re.findall(r"""<a\s+(?:name|id)=["']([^"']+)["']""", line))
    return out


def links(path: Path):
    """(line number, target) of every link outside code."""
    prose, _ = split_blocks(path.read_text(encoding="utf-8"))
    for number, line in prose:
        if MARKER.match(line):
            continue
        line = strip_inline_code(line)
        for target in re.findall(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", line):
            yield number, target
        m = re.match(r"^\s{0,3}\[[^\]]+\]:\s+<?(\S+?)>?(?:\s|$)", line)
        if m:
            yield number, m.group(1)
        for target in re.findall(r"""\b(?:src|href)=["']([^"']+)["']""", line):
            yield number, target


def is_external(target: str) -> bool:
    return bool(re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target)) or target.startswith("//")


# --------------------------------------------------------------------------------------------
# links
# --------------------------------------------------------------------------------------------

def test_relative_links_resolve():
    problems = []
    cache: dict[Path, set[str]] = {}
    for doc in doc_files():
        rel = doc.relative_to(ROOT)
        for number, target in links(doc):
            if is_external(target):
                continue
            path_part, _, anchor = target.partition("#")
            dest = (doc.parent / path_part).resolve() if path_part else doc
            if not dest.exists():
                problems.append(f"{rel}:{number}: {target}: no such file")
                continue
            try:
                dest.relative_to(ROOT)
            except ValueError:
                problems.append(f"{rel}:{number}: {target}: points outside the repository")
                continue
            if anchor:
                if dest.suffix.lower() != ".md" or not dest.is_file():
                    problems.append(f"{rel}:{number}: {target}: an anchor into a file that is not markdown")
                    continue
                if dest not in cache:
                    cache[dest] = anchors(dest)
                if anchor not in cache[dest]:
                    problems.append(f"{rel}:{number}: {target}: no heading with the anchor #{anchor}")
    assert not problems, "broken links:\n" + "\n".join(problems)


def test_slugs_follow_github():
    assert github_slug("The `lift:` block") == "the-lift-block"
    assert github_slug("Layers vs the original (CPU)") == "layers-vs-the-original-cpu"
    assert github_slug("Equations → code") == "equations--code"


def test_markers_precede_runnable_fences():
    problems = []
    for doc in doc_files():
        lines = doc.read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines):
            m = MARKER.match(line)
            if "runnable" in line and "<!--" in line and not m:
                problems.append(f"{doc.relative_to(ROOT)}:{i + 1}: malformed marker {line.strip()!r}")
                continue
            if not m:
                continue
            if m.group(1) not in (None, "help"):
                problems.append(f"{doc.relative_to(ROOT)}:{i + 1}: unknown mode {m.group(1)!r} (use help)")
            nxt = lines[i + 1] if i + 1 < len(lines) else ""
            f = FENCE.match(nxt)
            if not f or f.group(3).lower() not in ("bash", "sh", "python"):
                problems.append(f"{doc.relative_to(ROOT)}:{i + 1}: the marker must be followed by a "
                                "```bash or ```python fence")
    assert not problems, "\n".join(problems)


def test_readme_is_short():
    n = len((ROOT / "README.md").read_text(encoding="utf-8").splitlines())
    assert n <= README_MAX_LINES, f"README.md has {n} lines; keep it at most {README_MAX_LINES} (move detail to docs/)"


# --------------------------------------------------------------------------------------------
# runnable blocks
# --------------------------------------------------------------------------------------------

def runnable_blocks():
    out = []
    for doc in doc_files():
        _, blocks = split_blocks(doc.read_text(encoding="utf-8"))
        for b in blocks:
            if b["mode"] is not None:
                out.append(pytest.param(doc, b, id=f"{doc.relative_to(ROOT)}:{b['line']}"))
    return out


def _env() -> dict:
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.setdefault("LIECONV_NATIVE", "0")  # no compiler run from the docs check
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def _run(cmd, cwd, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)


def commands(code: str):
    """Logical command lines of a shell block: continuations joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", code)
    for line in joined.splitlines():
        try:
            words = shlex.split(line, comments=True)
        except ValueError:
            continue
        # a line may chain commands
        current: list[str] = []
        for w in words + [";"]:
            if w in (";", "&&", "||", "|"):
                if current:
                    yield current
                current = []
            else:
                current.append(w)


def _subcommands(words: list[str]) -> list[str]:
    head = []
    for w in words:
        if not re.fullmatch(r"[A-Za-z][\w-]*", w):
            break
        head.append(w)
    return head


def help_command(words: list[str]):
    """(program, argv ending in --help, options used) for a documented command, or None.

    program is "lieconv" or "groupgen" (run in process, argv without the program) or None
    (argv is a subprocess command line)."""
    if not words:
        return None
    options = sorted({o for w in words for o in re.findall(r"(?<![\w-])--[A-Za-z][\w-]*", w)})
    prog = words[0]
    if prog in PROGRAMS:
        return prog, _subcommands(words[1:]) + ["--help"], options
    if prog in ("python", "python3"):
        rest = words[1:]
        if rest[:1] == ["-m"] and len(rest) > 1 and rest[1] in PYTHON_MODULES:
            return PYTHON_MODULES[rest[1]], _subcommands(rest[2:]) + ["--help"], options
        if rest and rest[0].startswith("benchmarks/") and rest[0].endswith(".py"):
            return None, [sys.executable, rest[0], "--help"], options
    return None


def _entry_point(program: str):
    eps = metadata.entry_points(group="console_scripts")
    matches = [ep for ep in eps if ep.name == program]
    assert matches, f"no console script {program!r} is installed (pip install -e .)"
    return matches[0].load()


def _run_in_process(program: str, argv: list[str]) -> subprocess.CompletedProcess:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = _entry_point(program)(argv)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return subprocess.CompletedProcess([program] + argv, int(code or 0), out.getvalue(), err.getvalue())


_HELP_CACHE: dict[tuple, subprocess.CompletedProcess] = {}


@pytest.mark.parametrize("doc, block", runnable_blocks())
def test_runnable_block(doc, block, tmp_path):
    where = f"{doc.relative_to(ROOT)}:{block['line']}"
    lang = block["lang"]
    if block["mode"] == "full":
        if lang == "python":
            script = tmp_path / "block.py"
            script.write_text(block["code"], encoding="utf-8")
            proc = _run([sys.executable, str(script)], cwd=tmp_path)
        else:
            proc = _run(["bash", "-e", "-o", "pipefail", "-c", block["code"]], cwd=ROOT)
        assert proc.returncode == 0, f"{where} failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        return
    assert lang in ("bash", "sh"), f"{where}: 'runnable: help' applies to shell blocks"
    found = 0
    for words in commands(block["code"]):
        hc = help_command(words)
        if hc is None:
            continue
        program, argv, options = hc
        found += 1
        key = (program, *argv)
        if key not in _HELP_CACHE:
            _HELP_CACHE[key] = _run_in_process(program, argv) if program else _run(argv, cwd=ROOT)
        proc = _HELP_CACHE[key]
        shown = " ".join(([program] if program else []) + argv)
        assert proc.returncode == 0, f"{where}: `{shown}` failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}"
        missing = [o for o in options if not re.search(re.escape(o) + r"(?![\w-])", proc.stdout)]
        assert not missing, f"{where}: `{' '.join(words)}` uses {missing}, which `{shown}` does not list"
    assert found, f"{where}: a 'runnable: help' block without lieconv/groupgen/benchmark commands"


def test_docs_cite_no_private_files_and_tell_no_history():
    """Users have no ../shared folder, and docs describe the current state (history is in git)."""
    words = re.compile(r"\.\./shared|\bsession\b|\bissue \d+|\bissue #\d+", re.IGNORECASE)
    found = [f"{f.relative_to(ROOT)}:{n}: {line.strip()[:80]}" for f in doc_files()
             for n, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1) if words.search(line)]
    assert not found, "\n".join(found)
