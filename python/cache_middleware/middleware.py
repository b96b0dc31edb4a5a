"""`CacheMiddleware`: a pure ASGI middleware that hands every request of a `@cache` route to the
Rust engine, and passes every other request through untouched.

    app = FastAPI()
    app.add_middleware(CacheMiddleware, backend=MemoryBackend(max_size=1000))

The engine does the work the Rust layers do: the key (method, host, path, query pairs, a POST's
body), the request's `no-cache`/`no-store`, `Authorization` and `Set-Cookie`/`private` rules,
single flight, the circuit breaker and latency budget, exact replay with `Age`, `X-Cache` and
ETag/304. The application runs in the request's own task; what is not stored streams through.
A refresh no request waits for (stale-while-revalidate, early refresh) runs the application in a
task of its own, on the same event loop.
"""

from __future__ import annotations

import asyncio
import weakref
from types import SimpleNamespace
from typing import Any, Awaitable, Callable, Dict, List, MutableMapping, Optional, Set, Tuple, Union
from urllib.parse import quote, unquote

from cache_middleware import _engine
from cache_middleware._driver import background_handlers, run, wakeups
from cache_middleware.backends.base import CacheBackend
from cache_middleware.decorators import RouteCache, route_cache_of
from cache_middleware import logger_config
from cache_middleware.logger_config import logger, sync_log_level

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Routes found per (method, path); bounded, since paths with parameters are many.
_ROUTE_MEMO_LIMIT = 10_000
_UNKNOWN: Any = object()
# The engine's log level follows loguru's handlers: one identity comparison per request.
_log_core: Any = getattr(logger, "_core", None) or SimpleNamespace(handlers=None)
# HTTP versions whose requests announce a body in their fields (`Content-Length`,
# `Transfer-Encoding`).
_FIELDS_FRAME_BODIES = ("1.0", "1.1")
# What a background run's scope keeps of a request's: the server's and the application's, never
# the client's or what an outer middleware learned about it.
_SERVER_SCOPE_KEYS = ("type", "asgi", "http_version", "scheme", "server", "root_path", "app", "state")


class CacheMiddleware:
    """Caches the responses of routes decorated with `@cache(timeout=...)`.

    `backend` is one of the package's backends (memory, Redis, Memcached, or the one
    `auto_configure_backend()` chose). The keyword arguments set the engine's limits; unset, they
    come from `CACHE_MAX_BODY_SIZE`, `CACHE_MAX_REQUEST_BODY_SIZE` and `CACHE_BACKEND_TIMEOUT`
    (or the defaults: 1 MiB, 64 KiB, 50 ms).
    """

    def __init__(
        self,
        app: ASGIApp,
        backend: CacheBackend,
        namespace: Optional[str] = None,
        max_body_size: Optional[int] = None,
        max_request_body_size: Optional[int] = None,
        backend_timeout: Optional[float] = None,
    ) -> None:
        if not isinstance(backend, CacheBackend):
            raise TypeError(
                f"backend must be a cache_middleware backend (MemoryBackend, RedisBackend, "
                f"MemcachedBackend, or a CacheBackend subclass), not {type(backend).__name__}"
            )
        self.app = app
        self.backend = backend
        # What the engine says while it is set up reaches loguru's handlers too.
        sync_log_level()
        self.engine = _engine.Engine(
            backend.engine_backend(),
            namespace=namespace,
            max_body_size=max_body_size,
            max_request_body_size=max_request_body_size,
            backend_timeout=backend_timeout,
        )
        _engine.flush_logs()
        self._routes: Dict[Tuple[str, str], Optional[_engine.Route]] = {}
        self._layers: Dict[RouteCache, _engine.Route] = {}
        self._state_set = False
        self._attached = False
        self._server_scope: Optional[Scope] = None
        self._background: Set["asyncio.Task[None]"] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # One attribute test per request: asking for the running loop each time would cost more
        # than a tenth of a hit.
        if not self._attached:
            self._attach(scope)
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = self._routes.get((scope["method"], scope["path"]), _UNKNOWN)
        if route is _UNKNOWN:
            route = self._remember(scope)
        if route is None:
            await self.app(scope, receive, send)
            return
        if _log_core.handlers is not logger_config.synced_handlers:
            sync_log_level()
        # A POST's body is read (it is part of the key). In HTTP/1 the fields frame any other
        # request's body, and the engine reads them; in HTTP/2 and 3 a GET's DATA frames need
        # no field, so what came is read too, for the engine to see (it then bypasses the cache).
        # Any other body stays in `receive`.
        body: Optional[List[bytes]] = None
        more = True
        method = scope["method"]
        if method == "POST" or (
            method in ("GET", "HEAD") and scope.get("http_version", "1.1") not in _FIELDS_FRAME_BODIES
        ):
            body, more = await _read_body(receive, self.engine.max_request_body_size + 1)
        try:
            started = self.engine.begin(
                method,
                scope.get("scheme", "http"),
                scope.get("raw_path") or _encoded_path(scope["path"]),
                scope.get("query_string", b""),
                scope["headers"],
                body,
                route,
            )
        except ValueError:
            # A scheme, target or field the engine cannot read (the server let it through):
            # served, uncached.
            await self.app(scope, _replaying(body or [], more, receive), send)
            return
        if isinstance(started, tuple):
            # Complete at once, body and all (every hit from memory): two messages and done.
            status, headers, content = started
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": content, "more_body": False})
            return
        await _Drive(started, self.app, scope, receive, send, more).run()

    async def purge_tag(self, tag: str, soft: bool = False) -> None:
        """Purges every entry of a route tagged `tag` (`@cache(..., tags=[...])`) or whose
        response named it in `Surrogate-Key`: soft, they become stale; otherwise they are gone.
        One write, whatever the number of entries; every instance sharing the backend sees it."""
        await run(self.engine.purge_tag(tag, soft))

    async def invalidate(self, url: str, host: Optional[str] = None, soft: bool = False) -> None:
        """Removes the cached GET response for `url` (absolute, or a path with `host`); with
        `soft`, makes it stale instead (served stale within the route's stale window while it is
        refreshed). A response that varies is removed either way."""
        await run(self.engine.invalidate(url, host, soft))

    def _attach(self, scope: Scope) -> None:
        """Set up at the first request: `app.state`, and the wake-ups that start the engine's
        background runs. The background queues' wake socket is watched by every running loop
        that has waited on the engine (every request that does not complete at once waits)."""
        self._set_app_state(scope)
        background_handlers[self.engine.background_id] = weakref.WeakMethod(self._start_background)
        wakeups()
        self._attached = True
        self._start_background()

    def _start_background(self) -> None:
        """Starts a task, on the running loop, for each background run the engine queued."""
        loop = asyncio.get_running_loop()
        while True:
            run = self.engine.take_background()
            if run is None:
                return
            task = loop.create_task(self._run_background(run))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _run_background(self, run: _engine.BackgroundRun) -> None:
        """Runs the application for a refresh no request waits for, feeding its response to the
        engine, which stores it."""
        method, target, headers, body = run.request()
        path, _, query = target.partition("?")
        scope: Scope = dict(self._server_scope or {"type": "http", "asgi": {"version": "3.0"}})
        if isinstance(scope.get("state"), dict):
            scope["state"] = dict(scope["state"])
        if run.scheme is not None:
            # The scheme the refreshed entry is keyed by, whatever the first request's was.
            scope["scheme"] = run.scheme
        scope.update(
            method=method,
            path=unquote(path),
            raw_path=path.encode("ascii"),
            query_string=query.encode("ascii"),
            headers=headers,
            client=None,
        )
        finished = asyncio.Event()

        async def disconnect_when_finished() -> Message:
            # What a server says once the response is out: the application may listen for it.
            await finished.wait()
            return {"type": "http.disconnect"}

        feed = _Feed(run)

        async def send(message: Message) -> None:
            if feed(message) and feed.ended:
                finished.set()

        try:
            await self.app(scope, _replaying(body, False, disconnect_when_finished), send)
        except Exception:  # noqa: BLE001 (reported, and the stale entry stays)
            logger.opt(exception=True).warning("background refresh of {} failed", path)
            run.app_failed()
            return
        finally:
            finished.set()
        if not feed.started:
            run.app_failed()
        elif not feed.ended:
            # An application that returned without finishing its body has ended it.
            run.app_body(b"", False)

    def _set_app_state(self, scope: Scope) -> None:
        # The guide's warming code reads `app.state.cache_backend` at start-up; purges go through
        # `app.state.cache_middleware`.
        if self._state_set:
            return
        app = scope.get("app")
        state = getattr(app, "state", None)
        if state is not None:
            state.cache_backend = self.backend
            state.cache_middleware = self
            self._state_set = True

    def _remember(self, scope: Scope) -> Optional[_engine.Route]:
        """The route's engine layer (one per `@cache`), found once per method and path when the
        router chooses by nothing else."""
        if not self._state_set:
            self._set_app_state(scope)
        spec, by_method_and_path = _route_cache(scope)
        route = None
        if spec is not None:
            if self._server_scope is None:
                self._server_scope = {k: scope[k] for k in _SERVER_SCOPE_KEYS if k in scope}
            route = self._layers.get(spec)
            if route is None:
                route = self._layers[spec] = self.engine.route(
                    spec.timeout, list(spec.tags), spec.stale_while_revalidate, spec.stale_if_error
                )
        if by_method_and_path:
            if len(self._routes) >= _ROUTE_MEMO_LIMIT:
                self._routes.clear()
            self._routes[(scope["method"], scope["path"])] = route
        return route


def _encoded_path(path: str) -> bytes:
    """A decoded path (what a server that gives no `raw_path` leaves) as a target's path: a `?`,
    `#` or `%` in it is part of the path, never the start of a query."""
    return quote(path, safe="/!$&'()*+,;=:@").encode("ascii")


def _route_cache(scope: Scope) -> Tuple[Optional[RouteCache], bool]:
    """What `@cache` said about the route that will answer `scope`, found as the router finds it,
    and whether the router chooses by method and path alone (so that the answer holds for every
    request with the same two). A `Host` route, or a route class with its own `matches`, may
    choose by anything in the scope."""
    router = getattr(scope.get("app"), "router", None)
    routes = getattr(router, "routes", None)
    if routes is None:
        return None, False
    from starlette.routing import Match

    by_method_and_path = all(type(route).matches in _method_and_path_matchers() for route in routes)
    for route in routes:
        match, child = route.matches(scope)
        if match == Match.FULL:
            endpoint = child.get("endpoint", getattr(route, "endpoint", None))
            return route_cache_of(endpoint), by_method_and_path
    return None, by_method_and_path


_MATCHERS: Optional[Set[Any]] = None


def _method_and_path_matchers() -> Set[Any]:
    """The `matches` of Starlette's and FastAPI's own route classes: by path, method and scope
    type only."""
    global _MATCHERS
    if _MATCHERS is None:
        from starlette.routing import Mount, Route, WebSocketRoute

        found = {Route.matches, Mount.matches, WebSocketRoute.matches}
        try:
            from fastapi.routing import APIRoute, APIWebSocketRoute

            found |= {APIRoute.matches, APIWebSocketRoute.matches}
        except ImportError:  # Starlette without FastAPI
            pass
        _MATCHERS = found
    return _MATCHERS


Ready = Tuple[int, List[Tuple[bytes, bytes]], bytes, bool]


async def _send_ready(send: Send, ready: Ready) -> bool:
    """Sends the response's start and the body ready so far; True if that was all of it."""
    status, headers, content, complete = ready
    await send({"type": "http.response.start", "status": status, "headers": headers})
    if complete:
        await send({"type": "http.response.body", "body": content, "more_body": False})
    elif content:
        await send({"type": "http.response.body", "body": content, "more_body": True})
    return complete


def _replaying(chunks: List[bytes], more_in_receive: bool, receive: Receive) -> Receive:
    """A `receive` that gives `chunks` (a body read ahead), then what `receive` still holds."""
    pending = list(chunks)
    ended = False

    async def replay() -> Message:
        nonlocal ended
        if pending:
            chunk = pending.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(pending) or more_in_receive}
        if more_in_receive or ended:
            return await receive()
        ended = True
        return {"type": "http.request", "body": b"", "more_body": False}

    return replay


async def _read_body(receive: Receive, limit: int) -> Tuple[List[bytes], bool]:
    """The body's chunks up to `limit` bytes, and whether more is left in `receive`."""
    chunks: List[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            # A disconnect: nothing more will come.
            return chunks, False
        chunk = message.get("body", b"")
        if chunk:
            chunks.append(chunk)
            size += len(chunk)
        if not message.get("more_body", False):
            return chunks, False
        if size >= limit:
            return chunks, True


class _Feed:
    """Hands an application's response messages to the engine: `True` for those it took."""

    def __init__(self, to: Union[_engine.Exchange, _engine.BackgroundRun]) -> None:
        self.to = to
        self.started = False
        self.ended = False

    def __call__(self, message: Message) -> bool:
        kind = message["type"]
        if kind == "http.response.start":
            self.started = True
            self.to.app_start(message["status"], message.get("headers", []))
        elif kind == "http.response.body":
            more = message.get("more_body", False)
            self.to.app_body(message.get("body", b""), more)
            self.ended |= not more
        else:
            return False
        return True


class _Drive:
    """One request through the engine: polls the flow, runs the application when the flow asks
    for it (in this task), and sends the response as the flow gives it."""

    def __init__(
        self,
        exchange: _engine.Exchange,
        app: ASGIApp,
        scope: Scope,
        receive: Receive,
        send: Send,
        more_in_receive: bool,
    ) -> None:
        self.exchange = exchange
        self.app = app
        self.scope = scope
        self.receive = receive
        self.send = send
        self.more_in_receive = more_in_receive
        self.head_sent = False
        self.done = False
        self.app_error: Optional[BaseException] = None

    async def run(self) -> None:
        exchange = self.exchange
        while not self.head_sent:
            if await self._progress():
                continue
            call = exchange.take_app_call()
            if call is not None:
                await self._run_app(call)
                continue
            await wakeups().wait(exchange.id)
        await self._finish()

    async def _progress(self) -> bool:
        """Polls the flow; sends the response's start once there is one. True if it went out."""
        try:
            ready = self.exchange.poll_response()
        except RuntimeError:
            if self.app_error is not None:
                raise self.app_error from None
            raise
        if ready is None:
            return False
        await self._respond(ready)
        return True

    async def _respond(self, ready: Ready) -> None:
        self.done = await _send_ready(self.send, ready)
        self.head_sent = True

    async def _pump(self) -> None:
        """Sends what the flow has of the body now, without waiting for more."""
        while not self.done:
            state, chunk = self.exchange.next_chunk()
            if state == 0:
                await self.send({"type": "http.response.body", "body": chunk, "more_body": True})
            elif state == 1:
                await self.send({"type": "http.response.body", "body": b"", "more_body": False})
                self.done = True
            else:
                return

    async def _finish(self) -> None:
        while not self.done:
            await self._pump()
            if not self.done:
                await wakeups().wait(self.exchange.id)

    async def _run_app(self, call: Tuple[str, str, List[Tuple[bytes, bytes]], List[bytes]]) -> None:
        exchange = self.exchange
        receive = _replaying(call[3], self.more_in_receive, self.receive)

        feed = _Feed(exchange)

        async def send(message: Message) -> None:
            if not feed(message) or message["type"] == "http.response.start":
                # The flow sees the head with the first body message: a body sent whole at once
                # is read whole (a large one is named by its bytes, not streamed as it is stored).
                return
            # The flow may answer before the application is done (a body that is not stored
            # streams through): let it go as far as it can.
            if not self.head_sent:
                await self._progress()
            if self.head_sent:
                await self._pump()
                # A body stored while it streams reaches the client through the engine's own
                # task, not at once: what the application sent goes out before it goes on.
                while not self.done and exchange.app_body_waiting():
                    await wakeups().wait(exchange.id)
                    await self._pump()

        try:
            await self.app(self.scope, receive, send)
        except BaseException as error:
            self.app_error = error
            exchange.app_failed()
            if self.head_sent:
                raise
            # Let the flow decide (it may serve a stale entry); re-raised if it does not.
            return
        if not feed.started:
            # Returned without a response: a failure, as the ASGI server would count it.
            self.app_error = RuntimeError("the application returned without starting a response")
            exchange.app_failed()
            return
        # An application that returned without finishing its body has ended it.
        exchange.app_body(b"", False)
