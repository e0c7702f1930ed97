#!/usr/bin/env python3
"""station_bench.py — throughput and latency of `gad watch` from a file closed in the hot folder to
its result received by an MQTT subscriber, with a real mosquitto broker on a free loopback port.

    python3 scripts/station_bench.py --model MODEL --refs SET.gadref [--lines 1|2] [--images 200] [--rate 0]

--rate 0 drops every image at once (a burst: throughput); --rate R drops R images/s per line
(latency at that load). Needs the mosquitto broker and mosquitto_sub (mosquitto-clients).
Prints images/s and p50/p99 latency per run; the outbox's own cost per result is in
`gad watch --metrics-port` (gad_watch_store_seconds).
"""
import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, seconds=10):
    end = time.time() + seconds
    while time.time() < end:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    sys.exit(f"station_bench: the broker did not start on port {port}")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--gad", default=os.path.join(ROOT, "build", "gad"))
    p.add_argument("--model", required=True)
    p.add_argument("--refs", required=True)
    p.add_argument("--image", default=os.path.join(ROOT, "examples", "tiles", "test", "defect", "000_scratch.png"))
    p.add_argument("--lines", type=int, default=1)
    p.add_argument("--images", type=int, default=200, help="per line")
    p.add_argument("--rate", type=float, default=0, help="images/s per line; 0 = all at once")
    p.add_argument("--extra", default="--precision fp32", help="more gad watch options")
    a = p.parse_args()
    work = tempfile.mkdtemp(prefix="station-bench-")
    port = free_port()
    procs = []
    try:
        with open(os.path.join(work, "mosquitto.conf"), "w") as f:
            f.write(f"listener {port} 127.0.0.1\nallow_anonymous true\n")
        procs.append(subprocess.Popen(["mosquitto", "-c", os.path.join(work, "mosquitto.conf")],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_port(port)
        received = os.path.join(work, "received.txt")
        sub = subprocess.Popen(["mosquitto_sub", "-p", str(port), "-q", "1", "-t", "bench/+", "-F", "%U %p"],
                               stdout=open(received, "w"))
        procs.append(sub)
        lines = []
        for i in range(a.lines):
            folder = os.path.join(work, f"in{i}")
            os.makedirs(folder)
            lines.append({"name": f"l{i}", "source": folder, "refs": a.refs,
                          "mqtt": f"mqtt://127.0.0.1:{port}/bench/l{i}", "log_every": 0})
        with open(os.path.join(work, "station.json"), "w") as f:
            json.dump({"outbox": os.path.join(work, "station.outbox"), "lines": lines}, f)
        log = open(os.path.join(work, "watch.log"), "w")
        metrics_port = free_port()
        gad = subprocess.Popen([a.gad, "watch", "--model", a.model, *a.extra.split(), "--metrics-port", str(metrics_port),
                                "--station", os.path.join(work, "station.json")], stderr=log)
        procs.append(gad)
        end = time.time() + 120
        while sum(open(log.name).read().count(f"line l{i}: watching") for i in range(a.lines)) < a.lines:
            if time.time() > end or gad.poll() is not None:
                sys.exit("station_bench: gad watch did not start: " + open(log.name).read())
            time.sleep(0.1)
        time.sleep(1)
        closed = {}
        staging = os.path.join(work, "staging.png")
        t0 = time.time()
        for n in range(a.images):
            for i in range(a.lines):
                shutil.copyfile(a.image, staging)
                path = os.path.join(work, f"in{i}", f"img{n:05d}.png")
                os.rename(staging, path)  # complete at once, as a camera PC's writer should do
                closed[path] = time.time()
            if a.rate > 0:
                time.sleep(max(0.0, t0 + (n + 1) / a.rate - time.time()))
        total = a.images * a.lines
        end = time.time() + 600
        got = {}
        while len(got) < total and time.time() < end:
            time.sleep(0.2)
            for row in open(received):
                stamp, _, body = row.partition(" ")
                try:
                    r = json.loads(body)
                except ValueError:
                    continue
                got.setdefault(r["path"], float(stamp))
        if len(got) < total:
            sys.exit(f"station_bench: only {len(got)} of {total} results arrived")
        lat = sorted((got[p] - closed[p]) * 1000 for p in closed)
        first, last = min(closed.values()), max(got.values())
        pct = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics").read().decode()
        sums = {k: 0.0 for k in ("store_sum", "store_count", "score_sum")}
        for row in metrics.splitlines():
            for key, name in (("store_sum", "gad_watch_store_seconds_sum"), ("store_count", "gad_watch_store_seconds_count"),
                              ("score_sum", "gad_watch_score_seconds_sum")):
                if row.startswith(name + "{"):
                    sums[key] += float(row.split()[-1])
        n = max(sums["store_count"], 1)
        print(f"lines {a.lines}, images {total}, rate {a.rate or 'burst'}: {total / (last - first):.1f} images/s, "
              f"latency p50 {pct(0.5):.0f} ms, p99 {pct(0.99):.0f} ms (file renamed in -> MQTT message received); "
              f"per image: scoring {1000 * sums['score_sum'] / n:.1f} ms, outbox store {1000 * sums['store_sum'] / n:.2f} ms")
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
