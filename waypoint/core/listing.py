"""Turning ``list_workflows`` keyword filters into a storage ``ListFilter``."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Any, Optional, Union

from waypoint.core.types import WorkflowStatusString
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
    try:
        return json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise DBOSException(f"list filter {name} must be JSON-serializable: {exc}") from exc


def _statuses(name: str, value: Any) -> Optional[list[str]]:
    statuses = _many(name, value)
    if statuses is not None:
        valid = {s.value for s in WorkflowStatusString}
        bad = [s for s in statuses if s not in valid]
        if bad:
            raise DBOSException(f"unknown workflow status {bad[0]!r}; use one of {sorted(valid)}")
    return statuses


def _as_is(name: str, value: Any) -> Any:
    return value


def _truth(name: str, value: Any) -> bool:
    return bool(value)


Convert = Callable[[str, Any], Any]

# Each filter a caller may give: the ListFilter field it sets, and how its value is checked.
FILTERS: dict[str, tuple[str, Convert]] = {
    **{
        key: (key, _many)
        for key in [
            "workflow_ids",
            "name",
            "app_version",
            "user",
            "queue_name",
            "executor_id",
            "parent_workflow_id",
            "forked_from",
            "workflow_id_prefix",
            "schedule_name",
        ]
    },
    **{
        key: (key, _time)
        for key in ["completed_after", "completed_before", "dequeued_after", "dequeued_before"]
    },
    **{key: (key, _flag) for key in ("was_forked_from", "has_parent")},
    **{key: (key, _count) for key in ("limit", "offset")},
    **{key: (key, _truth) for key in ("queues_only", "sort_desc", "load_input", "load_output")},
    "status": ("status", _statuses),
    "start_time": ("start_time_ms", _time),
    "end_time": ("end_time_ms", _time),
    "application_name": ("application_name", _as_is),
    "attributes": ("attributes", _json_object),
}


def build_filter(**filters: Any) -> ListFilter:
    """A ``ListFilter`` from ``list_workflows`` keywords (see ``FILTERS``), each checked."""
    fields: dict[str, Any] = {}
    for key, value in filters.items():
        if key not in FILTERS:
            raise DBOSException(
                f"unknown workflow list filter {key!r}; use any of {', '.join(sorted(FILTERS))}"
            )
        field, convert = FILTERS[key]
        fields[field] = convert(key, value)
    return ListFilter(**fields)
