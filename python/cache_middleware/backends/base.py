"""The backend interface: `get`, `set`, `delete`, `clear` and `close`, all awaitable."""

from __future__ import annotations

import abc
from typing import Optional, Union

from cache_middleware import _driver, _engine


def _text(value: Optional[bytes]) -> Optional[Union[str, bytes]]:
    if value is None:
        return None
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value


def _bytes(value: Union[str, bytes]) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    raise TypeError(f"values are str or bytes, not {type(value).__name__}")


class CacheBackend(abc.ABC):
    """A store the middleware keeps responses in, with per-entry timeouts in seconds."""

    @abc.abstractmethod
    async def get(self, key: str) -> Optional[Union[str, bytes]]:
        """The value under `key`, or `None`."""

    @abc.abstractmethod
    async def set(self, key: str, value: Union[str, bytes], timeout: float) -> None:
        """Stores `value` under `key` for `timeout` seconds."""

    @abc.abstractmethod
    async def delete(self, key: str) -> None:
        """Removes `key`; a missing key is not an error."""

    async def clear(self) -> None:
        """Removes every entry of this backend's namespace."""

    async def close(self) -> None:
        """Releases the backend's connections."""

    def engine_backend(self) -> _engine.Backend:
        """The engine's handle on this store: for a subclass written in Python, the engine calls
        its `get`, `set`, `delete` and `clear` in the request's own task, within the same latency
        budget and circuit breaker as any backend. Values are bytes."""
        handle = getattr(self, "_engine_handle", None)
        if handle is None:
            handle = _engine.Backend.python(self)
            self._engine_handle = handle
        return handle


class EngineBackend(CacheBackend):
    """A backend the Rust engine runs; `get`/`set`/`delete`/`clear` go through the engine too."""

    def __init__(self, backend: _engine.Backend) -> None:
        self._backend = backend

    def engine_backend(self) -> _engine.Backend:
        return self._backend

    async def get(self, key: str) -> Optional[Union[str, bytes]]:
        return _text(await _driver.run(self._backend.get(key)))

    async def set(self, key: str, value: Union[str, bytes], timeout: float) -> None:
        await _driver.run(self._backend.set(key, _bytes(value), float(timeout)))

    async def delete(self, key: str) -> None:
        await _driver.run(self._backend.delete(key))

    async def clear(self) -> None:
        await _driver.run(self._backend.clear())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._backend!r})"
