#!/usr/bin/env python3
"""Generates gad's shipped demo set examples/tiles (synthetic woven-texture tiles, CC0).

Normal tiles: a woven texture (two crossed sinusoid families) with random phase, slight rotation,
brightness drift and sensor noise. Defective tiles add one defect: a dark scratch, a bright spot,
a missing-thread band or a stain. validation/good holds normals for `gad refs calibrate` (neither
references nor test images). Deterministic (seeded; new tiles are drawn after the old ones, so
adding some leaves the others unchanged). Needs python3-pil and python3-numpy.
"""
import math
import os

import numpy as np
from PIL import Image

SIZE = 256
OUT = os.path.join(os.path.dirname(__file__), "..", "examples", "tiles")


def texture(rng):
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    a = rng.uniform(-0.05, 0.05)
    u = x * math.cos(a) + y * math.sin(a) + rng.uniform(0, 12)
    v = -x * math.sin(a) + y * math.cos(a) + rng.uniform(0, 12)
    weave = np.sin(u * 2 * math.pi / 12) * np.sin(v * 2 * math.pi / 12)
    img = 128 + 40 * weave + rng.uniform(-10, 10) + 8 * (x / SIZE - 0.5) * rng.uniform(-1, 1)
    return img + rng.normal(0, 4, img.shape), x, y


def add_defect(img, x, y, kind, rng):
    cx, cy = rng.uniform(60, 196, 2)
    if kind == "scratch":
        ang = rng.uniform(0, math.pi)
        d = np.abs((x - cx) * math.sin(ang) - (y - cy) * math.cos(ang))
        along = np.abs((x - cx) * math.cos(ang) + (y - cy) * math.sin(ang))
        img[(d < 2.0) & (along < 45)] = 30
    elif kind == "spot":
        img[(x - cx) ** 2 + (y - cy) ** 2 < 12 ** 2] = 235
    elif kind == "band":
        img[(np.abs(y - cy) < 5) & (np.abs(x - cx) < 60)] = 128
    else:  # stain: the soaked patch is darker and hides most of the weave, with a soft rim.
        # (A smooth brightness dip alone, without the texture change, is invisible to the lite
        # model: its features respond to texture, not to slow shading.)
        r2 = ((x - cx) / 25) ** 2 + ((y - cy) / 14) ** 2
        inside = 1 / (1 + np.exp((np.sqrt(r2) - 1) * 8))
        img = img * (1 - inside) + (93 + (img - 128) * 0.25) * inside
    return img


def save(img, path):
    Image.fromarray(np.clip(np.rint(img), 0, 255).astype(np.uint8), "L").save(path, optimize=True)


def main():
    rng = np.random.default_rng(2024)
    for sub in ("train/good", "test/good", "test/defect", "validation/good"):
        os.makedirs(os.path.join(OUT, sub), exist_ok=True)
    for i in range(8):
        save(texture(rng)[0], os.path.join(OUT, "train/good", f"{i:03d}.png"))
    for i in range(6):
        save(texture(rng)[0], os.path.join(OUT, "test/good", f"{i:03d}.png"))
    for i, kind in enumerate(["scratch", "spot", "band", "stain", "scratch", "spot"]):
        img, x, y = texture(rng)
        save(add_defect(img, x, y, kind, rng), os.path.join(OUT, "test/defect", f"{i:03d}_{kind}.png"))
    for i in range(9):
        save(texture(rng)[0], os.path.join(OUT, "validation/good", f"{i:03d}.png"))


if __name__ == "__main__":
    main()
