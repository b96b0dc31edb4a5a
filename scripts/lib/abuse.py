#!/usr/bin/env python3
"""Helpers for scripts/abuse-report.sh: an origin, a flood of unique responses, and slow clients.

  abuse.py origin PORT              serve `public, max-age=600` responses: 2 bytes under /small, ~1 MB elsewhere
  abuse.py flood URL COUNT PID      COUNT distinct queries; samples PID's resident memory
  abuse.py slow URL ROUNDS SLOW     normal requests without, then with, SLOW half-sent requests open

Figures only, never pass/fail: the shell script prints them for docs/security.md.
"""

from __future__ import annotations

import http.client
import resource
import socket
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

BODY = b"x" * 1_000_000  # under the 1 MiB CACHE_MAX_BODY_SIZE, so every response is stored


class Origin(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
        body = b"ok" if self.path.startswith("/small") else BODY
        self.send_response(200)
        self.send_header("Cache-Control", "public, max-age=600")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


def rss_kib(pid: int) -> tuple[int, int]:
    """Resident memory now and at its peak (VmRSS, VmHWM), in KiB."""
    fields = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            fields[name] = value.split()[0] if value.split() else "0"
    return int(fields["VmRSS"]), int(fields["VmHWM"])


def get(host: str, port: int, path: str) -> int:
    connection = http.client.HTTPConnection(host, port, timeout=30)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def flood(url: str, count: int, pid: int) -> None:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    before, _ = rss_kib(pid)
    samples: list[int] = []
    lock = threading.Lock()
    done = 0

    def one(i: int) -> int:
        nonlocal done
        status = get(host, port, f"{parts.path}?unique={i}")
        with lock:
            done += 1
            if done % 100 == 0:
                samples.append(rss_kib(pid)[0])
        return status

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(one, range(count)))
    after, peak = rss_kib(pid)
    print(f"requests           {count} x {len(BODY):,} bytes, {sum(s == 200 for s in statuses)} answered 200")
    print(f"rss before         {before / 1024:.1f} MiB")
    print(f"rss every 100      {', '.join(f'{s / 1024:.0f}' for s in samples)} MiB")
    print(f"rss after          {after / 1024:.1f} MiB")
    print(f"rss peak (VmHWM)   {peak / 1024:.1f} MiB")


def half_sent(host: str, port: int, count: int) -> list[socket.socket]:
    opened = []
    for _ in range(count):
        s = socket.create_connection((host, port), timeout=5)
        s.sendall(b"GET / HTTP/1.1\r\nHost: slow.example\r\nX-Slow: ")
        opened.append(s)
    return opened


def closed_by_server(sockets: list[socket.socket], wait: float) -> tuple[int, float]:
    """How many of `sockets` the server closed within `wait` seconds, and when the last one went."""
    deadline = time.monotonic() + wait
    start = time.monotonic()
    pending = set(range(len(sockets)))
    last = 0.0
    for s in sockets:
        s.setblocking(False)
    while pending and time.monotonic() < deadline:
        for i in list(pending):
            try:
                if sockets[i].recv(4096) == b"":
                    pending.discard(i)
                    last = time.monotonic() - start
            except BlockingIOError:
                pass
            except OSError:
                pending.discard(i)
                last = time.monotonic() - start
        time.sleep(0.05)
    for s in sockets:
        s.close()
    return len(sockets) - len(pending), last


def latencies(host: str, port: int, path: str, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        get(host, port, path)
        out.append((time.perf_counter() - t) * 1000)
    return out


def slow(url: str, rounds: int, count: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    parts = urlsplit(url)
    host, port, path = parts.hostname or "127.0.0.1", parts.port or 80, parts.path or "/"
    get(host, port, path)  # warm the entry: the normal requests are hits
    print("round  p50 alone  p50 with slow  max alone  max with slow  ratio p50  ratio max")
    ratios_p50, ratios_max = [], []
    closed_report = ""
    for r in range(rounds):
        alone = latencies(host, port, path, 200)
        sockets = half_sent(host, port, count)
        opened_at = time.monotonic()
        with_slow = latencies(host, port, path, 200)
        if r == rounds - 1:
            closed, last = closed_by_server(sockets, wait=60)
            held = time.monotonic() - opened_at
            closed_report = f"slow clients closed by the server: {closed} of {count}, last after {last:.1f} s of waiting ({held:.1f} s after opening)"
        else:
            for s in sockets:
                s.close()
        a50, b50 = statistics.median(alone), statistics.median(with_slow)
        amax, bmax = max(alone), max(with_slow)
        ratios_p50.append(b50 / a50)
        ratios_max.append(bmax / amax)
        print(f"{r + 1:>5}  {a50:8.2f}ms  {b50:12.2f}ms  {amax:8.2f}ms  {bmax:12.2f}ms  {b50 / a50:9.2f}  {bmax / amax:9.2f}")
        time.sleep(1)
    print(f"ratio p50 (with/alone) range {min(ratios_p50):.2f}..{max(ratios_p50):.2f}; max range {min(ratios_max):.2f}..{max(ratios_max):.2f}")
    print(closed_report)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def main() -> None:
    command = sys.argv[1]
    if command == "origin":
        ThreadingHTTPServer(("127.0.0.1", int(sys.argv[2])), Origin).serve_forever()
    elif command == "flood":
        flood(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    elif command == "slow":
        slow(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        sys.exit(f"unknown command {command!r}")


if __name__ == "__main__":
    main()
