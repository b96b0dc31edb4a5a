#!/usr/bin/env bash
# Measures what users see while Redis fails: the demo on Redis under load while Redis is killed,
# restarted, frozen (SIGSTOP) and thawed (SIGCONT). Prints requests sent, non-2xx answers, latency
# per phase and the time until the hit ratio recovers. Not a test: figures for docs/reliability.md.
#
# Needs redis-server and python3; pins the demo and the load generator to separate cores (taskset).
set -euo pipefail
cd "$(dirname "$0")/.."

CONNECTIONS=${CONNECTIONS:-32}
KEYS=${KEYS:-200}
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -CONT "$pid" 2>/dev/null || true; kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
start_redis() {
  redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no >/dev/null 2>&1 &
  redis_pid=$!; pids+=("$redis_pid")
  until redis-cli -p "$redis_port" ping >/dev/null 2>&1; do sleep 0.05; done
}
mark() { echo "$1,$(( $(date +%s%3N) - t0 ))" >> "$work/events"; }

cargo build --release --quiet --bin cache-middleware --example loadgen
redis_port=$(free_port); demo_port=$(free_port)
start_redis
CACHE_BACKEND=redis REDIS_URL="redis://127.0.0.1:$redis_port" PORT=$demo_port RUST_LOG=warn \
  taskset -c 0 target/release/cache-middleware >"$work/demo.log" 2>&1 &
pids+=("$!")
until curl -sf "http://127.0.0.1:$demo_port/health" >/dev/null; do sleep 0.05; done

t0=$(date +%s%3N)
taskset -c 1 target/release/examples/loadgen "http://127.0.0.1:$demo_port/users/{i}" \
  "$CONNECTIONS" 40 "$KEYS" >"$work/requests.csv" &
load=$!
sleep 8;  mark killed;    kill -9 "$redis_pid"
sleep 8;  mark restarted; start_redis
sleep 8;  mark frozen;    kill -STOP "$redis_pid"
sleep 6;  mark thawed;    kill -CONT "$redis_pid"
wait "$load"

python3 - "$work/requests.csv" "$work/events" "$CONNECTIONS" "$KEYS" <<'PY'
import sys
rows = [l.split(",") for l in open(sys.argv[1])]
events = dict(l.strip().split(",") for l in open(sys.argv[2]))
events = {k: int(v) for k, v in events.items()}
rows = [(int(t), int(s), int(lat), xc.strip()) for t, s, lat, xc in rows]
rows.sort()
def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))] / 1000 if values else float("nan")
phases = [("steady (before faults)", 2000, events["killed"]),
          ("redis killed", events["killed"], events["restarted"]),
          ("redis restarted", events["restarted"], events["frozen"]),
          ("redis frozen (SIGSTOP)", events["frozen"], events["thawed"]),
          ("redis thawed (SIGCONT)", events["thawed"], 40000)]
print(f"load: {sys.argv[3]} connections, GET /users/{{0..{int(sys.argv[4])-1}}}, 40 s; demo and load generator on separate cores")
print(f"requests sent: {len(rows)}; non-2xx or failed: {sum(1 for r in rows if not 200 <= r[1] < 300)}")
print()
print("| phase | requests | non-2xx | req/s | p50 ms | p99 ms | max ms | hit ratio |")
print("|---|---|---|---|---|---|---|---|")
for name, a, b in phases:
    sel = [r for r in rows if a <= r[0] < b]
    lat = [r[2] for r in sel]
    hits = sum(1 for r in sel if r[3] == "HIT")
    secs = (b - a) / 1000
    print(f"| {name} | {len(sel)} | {sum(1 for r in sel if not 200 <= r[1] < 300)} | {len(sel)/secs:.0f} | "
          f"{pct(lat, .5):.2f} | {pct(lat, .99):.2f} | {max(lat)/1000 if lat else 0:.1f} | {hits/max(1,len(sel)):.1%} |")
steady = [r for r in rows if 2000 <= r[0] < events["killed"]]
target = 0.9 * sum(1 for r in steady if r[3] == "HIT") / max(1, len(steady))
print()
for event in ("restarted", "thawed"):
    start = events[event]
    recovered = None
    for w in range(start, 40000, 100):
        window = [r for r in rows if w <= r[0] < w + 250]
        if window and sum(1 for r in window if r[3] == "HIT") / len(window) >= target:
            recovered = (w - start) / 1000
            break
    print(f"hit ratio back to 90% of steady state after redis {event}: "
          + (f"{recovered:.1f} s" if recovered is not None else "not within the run"))
PY
