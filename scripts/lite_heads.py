#!/usr/bin/env python3
"""Learners on what InCTRL's heads see, from `gad bench --dump-maps` files (maps.csv).

  diagnose OUT.md  DATASET=maps.csv ...   ceiling check: simple learners vs the InCTRL heads, in
                                          distribution and leave-one-dataset-out
  fit HEADS.safetensors maps.csv ...      fit the position-free statistics head of the lite
                                          backbone (the gad variant) and write it
  lodo OUT.md WORK AUX... TARGET          the leave-one-dataset-out table (scripts/lite-heads-lodo.sh)

Every AUROC/AUPRC is per (category, K, draw), averaged over categories and draws, as `gad bench`
does. Only python3 and numpy (Debian python3-numpy).
"""
import csv
import json
import struct
import sys

import numpy as np

# The statistics of the residual map M the variant head reads, after averaging M over every
# WINDOW x WINDOW square of the grid (position-free: no weight belongs to a grid position). Keep in
# step with src/inctrl/stats_head.cpp.
STAT_NAMES = ["max", "top2%", "top10%"]
WINDOW = 3


def smooth(m, window):
    """[N, g*g] maps -> the means of every window x window square, [N, (g - window + 1)^2]."""
    g = int(round(np.sqrt(m.shape[1])))
    if g * g != m.shape[1]:
        sys.exit("smooth: %d values are not a square grid" % m.shape[1])
    grid, n = m.reshape(-1, g, g), g - window + 1
    out = np.zeros((len(m), n, n))
    for i in range(window):
        for j in range(window):
            out += grid[:, i : i + n, j : j + n]
    return (out / window**2).reshape(len(m), -1)


def all_stats(m):
    """[N, P] residual maps -> [N, 5]: max, top-2 % mean, top-10 % mean, mean, std."""
    s = -np.sort(-m, axis=1)
    p = m.shape[1]
    top = lambda frac: s[:, : max(1, int(np.floor(frac * p + 0.5)))].mean(1)  # C++'s lround
    return np.stack([s[:, 0], top(0.02), top(0.10), m.mean(1), m.std(1)], 1)


def map_stats(m, window=WINDOW):
    """The variant head's statistics, [N, 3]."""
    return all_stats(smooth(m, window))[:, :3]


# Diagnosis only (`gad bench --dump-maps` writes them): residuals of the raw global feature to the
# mean reference and to the nearest one, and the references' own leave-one-out residuals.
EXTRA = ["g_mean", "g_nn", "ref_max", "ref_top2", "ref_top10", "ref_gnn"]


def load(path):
    try:  # a parsed copy beside the CSV, refreshed when the CSV is newer
        import os
        cached = path + ".v2.npz"  # v2: with the diagnosis columns
        if os.path.exists(cached) and os.path.getmtime(cached) >= os.path.getmtime(path):
            z = np.load(cached)
            if "path" in z.files:
                return {k: z[k] for k in z.files}
    except OSError:
        pass
    d = parse(path)
    try:
        np.savez(cached, **d)
    except OSError:
        pass
    return d


def parse(path):
    with open(path) as f:
        r = csv.reader(f)
        head = next(r)
        rows = list(r)
    mcols = [i for i, h in enumerate(head) if h[0] == "m" and h[1:].isdigit()]
    col = {h: i for i, h in enumerate(head)}
    num = lambda name: np.array([float(x[col[name]]) if x[col[name]] else np.nan for x in rows])
    return {
        "group": np.array(["%s/%s|%s|%s" % (x[0], x[1], x[2], x[3]) for x in rows]),
        "path": np.array([x[col["path"]] for x in rows]),
        "category": np.array(["%s/%s" % (x[0], x[1]) for x in rows]),
        "k": num("k").astype(int),
        "draw": num("draw").astype(int),
        "label": num("label").astype(int),
        "s_patch": num("s_patch"),
        "s_img": num("s_img"),
        "s_hol": num("s_hol"),
        **{e: num(e) for e in EXTRA if e in col},
        "M": np.array([[float(x[i]) for i in mcols] for x in rows], dtype=np.float64),
    }


def auroc(y, s):
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s))
    ss = s[order]
    i = 0
    while i < len(s):  # average ranks of ties
        j = i
        while j + 1 < len(s) and ss[j + 1] == ss[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    npos = y.sum()
    nneg = len(y) - npos
    return (ranks[y == 1].sum() - npos * (npos + 1) / 2) / (npos * nneg)


def auprc(y, s):
    order = np.argsort(-s, kind="mergesort")
    y = y[order]
    tp = np.cumsum(y)
    prec = tp / np.arange(1, len(y) + 1)
    return (prec * y).sum() / y.sum()


def evaluate(d, score, ks=(2, 4, 8)):
    """{K: (mean AUROC, mean AUPRC)} over draws of the mean over categories."""
    out = {}
    for k in ks:
        per_draw = []
        for draw in sorted(set(d["draw"][d["k"] == k])):
            a, p = [], []
            for c in sorted(set(d["category"])):
                sel = (d["k"] == k) & (d["draw"] == draw) & (d["category"] == c)
                if sel.sum() == 0 or d["label"][sel].min() == d["label"][sel].max():
                    continue
                a.append(auroc(d["label"][sel], score[sel]))
                p.append(auprc(d["label"][sel], score[sel]))
            per_draw.append((np.mean(a), np.mean(p)))
        if per_draw:
            out[k] = tuple(np.mean(per_draw, 0))
    return out


def fit_logistic(x, y, w, l2=1e-3, iters=50):
    """Weighted L2-regularised logistic regression by Newton's method; x already standardised."""
    xb = np.hstack([x, np.ones((len(x), 1))])
    beta = np.zeros(xb.shape[1])
    reg = np.full(xb.shape[1], l2)
    reg[-1] = 0
    for _ in range(iters):
        p = 1 / (1 + np.exp(-np.clip(xb @ beta, -30, 30)))
        g = xb.T @ (w * (p - y)) + reg * beta
        h = (xb * (w * p * (1 - p))[:, None]).T @ xb + np.diag(reg)
        step = np.linalg.solve(h, g)
        beta -= step
        if np.abs(step).max() < 1e-9:
            break
    return beta


def balance_weights(datasets):
    """Each dataset the same total weight, normals and anomalies half of it each."""
    ws = []
    for d in datasets:
        y = d["label"]
        w = np.where(y == 1, 0.5 / max(1, y.sum()), 0.5 / max(1, (1 - y).sum()))
        ws.append(w)
    return ws


class Learner:
    def __init__(self, name, features):
        self.name, self.features = name, features

    def fit(self, datasets):
        x = np.vstack([self.features(d) for d in datasets])
        y = np.concatenate([d["label"] for d in datasets]).astype(float)
        w = np.concatenate(balance_weights(datasets))
        w = w / w.mean()
        self.mu, self.sd = x.mean(0), x.std(0) + 1e-12
        self.beta = fit_logistic((x - self.mu) / self.sd, y, w)
        return self

    def score(self, d):
        z = (self.features(d) - self.mu) / self.sd
        return z @ self.beta[:-1] + self.beta[-1]


def with_self_norm(d):
    """The variant's statistics divided by the references' own leave-one-out ones."""
    return map_stats(d["M"], 1) / np.stack([d["ref_max"], d["ref_top2"], d["ref_top10"]], 1)


LEARNERS = {
    "LR [s_patch, s_img]": lambda d: np.stack([d["s_patch"], d["s_img"]], 1),
    "LR stats of M (max, top-k means, mean, std)": lambda d: all_stats(d["M"]),
    "LR stats of M (max, top-2 %, top-10 % means), no window": lambda d: map_stats(d["M"], 1),
    "LR stats of M + global residuals": lambda d: np.hstack([map_stats(d["M"], 1), np.stack([d["g_nn"], d["g_mean"]], 1)]),
    "LR stats of M / the references' own": with_self_norm,
    "LR stats of M after a %dx%d mean: the variant" % (WINDOW, WINDOW): lambda d: map_stats(d["M"]),
    "LR on M by grid position (diff_head's view)": lambda d: d["M"],
    "LR on sorted M (position-free)": lambda d: -np.sort(-d["M"], 1),
}


def split_half(d, seed=0):
    """In distribution: half the test images (by path) train, half evaluate, the same halves in
    every (K, draw) run, so no image is on both sides."""
    paths = sorted(set(d["path"]))
    side = dict(zip(paths, np.random.default_rng(seed).random(len(paths)) < 0.5))
    train = np.array([side[p] for p in d["path"]])
    sub = lambda mask: {k: v[mask] for k, v in d.items()}
    return sub(train), sub(~train)


def fmt(r):
    return " | ".join("%.3f / %.3f" % r[k] if k in r else "–" for k in (2, 4, 8))


def mean_auroc(r):
    return np.mean([r[k][0] for k in (2, 4, 8) if k in r])


def rows_of(d, dataset):
    """The rows of one dataset when a maps.csv holds several (a bench run on many roots)."""
    keep = np.array([c.split("/")[0] == dataset for c in d["category"]])
    return {k: v[keep] for k, v in d.items()} if 0 < keep.sum() < len(keep) else d


def usable(learner, d):
    """Whether a dump holds what a learner reads (s_img needs heads, the rest newer dumps)."""
    if "s_img" in learner:
        return not np.isnan(d["s_img"]).all()
    if "global" in learner or "references' own" in learner:
        return all(e in d for e in EXTRA)
    return True


def diagnose(out_path, named):
    data = {name: rows_of(load(path), name.split(" ")[0]) for name, path in named}
    lines = ["| data | scorer | K=2 | K=4 | K=8 | mean AUROC |", "|---|---|---|---|---|---|"]
    def row(dname, scorer, r):
        lines.append("| %s | %s | %s | %.3f |" % (dname, scorer, fmt(r), mean_auroc(r)))
    for name, d in data.items():
        row(name, "s_patch", evaluate(d, d["s_patch"]))
        if not np.isnan(d["s_hol"]).all():
            row(name, "InCTRL heads (final)", evaluate(d, (d["s_hol"] + d["s_patch"]) / 2))
            row(name, "s_hol alone", evaluate(d, d["s_hol"]))
            row(name, "s_img alone", evaluate(d, d["s_img"]))
        for st, j in (("top2% mean", 1), ("top10% mean", 2), ("mean", 3)):
            row(name, st + " of M", evaluate(d, all_stats(d["M"])[:, j]))
        target_only = name.endswith("(target only)")  # never trained on, not even in this check
        tr, te = split_half(d)
        for lname, feat in ([] if target_only else LEARNERS.items()):
            if not usable(lname, d):
                continue
            row(name, lname + ", in distribution (half/half)", evaluate(te, Learner(lname, feat).fit([tr]).score(te)))
        others = [o for n, o in data.items() if n != name and not n.endswith("(target only)")]
        for lname, feat in (LEARNERS.items() if others else []):
            if not all(usable(lname, x) for x in [d] + others):
                continue
            row(name, lname + ", held out (trained on the others)", evaluate(d, Learner(lname, feat).fit(others).score(d)))
    with open(out_path, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


def write_safetensors(path, tensors, metadata):
    header = {"__metadata__": metadata}
    blob = b""
    for name, arr in tensors:
        a = np.ascontiguousarray(arr, dtype=np.float32)
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [len(blob), len(blob) + a.nbytes]}
        blob += a.tobytes()
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + blob)


def fingerprint(maps_csv):
    """The backbone fingerprint `gad bench` recorded in summary.md beside maps.csv."""
    import os, re
    with open(os.path.join(os.path.dirname(maps_csv), "summary.md")) as f:
        m = re.search(r"- model: (.*?), fingerprint ([0-9a-f]+)", f.read())
    return m.group(1), m.group(2)


def fit_variant(datasets, window=WINDOW):
    return Learner("stats", lambda d: map_stats(d["M"], window)).fit(datasets)


def fit(out_path, paths):
    models = {fingerprint(p) for p in paths}
    if len(models) != 1:
        sys.exit("fit: the maps come from different backbones: %s" % sorted(models))
    description, fp = models.pop()
    meta = {"format": "gad-stats-head-1", "backbone": {"kind": "lite", "fingerprint": fp, "description": description},
            "head": "gad variant for the lite backbone: logistic regression on " + ", ".join(STAT_NAMES) +
                    " of the residual map M after a %dx%d mean (standardised)" % (WINDOW, WINDOW),
            "data": [p.split("/")[-2] for p in paths]}
    metadata = {"gad": json.dumps(meta)}
    learner = fit_variant([load(p) for p in paths])
    write_safetensors(out_path, [("stats_head.mean", learner.mu), ("stats_head.scale", learner.sd),
                                 ("stats_head.weight", learner.beta[:-1]), ("stats_head.bias", learner.beta[-1:]),
                                 ("stats_head.window", np.array([WINDOW]))], metadata)
    print("stats head: " + ", ".join("%s %+.3f" % (n, b) for n, b in zip(STAT_NAMES, learner.beta[:-1])) +
          ", bias %+.3f (standardised statistics)" % learner.beta[-1])


def bench_results(path, scorer):
    """gad bench results.csv -> {dataset: {K: (AUROC, AUPRC)}}, categories then draws averaged."""
    cells = {}
    with open(path) as f:
        for r in csv.DictReader(f):
            if r["scorer"] == scorer:
                cells.setdefault(r["dataset"], {}).setdefault(int(r["k"]), {}).setdefault(int(r["draw"]), []).append(
                    (float(r["AUROC"]), float(r["AUPRC"])))
    return {ds: {k: tuple(np.mean([np.mean(v, 0) for v in draws.values()], 0)) for k, draws in byk.items()}
            for ds, byk in cells.items()}


def lodo(out_path, work, names):
    """Leave-one-dataset-out table. WORK/maps/<name>/ holds each dataset's `gad bench --dump-maps`
    run without heads; WORK/folds/<held out>/bench/ the bench of the official heads trained on the
    other auxiliary datasets, on the held-out one and the target. The last name is the target:
    it is evaluated in every fold and never trained on."""
    import os
    aux, target = names[:-1], names[-1]
    maps = {n: load(os.path.join(work, "maps", n, "maps.csv")) for n in names}
    knn = {n: bench_results(os.path.join(work, "maps", n, "results.csv"), "patch-knn") for n in names}
    lines = ["| held out | evaluated on | scorer | K=2 | K=4 | K=8 | mean AUROC | vs s_patch |",
             "|---|---|---|---|---|---|---|---|"]
    wins = {}
    for held in aux:
        train = [maps[n] for n in aux if n != held]
        variant, unwindowed = fit_variant(train), fit_variant(train, 1)
        official_csv = os.path.join(work, "folds", held, "bench", "results.csv")
        official = bench_results(official_csv, "inctrl") if os.path.exists(official_csv) else {}
        for ev in (held, target):
            d = maps[ev]
            base = evaluate(d, d["s_patch"])
            rows = [("s_patch", base), ("patch-knn", list(knn[ev].values())[0]),
                    ("InCTRL heads (official design, gad train --k 4)", official.get(ev)),
                    ("stats head without the window (the previous variant)", evaluate(d, unwindowed.score(d))),
                    ("stats head, %dx%d window (gad lite variant, shipped)" % (WINDOW, WINDOW), evaluate(d, variant.score(d)))]
            for scorer, r in rows:
                if r is None:
                    lines.append("| %s | %s | %s | – | – | – | – | – |" % (held, ev, scorer))
                    continue
                delta = mean_auroc(r) - mean_auroc(base)
                lines.append("| %s | %s | %s | %s | %.3f | %+.3f |" % (held, ev, scorer, fmt(r), mean_auroc(r), delta))
                wins.setdefault(scorer, []).append(delta)
    lines.append("")
    for scorer, deltas in wins.items():
        if scorer != "s_patch":
            lines.append("- %s: beats s_patch (by > 0.0005) in %d of %d (held out, target) pairs; mean %+.3f, smallest %+.3f" %
                         (scorer, sum(x > 5e-4 for x in deltas), len(deltas), np.mean(deltas), min(deltas)))
    with open(out_path, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    cmd, out, rest = sys.argv[1], sys.argv[2], sys.argv[3:]
    if cmd == "diagnose":
        diagnose(out, [a.split("=", 1) for a in rest])
    elif cmd == "fit":
        fit(out, rest)
    elif cmd == "lodo":
        lodo(out, rest[0], rest[1:])
    else:
        sys.exit(__doc__)
