#!/usr/bin/env bash
# The Python package as pip users get it: a wheel built from a clean copy of the tree (offline,
# Debian's setuptools, `pip wheel --no-build-isolation`), installed into a fresh virtual
# environment; the Python tests, the example and `python -m gad` run against the installed
# package only (no build tree or source tree on any path); mypy --strict on the typed example;
# `pip uninstall gad` leaves the environment as it found it. Scores must equal `gad score`'s to
# 1e-6 (the same code path; the bound only absorbs printing).
set -euo pipefail
BUILD=$(cd "$1" && pwd)
SRC=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${GAD_SHARED_DIR:-$SRC/../shared}
MODEL=$SHARED/fixtures/lite/mobilenet_v2/model.json
PY=${PYTHON:-/usr/bin/python3}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
fail() { echo "wheel test: $*" >&2; exit 1; }
export PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
unset PYTHONPATH

# A clean copy: the files git tracks or would add (no build tree, nothing ignored).
COPY=$WORK/src
mkdir -p "$COPY"
if git -C "$SRC" rev-parse --git-dir >/dev/null 2>&1; then
  (cd "$SRC" && git ls-files -z --cached --others --exclude-standard | xargs -0 -I{} sh -c '[ -e "{}" ] && cp --parents -P "{}" "'"$COPY"'" || true')
else
  (cd "$SRC" && tar --exclude='./build*' -cf - .) | (cd "$COPY" && tar xf -)
fi
[ -f "$COPY/pyproject.toml" ] && [ ! -e "$COPY/build" ] || fail "the clean copy is not clean"

# Build the wheel. Compiler caching (ccache) applies as in any build; CCACHE_BASEDIR lets a copy
# share the objects of a build of the same tree configured with the same base.
"$PY" -m venv --system-site-packages "$WORK/build-env"
CCACHE_BASEDIR=$COPY "$WORK/build-env/bin/pip" wheel --no-build-isolation --no-deps -w "$WORK/dist" "$COPY" \
  >"$WORK/wheel.log" 2>&1 || { tail -20 "$WORK/wheel.log"; fail "pip wheel failed"; }
WHEEL=$(ls "$WORK"/dist/gad-*.whl)
"$PY" - "$WHEEL" <<'PY' || fail "the wheel lacks a part"
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
need = ["gad/__init__.py", "gad/__main__.py", "gad/py.typed", "gad/_gad.pyi", "gad/lib/libgad.so.0", "gad/bin/gad",
        "gad/share/gad/bpe_simple_vocab_16e6.txt.gz"]
missing = [n for n in need if n not in names] + ([] if any(n.startswith("gad/_gad.") and n.endswith(".so") for n in names) else ["gad/_gad*.so"])
assert not missing, missing
assert not any(n.startswith(("tests/", "build/", "src/")) for n in names), "sources or build files in the wheel"
PY

# Install into a fresh environment and remember what it held.
VENV=$WORK/venv
"$PY" -m venv --system-site-packages "$VENV"
"$VENV/bin/pip" --version >/dev/null
( cd "$VENV" && find . -path '*/__pycache__' -prune -o -print | sort ) >"$WORK/before.txt"
"$VENV/bin/pip" install "$WHEEL" >"$WORK/install.log" 2>&1 || { tail -5 "$WORK/install.log"; fail "pip install failed"; }
SITE=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["platlib"])')

# Everything below runs from an empty directory, with no source or build tree on any path.
RUN=$WORK/run
mkdir -p "$RUN"
cd "$RUN"
"$VENV/bin/python" -c 'import gad, sys; assert gad.__file__.startswith(sys.argv[1]), gad.__file__' "$SITE/gad" \
  || fail "gad is not imported from the installed package"
# (ldd's list goes to a file first: `grep -q` on a pipe would cut ldd off, and pipefail would fail it)
ldd "$SITE"/gad/_gad*.so >"$WORK/ldd.txt"
grep -q "$SITE/gad/lib/libgad.so.0" "$WORK/ldd.txt" || fail "the module does not load the package's libgad: $(grep libgad "$WORK/ldd.txt")"
[ "$("$VENV/bin/python" -m gad --version)" = "$("$BUILD/gad" --version)" ] || fail "python -m gad --version differs from gad's"
[ "$("$VENV/bin/gad" --version)" = "$("$BUILD/gad" --version)" ] || fail "the gad script differs from gad"
"$VENV/bin/python" -m gad refs show /nonexistent.gadref >/dev/null 2>"$WORK/err.txt" && fail "python -m gad: a missing set was accepted"
grep -q /nonexistent.gadref "$WORK/err.txt" || fail "python -m gad: the error does not name the set"

# The Python tests, against the installed package; `gad score` here is the installed script.
GAD_SHARED_DIR=$SHARED GAD_CLI=$VENV/bin/gad GAD_EXPECT_PACKAGE=$SITE/gad \
  "$VENV/bin/python" -m pytest -q -p no:cacheprovider --rootdir "$RUN" "$COPY/python/tests" >"$WORK/pytest.log" 2>&1 \
  || { tail -30 "$WORK/pytest.log"; fail "the Python tests failed against the installed package"; }

# The example against the build tree's `gad score`.
IMAGES=$(ls "$COPY"/examples/tiles/test/*/*.png)
"$BUILD/gad" score --model "$MODEL" --precision fp32 --ref-images "$COPY/examples/tiles/train/good" --class tile $IMAGES \
  2>/dev/null | "$PY" -c 'import json,sys; [print(json.loads(l)["score"]) for l in sys.stdin]' >"$WORK/cli.txt"
GAD_MODEL=$MODEL "$VENV/bin/python" "$COPY/examples/python/score.py" "$COPY/examples/tiles/train/good" tile $IMAGES >"$WORK/py.txt"
"$PY" - "$WORK/cli.txt" "$WORK/py.txt" <<'PY' || fail "the example's scores differ from gad score"
import sys
a = [float(x) for x in open(sys.argv[1])]
b = [float(x) for x in open(sys.argv[2])]
assert len(a) == len(b) == 12, (len(a), len(b))
worst = max(abs(x - y) for x, y in zip(a, b))
assert worst <= 1e-6, worst
PY

# The stubs: they match the compiled module (stubtest), the package and the example type-check
# under --strict, and a misuse is caught.
"$VENV/bin/python" -m mypy.stubtest --allowlist "$COPY/python/stubtest-allowlist.txt" gad._gad >"$WORK/stubtest.txt" 2>&1 \
  || { cat "$WORK/stubtest.txt"; fail "the stubs differ from the compiled module"; }
"$VENV/bin/python" -m mypy --strict --no-incremental --cache-dir=/dev/null -p gad >"$WORK/mypy.txt" 2>&1 \
  || { cat "$WORK/mypy.txt"; fail "mypy rejects the package"; }
"$VENV/bin/python" -m mypy --strict --no-incremental --cache-dir=/dev/null "$COPY/examples/python/score.py" >"$WORK/mypy.txt" 2>&1 \
  || { cat "$WORK/mypy.txt"; fail "mypy rejects the example"; }
printf 'import gad\nd = gad.Detector(precision=32)\nr: str = d.score(d.build_references(["a"]), ["b"])\n' >"$RUN/misuse.py"
if "$VENV/bin/python" -m mypy --no-incremental --cache-dir=/dev/null "$RUN/misuse.py" >"$WORK/mypy2.txt" 2>&1; then
  fail "mypy accepts a misuse: the stubs do not type the module"
fi
grep -q 'precision' "$WORK/mypy2.txt" || { cat "$WORK/mypy2.txt"; fail "mypy does not name the wrong argument"; }

# Uninstall leaves nothing behind.
"$VENV/bin/pip" uninstall -y gad >/dev/null
( cd "$VENV" && find . -path '*/__pycache__' -prune -o -print | sort ) >"$WORK/after.txt"
diff "$WORK/before.txt" "$WORK/after.txt" >"$WORK/left.txt" || { cat "$WORK/left.txt"; fail "pip uninstall left files behind"; }
[ ! -e "$SITE/gad" ] || fail "pip uninstall left $SITE/gad"
echo "wheel test: $(basename "$WHEEL") built offline, installed, Python tests + example (12 scores within 1e-6) + mypy --strict on the installed package, uninstalled cleanly: ok"
