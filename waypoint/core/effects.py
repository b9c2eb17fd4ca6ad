"""Write the engine's logic once, run it from sync or async code.

Engine flows (start a workflow, run a step, wait for a result) are generators that *yield
effects* — "call the user's function", "read the database", "sleep" — and receive each
effect's result back. Two tiny drivers run them: ``drive_sync`` performs effects inline on the
calling thread; ``drive_async`` awaits coroutine functions natively, waits on signals without
a thread, and sends blocking database calls to a small I/O thread pool — except a hot write
that a group commit in flight can carry (``Io.queue``), which it awaits as a future the
committing thread resolves, holding no thread. The logic between effects exists in one copy.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import threading
import time
import weakref
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


# ``done(answer, error)``: how a queued write is answered, from the thread that committed it.
Answered = Callable[[Any, Optional[BaseException]], None]


class Io(Effect):
    """A blocking storage call. ``queue``, if given, is the same write offered to a group
    commit in flight (``Store.queue_write``): async code tries it first and, if it was
    queued, awaits the answer without holding a thread; sync code always calls ``fn`` (its
    thread waits either way)."""

    __slots__ = ("fn", "queue")

    def __init__(
        self, fn: Callable[[], Any], queue: Optional[Callable[[Answered], bool]] = None
    ) -> None:
        self.fn = fn
        self.queue = queue

    def run_sync(self) -> Any:
        return self.fn()

    async def run_async(self) -> Any:
        loop = asyncio.get_running_loop()
        if self.queue is not None:
            future: asyncio.Future[Any] = loop.create_future()
            inbox = _inbox(loop)

            def answered(result: Any, error: Optional[BaseException]) -> None:
                inbox.post(future, result, error)

            if self.queue(answered):
                return await future
        return await loop.run_in_executor(io_pool(), self.fn)


class _Inbox:
    """Answers for one event loop's futures, posted from other threads: the loop is woken
    once for all the answers posted before it runs (one group commit answers many tasks at
    once), not once per answer."""

    __slots__ = ("_answers", "_lock", "_loop", "_woken")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._answers: list[tuple[asyncio.Future[Any], Any, Optional[BaseException]]] = []
        self._woken = False

    def post(
        self, future: asyncio.Future[Any], result: Any, error: Optional[BaseException]
    ) -> None:
        with self._lock:
            self._answers.append((future, result, error))
            if self._woken:
                return
            self._woken = True
        try:
            self._loop.call_soon_threadsafe(self._deliver)
        except RuntimeError:
            pass  # the loop was closed meanwhile: nobody awaits the answers

    def _deliver(self) -> None:
        with self._lock:
            answers, self._answers = self._answers, []
            self._woken = False
        for future, result, error in answers:
            if future.done():
                continue  # the awaiting task was cancelled; the write went through regardless
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)


_inboxes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Inbox] = weakref.WeakKeyDictionary()
_inboxes_lock = threading.Lock()


def _inbox(loop: asyncio.AbstractEventLoop) -> _Inbox:
    try:
        found = _inboxes.get(loop)
        if found is None:
            with _inboxes_lock:
                found = _inboxes.get(loop)
                if found is None:
                    found = _inboxes[loop] = _Inbox(loop)
    except TypeError:
        # A loop that takes no weak references (an extension type): one inbox per answer,
        # as correct, without sharing the wake-ups.
        return _Inbox(loop)
    return found


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
# A storage call of a task holds an I/O thread until it is answered. Hot writes queued for a
# group commit (``Io.queue``) hold none; the other calls do: with too few threads, tasks
# queue for a thread instead of for the database (16 threads for 32 concurrent workflows,
# when writes held one too: 110 workflows/s; 40 threads: 135-174, measured in async32).
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
