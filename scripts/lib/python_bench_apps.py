"""The applications scripts/python-bench.sh compares: one route, `GET /expensive`, whose handler
costs 5 ms, cached for 300 s, behind this package or fastapi-cache2 0.2.2; and a bare ASGI
callable answering the same bytes (the floor of any Python answer), and FastAPI with one
middleware that answers at once (the floor of any FastAPI middleware). `BENCH_APP` picks one;
`REDIS_URL` serves the Redis variants.
"""

import asyncio
import os
from contextlib import asynccontextmanager

BODY = b'{"result":"expensive","items":[1,2,3,4,5]}'
which = os.environ["BENCH_APP"]
redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379")


async def expensive_work() -> dict:
    await asyncio.sleep(0.005)
    return {"result": "expensive", "items": [1, 2, 3, 4, 5]}


if which == "bare":

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]})
        await send({"type": "http.response.body", "body": BODY})

elif which == "fastapi-floor":
    # FastAPI whose one middleware answers at once: what any middleware answering before the
    # route costs on FastAPI's own stack (its error, telemetry and body-limit layers).
    from fastapi import FastAPI

    app = FastAPI()
    HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]

    class Answer:
        def __init__(self, inner):  # type: ignore[no-untyped-def]
            self.inner = inner

        async def __call__(self, scope, receive, send):  # type: ignore[no-untyped-def]
            if scope["type"] != "http":
                return await self.inner(scope, receive, send)
            await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
            await send({"type": "http.response.body", "body": BODY})

    app.add_middleware(Answer)

elif which in ("ours-memory", "ours-redis", "ours-redis-no-tier"):
    from fastapi import FastAPI

    from cache_middleware.decorators import cache
    from cache_middleware.middleware import CacheMiddleware

    app = FastAPI()
    if which == "ours-memory":
        from cache_middleware.backends.memory_backend import MemoryBackend

        backend = MemoryBackend(max_size=1000)
    else:
        from cache_middleware.backends.redis_backend import RedisBackend

        # By default the local tier answers hits it holds without a Redis round trip (kept
        # consistent by Redis's key tracking); without it, every hit is a round trip.
        tier = 0 if which == "ours-redis-no-tier" else None
        backend = RedisBackend(url=redis_url, max_connections=4, local_tier_max_bytes=tier)
    app.add_middleware(CacheMiddleware, backend=backend)

    @app.get("/expensive")
    @cache(timeout=300)
    async def expensive():  # type: ignore[no-untyped-def]
        return await expensive_work()

elif which in ("fc2-memory", "fc2-redis"):
    from fastapi import FastAPI
    from fastapi_cache import FastAPICache
    from fastapi_cache.decorator import cache as fc2_cache

    @asynccontextmanager
    async def lifespan(_app):  # type: ignore[no-untyped-def]
        if which == "fc2-memory":
            from fastapi_cache.backends.inmemory import InMemoryBackend

            FastAPICache.init(InMemoryBackend(), prefix="fastapi-cache")
        else:
            from fastapi_cache.backends.redis import RedisBackend as FC2Redis
            from redis import asyncio as aioredis

            FastAPICache.init(FC2Redis(aioredis.from_url(redis_url)), prefix="fastapi-cache")
        yield

    app = FastAPI(lifespan=lifespan)

    @app.get("/expensive")
    @fc2_cache(expire=300)
    async def expensive():  # type: ignore[no-untyped-def]
        return await expensive_work()

else:
    raise SystemExit(f"BENCH_APP={which!r}: accepted values are bare, fastapi-floor, ours-memory, ours-redis, ours-redis-no-tier, fc2-memory, fc2-redis")
