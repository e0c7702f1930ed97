#!/usr/bin/env bash
# Coverage-guided fuzzing of every parser that reads untrusted bytes (fuzz/*.cpp, libFuzzer with
# ASan + UBSan). Builds build-fuzz/ if needed, then runs each target for SECONDS from its
# committed seeds (fuzz/corpus/<target>/, read only: new inputs go to a temporary folder).
# Prints libFuzzer's "Done N runs" line per target; exits non-zero when any target finds a crash,
# sanitizer report, uncaught non-gad exception, leak, hang (-timeout) or allocation past its cap
# (-rss_limit_mb), leaving the reproducer in fuzz/findings/.
#
#   scripts/fuzz.sh SECONDS [TARGET...]          e.g. scripts/fuzz.sh 10, scripts/fuzz.sh 600 image
#   GAD_FUZZ_ARGS="-runs=1000000" scripts/fuzz.sh 1800 lists   (extra libFuzzer flags)
# Reproduce a finding: build-fuzz/fuzz_<target> fuzz/findings/<target>-crash-...
set -euo pipefail
cd "$(dirname "$0")/.."
# The tokenizer target reads the BPE vocabulary from the source tree's assets (there is no install).
export GAD_ASSET_DIR="$PWD/assets"

seconds=${1:?usage: scripts/fuzz.sh SECONDS [TARGET...]}
shift
build="build-fuzz"
cxx=${GAD_FUZZ_CXX:-clang++-14}

# target  max_len  rss_limit_mb  timeout_s  dictionary   (torch-linked targets start at ~350 MB;
# class names are at most 200 bytes in requests, and long inputs only slow the BPE down)
limits="safetensors   4096  1024  5   json
torch_archive 8192  2048  10  pickle
tfjs_model    16384 2048  10  json
image         65536 1536  10  -
serve_request 16384 1536  10  json
gadref        4096  2048  10  json
tokenizer     512   1024  5   -
lists         4096  1024  5   json"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if [ ! -f "$build/build.ninja" ]; then
  cmake -S fuzz -B "$build" -G Ninja -DCMAKE_CXX_COMPILER="$cxx" >"$work/configure.log" 2>&1 ||
    { cat "$work/configure.log"; exit 1; }
fi
cmake --build "$build" >"$work/build.log" 2>&1 || { tail -50 "$work/build.log"; exit 1; }

mkdir -p fuzz/findings
failed=()
while read -r target max_len rss timeout dict; do
  if [ $# -gt 0 ] && [[ " $* " != *" $target "* ]]; then continue; fi
  mkdir -p "$work/$target"
  log="$work/$target.log"
  dict_flag=()
  if [ "$dict" != - ]; then dict_flag=(-dict="fuzz/$dict.dict"); fi
  # shellcheck disable=SC2086 # GAD_FUZZ_ARGS is a list of flags
  if "$build/fuzz_$target" -max_total_time="$seconds" -max_len="$max_len" -rss_limit_mb="$rss" \
      -timeout="$timeout" -print_final_stats=1 -artifact_prefix="fuzz/findings/$target-" "${dict_flag[@]}" \
      ${GAD_FUZZ_ARGS:-} "$work/$target" "fuzz/corpus/$target" >"$log" 2>&1; then
    done_line=$(grep -E '^Done [0-9]+ runs' "$log" | tail -1)
    cov=$(grep -E '^#[0-9]+' "$log" | tail -1 | grep -oE 'cov: [0-9]+ ft: [0-9]+' || true)
    printf '%-14s %s (%s)\n' "$target" "$done_line" "$cov"
  else
    printf '%-14s FINDING (exit %s):\n' "$target" "$?"
    grep -E 'ERROR|SUMMARY|terminate|what\(\)|Test unit written|runtime error' "$log" | head -20 | sed 's/^/    /'
    failed+=("$target")
  fi
done <<<"$limits"

if [ ${#failed[@]} -gt 0 ]; then
  echo "findings in: ${failed[*]} (reproducers in fuzz/findings/)"
  exit 1
fi
