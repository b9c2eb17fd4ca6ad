"""Schedules as rows of ``workflow_schedules``: built from what a caller gives (a registered
function, or a workflow name from a client), validated before anything is written, and turned
back into the public ``WorkflowSchedule``."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from typing import Any, cast

from waypoint.core.engine import Engine
from waypoint.core.registrations import REGISTRY, WorkflowInfo
from waypoint.core.types import WorkflowSchedule
from waypoint.error import DBOSException
from waypoint.queues.enqueue import find_queue
from waypoint.scheduling.cron import parse_cron, zone
from waypoint.storage.protocol import SCHEDULE_COLUMNS, ScheduleRow

SCHEDULE_FIELDS = frozenset(
    {
        "schedule_name",
        "workflow_fn",
        "workflow_name",
        "workflow_class_name",
        "schedule",
        "context",
        "automatic_backfill",
        "cron_timezone",
        "queue_name",
        "application_name",
    }
)


_NO_INSTANCE_METHODS = "Configured instance methods cannot be used as scheduled workflows"


def registered(workflow_fn: Callable[..., Any]) -> WorkflowInfo:
    info = getattr(workflow_fn, "__waypoint_workflow__", None)
    if not isinstance(info, WorkflowInfo):
        raise DBOSException("a schedule needs a function decorated with @DBOS.workflow")
    if info.kind == "instance":
        raise DBOSException(_NO_INSTANCE_METHODS)
    return info


def _workflow(spec: Mapping[str, Any], name: str) -> tuple[str, Any]:
    """(workflow name, class name) of the scheduled workflow."""
    if spec.get("workflow_fn") is not None:
        info = registered(spec["workflow_fn"])
        return info.name, info.class_name
    workflow_name = spec.get("workflow_name")
    if not isinstance(workflow_name, str) or not workflow_name:
        raise DBOSException(f"schedule {name}: give workflow_fn or workflow_name")
    local = REGISTRY.workflows.get(workflow_name)
    if local is not None and local.kind == "instance":
        raise DBOSException(_NO_INSTANCE_METHODS)
    class_name = spec.get("workflow_class_name")
    if class_name is None and local is not None:
        class_name = local.class_name
    return workflow_name, class_name


def schedule_row(eng: Engine, spec: Mapping[str, Any], *, check_queue: bool) -> ScheduleRow:
    unknown = sorted(set(spec) - SCHEDULE_FIELDS)
    if unknown:
        raise DBOSException(f"unknown schedule fields: {', '.join(unknown)}")
    name = spec.get("schedule_name")
    if not isinstance(name, str) or not name.strip():
        raise DBOSException("a schedule needs a non-empty schedule_name")
    cron = spec.get("schedule")
    if not isinstance(cron, str) or not parse_cron(cron):
        raise DBOSException(f"Invalid cron schedule: {cron!r} (schedule {name})")
    zone(spec.get("cron_timezone"))  # raises for an unknown timezone
    workflow_name, class_name = _workflow(spec, name)
    queue = spec.get("queue_name")
    if queue is not None and check_queue and find_queue(eng, queue) is None:
        raise DBOSException(
            f"Queue '{queue}' is not declared. Please create the queue before using it in a "
            "schedule."
        )
    return ScheduleRow(
        schedule_id=str(uuid.uuid4()),
        schedule_name=name,
        workflow_name=workflow_name,
        workflow_class_name=class_name,
        schedule=cron,
        status="ACTIVE",
        context=eng.codec.encode(spec.get("context"), eng.codec.default),
        last_fired_at=None,
        automatic_backfill=bool(spec.get("automatic_backfill", False)),
        cron_timezone=spec.get("cron_timezone"),
        queue_name=queue,
        application_name=spec.get("application_name") or eng.app_name,
    )


def public(eng: Engine, row: ScheduleRow) -> WorkflowSchedule:
    try:
        context = eng.codec.decode(row.context, eng.codec.default.name()) if row.context else None
    except DBOSException:
        context = row.context
    fields = {column: getattr(row, column) for column in SCHEDULE_COLUMNS}
    fields["context"] = context
    return cast(WorkflowSchedule, fields)
