#!/usr/bin/env bash
# The installed package as users get it: `cmake --install` into a temporary prefix, then the C
# example built with pkg-config (no torch on its include path), a CMake find_package consumer,
# the Python example, and the moved prefix (assets are found relative to the library). Scores
# must equal `gad score`'s to 1e-6 (the same code path; the bound only absorbs printing).
set -euo pipefail
BUILD=$(cd "$1" && pwd)
SRC=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${GAD_SHARED_DIR:-$SRC/../shared}
MODEL=$SHARED/fixtures/lite/mobilenet_v2/model.json
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
P=$WORK/prefix
cmake --install "$BUILD" --prefix "$P" >/dev/null

fail() { echo "install test: $*" >&2; exit 1; }
[ -f "$P/include/gad/gad.h" ] && [ -f "$P/include/gad/gad.hpp" ] || fail "headers not installed"
[ -f "$P/share/gad/bpe_simple_vocab_16e6.txt.gz" ] && [ -d "$P/share/gad/configs" ] || fail "assets not installed"
LIB=$(ls "$P"/lib*/libgad.so* | head -1)
readelf -d "$LIB" | grep 'SONAME.*libgad.so.0' >/dev/null || fail "libgad has no SONAME libgad.so.0"
PC=$(dirname "$(ls "$P"/lib*/pkgconfig/gad.pc)")
export PKG_CONFIG_PATH=$PC

# The public headers compile alone — C99 for gad.h, C++17 for gad.hpp — and pull in nothing but
# the C/C++ standard library (Debian installs torch headers on the default path, so the check is
# on what they include, not on -I flags).
CFLAGS=$(pkg-config --cflags gad)
case "$CFLAGS" in *torch*|*ATen*) fail "pkg-config cflags name torch: $CFLAGS";; esac
echo '#include <gad/gad.h>' | cc -std=c99 -Wall -Wextra -pedantic -Werror -fsyntax-only $CFLAGS -x c - || fail "gad.h is not C99"
echo '#include <gad/gad.hpp>' | c++ -std=c++17 -Wall -Wextra -Werror -fsyntax-only -H $CFLAGS -x c++ - 2>"$WORK/includes.txt" \
  || fail "gad.hpp does not compile on its own"
if grep -E 'torch|ATen|c10|opencv|nlohmann|httplib|CLI/' "$WORK/includes.txt"; then fail "gad.hpp includes third-party headers"; fi

# The C example, as its comment says to build it.
cc -std=c99 -Wall -Wextra -Werror "$SRC/examples/c/score.c" $(pkg-config --cflags --libs gad) -o "$WORK/score"
LOADED=$(ldd "$WORK/score" | awk '/libgad/ {print $3}')
[ -n "$LOADED" ] && [ "$(realpath "$LOADED")" = "$(realpath "$LIB")" ] || fail "the example does not load the installed libgad: $LOADED"

IMAGES=$(ls "$SRC"/examples/tiles/test/*/*.png)
"$P/bin/gad" score --model "$MODEL" --precision fp32 --ref-images "$SRC/examples/tiles/train/good" --class tile $IMAGES \
  2>/dev/null | python3 -c 'import json,sys; [print(json.loads(l)["score"]) for l in sys.stdin]' >"$WORK/cli.txt"
GAD_MODEL=$MODEL "$WORK/score" "$SRC/examples/tiles/train/good" tile $IMAGES >"$WORK/c.txt"
PYDIR=$(ls -d "$P"/lib*/python3*/dist-packages)
GAD_MODEL=$MODEL PYTHONPATH=$PYDIR "${PYTHON:-python3}" "$SRC/examples/python/score.py" "$SRC/examples/tiles/train/good" tile $IMAGES >"$WORK/py.txt"
compare() {
  python3 - "$1" "$2" <<'PY'
import sys
a = [float(x) for x in open(sys.argv[1])]
b = [float(x) for x in open(sys.argv[2])]
assert len(a) == len(b) == 12, (len(a), len(b))
worst = max(abs(x - y) for x, y in zip(a, b))
assert worst <= 1e-6, f"{sys.argv[2]}: differs from gad score by {worst}"
PY
}
compare "$WORK/cli.txt" "$WORK/c.txt" || fail "C example scores differ from gad score"
compare "$WORK/cli.txt" "$WORK/py.txt" || fail "Python example scores differ from gad score"

# Errors reach C callers as a status and one line, never an abort.
if GAD_MODEL=$MODEL "$WORK/score" /nonexistent tile x.png 2>"$WORK/err.txt"; then fail "missing REF_DIR accepted"; fi
grep -q '/nonexistent' "$WORK/err.txt" || fail "error does not name the path: $(cat "$WORK/err.txt")"

# find_package(gad) from CMake.
mkdir -p "$WORK/consumer"
cat >"$WORK/consumer/CMakeLists.txt" <<'CM'
cmake_minimum_required(VERSION 3.18)
project(consumer CXX)
find_package(gad 0.1 REQUIRED)
add_executable(consumer main.cpp)
target_link_libraries(consumer PRIVATE gad::gad)
CM
cat >"$WORK/consumer/main.cpp" <<'CPP'
#include <gad/gad.hpp>
#include <cstdio>
int main(int argc, char** argv) {
  gad::ModelOptions o;
  o.model = argv[1];
  o.precision = gad::Precision::FP32;
  gad::Detector d(o);
  auto refs = d.build_references(gad::list_images({argv[2]}), "tile");
  for (const auto& r : d.score(refs, {argv[3]})) std::printf("%.9f\n", r.score);
}
CPP
cmake -S "$WORK/consumer" -B "$WORK/consumer/build" -DCMAKE_PREFIX_PATH="$P" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$WORK/consumer/build" >/dev/null
FIRST=$(echo $IMAGES | cut -d' ' -f1)
"$WORK/consumer/build/consumer" "$MODEL" "$SRC/examples/tiles/train/good" "$FIRST" >"$WORK/cmake.txt"
head -1 "$WORK/cli.txt" | python3 -c "import sys; a=float(sys.stdin.read()); b=float(open('$WORK/cmake.txt').read()); assert abs(a-b) <= 1e-6, (a, b)" \
  || fail "find_package consumer scores differ"

# A moved prefix still finds its assets (the shipped lite heads) through the library's location.
mv "$P" "$WORK/moved"
"$WORK/moved/bin/gad" score --model "$MODEL" --heads lite --precision fp32 --ref-images "$SRC/examples/tiles/train/good" \
  --class tile "$FIRST" >/dev/null 2>"$WORK/moved.txt" || fail "moved prefix: $(tail -1 "$WORK/moved.txt")"
grep -q "moved/share/gad/heads" "$WORK/moved.txt" || fail "moved prefix did not use its own assets: $(head -1 "$WORK/moved.txt")"
echo "install test: headers, pkg-config, find_package, C and Python examples (12 scores within 1e-6), moved prefix: ok"
