#!/usr/bin/env python3
"""What the Python binding costs: `Detector.score` on a batch of 8 lite images, wall time of the
Python call versus the time the C++ API measured for the same batch (ScoreRecord::ms, summed).

    PYTHONPATH=build/python python3 bench/python_overhead.py [--reps 20] [--model FILE]

Prints one line per repetition set and the median overhead in percent.
"""
import argparse
import os
import statistics
import time

import gad

SRC = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--model", default=os.path.join(SRC, "..", "shared", "fixtures", "lite", "mobilenet_v2", "model.json"))
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    d = gad.Detector(model=a.model, precision="fp32", threads=a.threads)
    tiles = os.path.join(SRC, "examples", "tiles")
    refs = d.build_references([os.path.join(tiles, "train", "good")], class_name="tile")
    queries = sorted(os.path.join(tiles, "test", "defect", f) for f in os.listdir(os.path.join(tiles, "test", "defect")))
    queries = (queries + queries)[:8]
    d.score(refs, queries)  # warm-up
    overheads, walls, cpps = [], [], []
    for _ in range(a.reps):
        t0 = time.perf_counter()
        results = d.score(refs, queries, batch=8)
        wall = (time.perf_counter() - t0) * 1000
        cpp = sum(r["ms"] for r in results)  # the C++ call's own batch time (decode + model), ms
        walls.append(wall)
        cpps.append(cpp)
        overheads.append((wall - cpp) / cpp * 100)
    print(f"batch of 8 lite images, {a.threads} threads, {a.reps} reps: Python call {statistics.median(walls):.2f} ms, "
          f"C++ call {statistics.median(cpps):.2f} ms (medians)")
    print(f"Python overhead over C++: median {statistics.median(overheads):.2f} %, max {max(overheads):.2f} %")


if __name__ == "__main__":
    main()
