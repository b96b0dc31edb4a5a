"""`@cache(timeout=...)`: marks a route for the middleware to cache, for `timeout` seconds.

    @app.get("/")
    @cache(timeout=300)
    async def read_root(): ...

    @app.get("/items/{item_id}")
    @cache(timeout=600, tags=["items"])   # purge them all with `purge_tag("items")`
    async def read_item(item_id: int): ...

    @app.get("/prices")
    @cache(timeout=60, stale_while_revalidate=30)   # refreshed in the background when stale
    async def prices(): ...

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
    stale_while_revalidate: float = 0.0
    stale_if_error: float = 0.0


def cache(
    timeout: Union[int, float] = 300,
    tags: Optional[Iterable[str]] = None,
    stale_while_revalidate: Union[int, float] = 0,
    stale_if_error: Union[int, float] = 0,
) -> Callable[[F], F]:
    """Caches the decorated route's responses for `timeout` seconds (default 300), tagged with
    `tags` (visible ASCII without spaces or commas) for purging.

    `stale_while_revalidate`: for that many seconds past `timeout`, a request gets the stale
    response at once (`X-Cache: STALE`) while one background run of the route refreshes it.
    `stale_if_error`: for that many seconds past `timeout`, a run that raises or answers 5xx is
    replaced by the stale response. Both off by default."""
    for name, value in (
        ("timeout", timeout),
        ("stale_while_revalidate", stale_while_revalidate),
        ("stale_if_error", stale_if_error),
    ):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{name} must be a number of seconds, not {value!r}")
        if not value >= 0:
            raise ValueError(f"{name} must be a number of seconds >= 0, not {value!r}")
    if isinstance(tags, str):
        raise TypeError(f"tags must be a list of tags, not the string {tags!r}")
    named = tuple(sorted(set(tags or ())))
    for tag in named:
        if not isinstance(tag, str) or not _engine.is_valid_tag(tag):
            raise ValueError(f"{tag!r} is not a valid tag: visible ASCII without spaces or commas, at most 256 bytes")
    spec = RouteCache(float(timeout), named, float(stale_while_revalidate), float(stale_if_error))

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
