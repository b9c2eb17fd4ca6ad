"""The plain records that cross the storage boundary, by concern.

Requests (``New*``, ``*Request``, ``*Write``, filters) go into a store; rows (``*Row``) and
outcomes come back. Payloads (inputs, outputs, errors, values) are already-serialized text
plus the name of the serializer that wrote them; the store never (de)serializes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Optional

# The queue that resumed, forked and recovered work goes on unless another is named.
INTERNAL_QUEUE_NAME = "_dbos_internal_queue"

# -- workflows ------------------------------------------------------------------------------------


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
    name: Optional[str] = None
    class_name: Optional[str] = None
    config_name: Optional[str] = None
    serialization: Optional[str] = None
    output: Optional[str] = None
    error: Optional[str] = None
    workflow_deadline_epoch_ms: Optional[int] = None
    queue_name: Optional[str] = None
    # Set when the parent's step position already names a different child (nondeterminism).
    linked_child_id: Optional[str] = None
    linked_function_name: Optional[str] = None


@dataclass(slots=True)
class Completion:
    """A run's final status, written only while that run (``owner_xid``) owns the workflow."""

    workflow_id: str
    owner_xid: str
    status: str
    output: Optional[str]
    error: Optional[str]
    now_ms: int


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


# The workflow_status columns of a WorkflowRow, in its order (the ID column is DBOS's name).
WORKFLOW_COLUMNS: tuple[str, ...] = ("workflow_uuid", *(f.name for f in fields(WorkflowRow)[1:]))


@dataclass(slots=True)
class Outcome:
    """The terminal (or current) state of a workflow, for result waiters."""

    status: str
    output: Optional[str]
    error: Optional[str]
    serialization: Optional[str]


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
    # Keyset pagination: only rows after this (created_at, workflow_uuid) in the sort order,
    # so a page deep in a million rows costs what the first one does (OFFSET reads and drops).
    after: Optional[tuple[int, str]] = None
    load_input: bool = True
    load_output: bool = True


# -- steps ----------------------------------------------------------------------------------------


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


# -- recovery and dispatch ------------------------------------------------------------------------


@dataclass(slots=True)
class RecoveryRequest:
    """Take back every PENDING workflow of these executors, whatever its version.

    Workflows of a user queue go back on their queue. The others that a process of
    ``application_version`` may run (see ``SqlCore._runnable``; any, when None) are claimed at
    once by ``claimant`` (executor ID, claim token) when given; the rest go on
    ``internal_queue``, still pinned to their version, for an executor that may run them."""

    executor_ids: Sequence[str]
    application_version: Optional[str]
    application_name: Optional[str]
    internal_queue: str
    now_ms: int
    claimant: Optional[tuple[str, str]] = None
    # version_compatibility "fingerprint": also an older version's workflow whose fingerprint
    # this version shares (workflow_fingerprints).
    compatible: bool = False


@dataclass(slots=True)
class Recovered:
    """What a recovery took back: every workflow ID, and the rows claimed for the caller."""

    workflow_ids: list[str]
    claimed: list[WorkflowRow]


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
    # Set by the store when a rate limit held work back: how long until the window next
    # reopens, by the database's clock (a difference, so a process whose clock disagrees with
    # the database's neither busy-polls nor oversleeps).
    retry_in_ms: Optional[int] = None
    # version_compatibility "fingerprint": also claim rows of an older version whose
    # fingerprint this version shares.
    compatible: bool = False
    # Set by a store that can tell within the claim itself: the IDs of claimed rows that have
    # no checkpoint, whose history need not be read. Only ever added to (a sharded claim asks
    # several stores with one request); an ID missing from it only costs that read.
    stepless: set[str] = field(default_factory=set)

    @property
    def shared_budget(self) -> bool:
        return (
            self.global_concurrency is not None or self.rate_limit is not None or self.partitioned
        )


@dataclass(slots=True)
class DebounceUpdate:
    """New inputs for the DELAYED debounced workflow ``name`` holding a deduplication ID, due
    at ``delay_until_ms`` (never past its debounce deadline)."""

    queue_name: str
    deduplication_id: str
    name: str
    inputs: str
    serialization: str
    delay_until_ms: int
    application_name: Optional[str]
    now_ms: int
    # The version the call stamps (None: unversioned, the latest runs it): the workflow now
    # runs the latest call's arguments, so the version of the code that made it.
    application_version: Optional[str] = None


# -- messages, events, streams --------------------------------------------------------------------


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
class EventWrite:
    """A value of a workflow's key, written by its operation ``function_id``."""

    workflow_id: str
    key: str
    value: str
    serialization: Optional[str]
    function_id: int


@dataclass(slots=True)
class StreamWrite(EventWrite):
    """A value appended to a stream; a second write with the same ``write_key`` is ignored."""

    write_key: str


# -- management -----------------------------------------------------------------------------------


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
class ForkSource:
    """What a fork copies from its original, read on one database to be written on another
    (a sharded fork onto a queue whose home is another shard): the original's status columns
    that a fork keeps, and its checkpoints, event history and stream values before the fork's
    ``start_step``, each as the row the fork will hold."""

    status: dict[str, Any]
    steps: list[tuple[Any, ...]]
    events: list[tuple[Any, ...]]
    streams: list[tuple[Any, ...]]


@dataclass(slots=True)
class RetentionRequest:
    """Finished workflows to delete: created before the cutoff or beyond the newest
    ``rows_threshold`` (of this application, when given), ``batch_size`` per transaction."""

    cutoff_epoch_ms: Optional[int] = None
    rows_threshold: Optional[int] = None
    application_name: Optional[str] = None
    batch_size: int = 10_000


@dataclass(slots=True)
class VersionRow:
    version_id: str
    version_name: str
    version_timestamp: int
    created_at: int
    application_name: Optional[str]


# -- executors, schedules, queues -----------------------------------------------------------------


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
    # 'live'; 'draining' (shutting down gracefully: finishing, starting nothing new); 'gone'
    # (its work handed back: peers take the executor over without waiting for silence).
    state: str = "live"


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


SCHEDULE_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(ScheduleRow))


@dataclass(slots=True)
class ScheduleFilter:
    """Schedules of an application (and unowned ones); ``None`` matches anything."""

    application_name: Optional[str]
    status: Optional[str] = None
    workflow_name: Optional[str] = None
    name_prefix: Optional[str] = None


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


QUEUE_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(QueueRow))


@dataclass(slots=True)
class QueueGauge:
    """Workflows of one queue (and partition) in one status, and the oldest one's creation."""

    queue_name: str
    partition_key: Optional[str]
    status: str  # ENQUEUED or PENDING
    count: int
    oldest_created_ms: Optional[int]


@dataclass(slots=True)
class DatabaseGauges:
    """What the whole system database holds right now, for metrics (``database_gauges``)."""

    db_now_ms: int
    queues: list[QueueGauge]
    pending_by_executor: dict[str, int]
    executors: list[ExecutorRow]  # every incarnation, with its heartbeat period and last_seen


# -- what the console reads -----------------------------------------------------------------------


@dataclass(slots=True)
class MessageRow:
    """A message sent to a workflow (``notifications``), payload still serialized."""

    message_id: str
    topic: Optional[str]
    message: str
    serialization: Optional[str]
    created_at: int
    consumed: bool


@dataclass(slots=True)
class EventHistoryRow:
    """One value a workflow set for an event key, at the step that set it."""

    function_id: int
    key: str
    value: str
    serialization: Optional[str]


@dataclass(slots=True)
class StreamRow:
    """One value written to a workflow's stream."""

    key: str
    offset: int
    function_id: int
    value: str
    serialization: Optional[str]


@dataclass(slots=True)
class Throughput:
    """Workflows of a queue that finished within one minute (epoch minute)."""

    queue_name: str
    minute: int
    completed: int


@dataclass(slots=True)
class AgeBucket:
    """How many workflows of a status were created within an age band (``band`` is an index
    into the bands the caller gave, ``len(bands)`` for older than every band)."""

    status: str
    band: int
    count: int


def heartbeat_signatures(rows: Sequence[ExecutorRow]) -> dict[str, str]:
    """Per executor ID, its incarnations' heartbeats as one value: unchanged while none of
    them writes a heartbeat (whatever each writer's clock says)."""
    parts: dict[str, list[str]] = {}
    for r in rows:
        parts.setdefault(r.executor_id, []).append(f"{r.incarnation}:{r.last_seen}:{r.state}")
    return {e: ",".join(sorted(p)) for e, p in parts.items()}
