"""The in-process backend: bounded by entries (`max_size`) and by bytes."""

from __future__ import annotations

from typing import Optional

from cache_middleware import _engine
from cache_middleware.backends.base import EngineBackend


class MemoryBackend(EngineBackend):
    """`MemoryBackend(max_size=1000)`: at most `max_size` entries, and `max_bytes` bytes (default
    256 MiB), least recently used first out."""

    def __init__(self, max_size: int = 1000, max_bytes: Optional[int] = None) -> None:
        super().__init__(_engine.Backend.memory(max_size, max_bytes))
        self.max_size = max_size
