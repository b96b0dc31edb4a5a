"""An application behind an outer middleware that puts what it learned of the client in the
scope (as authentication middlewares do); its cached route says whose scope it ran in."""

from typing import Any, Dict

from fastapi import FastAPI, Request

from cache_middleware.backends.memory_backend import MemoryBackend
from cache_middleware.decorators import cache
from cache_middleware.middleware import CacheMiddleware

inner = FastAPI()
inner.add_middleware(CacheMiddleware, backend=MemoryBackend(max_size=100))
runs = {"n": 0}


@inner.get("/whoami")
@cache(timeout=1, stale_while_revalidate=60)
async def whoami(request: Request) -> Dict[str, Any]:
    runs["n"] += 1
    return {"user": request.scope.get("user"), "client": request.client is not None, "run": runs["n"]}


@inner.get("/runs")
async def count() -> Dict[str, int]:
    return {"runs": runs["n"]}


async def app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "http":
        scope = dict(scope, user=dict(scope["headers"]).get(b"x-user", b"").decode() or None)
    await inner(scope, receive, send)
