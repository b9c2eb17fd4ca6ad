"""``DBOSClient``: enqueue, message, read events and streams from any process, with nothing
but the system database URL (no registered workflows, no launch, never migrates)."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Generator, Sequence
from typing import Any, Generic, Optional, TypeVar

from waypoint._api.handles import WorkflowHandle, WorkflowHandleAsync
from waypoint.core import management
from waypoint.core.effects import Io, drive_async, drive_sync
from waypoint.core.engine import Engine
from waypoint.core.listing import build_filter
from waypoint.core.messaging import (
    SendMessage,
    StreamRead,
    aiter_stream,
    get_event_flow,
    iter_stream,
    read_stream_flow,
    send_flow,
    stream_value,
    wait_first_flow,
)
from waypoint.core.outcomes import await_outcome, to_status
from waypoint.core.serialization import Serializer
from waypoint.core.types import StepInfo, VersionInfo, WorkflowSerializationFormat, WorkflowStatus
from waypoint.core.workflows import start_flow
from waypoint.error import DBOSException, DBOSNonExistentWorkflowError
from waypoint.queues.enqueue import EnqueueOptions
from waypoint.queues.model import build_config
from waypoint.queues.queue import Queue, row_from_config
from waypoint.storage.factory import open_url
from waypoint.storage.protocol import QueueOwnedError, queue_config_key

T = TypeVar("T")
DEFAULT = WorkflowSerializationFormat.DEFAULT


class ClientHandle(Generic[T]):
    """A handle that reads the database (woken by NOTIFY when the client listens)."""

    def __init__(self, engine: Engine, workflow_id: str) -> None:
        self._engine = engine
        self.workflow_id = workflow_id

    def get_workflow_id(self) -> str:
        return self.workflow_id

    def get_result(self, *, polling_interval_sec: float = 1.0) -> T:
        result: T = drive_sync(await_outcome(self._engine, self.workflow_id, polling_interval_sec))
        return result

    def get_status(self) -> WorkflowStatus:
        row = self._engine.store.get_workflow(self.workflow_id)
        if row is None:
            raise DBOSNonExistentWorkflowError(self.workflow_id)
        return to_status(self._engine, row)


class ClientHandleAsync(Generic[T]):
    def __init__(self, engine: Engine, workflow_id: str) -> None:
        self._engine = engine
        self.workflow_id = workflow_id

    def get_workflow_id(self) -> str:
        return self.workflow_id

    async def get_result(self, *, polling_interval_sec: float = 1.0) -> T:
        result: T = await drive_async(
            await_outcome(self._engine, self.workflow_id, polling_interval_sec)
        )
        return result

    async def get_status(self) -> WorkflowStatus:
        row = await drive_async(_read(self._engine, self.workflow_id))
        if row is None:
            raise DBOSNonExistentWorkflowError(self.workflow_id)
        return to_status(self._engine, row)


def _read(engine: Engine, workflow_id: str) -> Any:
    return (yield Io(lambda: engine.store.get_workflow(workflow_id)))


class DBOSClient:
    def __init__(
        self,
        database_url: Optional[str] = None,
        *,
        system_database_url: Optional[str] = None,
        system_database_engine: Any = None,
        application_database_url: Optional[str] = None,
        dbos_system_schema: str = "dbos",
        serializer: Optional[Serializer] = None,
        system_database_pool_size: Optional[int] = None,
        system_database_polling_concurrency: Optional[int] = None,
        use_listen_notify: bool = False,
        application_name: Optional[str] = None,
        lazy: bool = False,
        retry_connection_errors: bool = True,
    ) -> None:
        url = system_database_url or database_url
        if not url:
            raise DBOSException("DBOSClient needs system_database_url")
        if lazy and use_listen_notify:
            raise DBOSException("a lazy DBOSClient cannot listen for notifications")
        store = open_url(
            url,
            schema=dbos_system_schema,
            pool_size=system_database_pool_size or 5,
            application_name="dbos_transact_client",
        )
        self._engine = Engine(
            store,
            app_name=application_name,
            executor_id="client",
            app_version=None,
            serializer=serializer,
        )
        store.open()
        if not lazy:
            self.check_connection()
        if use_listen_notify:
            self._engine.start_listening()

    @property
    def engine(self) -> Engine:
        return self._engine

    def check_connection(self) -> None:
        self._engine.store.ping()

    async def check_connection_async(self) -> None:
        await drive_async(_ping(self._engine))

    def destroy(self) -> None:
        self._engine.stop_listening()
        self._engine.store.close()

    # -- enqueue --------------------------------------------------------------------------------
    def _start(self, options: EnqueueOptions, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        from waypoint.core.calls import by_name_start

        return by_name_start(self._engine, options, args, kwargs, check_queue=False)

    def enqueue(self, options: EnqueueOptions, *args: Any, **kwargs: Any) -> WorkflowHandle[Any]:
        st = self._start(options, args, kwargs)
        self._check_partitioning(options)
        return ClientHandle(self._engine, drive_sync(start_flow(self._engine, st)))

    async def enqueue_async(
        self, options: EnqueueOptions, *args: Any, **kwargs: Any
    ) -> WorkflowHandleAsync[Any]:
        st = self._start(options, args, kwargs)
        self._check_partitioning(options)
        return ClientHandleAsync(self._engine, await drive_async(start_flow(self._engine, st)))

    def enqueue_in_transaction(
        self, conn_or_session: Any, options: EnqueueOptions, *args: Any, **kwargs: Any
    ) -> WorkflowHandle[Any]:
        """Enqueue as part of the caller's own transaction on the system database: the
        workflow exists if and only if that transaction commits."""
        if options.get("duplication_policy") == "return-existing":
            raise DBOSException("enqueue_in_transaction does not support 'return-existing'")
        st = self._start(options, args, kwargs)
        self._engine.store.insert_on_connection(conn_or_session, st.new)
        return ClientHandle(self._engine, st.workflow_id)

    def _check_partitioning(self, options: EnqueueOptions) -> None:
        if options.get("queue_partition_key") and options.get("deduplication_id"):
            raise DBOSException("deduplication is not supported on partitioned queues")

    # -- messages, events, streams -------------------------------------------------------------
    def send(
        self,
        destination_id: str,
        message: Any,
        topic: Optional[str] = None,
        idempotency_key: Optional[str] = None,
        *,
        serialization_type: Optional[WorkflowSerializationFormat] = DEFAULT,
        send_to_forks: bool = False,
    ) -> None:
        msg = SendMessage(destination_id, message, topic, idempotency_key)
        drive_sync(send_flow(self._engine, [msg], serialization_type, send_to_forks, "DBOS.send"))

    async def send_async(
        self,
        destination_id: str,
        message: Any,
        topic: Optional[str] = None,
        idempotency_key: Optional[str] = None,
        *,
        serialization_type: Optional[WorkflowSerializationFormat] = DEFAULT,
        send_to_forks: bool = False,
    ) -> None:
        msg = SendMessage(destination_id, message, topic, idempotency_key)
        await drive_async(
            send_flow(self._engine, [msg], serialization_type, send_to_forks, "DBOS.send")
        )

    def send_bulk(
        self,
        messages: Sequence[SendMessage],
        *,
        serialization_type: Optional[WorkflowSerializationFormat] = DEFAULT,
        send_to_forks: bool = False,
    ) -> None:
        drive_sync(
            send_flow(self._engine, messages, serialization_type, send_to_forks, "DBOS.send_bulk")
        )

    async def send_bulk_async(
        self,
        messages: Sequence[SendMessage],
        *,
        serialization_type: Optional[WorkflowSerializationFormat] = DEFAULT,
        send_to_forks: bool = False,
    ) -> None:
        await drive_async(
            send_flow(self._engine, messages, serialization_type, send_to_forks, "DBOS.send_bulk")
        )

    def get_event(self, workflow_id: str, key: str, timeout_seconds: float = 60) -> Any:
        return drive_sync(get_event_flow(self._engine, workflow_id, key, timeout_seconds))

    async def get_event_async(self, workflow_id: str, key: str, timeout_seconds: float = 60) -> Any:
        return await drive_async(get_event_flow(self._engine, workflow_id, key, timeout_seconds))

    def read_stream(
        self,
        workflow_id: str,
        key: str,
        *,
        offset: int = 0,
        polling_interval_sec: Optional[float] = None,
        timeout_seconds: Optional[float] = None,
    ) -> Generator[Any, None, None]:
        return iter_stream(self._engine, workflow_id, key, offset, timeout_seconds)

    async def read_stream_async(
        self,
        workflow_id: str,
        key: str,
        *,
        offset: int = 0,
        polling_interval_sec: Optional[float] = None,
        timeout_seconds: Optional[float] = None,
    ) -> AsyncGenerator[Any, None]:
        async for value in aiter_stream(self._engine, workflow_id, key, offset, timeout_seconds):
            yield value

    def read_stream_offset(
        self,
        workflow_id: str,
        key: str,
        offset: int,
        *,
        polling_interval_sec: Optional[float] = None,
        timeout_seconds: Optional[float] = None,
    ) -> Any:
        got: StreamRead = drive_sync(
            read_stream_flow(self._engine, workflow_id, key, offset, timeout_seconds)
        )
        return stream_value(got, workflow_id, key, offset)

    # -- workflows ------------------------------------------------------------------------------
    def retrieve_workflow(self, workflow_id: str) -> WorkflowHandle[Any]:
        if self._engine.store.get_workflow(workflow_id) is None:
            raise DBOSNonExistentWorkflowError(workflow_id)
        return ClientHandle(self._engine, workflow_id)

    async def retrieve_workflow_async(self, workflow_id: str) -> WorkflowHandleAsync[Any]:
        if await drive_async(_read(self._engine, workflow_id)) is None:
            raise DBOSNonExistentWorkflowError(workflow_id)
        return ClientHandleAsync(self._engine, workflow_id)

    def wait_first(
        self, handles: Sequence[WorkflowHandle[Any]], *, polling_interval_sec: float = 1.0
    ) -> WorkflowHandle[Any]:
        ids = [h.workflow_id for h in handles]
        first = drive_sync(wait_first_flow(self._engine, ids, polling_interval_sec))
        return next(h for h in handles if h.workflow_id == first)

    async def wait_first_async(
        self, handles: Sequence[WorkflowHandleAsync[Any]], *, polling_interval_sec: float = 1.0
    ) -> WorkflowHandleAsync[Any]:
        ids = [h.workflow_id for h in handles]
        first = await drive_async(wait_first_flow(self._engine, ids, polling_interval_sec))
        return next(h for h in handles if h.workflow_id == first)

    def cancel_workflow(self, workflow_id: str, *, cancel_children: bool = False) -> None:
        management.cancel(self._engine, [workflow_id], cancel_children)

    def cancel_workflows(self, workflow_ids: list[str], *, cancel_children: bool = False) -> None:
        management.cancel(self._engine, list(workflow_ids), cancel_children)

    def resume_workflow(
        self, workflow_id: str, *, queue_name: Optional[str] = None
    ) -> WorkflowHandle[Any]:
        management.resume(self._engine, [workflow_id], queue_name)
        return ClientHandle(self._engine, workflow_id)

    def resume_workflows(
        self, workflow_ids: list[str], *, queue_name: Optional[str] = None
    ) -> list[WorkflowHandle[Any]]:
        management.resume(self._engine, list(workflow_ids), queue_name)
        return [ClientHandle(self._engine, w) for w in workflow_ids]

    def fork_workflow(
        self,
        workflow_id: str,
        start_step: int,
        *,
        application_version: Optional[str] = None,
        queue_name: Optional[str] = None,
        queue_partition_key: Optional[str] = None,
        replacement_children: Optional[dict[str, str]] = None,
        timeout_seconds: Optional[float] = None,
        forked_workflow_id: Optional[str] = None,
    ) -> WorkflowHandle[Any]:
        new_id = management.fork(
            self._engine,
            workflow_id,
            start_step,
            application_version=application_version,
            queue_name=queue_name,
            queue_partition_key=queue_partition_key,
            replacement_children=replacement_children,
            timeout_seconds=timeout_seconds,
            new_workflow_id=forked_workflow_id,
        )
        return ClientHandle(self._engine, new_id)

    def delete_workflow(self, workflow_id: str, *, delete_children: bool = False) -> None:
        management.delete(self._engine, [workflow_id], delete_children)

    def delete_workflows(self, workflow_ids: list[str], *, delete_children: bool = False) -> None:
        management.delete(self._engine, list(workflow_ids), delete_children)

    def set_workflow_delay(
        self,
        workflow_id: str,
        *,
        delay_seconds: Optional[float] = None,
        delay_until_epoch_ms: Optional[int] = None,
    ) -> None:
        management.set_delay(self._engine, workflow_id, delay_seconds, delay_until_epoch_ms)

    def update_workflow_attributes(
        self, workflow_id: str, attributes: Optional[dict[str, Any]]
    ) -> None:
        management.update_attributes(self._engine, workflow_id, attributes)

    def list_workflows(self, **filters: Any) -> list[WorkflowStatus]:
        flt = build_filter(**filters)
        return [to_status(self._engine, r) for r in self._engine.store.list_workflows(flt)]

    def list_queued_workflows(self, **filters: Any) -> list[WorkflowStatus]:
        filters["queues_only"] = True
        filters.setdefault("status", ["ENQUEUED", "PENDING", "DELAYED"])
        return self.list_workflows(**filters)

    def list_workflow_steps(
        self,
        workflow_id: str,
        *,
        load_output: bool = True,
        limit: Optional[int] = None,
        offset: Optional[int] = None,
    ) -> list[StepInfo]:
        return management.steps(self._engine, workflow_id, load_output, limit, offset)

    def list_application_versions(self) -> list[VersionInfo]:
        return management.versions(self._engine, None)

    def get_latest_application_version(self) -> VersionInfo:
        return management.latest_version(self._engine, None)

    def set_latest_application_version(
        self, version_name: str, *, application_name: Optional[str] = None
    ) -> None:
        management.set_latest_version(self._engine, version_name, application_name)

    def list_executors(self) -> list[dict[str, Any]]:
        return management.executors(self._engine, self._engine.app_name)

    # -- queues ---------------------------------------------------------------------------------
    def register_queue(
        self,
        name: str,
        *,
        worker_concurrency: Optional[int] = None,
        global_concurrency: Optional[int] = None,
        partition_concurrency: Optional[int] = None,
        partition_worker_concurrency: Optional[int] = None,
        partition_limiter: Optional[dict[str, Any]] = None,
        limiter: Optional[dict[str, Any]] = None,
        polling_interval_sec: float = 1.0,
        on_conflict: str = "always_update",
        concurrency: Optional[int] = None,
        priority_enabled: bool = False,
        partition_queue: bool = False,
        application_name: Optional[str] = None,
    ) -> Queue:
        if on_conflict not in ("update_if_latest_version", "always_update", "never_update"):
            raise DBOSException(f"unknown on_conflict policy {on_conflict!r}")
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
        owner = application_name or self._engine.app_name
        try:
            row = self._engine.store.upsert_queue(
                row_from_config(cfg, owner), on_conflict != "never_update"
            )
        except QueueOwnedError as exc:
            raise DBOSException(f"queue {name!r} belongs to application {exc.owner!r}") from exc
        self._engine.wakeups.fire(queue_config_key(name))
        return Queue._from_row(row, self._engine)

    def retrieve_queue(self, name: str) -> Optional[Queue]:
        row = self._engine.store.get_queue(name)
        return Queue._from_row(row, self._engine) if row is not None else None

    def delete_queue(self, name: str) -> None:
        self._engine.store.delete_queue(name)

    def list_queues(self, *, application_name: Optional[str] = None) -> list[Queue]:
        rows = self._engine.store.list_queues(application_name or self._engine.app_name)
        return [Queue._from_row(r, self._engine) for r in rows]


def _ping(engine: Engine) -> Any:
    return (yield Io(engine.store.ping))
