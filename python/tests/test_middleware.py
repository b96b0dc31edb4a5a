"""The middleware over HTTP: a real uvicorn on loopback, answers as a client sees them."""

from __future__ import annotations

import concurrent.futures
import subprocess
import time
from pathlib import Path
from typing import Dict, Iterator, Tuple

import httpx
import pytest
from conftest import REPO, Server, free_port, require


def runs(client: httpx.Client, base: str, name: str) -> int:
    return int(client.get(f"{base}/runs/{name}").json()["runs"])


@pytest.fixture(params=["memory", "redis", "memcached"])
def backend_env(request: pytest.FixtureRequest) -> Dict[str, str]:
    if request.param == "memory":
        return {"CACHE_BACKEND": "memory"}
    if request.param == "redis":
        return {"CACHE_BACKEND": "redis", "REDIS_URL": request.getfixturevalue("redis_url")}
    return {"CACHE_BACKEND": "memcached", "MEMCACHED_URL": request.getfixturevalue("memcached_url")}


def test_a_cached_route_is_answered_from_the_cache_with_the_same_bytes(serve, client, backend_env) -> None:
    app = serve("apps.basic:app", env=backend_env)
    first = client.get(f"{app.url}/bytes")
    second = client.get(f"{app.url}/bytes")
    assert first.headers["x-cache"] == "MISS"
    assert second.headers["x-cache"] == "HIT"
    assert second.content == first.content == bytes(range(256)) * 4
    for name in ("content-type", "x-one", "x-two", "etag", "content-length"):
        assert second.headers[name] == first.headers[name], name
    assert int(second.headers["age"]) >= 0
    assert runs(client, app.url, "bytes") == 1


def test_keys_tell_paths_and_queries_apart_as_sent(serve, client) -> None:
    app = serve("apps.basic:app", env={"CACHE_BACKEND": "memory"})
    assert client.get(f"{app.url}/items/1?q=a&r=b").json()["run"] == 1
    assert client.get(f"{app.url}/items/1?q=a&&r=b").headers["x-cache"] == "HIT"
    assert client.get(f"{app.url}/items/2?q=a&r=b").json()["run"] == 2
    assert client.get(f"{app.url}/items/1?q=%27").json()["run"] == 3
    assert client.get(f"{app.url}/items/1?q='").json()["run"] == 4
    # The last value of a name is the one the route reads: the order of pairs counts.
    assert client.get(f"{app.url}/items/1?q=a&q=b").json() == {"item_id": 1, "q": "b", "run": 5}
    assert client.get(f"{app.url}/items/1?q=b&q=a").json() == {"item_id": 1, "q": "a", "run": 6}


def test_post_is_keyed_by_its_body(serve, client) -> None:
    app = serve("apps.basic:app", env={"CACHE_BACKEND": "memory"})
    one = client.post(f"{app.url}/calculate", json={"numbers": [1, 2, 3]})
    again = client.post(f"{app.url}/calculate", json={"numbers": [1, 2, 3]})
    other = client.post(f"{app.url}/calculate", json={"numbers": [4]})
    assert (one.json()["result"], again.headers["x-cache"], other.json()["result"]) == (14, "HIT", 16)
    assert runs(client, app.url, "calculate") == 2


def test_a_post_body_over_the_limit_reaches_the_handler_whole_and_is_not_cached(serve, client) -> None:
    app = serve("apps.basic:app", env={"CACHE_BACKEND": "memory", "CACHE_MAX_REQUEST_BODY_SIZE": "100"})
    numbers = list(range(200))
    first = client.post(f"{app.url}/calculate", json={"numbers": numbers})
    second = client.post(f"{app.url}/calculate", json={"numbers": numbers})
    assert first.json()["result"] == sum(x * x for x in numbers)
    assert second.headers["x-cache"] == "BYPASS"
    assert runs(client, app.url, "calculate") == 2


def test_request_no_cache_refreshes_and_no_store_bypasses(serve, client) -> None:
    app = serve("apps.basic:app", env={"CACHE_BACKEND": "memory"})
    client.get(f"{app.url}/hello")
    refreshed = client.get(f"{app.url}/hello", headers={"cache-control": "no-cache"})
    assert refreshed.json()["run"] == 2
    assert client.get(f"{app.url}/hello").json()["run"] == 2
    bypassed = client.get(f"{app.url}/hello", headers={"cache-control": "no-store"})
    assert bypassed.json()["run"] == 3
    assert client.get(f"{app.url}/hello").json()["run"] == 2


def test_cookies_private_responses_and_credentials_are_never_shared(serve, client) -> None:
    app = serve("apps.basic:app", env={"CACHE_BACKEND": "memory"})
    victim = client.get(f"{app.url}/session?user=victim")
    anonymous = client.get(f"{app.url}/session?user=victim")
    assert "secret-of-victim" in victim.headers["set-cookie"]
    assert anonymous.headers["x-cache"] != "HIT"
    assert runs(client, app.url, "session") == 2
    client.get(f"{app.url}/private")
    assert client.get(f"{app.url}/private").headers["x-cache"] != "HIT"
    with_token = client.get(f"{app.url}/me", headers={"authorization": "Bearer alice"})
    without = client.get(f"{app.url}/me")
    assert with_token.json()["auth"] == "Bearer alice"
    assert without.json()["auth"] is None


def test_etag_answers_if_none_match_with_304(serve, client) -> None:
    app = serve("apps.basic:app", env={"CACHE_BACKEND": "memory"})
    etag = client.get(f"{app.url}/hello").headers["etag"]
    revalidated = client.get(f"{app.url}/hello", headers={"if-none-match": etag})
    assert revalidated.status_code == 304
    assert revalidated.content == b""


def test_routes_without_the_decorator_are_untouched(serve, client) -> None:
    app = serve("apps.basic:app", env={"CACHE_BACKEND": "memory"})
    first = client.get(f"{app.url}/uncached")
    second = client.get(f"{app.url}/uncached")
    assert "x-cache" not in first.headers
    assert second.json()["run"] == 2


def test_streams_go_through_as_they_come_and_are_not_stored(serve, client) -> None:
    app = serve("apps.basic:app", env={"CACHE_BACKEND": "memory"})
    with client.stream("GET", f"{app.url}/events") as response:
        chunks = [chunk for chunk in response.iter_text()]
    assert "".join(chunks) == "data: 0\n\ndata: 1\n\ndata: 2\n\n"
    client.get(f"{app.url}/events")
    assert runs(client, app.url, "events") == 2


# The body of `/large` and `/large-unannounced` in apps/basic.py: four 64 KiB chunks, the first
# at once, the rest once `POST /release-large` is called.
LARGE_CHUNK = 64 * 1024
LARGE_WHOLE = b"".join(bytes([ord("a") + n]) * LARGE_CHUNK for n in range(4))


def first_chunk(response: httpx.Response) -> Tuple[bytes, Iterator[bytes]]:
    """The first chunk's bytes of a streamed response, and the rest to come."""
    parts = response.iter_bytes()
    got = b""
    while len(got) < LARGE_CHUNK:
        got += next(parts)
    return got, parts


@pytest.mark.parametrize("route", ["large", "large-unannounced"])
def test_a_large_response_streams_while_stored_and_a_joiner_reads_it_as_it_comes(serve, client, route: str) -> None:
    """With a `Content-Length` or without one (sent chunked)."""
    app = serve("apps.basic:app", env={"CACHE_BACKEND": "memory"})
    whole = LARGE_WHOLE

    with httpx.stream("GET", f"{app.url}/{route}", timeout=10) as first:
        # The handler holds the rest of its body: what arrived went out as it came.
        assert first.headers["x-cache"] == "MISS"
        if route == "large":
            assert first.headers["content-length"] == str(len(whole))
        got, rest = first_chunk(first)
        with httpx.stream("GET", f"{app.url}/{route}", timeout=10) as joined:
            # Joining the response still arriving: its start at once, no second handler run.
            assert joined.headers["x-cache"] == "HIT"
            assert joined.headers["etag"] == first.headers["etag"]
            joined_got, joined_rest = first_chunk(joined)
            client.post(f"{app.url}/release-large")
            joined_got += b"".join(joined_rest)
        got += b"".join(rest)
    assert got == whole and joined_got == whole
    again = client.get(f"{app.url}/{route}")
    assert again.headers["x-cache"] == "HIT"
    assert again.content == whole
    assert runs(client, app.url, route) == 1


def test_a_huge_response_comes_back_exact_whole_and_in_ranges(serve, client, backend_env) -> None:
    # In Redis and Memcached it is stored apart from its key and read back as it is sent.
    app = serve("apps.basic:app", env={**backend_env, "CACHE_MAX_BODY_SIZE": str(8 * 1024 * 1024)})
    huge = bytes(n // 1024 % 251 for n in range(3 * 1024 * 1024 + 17))
    first = client.get(f"{app.url}/huge")
    assert first.headers["x-cache"] == "MISS"
    assert first.content == huge
    again = client.get(f"{app.url}/huge")
    assert again.headers["x-cache"] == "HIT"
    assert again.headers["content-length"] == str(len(huge))
    assert again.content == huge
    start, end = 1024 * 1024 - 10, 2 * 1024 * 1024 + 10
    part = client.get(f"{app.url}/huge", headers={"range": f"bytes={start}-{end}"})
    assert part.status_code == 206
    assert part.headers["content-range"] == f"bytes {start}-{end}/{len(huge)}"
    assert part.content == huge[start : end + 1]
    assert runs(client, app.url, "huge") == 1


def test_a_body_without_a_length_streams_to_its_client_and_is_stored_once_complete(serve, client) -> None:
    app = serve("apps.basic:app", env={"CACHE_BACKEND": "memory"})
    whole = LARGE_WHOLE
    with httpx.stream("GET", f"{app.url}/large-unannounced", timeout=10) as first:
        # The handler holds the rest of its body: what it sent went out as it came.
        assert first.headers["x-cache"] == "MISS"
        assert "content-length" not in first.headers
        got, parts = first_chunk(first)
        client.post(f"{app.url}/release-large")
        got += b"".join(parts)
    assert got == whole
    again = client.get(f"{app.url}/large-unannounced")
    assert again.headers["x-cache"] == "HIT"
    assert again.content == whole
    assert again.headers["etag"] == first.headers["etag"]
    assert runs(client, app.url, "large-unannounced") == 1


def test_a_body_without_a_length_past_the_limit_reaches_every_reader_whole_and_is_not_stored(serve, client) -> None:
    # 256 KiB sent in 64 KiB chunks, the rest once released: past a 100,000-byte limit at the second.
    app = serve("apps.basic:app", env={"CACHE_BACKEND": "memory", "CACHE_MAX_BODY_SIZE": "100000"})
    whole = LARGE_WHOLE

    with httpx.stream("GET", f"{app.url}/large-unannounced", timeout=10) as first:
        got, rest = first_chunk(first)
        with httpx.stream("GET", f"{app.url}/large-unannounced", timeout=10) as joined:
            assert joined.headers["x-cache"] == "HIT", "it joined the response still arriving"
            joined_got, joined_rest = first_chunk(joined)
            client.post(f"{app.url}/release-large")
            # Read side by side: the response goes at the pace of its fastest reader.
            for part in joined_rest:
                joined_got += part
                got += next(rest, b"")
        got += b"".join(rest)
    assert got == whole and joined_got == whole
    assert runs(client, app.url, "large-unannounced") == 1
    again = client.get(f"{app.url}/large-unannounced")
    assert again.headers["x-cache"] != "HIT" and again.content == whole
    assert runs(client, app.url, "large-unannounced") == 2


def test_a_large_body_sent_at_once_is_named_by_its_bytes_in_every_instance(serve, client) -> None:
    tags = []
    for _ in range(2):
        app = serve("apps.basic:app", env={"CACHE_BACKEND": "memory"})
        first = client.get(f"{app.url}/large-at-once")
        again = client.get(f"{app.url}/large-at-once")
        assert again.headers["x-cache"] == "HIT" and again.content == first.content
        assert again.headers["etag"] == first.headers["etag"]
        tags.append(first.headers["etag"])
    assert tags[0] == tags[1], "the same bytes, the same validator"


def test_errors_are_not_stored_and_a_failing_handler_fails_only_its_request(serve, client) -> None:
    app = serve("apps.basic:app", env={"CACHE_BACKEND": "memory"})
    # uvicorn closes a connection whose application raised: a new one for each.
    assert httpx.get(f"{app.url}/boom").status_code == 500
    assert httpx.get(f"{app.url}/boom").status_code == 500
    assert runs(client, app.url, "boom") == 2
    client.get(f"{app.url}/teapot")
    assert client.get(f"{app.url}/teapot").text == "run 2"
    # An application that sends nothing is an error too, not a request that hangs.
    assert httpx.get(f"{app.url}/silent", timeout=10).status_code == 500
    assert client.get(f"{app.url}/hello").status_code == 200


def test_concurrent_misses_of_one_key_run_the_handler_once(serve, client, backend_env) -> None:
    app = serve("apps.basic:app", env=backend_env)
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda _: httpx.get(f"{app.url}/slow", timeout=10), range(8)))
    assert {a.status_code for a in answers} == {200}
    assert {a.json()["run"] for a in answers} == {1}
    assert runs(client, app.url, "slow") == 1


def test_a_dead_backend_costs_misses_never_failed_requests(serve, client, tmp_path) -> None:
    dead = f"redis://127.0.0.1:{free_port()}"
    app = serve("apps.basic:app", env={"CACHE_BACKEND": "redis", "REDIS_URL": dead})
    answers = [client.get(f"{app.url}/hello") for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert [a.json()["run"] for a in answers] == [1, 2, 3]


def rust_demo(redis_url: str, tmp_path: Path, **env: str) -> Server:
    """The Rust demo binary on `redis_url`, with `env` added."""
    binary = REPO / "target" / "debug" / "cache-middleware"
    if not binary.exists():
        pytest.fail(f"{binary} is missing: build it with `cargo build --bin cache-middleware`")
    port = free_port()
    settings = {"CACHE_BACKEND": "redis", "REDIS_URL": redis_url, "HOST": "127.0.0.1", "PORT": str(port), "METRICS_ADDR": "off"}
    return Server([str(binary)], port, "rust demo", tmp_path, env={**settings, **env})


def test_a_rust_service_and_a_python_service_read_each_others_entries(serve, client, redis_url, tmp_path) -> None:
    rust = rust_demo(redis_url, tmp_path)
    try:
        python = serve("apps.guide:app", env={"CACHE_BACKEND": "redis", "REDIS_URL": redis_url})
        host = {"host": "shared.example"}
        stored = client.get(f"{python.url}/items/7?q=shared", headers=host)
        from_rust = client.get(f"{rust.url}/items/7?q=shared", headers=host)
        assert stored.headers["x-cache"] == "MISS"
        assert from_rust.headers["x-cache"] == "HIT"
        assert from_rust.content == stored.content
        assert from_rust.headers["etag"] == stored.headers["etag"]
        body = {"numbers": [2, 3]}
        by_rust = client.post(f"{rust.url}/calculate", json=body, headers=host)
        from_python = client.post(f"{python.url}/calculate", json=body, headers=host)
        assert (by_rust.headers["x-cache"], from_python.headers["x-cache"]) == ("MISS", "HIT")
        assert from_python.content == by_rust.content
    finally:
        rust.stop()


def test_a_purge_by_a_rust_instance_reaches_a_python_instance_holding_the_entry_in_its_local_tier(serve, client, redis_url, tmp_path) -> None:
    token = "a-purge-token-for-the-tests"
    rust = rust_demo(redis_url, tmp_path, CACHE_PURGE_TOKEN=token)
    try:
        env = {"CACHE_BACKEND": "redis", "REDIS_URL": redis_url, "REDIS_LOCAL_TIER_MAX_BYTES": "16777216"}
        python = serve("apps.guide:app", env=env)
        host = {"host": "shared.example"}
        first = client.get(f"{python.url}/items/7", headers=host)
        assert first.headers["x-cache"] == "MISS"
        # Once key tracking is up, hits come from the Python instance's own memory.
        port = redis_url.rsplit(":", 1)[1]

        def gets_served() -> int:
            stats = subprocess.run([require("redis-cli"), "-p", port, "INFO", "commandstats"], capture_output=True, text=True).stdout
            return sum(int(line.split("calls=")[1].split(",")[0]) for line in stats.splitlines() if line.startswith(("cmdstat_get:", "cmdstat_mget:")))

        for _ in range(5):
            assert client.get(f"{python.url}/items/7", headers=host).headers["x-cache"] == "HIT"
            time.sleep(0.05)
        before = gets_served()
        for _ in range(20):
            assert client.get(f"{python.url}/items/7", headers=host).headers["x-cache"] == "HIT"
        assert gets_served() == before, "hits from the local tier cost Redis nothing"
        purged = client.request("PURGE", f"{rust.url}/items/7", headers={**host, "authorization": f"Bearer {token}"})
        assert purged.status_code == 200, purged.text
        # Redis reports the deletion to the Python instance, whose tier forgets the entry.
        deadline = time.monotonic() + 2
        while client.get(f"{python.url}/items/7", headers=host).headers["x-cache"] != "MISS":
            assert time.monotonic() < deadline, "the purged entry is still served"
            time.sleep(0.01)
    finally:
        rust.stop()


def test_a_backend_written_in_python_is_used_by_the_engine(serve, client) -> None:
    app = serve("apps.custom:app", env={"CUSTOM_BACKEND": "dict"})
    first = client.get(f"{app.url}/value")
    second = client.get(f"{app.url}/value")
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "HIT")
    assert second.json() == {"run": 1}
    calls = client.get(f"{app.url}/calls").json()
    assert calls["keys"] >= 1 and "set" in calls["calls"] and calls["calls"].count("get") >= 2


@pytest.mark.parametrize("kind", ["broken", "slow"])
def test_a_python_backend_that_fails_or_stalls_costs_a_miss_not_the_request(serve, client, kind) -> None:
    # The stalled backend never answers: without the engine's latency budget these would hang.
    app = serve("apps.custom:app", env={"CUSTOM_BACKEND": kind})
    answers = [client.get(f"{app.url}/value") for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert [a.json()["run"] for a in answers] == [1, 2, 3]


def test_a_target_the_engine_cannot_read_is_served_uncached(serve) -> None:
    app = serve("apps.basic:app", env={"CACHE_BACKEND": "memory"})
    # A byte uvicorn accepts in the query, that an http::Uri does not.
    answer = raw_exchange(app.port, b'GET /items/1?q=a"b HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n')
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    assert b"x-cache" not in answer.lower()
    assert b'"q":"a\\"b"' in answer, answer


def raw_exchange(port: int, request: bytes) -> bytes:
    import socket as sockets

    with sockets.create_connection(("127.0.0.1", port)) as s:
        s.sendall(request)
        answer = b""
        while chunk := s.recv(4096):
            answer += chunk
    return answer


@pytest.mark.parametrize(
    "field",
    [b"Authorization: Bearer se\x7fcret", b"Cookie: session=se\x7fcret", b"Cache-Control: no-store\x7f"],
)
def test_a_field_the_engine_cannot_read_is_never_dropped_from_what_it_decides_on(serve, client, field) -> None:
    # uvicorn's h11 server lets a DEL byte through in a field value; `http` refuses it. Dropping
    # the field from what the engine saw while the application still read it stored a response
    # to a request with credentials and replayed it to an anonymous client.
    app = serve("apps.basic:app", env={"CACHE_BACKEND": "memory"})
    request = b"GET /me HTTP/1.1\r\nHost: a\r\n" + field + b"\r\nConnection: close\r\n\r\n"
    answer = raw_exchange(app.port, request)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    assert b"x-cache" not in answer.lower(), answer[:400]
    anonymous = client.get(f"{app.url}/me")
    assert anonymous.json()["auth"] is None
    assert anonymous.headers["x-cache"] == "MISS"
    assert runs(client, app.url, "me") == 2


def test_a_response_field_the_engine_cannot_read_makes_the_response_unstorable(serve, client) -> None:
    # The engine does not take a DEL byte in a field value. Dropping the field and storing the
    # rest shared a response that set a cookie: it is never stored.
    app = serve("apps.basic:app", env={"CACHE_BACKEND": "memory"})
    first = client.get(f"{app.url}/greeting?name=a%7Fb")
    second = client.get(f"{app.url}/greeting?name=a%7Fb")
    assert (first.status_code, second.status_code) == (200, 200)
    assert second.headers["x-cache"] == "MISS"
    assert runs(client, app.url, "greeting") == 2


def test_a_route_chosen_by_more_than_method_and_path_is_found_for_each_request(serve, client) -> None:
    # The route that answers was remembered per method and path: once the public page was
    # found for `/page`, the same path on the account host (per user, not cached) was cached too,
    # and one user's page went to the next.
    app = serve("apps.hosts:app")
    public = [client.get(f"{app.url}/page", headers={"host": "www.test"}) for _ in range(2)]
    assert [p.headers["x-cache"] for p in public] == ["MISS", "HIT"]
    for user in ("alice", "bob"):
        page = client.get(f"{app.url}/page", headers={"host": "account.test", "x-user": user})
        assert page.json() == {"page": "account", "user": user}
        assert "x-cache" not in page.headers


def test_a_host_in_other_letters_is_another_request(serve, client) -> None:
    # An application that finds its tenant by the host as written answers `ACME.example` with
    # its default tenant; the key held the host in lower case, and every client of
    # `acme.example` got the default tenant's page.
    app = serve("apps.basic:app", env={"CACHE_BACKEND": "memory"})
    attack = client.get(f"{app.url}/tenant", headers={"host": "ACME.example"})
    assert attack.json()["tenant"] == "default"
    victim = [client.get(f"{app.url}/tenant", headers={"host": "acme.example"}) for _ in range(2)]
    assert [v.json()["tenant"] for v in victim] == ["acme", "acme"]
    assert [v.headers["x-cache"] for v in victim] == ["MISS", "HIT"]


def test_the_scheme_the_application_sees_is_part_of_the_key(serve, client) -> None:
    # uvicorn takes `X-Forwarded-Proto` from a proxy it trusts (127.0.0.1 by default) as the
    # request's scheme, which links built from the URL carry. Left out of the key, one client's
    # scheme went into the links every other client got (an `http` link to a page served over
    # `https`, or the other way round).
    app = serve("apps.basic:app", env={"CACHE_BACKEND": "memory"})
    secure = [client.get(f"{app.url}/link", headers={"x-forwarded-proto": "https"}) for _ in range(2)]
    assert [s.json()["next"].split(":")[0] for s in secure] == ["https", "https"]
    assert [s.headers["x-cache"] for s in secure] == ["MISS", "HIT"]
    plain = client.get(f"{app.url}/link")
    assert plain.json()["next"] == f"{app.url}/link?page=2"
    assert runs(client, app.url, "link") == 2
    # A purge of the URL reaches the entry for each scheme.
    for scheme in ("http", "https"):
        client.get(f"{app.url}/products/7", headers={"x-forwarded-proto": scheme})
    client.post(f"{app.url}/invalidate/products/7")
    again = [client.get(f"{app.url}/products/7", headers={"x-forwarded-proto": s}) for s in ("http", "https")]
    assert [a.headers["x-cache"] for a in again] == ["MISS", "MISS"]


def test_a_background_refresh_runs_with_the_scheme_of_the_entry_it_refreshes(serve, client) -> None:
    # A refresh no request waits for runs the application in a scope of its own, made from the
    # server's: the first request to the route was plain `http`, the entry refreshed is `https`.
    app = serve("apps.basic:app", env={"CACHE_BACKEND": "memory"})
    https = {"x-forwarded-proto": "https"}
    assert client.get(f"{app.url}/link-refreshed").json()["next"].startswith("http://")
    assert client.get(f"{app.url}/link-refreshed", headers=https).json()["next"].startswith("https://")
    time.sleep(1.2)
    stale = client.get(f"{app.url}/link-refreshed", headers=https)
    assert stale.headers["x-cache"] == "STALE"
    deadline = time.monotonic() + 5
    while (refreshed := client.get(f"{app.url}/link-refreshed", headers=https)).json()["run"] < 3:
        assert time.monotonic() < deadline, "the background refresh was not stored"
        time.sleep(0.02)
    assert refreshed.json()["run"] == 3
    assert refreshed.json()["next"].startswith("https://")


def test_a_method_the_route_does_not_take_gets_the_applications_own_answer(serve, client) -> None:
    # FastAPI's `@app.get` routes refuse HEAD (405): the cache does not answer for them either.
    app = serve("apps.basic:app", env={"CACHE_BACKEND": "memory"})
    client.get(f"{app.url}/bytes")
    head = client.head(f"{app.url}/bytes")
    assert head.status_code == 405
    assert "x-cache" not in head.headers


def test_head_on_a_route_that_takes_it_is_answered_from_the_get_entry(serve, client) -> None:
    app = serve("apps.basic:app", env={"CACHE_BACKEND": "memory"})
    got = client.get(f"{app.url}/both")
    head = client.head(f"{app.url}/both")
    assert (head.status_code, head.headers["x-cache"], head.content) == (200, "HIT", b"")
    assert head.headers["content-length"] == got.headers["content-length"]
    assert runs(client, app.url, "both") == 1


def test_header_lines_sent_as_lists_are_stored_and_replayed(serve, client) -> None:
    app = serve("apps.basic:app", env={"CACHE_BACKEND": "memory"})
    first = client.get(f"{app.url}/listed")
    second = client.get(f"{app.url}/listed")
    assert (first.text, second.text, second.headers["x-list"]) == ("listed", "listed", "yes")
    assert second.headers["x-cache"] == "HIT"
    assert runs(client, app.url, "listed") == 1


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_tags_from_the_decorator_and_the_response_purge_what_carries_them(serve, client, redis_url, backend) -> None:
    env = {"CACHE_BACKEND": backend, "REDIS_URL": redis_url}
    app = serve("apps.basic:app", env=env)
    first = [client.get(f"{app.url}/products/{n}") for n in (1, 2)]
    assert all("surrogate-key" not in r.headers for r in first), "the tag field stays on the server"
    assert client.get(f"{app.url}/products/1").headers["x-cache"] == "HIT"
    assert client.get(f"{app.url}/hello").headers["x-cache"] == "MISS"

    # A tag the response named: that product only.
    assert client.post(f"{app.url}/purge/product:1").status_code == 200
    time.sleep(0.002)  # a response stored in the purge's own millisecond counts as purged
    after = [client.get(f"{app.url}/products/{n}").headers["x-cache"] for n in (1, 2)]
    assert after == ["MISS", "HIT"]
    # The decorator's tag: every product, nothing else.
    assert client.post(f"{app.url}/purge/products").status_code == 200
    time.sleep(0.002)
    after = [client.get(f"{app.url}/{path}").headers["x-cache"] for path in ("products/1", "products/2", "hello")]
    assert after == ["MISS", "MISS", "HIT"]
    assert runs(client, app.url, "products") == 5


@pytest.mark.parametrize("soft", [False, True])
def test_invalidate_removes_one_url_or_makes_it_stale(serve, client, soft: bool) -> None:
    app = serve("apps.basic:app", env={"CACHE_BACKEND": "memory"})
    for n in (1, 2):
        client.get(f"{app.url}/products/{n}")
    flag = "true" if soft else "false"
    assert client.post(f"{app.url}/invalidate/products/1?soft={flag}").status_code == 200
    # @cache has no stale window: a stale entry is fetched again, as a removed one is.
    after = [client.get(f"{app.url}/products/{n}").headers["x-cache"] for n in (1, 2)]
    assert after == ["MISS", "HIT"]
    assert runs(client, app.url, "products") == 3


def test_the_decorator_refuses_tags_it_could_not_purge_by() -> None:
    from cache_middleware.decorators import cache

    for bad in (["two words"], ["a,b"], [""], ["caf\u00e9"]):
        with pytest.raises(ValueError, match="not a valid tag"):
            cache(timeout=10, tags=bad)
    with pytest.raises(TypeError):
        cache(timeout=10, tags="one-string")  # type: ignore[arg-type]


def eventually(check, what: str, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"not within {seconds} s: {what}"
        time.sleep(0.05)


def test_a_stale_entry_is_answered_at_once_while_one_background_run_refreshes_it(serve, client, backend_env) -> None:
    app = serve("apps.basic:app", env=backend_env)
    assert client.get(f"{app.url}/revalidated").json()["run"] == 1
    time.sleep(1.2)  # the 1 s lifetime is over; the 60 s stale window is not
    # The refresh waits at its gate, so an answer now cannot have waited for it.
    stale = client.get(f"{app.url}/revalidated")
    assert (stale.headers["x-cache"], stale.json()["run"]) == ("STALE", 1)
    eventually(lambda: runs(client, app.url, "revalidated") == 2, "the background run started")
    again = client.get(f"{app.url}/revalidated")
    assert (again.headers["x-cache"], again.json()["run"]) == ("STALE", 1)
    assert runs(client, app.url, "revalidated") == 2, "one background run per key at a time"
    client.post(f"{app.url}/gate/revalidated")
    eventually(lambda: client.get(f"{app.url}/revalidated").headers["x-cache"] == "HIT", "the refreshed entry is served")
    assert client.get(f"{app.url}/revalidated").json()["run"] == 2
    assert runs(client, app.url, "revalidated") == 2


def test_a_background_run_of_a_post_gets_its_body(serve, client) -> None:
    app = serve("apps.basic:app", env={"CACHE_BACKEND": "memory"})
    body = {"numbers": [1, 2, 3]}
    assert client.post(f"{app.url}/sum-later", json=body).json() == {"sum": 6, "run": 1}
    time.sleep(1.2)
    assert client.post(f"{app.url}/sum-later", json=body).headers["x-cache"] == "STALE"
    eventually(lambda: client.post(f"{app.url}/sum-later", json=body).headers["x-cache"] == "HIT", "the refresh is stored")
    assert client.post(f"{app.url}/sum-later", json=body).json() == {"sum": 6, "run": 2}


def test_a_failing_background_run_is_logged_and_the_stale_entry_stays(serve, client) -> None:
    app = serve("apps.basic:app", env={"CACHE_BACKEND": "memory"})
    client.get(f"{app.url}/flaky")
    time.sleep(1.2)
    assert client.get(f"{app.url}/flaky").json()["run"] == 1
    eventually(lambda: "background refresh of /flaky failed" in app.output(), "the failure is logged")
    # The failed run let go of the key: the next stale answer starts another.
    later = client.get(f"{app.url}/flaky")
    assert (later.headers["x-cache"], later.json()["run"]) == ("STALE", 1)
    eventually(lambda: runs(client, app.url, "flaky") == 3, "a new refresh after the failed one")


def test_stale_if_error_answers_with_the_stale_entry_when_the_handler_fails(serve, client) -> None:
    app = serve("apps.basic:app", env={"CACHE_BACKEND": "memory"})
    client.get(f"{app.url}/fragile")
    time.sleep(1.2)
    answer = client.get(f"{app.url}/fragile")
    assert (answer.status_code, answer.headers["x-cache"], answer.json()["run"]) == (200, "STALE", 1)
    assert runs(client, app.url, "fragile") == 2


def test_early_refresh_renews_a_hot_entry_before_it_expires(serve, client) -> None:
    app = serve("apps.basic:app", env={"CACHE_BACKEND": "memory", "CACHE_EARLY_REFRESH": "1"})
    assert client.get(f"{app.url}/early").headers["x-cache"] == "MISS"
    seen = []
    deadline = time.monotonic() + 10
    while runs(client, app.url, "early") < 2 or seen[-1][1] < 2:
        assert time.monotonic() < deadline, f"no early refresh stored: {seen[-5:]}"
        answer = client.get(f"{app.url}/early")
        seen.append((answer.headers["x-cache"], answer.json()["run"]))
        time.sleep(0.05)
    assert {status for status, _ in seen} == {"HIT"}, "the entry never expired under steady hits"


def test_the_stale_windows_are_checked_like_the_timeout() -> None:
    from cache_middleware.decorators import cache

    for name in ("stale_while_revalidate", "stale_if_error"):
        with pytest.raises(ValueError, match=name):
            cache(timeout=10, **{name: -1})
        with pytest.raises(ValueError, match=name):
            cache(timeout=10, **{name: float("nan")})
        with pytest.raises(TypeError, match=name):
            cache(timeout=10, **{name: "60"})


def test_a_background_run_never_runs_in_another_clients_scope(serve, client) -> None:
    # An outer middleware put alice in the first request's scope; a refresh runs later, for
    # nobody: it must not carry her identity (or address) into what every client will get.
    app = serve("apps.scoped:app", env={})
    first = client.get(f"{app.url}/whoami", headers={"x-user": "alice"})
    assert (first.json()["user"], first.json()["run"]) == ("alice", 1)
    time.sleep(1.2)
    stale = client.get(f"{app.url}/whoami")
    assert stale.headers["x-cache"] == "STALE"
    eventually(lambda: client.get(f"{app.url}/runs").json()["runs"] == 2, "the refresh ran")
    eventually(lambda: client.get(f"{app.url}/whoami").json()["run"] == 2, "the refresh is stored")
    refreshed = client.get(f"{app.url}/whoami").json()
    assert (refreshed["user"], refreshed["client"]) == (None, False)
