#!/usr/bin/env bash
# Leave-one-dataset-out protocol for the lite heads: for each auxiliary dataset (ELPV, CIFAR-10
# subset, MNIST, Fashion-MNIST; scripts/lite-heads-data.sh) train on the other three and evaluate
# image AUROC / AUPRC on the held-out one and on the magnetic-tile sample (a target only, never
# trained on), K = 2, 4, 8, 3 reference draws, against s_patch and patch-knn; one markdown table.
#
#   official design   `gad train --k 4` (every other setting at its default) on the other three,
#                     scored by `gad bench --heads` on the held-out set and the target
#   gad lite variant  the statistics head (src/inctrl/stats_head.h) fitted by
#                     `scripts/lite_heads.py` on the other three's residual maps
#
# Usage: scripts/lite-heads-lodo.sh WORK   (run from anywhere after `bash scripts/setup.sh`;
# WORK keeps converted data, maps and fold results, and a rerun skips what is complete).
# Writes WORK/lodo.md and WORK/diagnosis.md. About an hour on 2 busy cores, most of it encoding.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
GAD="$here/../build/gad"
PY="${PYTHON:-python3}"
# numpy comes from Debian (python3-numpy): a python3 earlier on PATH may lack it
"$PY" -c 'import numpy' 2>/dev/null || PY=/usr/bin/python3
work=$(mkdir -p "$1" && cd "$1" && pwd)
. "$here/lite-heads-data.sh"
aux="elpv cifar mnist fashion"
target=mtile

lite_heads_data "$GAD" "${GAD_SHARED_DIR:-$here/../../shared}/data" "$work/data"
for n in $aux $target; do lite_heads_maps "$GAD" "$work" "$n"; done
for held in $aux; do
  fold="$work/folds/$held"
  mkdir -p "$fold"
  train=()
  for n in $aux; do [ "$n" = "$held" ] || train+=("$work/data/$n"); done
  if [ ! -f "$fold/official.safetensors" ]; then
    "$GAD" train --data "$(IFS=,; echo "${train[*]}")" --k 4 -o "$fold/official.safetensors" --checkpoints "$fold/checkpoints" \
      > "$fold/train.log" 2>&1
  fi
  bench_complete "$fold/bench" || "$GAD" bench --data "$work/data/$held,$work/data/$target" --k 2,4,8 --draws 3 \
    --seed 0 --scorers inctrl --heads "$fold/official.safetensors" --dump-maps -o "$fold/bench" 2>/dev/null
done
"$PY" "$here/lite_heads.py" lodo "$work/lodo.md" "$work" $aux $target
# The diagnosis sees each dataset through the official heads that never saw it (its fold); the
# target through the first fold's heads.
args=()
for n in $aux; do args+=("$n=$work/folds/$n/bench/maps.csv"); done
first=${aux%% *}
"$PY" "$here/lite_heads.py" diagnose "$work/diagnosis.md" "${args[@]}" "$target (target only)=$work/folds/$first/bench/maps.csv"
