#!/usr/bin/env bash
# Four instances of the demo sharing one redis-server, each with a local tier, driven over
# HTTP: concurrent cold requests for one key spread over the fleet (how many handler runs); how
# soon a purge on one instance stops the others serving the entry from their tiers; a purge of a
# tag carried by many entries (its latency, and whether any instance still serves a purged
# entry); then cold requests with Redis killed part-way (how many failed requests). Every client
# sends the same Host, as behind a load balancer. Not a test: figures for the issue notes and
# docs/architecture.md.
#
#   scripts/fleet-report.sh [REQUESTS] [ROUNDS] [TAGGED_ENTRIES]
#
# Needs redis-server and python3.
set -euo pipefail
cd "$(dirname "$0")/.."

requests=${1:-200}
rounds=${2:-3}
tagged=${3:-100000}
token=fleet-report-purge-token
source scripts/lib/processes.sh

cargo build --release --quiet --bin cache-middleware
redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no >/dev/null 2>&1 &
redis_pid=$!
pids+=("$redis_pid")
wait_port "$redis_port"

bases=(); metrics=()
for _ in 1 2 3 4; do
  port=$(free_port); metrics_port=$(free_port)
  CACHE_BACKEND=redis REDIS_URL="redis://127.0.0.1:$redis_port" HOST=127.0.0.1 PORT=$port \
    CACHE_PURGE_TOKEN=$token REDIS_LOCAL_TIER_MAX_BYTES=$((64 * 1024 * 1024)) \
    METRICS_ADDR="127.0.0.1:$metrics_port" RUST_LOG=warn target/release/cache-middleware >/dev/null 2>&1 &
  pids+=("$!")
  wait_port "$port"; wait_port "$metrics_port"
  bases+=("http://127.0.0.1:$port"); metrics+=("http://127.0.0.1:$metrics_port")
done
export FLEET_BASES="${bases[*]}" FLEET_METRICS="${metrics[*]}"

echo "== $requests concurrent cold requests for one key, over 4 instances sharing Redis"
for round in $(seq "$rounds"); do
  python3 scripts/lib/fleet.py "/expensive-operation?round=$round" "$requests" fleet.example 0 0
done
echo
echo "== invalidation across the instances' local tiers"
python3 scripts/lib/fleet.py invalidation 1000 fleet.example "$token"
echo
echo "== a purge of the tag 'items' carried by $tagged entries"
python3 scripts/lib/fleet.py purge "$tagged" fleet.example "$token"
echo
echo "== $requests concurrent cold requests, with Redis killed 20 ms after they start"
python3 scripts/lib/fleet.py "/expensive-operation?round=killed" "$requests" fleet.example "$redis_pid" 0.02
