"""Domain types shared by the engine, the storage layer and the public API.

Nothing here does I/O. The internal queue's name is storage's (a sharded store routes by it).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Optional, TypedDict

from waypoint.storage.records import INTERNAL_QUEUE_NAME as INTERNAL_QUEUE_NAME

NULL_TOPIC = "__null__topic__"


class WorkflowStatusString(enum.Enum):
    """The states a workflow can be in (the ``status`` column)."""

    PENDING = "PENDING"
    SUCCESS = "SUCCESS"
    ERROR = "ERROR"
    MAX_RECOVERY_ATTEMPTS_EXCEEDED = "MAX_RECOVERY_ATTEMPTS_EXCEEDED"
    CANCELLED = "CANCELLED"
    ENQUEUED = "ENQUEUED"
    DELAYED = "DELAYED"


TERMINAL_STATUSES = frozenset(
    {
        WorkflowStatusString.SUCCESS.value,
        WorkflowStatusString.ERROR.value,
        WorkflowStatusString.CANCELLED.value,
        WorkflowStatusString.MAX_RECOVERY_ATTEMPTS_EXCEEDED.value,
    }
)
ACTIVE_STATUSES = frozenset(
    {
        WorkflowStatusString.PENDING.value,
        WorkflowStatusString.ENQUEUED.value,
        WorkflowStatusString.DELAYED.value,
    }
)


class WorkflowSerializationFormat(enum.Enum):
    """Per-workflow choice of how inputs, outputs and errors are stored.

    ``DEFAULT`` means "whatever the configured serializer is" (pickle unless configured).
    """

    PORTABLE = "portable"
    NATIVE = "native"
    DEFAULT = None


class WorkflowStatus:
    """A workflow's recorded state, as returned by ``get_workflow_status`` and handles."""

    workflow_id: str
    status: str
    name: str
    class_name: Optional[str]
    config_name: Optional[str]
    authenticated_user: Optional[str]
    assumed_role: Optional[str]
    authenticated_roles: Optional[list[str]]
    input: Optional[Any]
    output: Optional[Any]
    error: Optional[Any]
    created_at: Optional[int]
    updated_at: Optional[int]
    queue_name: Optional[str]
    executor_id: Optional[str]
    app_version: Optional[str]
    workflow_timeout_ms: Optional[int]
    workflow_deadline_epoch_ms: Optional[int]
    deduplication_id: Optional[str]
    priority: Optional[int]
    queue_partition_key: Optional[str]
    forked_from: Optional[str]
    was_forked_from: bool
    parent_workflow_id: Optional[str]
    dequeued_at: Optional[int]
    delay_until_epoch_ms: Optional[int]
    completed_at: Optional[int]
    attributes: Optional[dict[str, Any]]
    schedule_name: Optional[str]
    application_name: Optional[str]
    app_id: Optional[str]
    recovery_attempts: Optional[int]

    def __init__(self, **fields: Any) -> None:
        for name in _STATUS_FIELDS:
            setattr(self, name, fields.pop(name, None))
        if self.was_forked_from is None:
            self.was_forked_from = False
        if fields:
            raise TypeError(f"unknown WorkflowStatus fields: {sorted(fields)}")

    def __repr__(self) -> str:
        return (
            f"WorkflowStatus(workflow_id={self.workflow_id!r}, status={self.status!r}, "
            f"name={self.name!r})"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, WorkflowStatus):
            return NotImplemented
        return all(getattr(self, f) == getattr(other, f) for f in _STATUS_FIELDS)

    __hash__ = None  # type: ignore[assignment]


_STATUS_FIELDS = tuple(WorkflowStatus.__annotations__)


class StepInfo(TypedDict):
    """One recorded operation of a workflow, as ``list_workflow_steps`` returns it."""

    function_id: int
    function_name: str
    output: Optional[Any]
    error: Optional[Exception]
    child_workflow_id: Optional[str]
    started_at_epoch_ms: Optional[int]
    completed_at_epoch_ms: Optional[int]


class StepOptions(TypedDict, total=False):
    """The options of ``DBOS.run_step``: those of the ``@DBOS.step`` decorator."""

    name: str
    retries_allowed: bool
    interval_seconds: float
    max_attempts: int
    backoff_rate: float
    should_retry: Callable[[BaseException], Any]
    preemptible: bool
    timeout_seconds: Optional[float]


@dataclass(frozen=True)
class StepStatus:
    """What ``DBOS.step_status`` reports inside a running step."""

    step_id: int
    current_attempt: Optional[int]
    max_attempts: Optional[int]


class VersionInfo(TypedDict):
    """A registered application version (``list_application_versions``)."""

    version_id: str
    version_name: str
    version_timestamp: int
    created_at: int
    application_name: Optional[str]


DuplicationPolicy = Literal["reject", "return-existing"]


@dataclass(frozen=True)
class Auth:
    """Who started a workflow (``DBOSContextSetAuth``), stored with it and inherited by its
    children."""

    user: Optional[str]
    roles: Optional[list[str]] = None
    assumed_role: Optional[str] = None


@dataclass(frozen=True)
class RequestInfo:
    """The HTTP request being handled (set by the FastAPI and Flask integrations): workflows
    started while handling it carry it, so observers can tie them to the request."""

    request_id: str  # the ``x-request-id`` header, else a generated UUID
    method: str
    url: str
    path: str
    client_ip: Optional[str]


@dataclass
class StepSpec:
    """How a step is run: its recorded name and retry policy."""

    name: str
    retries_allowed: bool = False
    interval_seconds: float = 1.0
    max_attempts: int = 3
    backoff_rate: float = 2.0
    should_retry: Optional[Callable[[BaseException], Any]] = None
    preemptible: bool = False
    timeout_seconds: Optional[float] = None

    def retry_delay(self, attempt: int) -> float:
        """Delay after the failed attempt number ``attempt`` (0-based)."""
        return float(min(self.interval_seconds * (self.backoff_rate**attempt), 3600.0))


class WorkflowSchedule(TypedDict):
    """A stored schedule, as ``list_schedules``/``get_schedule`` return it."""

    schedule_id: str
    schedule_name: str
    workflow_name: str
    workflow_class_name: Optional[str]
    schedule: str
    status: str
    context: Any
    last_fired_at: Optional[str]
    automatic_backfill: bool
    cron_timezone: Optional[str]
    queue_name: Optional[str]
    application_name: Optional[str]


class ScheduleInput(TypedDict, total=False):
    """A schedule for ``DBOS.create_schedule``/``apply_schedules``, naming the function."""

    schedule_name: str
    workflow_fn: Callable[..., Any]
    schedule: str
    context: Any
    automatic_backfill: bool
    cron_timezone: Optional[str]
    queue_name: Optional[str]


class ClientScheduleInput(TypedDict, total=False):
    """A schedule for ``DBOSClient``, naming the workflow by name (and class)."""

    schedule_name: str
    workflow_name: str
    workflow_class_name: Optional[str]
    schedule: str
    context: Any
    automatic_backfill: bool
    cron_timezone: Optional[str]
    queue_name: Optional[str]
    application_name: Optional[str]
