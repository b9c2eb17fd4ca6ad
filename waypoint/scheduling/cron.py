"""Cron expressions (5 fields, or 6 with leading seconds), time zones and slot names."""

from __future__ import annotations

import datetime as dt
from typing import Optional
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from waypoint.error import DBOSException

MAX_BACKFILL = 10_000  # slots fired at most in one catch-up


class CronError(DBOSException, ValueError):
    """A cron expression that does not parse (a ``ValueError``, as DBOS raises)."""


def parse_cron(expr: str) -> bool:
    """Whether a cron expression is valid (5 fields, or 6 with leading seconds)."""
    if not isinstance(expr, str):
        return False
    seconds = len(expr.split()) == 6
    return bool(croniter.is_valid(expr, second_at_beginning=seconds))


def next_time(expr: str, after: dt.datetime) -> dt.datetime:
    seconds = len(expr.split()) == 6
    result: dt.datetime = croniter(expr, after, second_at_beginning=seconds).get_next(dt.datetime)
    return result


def zone(name: Optional[str]) -> dt.tzinfo:
    if not name:
        return dt.timezone.utc
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise DBOSException(f"Invalid timezone: '{name}'") from exc


def iso(when: dt.datetime) -> str:
    """A slot's time as DBOS writes it: ISO 8601 in the schedule's own time zone (a naive
    time is taken as UTC), so DBOS and Waypoint processes name the same slot alike."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return when.isoformat()


def aware(when: dt.datetime) -> dt.datetime:
    """A naive datetime given by a caller is UTC (as DBOS takes it)."""
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.timezone.utc)


def slot_workflow_id(schedule_name: str, when: dt.datetime) -> str:
    """The workflow ID of one firing: every process may fire a slot, one of them counts."""
    return f"sched-{schedule_name}-{iso(when)}"
