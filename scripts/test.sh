#!/usr/bin/env bash
# Runs the whole test suite: unit, integration (real servers on loopback) and doc tests, the
# public HTTP cache conformance suite against the proxy (scripts/conformance/run.sh), then the
# Python package: built with maturin into a virtual environment this script creates
# (target/python-venv), typed (mypy --strict) and tested with pytest against real uvicorn,
# redis-server, memcached and the Rust demo.
# The tests start their own redis-server, memcached and origin servers on free loopback ports and stop
# them afterwards; this script installs what is missing from Debian's packages (and the conformance
# suite from the npm registry).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v memcached >/dev/null 2>&1 || missing+=(memcached)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
if ((${#missing[@]})); then
  echo "installing ${missing[*]} from Debian's packages" >&2
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: ${missing[*]} missing and apt-get unavailable: install them and run again" >&2
    exit 1
  fi
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

cargo test --all-features --locked "$@"

# http-cache-tests: the share of required tests passed and the number of optimal tests passed,
# the levels reached (docs/conformance.md); a drop fails.
CONFORMANCE_FLOOR=93.9
CONFORMANCE_OPTIMAL_FLOOR=79
cargo build --all-features --locked --bin cache-middleware
scripts/conformance/run.sh --min "$CONFORMANCE_FLOOR" --min-optimal "$CONFORMANCE_OPTIMAL_FLOOR"

venv=target/python-venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet "./python[test]" mypy
(cd python && "../$venv/bin/mypy" --strict cache_middleware)
# From the repository's root: the package under test is the one installed, not python/'s sources.
"$venv/bin/python" -m pytest -q python/tests
