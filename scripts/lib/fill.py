"""A slow streaming origin and the clients of scripts/fill-report.sh (standard library only).

    fill.py origin PORT DELAY_MS         serve /obj/SIZE/NAME: SIZE bytes in 64 KiB chunks, DELAY_MS
                                         apart, cacheable (/chunked/SIZE/NAME: the same without a
                                         length, sent chunked); /count/KIND/SIZE/NAME: how often
                                         /KIND/SIZE/NAME was asked
    fill.py ttfb ORIGIN PROXY ROUNDS [KIND [NAME]]
                                         time to first body byte of a cold 8 MiB object (KIND obj or
                                         chunked), straight from the origin and through the proxy,
                                         taking turns, each once the proxy finished receiving the
                                         previous one (objects named NAME-..., ttfb by default)
    fill.py crowd PROXY ORIGIN N SIZE [NAME [KIND]]
                                         N concurrent clients on one object (/KIND/SIZE/NAME, NAME
                                         crowd and KIND obj by default): every body checked
    fill.py dropped PROXY ORIGIN [KIND]  a client that leaves mid-body; the next request
    fill.py ranges PROXY                 ranges of a stored object

Each object's chunk i is 64 KiB starting with i as 8 bytes, so a reordered or missing chunk shows.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import statistics
import sys
import time
from typing import Dict, List, Tuple

CHUNK = 64 * 1024
BLOCK = bytes(range(256)) * (CHUNK // 256)


def chunk(i: int) -> bytes:
    return i.to_bytes(8, "big") + BLOCK[8:]


def expected(size: int) -> Tuple[str, bytes]:
    digest = hashlib.sha256()
    whole = bytearray()
    for i in range(size // CHUNK):
        digest.update(chunk(i))
        if i < 32:
            whole += chunk(i)
    return digest.hexdigest(), bytes(whole)


async def origin(port: int, delay_ms: float) -> None:
    counts: Dict[str, int] = {}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            return
        path = head.split(b" ", 2)[1].decode()
        if path.startswith("/count/"):
            body = json.dumps(counts.get(path[len("/count"):], 0)).encode()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
            await writer.drain()
            writer.close()
            return
        counts[path] = counts.get(path, 0) + 1
        size = int(path.split("/")[2])
        chunked = path.startswith("/chunked/")
        framing = b"Transfer-Encoding: chunked" if chunked else b"Content-Length: %d" % size
        writer.write(
            b"HTTP/1.1 200 OK\r\n%s\r\nCache-Control: public, max-age=600\r\n"
            b"Content-Type: application/octet-stream\r\nConnection: close\r\n\r\n" % framing
        )
        try:
            for i in range(size // CHUNK):
                writer.write(b"%x\r\n%s\r\n" % (CHUNK, chunk(i)) if chunked else chunk(i))
                await writer.drain()
                if delay_ms:
                    await asyncio.sleep(delay_ms / 1000)
            if chunked:
                writer.write(b"0\r\n\r\n")
                await writer.drain()
        except ConnectionError:
            pass
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


async def request(port: int, path: str, headers: str = "") -> Tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}Connection: close\r\n\r\n".encode())
    await writer.drain()
    return reader, writer


async def read_head(reader: asyncio.StreamReader) -> Tuple[int, Dict[str, str]]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    fields = {}
    for line in head[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            fields[name.strip().lower()] = value.strip()
    return int(head[0].split()[1]), fields


async def first_body_byte(port: int, path: str) -> float:
    """Seconds from sending the request to the first byte of the body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.perf_counter()
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    await read_head(reader)
    await reader.readexactly(1)
    elapsed = time.perf_counter() - started
    writer.close()
    return elapsed


async def count(origin_port: int, path: str) -> int:
    reader, writer = await request(origin_port, "/count" + path)
    await read_head(reader)
    value = int(await reader.read())
    writer.close()
    return value


async def ttfb(origin_port: int, proxy_port: int, rounds: int, kind: str = "obj", name: str = "ttfb") -> None:
    size = 8 * 1024 * 1024
    direct: List[float] = []
    proxied: List[float] = []
    for r in range(rounds):
        direct.append(await first_body_byte(origin_port, f"/{kind}/{size}/{name}-direct-{r}"))
        proxied.append(await first_body_byte(proxy_port, f"/{kind}/{size}/{name}-proxy-{r}"))
        # The proxy goes on receiving the object it was asked for (the client left after a byte):
        # let it finish, so that the next round starts on an idle origin and proxy.
        await asyncio.sleep(size // CHUNK * 0.003)
    differences = [(p - d) * 1000 for d, p in zip(direct, proxied)]
    print(json.dumps({
        "rounds": rounds,
        "origin_ms_median": statistics.median(direct) * 1000,
        "proxy_ms_median": statistics.median(proxied) * 1000,
        "difference_ms_median": statistics.median(differences),
        "difference_ms_min": min(differences),
        "difference_ms_max": max(differences),
        "difference_ms_p90": sorted(differences)[int(0.9 * (len(differences) - 1))],
    }))


async def read_body(port: int, path: str) -> Tuple[int, Dict[str, str], str, int]:
    """The status, fields, body digest and body length of a response (chunked or not)."""
    reader, writer = await request(port, path)
    status, fields = await read_head(reader)
    digest = hashlib.sha256()
    received = 0
    chunked = fields.get("transfer-encoding", "").lower() == "chunked"
    while True:
        if chunked:
            size = int((await reader.readline()).split(b";")[0].strip(), 16)
            if size == 0:
                while (await reader.readline()) not in (b"\r\n", b""):
                    pass  # trailer fields
                break
            data = await reader.readexactly(size)
            await reader.readexactly(2)
        else:
            data = await reader.read(1 << 20)
            if not data:
                break
        digest.update(data)
        received += len(data)
    writer.close()
    return status, fields, digest.hexdigest(), received


async def crowd(
    proxy_port: int, origin_port: int, clients: int, size: int, name: str = "crowd", kind: str = "obj"
) -> None:
    path = f"/{kind}/{size}/{name}"
    want, _ = expected(size)
    started = time.perf_counter()
    results = await asyncio.gather(*(read_body(proxy_port, path) for _ in range(clients)))
    elapsed = time.perf_counter() - started
    exact = sum(1 for status, _, digest, received in results if status == 200 and digest == want and received == size)
    caches: Dict[str, int] = {}
    for _, fields, _, _ in results:
        caches[fields.get("x-cache", "-")] = caches.get(fields.get("x-cache", "-"), 0) + 1
    print(json.dumps({
        "clients": clients,
        "size": size,
        "exact_bodies": exact,
        "origin_fetches": await count(origin_port, path),
        "x_cache": caches,
        "seconds": elapsed,
    }))


async def dropped(proxy_port: int, origin_port: int, kind: str = "obj") -> None:
    size = 8 * 1024 * 1024
    path = f"/{kind}/{size}/dropped"
    reader, writer = await request(proxy_port, path)
    await read_head(reader)
    await reader.readexactly(1 << 20)
    writer.close()  # gone after 1 MiB
    await asyncio.sleep(0.2)
    status, fields, digest, received = await read_body(proxy_port, path)
    print(json.dumps({
        "after_drop_status": status,
        "after_drop_x_cache": fields.get("x-cache"),
        "after_drop_exact": digest == expected(size)[0] and received == size,
        "origin_fetches": await count(origin_port, path),
    }))


async def ranges(proxy_port: int) -> None:
    size = 8 * 1024 * 1024
    path = f"/obj/{size}/ranges"
    await read_body(proxy_port, path)
    _, start = expected(size)
    checks = {}
    for first, last in ((0, 99), (70_000, 200_000), (1_000_000, 1_000_000)):
        reader, writer = await request(proxy_port, path, f"Range: bytes={first}-{last}\r\n")
        status, fields = await read_head(reader)
        data = await reader.read()
        writer.close()
        checks[f"{first}-{last}"] = {
            "status": status,
            "content_range": fields.get("content-range"),
            "exact": data == start[first:last + 1],
        }
    reader, writer = await request(proxy_port, path, f"Range: bytes={size}-\r\n")
    status, fields = await read_head(reader)
    writer.close()
    checks["past-the-end"] = {"status": status, "content_range": fields.get("content-range")}
    print(json.dumps(checks))


def main() -> None:
    what, args = sys.argv[1], sys.argv[2:]
    if what == "origin":
        asyncio.run(origin(int(args[0]), float(args[1])))
    elif what == "ttfb":
        asyncio.run(ttfb(int(args[0]), int(args[1]), int(args[2]), *args[3:5]))
    elif what == "crowd":
        asyncio.run(crowd(int(args[0]), int(args[1]), int(args[2]), int(args[3]), *args[4:6]))
    elif what == "dropped":
        asyncio.run(dropped(int(args[0]), int(args[1]), *args[2:3]))
    elif what == "ranges":
        asyncio.run(ranges(int(args[0])))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
