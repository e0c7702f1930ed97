#!/usr/bin/env python3
"""scorer_table.py — every scorer on real data with the lite model, through `gad score`:
zero-shot MuSc (no normals) against K = 1/2/4/8 patch-kNN (the untrained InCTRL patch residual),
AnomalyDINO and SubspaceAD, image AUROC (and pixel AUROC where masks exist), mean ± std over
3 reference draws, plus the time per image of every scorer.

    python3 scripts/scorer_table.py --gad build/gad --data ../shared/data --work /tmp/scorers [--dino MODEL.pth]

The datasets are converted to the MVTec layout first (`gad data convert`). --dino adds the time per
image of each scorer on that DINOv2 model at 448 px (scripts/make_random_dinov2.py makes a
random-weight ViT-S/14). Prints a Markdown table (docs/scorers.md keeps the last one).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

import numpy as np

SCORERS = [  # (row name, gad score arguments); K-shot scorers get --ref-images/--k/--seed
    ("patch-knn", ["--scorer", "inctrl", "--heads", "none", "--class", "object"]),
    ("anomalydino", ["--scorer", "anomalydino"]),
    ("subspacead", ["--scorer", "subspacead"]),  # the paper's 30 rotations per reference
    ("subspacead-noaug", ["--scorer", "subspacead", "--scorer-options", "NOAUG"]),
]
KS = [1, 2, 4, 8]
DRAWS = 3


def run(cmd, records=True):
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode not in (0, 3, 4):
        sys.exit(f"scorer_table: {' '.join(cmd)} failed: {p.stderr.strip().splitlines()[-1] if p.stderr else p.returncode}")
    return [json.loads(line) for line in p.stdout.splitlines() if line.strip()] if records else []


def auroc(labels, scores):
    """Mann-Whitney AUROC with ties counted half (scikit-learn's roc_auc_score)."""
    labels = np.asarray(labels)
    scores = np.asarray(scores, dtype=np.float64)
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    s = scores[order]
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and s[j + 1] == s[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    pos = labels == 1
    n_pos, n_neg = pos.sum(), (~pos).sum()
    return (ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def convert(gad, data, work):
    out = {}
    elpv = os.path.join(work, "elpv")
    if not os.path.isdir(elpv):
        run([gad, "data", "convert", "elpv", os.path.join(data, "elpv_sample"), elpv], records=False)
    out["elpv"] = os.path.join(elpv, "elpv")
    tile = os.path.join(work, "mtile")
    if not os.path.isdir(tile):
        run([gad, "data", "convert", "folder", os.path.join(data, "magnetic_tile_sample"), tile, "--normal", "MT_Free",
             "--category", "mtile"] + sum((["--anomalous", "MT_" + d] for d in ("Blowhole", "Break", "Crack", "Fray", "Uneven")), []),
            records=False)
    out["mtile"] = os.path.join(tile, "mtile")
    cifar = os.path.join(work, "cifar")
    if not os.path.isdir(cifar):
        run([gad, "data", "convert", "cifar10", os.path.join(data, "cifar10_subset"), cifar, "--protocol", "one-vs-all",
             "--normal-class", "cat", "--limit", "100"], records=False)
    out["cifar10-cat"] = os.path.join(cifar, "cat")
    return out


def test_images(category):
    images = []
    test = os.path.join(category, "test")
    for folder in sorted(os.listdir(test)):
        for f in sorted(os.listdir(os.path.join(test, folder))):
            images.append((os.path.join(test, folder, f), 0 if folder == "good" else 1, folder))
    return images


def mask_of(category, path, folder):
    stem = os.path.splitext(os.path.basename(path))[0]
    m = os.path.join(category, "ground_truth", folder, stem + "_mask.png")
    return m if os.path.exists(m) else None


def pixel_auroc(category, images, maps_dir):
    """Pixel AUROC of the maps `gad score --maps --raw-maps npy` wrote, against the masks."""
    from PIL import Image
    labels, scores = [], []
    for path, label, folder in images:
        npy = os.path.join(maps_dir, folder, os.path.splitext(os.path.basename(path))[0] + "_map.npy")
        if not os.path.exists(npy):
            return None
        m = np.load(npy)
        mask = mask_of(category, path, folder)
        truth = np.zeros(m.shape, bool) if label == 0 else np.asarray(Image.open(mask)) > 0 if mask else None
        if truth is None:
            return None
        # 4x subsampling keeps the exact ranking cheap; every image contributes alike.
        labels.append(truth[::4, ::4].ravel())
        scores.append(m[::4, ::4].ravel())
    return auroc(np.concatenate(labels).astype(int), np.concatenate(scores))


def score(gad, args, images, maps_dir=None):
    cmd = [gad, "score", "--precision", "fp32"] + args
    if maps_dir:
        cmd += ["--maps", maps_dir, "--raw-maps", "npy"]
    cmd += [os.path.dirname(os.path.dirname(images[0][0]))]  # the test/ folder
    records = run(cmd)
    by_path = {r["path"]: r for r in records}
    return [by_path[p] for p, _, _ in images]


def fmt(values):
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gad", default="build/gad")
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--work", required=True)
    ap.add_argument("--dino", help="a DINOv2 .pth for the time per image at 448 px")
    ap.add_argument("--scorers", help="comma-separated rows to run (default: all, musc included)")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    noaug = os.path.join(a.work, "noaug.json")
    with open(noaug, "w") as f:
        json.dump({"aug_count": 0}, f)
    wanted = a.scorers.split(",") if a.scorers else ["musc"] + [name for name, _ in SCORERS]
    cats = convert(a.gad, a.data, a.work)
    rows, times = [], {}
    for name, category in cats.items():
        images = test_images(category)
        labels = [l for _, l, _ in images]
        has_masks = any(mask_of(category, p, f) for p, l, f in images if l)
        if "musc" in wanted:
            maps = os.path.join(a.work, "maps", name, "musc") if has_masks else None
            recs = score(a.gad, ["--zero-shot"], images, maps)
            times.setdefault("musc (zero-shot)", []).extend(r["ms"] for r in recs)
            px = pixel_auroc(category, images, maps) if maps else None
            rows.append((name, "musc (zero-shot)", 0, fmt([auroc(labels, [r["score"] for r in recs])]), fmt([px]) if px else "–"))
        for scorer, args in SCORERS:
            if scorer not in wanted:
                continue
            args = [noaug if x == "NOAUG" else x for x in args]
            for k in KS:
                image_aucs, pixel_aucs = [], []
                for draw in range(DRAWS):
                    maps = os.path.join(a.work, "maps", name, f"{scorer}-{k}-{draw}") if has_masks else None
                    recs = score(a.gad, args + ["--ref-images", os.path.join(category, "train", "good"), "--k", str(k),
                                                "--seed", str(draw)], images, maps)
                    times.setdefault(scorer, []).extend(r["ms"] for r in recs)
                    image_aucs.append(auroc(labels, [r["score"] for r in recs]))
                    if maps:
                        pixel_aucs.append(pixel_auroc(category, images, maps))
                rows.append((name, scorer, k, fmt(image_aucs), fmt(pixel_aucs) if pixel_aucs else "–"))
                print(f"scorer_table: {name} {scorer} K={k} {rows[-1][3]}", file=sys.stderr)
    print("| dataset | scorer | K | image AUROC | pixel AUROC |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]} |")
    print("\nTime per image (lite, fp32, median over every scored image, set building excluded):\n")
    print("| scorer | ms per image |\n|---|---|")
    for scorer, ms in times.items():
        print(f"| {scorer} | {statistics.median(ms):.1f} |")
    if a.dino:
        tile = cats["mtile"]
        images = test_images(tile)[:16]
        print("\nTime per image, DINOv2 (" + os.path.basename(a.dino) + "), 448 px, 16 magnetic tiles:\n")
        print("| scorer | ms per image |\n|---|---|")
        dino = ["--model", a.dino, "--resolution", "448"]
        opts = os.path.join(a.work, "dino-options")
        os.makedirs(opts, exist_ok=True)
        for scorer, extra in (("subspacead", {"image_res": 448}), ("musc", {"image_size": 448})):
            with open(os.path.join(opts, scorer + ".json"), "w") as f:
                json.dump(extra, f)
        for scorer, args in SCORERS[1:3] + [("musc (zero-shot)", ["--zero-shot"])]:
            extra = {"subspacead": "subspacead.json", "musc (zero-shot)": "musc.json"}.get(scorer)
            cmd = [a.gad, "score", "--precision", "auto"] + dino + args
            if extra:
                cmd += ["--scorer-options", os.path.join(opts, extra)]
            if scorer != "musc (zero-shot)":
                cmd += ["--ref-images", os.path.join(tile, "train", "good"), "--k", "4"]
            cmd += [p for p, _, _ in images]
            recs = run(cmd)
            print(f"| {scorer} | {statistics.median(r['ms'] for r in recs):.0f} |")


if __name__ == "__main__":
    main()
