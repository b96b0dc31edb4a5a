"""Backends from the environment, by the same variables, rules and messages as the Rust helpers.

`CACHE_BACKEND` (`memory`, `redis`, `memcached`), `MEMORY_CACHE_SIZE`, `MEMORY_CACHE_MAX_BYTES`,
`REDIS_URL`, `REDIS_MAX_CONNECTIONS` and the other `REDIS_*` variables, `MEMCACHED_URL`. A wrong
value raises `ValueError` naming the variable and the accepted values.
"""

from __future__ import annotations

from cache_middleware import _engine
from cache_middleware.backends.base import EngineBackend


class ConfiguredBackend(EngineBackend):
    """A backend chosen by the environment."""

    @property
    def kind(self) -> str:
        """`"memory"`, `"redis"` or `"memcached"`."""
        return str(self.engine_backend().kind)


def auto_configure_backend() -> ConfiguredBackend:
    """The backend `CACHE_BACKEND` and its companion variables describe (memory by default)."""
    return ConfiguredBackend(_engine.Backend.from_environment())


def get_backend_for_environment(environment: str) -> ConfiguredBackend:
    """The guide's environments: `development` (memory), `testing` (a small memory cache),
    `staging` and `production` (Redis from `REDIS_URL`, which is then required)."""
    return ConfiguredBackend(_engine.Backend.for_environment(environment))
