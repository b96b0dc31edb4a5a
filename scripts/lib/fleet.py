"""Drives a fleet of demo instances for scripts/fleet-report.sh: concurrent cold requests for one
URL spread over the instances, optionally killing a process (Redis) part-way; prints what the
clients saw and how many times the instances ran the handler (their `/metrics/summary` misses)."""

import http.client
import json
import os
import signal
import sys
import threading
import time
from collections import Counter
from typing import Dict, List, Tuple


def get(base: str, path: str, host: str) -> Tuple[int, str]:
    address = base.removeprefix("http://")
    connection = http.client.HTTPConnection(address, timeout=30)
    try:
        connection.request("GET", path, headers={"Host": host})
        response = connection.getresponse()
        response.read()
        return response.status, response.getheader("x-cache") or "-"
    except OSError as error:
        return 0, type(error).__name__
    finally:
        connection.close()


def misses(metrics: List[str]) -> int:
    total = 0
    for base in metrics:
        address = base.removeprefix("http://")
        connection = http.client.HTTPConnection(address, timeout=10)
        connection.request("GET", "/metrics/summary")
        total += json.loads(connection.getresponse().read())["misses"]
        connection.close()
    return total


def purge_report(entries: int, host: str, token: str) -> None:
    """Warms `entries` tagged entries over the fleet, purges their tag from one instance, and
    checks from every other one that the next read misses; prints the purge's latency."""
    bases = os.environ["FLEET_BASES"].split()
    next_item = iter(range(entries))
    lock = threading.Lock()

    def warm() -> None:
        while True:
            with lock:
                item = next(next_item, None)
            if item is None:
                return
            get(bases[item % len(bases)], f"/items/{item}", host)

    started = time.monotonic()
    workers = [threading.Thread(target=warm) for _ in range(32)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    print(f"warmed {entries} entries tagged 'items' in {time.monotonic() - started:.1f} s")
    timings = []
    stale_reads = 0
    for round_ in range(20):
        sample = [(round_ * 997 + i * 7919) % entries for i in range(len(bases))]
        for i, item in enumerate(sample):
            get(bases[i], f"/items/{item}", host)
        address = bases[0].removeprefix("http://")
        connection = http.client.HTTPConnection(address, timeout=10)
        began = time.perf_counter()
        connection.request("PURGE", "/", headers={"Host": host, "Authorization": f"Bearer {token}", "Surrogate-Key": "items"})
        status = connection.getresponse().status
        timings.append((time.perf_counter() - began) * 1000)
        connection.close()
        assert status == 200, status
        time.sleep(0.002)  # a store in the purge's own millisecond counts as purged
        for i, item in enumerate(sample):
            _, x_cache = get(bases[i], f"/items/{item}", host)
            stale_reads += x_cache == "HIT"
    timings.sort()
    print(
        f"PURGE of the tag over HTTP, 20 times: median {timings[10]:.2f} ms, max {timings[-1]:.2f} ms; "
        f"reads on each instance right after: {stale_reads} of {20 * len(bases)} still hits"
    )


def invalidation_report(updates: int, host: str, token: str) -> None:
    """For each update: every instance holds one `/debug` entry (a timestamp) in its local tier;
    one instance purges it; the time until each other instance stops answering with the old
    body is recorded, from the purge's answer. (The first instance to read after the purge runs
    the handler, and the others may get that new entry: what matters is that nobody serves the
    old one.)"""
    bases = os.environ["FLEET_BASES"].split()
    connections = [http.client.HTTPConnection(b.removeprefix("http://"), timeout=10) for b in bases]

    def ask(i: int, method: str, path: str, extra: Dict[str, str]) -> Tuple[int, bytes]:
        connections[i].request(method, path, headers={"Host": host, **extra})
        response = connections[i].getresponse()
        return response.status, response.read()

    delays: List[float] = []
    for update in range(updates):
        path = f"/debug?update={update}"
        old = ask(0, "GET", path, {})[1]
        for i in range(len(bases)):
            ask(i, "GET", path, {})
            assert ask(i, "GET", path, {})[1] == old
        purger = update % len(bases)
        status, _ = ask(purger, "PURGE", path, {"Authorization": f"Bearer {token}"})
        assert status == 200, status
        purged_at = time.perf_counter()
        for i in range(len(bases)):
            if i == purger:
                continue
            while ask(i, "GET", path, {})[1] == old:
                if time.perf_counter() - purged_at > 5:
                    raise SystemExit(f"instance {i} still serves {path} 5 s after its purge")
            delays.append((time.perf_counter() - purged_at) * 1000)
    delays.sort()
    p = lambda q: delays[min(len(delays) - 1, int(q * len(delays)))]  # noqa: E731
    print(
        f"{updates} purges on one instance; until each other instance stopped serving the old entry: "
        f"p50 {p(0.5):.2f} ms, p99 {p(0.99):.2f} ms, max {delays[-1]:.2f} ms ({len(delays)} observations, "
        "each including the HTTP round trips of the reads that found it)"
    )


def clock_runs(bases: List[str]) -> int:
    total = 0
    for base in bases:
        connection = http.client.HTTPConnection(base.removeprefix("http://"), timeout=10)
        connection.request("GET", "/clock/runs")
        total += json.loads(connection.getresponse().read())["runs"]
        connection.close()
    return total


def hot_key_report(label: str, seconds: float, host: str, clients: int = 8, per_client_rps: float = 50) -> None:
    """Steady load on `/clock` (a 2 s lifetime, a 50 ms handler) over the fleet for `seconds`:
    how many handler runs, how far apart, and whether any request waited on one."""
    bases = os.environ["FLEET_BASES"].split()
    # Warm: the cold start's wait is another report's subject.
    for base in bases:
        get(base, "/clock", host)
    before = clock_runs(bases)
    latencies: List[float] = []
    caches: Counter = Counter()
    runs_seen: Dict[Tuple[int, int], float] = {}
    failures = 0
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def client(index: int) -> None:
        nonlocal failures
        connections = [http.client.HTTPConnection(b.removeprefix("http://"), timeout=10) for b in bases]
        turn = index
        pause = 1 / per_client_rps
        while time.monotonic() < deadline:
            turn += 1
            connection = connections[turn % len(bases)]
            began = time.perf_counter()
            try:
                connection.request("GET", "/clock", headers={"Host": host})
                response = connection.getresponse()
                body = json.loads(response.read())
                status, x_cache = response.status, response.getheader("x-cache") or "-"
            except (OSError, ValueError):
                status, x_cache, body = 0, "error", {}
            took = (time.perf_counter() - began) * 1000
            with lock:
                latencies.append(took)
                caches[x_cache] += 1
                if status != 200:
                    failures += 1
                else:
                    runs_seen[(body["instance"], body["run"])] = body["time"]
            time.sleep(max(0.0, pause - took / 1000))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    runs = clock_runs(bases) - before
    latencies.sort()
    p = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))]  # noqa: E731
    times = sorted(runs_seen.values())
    gaps = sorted(b - a for a, b in zip(times, times[1:]))
    waited = sum(1 for ms in latencies if ms >= 40)
    gap_text = f"{gaps[0]:.2f} s shortest, {gaps[len(gaps) // 2]:.2f} s median" if gaps else "none"
    print(
        f"{label}: {len(latencies)} requests in {seconds:.0f} s over {len(bases)} instances, failed {failures}; "
        f"X-Cache {dict(caches)}; handler runs in the fleet {runs} ({seconds / 2:.0f} lifetimes of 2 s); "
        f"between runs: {gap_text}; latency p50 {p(0.5):.2f} ms, p99 {p(0.99):.2f} ms, max {latencies[-1]:.2f} ms; "
        f"{waited} requests took 40 ms or more (the handler takes 50)"
    )


def main() -> None:
    if sys.argv[1] == "invalidation":
        invalidation_report(int(sys.argv[2]), sys.argv[3], sys.argv[4])
        return
    if sys.argv[1] == "purge":
        purge_report(int(sys.argv[2]), sys.argv[3], sys.argv[4])
        return
    if sys.argv[1] == "hot-key":
        hot_key_report(sys.argv[2], float(sys.argv[3]), sys.argv[4])
        return
    path, count, host = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    kill_pid, kill_after = int(sys.argv[4]), float(sys.argv[5])
    bases = os.environ["FLEET_BASES"].split()
    metrics = os.environ["FLEET_METRICS"].split()
    before = misses(metrics)
    results: List[Tuple[int, str]] = [(0, "not run")] * count
    start = threading.Barrier(count + 1)

    def one(i: int) -> None:
        start.wait()
        results[i] = get(bases[i % len(bases)], path, host)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    start.wait()
    if kill_pid:
        time.sleep(kill_after)
        os.kill(kill_pid, signal.SIGKILL)
    for thread in threads:
        thread.join()
    failed = sum(1 for status, _ in results if status != 200)
    seen = Counter(x_cache for _, x_cache in results)
    runs = misses(metrics) - before
    print(f"{path}: {count} requests over {len(bases)} instances; failed {failed}; X-Cache {dict(seen)}; handler runs in the fleet {runs}")


if __name__ == "__main__":
    main()
