"""Helpers for CLI tests."""


def with_flags(argv: list[str], flags) -> list[str]:
    """``argv`` with each ``FLAG VALUE`` pair of ``flags`` replacing that flag's value, or appended."""
    argv = list(argv)
    for flag, value in zip(flags[::2], flags[1::2]):
        if flag in argv:
            argv[argv.index(flag) + 1] = value
        else:
            argv += [flag, value]
    return argv
