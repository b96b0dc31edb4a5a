"""`@cache(timeout=...)`: marks a route for the middleware to cache, for `timeout` seconds.

    @app.get("/")
    @cache(timeout=300)
    async def read_root(): ...

The decorator only labels the endpoint; it returns the same function, so FastAPI sees the
signature it declared. A route without it is never cached.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, TypeVar, Union

F = TypeVar("F", bound=Callable[..., Any])

_ATTRIBUTE = "__cache_middleware_timeout__"


def cache(timeout: Union[int, float] = 300) -> Callable[[F], F]:
    """Caches the decorated route's responses for `timeout` seconds (default 300)."""
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number of seconds, not {timeout!r}")
    if timeout < 0:
        raise ValueError(f"timeout must be a number of seconds >= 0, not {timeout!r}")

    def decorator(func: F) -> F:
        setattr(func, _ATTRIBUTE, float(timeout))
        return func

    return decorator


def timeout_of(endpoint: Any) -> Optional[float]:
    """The `@cache` timeout of `endpoint`, or `None` if it is not cached."""
    while endpoint is not None:
        found = getattr(endpoint, _ATTRIBUTE, None)
        if found is not None:
            return float(found)
        endpoint = getattr(endpoint, "__wrapped__", None)
    return None
