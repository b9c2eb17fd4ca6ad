"""``Queue``: declared in code (its limits live in every process's code) or backed by a row
of the ``queues`` table (limits changeable at runtime)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, Optional, ParamSpec, TypeVar, Union, overload

from waypoint._api.handles import Handle, HandleAsync, WorkflowHandle, WorkflowHandleAsync
from waypoint._api.ops.base import RUNTIME, Ops, as_ops
from waypoint.core.effects import drive_async, drive_sync
from waypoint.error import DBOSException
from waypoint.queues.bulk import EnqueueCall, enqueue_many_flow
from waypoint.queues.enqueue import enqueue_flow
from waypoint.queues.model import (
    LIMIT_OPTIONS,
    QUEUES,
    SCOPED_LIMITS,
    QueueConfig,
    QueueConfigError,
    build_config,
    config_from_arguments,
    config_from_row,
    config_kwargs,
    row_from_config,
)
from waypoint.storage.protocol import QueueRow, queue_config_key

P = ParamSpec("P")
R = TypeVar("R")

# The limits whose scope a legacy (partition_queue) queue changes: not settable on one.
_LIMITS = frozenset(SCOPED_LIMITS)


class Queue:
    """A workflow queue. ``Queue(...)`` declares one in code; ``DBOS.register_queue`` creates
    (or ``DBOS.retrieve_queue`` finds) one stored in the database."""

    def __init__(
        self,
        name: str,
        concurrency: Optional[int] = None,
        limiter: Optional[dict[str, Any]] = None,
        *,
        worker_concurrency: Optional[int] = None,
        global_concurrency: Optional[int] = None,
        partition_concurrency: Optional[int] = None,
        partition_worker_concurrency: Optional[int] = None,
        partition_limiter: Optional[dict[str, Any]] = None,
        polling_interval_sec: float = 1.0,
        database_backed_queue: bool = False,
        client_system_database: Any = None,
        application_name: Optional[str] = None,
        priority_enabled: bool = False,
        partition_queue: bool = False,
    ) -> None:
        self._config = config_from_arguments(name, locals())
        self.name = name
        self.database_backed = database_backed_queue
        self.application_name = application_name
        self._ops = as_ops(client_system_database)
        if not database_backed_queue:
            QUEUES.add(self._config)

    @classmethod
    def from_row(cls, row: QueueRow, ops: Ops) -> Queue:
        """A database-backed queue, reached through ``ops``."""
        queue = cls.__new__(cls)
        queue._config = config_from_row(row)
        queue.name = row.name
        queue.database_backed = True
        queue.application_name = row.application_name
        queue._ops = ops
        return queue

    def __repr__(self) -> str:
        kind = "database-backed" if self.database_backed else "in-code"
        return f"Queue({self.name!r}, {kind})"

    # -- enqueueing -----------------------------------------------------------------------------
    def enqueue(self, func: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> WorkflowHandle[R]:
        """Enqueue workflow ``func(*args, **kwargs)`` on this queue; returns its handle. The
        options of an enclosing ``SetEnqueueOptions``/``SetWorkflowID`` block apply."""
        wfid = drive_sync(enqueue_flow(RUNTIME.engine(), self.name, func, args, kwargs))
        return Handle(RUNTIME, wfid, written=True)

    def enqueue_many(
        self, func: Callable[..., R], calls: Iterable[Union[EnqueueCall, tuple[Any, ...]]]
    ) -> list[WorkflowHandle[R]]:
        """Enqueue ``func`` once per item of ``calls`` (an ``EnqueueCall``, or a tuple of
        positional arguments) in one transaction: all are stored or none (see
        ``docs/queues.md``). Returns one handle per item, in order."""
        ids = drive_sync(enqueue_many_flow(RUNTIME.engine(), self.name, func, calls))
        return [Handle(RUNTIME, wfid) for wfid in ids]

    async def enqueue_many_async(
        self, func: Callable[..., Any], calls: Iterable[Union[EnqueueCall, tuple[Any, ...]]]
    ) -> list[WorkflowHandleAsync[Any]]:
        """Async twin of ``enqueue_many``."""
        flow = enqueue_many_flow(RUNTIME.engine(), self.name, func, calls)
        return [HandleAsync(RUNTIME, wfid) for wfid in await drive_async(flow)]

    @overload
    async def enqueue_async(
        self, func: Callable[P, Coroutine[Any, Any, R]], *args: P.args, **kwargs: P.kwargs
    ) -> WorkflowHandleAsync[R]: ...
    @overload
    async def enqueue_async(
        self, func: Callable[P, R], *args: P.args, **kwargs: P.kwargs
    ) -> WorkflowHandleAsync[R]: ...
    async def enqueue_async(
        self, func: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> WorkflowHandleAsync[Any]:
        """Async twin of ``enqueue``."""
        flow = enqueue_flow(RUNTIME.engine(), self.name, func, args, kwargs)
        return HandleAsync(RUNTIME, await drive_async(flow), written=True)

    # -- configuration ------------------------------------------------------------------------
    def config(self) -> QueueConfig:
        """The current limits (re-read from the database for database-backed queues)."""
        if not self.database_backed:
            return self._config
        engine = self._ops.engine()
        row = engine.store.get_queue(self.name)
        if row is None:
            raise QueueConfigError(f"queue {self.name!r} was deleted")
        self._config = config_from_row(row)
        return self._config

    def _set(self, **change: Any) -> None:
        if not self.database_backed:
            raise QueueConfigError(
                f"queue {self.name!r} is declared in code; its limits cannot change at runtime "
                "(use DBOS.register_queue for a database-backed queue)"
            )
        config = self.config()
        rescoped = set(change) & _LIMITS
        if config.legacy and rescoped:
            raise DBOSException(
                f"Cannot set {min(rescoped)} on queue {self.name}: it is registered with the "
                "deprecated partition_queue option, under which concurrency, worker_concurrency, "
                "and limiter apply per partition. Re-register the queue with the partition_* "
                "limits instead."
            )
        current = config_kwargs(config)
        current.update(change)
        cfg = build_config(self.name, **current)
        engine = self._ops.engine()
        self._config = cfg
        engine.store.upsert_queue(
            row_from_config(cfg, self.application_name or engine.app_name), True
        )
        engine.wakeups.fire(queue_config_key(self.name))

    @property
    def concurrency(self) -> Optional[int]:
        """Alias of ``global_concurrency`` (DBOS's older name)."""
        return self.config().effective().global_concurrency

    @property
    def global_concurrency(self) -> Optional[int]:
        """At most this many of the queue's workflows run at once, in all processes together."""
        return self.config().effective().global_concurrency

    @property
    def worker_concurrency(self) -> Optional[int]:
        """At most this many of the queue's workflows run at once in each process."""
        return self.config().effective().worker_concurrency

    @property
    def limiter(self) -> Optional[dict[str, Any]]:
        """The rate limit ``{"limit": n, "period": seconds}``: at most n starts per period."""
        lim = self.config().effective().limiter
        return lim.as_dict() if lim else None

    @property
    def partition_concurrency(self) -> Optional[int]:
        """Like ``global_concurrency``, for each ``queue_partition_key``."""
        return self.config().effective().partition_concurrency

    @property
    def partition_worker_concurrency(self) -> Optional[int]:
        """Like ``worker_concurrency``, for each ``queue_partition_key``."""
        return self.config().effective().partition_worker_concurrency

    @property
    def partition_limiter(self) -> Optional[dict[str, Any]]:
        """Like ``limiter``, for each ``queue_partition_key``."""
        lim = self.config().effective().partition_limiter
        return lim.as_dict() if lim else None

    @property
    def polling_interval_sec(self) -> float:
        """How often the dispatcher looks at the queue when nothing wakes it."""
        return self.config().polling_interval_sec

    @property
    def priority_enabled(self) -> bool:
        """Whether the ``priority`` enqueue option orders this queue (lower first)."""
        return self.config().priority_enabled

    @property
    def partition_queue(self) -> bool:
        """Whether workflows are enqueued with a ``queue_partition_key`` (deprecated flag;
        true of any queue with a partition_* limit)."""
        return self.config().partitioned

    @property
    def database_backed_queue(self) -> bool:
        """DBOS's name for ``database_backed``."""
        return self.database_backed

    def set_concurrency(self, value: Optional[int]) -> None:
        """Change ``concurrency`` for every process (database-backed queues)."""
        self._set(global_concurrency=value)

    def set_global_concurrency(self, value: Optional[int]) -> None:
        """Change ``global_concurrency`` for every process (database-backed queues)."""
        self._set(global_concurrency=value)

    def set_worker_concurrency(self, value: Optional[int]) -> None:
        """Change ``worker_concurrency`` for every process (database-backed queues)."""
        self._set(worker_concurrency=value)

    def set_limiter(self, value: Optional[dict[str, Any]]) -> None:
        """Change ``limiter`` for every process (database-backed queues)."""
        self._set(limiter=value)

    def set_partition_concurrency(self, value: Optional[int]) -> None:
        """Change ``partition_concurrency`` for every process (database-backed queues)."""
        self._set(partition_concurrency=value)

    def set_partition_worker_concurrency(self, value: Optional[int]) -> None:
        """Change ``partition_worker_concurrency`` for every process (database-backed queues)."""
        self._set(partition_worker_concurrency=value)

    def set_partition_limiter(self, value: Optional[dict[str, Any]]) -> None:
        """Change ``partition_limiter`` for every process (database-backed queues)."""
        self._set(partition_limiter=value)

    def set_polling_interval_sec(self, value: float) -> None:
        """Change ``polling_interval_sec`` for every process (database-backed queues)."""
        self._set(polling_interval_sec=value)

    def set_priority_enabled(self, value: bool) -> None:
        """Change ``priority_enabled`` for every process (database-backed queues)."""
        self._set(priority_enabled=value)

    def set_partition_queue(self, value: bool) -> None:
        """Change ``partition_queue`` for every process (database-backed queues)."""
        self._set(partition_queue=value)


def _add_async_accessors() -> None:
    """``get_<attr>_async`` / ``set_<attr>_async`` twins, run on a worker thread."""
    for name in LIMIT_OPTIONS:

        async def getter(self: Queue, _name: str = name) -> Any:
            return await asyncio.to_thread(getattr, self, _name)

        async def setter(self: Queue, value: Any, _name: str = name) -> None:
            await asyncio.to_thread(getattr(self, f"set_{_name}"), value)

        getter.__doc__ = f"``{name}``, read on a worker thread (for async code)."
        setter.__doc__ = f"``set_{name}``, run on a worker thread (for async code)."
        setattr(Queue, f"get_{name}_async", getter)
        setattr(Queue, f"set_{name}_async", setter)


_add_async_accessors()
