"""`@cache(timeout=...)`: marks a route for the middleware to cache, for `timeout` seconds.

    @app.get("/")
    @cache(timeout=300)
    async def read_root(): ...

    @app.get("/items/{item_id}")
    @cache(timeout=600, tags=["items"])   # purge them all with `purge_tag("items")`
    async def read_item(item_id: int): ...

The decorator only labels the endpoint; it returns the same function, so FastAPI sees the
signature it declared. A route without it is never cached.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, NamedTuple, Optional, Tuple, TypeVar, Union

from cache_middleware import _engine

F = TypeVar("F", bound=Callable[..., Any])

_ATTRIBUTE = "__cache_middleware_route__"


class RouteCache(NamedTuple):
    """What `@cache(...)` says about a route."""

    timeout: float
    tags: Tuple[str, ...] = ()


def cache(timeout: Union[int, float] = 300, tags: Optional[Iterable[str]] = None) -> Callable[[F], F]:
    """Caches the decorated route's responses for `timeout` seconds (default 300), tagged with
    `tags` (visible ASCII without spaces or commas) for purging."""
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number of seconds, not {timeout!r}")
    if timeout < 0:
        raise ValueError(f"timeout must be a number of seconds >= 0, not {timeout!r}")
    if isinstance(tags, str):
        raise TypeError(f"tags must be a list of tags, not the string {tags!r}")
    named = tuple(sorted(set(tags or ())))
    for tag in named:
        if not isinstance(tag, str) or not _engine.is_valid_tag(tag):
            raise ValueError(f"{tag!r} is not a valid tag: visible ASCII without spaces or commas, at most 256 bytes")
    spec = RouteCache(float(timeout), named)

    def decorator(func: F) -> F:
        setattr(func, _ATTRIBUTE, spec)
        return func

    return decorator


def route_cache_of(endpoint: Any) -> Optional[RouteCache]:
    """What `@cache` said about `endpoint`, or `None` if it is not cached."""
    while endpoint is not None:
        found = getattr(endpoint, _ATTRIBUTE, None)
        if isinstance(found, RouteCache):
            return found
        endpoint = getattr(endpoint, "__wrapped__", None)
    return None


def timeout_of(endpoint: Any) -> Optional[float]:
    """The `@cache` timeout of `endpoint`, or `None` if it is not cached."""
    found = route_cache_of(endpoint)
    return None if found is None else found.timeout
