"""A GET whose content no field announces (HTTP/2 and HTTP/3 DATA frames): the application gets
it, and its answer is neither stored nor served from storage. The ASGI messages are those an
HTTP/2 server sends; the middleware cannot tell them from a real server's."""

from __future__ import annotations

import asyncio
from typing import Any, Dict, List, MutableMapping

from fastapi import FastAPI, Request

from cache_middleware.backends.memory_backend import MemoryBackend
from cache_middleware.decorators import cache
from cache_middleware.middleware import CacheMiddleware

Message = MutableMapping[str, Any]


async def call(app: FastAPI, http_version: str, body: bytes) -> Dict[str, Any]:
    """One GET /echo through `app`, as a server of `http_version` hands it over."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": http_version,
        "method": "GET",
        "scheme": "http",
        "path": "/echo",
        "raw_path": b"/echo",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"example.test")],
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 50000),
    }
    incoming: List[Message] = [{"type": "http.request", "body": body, "more_body": False}]
    sent: List[Message] = []

    async def receive() -> Message:
        if incoming:
            return incoming.pop(0)
        await asyncio.sleep(3600)  # a client that stays: nothing more comes
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        sent.append(message)

    await asyncio.wait_for(app(scope, receive, send), 10)
    headers = {k.decode(): v.decode() for k, v in sent[0]["headers"]}
    content = b"".join(m.get("body", b"") for m in sent[1:])
    return {"x-cache": headers.get("x-cache"), "body": content.decode()}


def test_a_get_with_unannounced_content_bypasses_the_cache() -> None:
    app = FastAPI()
    app.add_middleware(CacheMiddleware, backend=MemoryBackend(max_size=100))

    @app.get("/echo")
    @cache(timeout=60)
    async def echo(request: Request) -> Dict[str, str]:
        return {"body": (await request.body()).decode()}

    async def scenario() -> None:
        fat = await call(app, "2", b"poison")
        assert fat == {"x-cache": "BYPASS", "body": '{"body":"poison"}'}
        plain = await call(app, "2", b"")
        assert plain["body"] == '{"body":""}', "another client gets the answer to its own request"
        assert (await call(app, "2", b""))["x-cache"] == "HIT"
        assert (await call(app, "1.1", b""))["x-cache"] == "HIT"

    asyncio.run(scenario())
