"""Firing a schedule for one time slot: enqueue its workflow under the slot's workflow ID, so
firing the same slot again (another process, a backfill) changes nothing."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any, Optional

from waypoint.core.calls import resolve_workflow
from waypoint.core.context import NextWorkflowID, StartOptions, current_run, start_options
from waypoint.core.effects import Flow, Io
from waypoint.core.engine import Engine
from waypoint.core.execution import start_flow
from waypoint.core.prepare import EnqueueSpec, prepare
from waypoint.core.registrations import REGISTRY, WorkflowInfo
from waypoint.core.types import INTERNAL_QUEUE_NAME
from waypoint.queues.enqueue import EnqueueOptions, by_name
from waypoint.scheduling.cron import iso
from waypoint.storage.protocol import ScheduleRow


def enqueue_slot(
    eng: Engine,
    info: WorkflowInfo,
    call_args: tuple[Any, ...],
    workflow_id: str,
    queue_name: str,
    schedule_name: Optional[str],
) -> Flow[str]:
    """Enqueue one firing under its slot's workflow ID (idempotent per slot). The row has no
    version: the latest version runs it, so a slot fired just before a deploy is not left to
    an old version that is gone (and firing it again would find the slot's ID taken)."""
    options = start_options.set(StartOptions(next_id=NextWorkflowID(workflow_id)))
    outer = current_run.set(None)
    try:
        spec = EnqueueSpec(queue_name=queue_name, versioned=False)
        st = prepare(eng, info, call_args, {}, spec)
    finally:
        current_run.reset(outer)
        start_options.reset(options)
    st.new.schedule_name = schedule_name
    return (yield from start_flow(eng, st))


def enqueue_decorated(
    eng: Engine, func: Callable[..., Any], workflow_id: str, args: tuple[Any, ...]
) -> Flow[str]:
    """A firing of an ``@DBOS.scheduled`` function (on the internal queue)."""
    info, call_args = resolve_workflow(func, args)
    return (yield from enqueue_slot(eng, info, call_args, workflow_id, INTERNAL_QUEUE_NAME, None))


def _target(row: ScheduleRow) -> WorkflowInfo:
    """The registration of the schedule's workflow; from a client (where it may not be
    registered) a stand-in that enqueues it by name."""
    info = REGISTRY.workflows.get(row.workflow_name)
    if info is not None and info.wrapper is not None:
        return info
    return by_name(
        EnqueueOptions(
            workflow_name=row.workflow_name,
            queue_name=row.queue_name or INTERNAL_QUEUE_NAME,
            class_name=row.workflow_class_name or "",
        )
    )


def fire_flow(eng: Engine, row: ScheduleRow, when: dt.datetime, workflow_id: str) -> Flow[str]:
    """Fire a stored schedule for one time slot (its context is stored with it)."""
    info = _target(row)
    context = eng.codec.decode(row.context, eng.codec.default.name()) if row.context else None
    call_args: tuple[Any, ...] = (when, context)
    if info.wrapper is not None:
        info, call_args = resolve_workflow(info.wrapper, call_args)
        if info.kind == "class":  # a classmethod workflow: its class is its first argument
            call_args = (REGISTRY.classes.get(info.class_name or ""), *call_args)
    wfid = yield from enqueue_slot(
        eng, info, call_args, workflow_id, row.queue_name or INTERNAL_QUEUE_NAME, row.schedule_name
    )
    yield Io(lambda: eng.store.set_last_fired(row.schedule_name, iso(when)))
    return wfid
