"""The guide's "extending backends": backends written in Python, chosen by `CUSTOM_BACKEND`."""

import asyncio
import os
from typing import Dict, List, Optional, Union

from fastapi import FastAPI

from cache_middleware.backends.base import CacheBackend
from cache_middleware.decorators import cache
from cache_middleware.middleware import CacheMiddleware


class DictBackend(CacheBackend):
    """A dictionary, awaiting like a network client would."""

    def __init__(self) -> None:
        self.data: Dict[str, Union[str, bytes]] = {}
        self.calls: List[str] = []

    async def get(self, key: str) -> Optional[Union[str, bytes]]:
        await asyncio.sleep(0.001)
        self.calls.append("get")
        return self.data.get(key)

    async def set(self, key: str, value: Union[str, bytes], timeout: float) -> None:
        await asyncio.sleep(0)
        self.calls.append("set")
        self.data[key] = value

    async def delete(self, key: str) -> None:
        self.data.pop(key, None)


class BrokenBackend(DictBackend):
    async def get(self, key: str) -> Optional[Union[str, bytes]]:
        raise ConnectionError("the store is down")

    async def set(self, key: str, value: Union[str, bytes], timeout: float) -> None:
        raise ConnectionError("the store is down")


class SlowBackend(DictBackend):
    async def get(self, key: str) -> Optional[Union[str, bytes]]:
        await asyncio.Event().wait()  # never answers
        return None


backend = {"dict": DictBackend, "broken": BrokenBackend, "slow": SlowBackend}[os.environ["CUSTOM_BACKEND"]]()
app = FastAPI()
app.add_middleware(CacheMiddleware, backend=backend)
runs = {"n": 0}


@app.get("/value")
@cache(timeout=300)
async def value() -> Dict[str, int]:
    runs["n"] += 1
    return {"run": runs["n"]}


@app.get("/calls")
async def calls() -> Dict[str, object]:
    return {"calls": backend.calls, "keys": len(backend.data)}
