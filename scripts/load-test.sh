#!/usr/bin/env bash
# Load test with wrk: a cached route next to the same route with no cache at all (the ceiling), on
# the memory and Redis backends, and the demo's /expensive-operation uncached vs cached.
# Server and wrk run pinned to separate cores; the server's CPU time per request is read from
# /proc before and after each run. Writes docs/benchmarks-load.md (a table) and
# docs/benchmarks-load.svg (a chart). Needs wrk, redis-server, python3 (installs wrk if missing).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-32}
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
cargo build --release --quiet --bin cache-middleware --example bench_server

source scripts/lib/wrk-measure.sh

# start_server NAME ENV...: runs bench_server on core 0, sets $server_pid and $server_url
start_server() {
  local port; port=$(free_port)
  # One core, one runtime worker (as for any server pinned to one core).
  env PORT="$port" TOKIO_WORKER_THREADS=1 "$@" taskset -c 0 target/release/examples/bench_server >/dev/null 2>&1 &
  server_pid=$!; pids+=("$server_pid")
  server_url="http://127.0.0.1:$port/hello"
  wait_http "$server_url"; curl -s -o /dev/null "$server_url"
}

redis_port=$(free_port)
taskset -c 1 redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no >/dev/null 2>&1 &
pids+=("$!")
until redis-cli -p "$redis_port" ping >/dev/null 2>&1; do sleep 0.05; done

for mode in bare memory redis; do
  # Redis without its local tier: every hit a round trip (scripts/tier-bench.sh measures the tier).
  start_server MODE=$mode REDIS_URL="redis://127.0.0.1:$redis_port" REDIS_LOCAL_TIER_MAX_BYTES=0
  measure "$mode" "$server_pid" "$server_url" "$CONNECTIONS"
  measure "$mode" "$server_pid" "$server_url" 1
  kill "$server_pid"; wait "$server_pid" 2>/dev/null || true
done

demo_port=$(free_port)
PORT=$demo_port RUST_LOG=warn TOKIO_WORKER_THREADS=1 taskset -c 0 target/release/cache-middleware >/dev/null 2>&1 &
demo_pid=$!; pids+=("$demo_pid")
wait_http "http://127.0.0.1:$demo_port/health"
expensive="http://127.0.0.1:$demo_port/expensive-operation"
measure "expensive-operation uncached" "$demo_pid" "$expensive" 8 --timeout 10s -H "Cache-Control: no-store"
curl -s -o /dev/null "$expensive"
measure "expensive-operation cached" "$demo_pid" "$expensive" "$CONNECTIONS"

python3 - "$work/results.csv" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
by = {(r["name"], r["connections"]): r for r in rows}
out = ["| server | connections | requests/s | p50 µs | p99 µs | server CPU µs/request | non-2xx |",
       "|---|---|---|---|---|---|---|"]
for r in rows:
    out.append(f"| {r['name']} | {r['connections']} | {int(r['rps']):,} | {r['p50_us']} | {r['p99_us']} | {r['cpu_us_per_request']} | {r['non_2xx']} |")
c = max(int(r["connections"]) for r in rows if r["name"] == "bare")
bare, memory, redis = (by[(n, str(c))] for n in ("bare", "memory", "redis"))
bare1, memory1 = by[("bare", "1")], by[("memory", "1")]
unc = next(r for r in rows if r["name"].endswith("uncached"))
cac = next(r for r in rows if r["name"].endswith(" cached"))
ratio = float(memory["cpu_us_per_request"]) / float(bare["cpu_us_per_request"])
out += ["",
  f"- memory hit / bare route, server CPU per request: {ratio:.2f}x (target at most 1.15x)",
  f"- memory hit p50 minus bare p50: {int(memory['p50_us']) - int(bare['p50_us'])} µs at {c} connections, "
  f"{int(memory1['p50_us']) - int(bare1['p50_us'])} µs at 1 connection (target within 25 µs)",
  f"- redis hit requests/s / bare route: {float(redis['rps']) / float(bare['rps']):.0%} at {c} connections (target at least 50%)",
  f"- /expensive-operation cached / uncached requests/s: {float(cac['rps']) / float(unc['rps']):,.0f}x (target at least 100x)"]
open("docs/benchmarks-load.md", "w").write("\n".join(out) + "\n")
print("\n".join(out))
# A bar chart of server CPU per request and requests/s at the saturating load.
bars = [(n, by[(n, str(c))]) for n in ("bare", "memory", "redis")]
w, h, left, top = 640, 240, 170, 30
svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="13">',
       f'<text x="10" y="20" font-weight="bold">Server CPU per request (µs), {c} connections; lower is better</text>']
scale = (w - left - 90) / max(float(r["cpu_us_per_request"]) for _, r in bars)
labels = {"bare": "bare axum route", "memory": "cached, memory hit", "redis": "cached, Redis hit"}
for i, (n, r) in enumerate(bars):
    y = top + 15 + i * 60
    value = float(r["cpu_us_per_request"])
    svg.append(f'<text x="10" y="{y + 22}">{labels[n]}</text>')
    svg.append(f'<rect x="{left}" y="{y + 6}" width="{value * scale:.0f}" height="24" fill="{"#888" if n == "bare" else "#2a7"}"/>')
    svg.append(f'<text x="{left + value * scale + 6:.0f}" y="{y + 22}">{value:.2f} µs · {int(r["rps"]):,} req/s</text>')
svg.append("</svg>")
open("docs/benchmarks-load.svg", "w").write("\n".join(svg) + "\n")
PY
