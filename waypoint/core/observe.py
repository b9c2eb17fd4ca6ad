"""Observation seams: watch workflow runs, steps, claims and recoveries without touching them.

An ``Observer`` is told when something starts and may return a ``Watch`` that follows that one
operation to its end. Flows are generators that hop threads (a worker thread, the asyncio loop,
the I/O pool), so a ``with`` block around a call cannot carry an observer's context (a tracing
span, say) to the code that runs later. Instead the effect driver enters every watch of an
operation around each piece of user code it runs for that operation (``Watch.enter`` /
``Watch.exit``, on the thread or task that runs it), and everything a workflow body calls (its
steps, its children) runs inside the body's watches.

Observers must be quick and must not raise: a failing hook is logged and skipped, never
allowed to change the outcome of a workflow. With no observer registered the engine does no
work at all here.
"""

from __future__ import annotations

import logging
from collections.abc import Generator, Mapping, Sequence
from typing import Any, Optional, Protocol, TypeVar

from waypoint.core.suspended import Suspended
from waypoint.core.types import RequestInfo

logger = logging.getLogger("waypoint")
T = TypeVar("T")


class ObservedRun(Protocol):
    """What an observer may read of a workflow run (``core.run.WorkflowRun`` is one)."""

    @property
    def workflow_id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def queue_name(self) -> Optional[str]: ...
    @property
    def class_name(self) -> Optional[str]: ...
    @property
    def config_name(self) -> Optional[str]: ...
    @property
    def request(self) -> Optional[RequestInfo]:
        """The HTTP request (FastAPI/Flask) whose handler started the run in this process."""

    @property
    def attributes(self) -> Optional[str]:
        """The workflow's stored attributes (JSON text), as written when it was created."""

    @property
    def origins(self) -> Optional[Mapping[Any, Any]]:
        """What each observer's ``origin`` returned where this run was started, by observer
        (None: the run was not started in this process, it was dequeued or recovered)."""


class Watch:
    """One watched operation. Override what you need; the defaults do nothing."""

    def enter(self) -> Any:
        """User code of this operation starts running on the current thread or task; the
        return value is handed back to ``exit``."""
        return None

    def exit(self, token: Any) -> None:
        """That piece of user code returned or raised."""

    def event(self, name: str, attributes: dict[str, Any]) -> None:
        """Something happened inside the operation (``retry``: an attempt failed;
        ``fenced``, on a workflow: a write was refused, another execution owns it now;
        ``suspended``, on a wait: it gave its thread back, and goes on when it resumes)."""

    def end(self, status: str, error: Optional[BaseException]) -> None:
        """The operation is over: ``SUCCESS``, ``ERROR``, ``CANCELLED`` or ``ABANDONED`` (this
        process stopped running it; another execution, or a later recovery, finishes it)."""


class Observer:
    """Hooks on the engine. Each is called on the thread that runs the flow."""

    def workflow(self, run: ObservedRun) -> Optional[Watch]:
        """A workflow body starts running in this process (first run, recovery or dequeue)."""
        return None

    def step(self, run: ObservedRun, name: str, function_id: int) -> Optional[Watch]:
        """A step of ``run`` starts running its body (not when it is replayed)."""
        return None

    def transaction(self, run: ObservedRun, name: str, function_id: int) -> Optional[Watch]:
        """A transaction of ``run`` starts (not when replayed); by default seen as a step."""
        return self.step(run, name, function_id)

    def wait(self, run: ObservedRun, name: str, function_id: int) -> Optional[Watch]:
        """``run`` starts a durable wait (``DBOS.sleep``, ``DBOS.recv``, ``DBOS.get_event``);
        the watch ends when the wait does."""
        return None

    def origin(self) -> Any:
        """Called on the thread (or task) that starts a workflow in this process, before its
        body may move to another thread; the run carries the value in ``run.origins``."""
        return None

    def claimed(self, queue_name: str, workflow_ids: Sequence[str]) -> None:
        """This executor claimed these workflows from a queue."""

    def recovered(self, executor_ids: Sequence[str], workflow_ids: Sequence[str]) -> None:
        """This executor took back these workflows of these executors."""

    def dequeued(self, queue_name: str, waited_seconds: Sequence[float]) -> None:
        """This executor claimed workflows that had waited this long since they were
        enqueued (one number per workflow)."""

    def checkpointed(self, seconds: float) -> None:
        """A step's checkpoint took this long to write (commit included)."""


class Scope:
    """The watches of one operation, entered and ended together."""

    __slots__ = ("watches",)

    def __init__(self, watches: list[Watch]) -> None:
        self.watches = watches

    def enter(self) -> list[Any]:
        tokens = []
        for w in self.watches:
            try:
                tokens.append(w.enter())
            except Exception:
                logger.exception("observer %r failed to enter", w)
                tokens.append(None)
        return tokens

    def exit(self, tokens: list[Any]) -> None:
        for w, token in reversed(list(zip(self.watches, tokens, strict=True))):
            try:
                w.exit(token)
            except Exception:
                logger.exception("observer %r failed to exit", w)

    def event(self, name: str, **attributes: Any) -> None:
        for w in self.watches:
            try:
                w.event(name, attributes)
            except Exception:
                logger.exception("observer %r failed on event %s", w, name)

    def end(self, status: str, error: Optional[BaseException] = None) -> None:
        for w in self.watches:
            try:
                w.end(status, error)
            except Exception:
                logger.exception("observer %r failed to end", w)


def watched_wait(
    observers: Observers,
    run: ObservedRun,
    name: str,
    function_id: int,
    flow: Generator[Any, Any, T],
    parked: Optional[dict[int, Scope]] = None,
) -> Generator[Any, Any, T]:
    """Run ``flow`` (a durable wait) under the observers' ``wait`` watches. A wait that is
    suspended (``core.suspend``) keeps its watches open in ``parked`` (by position) for the
    run's resumption to take up again, so observers see one wait from start to end."""
    scope = parked.pop(function_id, None) if parked is not None else None
    if scope is None:
        scope = observers.wait(run, name, function_id) if observers else None
    if scope is None:
        return (yield from flow)
    try:
        value = yield from flow
    except Suspended:
        if parked is not None:
            parked[function_id] = scope
        scope.event("suspended")
        raise
    except BaseException as exc:
        cancelled = type(exc).__name__ == "DBOSWorkflowCancelledError"
        scope.end("CANCELLED" if cancelled else "ERROR", exc)
        raise
    scope.end("SUCCESS")
    return value


class Observers:
    """The chain of observers of one runtime (in the order they were added)."""

    def __init__(self) -> None:
        self._observers: tuple[Observer, ...] = ()

    def add(self, observer: Observer) -> None:
        self._observers = (*self._observers, observer)

    def remove(self, observer: Observer) -> None:
        self._observers = tuple(o for o in self._observers if o is not observer)

    def __bool__(self) -> bool:
        return bool(self._observers)

    def workflow(self, run: ObservedRun) -> Optional[Scope]:
        if not self._observers:
            return None
        return self._scope([self._call(o.workflow, run) for o in self._observers])

    def step(self, run: ObservedRun, name: str, function_id: int) -> Optional[Scope]:
        if not self._observers:
            return None
        return self._scope([self._call(o.step, run, name, function_id) for o in self._observers])

    def transaction(self, run: ObservedRun, name: str, function_id: int) -> Optional[Scope]:
        if not self._observers:
            return None
        return self._scope(
            [self._call(o.transaction, run, name, function_id) for o in self._observers]
        )

    def wait(self, run: ObservedRun, name: str, function_id: int) -> Optional[Scope]:
        if not self._observers:
            return None
        return self._scope([self._call(o.wait, run, name, function_id) for o in self._observers])

    def origins(self) -> Optional[dict[Observer, Any]]:
        if not self._observers:
            return None
        found = {o: self._call(o.origin) for o in self._observers}
        return {o: v for o, v in found.items() if v is not None} or None

    def claimed(self, queue_name: str, workflow_ids: Sequence[str]) -> None:
        for o in self._observers:
            self._call(o.claimed, queue_name, workflow_ids)

    def recovered(self, executor_ids: Sequence[str], workflow_ids: Sequence[str]) -> None:
        for o in self._observers:
            self._call(o.recovered, executor_ids, workflow_ids)

    def dequeued(self, queue_name: str, waited_seconds: Sequence[float]) -> None:
        for o in self._observers:
            self._call(o.dequeued, queue_name, waited_seconds)

    def checkpointed(self, seconds: float) -> None:
        for o in self._observers:
            self._call(o.checkpointed, seconds)

    @staticmethod
    def _scope(watches: list[Any]) -> Optional[Scope]:
        found = [w for w in watches if w is not None]
        return Scope(found) if found else None

    @staticmethod
    def _call(hook: Any, *args: Any) -> Any:
        try:
            return hook(*args)
        except Exception:
            logger.exception("observer hook %s failed", getattr(hook, "__qualname__", hook))
            return None
