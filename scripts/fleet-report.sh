#!/usr/bin/env bash
# Four instances of the demo sharing one redis-server, each with a local tier, driven over
# HTTP: concurrent cold requests for one key spread over the fleet (how many handler runs); how
# soon a purge on one instance stops the others serving the entry from their tiers; a purge of a
# tag carried by many entries (its latency, and whether any instance still serves a purged
# entry); then cold requests with Redis killed part-way (how many failed requests). Every client
# sends the same Host, as behind a load balancer. Not a test: figures for the issue notes and
# docs/architecture.md.
#
# Last, steady load on a hot key with a 2 s lifetime (`/clock`) for HOT_SECONDS, on this fleet
# and on a second one with CACHE_EARLY_REFRESH: handler runs, their spacing, and whether any
# request waited on one.
#
#   scripts/fleet-report.sh [REQUESTS] [ROUNDS] [TAGGED_ENTRIES] [HOT_SECONDS]
#
# Needs redis-server and python3.
set -euo pipefail
cd "$(dirname "$0")/.."

requests=${1:-200}
rounds=${2:-3}
tagged=${3:-100000}
hot_seconds=${4:-60}
token=fleet-report-purge-token
source scripts/lib/processes.sh

cargo build --release --quiet --bin cache-middleware
redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no >/dev/null 2>&1 &
redis_pid=$!
pids+=("$redis_pid")
wait_port "$redis_port"

start_fleet() { # ENV...: four demo instances; sets bases and metrics
  bases=(); metrics=()
  for _ in 1 2 3 4; do
    port=$(free_port); metrics_port=$(free_port)
    env "$@" CACHE_BACKEND=redis REDIS_URL="redis://127.0.0.1:$redis_port" HOST=127.0.0.1 PORT=$port \
      CACHE_PURGE_TOKEN=$token REDIS_LOCAL_TIER_MAX_BYTES=$((64 * 1024 * 1024)) \
      METRICS_ADDR="127.0.0.1:$metrics_port" RUST_LOG=warn target/release/cache-middleware >/dev/null 2>&1 &
    pids+=("$!")
    wait_port "$port"; wait_port "$metrics_port"
    bases+=("http://127.0.0.1:$port"); metrics+=("http://127.0.0.1:$metrics_port")
  done
}
start_fleet CACHE_NAMESPACE=fleet
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
echo "== steady load on a hot key with a 2 s lifetime, $hot_seconds s, without and with early refresh"
python3 scripts/lib/fleet.py hot-key "without early refresh" "$hot_seconds" fleet.example
first_bases=$FLEET_BASES first_metrics=$FLEET_METRICS
start_fleet CACHE_NAMESPACE=fleet-early CACHE_EARLY_REFRESH=0.1
FLEET_BASES="${bases[*]}" python3 scripts/lib/fleet.py hot-key "CACHE_EARLY_REFRESH=0.1" "$hot_seconds" fleet.example
export FLEET_BASES=$first_bases FLEET_METRICS=$first_metrics
echo
echo "== $requests concurrent cold requests, with Redis killed 20 ms after they start"
python3 scripts/lib/fleet.py "/expensive-operation?round=killed" "$requests" fleet.example "$redis_pid" 0.02
