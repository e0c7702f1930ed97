"""`python -m gad ARGS…` (and the `gad` script pip installs) runs gad's command line: the same
program, options, output and exit codes as `gad ARGS…`."""
import os
import sys
from typing import List, NoReturn, Optional

_HERE = os.path.dirname(os.path.abspath(__file__))
# Where the `gad` program sits beside this package: inside it (a pip install), in the prefix of a
# `cmake --install` (<prefix>/lib/python3.X/dist-packages/gad → <prefix>/bin), or in a build tree
# (build/python/gad → build).
_CANDIDATES = (os.path.join(_HERE, "bin", "gad"),
               os.path.join(_HERE, "..", "..", "..", "..", "bin", "gad"),
               os.path.join(_HERE, "..", "..", "gad"))


def program() -> Optional[str]:
    """The path of the `gad` program that belongs to this package, or None."""
    for path in _CANDIDATES:
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return os.path.normpath(path)
    return None


def main(argv: Optional[List[str]] = None) -> NoReturn:
    """Replace this process with `gad` (signals and exit codes are the program's own)."""
    path = program()
    if path is None:
        sys.stderr.write("gad: the gad program is not installed beside the Python package\n")
        sys.exit(1)
    args = sys.argv[1:] if argv is None else argv
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(path, ["gad", *args])


if __name__ == "__main__":
    main()
