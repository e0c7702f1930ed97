#!/usr/bin/env bash
# Load test for `gad serve` (loopback only, bounded in time): starts the server with the lite
# model on a free port, registers one reference set, then runs wrk (POST one image per request)
# at 1, 4 and 16 connections and prints throughput, p50/p99 latency and the server's RSS.
#
#   scripts/load_test.sh [--seconds 10] [--soak-minutes M] [--gad build/gad] [--model FILE]
#                        [--image FILE] [--workers N] [--threads N] [--cache-mb MB] [--batch N]
#
# --soak-minutes M (alias --minutes) then runs a soak: 4 connections for M minutes mixing scores
# (against the first set and against sets registered during the soak), registrations (K = 2,
# multipart) and deletes, 8:1:1 once ~80 sets are live; prints the server's RSS every 30 s, then req/s, p50/p99 and RSS
# at start and end (the "RSS stays flat" check; --cache-mb defaults to 8 so the cache evicts).
# Needs wrk (apt install wrk) and curl.
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
CACHE_MB=8
BATCH=8
while [[ $# -gt 0 ]]; do
  case $1 in
    --seconds) SECONDS_PER_LEVEL=$2; shift 2 ;;
    --minutes|--soak-minutes) MINUTES=$2; shift 2 ;;
    --cache-mb) CACHE_MB=$2; shift 2 ;;
    --gad) GAD=$2; shift 2 ;;
    --model) MODEL=$2; shift 2 ;;
    --image) IMAGE=$2; shift 2 ;;
    --workers) WORKERS=$2; shift 2 ;;
    --batch) BATCH=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
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
  --threads "$THREADS" --cache-mb "$CACHE_MB" --batch "$BATCH" 2>"$WORK/server.log" &
PID=$!
PORT=
for _ in $(seq 600); do
  PORT=$(sed -n 's/.*listening on http:\/\/127\.0\.0\.1:\([0-9]*\).*/\1/p' "$WORK/server.log" | head -1)
  [[ -n $PORT ]] && grep -q '^gad: ready' "$WORK/server.log" && break  # bound, then model loaded
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
  cat >"$WORK/soak.lua" <<LUA
-- Per wrk thread: 8 of 10 requests score (half against the first set, half against a random one
-- of the sets this thread registered), 1 registers a K = 2 set, 1 deletes this thread's oldest set
-- once it holds 40 (so ~80 sets live, more than an 8 MB cache holds: scores evict and reload).
-- A score never targets the two oldest sets, which the next deletes may remove meanwhile.
local function slurp(path)
  local f = assert(io.open(path, "rb"))
  local data = f:read("*all")
  f:close()
  return data
end
local image = slurp("$IMAGE")
local boundary = "gadsoakboundary"
local function part(name, value, filename)
  local disposition = 'form-data; name="' .. name .. '"' .. (filename and ('; filename="' .. filename .. '"') or "")
  return "--" .. boundary .. "\r\nContent-Disposition: " .. disposition .. "\r\n\r\n" .. value .. "\r\n"
end
local register_body = part("class", "solar_cell") .. part("images", slurp("$IMAGES/cell0005.png"), "a.png") ..
  part("images", slurp("$IMAGES/cell0006.png"), "b.png") .. "--" .. boundary .. "--\r\n"
local first, mine, n = "$ID", {}, 0
function request()
  n = n + 1
  local turn = n % 10
  if turn == 3 then
    return wrk.format("POST", "/v1/refsets", {["Content-Type"] = "multipart/form-data; boundary=" .. boundary},
      register_body)
  elseif turn == 8 and #mine > 40 then
    return wrk.format("DELETE", "/v1/refsets/" .. table.remove(mine, 1))
  end
  local target = (turn % 2 == 0 and #mine > 2) and mine[math.random(3, #mine)] or first
  return wrk.format("POST", "/v1/refsets/" .. target .. "/score", {["Content-Type"] = "image/png"}, image)
end
function response(status, headers, body)
  if status == 201 then
    local id = body:match('"id":"(%x+)"')
    if id then table.insert(mine, id) end
  end
end
function done(summary, latency, requests)
  local s = summary.duration / 1e6
  local bad = summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write +
    summary.errors.timeout
  io.write(string.format("RESULT requests=%d seconds=%.2f rps=%.1f p50_ms=%.2f p99_ms=%.2f max_ms=%.2f errors=%d\n",
    summary.requests, s, summary.requests / s, latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    latency.max / 1000, bad))
end
LUA
  metric() { curl -sf "$URL/metrics" | sed -n "s/^$1 //p"; }
  echo "soak: 4 connections for $MINUTES minute(s), scores/registrations/deletes 8:1:1, --cache-mb $CACHE_MB"
  START_RSS=$(rss_kb)
  wrk -t2 -c4 -d$((MINUTES * 60))s --timeout 30s -s "$WORK/soak.lua" "$URL" >"$WORK/soak.out" &
  WRK=$!
  T0=$(date +%s)
  NEXT=30
  while kill -0 "$WRK" 2>/dev/null; do
    sleep 1
    T=$(( $(date +%s) - T0 ))
    if (( T >= NEXT )) && kill -0 "$WRK" 2>/dev/null; then
      NEXT=$(( NEXT + 30 ))
      echo "  t=+${T}s rss=$(( $(rss_kb) / 1024 )) MB, sets stored $(metric gad_refsets)," \
        "cached $(metric gad_cache_entries) ($(metric gad_cache_bytes) B), evictions $(metric gad_cache_evictions_total)"
    fi
  done
  wait "$WRK"
  END_RSS=$(rss_kb)
  grep '^RESULT' "$WORK/soak.out" | sed 's/^RESULT/soak:/'
  echo "soak RSS: start $((START_RSS / 1024)) MB, end $((END_RSS / 1024)) MB, growth $(( (END_RSS - START_RSS) / 1024 )) MB"
  curl -sf "$URL/metrics" | grep -E '^gad_(rejected_requests_total|requests_total.*code="[45])' || true
fi
kill -TERM "$PID"
wait "$PID" && echo "server stopped cleanly (SIGTERM)"
PID=
