#!/usr/bin/env python3
"""score.py REF_DIR CLASS IMAGE... — one anomaly score per line, from Python.

    pip install --no-build-isolation .        # once, in a venv (docs/python.md)
    python score.py examples/tiles/train/good tile examples/tiles/test/*/*.png

Uses the installed lite model (`gad models fetch lite`); GAD_MODEL names another model file.
An image that could not be scored prints its error instead of a score.
"""
import os
import sys
from typing import List

import gad


def main(argv: List[str]) -> int:
    if len(argv) < 4:
        print(f"usage: {argv[0]} REF_DIR CLASS IMAGE...", file=sys.stderr)
        return 2
    try:
        detector = gad.Detector(model=os.environ.get("GAD_MODEL"), precision="fp32")
        refs = detector.build_references([argv[1]], class_name=argv[2])
        results = detector.score(refs, argv[3:])
    except gad.Error as e:
        print(f"score.py: {e}", file=sys.stderr)
        return 1
    for result in results:
        if "error" in result:
            print(f"{result['path']}: {result['error']}", file=sys.stderr)
        else:
            print(f"{result['score']:.9f}")
    return 3 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
