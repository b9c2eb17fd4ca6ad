"""Turning ``list_workflows`` keyword filters into a storage ``ListFilter``."""

from __future__ import annotations

import datetime as dt
from typing import Any, Optional, Union

from waypoint.error import DBOSException
from waypoint.storage.protocol import ListFilter

Many = Optional[Union[str, list[str]]]


def _many(name: str, value: Any) -> Optional[list[str]]:
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return list(value)
    raise DBOSException(f"list filter {name} must be a string or a list of strings")


def _time(name: str, value: Any) -> Optional[int]:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value  # epoch milliseconds
    if isinstance(value, dt.datetime):
        when = value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
        return int(when.timestamp() * 1000)
    if isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as exc:
            raise DBOSException(f"list filter {name} must be an ISO-8601 time: {value!r}") from exc
        return _time(name, parsed)
    raise DBOSException(f"list filter {name} must be an ISO-8601 string or a datetime")


def _count(name: str, value: Any) -> Optional[int]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise DBOSException(f"list filter {name} must be a non-negative integer, got {value!r}")
    return value


def _flag(name: str, value: Any) -> Optional[bool]:
    if value is None or isinstance(value, bool):
        return value
    raise DBOSException(f"list filter {name} must be true or false")


def _json_object(name: str, value: Any) -> Optional[str]:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise DBOSException(f"list filter {name} must be a dict")
    import json

    try:
        return json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise DBOSException(f"list filter {name} must be JSON-serializable: {exc}") from exc


def build_filter(
    *,
    workflow_ids: Many = None,
    status: Many = None,
    start_time: Any = None,
    end_time: Any = None,
    name: Many = None,
    app_version: Many = None,
    user: Many = None,
    queue_name: Many = None,
    executor_id: Many = None,
    parent_workflow_id: Many = None,
    forked_from: Many = None,
    workflow_id_prefix: Many = None,
    application_name: Optional[str] = None,
    queues_only: bool = False,
    schedule_name: Many = None,
    completed_after: Any = None,
    completed_before: Any = None,
    dequeued_after: Any = None,
    dequeued_before: Any = None,
    was_forked_from: Optional[bool] = None,
    has_parent: Optional[bool] = None,
    attributes: Optional[dict[str, Any]] = None,
    limit: Optional[int] = None,
    offset: Optional[int] = None,
    sort_desc: bool = False,
    load_input: bool = True,
    load_output: bool = True,
) -> ListFilter:
    from waypoint.core.types import WorkflowStatusString

    statuses = _many("status", status)
    if statuses is not None:
        valid = {s.value for s in WorkflowStatusString}
        bad = [s for s in statuses if s not in valid]
        if bad:
            raise DBOSException(f"unknown workflow status {bad[0]!r}; use one of {sorted(valid)}")
    return ListFilter(
        workflow_ids=_many("workflow_ids", workflow_ids),
        status=statuses,
        start_time_ms=_time("start_time", start_time),
        end_time_ms=_time("end_time", end_time),
        name=_many("name", name),
        app_version=_many("app_version", app_version),
        user=_many("user", user),
        queue_name=_many("queue_name", queue_name),
        executor_id=_many("executor_id", executor_id),
        parent_workflow_id=_many("parent_workflow_id", parent_workflow_id),
        forked_from=_many("forked_from", forked_from),
        workflow_id_prefix=_many("workflow_id_prefix", workflow_id_prefix),
        application_name=application_name,
        queues_only=queues_only,
        schedule_name=_many("schedule_name", schedule_name),
        completed_after=_time("completed_after", completed_after),
        completed_before=_time("completed_before", completed_before),
        dequeued_after=_time("dequeued_after", dequeued_after),
        dequeued_before=_time("dequeued_before", dequeued_before),
        was_forked_from=_flag("was_forked_from", was_forked_from),
        has_parent=_flag("has_parent", has_parent),
        attributes=_json_object("attributes", attributes),
        limit=_count("limit", limit),
        offset=_count("offset", offset),
        sort_desc=bool(sort_desc),
        load_input=bool(load_input),
        load_output=bool(load_output),
    )
