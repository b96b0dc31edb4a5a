#!/usr/bin/env bash
# The Python package beside fastapi-cache2 0.2.2 (the most used FastAPI cache), on hits: the same
# FastAPI route (a 5 ms handler, cached 300 s) behind each, on memory and on Redis, plus a bare
# ASGI callable answering the same bytes on the same uvicorn (the floor), and FastAPI with one
# middleware that answers at once (the floor of any FastAPI middleware). uvicorn runs one worker
# pinned to core 0, wrk runs on core 1; the configurations take turns, round after round, and the
# server's CPU per request is read from /proc. Prints per-round figures and the ratios, and writes
# docs/benchmarks-python.md. Not a test. Needs wrk, redis-server, python3 (installs wrk).
#
#   scripts/python-bench.sh [ROUNDS] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=${1:-3}
seconds=${2:-8}
command -v wrk >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
command -v redis-server >/dev/null 2>&1 || { echo "error: redis-server is needed" >&2; exit 1; }

venv=target/python-bench-venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
# fastapi-cache2 only here: the benchmark's environment, never the package's.
# (It imports starlette.templating, which needs jinja2.)
"$venv/bin/python" -m pip install --quiet ./python "uvicorn[standard]" "fastapi-cache2[redis]==0.2.2" jinja2

pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { # PORT [PID]: fails if the process is gone before it listens
  until python3 -c "import socket; socket.create_connection(('127.0.0.1', $1), 0.2)" 2>/dev/null; do
    if [ -n "${2:-}" ] && ! kill -0 "$2" 2>/dev/null; then echo "error: the server on port $1 exited" >&2; exit 1; fi
    sleep 0.05
  done
}

redis_port=$(free_port)
taskset -c 1 redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no >/dev/null 2>&1 &
pids+=("$!")
wait_port "$redis_port"

results=$(mktemp)
tck=$(getconf CLK_TCK)
measure() { # APP ROUND
  local which=$1 round=$2 port pid out c0 c1 reqs rps p50 p99
  port=$(free_port)
  (cd scripts/lib && exec env BENCH_APP="$which" REDIS_URL="redis://127.0.0.1:$redis_port" taskset -c 0 \
    "../../$venv/bin/python" -m uvicorn python_bench_apps:app --port "$port" --workers 1 --no-access-log --log-level warning) &
  pid=$!
  wait_port "$port" "$pid"
  for _ in 1 2 3; do curl -s -o /dev/null "http://127.0.0.1:$port/expensive"; done
  # uvicorn with one worker is one process: its CPU is the server's.
  c0=$(awk '{print $14+$15}' "/proc/$pid/stat")
  out=$(taskset -c 1 wrk -t1 -c16 -d"${seconds}s" --latency "http://127.0.0.1:$port/expensive")
  c1=$(awk '{print $14+$15}' "/proc/$pid/stat")
  kill "$pid"; wait "$pid" 2>/dev/null || true
  reqs=$(awk '/requests in/{print $1}' <<<"$out")
  rps=$(awk '/Requests\/sec/{print $2}' <<<"$out")
  p50=$(awk '$1=="50%"{print $2}' <<<"$out")
  p99=$(awk '$1=="99%"{print $2}' <<<"$out")
  python3 - "$which" "$round" "$reqs" "$rps" "$p50" "$p99" "$c0" "$c1" "$tck" >>"$results" <<'PY'
import sys
which, rnd, reqs, rps, p50, p99, c0, c1, tck = sys.argv[1:]
us = (float(c1) - float(c0)) / float(tck) * 1e6 / float(reqs)
print(f"{which}\t{rnd}\t{float(rps):.0f}\t{p50}\t{p99}\t{us:.1f}")
PY
  tail -1 "$results"
}

apps=(bare fastapi-floor ours-memory fc2-memory ours-redis ours-redis-no-tier fc2-redis)
for round in $(seq "$rounds"); do
  for which in "${apps[@]}"; do measure "$which" "$round"; done
done

python3 - "$results" <<'PY' | tee docs/benchmarks-python.md
import statistics, sys
rows = [line.rstrip("\n").split("\t") for line in open(sys.argv[1])]
by = {}
for which, rnd, rps, p50, p99, us in rows:
    by.setdefault(which, []).append((int(rnd), float(rps), p50, p99, float(us)))
print("Hits on one uvicorn worker (core 0), wrk on core 1, 16 connections; the route's handler costs")
print(f"5 ms; {len(by['bare'])} interleaved rounds. Written by `scripts/python-bench.sh`.\n")
print("| configuration | requests/s (median) | p50 | p99 | server CPU µs/request (median) |")
print("|---|---|---|---|---|")
for which in ("bare", "fastapi-floor", "ours-memory", "fc2-memory", "ours-redis", "ours-redis-no-tier", "fc2-redis"):
    runs = by[which]
    mid = sorted(runs, key=lambda r: r[4])[len(runs) // 2]
    print(f"| {which} | {statistics.median(r[1] for r in runs):,.0f} | {mid[2]} | {mid[3]} | {statistics.median(r[4] for r in runs):.1f} |")
def ratios(a, b):
    return [x[4] / y[4] for x, y in zip(sorted(by[a]), sorted(by[b]))]
print("\nPer-round ratios of server CPU per request:\n")
for a, b, target in (("ours-memory", "fc2-memory", "at most 0.33"), ("ours-redis", "fc2-redis", "at most 0.33"), ("ours-redis-no-tier", "fc2-redis", "context: the local tier off, every hit a round trip"), ("ours-memory", "bare", "at most 1.3"), ("fastapi-floor", "bare", "context"), ("ours-memory", "fastapi-floor", "context")):
    r = ratios(a, b)
    print(f"- {a} / {b}: " + ", ".join(f"{x:.2f}" for x in r) + f" (range {min(r):.2f}-{max(r):.2f}; target {target})")
print("\nEvery run:\n")
print("| configuration | round | requests/s | p50 | p99 | server CPU µs/request |")
print("|---|---|---|---|---|---|")
for which, rnd, rps, p50, p99, us in rows:
    print(f"| {which} | {rnd} | {int(float(rps)):,} | {p50} | {p99} | {us} |")
PY
