"""`groupgen` command line: generate, check, list.

Errors in specs are printed as one line (file: field: problem; fix) with exit status 2,
and nothing is written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from groupgen.algebra import ClosedFormError, analyze
from groupgen.emit import render, write_atomic
from groupgen.spec import SpecError, find_specs, load_spec

REPO_ROOT = Path(__file__).resolve().parent.parent


def _default_dir(name: str) -> Path:
    """./NAME if it exists, else the source checkout's NAME (editable installs), else ./NAME."""
    here = Path.cwd() / name
    if here.is_dir() or not (REPO_ROOT / name).is_dir():
        return here
    return REPO_ROOT / name


def _fail(message: str) -> int:
    print(f"groupgen: error: {message}", file=sys.stderr)
    return 2


def _render_all(paths):
    out = []
    for path in paths:
        spec = load_spec(path)
        try:
            source = render(spec, analyze(spec))
        except ClosedFormError as err:
            raise SpecError(str(path), "generators", f"{err}") from None
        out.append((spec, source))
    return out


def cmd_generate(args) -> int:
    paths = args.specs or find_specs(_default_dir("group_specs"))
    if not paths:
        return _fail("no specs found (give SPEC files or run from a folder with group_specs/)")
    out_dir = Path(args.out) if args.out else _default_dir("generated")
    names = {}
    rendered = _render_all(paths)  # everything validated and derived before anything is written
    for spec, _ in rendered:
        if spec.name in names:
            raise SpecError(spec.path, "name", f"name {spec.name!r} is also used by {names[spec.name]}; names must be unique")
        names[spec.name] = spec.path
    for spec, source in rendered:
        write_atomic(out_dir / f"{spec.name}.py", source)
        if not args.quiet:
            print(f"{spec.path} -> {out_dir / (spec.name + '.py')}")
    return 0


def cmd_check(args) -> int:
    from groupgen.check import check_spec

    ok = True
    for path in args.specs:
        report = check_spec(path, samples=args.samples, seed=args.seed)
        print(report.text())
        ok &= report.passed
    return 0 if ok else 1


def cmd_list(args) -> int:
    paths = find_specs(Path(args.specs_dir) if args.specs_dir else _default_dir("group_specs"))
    rows = [("name", "lie_dim", "rep_dim", "space_dim", "action", "exp/log")]
    for path in paths:
        spec = load_spec(path)
        if spec.numeric_fallback:
            kind = "numeric fallback"
        else:
            try:
                analyze(spec)
                kind = "closed form"
            except ClosedFormError:
                kind = "no closed form (generate fails)"
        rows.append((spec.name, str(len(spec.generators)), str(spec.rep_dim), str(spec.space_dim), spec.action, kind))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="groupgen", description="Compile Lie group specs (YAML generators) into torch modules.")
    sub = parser.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate", help="derive closed forms and write one module per spec")
    g.add_argument("specs", nargs="*", help="spec files (default: all of group_specs/)")
    g.add_argument("--out", help="output folder (default: generated/)")
    g.add_argument("--quiet", action="store_true")
    g.set_defaults(func=cmd_generate)
    c = sub.add_parser("check", help="run the property checks on specs and print a report")
    c.add_argument("specs", nargs="+")
    c.add_argument("--samples", type=int, default=200)
    c.add_argument("--seed", type=int, default=0)
    c.set_defaults(func=cmd_check)
    ls = sub.add_parser("list", help="list specs: name, dims, action, closed form or fallback")
    ls.add_argument("--specs-dir", help="folder of specs (default: group_specs/)")
    ls.set_defaults(func=cmd_list)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except SpecError as err:
        return _fail(str(err))
    except OSError as err:
        return _fail(f"{getattr(err, 'filename', '') or ''}: {err.strerror or err}")


if __name__ == "__main__":
    raise SystemExit(main())
