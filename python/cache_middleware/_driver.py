"""Driving the engine's Rust futures from the asyncio event loop.

A future is polled on the loop's thread. When it has to wait (a Redis reply, another request's
answer), its waker, on whichever thread it fires, queues the future's id and writes a byte to the
socket of the thread that polled it, which that thread's loop watches; the loop then resolves the
asyncio future that the request awaits, and the request polls again. Several loops may run at
once, one per thread: each hears only of its own futures. No Rust thread ever takes the GIL.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Callable, Dict, Optional, Tuple

from cache_middleware import _engine


class _Wakeups:
    """The wake-ups of one event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.waiting: Dict[int, asyncio.Future[None]] = {}
        # This thread's socket (the tasks this loop polls), and the background queues' (shared by
        # every loop of the process).
        self.fds = _engine.signal_fds()
        for fd in self.fds:
            loop.add_reader(fd, self._on_signal)

    def _on_signal(self) -> None:
        for woken in _engine.take_woken():
            future = self.waiting.pop(woken, None)
            if future is not None:
                if not future.done():
                    future.set_result(None)
                continue
            handler = background_handlers.get(woken)
            if handler is not None:
                start = handler()
                if start is None:
                    del background_handlers[woken]  # its middleware is gone
                else:
                    start()
        _engine.flush_logs()

    async def wait(self, task_id: int) -> None:
        future: asyncio.Future[None] = self.loop.create_future()
        self.waiting[task_id] = future
        try:
            await future
        finally:
            self.waiting.pop(task_id, None)


# Ids that stay, whatever the loop: an engine's queue of background runs, and what starts them
# (held weakly: a middleware that is gone is forgotten).
background_handlers: "Dict[int, weakref.WeakMethod[Callable[[], None]]]" = {}

_by_loop: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Wakeups]" = weakref.WeakKeyDictionary()
_current: Optional[Tuple[asyncio.AbstractEventLoop, _Wakeups]] = None


def wakeups() -> _Wakeups:
    """The wake-ups of the running loop (set up on first use)."""
    global _current
    loop = asyncio.get_running_loop()
    if _current is not None and _current[0] is loop:
        return _current[1]
    found = _by_loop.get(loop)
    if found is None:
        # A loop that is gone gives its sockets up (a thread's socket is watched by the loop
        # running on that thread; several loops may run at once, each on a thread of its own).
        for old_loop, old in list(_by_loop.items()):
            if old_loop.is_closed() or not old_loop.is_running():
                for fd in old.fds:
                    try:
                        old_loop.remove_reader(fd)
                    except Exception:  # noqa: BLE001 (a closed loop may refuse)
                        pass
                del _by_loop[old_loop]
        found = _Wakeups(loop)
        _by_loop[loop] = found
    _current = (loop, found)
    return found


async def run(task: _engine.Task) -> Optional[bytes]:
    """Awaits a backend task (`Backend.get`/`set`/`delete`/`clear`)."""
    while True:
        done, value = task.poll()
        if done:
            return value
        await wakeups().wait(task.id)
