#!/usr/bin/env bash
# Caching proxies side by side: cache-middleware's proxy, nginx (proxy_cache) and Varnish, each in
# front of the same origin, serving the same cached response (hits only) to the same wrk load.
# Each proxy runs pinned to core 0 with one worker; wrk and the origin run on core 1. The proxy's CPU
# time per request (its processes and their children, from /proc) is measured over each run.
# Writes docs/benchmarks-proxy.md. Needs wrk, nginx, varnish, python3, curl (installs the first
# three from Debian's packages when missing).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-32}
ROUNDS=${ROUNDS:-3} # the proxies take turns, round after round; the table shows medians
missing=()
for tool in wrk:wrk nginx:nginx varnishd:varnish; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || missing+=("${tool##*:}")
done
if ((${#missing[@]})); then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
cargo build --release --quiet --bin cache-middleware --example bench_server

source scripts/lib/wrk-measure.sh

# hit_check URL: the proxy must be answering from its cache, or the figures mean nothing.
hit_check() {
  local url=$1 headers
  curl -s -o /dev/null "$url"
  headers=$(curl -s -D - -o /dev/null "$url")
  if ! grep -qiE '^(x-cache: HIT|x-cache-status: HIT|age: [0-9]+|cache-status: .*hit)' <<<"$headers"; then
    echo "error: $url is not served from the cache:" >&2
    echo "$headers" >&2
    exit 1
  fi
}

origin_port=$(free_port)
env PORT="$origin_port" MODE=origin TOKIO_WORKER_THREADS=1 taskset -c 1 target/release/examples/bench_server >/dev/null 2>&1 &
pids+=("$!")
origin="127.0.0.1:$origin_port"
wait_http "http://$origin/hello"

run_proxy() {
  local name=$1 pid=$2 url=$3
  wait_http "$url"
  hit_check "$url"
  measure "$name" "$pid" "$url" "$CONNECTIONS"
  measure "$name" "$pid" "$url" 1
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

# Each start_* function starts one proxy pinned to core 0 and sets $pid, $url and $name.

# cache-middleware: the proxy command, memory backend, one runtime worker.
start_ours() {
  local port; port=$(free_port)
  env CACHE_BACKEND=memory RUST_LOG=warn TOKIO_WORKER_THREADS=1 taskset -c 0 \
    target/release/cache-middleware proxy --upstream "http://$origin" --listen "127.0.0.1:$port" >/dev/null 2>&1 &
  pid=$!; pids+=("$pid")
  url="http://127.0.0.1:$port/hello"
  name="cache-middleware $(sed -nE 's/^version = "(.*)"/\1/p' Cargo.toml | head -1)"
}

# nginx: proxy_cache in front of the same origin, one worker, no access log.
start_nginx() {
  local port; port=$(free_port)
  rm -rf "$work/nginx"; mkdir -p "$work/nginx/cache" "$work/nginx/tmp"
  cat >"$work/nginx/nginx.conf" <<CONF
worker_processes 1;
daemon off;
master_process on;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $work/nginx/tmp;
  proxy_temp_path $work/nginx/tmp;
  proxy_cache_path $work/nginx/cache keys_zone=hits:10m;
  upstream origin { server $origin; keepalive 16; }
  server {
    listen 127.0.0.1:$port;
    location / {
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_cache hits;
      add_header X-Cache \$upstream_cache_status;
    }
  }
}
CONF
  taskset -c 0 nginx -c "$work/nginx/nginx.conf" -e "$work/nginx/error.log" &
  pid=$!; pids+=("$pid")
  url="http://127.0.0.1:$port/hello"
  name="nginx $(nginx -v 2>&1 | sed 's/.*nginx\///')"
}

# Varnish: malloc storage, the built-in VCL (it caches what the origin allows).
start_varnish() {
  local port; port=$(free_port)
  rm -rf "$work/varnish"; mkdir -p "$work/varnish"
  taskset -c 0 varnishd -F -j none -n "$work/varnish" -a "127.0.0.1:$port" -b "$origin" -s malloc,64m \
    -p thread_pools=1 -p thread_pool_min=8 >/dev/null 2>&1 &
  pid=$!; pids+=("$pid")
  url="http://127.0.0.1:$port/hello"
  name="Varnish $(varnishd -V 2>&1 | head -1 | sed -E 's/.*varnish-([0-9.]+).*/\1/')"
}

for round in $(seq "$ROUNDS"); do
  echo "round $round of $ROUNDS" >&2
  for proxy in ours nginx varnish; do
    "start_$proxy"
    run_proxy "$name" "$pid" "$url"
  done
done

python3 - "$work/results.csv" <<'PY'
import csv, sys
from statistics import median
rows = list(csv.DictReader(open(sys.argv[1])))
groups = {}
for r in rows:
    groups.setdefault((r["name"], r["connections"]), []).append(r)
out = [f"Medians of {len(next(iter(groups.values())))} rounds; each round runs every proxy in turn.", "",
       "| proxy | connections | requests/s | p50 µs | p99 µs | proxy CPU µs/request | non-2xx |",
       "|---|---|---|---|---|---|---|"]
for (name, connections), runs in groups.items():
    m = lambda key: median(float(r[key]) for r in runs)
    errors = sum(int(r["non_2xx"]) for r in runs)
    out.append(f"| {name} | {connections} | {m('rps'):,.0f} | {m('p50_us'):.0f} | {m('p99_us'):.0f} | {m('cpu_us_per_request'):.2f} | {errors} |")
out += ["", "Every run, in order:", "",
        "| proxy | connections | requests/s | p50 µs | p99 µs | proxy CPU µs/request | non-2xx |",
        "|---|---|---|---|---|---|---|"]
for r in rows:
    out.append(f"| {r['name']} | {r['connections']} | {int(r['rps']):,} | {r['p50_us']} | {r['p99_us']} | {r['cpu_us_per_request']} | {r['non_2xx']} |")
open("docs/benchmarks-proxy.md", "w").write("\n".join(out) + "\n")
print("\n".join(out))
PY
