"""The plain records that cross the storage boundary.

Requests (``New*``, ``*Request``, filters) go into a store; rows (``*Row``) and outcomes come
back. Payloads (inputs, outputs, errors, values) are already-serialized text plus the name of
the serializer that wrote them; the store never (de)serializes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional


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
