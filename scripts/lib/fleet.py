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
from typing import List, Tuple


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


def main() -> None:
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
