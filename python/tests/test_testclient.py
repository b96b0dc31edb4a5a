"""The middleware under FastAPI's TestClient, as an application's own test suite runs it: each
client drives the application on an event loop of its own, one after another."""

from __future__ import annotations

from typing import Dict, Tuple

from fastapi import FastAPI
from fastapi.testclient import TestClient

from cache_middleware.backends.base import CacheBackend
from cache_middleware.decorators import cache
from cache_middleware.middleware import CacheMiddleware


def application(backend: CacheBackend) -> Tuple[FastAPI, Dict[str, int]]:
    app = FastAPI()
    app.add_middleware(CacheMiddleware, backend=backend)
    runs = {"n": 0}

    @app.get("/counted")
    @cache(timeout=60)
    async def counted() -> Dict[str, int]:
        runs["n"] += 1
        return {"run": runs["n"]}

    return app, runs



def test_a_client_in_a_with_block_gets_misses_then_hits(backend: CacheBackend) -> None:
    app, runs = application(backend)
    with TestClient(app) as client:
        answers = [client.get("/counted") for _ in range(3)]
    assert [a.headers["x-cache"] for a in answers] == ["MISS", "HIT", "HIT"]
    assert [a.json()["run"] for a in answers] == [1, 1, 1]
    assert app.state.cache_backend is backend, "set at start-up, for warming"


def test_clients_one_after_another_each_on_a_new_loop_share_the_cache(backend: CacheBackend) -> None:
    app, runs = application(backend)
    # Without a with block, every request runs on an event loop of its own.
    answers = [TestClient(app).get("/counted") for _ in range(3)]
    with TestClient(app) as client:
        answers.append(client.get("/counted"))
    assert [a.headers["x-cache"] for a in answers] == ["MISS", "HIT", "HIT", "HIT"]
    assert runs["n"] == 1
