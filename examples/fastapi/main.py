"""The user guide's FastAPI application, as the Docker image runs it: the backend comes from the
environment (`CACHE_BACKEND`, `REDIS_URL`, ...), as in the guide's docker-compose.yml."""

from typing import Dict

from fastapi import FastAPI

from cache_middleware.decorators import cache
from cache_middleware.helpers import auto_configure_backend
from cache_middleware.middleware import CacheMiddleware

app = FastAPI()
app.add_middleware(CacheMiddleware, backend=auto_configure_backend())


@app.get("/")
@cache(timeout=300)
async def read_root() -> Dict[str, str]:
    return {"Hello": "World"}


@app.get("/items/{item_id}")
@cache(timeout=600)
async def read_item(item_id: int, q: str = "") -> Dict[str, object]:
    return {"item_id": item_id, "q": q}


@app.get("/health")
async def health() -> Dict[str, str]:
    # What the compose file's health check asks for; never cached.
    return {"status": "ok"}
