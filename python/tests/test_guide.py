"""The user guide's Python code, as written, run and checked over HTTP.

Each snippet below is copied from the guide (`spec/user-guide.rst`) without change. Snippets that
continue an earlier one (they use `app` or `CacheMiddleware` without defining them) run after the
guide's minimal example, as a reader would paste them. The only substitution is the address of a
server the guide names (`localhost:6379`, `prod-redis:6379`): the tests start their own on free
ports; every snippet also runs once with the address exactly as written.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Dict, Optional

import httpx

MINIMAL = '''
from fastapi import FastAPI
from cache_middleware.middleware import CacheMiddleware
from cache_middleware.backends.memory_backend import MemoryBackend
from cache_middleware.decorators import cache

app = FastAPI()

# Configure in-memory backend
memory_backend = MemoryBackend(max_size=1000)
app.add_middleware(CacheMiddleware, backend=memory_backend)

@app.get("/")
@cache(timeout=300)  # Cache for 5 minutes
async def read_root():
    return {"Hello": "World"}

@app.get("/items/{item_id}")
@cache(timeout=600)  # Cache for 10 minutes
async def read_item(item_id: int, q: str = None):
    return {"item_id": item_id, "q": q}
'''

# The minimal example without its backend: the snippets that configure one come after it.
APP_ONLY = '''
from fastapi import FastAPI
from cache_middleware.middleware import CacheMiddleware
from cache_middleware.decorators import cache

app = FastAPI()
'''

ROUTES = '''
@app.get("/")
@cache(timeout=300)  # Cache for 5 minutes
async def read_root():
    return {"Hello": "World"}
'''

REDIS_BASIC = '''
from cache_middleware.backends.redis_backend import RedisBackend

# Basic configuration
redis_backend = RedisBackend(url="redis://localhost:6379")
app.add_middleware(CacheMiddleware, backend=redis_backend)
'''

REDIS_ADVANCED = '''
# Production configuration with connection pooling
redis_backend = RedisBackend(
    url="redis://prod-redis:6379",
    max_connections=20,
    retry_on_timeout=True,
    socket_keepalive=True,
    socket_keepalive_options={
        1: 1,  # TCP_KEEPIDLE
        2: 3,  # TCP_KEEPINTVL  
        3: 5,  # TCP_KEEPCNT
    },
    health_check_interval=30
)
app.add_middleware(CacheMiddleware, backend=redis_backend)
'''

REDIS_AUTH = '''
# Redis with password
redis_backend = RedisBackend(
    url="redis://:password@redis-host:6379",
    max_connections=10
)

# Redis with SSL
redis_backend = RedisBackend(
    url="rediss://redis-host:6380",
    password="secure-password",
    ssl_cert_reqs="required",
    ssl_ca_certs="/path/to/ca.pem"
)
'''

MEMORY = '''
from cache_middleware.backends.memory_backend import MemoryBackend

# Basic memory backend
memory_backend = MemoryBackend(max_size=1000)

# Larger cache for development
memory_backend = MemoryBackend(max_size=5000)
app.add_middleware(CacheMiddleware, backend=memory_backend)
'''

ENVIRONMENT = '''
from cache_middleware.helpers import auto_configure_backend
import os

# Automatically configure based on environment variables
backend = auto_configure_backend()
app.add_middleware(CacheMiddleware, backend=backend)
'''

POST_BODY = '''
from fastapi import Body

@app.post("/calculate")
@cache(timeout=300)
async def calculate(data: dict = Body(...)):
    # Expensive calculation
    numbers = data.get("numbers", [])
    result = sum(x ** 2 for x in numbers)
    return {"input": data, "result": result}
'''

TIMEOUTS = '''
@app.get("/users/{user_id}")
@cache(timeout=1800)  # 30 minutes for user data
async def get_user(user_id: int):
    return {"user_id": user_id, "name": f"User {user_id}"}

@app.get("/stats")
@cache(timeout=60)  # 1 minute for frequently changing stats
async def get_stats():
    return {"requests": 12345, "active_users": 678}

@app.get("/config")
@cache(timeout=3600)  # 1 hour for rarely changing config
async def get_config():
    return {"version": "1.0", "features": ["caching", "auth"]}
'''

CACHE_CONTROL = '''
@app.get("/data")
@cache(timeout=300)
async def get_data():
    return {"data": "cached_value"}

# Client usage:
# GET /data - Returns cached response
# GET /data with "Cache-Control: no-cache" - Forces fresh response
# GET /data with "Cache-Control: no-store" - Bypasses cache entirely
'''

MULTI_ENVIRONMENT = '''
import os
from cache_middleware.helpers import get_backend_for_environment

app = FastAPI()

# Auto-configure based on environment
env = os.getenv("ENVIRONMENT", "development")
backend = get_backend_for_environment(env)
app.add_middleware(CacheMiddleware, backend=backend)
'''

HIGH_AVAILABILITY = '''
# Redis Cluster
redis_backend = RedisBackend(
    url="redis://redis-cluster-node1:6379",
    max_connections=50,
    retry_on_timeout=True,
    health_check_interval=30,
    socket_keepalive=True
)

# Redis Sentinel (requires custom configuration)
# See Redis documentation for Sentinel setup
'''

LOGGING = '''
from cache_middleware.logger_config import configure_logger, logger
import sys

# Configure detailed logging
configure_logger()
logger.add(
    "cache_middleware.log", 
    rotation="10 MB", 
    level="INFO",
    format="{time} | {level} | {message}"
)
logger.add(sys.stderr, level="DEBUG")
'''

BENCHMARK = '''
import time
import asyncio
from cache_middleware.backends.memory_backend import MemoryBackend
from cache_middleware.backends.redis_backend import RedisBackend

async def benchmark_backend(backend, iterations=1000):
    start_time = time.time()
    
    for i in range(iterations):
        await backend.set(f"key_{i}", f"value_{i}", 300)
        value = await backend.get(f"key_{i}")
    
    end_time = time.time()
    print(f"Backend {type(backend).__name__}: {end_time - start_time:.2f}s")
'''

WARMING = '''
@app.on_event("startup")
async def warm_cache():
    """Warm up cache with frequently accessed data"""
    # Pre-cache common queries
    backend = app.state.cache_backend
    await backend.set("config:version", "1.0", 3600)
    await backend.set("stats:global", '{"users": 1000}', 300)
'''

REDIS_CONNECTIVITY = '''
# Test Redis connectivity
import redis
r = redis.Redis.from_url("redis://localhost:6379")
try:
    r.ping()
    print("Redis connection successful")
except redis.ConnectionError:
    print("Redis connection failed")
'''

DEBUG_MODE = '''
import logging
from cache_middleware.logger_config import logger

# Enable debug logging
logger.add(sys.stderr, level="DEBUG")

# This will show cache hits, misses, and key generation
@app.get("/debug")
@cache(timeout=60)
async def debug_endpoint():
    return {"timestamp": time.time()}
'''


def module(tmp_path: Path, *snippets: str, name: str = "main") -> Path:
    code = "\n".join(textwrap.dedent(s) for s in snippets)
    (tmp_path / f"{name}.py").write_text(code)
    return tmp_path


def with_address(snippet: str, written: str, actual: str) -> str:
    assert written in snippet, written
    return snippet.replace(written, actual)


def two_gets(client: httpx.Client, url: str, headers: Optional[Dict[str, str]] = None) -> tuple:
    first = client.get(url, headers=headers)
    second = client.get(url, headers=headers)
    return first, second


def test_the_minimal_example(serve, client, tmp_path) -> None:
    app = serve("main:app", cwd=module(tmp_path, MINIMAL))
    first, second = two_gets(client, f"{app.url}/")
    assert first.json() == {"Hello": "World"}
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "HIT")
    item, again = two_gets(client, f"{app.url}/items/5?q=x")
    assert item.json() == {"item_id": 5, "q": "x"}
    assert again.headers["x-cache"] == "HIT"


def test_redis_basic_and_advanced_as_written_run_uncached_without_a_server(serve, client, tmp_path) -> None:
    # Nothing listens on the guide's addresses here: the app still answers, only uncached.
    for i, snippet in enumerate([REDIS_BASIC, "from cache_middleware.backends.redis_backend import RedisBackend\n" + REDIS_ADVANCED]):
        directory = tmp_path / f"v{i}"
        directory.mkdir()
        app = serve("main:app", cwd=module(directory, APP_ONLY, snippet, ROUTES))
        first, second = two_gets(client, f"{app.url}/")
        assert (first.status_code, second.status_code) == (200, 200)
        assert second.json() == {"Hello": "World"}


def test_redis_basic_and_advanced_cache_with_a_server(serve, client, tmp_path, redis_url) -> None:
    address = redis_url.removeprefix("redis://")
    snippets = [
        with_address(REDIS_BASIC, "localhost:6379", address),
        "from cache_middleware.backends.redis_backend import RedisBackend\n"
        + with_address(REDIS_ADVANCED, "prod-redis:6379", address),
    ]
    for i, snippet in enumerate(snippets):
        directory = tmp_path / f"v{i}"
        directory.mkdir()
        app = serve("main:app", cwd=module(directory, APP_ONLY, snippet, ROUTES))
        client.get(f"{app.url}/?round={i}")
        assert client.get(f"{app.url}/?round={i}").headers["x-cache"] == "HIT"


def test_backends_with_authentication_tls_and_cluster_are_built_as_written(tmp_path) -> None:
    code = "from cache_middleware.backends.redis_backend import RedisBackend\n" + REDIS_AUTH + HIGH_AVAILABILITY
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "secure-password" not in done.stdout + done.stderr


def test_memory_backend_snippet(serve, client, tmp_path) -> None:
    app = serve("main:app", cwd=module(tmp_path, APP_ONLY, MEMORY, ROUTES))
    assert two_gets(client, f"{app.url}/")[1].headers["x-cache"] == "HIT"


def test_environment_configuration(serve, client, tmp_path, redis_url) -> None:
    (tmp_path / "memory").mkdir()
    (tmp_path / "redis").mkdir()
    memory = serve("main:app", cwd=module(tmp_path / "memory", APP_ONLY, ENVIRONMENT, ROUTES), env={"CACHE_BACKEND": "memory", "MEMORY_CACHE_SIZE": "1000"})
    assert two_gets(client, f"{memory.url}/")[1].headers["x-cache"] == "HIT"
    redis = serve(
        "main:app",
        cwd=module(tmp_path / "redis", APP_ONLY, ENVIRONMENT, ROUTES),
        env={"CACHE_BACKEND": "redis", "REDIS_URL": redis_url, "REDIS_MAX_CONNECTIONS": "20"},
    )
    assert two_gets(client, f"{redis.url}/")[1].headers["x-cache"] == "HIT"


def test_a_wrong_environment_variable_is_named_with_the_accepted_values(tmp_path) -> None:
    code = "from cache_middleware.helpers import auto_configure_backend\nauto_configure_backend()\n"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=60,
        env={"CACHE_BACKEND": "redsi", "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode != 0
    assert "CACHE_BACKEND" in done.stderr and "memory, redis, memcached" in done.stderr


def test_post_timeouts_and_request_cache_control(serve, client, tmp_path) -> None:
    app = serve("main:app", cwd=module(tmp_path, MINIMAL, POST_BODY, TIMEOUTS, CACHE_CONTROL))
    body = {"numbers": [1, 2, 3]}
    first = client.post(f"{app.url}/calculate", json=body)
    second = client.post(f"{app.url}/calculate", json=body)
    assert first.json() == {"input": body, "result": 14}
    assert second.headers["x-cache"] == "HIT"
    for path in ("/users/7", "/stats", "/config"):
        assert two_gets(client, f"{app.url}{path}")[1].headers["x-cache"] == "HIT", path
    client.get(f"{app.url}/data")
    assert client.get(f"{app.url}/data").headers["x-cache"] == "HIT"
    assert client.get(f"{app.url}/data", headers={"cache-control": "no-cache"}).headers["x-cache"] == "REFRESH"
    assert client.get(f"{app.url}/data", headers={"cache-control": "no-store"}).headers["x-cache"] == "BYPASS"


def test_backends_per_environment(serve, client, tmp_path, redis_url) -> None:
    app = serve("main:app", cwd=module(tmp_path, APP_ONLY, MULTI_ENVIRONMENT, ROUTES), env={"ENVIRONMENT": "development"})
    assert two_gets(client, f"{app.url}/")[1].headers["x-cache"] == "HIT"
    (tmp_path / "p").mkdir()
    production = serve(
        "main:app",
        cwd=module(tmp_path / "p", APP_ONLY, MULTI_ENVIRONMENT, ROUTES),
        env={"ENVIRONMENT": "production", "REDIS_URL": redis_url, "REDIS_MAX_CONNECTIONS": "50"},
    )
    assert two_gets(client, f"{production.url}/")[1].headers["x-cache"] == "HIT"


def test_logging_and_debug_mode_show_hits_misses_and_key_generation(serve, client, tmp_path) -> None:
    # The debug snippet uses `sys` and `time` that the guide imports in the snippets before it.
    app = serve("main:app", cwd=module(tmp_path, MINIMAL, LOGGING, "import time\n", DEBUG_MODE))
    two_gets(client, f"{app.url}/debug")
    shown = app.output()
    assert "cache key generated" in shown
    assert "cache miss" in shown
    assert "cache hit" in shown
    log_file = (tmp_path / "cache_middleware.log").read_text()
    assert "DEBUG" not in log_file  # the file handler is at INFO


def test_benchmark_snippet_runs_on_memory_and_redis(tmp_path, redis_url) -> None:
    code = BENCHMARK + textwrap.dedent(
        f'''
        asyncio.run(benchmark_backend(MemoryBackend(max_size=5000), iterations=200))
        asyncio.run(benchmark_backend(RedisBackend(url="{redis_url}"), iterations=200))
        '''
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("Backend MemoryBackend: ") and lines[1].startswith("Backend RedisBackend: "), lines


def test_cache_warming_reads_the_backend_from_app_state(serve, client, tmp_path) -> None:
    check = '''
@app.get("/warmed")
async def warmed():
    return {"version": await app.state.cache_backend.get("config:version")}
'''
    app = serve("main:app", cwd=module(tmp_path, MINIMAL, WARMING, check))
    assert client.get(f"{app.url}/warmed").json() == {"version": "1.0"}


def test_redis_connectivity_snippet_runs(tmp_path) -> None:
    done = subprocess.run([sys.executable, "-c", REDIS_CONNECTIVITY], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() in {"Redis connection successful", "Redis connection failed"}
