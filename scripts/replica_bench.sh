#!/usr/bin/env bash
# Replicas behind nginx (loopback only, bounded in time): a throw-away PostgreSQL, `gad serve`
# replicas on it and nginx running deploy/nginx.conf in front; wrk posts one image per request
# through nginx with one replica (both upstream entries pointing at it) and with two, then prints
# req/s and p50/p99. On a small machine the replicas share the same cores: say so with the numbers.
#
#   scripts/replica_bench.sh [--seconds 10] [--connections 4] [--threads-per-replica N]
# Needs postgresql, nginx-light and wrk (scripts/deps-apt.txt).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
GAD=$ROOT/build/gad
SHARED=${GAD_SHARED_DIR:-$ROOT/../shared}
MODEL=$SHARED/fixtures/lite/mobilenet_v2/model.json
IMAGES=$SHARED/data/elpv_sample/images
SECS=10 CONNS=4 TPR=1
while [[ $# -gt 0 ]]; do
  case $1 in
    --seconds) SECS=$2; shift 2 ;;
    --connections) CONNS=$2; shift 2 ;;
    --threads-per-replica) TPR=$2; shift 2 ;;
    *) echo "replica_bench.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
WORK=$(mktemp -d)
chmod 755 "$WORK"
AS=()
if [[ $(id -u) -eq 0 ]]; then chown postgres "$WORK"; AS=(runuser -u postgres --); fi  # initdb refuses root
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  "${AS[@]}" "$PGBIN/pg_ctl" -D "$WORK/pg" -m fast -w stop >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PGPORT=$(free_port) A=$(free_port) B=$(free_port) LB=$(free_port)
"${AS[@]}" "$PGBIN/initdb" -D "$WORK/pg" -U gad --auth=trust --no-sync >/dev/null
"${AS[@]}" "$PGBIN/pg_ctl" -D "$WORK/pg" -l "$WORK/pg.log" -w -o "-c listen_addresses=127.0.0.1 -p $PGPORT -k $WORK" start >/dev/null
"$PGBIN/psql" -X -q -h 127.0.0.1 -p "$PGPORT" -U gad -d postgres -c "CREATE DATABASE gad"
DB=postgresql://gad@127.0.0.1:$PGPORT/gad

start_replica() {  # port
  "$GAD" serve --model "$MODEL" --db "$DB" --port "$1" --threads "$TPR" --precision fp32 2>"$WORK/gad-$1.log" &
  PIDS+=($!)
  for _ in $(seq 600); do grep -q '^gad: ready' "$WORK/gad-$1.log" && return; sleep 0.1; done
  cat "$WORK/gad-$1.log" >&2; exit 1
}
start_nginx() {  # upstream ports a b
  sed -e "s/127.0.0.1:8080/127.0.0.1:$LB/" -e "s/127.0.0.1:8081/127.0.0.1:$1/" -e "s/127.0.0.1:8082/127.0.0.1:$2/" \
    "$ROOT/deploy/nginx.conf" >"$WORK/gad.conf"
  cat >"$WORK/nginx.conf" <<CONF
worker_processes 1; pid $WORK/nginx.pid; error_log $WORK/nginx.err;
events { worker_connections 256; }
http { access_log off; client_body_temp_path $WORK/body; proxy_temp_path $WORK/proxy; fastcgi_temp_path $WORK/fcgi;
  uwsgi_temp_path $WORK/uwsgi; scgi_temp_path $WORK/scgi; include $WORK/gad.conf; }
CONF
  /usr/sbin/nginx -p "$WORK" -e "$WORK/nginx.err" -c "$WORK/nginx.conf" -g "daemon off;" &
  NGINX=$!
  PIDS+=($NGINX)
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$LB/healthz" >/dev/null && return; sleep 0.1; done
  exit 1
}
cat >"$WORK/post.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "image/png"
local f = assert(io.open("$IMAGES/cell0100.png", "rb"))
wrk.body = f:read("*all")
f:close()
function done(summary, latency, requests)
  local bad = summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout
  io.write(string.format("req/s %.1f  p50 %.1f ms  p99 %.1f ms  errors %d\n", summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, bad))
end
LUA
run() {  # label
  wrk -t1 -c1 -d2s -s "$WORK/post.lua" "http://127.0.0.1:$LB/v1/refsets/$ID/score" >/dev/null  # warm-up
  echo "$1: $(wrk -t2 -c"$CONNS" -d"${SECS}s" --timeout 30s -s "$WORK/post.lua" "http://127.0.0.1:$LB/v1/refsets/$ID/score" | tail -1)"
}
echo "replicas behind nginx on $(nproc) cores (the replicas share them), $CONNS connections, --threads $TPR per replica"
start_replica "$A"
start_nginx "$A" "$A"
ID=$(curl -sf -F class=cell -F "images=@$IMAGES/cell0001.png" -F "images=@$IMAGES/cell0002.png" \
  -F "images=@$IMAGES/cell0003.png" -F "images=@$IMAGES/cell0004.png" "http://127.0.0.1:$LB/v1/refsets" |
  sed -n 's/.*"id":"\([0-9a-f]*\)".*/\1/p')
run "1 replica "
kill -TERM "$NGINX"; wait "$NGINX" 2>/dev/null || true
start_replica "$B"
start_nginx "$A" "$B"
run "2 replicas"
