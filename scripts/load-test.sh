#!/usr/bin/env bash
# Load test with wrk: a cached route next to the same route with no cache at all (the ceiling) and
# the same route under axum-response-cache (a cheap peer cache), taking turns round after round
# (ROUNDS, default 5: this machine's speed drifts between rounds, so only ratios within a round
# are compared); then the Redis backend, and the demo's /expensive-operation uncached vs cached.
# Servers and wrk run pinned to separate cores; the server's CPU time per request is read from
# /proc before and after each run. Writes docs/benchmarks-load.md (a table) and
# docs/benchmarks-load.svg (a chart). Needs wrk, redis-server, python3 (installs wrk if missing).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-5}
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

# The three in-process servers stay up side by side on core 0; one is loaded at a time.
declare -A pid_of url_of
turns=(bare memory response-cache)
for mode in "${turns[@]}"; do
  start_server MODE=$mode
  pid_of[$mode]=$server_pid; url_of[$mode]=$server_url
done
for round in $(seq "$ROUNDS"); do
  for mode in "${turns[@]}"; do
    measure "$mode#$round" "${pid_of[$mode]}" "${url_of[$mode]}" "$CONNECTIONS"
  done
done
for mode in "${turns[@]}"; do
  measure "$mode" "${pid_of[$mode]}" "${url_of[$mode]}" 1
  kill "${pid_of[$mode]}"; wait "${pid_of[$mode]}" 2>/dev/null || true
done

# Redis without its local tier: every hit a round trip (scripts/tier-bench.sh measures the tier).
start_server MODE=redis REDIS_URL="redis://127.0.0.1:$redis_port" REDIS_LOCAL_TIER_MAX_BYTES=0
measure "redis" "$server_pid" "$server_url" "$CONNECTIONS"
kill "$server_pid"; wait "$server_pid" 2>/dev/null || true

demo_port=$(free_port)
PORT=$demo_port RUST_LOG=warn TOKIO_WORKER_THREADS=1 taskset -c 0 target/release/cache-middleware >/dev/null 2>&1 &
demo_pid=$!; pids+=("$demo_pid")
wait_http "http://127.0.0.1:$demo_port/health"
expensive="http://127.0.0.1:$demo_port/expensive-operation"
measure "expensive-operation uncached" "$demo_pid" "$expensive" 8 --timeout 10s -H "Cache-Control: no-store"
curl -s -o /dev/null "$expensive"
measure "expensive-operation cached" "$demo_pid" "$expensive" "$CONNECTIONS"

python3 - "$work/results.csv" "$CONNECTIONS" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
c = sys.argv[2]
cpu = lambda r: float(r["cpu_us_per_request"])
rounds = {}
for r in rows:
    if "#" in r["name"]:
        mode, n = r["name"].split("#")
        rounds.setdefault(int(n), {})[mode] = r
one = {r["name"]: r for r in rows if r["connections"] == "1"}
redis = next(r for r in rows if r["name"] == "redis")
unc = next(r for r in rows if r["name"].endswith("uncached"))
cac = next(r for r in rows if r["name"].endswith(" cached"))
modes = ("bare", "memory", "response-cache")
def median_row(mode):
    ordered = sorted((rounds[n][mode] for n in rounds), key=cpu)
    return ordered[len(ordered) // 2]
out = [f"Interleaved rounds at {c} connections (bare, memory, response-cache in turn, each round):", "",
       "| round | bare µs/req | memory µs/req | axum-response-cache µs/req | memory / bare | response-cache / bare | memory / response-cache |",
       "|---|---|---|---|---|---|---|"]
ratios = {"memory / bare": [], "response-cache / bare": [], "memory / response-cache": []}
for n in sorted(rounds):
    b, m, p = (cpu(rounds[n][mode]) for mode in modes)
    ratios["memory / bare"].append(m / b)
    ratios["response-cache / bare"].append(p / b)
    ratios["memory / response-cache"].append(m / p)
    out.append(f"| {n} | {b:.2f} | {m:.2f} | {p:.2f} | {m / b:.2f} | {p / b:.2f} | {m / p:.2f} |")
out += ["", "| server | connections | requests/s | p50 µs | p99 µs | server CPU µs/request | non-2xx |",
        "|---|---|---|---|---|---|---|"]
shown = [(f"{mode} (median round)", median_row(mode)) for mode in modes]
shown += [(mode, one[mode]) for mode in modes] + [("redis", redis), (unc["name"], unc), (cac["name"], cac)]
for name, r in shown:
    out.append(f"| {name} | {r['connections']} | {int(r['rps']):,} | {r['p50_us']} | {r['p99_us']} | {r['cpu_us_per_request']} | {r['non_2xx']} |")
summary = lambda xs: f"median {statistics.median(xs):.2f}, rounds {min(xs):.2f} to {max(xs):.2f}"
bare, memory = median_row("bare"), median_row("memory")
out += ["",
  f"- memory hit / bare route, server CPU per request: {summary(ratios['memory / bare'])} (target: median at most 1.05)",
  f"- axum-response-cache hit / bare route: {summary(ratios['response-cache / bare'])}",
  f"- memory hit / axum-response-cache hit: {summary(ratios['memory / response-cache'])}",
  f"- memory hit p50 minus bare p50: {int(memory['p50_us']) - int(bare['p50_us'])} µs at {c} connections (median rounds), "
  f"{int(one['memory']['p50_us']) - int(one['bare']['p50_us'])} µs at 1 connection (target within 25 µs)",
  f"- redis hit (no local tier) requests/s / bare route: {float(redis['rps']) / float(bare['rps']):.0%} at {c} connections (target at least 50%)",
  f"- /expensive-operation cached / uncached requests/s: {float(cac['rps']) / float(unc['rps']):,.0f}x (target at least 100x)"]
open("docs/benchmarks-load.md", "w").write("\n".join(out) + "\n")
print("\n".join(out))
# A bar chart of server CPU per request and requests/s at the saturating load (median rounds).
bars = [("bare", bare), ("memory", memory), ("response-cache", median_row("response-cache")), ("redis", redis)]
w, h, left, top = 680, 300, 190, 30
svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="13">',
       f'<text x="10" y="20" font-weight="bold">Server CPU per request (µs), {c} connections; lower is better</text>']
scale = (w - left - 90) / max(cpu(r) for _, r in bars)
labels = {"bare": "bare axum route", "memory": "cached, memory hit", "response-cache": "axum-response-cache hit",
          "redis": "cached, Redis hit"}
for i, (n, r) in enumerate(bars):
    y = top + 15 + i * 60
    value = cpu(r)
    svg.append(f'<text x="10" y="{y + 22}">{labels[n]}</text>')
    svg.append(f'<rect x="{left}" y="{y + 6}" width="{value * scale:.0f}" height="24" fill="{"#888" if n in ("bare", "response-cache") else "#2a7"}"/>')
    svg.append(f'<text x="{left + value * scale + 6:.0f}" y="{y + 22}">{value:.2f} µs · {int(r["rps"]):,} req/s</text>')
svg.append("</svg>")
open("docs/benchmarks-load.svg", "w").write("\n".join(svg) + "\n")
PY
