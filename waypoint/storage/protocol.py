"""The one interface between the engine and a system database.

The engine never sees SQL: it hands the store plain records and gets plain records back.
Payloads (inputs, outputs, errors) cross this boundary as already-serialized text plus the
name of the serializer that wrote them; the store never (de)serializes.

Every method is safe to retry after an ambiguous failure (the connection dropped after the
commit was sent): writes carry the writer's run token (``owner_xid``) so a retried write
recognises its own earlier success instead of reporting a conflict.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Optional, Protocol, Union

from waypoint.storage.records import (
    QUEUE_COLUMNS,
    SCHEDULE_COLUMNS,
    WORKFLOW_COLUMNS,
    AgeBucket,
    ChildLink,
    ClaimRequest,
    Completion,
    DatabaseGauges,
    DebounceUpdate,
    EventHistoryRow,
    EventWrite,
    ExecutorRow,
    ForkRequest,
    InitOutcome,
    ListFilter,
    MessageRow,
    NewMessage,
    NewWorkflow,
    Outcome,
    QueueRow,
    Received,
    RecordOutcome,
    Recovered,
    RecoveryRequest,
    RetentionRequest,
    ScheduleFilter,
    ScheduleRow,
    StepRecord,
    StepRow,
    StreamRow,
    StreamWrite,
    Throughput,
    VersionRow,
    WorkflowRow,
)

# The records are imported from here too (``waypoint.storage.protocol`` is the one module the
# layers above need); they are defined in ``waypoint.storage.records``.
__all__ = [
    "DBOS_MESSAGE_CHANNEL",
    "NOTIFY_CHANNEL",
    "QUEUE_COLUMNS",
    "SCHEDULE_COLUMNS",
    "SCHEDULE_KEY_PREFIX",
    "WORKFLOW_COLUMNS",
    "AgeBucket",
    "ChildLink",
    "ClaimRequest",
    "Closeable",
    "Completion",
    "DatabaseGauges",
    "DebounceUpdate",
    "EventHistoryRow",
    "EventWrite",
    "ExecutorRow",
    "ForkRequest",
    "InitOutcome",
    "ListFilter",
    "MessageRow",
    "NewMessage",
    "NewWorkflow",
    "Outcome",
    "QueueRow",
    "Received",
    "RecordOutcome",
    "Recovered",
    "RecoveryRequest",
    "RetentionRequest",
    "ScheduleFilter",
    "ScheduleRow",
    "SchemaAdmin",
    "StepRecord",
    "StepRow",
    "Store",
    "StreamRow",
    "StreamWrite",
    "SystemStore",
    "Throughput",
    "VersionRow",
    "WorkflowRow",
    "cancel_key",
    "done_key",
    "event_key",
    "message_key",
    "queue_config_key",
    "queue_key",
    "schedule_key",
    "stream_key",
    "timer_key",
    "version_key",
]

# LISTEN/NOTIFY vocabulary shared by the stores (which emit) and the engine (which waits).
# Every payload on NOTIFY_CHANNEL is a wake-up key; DBOS's message trigger uses its own
# channel with "<destination>::<topic>" payloads.
NOTIFY_CHANNEL = "waypoint"
DBOS_MESSAGE_CHANNEL = "dbos_notifications_channel"


def queue_key(queue: str) -> str:
    return f"q:{queue}"


def timer_key(queue: str) -> str:
    return f"t:{queue}"


def queue_config_key(queue: str) -> str:
    return f"Q:{queue}"


def done_key(workflow_id: str) -> str:
    return f"d:{workflow_id}"


def cancel_key(workflow_id: str) -> str:
    return f"c:{workflow_id}"


def message_key(workflow_id: str, topic: str) -> str:
    return f"m:{workflow_id}::{topic}"


def event_key(workflow_id: str, key: str) -> str:
    return f"e:{workflow_id}::{key}"


def stream_key(workflow_id: str, key: str) -> str:
    return f"s:{workflow_id}::{key}"


def version_key(version_name: str) -> str:
    return f"V:{version_name}"


SCHEDULE_KEY_PREFIX = "S:"


def schedule_key(schedule_name: str) -> str:
    return f"{SCHEDULE_KEY_PREFIX}{schedule_name}"


class Closeable(Protocol):
    def stop(self) -> None: ...


class SystemStore(Protocol):
    """A system database at work. Implementations: ``storage.postgres`` and ``storage.sqlite``;
    ``tests/storage`` is the contract every implementation must pass.

    Failures are ``storage.errors`` classes (the engine translates them), or the driver's own
    error when it is neither transient nor one of those.
    """

    dialect: str
    identity: str  # names the database (URL and schema), without credentials

    def open(self) -> None: ...
    def close(self) -> None: ...
    def listen(
        self, on_notify: Callable[[str, str], None], on_connect: Callable[[], None]
    ) -> Optional[Closeable]:
        """Start delivering notifications from other processes (None: not supported)."""
        ...

    # -- lifecycle -----------------------------------------------------------------------------
    def ping(self) -> None: ...
    def ping_once(self) -> None:
        """One quick check, no retries: raises if the database cannot answer now."""
        ...

    def history_id(self) -> Optional[str]:
        """What identifies the database's line of writes: it changes when a standby is
        promoted (PostgreSQL's WAL timeline), so a process can tell that it failed over and
        that its last acknowledged writes may be gone. None where it cannot be told (SQLite,
        or a server that does not say)."""
        ...

    # -- workflows -----------------------------------------------------------------------------
    def init_workflow(self, wf: NewWorkflow, link: Optional[ChildLink]) -> InitOutcome: ...
    def init_workflows(
        self,
        wfs: Sequence[NewWorkflow],
        check: Optional[Callable[[list[InitOutcome]], None]] = None,
    ) -> list[InitOutcome]:
        """Create many top-level workflows (distinct IDs, no child links) in one transaction,
        all or none: existing IDs are reported as ``init_workflow`` reports them, ``check``
        may raise before the commit to write nothing, and a deduplication conflict raises
        DeduplicatedError naming the conflicting workflow."""
        ...

    def insert_on_connection(self, conn: Any, wf: NewWorkflow) -> None:
        """Insert an enqueued workflow on a caller-owned connection (or SQLAlchemy session),
        inside the caller's transaction."""
        ...

    def complete_workflow(self, done: Completion) -> bool:
        """Record the outcome if ``done.owner_xid`` still runs the workflow (and it is PENDING);
        False otherwise, changing nothing."""
        ...

    def get_workflow(self, workflow_id: str) -> Optional[WorkflowRow]: ...
    def get_outcome(self, workflow_id: str) -> Optional[Outcome]: ...
    def get_outcomes(self, workflow_ids: Sequence[str]) -> dict[str, Outcome]: ...
    def list_workflows(self, flt: ListFilter) -> list[WorkflowRow]: ...
    def cancel_workflows(self, workflow_ids: Sequence[str], now_ms: int) -> list[str]: ...
    def children_of(self, workflow_ids: Sequence[str]) -> list[str]: ...

    def queue_write(
        self,
        write: Union[NewWorkflow, StepRecord, Completion],
        done: Callable[[Any, Optional[BaseException]], None],
    ) -> bool:
        """Queue a hot write (a top-level start, a checkpoint, an outcome) for the next group
        commit, without a thread waiting for it: True if queued, and ``done(answer, error)``
        is then called, on the thread that wrote the batch, once the batch committed (the
        answer ``init_workflow``, ``record_step`` or ``complete_workflow`` would return) or
        failed. False, queueing nothing, where the store groups no writes: call the blocking
        method instead. Async code waits this way holding no thread (``core/effects.py``)."""
        ...

    # -- steps ---------------------------------------------------------------------------------
    def record_step(self, rec: StepRecord) -> RecordOutcome: ...
    def load_steps(self, workflow_id: str) -> dict[int, StepRow]: ...
    def resume_state(self, workflow_id: str) -> tuple[Optional[str], dict[int, StepRow]]:
        """The workflow's status (None: no such workflow) and ``load_steps``, in one read: a
        suspended run resuming needs both before its first new operation."""
        ...

    def load_steps_many(self, workflow_ids: Sequence[str]) -> dict[str, dict[int, StepRow]]:
        """``load_steps`` of many workflows in one read (one without checkpoints is absent):
        recovery and the dispatcher load the history of every row they claimed at once."""
        ...

    def list_steps(
        self, workflow_id: str, limit: Optional[int] = None, offset: Optional[int] = None
    ) -> list[StepRow]: ...

    # -- recovery and dispatch -----------------------------------------------------------------
    def recover_pending(self, req: RecoveryRequest) -> Recovered: ...
    def release_runs(
        self, owner_xids: Sequence[str], internal_queue: str, now_ms: int
    ) -> list[str]:
        """Hand back the PENDING workflows these run tokens own: ENQUEUED on their queue
        (direct ones on ``internal_queue``), executor and token cleared; their IDs."""
        ...

    def claim(self, req: ClaimRequest, now_ms: int) -> list[WorkflowRow]: ...
    def promote_delayed(self, now_ms: int) -> list[str]:
        """Move due DELAYED workflows to ENQUEUED; returns the queues that got work."""
        ...

    def next_delayed(self) -> Optional[int]:
        """When the next DELAYED workflow is due (epoch ms), if any."""
        ...

    def dedup_holder(self, queue_name: str, deduplication_id: str) -> Optional[str]: ...
    def extend_debounce(self, update: DebounceUpdate) -> Optional[str]:
        """Apply ``update`` to the workflow holding its deduplication ID; returns that ID, or
        None when no DELAYED debounced workflow of that name holds it."""
        ...

    def dead_letter(self, workflow_id: str, recovery_attempts: int, now_ms: int) -> bool: ...

    # -- messages, events, streams -------------------------------------------------------------
    def send_messages(
        self, messages: Sequence[NewMessage], record: Optional[StepRecord]
    ) -> Optional[RecordOutcome]:
        """Insert messages (duplicate IDs are ignored) and, from a workflow, checkpoint the
        send in the same transaction. Raises NotFoundError for a missing destination, writing
        nothing."""
        ...

    def send_on_connection(self, conn: Any, messages: Sequence[NewMessage]) -> None:
        """Insert messages on a caller-owned connection (or SQLAlchemy session), inside the
        caller's transaction: delivered if and only if it commits."""
        ...

    def deliver_message(self, message: NewMessage, receiver: StepRecord) -> bool:
        """Send one ``message`` (as ``send_messages`` outside a workflow) and, in the same
        transaction, consume it as ``receiver``: the checkpoint of a receive waiting at
        ``receiver.function_id`` in this process, its output and serialization the message's.
        Delivered only while that run owns the destination, no other message of the topic
        waits (it comes first) and nothing is recorded at that position; True if it was. A
        message sent before (its ID is there) is neither inserted nor delivered again."""
        ...

    def deliver_recorded(
        self, message: NewMessage, receiver: StepRecord, record: StepRecord
    ) -> tuple[RecordOutcome, bool]:
        """``deliver_message`` from a workflow: the send's checkpoint ``record`` too, in the
        same transaction, as ``send_messages`` writes it (fenced on the sender's owner; a
        refused checkpoint writes nothing; this run's checkpoint already there, a retry, sends
        the message again, once by its ID, and delivers nothing). Returns the checkpoint's
        outcome and whether the message was delivered."""
        ...

    def consume_message(
        self, workflow_id: str, topic: str, record: StepRecord, timed_out: bool = False
    ) -> Received:
        """Atomically take the oldest unconsumed message and checkpoint it as ``record``. An
        answer already recorded at that position (an earlier attempt's, or a delivery) is
        returned instead. ``timed_out``: the receive's deadline has passed; with no message,
        ``record`` as it is (its output the value of a receive that timed out) becomes the
        checkpoint, under the same rule."""
        ...

    def set_event(self, event: EventWrite, record: Optional[StepRecord]) -> Optional[RecordOutcome]:
        """Upsert the event (and its history at ``function_id``); from a workflow, checkpoint
        it as ``record`` in the same transaction, writing nothing when that is refused."""
        ...

    def get_event(self, workflow_id: str, key: str) -> Optional[tuple[str, Optional[str]]]: ...
    def ready_keys(self, keys: Sequence[str]) -> list[str]:
        """Those of the wake-up ``keys`` (``m:``, ``e:``, ``d:``, ``c:``) whose wait would find
        what it waits for now, read in one statement (parked waits polled together)."""
        ...

    def get_events(self, workflow_id: str) -> dict[str, tuple[str, Optional[str]]]: ...
    def write_stream(
        self, value: StreamWrite, record: Optional[StepRecord]
    ) -> Optional[RecordOutcome]:
        """Append the value at the stream's next offset, checkpointed like ``set_event``."""
        ...

    def read_stream(
        self, workflow_id: str, key: str, offset: int
    ) -> tuple[Optional[tuple[str, Optional[str]]], Optional[str]]:
        """The value at ``offset`` (if written) and the writer's status."""
        ...

    def forks_of(self, workflow_ids: Sequence[str]) -> list[str]: ...

    # -- management ----------------------------------------------------------------------------
    def resume_workflows(
        self,
        workflow_ids: Sequence[str],
        queue_name: str,
        now_ms: int,
        queue_limited: Optional[bool] = None,
    ) -> list[str]:
        """``queue_limited``: whether the queue counts limits across processes (global
        concurrency, a rate, partitions); None when the caller cannot tell. One database
        ignores it; a sharded store claims such a queue at its home shard only."""
        ...

    def fork_workflow(self, req: ForkRequest) -> None: ...
    def delete_workflows(self, workflow_ids: Sequence[str]) -> int: ...
    def set_delay(self, workflow_id: str, delay_until_ms: int) -> bool: ...
    def set_attributes(self, workflow_id: str, attributes: Optional[str]) -> bool: ...
    def set_latest_version(self, version_name: str, application_name: Optional[str]) -> bool: ...
    def garbage_collect(self, req: RetentionRequest) -> int:
        """Delete what ``req`` names, never a PENDING, ENQUEUED or DELAYED workflow; returns
        how many workflows went."""
        ...

    def active_created_before(self, cutoff_epoch_ms: int) -> list[str]: ...

    # -- executors and schedules ---------------------------------------------------------------
    def heartbeat(self, row: ExecutorRow) -> bool:
        """Record that this incarnation is alive; False when its row was not there (the
        first heartbeat, or a peer took the executor over and removed it)."""
        ...

    def retire(self, executor_id: str, incarnation: str) -> None: ...
    def set_executor_state(self, executor_id: str, incarnation: str, state: str) -> None:
        """'live', 'draining' or 'gone' (handed back: taken over without waiting)."""
        ...

    def list_executors(self, application_name: Optional[str]) -> list[ExecutorRow]: ...
    def database_gauges(self) -> DatabaseGauges:
        """Queue backlogs, PENDING by executor and executor heartbeats (metrics)."""

    def claim_dead_executors(
        self,
        application_name: Optional[str],
        application_version: Optional[str],
        silent_ms: Optional[int],
        unchanged: Optional[Mapping[str, str]] = None,
    ) -> list[str]:
        """Executor IDs of this version (of any, with None) whose incarnations are all gone
        or (with ``silent_ms``) silent that long, and (with ``unchanged``) whose heartbeat
        signatures (``records.heartbeat_signatures``) are still the given ones; removed,
        so one caller takes each over."""
        ...

    def upsert_schedule(self, row: ScheduleRow, replace: bool) -> ScheduleRow: ...
    def get_schedule(self, name: str) -> Optional[ScheduleRow]: ...
    def list_schedules(self, flt: ScheduleFilter) -> list[ScheduleRow]: ...
    def delete_schedule(self, name: str) -> bool: ...
    def set_schedule_status(self, name: str, status: str) -> bool: ...
    def set_last_fired(self, name: str, fired_at_iso: str) -> None: ...
    def rename_application(
        self, old_name: Optional[str], new_name: str, adopt_unclaimed: bool, batch: Optional[int]
    ) -> dict[str, int]:
        """Re-own ``old_name``'s rows (and the unclaimed ones) as ``new_name``; counts moved."""
        ...

    # -- what the console reads ----------------------------------------------------------------
    def count_capped(
        self, column: str, values: Sequence[str], application_name: Optional[str], cap: int
    ) -> dict[str, int]:
        """Workflows per value of ``column`` (status, application_version), each count
        stopping at ``cap``."""
        ...

    def completions_since(
        self, since_ms: int, application_name: Optional[str]
    ) -> list[Throughput]: ...
    def age_buckets(
        self, now_ms: int, bands_ms: Sequence[int], application_name: Optional[str]
    ) -> list[AgeBucket]: ...
    def messages_to(self, workflow_id: str, limit: int) -> list[MessageRow]: ...
    def event_history(self, workflow_id: str, limit: int) -> list[EventHistoryRow]: ...
    def stream_values(self, workflow_id: str, limit: int) -> list[StreamRow]: ...

    # -- database-backed queues ----------------------------------------------------------------
    def upsert_queue(self, row: QueueRow, update: bool) -> QueueRow: ...
    def get_queue(self, name: str) -> Optional[QueueRow]: ...
    def delete_queue(self, name: str) -> bool: ...
    def list_queues(self, application_name: Optional[str]) -> list[QueueRow]: ...

    # -- application versions ------------------------------------------------------------------
    def register_version(self, version_name: str, application_name: Optional[str]) -> None: ...
    def list_versions(self, application_name: Optional[str]) -> list[VersionRow]: ...
    def register_fingerprints(
        self,
        application_version: str,
        application_name: Optional[str],
        fingerprints: Mapping[str, str],
    ) -> None:
        """Record each workflow's fingerprint (by workflow name) in this version."""
        ...

    def list_fingerprints(self, application_version: str) -> dict[str, list[str]]:
        """The fingerprints recorded for each workflow of a version."""
        ...


class SchemaAdmin(Protocol):
    """Creating, checking and destroying a system database (migrations, CLI, tests)."""

    def migrate(self) -> None:
        """Create the database (where the backend can) and apply every pending migration."""
        ...

    def verify_schema(self) -> None:
        """Raise StorageConfigError unless the schema is at this version (no changes made)."""
        ...

    def schema_version(self) -> int: ...
    def grant(self, role: str) -> None:
        """Give an application role what it needs to run (no DDL) on the system schema."""
        ...

    def drop(self) -> None:
        """Destroy the system database and everything in it."""
        ...

    def truncate_all(self) -> None:
        """Delete every row of every table, keeping the schema."""
        ...


class Store(SystemStore, SchemaAdmin, Protocol):
    """What a backend hands the registry: both halves of the contract."""
