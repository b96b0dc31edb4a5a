"""The guide's Redis examples for passwords, TLS and Cluster, and a Sentinel group, run as
written against real servers (only the addresses and the CA's path are this machine's)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

import pytest
from redis_topologies import Cluster, Sentinel, Tls, cli, entries, redis, redis_cluster, redis_sentinel, tls_redis, wait_until
from test_guide import APP_ONLY, HIGH_AVAILABILITY, REDIS_AUTH, module, two_gets, with_address

from conftest import free_port

USE_IT = "app.add_middleware(CacheMiddleware, backend=redis_backend)\n"
IMPORT = "from cache_middleware.backends.redis_backend import RedisBackend\n"
ITEMS = '''
@app.get("/items/{item_id}")
@cache(timeout=600)
async def read_item(item_id: int):
    return {"item_id": item_id}
'''
DEBUG_LOG = "import sys\nfrom cache_middleware.logger_config import logger\nlogger.add(sys.stderr, level=\"DEBUG\")\n"
PASSWORD_PART, TLS_PART = REDIS_AUTH.split("# Redis with SSL")


@pytest.fixture
def tls(tmp_path: Path) -> Iterator[Tls]:
    server = tls_redis(tmp_path, "secure-password")
    yield server
    server.server.stop()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    started = redis_cluster(tmp_path)
    yield started
    for node in started.nodes:
        node.stop()


@pytest.fixture
def sentinel(tmp_path: Path) -> Iterator[Sentinel]:
    started = redis_sentinel(tmp_path)
    yield started
    for server in started.servers():
        server.stop()


def test_the_guides_password_in_the_url(serve, client, tmp_path) -> None:
    server = redis(tmp_path, free_port(), "--requirepass", "password")
    try:
        snippet = with_address(PASSWORD_PART, "redis-host:6379", f"127.0.0.1:{server.port}")
        app = serve("main:app", cwd=module(tmp_path, APP_ONLY, IMPORT, snippet, USE_IT, ITEMS))
        first, second = two_gets(client, f"{app.url}/items/1")
        assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "HIT")
        keys = entries(cli("-p", str(server.port), "-a", "password", "--no-auth-warning", "--scan"))
        assert len(keys) == 1, keys
        assert "password@" not in app.output()
    finally:
        server.stop()


def test_the_guides_tls_example_caches_over_tls_and_never_shows_the_password(serve, client, tmp_path, tls) -> None:
    snippet = with_address(TLS_PART, "redis-host:6380", f"localhost:{tls.port}")
    snippet = with_address(snippet, "/path/to/ca.pem", str(tls.ca))
    app = serve("main:app", cwd=module(tmp_path, APP_ONLY, IMPORT, snippet, USE_IT, ITEMS, DEBUG_LOG))
    for item in range(3):
        first, second = two_gets(client, f"{app.url}/items/{item}")
        assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "HIT")
    assert len(entries(tls.cli("secure-password", "--scan"))) == 3
    assert "secure-password" not in app.output()


def test_a_tls_server_whose_certificate_the_ca_did_not_sign_is_refused_and_the_app_runs_uncached(serve, client, tmp_path, tls) -> None:
    # The system's roots do not know this test CA: verification must fail, never be skipped.
    snippet = with_address(TLS_PART, "redis-host:6380", f"localhost:{tls.port}")
    snippet = with_address(snippet, '    ssl_ca_certs="/path/to/ca.pem"\n', "")
    app = serve("main:app", cwd=module(tmp_path, APP_ONLY, IMPORT, snippet, USE_IT, ITEMS))
    first, second = two_gets(client, f"{app.url}/items/1")
    assert (first.status_code, second.status_code) == (200, 200)
    assert second.headers.get("x-cache") != "HIT"
    assert entries(tls.cli("secure-password", "--scan")) == []


def test_the_guides_cluster_example_names_one_node_and_reaches_every_master(serve, client, tmp_path, cluster) -> None:
    snippet = with_address(HIGH_AVAILABILITY, "redis-cluster-node1:6379", f"127.0.0.1:{cluster.ports[1]}")
    app = serve("main:app", cwd=module(tmp_path, APP_ONLY, IMPORT, snippet, USE_IT, ITEMS))
    for item in range(40):
        first, second = two_gets(client, f"{app.url}/items/{item}")
        assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "HIT"), item
        assert second.json() == {"item_id": item}
    per_node = cluster.keys_per_node()
    assert sum(per_node) == 40 and all(n > 0 for n in per_node), per_node


def test_sentinel_finds_the_master_and_follows_a_failover_without_a_failed_request(serve, client, tmp_path, sentinel) -> None:
    code = IMPORT + f'redis_backend = RedisBackend(sentinels=["{sentinel.url}"], service_name="mymaster", retry_on_timeout=True)\n'
    app = serve("main:app", cwd=module(tmp_path, APP_ONLY, code, USE_IT, ITEMS))
    first, second = two_gets(client, f"{app.url}/items/1")
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "HIT")
    old_master = sentinel.master.port
    # The sentinel refuses (NOGOODSLAVE) until it knows the replica well enough.
    wait_until("the sentinel to start a failover", lambda: cli("-p", str(sentinel.sentinel.port), "SENTINEL", "FAILOVER", "mymaster") == "OK")
    wait_until("the sentinel to promote the replica", lambda: sentinel.master_port() != old_master, limit=60)
    # Every request answers while the backend finds the new master; then entries are stored there.
    deadline = time.monotonic() + 30
    item = 100
    while True:
        first, second = two_gets(client, f"{app.url}/items/{item}")
        assert (first.status_code, second.status_code) == (200, 200)
        if second.headers["x-cache"] == "HIT":
            break
        assert time.monotonic() < deadline, "no entry was stored after the failover"
        item += 1
        time.sleep(0.2)
    new_master = sentinel.master_port()
    assert entries(cli("-p", str(new_master), "--scan")), "entries are stored on the new master"

