"""The Memcached backend (one or more servers)."""

from __future__ import annotations

from typing import Optional

from cache_middleware import _engine
from cache_middleware.backends.base import EngineBackend


class MemcachedBackend(EngineBackend):
    """`MemcachedBackend(url="memcached://localhost:11211")`; several servers comma-separated."""

    def __init__(
        self,
        url: str = "memcached://localhost:11211",
        max_connections: Optional[int] = None,
        namespace: Optional[str] = None,
    ) -> None:
        super().__init__(_engine.Backend.memcached(url, max_connections, namespace))
