"""An application that routes one path by host: `account.test` goes to a sub-application whose
page is per user and not cached; every other host gets the cached public page."""

from typing import Dict, Optional

from fastapi import FastAPI, Request

from cache_middleware.backends.memory_backend import MemoryBackend
from cache_middleware.decorators import cache
from cache_middleware.middleware import CacheMiddleware

app = FastAPI()
app.add_middleware(CacheMiddleware, backend=MemoryBackend(max_size=100))
account = FastAPI()


@account.get("/page")
async def account_page(request: Request) -> Dict[str, Optional[str]]:
    return {"page": "account", "user": request.headers.get("x-user")}


# Listed before the public route: for its host, it answers.
app.host("account.test", account)


@app.get("/page")
@cache(timeout=300)
async def public_page() -> Dict[str, Optional[str]]:
    return {"page": "public", "user": None}
