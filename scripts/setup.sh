#!/usr/bin/env bash
# gad set-up on a fresh Debian 12 machine: installs every dependency (apt, npm), builds, fetches
# the embedded default model (the lite MobileNetV2 backbone from npm) and runs the demo job:
# a reference set from 8 normal tiles, a threshold from 9 other normal tiles, then every test tile
# scored, ending with gad's verdict (flagged defects and normals) and an HTML report.
set -euo pipefail
cd "$(dirname "$0")/.."

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
if [ "${GAD_SKIP_APT:-0}" != "1" ]; then
  $sudo apt-get update -qq
  # shellcheck disable=SC2046
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    $(grep -v '^#' scripts/deps-apt.txt) >/dev/null
  # npm fetches the lite model; keep an existing Node.js installation if there is one.
  command -v npm >/dev/null || DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq nodejs npm >/dev/null
fi

cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)"

./build/gad models fetch lite

echo "== demo: 8 normal tiles as references, a threshold from 9 other normals, then the 12 test tiles =="
./build/gad refs build --class tile examples/tiles/train/good -o build/tiles.gadref
./build/gad refs calibrate --refs build/tiles.gadref --normals examples/tiles/validation/good --far 0.1 >/dev/null
# Per-image results go to files; gad's last line on stderr is the verdict.
./build/gad score --refs build/tiles.gadref examples/tiles/test --csv build/demo-scores.csv \
  --report build/demo-report.html >build/demo-scores.jsonl
