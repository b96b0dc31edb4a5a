"""Real servers on free loopback ports: the application under uvicorn, redis-server, memcached.

A server binary that is missing fails the test that needs it, with the reason: nothing is skipped
in silence.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Dict, Iterator, List, Optional

import httpx
import pytest

if TYPE_CHECKING:
    from cache_middleware.backends.base import CacheBackend

HERE = Path(__file__).parent
REPO = HERE.parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen, what: str, log: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}:\n{log.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port}:\n{log.read_text()}")


class Server:
    """A process we started, stopped by its PID."""

    def __init__(self, args: List[str], port: int, what: str, tmp: Path, env: Optional[Dict[str, str]] = None, cwd: Optional[Path] = None) -> None:
        self.port = port
        self.log = tmp / f"{what.replace(' ', '-')}-{port}.log"
        self.process = subprocess.Popen(
            args,
            stdout=self.log.open("w"),
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=str(cwd) if cwd else None,
        )
        wait_for_port(port, self.process, what, self.log)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def require(binary: str) -> str:
    found = shutil.which(binary)
    if found is None:
        pytest.fail(f"{binary} is not installed: ./scripts/test.sh installs it from Debian's packages")
    return found


@pytest.fixture
def serve(tmp_path: Path) -> Iterator:
    """`serve("apps.basic:app", env={...})`: the application under uvicorn (one worker)."""
    started: List[Server] = []

    def start(target: str, env: Optional[Dict[str, str]] = None, cwd: Path = HERE) -> Server:
        port = free_port()
        server = Server(
            [sys.executable, "-m", "uvicorn", target, "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
            port,
            f"uvicorn {target}",
            tmp_path,
            env={"PYTHONPATH": str(cwd), **(env or {})},
            cwd=cwd,
        )
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    binary = require("redis-server")
    port = free_port()
    server = Server([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], port, "redis-server", tmp_path)
    yield f"redis://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def memcached_url(tmp_path: Path) -> Iterator[str]:
    binary = require("memcached")
    port = free_port()
    args = [binary, "-l", "127.0.0.1", "-p", str(port), "-U", "0"]
    if os.geteuid() == 0:
        args += ["-u", "root"]  # memcached refuses to run as root without naming the user
    server = Server(args, port, "memcached", tmp_path)
    yield f"memcached://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as c:
        yield c


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> "CacheBackend":
    """The memory backend, or Redis without the local tier: every lookup then waits on Redis, so
    every request needs its wake-up to reach the loop it runs on."""
    from cache_middleware.backends.memory_backend import MemoryBackend
    from cache_middleware.backends.redis_backend import RedisBackend

    if request.param == "memory":
        return MemoryBackend(max_size=1000)
    return RedisBackend(url=request.getfixturevalue("redis_url"), local_tier_max_bytes=0)
