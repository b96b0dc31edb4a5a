"""Logging through loguru: the engine's events (cache hits, misses, key generation, backend
faults) arrive in `logger`, at DEBUG for the request path.

    from cache_middleware.logger_config import configure_logger, logger
    configure_logger()
    logger.add("cache_middleware.log", rotation="10 MB", level="INFO")
    logger.add(sys.stderr, level="DEBUG")
"""

from __future__ import annotations

import sys
from typing import Optional, Tuple

from loguru import logger

from cache_middleware import _engine

__all__ = ["configure_logger", "logger"]

_forwarded_level: Optional[int] = None


def _sink(level: str, message: str) -> None:
    logger.opt(depth=1).log(level, message)


_INFO = 20


def _lowest_level() -> int:
    """The lowest level any handler takes; events below it are never formatted. Loguru's own
    default handler (id 0, DEBUG to stderr) alone counts as INFO: the request path's DEBUG events
    (one per hit) appear once a handler asks for them, as the guide's debug mode does."""
    core = getattr(logger, "_core", None)
    level = getattr(core, "min_level", 10)
    if not isinstance(level, (int, float)) or level == float("inf"):
        return 255
    handlers = getattr(core, "handlers", {})
    if set(handlers) == {0}:
        return max(int(level), _INFO)
    return int(level)


_seen: Optional[Tuple[object, int, object]] = None
# Loguru's handler table when the level was last followed. Loguru replaces the table whenever a
# handler is added or removed, so a request compares identities before calling `sync_log_level`.
synced_handlers: object = None


def sync_log_level() -> None:
    """Follows the handlers added or removed since the last request. Loguru replaces its
    handler table on every change, so an identity check is enough between changes."""
    global _forwarded_level, _seen, synced_handlers
    core = getattr(logger, "_core", None)
    handlers = getattr(core, "handlers", None)
    synced_handlers = handlers
    if _seen is not None and _seen[2] is handlers and _seen[0] == getattr(core, "min_level", None):
        return
    _seen = (getattr(core, "min_level", None), len(handlers) if handlers is not None else -1, handlers)
    level = min(_lowest_level(), 255)
    if level != _forwarded_level:
        _forwarded_level = level
        _engine.set_log_level(level)


def configure_logger(level: str = "INFO") -> None:
    """Sends the engine's events to `logger`, with one stderr handler at `level` (as loguru's
    default handler, replaced). Add file handlers with `logger.add(...)`."""
    global _forwarded_level, _seen
    logger.remove()
    logger.add(sys.stderr, level=level, format="{time} | {level} | {message}")
    _forwarded_level = None
    _seen = None
    _engine.set_log_sink(_sink, 255)
    sync_log_level()


# Events reach loguru from the start; its default handler decides what is shown.
_engine.set_log_sink(_sink, 255)
