"""An application with every kind of route the middleware meets; counters show handler runs.

The backend comes from the environment (`CACHE_BACKEND`, ...), so one app runs on each backend.
"""

import asyncio
from typing import Dict

from fastapi import Body, FastAPI, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse

from cache_middleware.decorators import cache
from cache_middleware.helpers import auto_configure_backend
from cache_middleware.middleware import CacheMiddleware

app = FastAPI()
app.add_middleware(CacheMiddleware, backend=auto_configure_backend())
runs: Dict[str, int] = {}


def run(name: str) -> int:
    runs[name] = runs.get(name, 0) + 1
    return runs[name]


@app.get("/runs/{name}")
async def count(name: str) -> Dict[str, int]:
    return {"runs": runs.get(name, 0)}


@app.get("/hello")
@cache(timeout=300)
async def hello() -> Dict[str, object]:
    return {"Hello": "World", "run": run("hello")}


@app.get("/items/{item_id}")
@cache(timeout=600)
async def read_item(item_id: int, q: str = None) -> Dict[str, object]:  # type: ignore[assignment]
    return {"item_id": item_id, "q": q, "run": run("items")}


@app.post("/calculate")
@cache(timeout=300)
async def calculate(data: dict = Body(...)) -> Dict[str, object]:  # noqa: B008
    return {"result": sum(x**2 for x in data.get("numbers", [])), "run": run("calculate")}


@app.get("/uncached")
async def uncached() -> Dict[str, int]:
    return {"run": run("uncached")}


@app.get("/slow")
@cache(timeout=300)
async def slow() -> Dict[str, int]:
    await asyncio.sleep(0.3)
    return {"run": run("slow")}


@app.get("/session")
@cache(timeout=300)
async def session(request: Request) -> Response:
    user = request.query_params.get("user", "anon")
    response = JSONResponse({"user": user, "run": run("session")})
    response.set_cookie("session", f"secret-of-{user}")
    return response


@app.get("/private")
@cache(timeout=300)
async def private() -> Response:
    return JSONResponse({"run": run("private")}, headers={"cache-control": "private"})


@app.get("/me")
@cache(timeout=300)
async def me(request: Request) -> Dict[str, object]:
    return {"auth": request.headers.get("authorization"), "run": run("me")}


@app.get("/events")
@cache(timeout=300)
async def events() -> StreamingResponse:
    run("events")

    async def stream():  # type: ignore[no-untyped-def]
        for i in range(3):
            yield f"data: {i}\n\n"
            await asyncio.sleep(0.05)

    return StreamingResponse(stream(), media_type="text/event-stream")


LARGE_CHUNK = 64 * 1024
LARGE_CHUNKS = 4
release_large = asyncio.Event()


def large_chunk(n: int) -> bytes:
    return bytes([ord("a") + n]) * LARGE_CHUNK


async def large_body():  # type: ignore[no-untyped-def]
    """The first chunk at once, the rest once `POST /release-large` is called."""
    yield large_chunk(0)
    await asyncio.wait_for(release_large.wait(), 10)
    for n in range(1, LARGE_CHUNKS):
        yield large_chunk(n)


@app.get("/large")
@cache(timeout=300)
async def large() -> StreamingResponse:
    """A large body of announced length whose first chunk comes at once and the rest once
    `POST /release-large` is called."""
    run("large")
    length = str(LARGE_CHUNK * LARGE_CHUNKS)
    return StreamingResponse(large_body(), media_type="application/octet-stream", headers={"content-length": length})


@app.get("/large-unannounced")
@cache(timeout=300)
async def large_unannounced() -> StreamingResponse:
    """`/large` without a `Content-Length`: sent chunked."""
    run("large-unannounced")
    return StreamingResponse(large_body(), media_type="application/octet-stream")


@app.get("/large-at-once")
@cache(timeout=300)
async def large_at_once() -> Response:
    run("large-at-once")
    return Response(b"".join(large_chunk(n) for n in range(LARGE_CHUNKS)), media_type="application/octet-stream")


# Past the size at which Redis and Memcached keep a response apart from its key (512 KiB).
HUGE = bytes(n // 1024 % 251 for n in range(3 * 1024 * 1024 + 17))


@app.get("/huge")
@cache(timeout=300)
async def huge() -> Response:
    run("huge")
    return Response(HUGE, media_type="application/octet-stream")


@app.post("/release-large")
async def do_release_large() -> Dict[str, bool]:
    release_large.set()
    return {"released": True}


@app.get("/boom")
@cache(timeout=300)
async def boom() -> Dict[str, int]:
    run("boom")
    raise RuntimeError("the handler failed")


@app.get("/teapot")
@cache(timeout=300)
async def teapot() -> Response:
    return PlainTextResponse(f"run {run('teapot')}", status_code=418)


@app.get("/bytes")
@cache(timeout=300)
async def raw_bytes() -> Response:
    run("bytes")
    return Response(bytes(range(256)) * 4, media_type="application/octet-stream", headers={"x-one": "1", "x-two": "2"})


class Silent(Response):
    """A response that sends nothing at all."""

    async def __call__(self, scope, receive, send):  # type: ignore[no-untyped-def]
        return None


@app.get("/silent")
@cache(timeout=300)
async def silent() -> Response:
    run("silent")
    return Silent()


@app.api_route("/both", methods=["GET", "HEAD"])
@cache(timeout=300)
async def both() -> Dict[str, int]:
    return {"run": run("both")}


class ListPairs(Response):
    """A response whose header lines are lists, as ASGI allows."""

    async def __call__(self, scope, receive, send):  # type: ignore[no-untyped-def]
        await send({"type": "http.response.start", "status": 200, "headers": [[b"content-type", b"text/plain"], [b"x-list", b"yes"]]})
        await send({"type": "http.response.body", "body": b"listed"})


@app.get("/listed")
@cache(timeout=300)
async def listed() -> Response:
    run("listed")
    return ListPairs()


@app.get("/products/{product_id}")
@cache(timeout=300, tags=["products"])
async def product(product_id: int) -> Response:
    # The response names a tag of its own too; the client never sees the field.
    body = f'{{"product": {product_id}, "run": {run("products")}}}'
    return Response(body, media_type="application/json", headers={"Surrogate-Key": f"product:{product_id}"})


@app.post("/purge/{tag}")
async def purge(tag: str, request: Request, soft: bool = False) -> Dict[str, str]:
    await request.app.state.cache_middleware.purge_tag(tag, soft=soft)
    return {"purged": tag}


@app.post("/invalidate/products/{product_id}")
async def invalidate_product(product_id: int, request: Request, soft: bool = False) -> Dict[str, str]:
    host = request.headers["host"]
    await request.app.state.cache_middleware.invalidate(f"/products/{product_id}", host=host, soft=soft)
    return {"invalidated": str(product_id)}


gates: Dict[str, asyncio.Event] = {}


def gate(name: str) -> asyncio.Event:
    return gates.setdefault(name, asyncio.Event())


@app.post("/gate/{name}")
async def open_gate(name: str) -> Dict[str, str]:
    gate(name).set()
    return {"opened": name}


@app.get("/revalidated")
@cache(timeout=1, stale_while_revalidate=60)
async def revalidated() -> Dict[str, int]:
    n = run("revalidated")
    if n > 1:
        # Refreshes wait until the test lets them finish.
        await gate("revalidated").wait()
    return {"run": n}


@app.post("/sum-later")
@cache(timeout=1, stale_while_revalidate=60)
async def sum_later(data: dict = Body(...)) -> Dict[str, int]:  # noqa: B008
    return {"sum": sum(data.get("numbers", [])), "run": run("sum-later")}


@app.get("/flaky")
@cache(timeout=1, stale_while_revalidate=60)
async def flaky() -> Dict[str, int]:
    n = run("flaky")
    if n > 1:
        raise RuntimeError("the refresh failed")
    return {"run": n}


@app.get("/fragile")
@cache(timeout=1, stale_if_error=60)
async def fragile() -> Dict[str, int]:
    n = run("fragile")
    if n > 1:
        raise RuntimeError("the handler failed after the first run")
    return {"run": n}


@app.get("/early")
@cache(timeout=2)
async def early() -> Dict[str, int]:
    return {"run": run("early")}


@app.get("/greeting")
@cache(timeout=300)
async def greeting(request: Request) -> Response:
    """Sets a cookie from the query as it came (a byte `http` refuses reaches the field)."""
    response = JSONResponse({"run": run("greeting")})
    response.headers.append("set-cookie", "name=" + request.query_params.get("name", ""))
    return response


@app.get("/link")
@cache(timeout=300)
async def link(request: Request) -> Dict[str, object]:
    """A link built from the request's URL, as pagination links are."""
    return {"next": str(request.url.include_query_params(page=2)), "run": run("link")}


@app.get("/link-refreshed")
@cache(timeout=1, stale_while_revalidate=60)
async def link_refreshed(request: Request) -> Dict[str, object]:
    """A link built from the request's URL, refreshed in the background once stale."""
    return {"next": str(request.url.include_query_params(page=2)), "run": run("link-refreshed")}


TENANTS = {"acme.example": "acme"}


@app.get("/tenant")
@cache(timeout=300)
async def tenant(request: Request) -> Dict[str, object]:
    """The tenant of the request's host as written, as a map of tenants by host finds it."""
    return {"tenant": TENANTS.get(request.headers.get("host", ""), "default"), "run": run("tenant")}
