"""What the engine keys a request by, when the ASGI server leaves fields out of the scope. The
messages are those a server sends; the middleware cannot tell them from a real server's."""

from __future__ import annotations

import asyncio
from typing import Any, Dict, List, MutableMapping

from fastapi import FastAPI

from cache_middleware.backends.memory_backend import MemoryBackend
from cache_middleware.decorators import cache
from cache_middleware.middleware import CacheMiddleware

Message = MutableMapping[str, Any]


def app_with_names() -> FastAPI:
    app = FastAPI()
    app.add_middleware(CacheMiddleware, backend=MemoryBackend(max_size=100))

    @app.get("/items/{name}")
    @cache(timeout=60)
    async def item(name: str, x: str = "") -> Dict[str, str]:
        return {"name": name, "x": x}

    return app


async def get(app: FastAPI, path: str, query: bytes) -> Dict[str, Any]:
    """One GET through `app` from a server that gives no `raw_path`, only the decoded `path`."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "query_string": query,
        "root_path": "",
        "headers": [(b"host", b"example.test")],
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 50000),
    }
    sent: List[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await asyncio.wait_for(app(scope, receive, send), 10)
    headers = {k.decode(): v.decode() for k, v in sent[0]["headers"]}
    return {"x-cache": headers.get("x-cache"), "body": b"".join(m.get("body", b"") for m in sent[1:]).decode()}


def test_a_decoded_path_with_a_question_mark_is_not_read_as_a_query() -> None:
    # Without `raw_path`, the decoded path `/items/a?x=1` (the name `a?x=1`) was handed on as a
    # target and read as the path `/items/a` with the query `x=1`: the key of another request.
    async def scenario() -> None:
        app = app_with_names()
        first = await get(app, "/items/a?x=1", b"")
        second = await get(app, "/items/a", b"x=1")
        assert first["body"] == '{"name":"a?x=1","x":""}'
        assert second["body"] == '{"name":"a","x":"1"}'
        assert second["x-cache"] == "MISS"
        again = await get(app, "/items/a?x=1", b"")
        assert (again["x-cache"], again["body"]) == ("HIT", first["body"])

    asyncio.run(scenario())
