"""The package's Python surface: what it accepts and how it refuses."""

from __future__ import annotations

import socket

import pytest

from cache_middleware.backends.redis_backend import _keepalive
from cache_middleware.decorators import cache, timeout_of
from cache_middleware.middleware import CacheMiddleware


def test_keepalive_options_mean_what_the_guide_says_in_both_spellings() -> None:
    assert _keepalive({1: 1, 2: 3, 3: 5}) == {"idle": 1, "interval": 3, "count": 5}
    spelled = {socket.TCP_KEEPIDLE: 10, socket.TCP_KEEPINTVL: 4, socket.TCP_KEEPCNT: 2}
    assert _keepalive(spelled) == {"idle": 10, "interval": 4, "count": 2}
    with pytest.raises(ValueError, match="TCP_KEEPIDLE"):
        _keepalive({99: 1})
    with pytest.raises(ValueError, match=">= 1"):
        _keepalive({1: 0})


def test_the_decorator_labels_the_endpoint_and_keeps_it() -> None:
    async def handler() -> dict:
        return {}

    assert cache(timeout=30)(handler) is handler
    assert timeout_of(handler) == 30.0
    with pytest.raises(ValueError):
        cache(timeout=-1)
    with pytest.raises(TypeError):
        cache(timeout="300")  # type: ignore[arg-type]


def test_a_backend_that_is_not_one_is_refused_with_its_name() -> None:
    with pytest.raises(TypeError, match="dict"):
        CacheMiddleware(app=lambda s, r, w: None, backend={})  # type: ignore[arg-type]
