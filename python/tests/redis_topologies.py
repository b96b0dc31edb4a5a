"""Redis set-ups beyond one plain server, started on free loopback ports for a test: TLS with a
CA made for it, a three-master Cluster, and a master with a replica watched by a Sentinel."""

from __future__ import annotations

import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List

from conftest import Server, free_port, require


def wait_until(what: str, ready: Callable[[], bool], limit: float = 30.0) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.1)
    raise RuntimeError(f"gave up waiting for {what} after {limit:.0f} s")


def cli(*args: str) -> str:
    done = subprocess.run([require("redis-cli"), *args], capture_output=True, text=True, timeout=30)
    return done.stdout.strip()


def entries(scan: str) -> List[str]:
    """The keys of a `--scan` that are cache entries (not a fleet lease on its way out)."""
    return [key for key in scan.split() if ":lease:" not in key]


def redis(tmp: Path, port: int, *extra: str, listen: int = 0) -> Server:
    """A redis-server on `port` (0: no plain port) that keeps nothing on disk."""
    directory = tmp / f"redis-{port or listen}"
    directory.mkdir()
    args = [require("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(directory), *extra]
    return Server(args, listen or port, "redis-server", tmp)


@dataclass
class Tls:
    server: Server
    port: int
    ca: Path

    def cli(self, password: str, *args: str) -> str:
        return cli("-p", str(self.port), "--tls", "--cacert", str(self.ca), "-a", password, "--no-auth-warning", *args)


def tls_redis(tmp: Path, password: str) -> Tls:
    """A TLS-only server asking for `password`, its certificate signed by a CA made here for
    `localhost` and 127.0.0.1."""
    openssl = require("openssl")
    directory = tmp / "tls"
    directory.mkdir()

    def run(*args: str) -> None:
        done = subprocess.run([openssl, *args], cwd=directory, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=cache-middleware test CA")
    run("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost")
    (directory / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "san.ext")
    port = free_port()
    server = redis(
        tmp, 0,
        "--tls-port", str(port),
        "--tls-cert-file", str(directory / "server.crt"),
        "--tls-key-file", str(directory / "server.key"),
        "--tls-ca-cert-file", str(directory / "ca.crt"),
        "--tls-auth-clients", "no",
        "--requirepass", password,
        listen=port,
    )
    return Tls(server, port, directory / "ca.crt")


def _free_cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free too."""
    while True:
        port = free_port()
        if port + 10000 < 65536:
            try:
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port + 10000))
                return port
            except OSError:
                continue


@dataclass
class Cluster:
    nodes: List[Server]

    @property
    def ports(self) -> List[int]:
        return [node.port for node in self.nodes]

    def keys_per_node(self, pattern: str = "*") -> List[int]:
        return [len(entries(cli("-p", str(port), "--scan", "--pattern", pattern))) for port in self.ports]


def redis_cluster(tmp: Path) -> Cluster:
    """Three masters sharing the 16384 slots."""
    nodes = []
    for _ in range(3):
        port = _free_cluster_port()
        nodes.append(redis(tmp, port, "--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf", "--cluster-node-timeout", "5000"))
    cluster = Cluster(nodes)
    created = subprocess.run(
        [require("redis-cli"), "--cluster", "create", *(f"127.0.0.1:{p}" for p in cluster.ports), "--cluster-replicas", "0", "--cluster-yes"],
        capture_output=True, text=True, timeout=60,
    )
    assert created.returncode == 0, created.stdout + created.stderr
    for port in cluster.ports:
        wait_until("the cluster to be ok", lambda: "cluster_state:ok" in cli("-p", str(port), "CLUSTER", "INFO"))
    return cluster


@dataclass
class Sentinel:
    master: Server
    replica: Server
    sentinel: Server
    name: str = "mymaster"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.sentinel.port}"

    def master_port(self) -> int:
        reply = cli("-p", str(self.sentinel.port), "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.name).split()
        return int(reply[1])

    def servers(self) -> List[Server]:
        return [self.sentinel, self.replica, self.master]


def redis_sentinel(tmp: Path) -> Sentinel:
    """A master, one replica, and one Sentinel watching them as `mymaster`."""
    master = redis(tmp, free_port())
    replica = redis(tmp, free_port(), "--replicaof", "127.0.0.1", str(master.port))
    wait_until("the replica to sync", lambda: "master_link_status:up" in cli("-p", str(replica.port), "INFO", "replication"))
    port = free_port()
    directory = tmp / "sentinel"
    directory.mkdir()
    config = directory / "sentinel.conf"
    config.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {directory}\n"
        f"sentinel monitor mymaster 127.0.0.1 {master.port} 1\n"
        "sentinel down-after-milliseconds mymaster 1000\n"
        "sentinel failover-timeout mymaster 5000\n"
    )
    sentinel = Server([require("redis-server"), str(config), "--sentinel"], port, "redis-sentinel", tmp)
    setup = Sentinel(master, replica, sentinel)
    wait_until(
        "the sentinel to see the replica",
        lambda: str(replica.port) in cli("-p", str(port), "SENTINEL", "REPLICAS", "mymaster"),
    )
    return setup
