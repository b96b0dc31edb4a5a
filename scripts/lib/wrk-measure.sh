# Shared by the load scripts (sourced, not run): processes started by the script and stopped on exit,
# free ports, and `measure`, which runs wrk against a server pinned elsewhere and appends one CSV row
# (name, connections, requests/s, p50 and p99 in µs, the server's CPU µs per request, non-2xx) to
# $work/results.csv. The sourcing script sets DURATION.

work=$(mktemp -d)
chmod 755 "$work" # readable by servers that drop privileges
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() {
  for _ in $(seq 200); do curl -s -o /dev/null "$1" && return 0; sleep 0.05; done
  echo "no answer from $1" >&2
  exit 1
}

# CPU ticks of a process and all its descendants (servers with worker processes count whole).
tree_ticks() {
  python3 - "$1" <<'PY'
import os, sys
root = int(sys.argv[1])
stats = {}
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        continue
    stats[int(pid)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
def ticks(pid):
    return stats.get(pid, (0, 0))[1] + sum(ticks(child) for child, (parent, _) in stats.items() if parent == pid)
print(ticks(root))
PY
}

echo "name,connections,rps,p50_us,p99_us,cpu_us_per_request,non_2xx" >"$work/results.csv"

# measure NAME PID URL CONNECTIONS [wrk options...]: wrk on core 1, after a 2 s warm-up.
measure() {
  local name=$1 pid=$2 url=$3 connections=$4; shift 4
  taskset -c 1 wrk -t1 -c"$connections" -d2s "$@" "$url" >/dev/null # warm-up
  local before after
  before=$(tree_ticks "$pid")
  taskset -c 1 wrk -t1 -c"$connections" -d"${DURATION}s" --latency "$@" "$url" >"$work/wrk.txt"
  after=$(tree_ticks "$pid")
  python3 - "$name" "$connections" "$before" "$after" "$work/wrk.txt" >>"$work/results.csv" <<'PY'
import re, sys, os
name, connections, before, after, path = sys.argv[1:]
text = open(path).read()
def micros(value):
    found = re.match(r"([\d.]+)(\w+)", value)
    if not found:
        sys.exit(f"unreadable wrk output for {name}:\n{text}")
    number, unit = found.groups()
    return float(number) * {"us": 1, "ms": 1000, "s": 1_000_000}[unit]
requests = int(re.search(r"(\d+) requests in", text).group(1))
errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
# Anchored: "62.50%" in the Req/Sec row must not be read as the 50th percentile.
p50 = micros(re.search(r"^\s+50%\s+(\S+)", text, re.M).group(1))
p99 = micros(re.search(r"^\s+99%\s+(\S+)", text, re.M).group(1))
cpu = (int(after) - int(before)) * 1_000_000 / os.sysconf("SC_CLK_TCK") / requests
print(f"{name},{connections},{rps:.0f},{p50:.0f},{p99:.0f},{cpu:.2f},{errors.group(1) if errors else 0}")
PY
}
