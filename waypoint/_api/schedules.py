"""``DBOS`` methods for cron schedules (a mixin): the ``@DBOS.scheduled`` decorator and
schedules stored in the database."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from typing import Any, Optional, TypeVar

from waypoint._api.handles import Handle, WorkflowHandle
from waypoint.core import calls
from waypoint.core.effects import drive_sync
from waypoint.core.registry import REGISTRY, WorkflowInfo
from waypoint.core.runtime import Runtime, get_runtime
from waypoint.core.types import ScheduleInput, WorkflowSchedule
from waypoint.error import DBOSException
from waypoint.queues.scheduler import iso, next_time, parse_cron, zone
from waypoint.storage.protocol import ScheduleRow

F = TypeVar("F", bound=Callable[..., Any])


def _info(workflow_fn: Callable[..., Any]) -> WorkflowInfo:
    info = getattr(workflow_fn, "__waypoint_workflow__", None)
    if not isinstance(info, WorkflowInfo):
        raise DBOSException("a schedule needs a function decorated with @DBOS.workflow")
    if info.kind == "instance":
        raise DBOSException("instance-method workflows cannot be scheduled")
    return info


def _row(rt: Runtime, spec: ScheduleInput) -> ScheduleRow:
    name = spec.get("schedule_name")
    if not isinstance(name, str) or not name.strip():
        raise DBOSException("a schedule needs a non-empty schedule_name")
    cron = spec.get("schedule")
    if not isinstance(cron, str) or not parse_cron(cron):
        raise DBOSException(f"schedule {name}: invalid cron expression {cron!r}")
    zone(spec.get("cron_timezone"))  # raises for an unknown timezone
    info = _info(spec["workflow_fn"]) if "workflow_fn" in spec else None
    if info is None:
        raise DBOSException(f"schedule {name}: workflow_fn is required")
    queue = spec.get("queue_name")
    if queue is not None:
        from waypoint.queues.enqueue import require_queue

        require_queue(rt, queue)
    return ScheduleRow(
        schedule_id=str(uuid.uuid4()),
        schedule_name=name,
        workflow_name=info.name,
        workflow_class_name=info.class_name,
        schedule=cron,
        status="ACTIVE",
        context=rt.codec.encode(spec.get("context"), rt.codec.default),
        last_fired_at=None,
        automatic_backfill=bool(spec.get("automatic_backfill", False)),
        cron_timezone=spec.get("cron_timezone"),
        queue_name=queue,
        application_name=rt.app_name,
    )


def _public(rt: Runtime, row: ScheduleRow) -> WorkflowSchedule:
    try:
        context = rt.codec.decode(row.context, None) if row.context else None
    except DBOSException:
        context = row.context
    return WorkflowSchedule(
        schedule_id=row.schedule_id,
        schedule_name=row.schedule_name,
        workflow_name=row.workflow_name,
        workflow_class_name=row.workflow_class_name,
        schedule=row.schedule,
        status=row.status,
        context=context,
        last_fired_at=row.last_fired_at,
        automatic_backfill=row.automatic_backfill,
        cron_timezone=row.cron_timezone,
        queue_name=row.queue_name,
        application_name=row.application_name,
    )


def _changed(rt: Runtime) -> None:
    scheduler = getattr(rt, "scheduler", None)
    if scheduler is not None:
        scheduler.refresh()


class ScheduleMixin:
    @classmethod
    def scheduled(cls, cron: str) -> Callable[[F], F]:
        """Fire a workflow ``(scheduled_time, actual_time)`` on a cron schedule."""
        if not parse_cron(cron):
            raise DBOSException(f"invalid cron expression {cron!r}")

        def decorator(func: F) -> F:
            info = _info(func)
            REGISTRY.scheduled.append((info.name, cron, func))
            return func

        return decorator

    @classmethod
    def create_schedule(
        cls,
        *,
        schedule_name: str,
        workflow_fn: Callable[..., Any],
        schedule: str,
        context: Any = None,
        automatic_backfill: bool = False,
        cron_timezone: Optional[str] = None,
        queue_name: Optional[str] = None,
    ) -> None:
        spec = ScheduleInput(
            schedule_name=schedule_name,
            workflow_fn=workflow_fn,
            schedule=schedule,
            context=context,
            automatic_backfill=automatic_backfill,
            cron_timezone=cron_timezone,
            queue_name=queue_name,
        )

        def op(rt: Runtime) -> None:
            row = _row(rt, spec)
            if rt.store.get_schedule(row.schedule_name) is not None:
                raise DBOSException(f"a schedule named {row.schedule_name!r} already exists")
            rt.store.upsert_schedule(row, replace=False)
            _changed(rt)

        drive_sync(calls.managed("DBOS.createSchedule", op))

    @classmethod
    async def create_schedule_async(cls, **kwargs: Any) -> None:
        import asyncio

        await asyncio.to_thread(lambda: cls.create_schedule(**kwargs))

    @classmethod
    def list_schedules(
        cls,
        *,
        status: Optional[str] = None,
        workflow_name: Optional[str] = None,
        schedule_name_prefix: Optional[str] = None,
        application_name: Optional[str] = None,
    ) -> list[WorkflowSchedule]:
        def op(rt: Runtime) -> list[WorkflowSchedule]:
            rows = rt.store.list_schedules(
                application_name or rt.app_name, status, workflow_name, schedule_name_prefix
            )
            return [_public(rt, r) for r in rows]

        result: list[WorkflowSchedule] = drive_sync(calls.managed("DBOS.listSchedules", op))
        return result

    @classmethod
    async def list_schedules_async(cls, **kwargs: Any) -> list[WorkflowSchedule]:
        import asyncio

        return await asyncio.to_thread(lambda: cls.list_schedules(**kwargs))

    @classmethod
    def get_schedule(cls, name: str) -> Optional[WorkflowSchedule]:
        def op(rt: Runtime) -> Optional[WorkflowSchedule]:
            row = rt.store.get_schedule(name)
            return _public(rt, row) if row is not None else None

        result: Optional[WorkflowSchedule] = drive_sync(calls.managed("DBOS.getSchedule", op))
        return result

    @classmethod
    async def get_schedule_async(cls, name: str) -> Optional[WorkflowSchedule]:
        import asyncio

        return await asyncio.to_thread(cls.get_schedule, name)

    @classmethod
    def delete_schedule(cls, name: str) -> None:
        def op(rt: Runtime) -> None:
            rt.store.delete_schedule(name)
            _changed(rt)

        drive_sync(calls.managed("DBOS.deleteSchedule", op))

    @classmethod
    async def delete_schedule_async(cls, name: str) -> None:
        import asyncio

        await asyncio.to_thread(cls.delete_schedule, name)

    @classmethod
    def pause_schedule(cls, name: str) -> None:
        cls._set_status(name, "PAUSED")

    @classmethod
    def resume_schedule(cls, name: str) -> None:
        cls._set_status(name, "ACTIVE")

    @classmethod
    def _set_status(cls, name: str, status: str) -> None:
        def op(rt: Runtime) -> None:
            if not rt.store.set_schedule_status(name, status):
                raise DBOSException(f"no schedule named {name!r}")
            _changed(rt)

        drive_sync(calls.managed("DBOS.setScheduleStatus", op))

    @classmethod
    def apply_schedules(cls, schedules: list[ScheduleInput]) -> None:
        """Create or replace several schedules at once (not from inside a workflow)."""
        from waypoint.core.calls import workflow_scope

        if workflow_scope() is not None:
            raise DBOSException("apply_schedules cannot be called from inside a workflow")
        rt = get_runtime()
        rows = [_row(rt, s) for s in schedules]
        names = [r.schedule_name for r in rows]
        if len(names) != len(set(names)):
            raise DBOSException("apply_schedules was given the same schedule name twice")
        for row in rows:
            existing = rt.store.get_schedule(row.schedule_name)
            if existing is not None:
                row.schedule_id = existing.schedule_id
            rt.store.upsert_schedule(row, replace=True)
        _changed(rt)

    @classmethod
    async def apply_schedules_async(cls, schedules: list[ScheduleInput]) -> None:
        import asyncio

        await asyncio.to_thread(cls.apply_schedules, schedules)

    @classmethod
    def backfill_schedule(
        cls, schedule_name: str, start: dt.datetime, end: dt.datetime
    ) -> list[WorkflowHandle[Any]]:
        """Fire every slot strictly between ``start`` and ``end`` (slots that already fired
        are not repeated: their workflow IDs exist)."""
        rt = get_runtime()
        row = rt.store.get_schedule(schedule_name)
        if row is None:
            raise DBOSException(f"no schedule named {schedule_name!r}")
        tz = zone(row.cron_timezone)
        handles: list[WorkflowHandle[Any]] = []
        when = next_time(row.schedule, start.astimezone(tz))
        while when < end:
            wfid = calls.fire_schedule(
                rt, schedule_name, when, f"sched-{schedule_name}-{iso(when)}"
            )
            if wfid is not None:
                handles.append(Handle(wfid))
            when = next_time(row.schedule, when.astimezone(tz))
        return handles

    @classmethod
    def trigger_schedule(cls, schedule_name: str) -> WorkflowHandle[Any]:
        """Fire a schedule now, outside its cron times."""
        rt = get_runtime()
        now = dt.datetime.now(dt.timezone.utc)
        wfid = calls.fire_schedule(
            rt, schedule_name, now, f"sched-{schedule_name}-trigger-{iso(now)}"
        )
        if wfid is None:
            raise DBOSException(f"no schedule named {schedule_name!r}")
        return Handle(wfid)
