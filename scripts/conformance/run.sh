#!/usr/bin/env bash
# Runs the public HTTP cache test suite (the http-cache-tests package, from the npm registry)
# against the caching proxy: the suite's origin server and the proxy on free loopback ports, then
# the suite's client through the proxy. Prints the score per suite and fails below the floor.
#
#   scripts/conformance/run.sh [--min PERCENT] [--min-optimal COUNT] [--binary PATH] [--out RESULTS.json] [-- proxy args]
set -euo pipefail
cd "$(dirname "$0")/../.."

VERSION=0.4.5 # the suite version the published score was measured with
min=""
min_optimal=""
binary=target/debug/cache-middleware
out=target/conformance/results.json
while (($#)); do
  case "$1" in
    --min) min="$2"; shift 2 ;;
    --min-optimal) min_optimal="$2"; shift 2 ;;
    --binary) binary="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --) shift; break ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done

for tool in node npm python3; do
  command -v "$tool" >/dev/null 2>&1 || { echo "error: $tool is needed to run the conformance suite" >&2; exit 1; }
done
[ -x "$binary" ] || cargo build --locked --bin cache-middleware
work=target/conformance
suite="$work/node_modules/http-cache-tests"
if [ "$(node -p "require('./$suite/package.json').version" 2>/dev/null)" != "$VERSION" ]; then
  mkdir -p "$work"
  echo '{"private": true}' >"$work/package.json"
  npm install --prefix "$work" --no-audit --no-fund --silent "http-cache-tests@$VERSION"
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
origin_port=$(free_port)
proxy_port=$(free_port)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT

(cd "$suite" && exec env npm_config_port="$origin_port" npm_package_config_protocol=http \
  npm_config_pidfile="$PWD/../../origin.pid" node server/server.mjs) >"$work/origin.log" 2>&1 &
pids+=($!)
CACHE_BACKEND=memory "$binary" proxy --upstream "http://127.0.0.1:$origin_port" \
  --listen "127.0.0.1:$proxy_port" "$@" >"$work/proxy.log" 2>&1 &
pids+=($!)

wait_for() {
  for _ in $(seq 100); do
    if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $1), 0.2)" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "error: $2 did not start listening on 127.0.0.1:$1; its log:" >&2
  cat "$3" >&2
  exit 1
}
wait_for "$origin_port" "the suite's origin server" "$work/origin.log"
wait_for "$proxy_port" "the proxy" "$work/proxy.log"

(cd "$suite" && exec env npm_config_base="http://127.0.0.1:$proxy_port" npm_package_config_id= \
  node --no-warnings cli.mjs) >"$out"
node scripts/conformance/score.mjs "$suite" "$out" --markdown ${min:+--min "$min"} ${min_optimal:+--min-optimal "$min_optimal"}
