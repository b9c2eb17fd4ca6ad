"""``Queue``: declared in code (its limits live in every process's code) or backed by a row
of the ``queues`` table (limits changeable at runtime)."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Optional, TypeVar

from waypoint.queues.model import QUEUES, QueueConfig, QueueConfigError, build_config
from waypoint.storage.protocol import QueueRow

if TYPE_CHECKING:
    from waypoint._api.handles import WorkflowHandle, WorkflowHandleAsync
    from waypoint.core.engine import Engine

R = TypeVar("R")


def row_from_config(cfg: QueueConfig, application_name: Optional[str]) -> QueueRow:
    return QueueRow(
        name=cfg.name,
        concurrency=cfg.global_concurrency,
        worker_concurrency=cfg.worker_concurrency,
        rate_limit_max=cfg.limiter.limit if cfg.limiter else None,
        rate_limit_period_sec=cfg.limiter.period_sec if cfg.limiter else None,
        priority_enabled=cfg.priority_enabled,
        partition_queue=cfg.partition_queue,
        polling_interval_sec=cfg.polling_interval_sec,
        application_name=application_name,
        partition_concurrency=cfg.partition_concurrency,
        partition_worker_concurrency=cfg.partition_worker_concurrency,
        partition_rate_limit_max=cfg.partition_limiter.limit if cfg.partition_limiter else None,
        partition_rate_limit_period_sec=cfg.partition_limiter.period_sec
        if cfg.partition_limiter
        else None,
    )


def config_kwargs(cfg: QueueConfig) -> dict[str, Any]:
    return {
        "global_concurrency": cfg.global_concurrency,
        "worker_concurrency": cfg.worker_concurrency,
        "limiter": cfg.limiter.as_dict() if cfg.limiter else None,
        "partition_concurrency": cfg.partition_concurrency,
        "partition_worker_concurrency": cfg.partition_worker_concurrency,
        "partition_limiter": cfg.partition_limiter.as_dict() if cfg.partition_limiter else None,
        "polling_interval_sec": cfg.polling_interval_sec,
        "partition_queue": cfg.partition_queue,
        "priority_enabled": cfg.priority_enabled,
    }


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
        client_system_database: Optional[Engine] = None,
        application_name: Optional[str] = None,
        priority_enabled: bool = False,
        partition_queue: bool = False,
    ) -> None:
        self._config = build_config(
            name,
            concurrency=concurrency,
            global_concurrency=global_concurrency,
            worker_concurrency=worker_concurrency,
            limiter=limiter,
            partition_concurrency=partition_concurrency,
            partition_worker_concurrency=partition_worker_concurrency,
            partition_limiter=partition_limiter,
            polling_interval_sec=polling_interval_sec,
            partition_queue=partition_queue,
            priority_enabled=priority_enabled,
        )
        self.name = name
        self.database_backed = database_backed_queue
        self.application_name = application_name
        self._engine = client_system_database
        if not database_backed_queue:
            QUEUES.add(self._config)

    @classmethod
    def _from_row(cls, row: QueueRow, engine: Optional[Engine] = None) -> Queue:
        from waypoint.queues.dispatcher import config_from_row

        queue = cls.__new__(cls)
        queue._config = config_from_row(row)
        queue.name = row.name
        queue.database_backed = True
        queue.application_name = row.application_name
        queue._engine = engine
        return queue

    def __repr__(self) -> str:
        kind = "database-backed" if self.database_backed else "in-code"
        return f"Queue({self.name!r}, {kind})"

    # -- enqueueing -----------------------------------------------------------------------------
    def enqueue(self, func: Callable[..., R], *args: Any, **kwargs: Any) -> WorkflowHandle[R]:
        from waypoint._api.handles import Handle
        from waypoint.core import calls

        return Handle(calls.enqueue(self.name, func, args, kwargs))

    async def enqueue_async(
        self,
        func: Callable[..., Coroutine[Any, Any, R]] | Callable[..., R],
        *args: Any,
        **kwargs: Any,
    ) -> WorkflowHandleAsync[R]:
        from waypoint._api.handles import HandleAsync
        from waypoint.core import calls

        return HandleAsync(await calls.enqueue_async(self.name, func, args, kwargs))

    # -- configuration ------------------------------------------------------------------------
    def _store_engine(self) -> Engine:
        if self._engine is not None:
            return self._engine
        from waypoint.core.runtime import get_runtime

        return get_runtime()

    def config(self) -> QueueConfig:
        """The current limits (re-read from the database for database-backed queues)."""
        if not self.database_backed:
            return self._config
        row = self._store_engine().store.get_queue(self.name)
        if row is None:
            raise QueueConfigError(f"queue {self.name!r} was deleted")
        from waypoint.queues.dispatcher import config_from_row

        self._config = config_from_row(row)
        return self._config

    def _set(self, **change: Any) -> None:
        if not self.database_backed:
            raise QueueConfigError(
                f"queue {self.name!r} is declared in code; its limits cannot change at runtime "
                "(use DBOS.register_queue for a database-backed queue)"
            )
        current = config_kwargs(self.config())
        current.update(change)
        cfg = build_config(self.name, **current)
        engine = self._store_engine()
        self._config = cfg
        engine.store.upsert_queue(
            row_from_config(cfg, self.application_name or engine.app_name), True
        )
        from waypoint.storage.protocol import queue_config_key

        engine.wakeups.fire(queue_config_key(self.name))

    @property
    def concurrency(self) -> Optional[int]:
        return self.config().global_concurrency

    @property
    def global_concurrency(self) -> Optional[int]:
        return self.config().global_concurrency

    @property
    def worker_concurrency(self) -> Optional[int]:
        return self.config().worker_concurrency

    @property
    def limiter(self) -> Optional[dict[str, Any]]:
        lim = self.config().limiter
        return lim.as_dict() if lim else None

    @property
    def partition_concurrency(self) -> Optional[int]:
        return self.config().partition_concurrency

    @property
    def partition_worker_concurrency(self) -> Optional[int]:
        return self.config().partition_worker_concurrency

    @property
    def partition_limiter(self) -> Optional[dict[str, Any]]:
        lim = self.config().partition_limiter
        return lim.as_dict() if lim else None

    @property
    def polling_interval_sec(self) -> float:
        return self.config().polling_interval_sec

    @property
    def priority_enabled(self) -> bool:
        return self.config().priority_enabled

    @property
    def partition_queue(self) -> bool:
        return self.config().partition_queue

    def set_concurrency(self, value: Optional[int]) -> None:
        self._set(global_concurrency=value)

    def set_global_concurrency(self, value: Optional[int]) -> None:
        self._set(global_concurrency=value)

    def set_worker_concurrency(self, value: Optional[int]) -> None:
        self._set(worker_concurrency=value)

    def set_limiter(self, value: Optional[dict[str, Any]]) -> None:
        self._set(limiter=value)

    def set_partition_concurrency(self, value: Optional[int]) -> None:
        self._set(partition_concurrency=value)

    def set_partition_worker_concurrency(self, value: Optional[int]) -> None:
        self._set(partition_worker_concurrency=value)

    def set_partition_limiter(self, value: Optional[dict[str, Any]]) -> None:
        self._set(partition_limiter=value)

    def set_polling_interval_sec(self, value: float) -> None:
        self._set(polling_interval_sec=value)

    def set_priority_enabled(self, value: bool) -> None:
        self._set(priority_enabled=value)

    def set_partition_queue(self, value: bool) -> None:
        self._set(partition_queue=value)


def _add_async_accessors() -> None:
    """``get_<attr>_async`` / ``set_<attr>_async`` twins, run on a worker thread."""
    import asyncio

    names = (
        "concurrency",
        "global_concurrency",
        "worker_concurrency",
        "limiter",
        "partition_concurrency",
        "partition_worker_concurrency",
        "partition_limiter",
        "polling_interval_sec",
        "priority_enabled",
        "partition_queue",
    )
    for name in names:

        async def getter(self: Queue, _name: str = name) -> Any:
            return await asyncio.to_thread(getattr, self, _name)

        async def setter(self: Queue, value: Any, _name: str = name) -> None:
            await asyncio.to_thread(getattr(self, f"set_{_name}"), value)

        setattr(Queue, f"get_{name}_async", getter)
        setattr(Queue, f"set_{name}_async", setter)


_add_async_accessors()
