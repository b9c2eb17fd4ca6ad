"""Write the engine's logic once, run it from sync or async code.

Engine flows (start a workflow, run a step, wait for a result) are generators that *yield
effects* — "call the user's function", "read the database", "sleep" — and receive each
effect's result back. Two tiny drivers run them: ``drive_sync`` performs effects inline on the
calling thread; ``drive_async`` awaits coroutine functions natively, waits on signals without
a thread, and sends blocking database calls to a small I/O thread pool. The logic between
effects exists in one copy.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import time
from collections.abc import Callable, Generator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Optional, TypeVar

from waypoint.core.observe import Scope
from waypoint.core.signals import Signal

T = TypeVar("T")

Flow = Generator["Effect", Any, T]


class Effect:
    __slots__ = ()

    def run_sync(self) -> Any:
        raise NotImplementedError

    async def run_async(self) -> Any:
        raise NotImplementedError


Binding = tuple["contextvars.ContextVar[Any]", Any]


class Call(Effect):
    """Invoke user code with context variables bound (the workflow or step in scope) and the
    operation's observers entered, on whichever thread or task runs the effect."""

    __slots__ = ("args", "bindings", "fn", "kwargs", "scope")

    def __init__(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        bindings: tuple[Binding, ...] = (),
        scope: Optional[Scope] = None,
    ) -> None:
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.bindings = bindings
        self.scope = scope

    def run_sync(self) -> Any:
        if not self.bindings and self.scope is None:
            return self.fn(*self.args, **self.kwargs)
        tokens = self._enter()
        try:
            return self.fn(*self.args, **self.kwargs)
        finally:
            self._exit(tokens)

    async def run_async(self) -> Any:
        tokens = self._enter()
        try:
            result = self.fn(*self.args, **self.kwargs)
            if inspect.isawaitable(result):
                result = await result
            return result
        finally:
            self._exit(tokens)

    def _enter(self) -> tuple[list[tuple[Any, Any]], Any]:
        bound = [(var, var.set(value)) for var, value in self.bindings]
        return bound, self.scope.enter() if self.scope is not None else None

    def _exit(self, tokens: tuple[list[tuple[Any, Any]], Any]) -> None:
        bound, watched = tokens
        if self.scope is not None:
            self.scope.exit(watched)
        for var, token in reversed(bound):
            var.reset(token)


class Io(Effect):
    """A blocking storage call."""

    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn = fn

    def run_sync(self) -> Any:
        return self.fn()

    async def run_async(self) -> Any:
        return await asyncio.get_running_loop().run_in_executor(io_pool(), self.fn)


class Sleep(Effect):
    """Sleep, waking early if ``interrupt`` is set; returns True when interrupted."""

    __slots__ = ("interrupt", "seconds")

    def __init__(self, seconds: float, interrupt: Optional[Signal] = None) -> None:
        self.seconds = max(0.0, seconds)
        self.interrupt = interrupt

    def run_sync(self) -> bool:
        if self.interrupt is not None:
            return self.interrupt.wait(self.seconds)
        time.sleep(self.seconds)
        return False

    async def run_async(self) -> bool:
        if self.interrupt is not None:
            return await self.interrupt.wait_async(self.seconds)
        await asyncio.sleep(self.seconds)
        return False


class Wait(Effect):
    """Wait for a signal with an optional timeout; returns whether it was set."""

    __slots__ = ("signal", "timeout")

    def __init__(self, signal: Signal, timeout: Optional[float] = None) -> None:
        self.signal = signal
        self.timeout = timeout

    def run_sync(self) -> bool:
        return self.signal.wait(self.timeout)

    async def run_async(self) -> bool:
        return await self.signal.wait_async(self.timeout)


class Yield(Effect):
    """Let the event loop run the other tasks that are ready (nothing, driven on a thread):
    where DBOS awaits a thread, so that a flow sees the sibling tasks of its workflow move
    exactly where DBOS's would."""

    __slots__ = ()

    def run_sync(self) -> None:
        return None

    async def run_async(self) -> None:
        await asyncio.sleep(0)


def drive_sync(flow: Flow[T]) -> T:
    send: Any = None
    error: Optional[BaseException] = None
    while True:
        try:
            effect = flow.throw(error) if error is not None else flow.send(send)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        try:
            send, error = effect.run_sync(), None
        except BaseException as exc:
            send, error = None, exc


async def drive_async(flow: Flow[T]) -> T:
    send: Any = None
    error: Optional[BaseException] = None
    while True:
        try:
            effect = flow.throw(error) if error is not None else flow.send(send)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        try:
            send, error = await effect.run_async(), None
        except BaseException as exc:
            send, error = None, exc


_io_pool: Optional[ThreadPoolExecutor] = None
# A storage call of a task holds an I/O thread until it is answered, also while it only waits
# for a group commit to carry it (``storage/postgres/group_commit.py``): with too few threads,
# tasks queue for a thread instead of for the commit, and the batches stay small (16 threads
# for 32 concurrent workflows: 110 workflows/s; 40 threads: 135-174, measured in async32).
IO_THREADS = 64


def io_pool() -> ThreadPoolExecutor:
    """Threads that run storage calls for async code (bounded; created on first use)."""
    global _io_pool
    if _io_pool is None:
        _io_pool = ThreadPoolExecutor(max_workers=IO_THREADS, thread_name_prefix="waypoint-io")
    return _io_pool


def release_io_pool() -> None:
    """Let the I/O threads end once their queued work is done (``DBOS.destroy``), so no
    Waypoint thread outlives the runtime; the next async call starts a new pool."""
    global _io_pool
    pool, _io_pool = _io_pool, None
    if pool is not None:
        pool.shutdown(wait=False)
