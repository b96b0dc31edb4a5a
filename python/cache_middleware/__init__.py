"""HTTP response caching for FastAPI and any ASGI application, with a Rust engine inside.

The public modules follow the user guide::

    from cache_middleware.middleware import CacheMiddleware
    from cache_middleware.decorators import cache
    from cache_middleware.backends.memory_backend import MemoryBackend
    from cache_middleware.backends.redis_backend import RedisBackend
    from cache_middleware.helpers import auto_configure_backend, get_backend_for_environment
    from cache_middleware.logger_config import configure_logger, logger
"""

from cache_middleware.decorators import cache
from cache_middleware.middleware import CacheMiddleware

__all__ = ["CacheMiddleware", "cache"]
