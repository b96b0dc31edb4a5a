#!/usr/bin/env bash
# Measures the proxy under two abuses of docs/security.md: a flood of unique cacheable ~1 MB
# responses (resident memory against the memory backend's byte bound), and 1,000 half-sent requests
# (latency of normal requests without and with them, interleaved rounds, and when the server closes
# them). Not a test: figures for docs/security.md.
#
#   scripts/abuse-report.sh [FLOOD_COUNT] [ROUNDS]
#
# Needs python3; pins the proxy to core 0 and the clients and origin to core 1 (taskset).
set -euo pipefail
cd "$(dirname "$0")/.."

count=${1:-1500}
rounds=${2:-5}
bound=${MEMORY_CACHE_MAX_BYTES:-268435456}
header_timeout=${SERVER_HEADER_TIMEOUT:-10}
source scripts/lib/processes.sh

cargo build --release --quiet --bin cache-middleware
origin_port=$(free_port); proxy_port=$(free_port)
taskset -c 1 python3 scripts/lib/abuse.py origin "$origin_port" &
pids+=("$!")
wait_port "$origin_port"

start_proxy() {
  CACHE_BACKEND=memory MEMORY_CACHE_MAX_BYTES=$bound SERVER_HEADER_TIMEOUT=$header_timeout \
    METRICS_ADDR=off RUST_LOG=warn taskset -c 0 target/release/cache-middleware proxy \
    --upstream "http://127.0.0.1:$origin_port" --listen "127.0.0.1:$proxy_port" >/dev/null 2>&1 &
  proxy_pid=$!
  pids+=("$proxy_pid")
  wait_port "$proxy_port"
}

echo "== flood: $count unique ~1 MB cacheable responses; memory bound $((bound / 1048576)) MiB"
start_proxy
taskset -c 1 python3 scripts/lib/abuse.py flood "http://127.0.0.1:$proxy_port/big" "$count" "$proxy_pid"
kill "$proxy_pid"; wait "$proxy_pid" 2>/dev/null || true

echo
echo "== slow clients: 1000 half-sent requests; header timeout ${header_timeout} s; $rounds rounds of 200 hits each"
start_proxy
taskset -c 1 python3 scripts/lib/abuse.py slow "http://127.0.0.1:$proxy_port/small" "$rounds" 1000
