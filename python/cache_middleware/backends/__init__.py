"""Storage backends: memory (in-process), Redis and Memcached, all run by the Rust engine."""

from cache_middleware.backends.base import CacheBackend

__all__ = ["CacheBackend"]
