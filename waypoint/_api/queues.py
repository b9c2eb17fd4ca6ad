"""``DBOS`` methods for queues: enqueueing and database-backed queue definitions (a mixin,
to keep the ``DBOS`` class module small)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional, TypeVar

from waypoint._api.handles import Handle, HandleAsync, WorkflowHandle, WorkflowHandleAsync
from waypoint.core import calls
from waypoint.core.runtime import get_runtime, maybe_runtime
from waypoint.error import DBOSException
from waypoint.queues.enqueue import EnqueueOptions
from waypoint.queues.model import QUEUES, build_config
from waypoint.queues.queue import Queue, row_from_config
from waypoint.storage.protocol import QueueOwnedError, queue_config_key

R = TypeVar("R")


class QueueMixin:
    # -- queues ---------------------------------------------------------------------------------
    @classmethod
    def enqueue_workflow(
        cls, queue_name: str, func: Callable[..., R], *args: Any, **kwargs: Any
    ) -> WorkflowHandle[R]:
        return Handle(calls.enqueue(queue_name, func, args, kwargs))

    @classmethod
    async def enqueue_workflow_async(
        cls, queue_name: str, func: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> WorkflowHandleAsync[Any]:
        return HandleAsync(await calls.enqueue_async(queue_name, func, args, kwargs))

    @classmethod
    def enqueue_workflow_with_options(
        cls, options: EnqueueOptions, *args: Any, **kwargs: Any
    ) -> WorkflowHandle[Any]:
        return Handle(calls.enqueue_with_options(options, args, kwargs))

    @classmethod
    async def enqueue_workflow_with_options_async(
        cls, options: EnqueueOptions, *args: Any, **kwargs: Any
    ) -> WorkflowHandleAsync[Any]:
        return HandleAsync(await calls.enqueue_with_options_async(options, args, kwargs))

    @classmethod
    def listen_queues(cls, queues: list[Queue | str]) -> None:
        """Before launch: dequeue only from these queues (the internal queue is implied)."""
        if maybe_runtime() is not None:
            raise DBOSException("listen_queues must be called before DBOS.launch()")
        if QUEUES.listen is not None:
            raise DBOSException("listen_queues can be called only once")
        names = {q.name if isinstance(q, Queue) else q for q in queues}
        if not all(isinstance(n, str) and n for n in names):
            raise DBOSException("listen_queues takes Queue objects or queue names")
        QUEUES.listen = names

    @classmethod
    def register_queue(
        cls,
        name: str,
        *,
        worker_concurrency: Optional[int] = None,
        global_concurrency: Optional[int] = None,
        partition_concurrency: Optional[int] = None,
        partition_worker_concurrency: Optional[int] = None,
        partition_limiter: Optional[dict[str, Any]] = None,
        limiter: Optional[dict[str, Any]] = None,
        polling_interval_sec: float = 1.0,
        on_conflict: str = "update_if_latest_version",
        concurrency: Optional[int] = None,
        priority_enabled: bool = False,
        partition_queue: bool = False,
    ) -> Queue:
        if on_conflict not in ("update_if_latest_version", "always_update", "never_update"):
            raise DBOSException(
                "on_conflict must be 'update_if_latest_version', 'always_update' or "
                f"'never_update', got {on_conflict!r}"
            )
        cfg = build_config(
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
        rt = get_runtime()
        update = on_conflict == "always_update" or (
            on_conflict == "update_if_latest_version" and rt.is_latest_version()
        )
        try:
            row = rt.store.upsert_queue(row_from_config(cfg, rt.app_name), update)
        except QueueOwnedError as exc:
            raise DBOSException(
                f"queue {name!r} belongs to application {exc.owner!r}; queue names are shared "
                "by every application on this database (rename one of them)"
            ) from exc
        rt.wakeups.fire(queue_config_key(name))
        return Queue._from_row(row)

    @classmethod
    def retrieve_queue(cls, name: str) -> Optional[Queue]:
        row = get_runtime().store.get_queue(name)
        return Queue._from_row(row) if row is not None else None

    @classmethod
    def delete_queue(cls, name: str) -> None:
        rt = get_runtime()
        rt.store.delete_queue(name)
        rt.wakeups.fire(queue_config_key(name))

    @classmethod
    def list_queues(cls, *, application_name: Optional[str] = None) -> list[Queue]:
        rt = get_runtime()
        rows = rt.store.list_queues(application_name or rt.app_name)
        return [Queue._from_row(row) for row in rows]
