"""A one-shot event that both threads and coroutines can wait on.

Workflows run on worker threads (sync code) and on event loops (async code); completion,
cancellation and wake-ups must reach both without a thread parked per async waiter.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Optional


class Signal:
    """Set once; waited on by threads (``wait``), coroutines (``wait_async``) or callbacks.

    Thousands of suspended workflows hold a few signals each and most are never waited on by
    a thread, so the ``threading.Event`` (an event, a condition, a deque and locks: objects
    every full garbage collection walks) is made only when a thread first waits."""

    __slots__ = ("_callbacks", "_event", "_lock", "_set", "_waiters")

    def __init__(self) -> None:
        self._set = False
        self._event: Optional[threading.Event] = None
        self._lock = threading.Lock()
        self._waiters: Optional[list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]]] = None
        self._callbacks: Optional[list[Callable[[], None]]] = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        with self._lock:
            if self._set:
                return
            self._set = True
            if self._event is not None:
                self._event.set()
            waiters, self._waiters = self._waiters or [], None
            callbacks, self._callbacks = self._callbacks, None
        for callback in callbacks or ():
            callback()
        for loop, fut in waiters:
            try:
                loop.call_soon_threadsafe(_resolve, fut)
            except RuntimeError:
                continue  # that loop is closed; nobody is waiting there any more

    def on_set(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once the signal is set (at once, here, if it already is), on the
        thread that sets it: what a suspended wait uses instead of a thread parked on it. It
        must be quick and must not raise."""
        with self._lock:
            if not self._set:
                if self._callbacks is None:
                    self._callbacks = []
                self._callbacks.append(callback)
                return
        callback()

    def has_callbacks(self) -> bool:
        """Whether a callback waits for this signal (a parked run whose entry has one keeps
        that entry, core/execution.py)."""
        return bool(self._callbacks)

    def remove_callback(self, callback: Callable[[], None]) -> None:
        with self._lock:
            if self._callbacks is not None and callback in self._callbacks:
                self._callbacks.remove(callback)

    def wait(self, timeout: Optional[float] = None) -> bool:
        if self._set:
            return True
        with self._lock:
            if self._set:
                return True
            if self._event is None:
                self._event = threading.Event()
            event = self._event
        return event.wait(timeout)

    async def wait_async(self, timeout: Optional[float] = None) -> bool:
        if self._set:
            return True
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        with self._lock:
            if self._set:
                return True
            if self._waiters is None:
                self._waiters = []
            self._waiters.append((loop, fut))
        try:
            await asyncio.wait_for(asyncio.shield(fut), timeout)
            return True
        except asyncio.TimeoutError:
            return self._set
        finally:
            with self._lock:
                if self._waiters is not None and (loop, fut) in self._waiters:
                    self._waiters.remove((loop, fut))  # set() may have drained it already


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
