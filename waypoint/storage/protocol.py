"""The one interface between the engine and a system database.

The engine never sees SQL: it hands the store plain records and gets plain records back.
Payloads (inputs, outputs, errors) cross this boundary as already-serialized text plus the
name of the serializer that wrote them; the store never (de)serializes.

Every method is safe to retry after an ambiguous failure (the connection dropped after the
commit was sent): writes carry the writer's run token (``owner_xid``) so a retried write
recognises its own earlier success instead of reporting a conflict.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional, Protocol

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


@dataclass(slots=True)
class NewWorkflow:
    """A workflow_status row to create (direct start, child start or enqueue)."""

    workflow_id: str
    status: str
    name: str
    class_name: Optional[str]
    config_name: Optional[str]
    inputs: str
    serialization: str
    owner_xid: str
    executor_id: Optional[str]
    application_version: Optional[str]
    application_id: Optional[str]
    application_name: Optional[str]
    created_at: int
    authenticated_user: Optional[str] = None
    assumed_role: Optional[str] = None
    authenticated_roles: Optional[str] = None
    queue_name: Optional[str] = None
    queue_partition_key: Optional[str] = None
    deduplication_id: Optional[str] = None
    priority: int = 0
    workflow_timeout_ms: Optional[int] = None
    workflow_deadline_epoch_ms: Optional[int] = None
    delay_until_epoch_ms: Optional[int] = None
    parent_workflow_id: Optional[str] = None
    recovery_attempts: int = 1
    attributes: Optional[str] = None
    schedule_name: Optional[str] = None
    forked_from: Optional[str] = None
    started_at_epoch_ms: Optional[int] = None
    is_debounced: bool = False
    debounce_deadline_epoch_ms: Optional[int] = None


@dataclass(slots=True)
class ChildLink:
    """The parent's checkpoint that records which child it started at a step position."""

    parent_workflow_id: str
    function_id: int
    function_name: str
    parent_owner_xid: str
    started_at_epoch_ms: int


@dataclass(slots=True)
class InitOutcome:
    """What the database holds for a workflow ID after an attempt to create it."""

    created: bool
    status: str
    name: Optional[str]
    class_name: Optional[str]
    config_name: Optional[str]
    serialization: Optional[str]
    output: Optional[str]
    error: Optional[str]
    workflow_deadline_epoch_ms: Optional[int]
    queue_name: Optional[str]
    # Set when the parent's step position already names a different child (nondeterminism).
    linked_child_id: Optional[str] = None
    linked_function_name: Optional[str] = None


@dataclass(slots=True)
class StepRecord:
    workflow_id: str
    function_id: int
    function_name: str
    output: Optional[str]
    error: Optional[str]
    serialization: Optional[str]
    owner_xid: str
    started_at_epoch_ms: int
    completed_at_epoch_ms: int
    child_workflow_id: Optional[str] = None
    application_name: Optional[str] = None


@dataclass(slots=True)
class RecordOutcome:
    """``accepted`` is False when another execution owns the row or the workflow."""

    accepted: bool
    workflow_status: Optional[str]


@dataclass(slots=True)
class StepRow:
    function_id: int
    function_name: str
    output: Optional[str]
    error: Optional[str]
    child_workflow_id: Optional[str]
    started_at_epoch_ms: Optional[int]
    completed_at_epoch_ms: Optional[int]
    serialization: Optional[str]


@dataclass(slots=True)
class WorkflowRow:
    """A workflow_status row with payloads still serialized."""

    workflow_id: str
    status: str
    name: Optional[str]
    class_name: Optional[str]
    config_name: Optional[str]
    authenticated_user: Optional[str]
    assumed_role: Optional[str]
    authenticated_roles: Optional[str]
    output: Optional[str]
    error: Optional[str]
    executor_id: Optional[str]
    created_at: Optional[int]
    updated_at: Optional[int]
    application_version: Optional[str]
    application_id: Optional[str]
    recovery_attempts: Optional[int]
    queue_name: Optional[str]
    workflow_timeout_ms: Optional[int]
    workflow_deadline_epoch_ms: Optional[int]
    inputs: Optional[str]
    started_at_epoch_ms: Optional[int]
    deduplication_id: Optional[str]
    priority: Optional[int]
    queue_partition_key: Optional[str]
    forked_from: Optional[str]
    owner_xid: Optional[str]
    parent_workflow_id: Optional[str]
    serialization: Optional[str]
    delay_until_epoch_ms: Optional[int]
    was_forked_from: bool
    completed_at: Optional[int]
    attributes: Optional[str]
    schedule_name: Optional[str]
    application_name: Optional[str]


WORKFLOW_COLUMNS: tuple[str, ...] = (
    "workflow_uuid",
    "status",
    "name",
    "class_name",
    "config_name",
    "authenticated_user",
    "assumed_role",
    "authenticated_roles",
    "output",
    "error",
    "executor_id",
    "created_at",
    "updated_at",
    "application_version",
    "application_id",
    "recovery_attempts",
    "queue_name",
    "workflow_timeout_ms",
    "workflow_deadline_epoch_ms",
    "inputs",
    "started_at_epoch_ms",
    "deduplication_id",
    "priority",
    "queue_partition_key",
    "forked_from",
    "owner_xid",
    "parent_workflow_id",
    "serialization",
    "delay_until_epoch_ms",
    "was_forked_from",
    "completed_at",
    "attributes",
    "schedule_name",
    "application_name",
)


@dataclass(slots=True)
class Recovered:
    """What a recovery took back: every workflow ID, and the rows claimed for the caller."""

    workflow_ids: list[str]
    claimed: list[WorkflowRow]


@dataclass(slots=True)
class Outcome:
    """The terminal (or current) state of a workflow, for result waiters."""

    status: str
    output: Optional[str]
    error: Optional[str]
    serialization: Optional[str]


@dataclass(slots=True)
class ClaimRequest:
    """Ask to move up to ``limit`` ENQUEUED workflows of a queue to PENDING on this executor."""

    queue_name: str
    limit: int
    executor_id: str
    application_version: str
    application_name: Optional[str]
    claim_token: str
    # Shared limits: when any is set, claims of this queue are serialised across processes.
    global_concurrency: Optional[int] = None
    rate_limit: Optional[tuple[int, float]] = None  # (starts, period in seconds)
    partitioned: bool = False
    partition_concurrency: Optional[int] = None
    partition_rate_limit: Optional[tuple[int, float]] = None
    # Per-process limit per partition, with this process's running counts.
    partition_worker_concurrency: Optional[int] = None
    local_partition_running: dict[str, int] = field(default_factory=dict)
    # Set by the store when a rate limit held work back: when the window next reopens.
    retry_at_ms: Optional[int] = None

    @property
    def shared_budget(self) -> bool:
        return (
            self.global_concurrency is not None or self.rate_limit is not None or self.partitioned
        )


@dataclass(slots=True)
class ExecutorRow:
    executor_id: str
    incarnation: str
    application_name: Optional[str]
    application_version: Optional[str]
    hostname: Optional[str]
    pid: Optional[int]
    heartbeat_ms: int = 10_000
    started_at: Optional[int] = None
    last_seen: Optional[int] = None
    db_now: Optional[int] = None  # the database's clock when this was read


@dataclass(slots=True)
class ScheduleRow:
    schedule_id: str
    schedule_name: str
    workflow_name: str
    workflow_class_name: Optional[str]
    schedule: str
    status: str
    context: str
    last_fired_at: Optional[str]
    automatic_backfill: bool
    cron_timezone: Optional[str]
    queue_name: Optional[str]
    application_name: Optional[str]


SCHEDULE_COLUMNS: tuple[str, ...] = (
    "schedule_id",
    "schedule_name",
    "workflow_name",
    "workflow_class_name",
    "schedule",
    "status",
    "context",
    "last_fired_at",
    "automatic_backfill",
    "cron_timezone",
    "queue_name",
    "application_name",
)


@dataclass(slots=True)
class ForkRequest:
    source_id: str
    new_id: str
    start_step: int
    queue_name: str
    now_ms: int
    owner_xid: str
    application_version: Optional[str] = None
    partition_key: Optional[str] = None
    timeout_ms: Optional[int] = None
    application_name: Optional[str] = None
    replacement_children: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class NewMessage:
    message_uuid: str
    destination_id: str
    topic: str
    message: str
    serialization: Optional[str]


@dataclass(slots=True)
class Received:
    """What ``consume_message`` found: ``found`` is False when no message is waiting."""

    found: bool
    accepted: bool
    output: Optional[str] = None
    serialization: Optional[str] = None


@dataclass(slots=True)
class QueueRow:
    """A database-backed queue (the ``queues`` table)."""

    name: str
    concurrency: Optional[int] = None
    worker_concurrency: Optional[int] = None
    rate_limit_max: Optional[int] = None
    rate_limit_period_sec: Optional[float] = None
    priority_enabled: bool = False
    partition_queue: bool = False
    polling_interval_sec: float = 1.0
    application_name: Optional[str] = None
    partition_concurrency: Optional[int] = None
    partition_worker_concurrency: Optional[int] = None
    partition_rate_limit_max: Optional[int] = None
    partition_rate_limit_period_sec: Optional[float] = None
    created_at: Optional[int] = None
    updated_at: Optional[int] = None


QUEUE_COLUMNS: tuple[str, ...] = (
    "name",
    "concurrency",
    "worker_concurrency",
    "rate_limit_max",
    "rate_limit_period_sec",
    "priority_enabled",
    "partition_queue",
    "polling_interval_sec",
    "application_name",
    "partition_concurrency",
    "partition_worker_concurrency",
    "partition_rate_limit_max",
    "partition_rate_limit_period_sec",
    "created_at",
    "updated_at",
)


@dataclass(slots=True)
class ListFilter:
    """Filters of ``list_workflows``; every field optional; lists mean "any of"."""

    workflow_ids: Optional[list[str]] = None
    status: Optional[list[str]] = None
    start_time_ms: Optional[int] = None
    end_time_ms: Optional[int] = None
    name: Optional[list[str]] = None
    app_version: Optional[list[str]] = None
    user: Optional[list[str]] = None
    queue_name: Optional[list[str]] = None
    executor_id: Optional[list[str]] = None
    parent_workflow_id: Optional[list[str]] = None
    forked_from: Optional[list[str]] = None
    workflow_id_prefix: Optional[list[str]] = None
    application_name: Optional[str] = None
    queues_only: bool = False
    schedule_name: Optional[list[str]] = None
    completed_after: Optional[int] = None
    completed_before: Optional[int] = None
    dequeued_after: Optional[int] = None
    dequeued_before: Optional[int] = None
    was_forked_from: Optional[bool] = None
    has_parent: Optional[bool] = None
    attributes: Optional[str] = None  # JSON object the attributes must contain
    limit: Optional[int] = None
    offset: Optional[int] = None
    sort_desc: bool = False
    load_input: bool = True
    load_output: bool = True


@dataclass(slots=True)
class VersionRow:
    version_id: str
    version_name: str
    version_timestamp: int
    created_at: int
    application_name: Optional[str]


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

    # -- workflows -----------------------------------------------------------------------------
    def init_workflow(self, wf: NewWorkflow, link: Optional[ChildLink]) -> InitOutcome: ...
    def insert_on_connection(self, conn: Any, wf: NewWorkflow) -> None:
        """Insert an enqueued workflow on a caller-owned connection (or SQLAlchemy session),
        inside the caller's transaction."""
        ...

    def complete_workflow(
        self,
        workflow_id: str,
        owner_xid: str,
        status: str,
        output: Optional[str],
        error: Optional[str],
        now_ms: int,
    ) -> bool: ...
    def get_workflow(self, workflow_id: str) -> Optional[WorkflowRow]: ...
    def get_outcome(self, workflow_id: str) -> Optional[Outcome]: ...
    def get_outcomes(self, workflow_ids: Sequence[str]) -> dict[str, Outcome]: ...
    def list_workflows(self, flt: ListFilter) -> list[WorkflowRow]: ...
    def cancel_workflows(self, workflow_ids: Sequence[str], now_ms: int) -> list[str]: ...
    def children_of(self, workflow_ids: Sequence[str]) -> list[str]: ...

    # -- steps ---------------------------------------------------------------------------------
    def record_step(self, rec: StepRecord) -> RecordOutcome: ...
    def load_steps(self, workflow_id: str) -> dict[int, StepRow]: ...
    def list_steps(
        self, workflow_id: str, limit: Optional[int] = None, offset: Optional[int] = None
    ) -> list[StepRow]: ...

    # -- recovery and dispatch -----------------------------------------------------------------
    def recover_pending(
        self,
        executor_ids: Sequence[str],
        application_version: Optional[str],
        application_name: Optional[str],
        internal_queue: str,
        now_ms: int,
        claimant: Optional[tuple[str, str]] = None,
    ) -> Recovered: ...
    def claim(self, req: ClaimRequest, now_ms: int) -> list[WorkflowRow]: ...
    def promote_delayed(self, now_ms: int) -> list[str]:
        """Move due DELAYED workflows to ENQUEUED; returns the queues that got work."""
        ...

    def next_delayed(self) -> Optional[int]:
        """When the next DELAYED workflow is due (epoch ms), if any."""
        ...

    def dedup_holder(self, queue_name: str, deduplication_id: str) -> Optional[str]: ...
    def extend_debounce(
        self,
        queue_name: str,
        deduplication_id: str,
        name: str,
        inputs: str,
        serialization: str,
        delay_until_ms: int,
        application_name: Optional[str],
        now_ms: int,
    ) -> Optional[str]: ...
    def dead_letter(self, workflow_id: str, recovery_attempts: int, now_ms: int) -> bool: ...

    # -- messages, events, streams -------------------------------------------------------------
    def send_messages(
        self, messages: Sequence[NewMessage], record: Optional[StepRecord]
    ) -> Optional[RecordOutcome]:
        """Insert messages (duplicate IDs are ignored) and, from a workflow, checkpoint the
        send in the same transaction. Raises NotFoundError for a missing destination, writing
        nothing."""
        ...

    def consume_message(self, workflow_id: str, topic: str, record: StepRecord) -> Received:
        """Atomically take the oldest unconsumed message and checkpoint it as ``record``."""
        ...

    def set_event(
        self,
        workflow_id: str,
        key: str,
        value: str,
        serialization: Optional[str],
        function_id: int,
        record: Optional[StepRecord],
    ) -> Optional[RecordOutcome]: ...
    def get_event(self, workflow_id: str, key: str) -> Optional[tuple[str, Optional[str]]]: ...
    def get_events(self, workflow_id: str) -> dict[str, tuple[str, Optional[str]]]: ...
    def write_stream(
        self,
        workflow_id: str,
        key: str,
        value: str,
        serialization: Optional[str],
        function_id: int,
        write_key: str,
        record: Optional[StepRecord],
    ) -> Optional[RecordOutcome]: ...
    def read_stream(
        self, workflow_id: str, key: str, offset: int
    ) -> tuple[Optional[tuple[str, Optional[str]]], Optional[str]]:
        """The value at ``offset`` (if written) and the writer's status."""
        ...

    def forks_of(self, workflow_ids: Sequence[str]) -> list[str]: ...

    # -- management ----------------------------------------------------------------------------
    def resume_workflows(
        self, workflow_ids: Sequence[str], queue_name: str, now_ms: int
    ) -> list[str]: ...
    def fork_workflow(self, req: ForkRequest) -> None: ...
    def delete_workflows(self, workflow_ids: Sequence[str]) -> int: ...
    def set_delay(self, workflow_id: str, delay_until_ms: int) -> bool: ...
    def set_attributes(self, workflow_id: str, attributes: Optional[str]) -> bool: ...
    def set_latest_version(self, version_name: str, application_name: Optional[str]) -> bool: ...
    def garbage_collect(
        self,
        cutoff_epoch_ms: Optional[int],
        rows_threshold: Optional[int],
        application_name: Optional[str],
        batch_size: int = 10_000,
    ) -> int: ...
    def active_created_before(self, cutoff_epoch_ms: int) -> list[str]: ...

    # -- executors and schedules ---------------------------------------------------------------
    def heartbeat(self, row: ExecutorRow) -> None: ...
    def retire(self, executor_id: str, incarnation: str) -> None: ...
    def list_executors(self, application_name: Optional[str]) -> list[ExecutorRow]: ...
    def claim_dead_executors(
        self, application_name: Optional[str], application_version: str, silent_ms: int
    ) -> list[str]: ...
    def upsert_schedule(self, row: ScheduleRow, replace: bool) -> ScheduleRow: ...
    def get_schedule(self, name: str) -> Optional[ScheduleRow]: ...
    def list_schedules(
        self,
        application_name: Optional[str],
        status: Optional[str] = None,
        workflow_name: Optional[str] = None,
        name_prefix: Optional[str] = None,
    ) -> list[ScheduleRow]: ...
    def delete_schedule(self, name: str) -> bool: ...
    def set_schedule_status(self, name: str, status: str) -> bool: ...
    def set_last_fired(self, name: str, fired_at_iso: str) -> None: ...

    # -- database-backed queues ----------------------------------------------------------------
    def upsert_queue(self, row: QueueRow, update: bool) -> QueueRow: ...
    def get_queue(self, name: str) -> Optional[QueueRow]: ...
    def delete_queue(self, name: str) -> bool: ...
    def list_queues(self, application_name: Optional[str]) -> list[QueueRow]: ...

    # -- application versions ------------------------------------------------------------------
    def register_version(self, version_name: str, application_name: Optional[str]) -> None: ...
    def list_versions(self, application_name: Optional[str]) -> list[VersionRow]: ...


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
