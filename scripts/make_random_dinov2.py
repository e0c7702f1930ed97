#!/usr/bin/env python3
"""make_random_dinov2.py OUT.safetensors — a random-weight DINOv2 ViT-S/14 at the real shapes
(embed 384, 12 blocks, 6 heads, MLP 1536, 37 x 37 position grid) in the hub's key layout, for
timing runs where the real weights are out of reach (e.g. scripts/station_bench.py). Same
initialisation as gad_bench's in-memory model: N(0, 0.02), unit norms and layer scales. Seeded.
"""
import json
import struct
import sys

import numpy as np


def tensors(seed=0):
    rng = np.random.default_rng(seed)
    d, h = 384, 1536
    rnd = lambda *s: rng.normal(0.0, 0.02, s).astype(np.float32)
    t = {"cls_token": rnd(1, 1, d), "pos_embed": rnd(1, 1 + 37 * 37, d), "mask_token": rnd(1, d),
         "patch_embed.proj.weight": rnd(d, 3, 14, 14), "patch_embed.proj.bias": rnd(d),
         "norm.weight": np.ones(d, np.float32), "norm.bias": np.zeros(d, np.float32)}
    for i in range(12):
        p = f"blocks.{i}."
        for n in ("norm1", "norm2"):
            t[p + n + ".weight"] = np.ones(d, np.float32)
            t[p + n + ".bias"] = np.zeros(d, np.float32)
        t[p + "attn.qkv.weight"], t[p + "attn.qkv.bias"] = rnd(3 * d, d), rnd(3 * d)
        t[p + "attn.proj.weight"], t[p + "attn.proj.bias"] = rnd(d, d), rnd(d)
        t[p + "mlp.fc1.weight"], t[p + "mlp.fc1.bias"] = rnd(h, d), rnd(h)
        t[p + "mlp.fc2.weight"], t[p + "mlp.fc2.bias"] = rnd(d, h), rnd(d)
        t[p + "ls1.gamma"] = np.ones(d, np.float32)
        t[p + "ls2.gamma"] = np.ones(d, np.float32)
    return t


def write_safetensors(path, t):
    header, offset = {}, 0
    for name, a in t.items():
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for a in t.values():
            f.write(np.ascontiguousarray(a).tobytes())


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    write_safetensors(sys.argv[1], tensors())
