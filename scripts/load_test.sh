#!/usr/bin/env bash
# Load test for `gad serve` (loopback only, bounded in time): starts the server with the lite
# model on a free port, registers one reference set, then runs wrk (POST one image per request)
# at 1, 4 and 16 connections and prints throughput, p50/p99 latency and the server's RSS.
#
#   scripts/load_test.sh [--seconds 10] [--minutes M] [--gad build/gad] [--model FILE] [--image FILE]
#                        [--workers N] [--threads N]
#
# --minutes M additionally runs 4 connections for M minutes and samples RSS every 30 s (the
# "RSS stays flat" check). Needs wrk (apt install wrk) and curl.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
GAD=$ROOT/build/gad
SHARED=${GAD_SHARED_DIR:-$ROOT/../shared}
MODEL=$SHARED/fixtures/lite/mobilenet_v2/model.json
IMAGES=$SHARED/data/elpv_sample/images
IMAGE=$IMAGES/cell0100.png
SECONDS_PER_LEVEL=10
MINUTES=0
WORKERS=1
THREADS=0
while [[ $# -gt 0 ]]; do
  case $1 in
    --seconds) SECONDS_PER_LEVEL=$2; shift 2 ;;
    --minutes) MINUTES=$2; shift 2 ;;
    --gad) GAD=$2; shift 2 ;;
    --model) MODEL=$2; shift 2 ;;
    --image) IMAGE=$2; shift 2 ;;
    --workers) WORKERS=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "load_test.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
command -v wrk >/dev/null || { echo "load_test.sh: wrk not found (apt install wrk)" >&2; exit 1; }
command -v curl >/dev/null || { echo "load_test.sh: curl not found" >&2; exit 1; }

WORK=$(mktemp -d)
PID=
cleanup() {
  if [[ -n $PID ]] && kill -0 "$PID" 2>/dev/null; then kill -TERM "$PID"; wait "$PID" || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

"$GAD" serve --model "$MODEL" --db "$WORK/refs.sqlite" --host 127.0.0.1 --port 0 --workers "$WORKERS" \
  --threads "$THREADS" 2>"$WORK/server.log" &
PID=$!
PORT=
for _ in $(seq 600); do
  PORT=$(sed -n 's/.*listening on http:\/\/127\.0\.0\.1:\([0-9]*\).*/\1/p' "$WORK/server.log" | head -1)
  [[ -n $PORT ]] && break
  kill -0 "$PID" 2>/dev/null || { cat "$WORK/server.log" >&2; exit 1; }
  sleep 0.1
done
[[ -n $PORT ]] || { echo "load_test.sh: server did not start" >&2; cat "$WORK/server.log" >&2; exit 1; }
URL=http://127.0.0.1:$PORT
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$PID/status"; }

ID=$(curl -sf -F class=solar_cell -F "images=@$IMAGES/cell0001.png" -F "images=@$IMAGES/cell0002.png" \
  -F "images=@$IMAGES/cell0003.png" -F "images=@$IMAGES/cell0004.png" "$URL/v1/refsets" |
  sed -n 's/.*"id":"\([0-9a-f]*\)".*/\1/p')
[[ -n $ID ]] || { echo "load_test.sh: registration failed" >&2; exit 1; }

cat >"$WORK/post.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "image/png"
local f = assert(io.open("$IMAGE", "rb"))
wrk.body = f:read("*all")
f:close()
function done(summary, latency, requests)
  local s = summary.duration / 1e6
  local bad = summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout
  io.write(string.format("RESULT requests=%d seconds=%.2f rps=%.1f p50_ms=%.2f p99_ms=%.2f max_ms=%.2f errors=%d\n",
    summary.requests, s, summary.requests / s, latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    latency.max / 1000, bad))
end
LUA

echo "gad serve load test: $(sed -n '1p' "$WORK/server.log" | sed 's/^gad: //')"
echo "image: $IMAGE; reference set: $ID (K=4); ${SECONDS_PER_LEVEL}s per level; loopback $URL"
# Warm up (first batches allocate).
wrk -t1 -c1 -d2s -s "$WORK/post.lua" "$URL/v1/refsets/$ID/score" >/dev/null
RSS0=$(rss_kb)
printf "%-12s %10s %10s %10s %10s %8s %10s\n" connections req/s p50_ms p99_ms max_ms errors rss_MB
for C in 1 4 16; do
  T=$(( C < 2 ? 1 : 2 ))
  LINE=$(wrk -t$T -c$C -d${SECONDS_PER_LEVEL}s --timeout 30s -s "$WORK/post.lua" "$URL/v1/refsets/$ID/score" | grep '^RESULT')
  get() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$LINE"; }
  printf "%-12s %10s %10s %10s %10s %8s %10.1f\n" "$C" "$(get rps)" "$(get p50_ms)" "$(get p99_ms)" "$(get max_ms)" \
    "$(get errors)" "$(echo "$(rss_kb) / 1024" | bc -l)"
done
echo "RSS after warm-up: $((RSS0 / 1024)) MB; after the levels: $(( $(rss_kb) / 1024 )) MB"

if [[ $MINUTES -gt 0 ]]; then
  echo "long run: 4 connections for $MINUTES minute(s), RSS every 30 s"
  END=$(( $(date +%s) + MINUTES * 60 ))
  FIRST=$(rss_kb)
  while [[ $(date +%s) -lt $END ]]; do
    LEFT=$(( END - $(date +%s) ))
    D=$(( LEFT < 30 ? LEFT : 30 ))
    [[ $D -lt 1 ]] && break
    LINE=$(wrk -t2 -c4 -d${D}s --timeout 30s -s "$WORK/post.lua" "$URL/v1/refsets/$ID/score" | grep '^RESULT')
    echo "  t=+$(( MINUTES * 60 - (END - $(date +%s)) ))s rss=$(( $(rss_kb) / 1024 )) MB  $LINE"
  done
  LAST=$(rss_kb)
  echo "long run RSS: start $((FIRST / 1024)) MB, end $((LAST / 1024)) MB, growth $(( (LAST - FIRST) / 1024 )) MB"
fi
kill -TERM "$PID"
wait "$PID" && echo "server stopped cleanly (SIGTERM)"
PID=
