#!/usr/bin/env bash
# Re-creates assets/heads/lite-mobilenet_v2.safetensors (`--heads lite`), gad's statistics head
# for the lite backbone (src/inctrl/stats_head.h; not InCTRL's official head design, which does
# not transfer on this backbone: docs/models.md "Heads for the lite model"), from data anyone can
# re-obtain (scripts/lite-heads-data.sh): ELPV without the elpv_sample cells, the CIFAR-10 subset
# (cat, airplane, truck, frog one-vs-all), MNIST and Fashion-MNIST (one-vs-all, 100 per folder).
# The magnetic-tile sample is not used.
#
#   maps   `gad bench --dump-maps` on each dataset, no heads: K = 2, 4, 8, 3 reference draws of
#          train/good, every test image scored; maps.csv holds s_patch and the residual map M
#   fit    `scripts/lite_heads.py fit`: logistic regression (Newton, L2 1e-3, each dataset and
#          each label weighted equally) on the standardised max, top-2 % and top-10 % means of M
#          after averaging it over every 3x3 square of the grid
#
# Run from the repository root after `bash scripts/setup.sh`. Prints the time it took; set
# LITE_HEADS_WORK=DIR to keep the converted data and maps (default: a temporary folder).
set -euo pipefail
cd "$(dirname "$0")/.."
GAD="$PWD/build/gad"
PY="${PYTHON:-python3}"
# numpy comes from Debian (python3-numpy): a python3 earlier on PATH may lack it
"$PY" -c 'import numpy' 2>/dev/null || PY=/usr/bin/python3
OUT="$PWD/assets/heads/lite-mobilenet_v2.safetensors"
. scripts/lite-heads-data.sh
work=${LITE_HEADS_WORK:-}
if [ -z "$work" ]; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
fi
SECONDS=0
lite_heads_data "$GAD" "${GAD_SHARED_DIR:-$PWD/../shared}/data" "$work/data"
maps=()
for n in elpv cifar mnist fashion; do
  lite_heads_maps "$GAD" "$work" "$n"
  maps+=("$work/maps/$n/maps.csv")
done
"$PY" scripts/lite_heads.py fit "$OUT" "${maps[@]}"
echo "wrote $OUT in ${SECONDS} s wall"
