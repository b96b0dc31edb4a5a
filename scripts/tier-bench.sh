#!/usr/bin/env bash
# Hits through the demo on the memory backend, on Redis with the in-process tier, and on Redis
# without it, side by side: the demo pinned to core 0 with one runtime worker, wrk and
# redis-server on core 1, the three configurations taking turns round after round. Prints the
# per-round ratios (requests/s and server CPU per request, each against the memory hit) and
# writes docs/benchmarks-tier.md. Not a test. Needs wrk, redis-server, python3.
#
#   scripts/tier-bench.sh [ROUNDS] [SECONDS] [PATH]
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=${1:-6}
seconds=${2:-4}
path=${3:-/}
command -v wrk >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
cargo build --release --quiet --bin cache-middleware
source scripts/lib/processes.sh

redis_port=$(free_port)
taskset -c 1 redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no >/dev/null 2>&1 &
pids+=("$!")
wait_port "$redis_port"

declare -A port pid
start() { # NAME ENV...
  local name=$1; shift
  port[$name]=$(free_port)
  env "$@" HOST=127.0.0.1 PORT="${port[$name]}" METRICS_ADDR=off RUST_LOG=warn TOKIO_WORKER_THREADS=1 \
    taskset -c 0 target/release/cache-middleware >/dev/null 2>&1 &
  pid[$name]=$!
  pids+=("$!")
  wait_port "${port[$name]}"
}
start memory CACHE_BACKEND=memory
start redis-tier CACHE_BACKEND=redis REDIS_URL="redis://127.0.0.1:$redis_port" CACHE_NAMESPACE=tier \
  REDIS_LOCAL_TIER_MAX_BYTES=$((64 * 1024 * 1024))
start redis CACHE_BACKEND=redis REDIS_URL="redis://127.0.0.1:$redis_port" CACHE_NAMESPACE=plain \
  REDIS_LOCAL_TIER_MAX_BYTES=0
names=(memory redis-tier redis)
for name in "${names[@]}"; do
  # Stored, then read until the tier holds it (tracking starts with the first request).
  for _ in 1 2 3 4 5; do curl -s -o /dev/null "http://127.0.0.1:${port[$name]}$path"; sleep 0.05; done
done

results=$(mktemp)
tck=$(getconf CLK_TCK)
for round in $(seq "$rounds"); do
  for name in "${names[@]}"; do
    c0=$(awk '{print $14+$15}' "/proc/${pid[$name]}/stat")
    out=$(taskset -c 1 wrk -t1 -c16 -d"${seconds}s" "http://127.0.0.1:${port[$name]}$path")
    c1=$(awk '{print $14+$15}' "/proc/${pid[$name]}/stat")
    reqs=$(awk '/requests in/{print $1}' <<<"$out")
    rps=$(awk '/Requests\/sec/{print $2}' <<<"$out")
    echo -e "$name\t$round\t$rps\t$reqs\t$c0\t$c1" >>"$results"
  done
done
echo "Redis commands served: $(redis-cli -p "$redis_port" INFO commandstats | grep -E '^cmdstat_(get|mget):' | tr '\n' ' ')"

python3 - "$results" "$tck" "$rounds" "$path" <<'PY' | tee docs/benchmarks-tier.md
import statistics, sys
path, tck = sys.argv[4], float(sys.argv[2])
by = {}
for line in open(sys.argv[1]):
    name, rnd, rps, reqs, c0, c1 = line.split("\t")
    us = (float(c1) - float(c0)) / tck * 1e6 / float(reqs)
    by.setdefault(name, {})[int(rnd)] = (float(rps), us)
print(f"Hits on `{path}` through the demo, one runtime worker on core 0, wrk (16 connections) and")
print(f"redis-server on core 1, {sys.argv[3]} interleaved rounds. Written by `scripts/tier-bench.sh`.\n")
print("| round | memory req/s | Redis + tier req/s | Redis req/s | tier / memory req/s | Redis / memory req/s | tier / memory CPU per request |")
print("|---|---|---|---|---|---|---|")
ratios, plain, cpu = [], [], []
for rnd in sorted(by["memory"]):
    m, t, r = by["memory"][rnd], by["redis-tier"][rnd], by["redis"][rnd]
    ratios.append(t[0] / m[0]); plain.append(r[0] / m[0]); cpu.append(t[1] / m[1])
    print(f"| {rnd} | {m[0]:,.0f} | {t[0]:,.0f} | {r[0]:,.0f} | {ratios[-1]:.2f} | {plain[-1]:.2f} | {cpu[-1]:.2f} |")
print(f"\n- Redis + tier / memory, requests/s per round: median {statistics.median(ratios):.2f}, range {min(ratios):.2f}-{max(ratios):.2f} (target at least 0.90)")
print(f"- Redis without the tier / memory: median {statistics.median(plain):.2f}, range {min(plain):.2f}-{max(plain):.2f}")
print(f"- Redis + tier / memory, server CPU per request: median {statistics.median(cpu):.2f}, range {min(cpu):.2f}-{max(cpu):.2f}")
PY
rm -f "$results"
