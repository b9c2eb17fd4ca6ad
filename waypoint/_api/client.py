"""``DBOSClient``: enqueue, message, read events and streams, and manage workflows, queues and
schedules from any process, with nothing but the system database URL (no registered
workflows, no launch, never migrates). Its operations are ``DBOS``'s own (``shared``), acting
on the client's engine and never checkpointed."""

from __future__ import annotations

from typing import Any, Optional

from waypoint._api.handles import Handle, WorkflowHandle
from waypoint._api.ops import fleet, queues
from waypoint._api.ops.base import ClientOps, Ops
from waypoint._api.shared import SharedOperations
from waypoint._api.surface import handle, handle_async, handles, handles_async, twins
from waypoint._api.telemetry import fold_otel_context
from waypoint.core.effects import Flow, Io, drive_async, drive_sync
from waypoint.core.engine import Engine
from waypoint.core.messaging import SendMessage, send_flow
from waypoint.core.serialization import Serializer
from waypoint.core.settings import engine_url, sharded_or, warn_no_effect
from waypoint.core.storage_errors import translated
from waypoint.core.types import WorkflowSerializationFormat
from waypoint.error import DBOSException
from waypoint.queues.enqueue import EnqueueOptions, by_name_start
from waypoint.storage.registry import open_url, system_url_for

DEFAULT = WorkflowSerializationFormat.DEFAULT


class DBOSClient(SharedOperations):
    """Drive the workflows of an application from another process, with only the system
    database URL: enqueue by name, send messages, read events and streams, manage workflows,
    queues, schedules and versions. ``lazy`` defers connecting to the first call."""

    def __init__(
        self,
        database_url: Optional[str] = None,
        *,
        system_database_url: Optional[str] = None,
        system_database_shards: Optional[list[str]] = None,
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
        refuse_pickle: bool = False,
    ) -> None:
        warn_no_effect(
            {
                "system_database_engine": system_database_engine,
                "system_database_polling_concurrency": system_database_polling_concurrency,
            },
            "DBOSClient",
        )
        url = system_database_url or engine_url(system_database_engine)
        with translated():
            url = sharded_or(url, system_database_shards, "DBOSClient")
        app_url = database_url or application_database_url  # database_url: DBOS's old name
        if not url and app_url:
            # DBOS's rule: the system database lives beside the application database.
            with translated():
                url = system_url_for(app_url, "dbos")
        if not url:
            raise DBOSException("DBOSClient needs system_database_url")
        if lazy and use_listen_notify:
            raise DBOSException("a lazy DBOSClient cannot listen for notifications")
        with translated():
            store = open_url(
                url,
                schema=dbos_system_schema,
                pool_size=system_database_pool_size or 5,
                application_name="dbos_transact_client",
                retry_connection_errors=retry_connection_errors,
            )
        engine = Engine(
            store,
            app_name=application_name,
            executor_id="client",
            app_version=None,
            serializer=serializer,
            refuse_pickle=refuse_pickle,
        )
        self._client_ops = ClientOps(engine)
        engine.store.open()
        if not lazy:
            try:
                self.check_connection()
            except BaseException:
                engine.store.close()  # no pool left retrying behind a failed construction
                raise
        if use_listen_notify:
            engine.start_listening()

    def _ops(self) -> Ops:
        return self._client_ops

    @property
    def engine(self) -> Engine:
        """The client's engine (its store and codec); internal, for tests and tools."""
        return self._client_ops.engine()

    def check_connection(self) -> None:
        """One attempt to reach the system database: raises at once if it cannot answer (an
        eager client checks on construction and fails fast, where ``launch`` waits for a
        database that is down; ``lazy`` defers connecting to the first call, which waits
        out an outage unless ``retry_connection_errors`` is False)."""
        self.engine.store.ping_once()

    async def check_connection_async(self) -> None:
        """Async twin of ``check_connection``."""
        await drive_async(_ping(self.engine))

    def destroy(self) -> None:
        """Close the client's connections."""
        self.engine.stop_listening()
        self.engine.store.close()

    enqueue, enqueue_async = twins(queues.enqueue_with_options, handle, handle_async)
    enqueue_many, enqueue_many_async = twins(
        queues.enqueue_many_with_options, handles, handles_async
    )
    rename_application, rename_application_async = twins(fleet.rename_application)

    def enqueue_in_transaction(
        self, conn_or_session: Any, options: EnqueueOptions, *args: Any, **kwargs: Any
    ) -> WorkflowHandle[Any]:
        """Enqueue as part of the caller's own transaction on the system database: the
        workflow exists if and only if that transaction commits."""
        if options.get("duplication_policy") == "return-existing":
            raise DBOSException("enqueue_in_transaction does not support 'return-existing'")
        folded: Any = fold_otel_context(options)
        st = by_name_start(self.engine, folded, args, kwargs, check_queue=False)
        self.engine.store.insert_on_connection(conn_or_session, st.new)
        return Handle(self._client_ops, st.workflow_id)

    def send_in_transaction(
        self,
        conn_or_session: Any,
        destination_id: str,
        message: Any,
        topic: Optional[str] = None,
        idempotency_key: Optional[str] = None,
        *,
        serialization_type: Optional[WorkflowSerializationFormat] = DEFAULT,
        send_to_forks: bool = False,
    ) -> None:
        """Send a message as part of the caller's own transaction on the system database
        (a SQLAlchemy ``Connection`` or ``Session``): delivered if and only if it commits."""
        msg = SendMessage(destination_id, message, topic, idempotency_key)
        self._send_on(conn_or_session, [msg], serialization_type, send_to_forks, "DBOS.send")

    def send_bulk_in_transaction(
        self,
        conn_or_session: Any,
        messages: list[SendMessage],
        *,
        serialization_type: Optional[WorkflowSerializationFormat] = DEFAULT,
        send_to_forks: bool = False,
    ) -> None:
        """Send many messages as part of the caller's own transaction on the system
        database: all are delivered if and only if it commits."""
        self._send_on(
            conn_or_session, messages, serialization_type, send_to_forks, "DBOS.send_bulk"
        )

    def _send_on(
        self,
        conn: Any,
        messages: list[SendMessage],
        fmt: Optional[WorkflowSerializationFormat],
        send_to_forks: bool,
        name: str,
    ) -> None:
        if conn is None:
            raise DBOSException(f"{name} in a transaction needs the caller's connection or session")
        drive_sync(send_flow(self.engine, messages, fmt, send_to_forks, name, conn=conn))


def _ping(engine: Engine) -> Flow[None]:
    yield Io(engine.store.ping_once)
