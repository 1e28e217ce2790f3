"""``python -m lieconv_runtime ...``: the ``lieconv`` command line (:mod:`lieconv_runtime.cli`)."""

from lieconv_runtime.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
