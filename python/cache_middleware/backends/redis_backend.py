"""The Redis backend: standalone (`redis://`, `rediss://` for TLS), Cluster and Sentinel."""

from __future__ import annotations

import os
import socket
from typing import Dict, Mapping, Optional, Sequence

from loguru import logger

from cache_middleware import _engine
from cache_middleware.backends.base import EngineBackend

# The guide numbers its keepalive options 1, 2, 3 and names them TCP_KEEPIDLE, TCP_KEEPINTVL and
# TCP_KEEPCNT; on Linux those numbers are other options (TCP_NODELAY, TCP_MAXSEG, TCP_CORK), and
# passing them to the socket would fail. Both spellings are read with the guide's meaning.
_KEEPALIVE_NAMES: Dict[int, str] = {1: "idle", 2: "interval", 3: "count"}
for _name, _meaning in (("TCP_KEEPIDLE", "idle"), ("TCP_KEEPINTVL", "interval"), ("TCP_KEEPCNT", "count")):
    if hasattr(socket, _name):
        _KEEPALIVE_NAMES[getattr(socket, _name)] = _meaning


def _keepalive(options: Optional[Mapping[int, int]]) -> Dict[str, Optional[int]]:
    chosen: Dict[str, Optional[int]] = {"idle": None, "interval": None, "count": None}
    for key, value in (options or {}).items():
        meaning = _KEEPALIVE_NAMES.get(key)
        if meaning is None:
            raise ValueError(
                f"socket_keepalive_options key {key!r} is not known: use 1/socket.TCP_KEEPIDLE "
                "(idle seconds), 2/socket.TCP_KEEPINTVL (interval seconds), 3/socket.TCP_KEEPCNT "
                "(probe count)"
            )
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"socket_keepalive_options[{key!r}] must be a whole number >= 1, not {value!r}")
        chosen[meaning] = value
    return chosen


class RedisBackend(EngineBackend):
    """`RedisBackend(url="redis://localhost:6379", max_connections=20, ...)` with the guide's
    options. `cluster_nodes=[...]` reaches a Redis Cluster; `sentinels=[...]` with `service_name`
    the master a Sentinel group knows. An in-process tier of `local_tier_max_bytes` (default
    64 MiB; 0 turns it off) answers the hits it holds without a round trip, kept consistent with
    Redis (standalone, Sentinel or Cluster) through Redis's key tracking."""

    def __init__(
        self,
        url: str = "redis://localhost:6379",
        max_connections: Optional[int] = None,
        retry_on_timeout: Optional[bool] = None,
        socket_keepalive: Optional[bool] = None,
        socket_keepalive_options: Optional[Mapping[int, int]] = None,
        health_check_interval: Optional[float] = None,
        password: Optional[str] = None,
        ssl_cert_reqs: Optional[str] = None,
        ssl_ca_certs: Optional[str] = None,
        socket_timeout: Optional[float] = None,
        namespace: Optional[str] = None,
        cluster_nodes: Optional[Sequence[str]] = None,
        sentinels: Optional[Sequence[str]] = None,
        service_name: Optional[str] = None,
        local_tier_max_bytes: Optional[int] = None,
    ) -> None:
        keepalive = _keepalive(socket_keepalive_options)
        if ssl_ca_certs is not None and not os.path.isfile(ssl_ca_certs):
            # As redis-py does, a CA file is needed only to connect: the application starts, and
            # runs uncached, verifying the server against the system's roots (never without
            # verification), until the file is there.
            logger.error(
                "ssl_ca_certs={!r} cannot be read: TLS connections to Redis will verify against "
                "the system's certificate roots, and fail for a private CA (requests run uncached)",
                ssl_ca_certs,
            )
            ssl_ca_certs = None
        super().__init__(
            _engine.Backend.redis(
                url,
                max_connections=max_connections,
                retry_on_timeout=retry_on_timeout,
                socket_keepalive=socket_keepalive,
                keepalive_idle=keepalive["idle"],
                keepalive_interval=keepalive["interval"],
                keepalive_count=keepalive["count"],
                health_check_interval=health_check_interval,
                password=password,
                ssl_cert_reqs=ssl_cert_reqs,
                ssl_ca_certs=ssl_ca_certs,
                socket_timeout=socket_timeout,
                namespace=namespace,
                cluster_nodes=list(cluster_nodes) if cluster_nodes is not None else None,
                sentinels=list(sentinels) if sentinels is not None else None,
                service_name=service_name,
                local_tier_max_bytes=local_tier_max_bytes,
            )
        )
