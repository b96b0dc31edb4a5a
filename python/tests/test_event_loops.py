"""One process, several event loops running at once (servers that run a loop per thread, an
application's tests beside a server): every request is woken on its own loop."""

from __future__ import annotations

import asyncio
import threading
from typing import Dict, List

import httpx
from fastapi import FastAPI

from cache_middleware.backends.base import CacheBackend
from cache_middleware.decorators import cache
from cache_middleware.middleware import CacheMiddleware

LOOPS = 3
REQUESTS = 40



def test_requests_on_loops_running_at_once_are_each_woken_on_their_own(backend: CacheBackend) -> None:
    app = FastAPI()
    app.add_middleware(CacheMiddleware, backend=backend)
    runs: Dict[str, int] = {}

    @app.get("/items/{name}")
    @cache(timeout=60)
    async def item(name: str) -> Dict[str, str]:
        runs[name] = runs.get(name, 0) + 1
        await asyncio.sleep(0)  # the flow waits for the application: a wake-up on this loop
        return {"name": name}

    start = threading.Barrier(LOOPS)
    failures: List[BaseException] = []

    async def requests(loop_number: int) -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            for n in range(REQUESTS):
                # Each key twice: a miss (the application runs), then a hit.
                for expected in ("MISS", "HIT"):
                    name = f"{loop_number}-{n}"
                    answer = await asyncio.wait_for(client.get(f"/items/{name}"), 10)
                    assert (answer.json(), answer.headers["x-cache"]) == ({"name": name}, expected)

    def on_a_loop_of_its_own(loop_number: int) -> None:
        start.wait()
        try:
            asyncio.run(requests(loop_number))
        except BaseException as failure:  # noqa: BLE001 (reported by the test's thread)
            failures.append(failure)

    threads = [threading.Thread(target=on_a_loop_of_its_own, args=(n,)) for n in range(LOOPS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not [t for t in threads if t.is_alive()], "a loop never finished"
    assert not failures, failures
    assert len(runs) == LOOPS * REQUESTS and set(runs.values()) == {1}
