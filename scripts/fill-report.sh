#!/usr/bin/env bash
# The proxy in front of a slow streaming origin (scripts/lib/fill.py: 64 KiB chunks, DELAY_MS
# apart): time to first body byte of a cold 8 MiB object against the origin's own, taking turns
# round after round; CLIENTS concurrent clients on one cold 64 MiB object, sent with its length
# and sent chunked (origin fetches, exact bodies, the proxy's peak resident memory); a client
# that leaves mid-body (each way); ranges of a stored
# object; HIT_CLIENTS concurrent clients reading the 64 MiB object once stored in Redis (the
# proxy's peak resident memory while they read). The proxy is pinned to core 0 with one runtime
# worker, the origin and the clients to core 1. Writes docs/benchmarks-fill.md. Not a test.
# Needs python3 and redis-server.
#
#   scripts/fill-report.sh [ROUNDS] [CLIENTS] [HIT_CLIENTS]
#   PROXY_BIN=path/to/other/build OUT=/tmp/other.md scripts/fill-report.sh   (a peer build)
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=${1:-20}
clients=${2:-100}
hit_clients=${3:-20}
delay=${DELAY_MS:-2}
big=$((64 * 1024 * 1024))
bin=${PROXY_BIN:-target/release/cache-middleware}
out=${OUT:-docs/benchmarks-fill.md}
[[ -n ${PROXY_BIN:-} ]] || cargo build --release --quiet --bin cache-middleware
source scripts/lib/processes.sh

origin_port=$(free_port)
taskset -c 1 python3 scripts/lib/fill.py origin "$origin_port" "$delay" &
pids+=("$!")
wait_port "$origin_port"

start_proxy() { # [NAME=VALUE ...]: settings over the memory backend's
  proxy_port=$(free_port)
  env CACHE_BACKEND=memory CACHE_MAX_BODY_SIZE="$big" MEMORY_CACHE_MAX_BYTES=$((256 * 1024 * 1024)) \
    RUST_LOG=warn TOKIO_WORKER_THREADS=1 "$@" taskset -c 0 \
    "$bin" proxy --upstream "http://127.0.0.1:$origin_port" \
    --listen "127.0.0.1:$proxy_port" >/dev/null 2>&1 &
  proxy_pid=$!
  pids+=("$proxy_pid")
  wait_port "$proxy_port"
}
kib() { awk -v field="$2:" '$1 == field {print $2}' "/proc/$1/status"; }
fill() { taskset -c 1 python3 scripts/lib/fill.py "$@"; }

# A fresh proxy for the crowd, so that its peak memory is this object's alone.
start_proxy
before=$(kib "$proxy_pid" VmRSS)
crowd=$(fill crowd "$proxy_port" "$origin_port" "$clients" "$big")
peak=$(kib "$proxy_pid" VmHWM)
after=$(kib "$proxy_pid" VmRSS)
kill "$proxy_pid"; wait "$proxy_pid" 2>/dev/null || true

# The same, sent chunked (no length announced).
start_proxy
chunked_before=$(kib "$proxy_pid" VmRSS)
chunked_crowd=$(fill crowd "$proxy_port" "$origin_port" "$clients" "$big" crowd chunked)
chunked_peak=$(kib "$proxy_pid" VmHWM)
kill "$proxy_pid"; wait "$proxy_pid" 2>/dev/null || true

# The object stored in Redis (apart from its key), then read by many clients at once: what the
# proxy holds while they read (its peak is reset once the object is stored).
redis_port=$(free_port)
taskset -c 1 redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no >/dev/null 2>&1 &
pids+=("$!")
wait_port "$redis_port"
start_proxy CACHE_BACKEND=redis REDIS_URL="redis://127.0.0.1:$redis_port"
fill crowd "$proxy_port" "$origin_port" 1 "$big" hits >/dev/null
sleep 0.5
echo 5 > "/proc/$proxy_pid/clear_refs" # resets the peak to what is resident now
hits_before=$(kib "$proxy_pid" VmRSS)
redis_sent() { redis-cli -p "$redis_port" info stats | awk -F: '/^total_net_output_bytes/ {print $2+0}'; }
sent_before=$(redis_sent)
hits=$(fill crowd "$proxy_port" "$origin_port" "$hit_clients" "$big" hits)
hits_peak=$(kib "$proxy_pid" VmHWM)
redis_bytes=$(( $(redis_sent) - sent_before ))
kill "$proxy_pid"; wait "$proxy_pid" 2>/dev/null || true

start_proxy
ttfb=$(fill ttfb "$origin_port" "$proxy_port" "$rounds")
ttfb_chunked=$(fill ttfb "$origin_port" "$proxy_port" "$rounds" chunked)
dropped=$(fill dropped "$proxy_port" "$origin_port")
dropped_chunked=$(fill dropped "$proxy_port" "$origin_port" chunked)
ranges=$(fill ranges "$proxy_port")

python3 - "$crowd" "$before" "$peak" "$after" "$ttfb" "$dropped" "$ranges" "$delay" "$ttfb_chunked" "$hits" "$hits_before" "$hits_peak" "$redis_bytes" \
  "$chunked_crowd" "$chunked_before" "$chunked_peak" "$dropped_chunked" <<'PY' | tee "$out"
import json, sys
crowd, before, peak, after = json.loads(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
ttfb, dropped, ranges, delay = json.loads(sys.argv[5]), json.loads(sys.argv[6]), json.loads(sys.argv[7]), sys.argv[8]
chunked = json.loads(sys.argv[9])
hits, hits_before, hits_peak = json.loads(sys.argv[10]), int(sys.argv[11]), int(sys.argv[12])
redis_bytes = int(sys.argv[13])
chunked_crowd, chunked_before, chunked_peak = json.loads(sys.argv[14]), int(sys.argv[15]), int(sys.argv[16])
dropped_chunked = json.loads(sys.argv[17])
mib = lambda kib: kib / 1024
print("# Large responses through the proxy: stream while filling\n")
print(f"Written by `scripts/fill-report.sh`. Origin: `scripts/lib/fill.py`, 64 KiB chunks {delay} ms apart,")
print("`Content-Length` and `Cache-Control: public, max-age=600`. Proxy: memory backend,")
print("`CACHE_MAX_BODY_SIZE` 64 MiB, one runtime worker pinned to core 0; origin and clients on core 1.\n")
print("## Time to first body byte, cold 8 MiB object\n")
print(f"{ttfb['rounds']} rounds, each a new object straight from the origin then through the proxy, once the proxy")
print("finished receiving the previous one (its client left after a byte; the fill goes on).\n")
print("| | median |\n|---|---|")
print(f"| origin | {ttfb['origin_ms_median']:.2f} ms |")
print(f"| proxy (miss) | {ttfb['proxy_ms_median']:.2f} ms |")
print(f"| proxy - origin, per round | median {ttfb['difference_ms_median']:.2f} ms, p90 {ttfb['difference_ms_p90']:.2f} ms, range {ttfb['difference_ms_min']:.2f} to {ttfb['difference_ms_max']:.2f} ms |\n")
print("The same object sent chunked (no `Content-Length`).\n")
print("| | median |\n|---|---|")
print(f"| origin | {chunked['origin_ms_median']:.2f} ms |")
print(f"| proxy (miss) | {chunked['proxy_ms_median']:.2f} ms |")
print(f"| proxy - origin, per round | median {chunked['difference_ms_median']:.2f} ms, p90 {chunked['difference_ms_p90']:.2f} ms, range {chunked['difference_ms_min']:.2f} to {chunked['difference_ms_max']:.2f} ms |\n")
print(f"## {crowd['clients']} concurrent clients on one cold {crowd['size'] // (1024 * 1024)} MiB object\n")
print("| | with `Content-Length` | chunked |\n|---|---|---|")
print(f"| origin fetches | {crowd['origin_fetches']} | {chunked_crowd['origin_fetches']} |")
print(f"| exact bodies (length and SHA-256) | {crowd['exact_bodies']} of {crowd['clients']} | {chunked_crowd['exact_bodies']} of {chunked_crowd['clients']} |")
x_cache = lambda run: ", ".join(f"{k} {v}" for k, v in sorted(run["x_cache"].items()))
print(f"| `X-Cache` | {x_cache(crowd)} | {x_cache(chunked_crowd)} |")
print(f"| wall time | {crowd['seconds']:.1f} s | {chunked_crowd['seconds']:.1f} s |")
print(f"| proxy resident before | {mib(before):.1f} MiB | {mib(chunked_before):.1f} MiB |")
print(f"| proxy peak resident | {mib(peak):.1f} MiB | {mib(chunked_peak):.1f} MiB |")
print(f"| peak over before (the body stays stored) | {mib(peak - before):.1f} MiB | {mib(chunked_peak - chunked_before):.1f} MiB |\n")
print("A chunked body fills a buffer that doubles as it grows (never past the storage limit); while it moves to a larger one, both are held.\n")
print(f"## {hits['clients']} concurrent clients reading the {hits['size'] // (1024 * 1024)} MiB object from Redis\n")
print("The proxy over Redis (local tier on, as by default); the object stored apart from its key")
print("by a first request, then read by every client at once.\n")
print(f"- origin fetches: {hits['origin_fetches']} (the first request's)")
print(f"- exact bodies (length and SHA-256): {hits['exact_bodies']} of {hits['clients']}")
print(f"- `X-Cache`: {', '.join(f'{k} {v}' for k, v in sorted(hits['x_cache'].items()))}")
print(f"- wall time: {hits['seconds']:.1f} s")
print(f"- Redis sent {redis_bytes / (1024 * 1024):.1f} MiB to the proxy for them")
print(f"- proxy resident memory: {mib(hits_before):.1f} MiB before, peak {mib(hits_peak):.1f} MiB while they read")
print(f"  (peak over before: {mib(hits_peak - hits_before):.1f} MiB)\n")
print("## A client that leaves after 1 MiB of a cold 8 MiB object\n")
for name, run in (("with `Content-Length`", dropped), ("chunked", dropped_chunked)):
    print(f"- {name}: the next request status {run['after_drop_status']}, `X-Cache: {run['after_drop_x_cache']}`, exact body: {run['after_drop_exact']}; origin fetches: {run['origin_fetches']}")
print()
print("## Ranges of the stored 8 MiB object\n")
print("| Range | status | Content-Range | bytes exact |\n|---|---|---|---|")
for name, check in ranges.items():
    print(f"| {name} | {check['status']} | {check.get('content_range')} | {check.get('exact', '-')} |")
PY
