"""Operations on cron schedules stored in the database. From ``DBOS`` a schedule names a
registered function (``workflow_fn``); from a client, a workflow by name (``workflow_name``).
Either surface accepts either form."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any, Optional

from waypoint._api.ops.base import Ops, checkpoint
from waypoint.core.calls import workflow_scope
from waypoint.core.effects import Flow, Io
from waypoint.core.engine import Engine
from waypoint.core.types import WorkflowSchedule
from waypoint.error import DBOSException
from waypoint.scheduling.cron import aware, iso, next_time, slot_workflow_id, zone
from waypoint.scheduling.definitions import public, schedule_row
from waypoint.scheduling.firing import fire_flow
from waypoint.storage.protocol import ScheduleFilter, ScheduleRow, schedule_key


def _changed(eng: Engine, name: str) -> None:
    eng.wakeups.fire(schedule_key(name))  # this process's scheduler re-reads at once


@checkpoint("DBOS.createSchedule")
def create_schedule(
    ops: Ops,
    *,
    schedule_name: str,
    schedule: str,
    workflow_fn: Optional[Callable[..., Any]] = None,
    workflow_name: Optional[str] = None,
    workflow_class_name: Optional[str] = None,
    context: Any = None,
    automatic_backfill: bool = False,
    cron_timezone: Optional[str] = None,
    queue_name: Optional[str] = None,
    application_name: Optional[str] = None,
) -> Flow[None]:
    """Fire a workflow ``(scheduled_time, context)`` on a cron schedule, from every process
    of the application (each time slot once)."""
    eng = ops.engine()
    spec = {
        "schedule_name": schedule_name,
        "schedule": schedule,
        "workflow_fn": workflow_fn,
        "workflow_name": workflow_name,
        "workflow_class_name": workflow_class_name,
        "context": context,
        "automatic_backfill": automatic_backfill,
        "cron_timezone": cron_timezone,
        "queue_name": queue_name,
        "application_name": application_name,
    }
    row = schedule_row(eng, spec, check_queue=ops.strict)
    existing = yield Io(lambda: eng.store.get_schedule(row.schedule_name))
    if existing is not None:
        raise DBOSException(f"a schedule named {row.schedule_name!r} already exists")
    yield Io(lambda: eng.store.upsert_schedule(row, replace=False))
    _changed(eng, row.schedule_name)


@checkpoint("DBOS.listSchedules")
def list_schedules(
    ops: Ops,
    *,
    status: Optional[str | list[str]] = None,
    workflow_name: Optional[str | list[str]] = None,
    schedule_name_prefix: Optional[str | list[str]] = None,
    application_name: Optional[str] = None,
) -> Flow[list[WorkflowSchedule]]:
    """The stored schedules matching every filter given (a list matches any of its values,
    as in DBOS)."""
    eng = ops.engine()
    app = application_name or eng.app_name
    one = {k: v if isinstance(v, str) else None for k, v in (("s", status), ("w", workflow_name))}
    prefix = schedule_name_prefix if isinstance(schedule_name_prefix, str) else None
    flt = ScheduleFilter(app, one["s"], one["w"], prefix)
    rows = yield Io(lambda: eng.store.list_schedules(flt))

    def keep(row: ScheduleRow) -> bool:
        return (
            (not isinstance(status, list) or row.status in status)
            and (not isinstance(workflow_name, list) or row.workflow_name in workflow_name)
            and (
                not isinstance(schedule_name_prefix, list)
                or any(row.schedule_name.startswith(p) for p in schedule_name_prefix)
            )
        )

    return [public(eng, r) for r in rows if keep(r)]


@checkpoint("DBOS.getSchedule")
def get_schedule(ops: Ops, name: str) -> Flow[Optional[WorkflowSchedule]]:
    """One stored schedule (None if there is none by that name)."""
    eng = ops.engine()
    row = yield Io(lambda: eng.store.get_schedule(name))
    return public(eng, row) if row is not None else None


@checkpoint("DBOS.deleteSchedule")
def delete_schedule(ops: Ops, name: str) -> Flow[None]:
    """Delete a stored schedule; it fires no more."""
    eng = ops.engine()
    yield Io(lambda: eng.store.delete_schedule(name))
    _changed(eng, name)


def _set_status(ops: Ops, name: str, status: str) -> Flow[None]:
    eng = ops.engine()
    found = yield Io(lambda: eng.store.set_schedule_status(name, status))
    if not found:
        raise DBOSException(f"Schedule '{name}' does not exist")
    _changed(eng, name)


@checkpoint("DBOS.setScheduleStatus")
def pause_schedule(ops: Ops, name: str) -> Flow[None]:
    """Stop a schedule from firing until it is resumed."""
    return _set_status(ops, name, "PAUSED")


@checkpoint("DBOS.setScheduleStatus")
def resume_schedule(ops: Ops, name: str) -> Flow[None]:
    """Let a paused schedule fire again."""
    return _set_status(ops, name, "ACTIVE")


def apply_schedules(ops: Ops, schedules: Sequence[Mapping[str, Any]]) -> Flow[None]:
    """Create or replace several schedules at once (not from inside a workflow)."""
    if workflow_scope() is not None:
        raise DBOSException("apply_schedules cannot be called from within a workflow")
    eng = ops.engine()
    for i, entry in enumerate(schedules):
        missing = [f for f in ("schedule_name", "schedule") if not entry.get(f)]
        if entry.get("workflow_fn") is None and not entry.get("workflow_name"):
            missing.insert(1, "workflow_fn" if ops.strict else "workflow_name")
        if missing:
            raise DBOSException(f"Schedule entry {i} is missing required field '{missing[0]}'")
    rows = [schedule_row(eng, s, check_queue=ops.strict) for s in schedules]
    names = [r.schedule_name for r in rows]
    if len(names) != len(set(names)):
        raise DBOSException("apply_schedules was given the same schedule name twice")
    for row in rows:
        existing = yield Io(partial(eng.store.get_schedule, row.schedule_name))
        if existing is not None:
            row.schedule_id = existing.schedule_id
        yield Io(partial(eng.store.upsert_schedule, row, replace=True))
    for name in names:
        _changed(eng, name)


def _stored(eng: Engine, name: str) -> Flow[ScheduleRow]:
    row = yield Io(lambda: eng.store.get_schedule(name))
    if row is None:
        raise DBOSException(f"Schedule '{name}' does not exist")
    stored: ScheduleRow = row
    return stored


def backfill_schedule(
    ops: Ops, schedule_name: str, start: dt.datetime, end: dt.datetime
) -> Flow[list[str]]:
    """Fire every slot strictly between ``start`` and ``end`` (naive times are UTC; slots
    that already fired are not repeated: their workflow IDs exist); returns handles to the
    firings."""
    eng = ops.engine()
    row = yield from _stored(eng, schedule_name)
    tz = zone(row.cron_timezone)
    fired: list[str] = []
    end = aware(end)
    when = next_time(row.schedule, aware(start).astimezone(tz))
    while when < end:
        fired.append((yield from fire_flow(eng, row, when, slot_workflow_id(schedule_name, when))))
        when = next_time(row.schedule, when.astimezone(tz))
    return fired


def trigger_schedule(ops: Ops, schedule_name: str) -> Flow[str]:
    """Fire a schedule now, outside its cron times; returns a handle to the firing."""
    eng = ops.engine()
    row = yield from _stored(eng, schedule_name)
    now = dt.datetime.now(dt.timezone.utc)
    wfid: str = yield from fire_flow(eng, row, now, f"sched-{schedule_name}-trigger-{iso(now)}")
    return wfid
