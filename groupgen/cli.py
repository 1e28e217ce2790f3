"""`groupgen` command line: generate, check, list.

Exit status: 0 success; 1 a property check failed, or an internal failure (one line naming the spec
and the derivation step); 2 a spec or usage error (one line: file, field, problem, fix); 130
interrupted.  Never a traceback, and nothing is written unless every spec derives.

Where modules go: `groupgen generate` with no SPEC regenerates the shipped specs (`group_specs/` of
a source checkout) into the shipped `generated/`; `groupgen generate SPEC...` writes shipped specs
there too and any other spec into the user group folder that `load_group` searches
(`lieconv_runtime.loader.user_group_folder()`), unless `--out DIR` is given.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from groupgen import steps
from groupgen.algebra import ClosedFormError, analyze
from groupgen.spec import SpecError, find_specs, load_spec

REPO_ROOT = Path(__file__).resolve().parent.parent
SHIPPED_SPECS = REPO_ROOT / "group_specs"
PROG = "groupgen"


class UsageError(Exception):
    """A problem with the command line or the output folder: one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of usage + message
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("lieconv-groupgen")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def _shipped_generated() -> Path:
    from lieconv_runtime.loader import shipped_folder

    return shipped_folder()


def _is_shipped(path) -> bool:
    return Path(path).resolve().parent == SHIPPED_SPECS.resolve()


def _derive(path):
    """(spec, module source) for one spec file; ClosedFormError becomes a SpecError on generators."""
    from groupgen.emit import render

    with steps.spec(path):
        spec = load_spec(path)
        try:
            alg = analyze(spec)
            return spec, render(spec, alg)
        except ClosedFormError as err:
            raise SpecError(str(path), "generators", f"{err}") from None


def _check_target(path: Path) -> None:
    """Refuse a target that cannot be replaced by a file, before anything is written."""
    folder = path.parent
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"output folder {folder} is a file; give --out a folder")
    if path.exists() and not path.is_file():
        raise UsageError(f"{path} exists and is not a file (a folder?); remove it or choose another --out")
    probe = folder
    while not probe.exists():
        probe = probe.parent
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write to {probe} (permission denied); choose another --out")


def cmd_generate(args) -> int:
    from lieconv_runtime.io import atomic_write_text
    from lieconv_runtime.loader import user_group_folder

    if args.specs:
        paths = args.specs
    else:
        if not SHIPPED_SPECS.is_dir():
            raise UsageError(f"no SPEC given and no shipped specs at {SHIPPED_SPECS} (not a source checkout); "
                             "give spec files, e.g. `groupgen generate my_specs/Sim3.yaml`")
        paths = find_specs(SHIPPED_SPECS)
    rendered = [_derive(p) for p in paths]  # everything validated and derived before anything is written
    names: dict = {}
    targets = []
    for spec, source in rendered:
        if spec.name in names:
            raise SpecError(spec.path, "name", f"name {spec.name!r} is also used by {names[spec.name]}; names must be unique")
        names[spec.name] = spec.path
        if args.out:
            folder = Path(args.out)
        else:
            folder = _shipped_generated() if _is_shipped(spec.path) else user_group_folder()
        targets.append((spec, source, folder / f"{spec.name}.py"))
    for _, _, target in targets:
        _check_target(target)
    for spec, source, target in targets:
        atomic_write_text(target, source)
        if not args.quiet:
            print(f"{spec.path} -> {target}")
    return 0


def cmd_check(args) -> int:
    from groupgen.check import check_spec

    status = 0
    for path in args.specs:
        with steps.spec(path):
            try:
                report = check_spec(path, samples=args.samples, seed=args.seed)
            except Exception as err:  # noqa: BLE001 - reported as the spec's error, the other specs still run
                _internal(err)
                status = 1
                continue
        print(report.text(), flush=True)
        if report.spec_error:
            status = 2
        elif not report.passed and status == 0:
            status = 1
    return status


def cmd_list(args) -> int:
    from lieconv_runtime.loader import group_locations, search_folders

    folder = Path(args.specs_dir) if args.specs_dir else SHIPPED_SPECS
    found = group_locations(args.group_path)
    if folder.is_dir():
        rows = [("spec", "lie_dim", "rep_dim", "space_dim", "action", "exp/log", "generated module")]
        for path in find_specs(folder):
            spec = load_spec(path)
            if spec.numeric_fallback:
                kind = "numeric fallback"
            else:
                try:
                    analyze(spec)
                    kind = "closed form"
                except ClosedFormError:
                    kind = "no closed form (generate fails)"
            where = str(found.get(spec.name, "not generated"))
            rows.append((spec.name, str(len(spec.generators)), str(spec.rep_dim), str(spec.space_dim), spec.action,
                         kind, where))
        _table(rows)
        print()
    print("groups load_group() finds (first folder wins):")
    _table([("group", "module")] + [(name, str(p)) for name, p in sorted(found.items())])
    print("searched: " + ", ".join(str(f) for f in search_folders(args.group_path)))
    return 0


def _table(rows) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Compile Lie group specs (YAML generators) into torch modules.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{generate,check,list}")
    g = sub.add_parser("generate", help="derive closed forms and write one module per spec",
                       description="Derive closed forms and write one module per spec. Shipped specs "
                                   "(group_specs/ of a source checkout) go to generated/; other specs go to "
                                   "the user group folder that load_group() searches, unless --out is given.")
    g.add_argument("specs", nargs="*", help="spec files (default: every shipped spec in group_specs/)")
    g.add_argument("--out", help="output folder for every module (default: see above)")
    g.add_argument("--quiet", action="store_true", help="print nothing on success")
    g.set_defaults(func=cmd_generate)
    c = sub.add_parser("check", help="run the property checks on specs and print a report",
                       description="Derive each spec into a temporary folder and check exp, log, inv, bracket, "
                                   "lifting and Haar sampling numerically, in float64 and float32.")
    c.add_argument("specs", nargs="+", help="spec files")
    c.add_argument("--samples", type=int, default=200, help="random elements per property (default 200)")
    c.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    c.set_defaults(func=cmd_check)
    ls = sub.add_parser("list", help="list the specs and every group load_group() finds",
                        description="List the specs of a folder (default: the shipped group_specs/) and every "
                                    "generated group load_group() finds, with its file.")
    ls.add_argument("--specs-dir", help="folder of specs (default: the shipped group_specs/)")
    ls.add_argument("--group-path", action="append", default=None, metavar="DIR",
                    help="extra folder of generated modules, searched first (repeatable)")
    ls.set_defaults(func=cmd_list)
    return parser


def _internal(err: BaseException) -> int:
    where = steps.where() or "groupgen"
    text = " ".join(str(err).split())[:300]
    print(f"{PROG}: error: {where}: internal failure ({type(err).__name__}: {text}); please report it with the "
          "spec; a spec outside the closed-form class may work with `numeric_fallback: true`", file=sys.stderr)
    return 1


def main(argv=None) -> int:
    """Entry point of the `groupgen` script; returns the exit status."""
    try:
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as e:  # --help, --version
            return int(e.code or 0)
        return args.func(args)
    except (SpecError, UsageError) as err:
        print(f"{PROG}: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `groupgen check ... | head`: the reader has gone, say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as err:
        print(f"{PROG}: error: {getattr(err, 'filename', '') or ''}: {err.strerror or err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted{' during ' + steps.where() if steps.where() else ''}; no file is half-written",
              file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - one line instead of a traceback
        return _internal(err)


if __name__ == "__main__":
    raise SystemExit(main())
