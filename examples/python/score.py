#!/usr/bin/env python3
"""score.py REF_DIR CLASS IMAGE... — one anomaly score per line, from Python.

    PYTHONPATH=<prefix>/lib/python3.11/dist-packages python3 score.py examples/tiles/train/good tile img.png

Uses the installed lite model (`gad models fetch lite`); GAD_MODEL names another model file.
"""
import os
import sys

import gad


def main(argv):
    if len(argv) < 4:
        print(f"usage: {argv[0]} REF_DIR CLASS IMAGE...", file=sys.stderr)
        return 2
    try:
        detector = gad.Detector(model=os.environ.get("GAD_MODEL"), precision="fp32")
        refs = detector.build_references([argv[1]], class_name=argv[2])
        for result in detector.score(refs, argv[3:]):
            print(f"{result['score']:.9f}")
    except gad.Error as e:
        print(f"score.py: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
