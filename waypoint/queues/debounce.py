"""Debouncing: many calls within a quiet period become one workflow run, with the last
call's arguments.

A debounced workflow is a DELAYED row holding the dedup key ``<workflow name>-<key>`` on its
queue. A new call first tries to push that row back (one atomic UPDATE: new inputs, new
delay, never past the deadline set by ``debounce_timeout_sec``); if there is none, it enqueues
a fresh DELAYED row. When the delay expires the dispatcher promotes the row to ENQUEUED and
frees the key, so the next call starts a new workflow.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, Optional

from waypoint.core.calls import checkpointed, resolve_workflow, workflow_scope
from waypoint.core.context import NextWorkflowID, current_run, start_options, take_workflow_id
from waypoint.core.effects import Flow, Io
from waypoint.core.engine import Engine
from waypoint.core.execution import start_flow
from waypoint.core.prepare import EnqueueSpec, Start, prepare
from waypoint.core.registrations import REGISTRY
from waypoint.core.steps import next_operation
from waypoint.core.types import INTERNAL_QUEUE_NAME
from waypoint.error import DBOSException, DBOSQueueDeduplicatedError
from waypoint.queues.enqueue import EnqueueOptions, by_name_start, spec_from_options
from waypoint.storage.protocol import DebounceUpdate

_CONFLICTS = {
    "deduplication_id": "Cannot debounce a workflow with a deduplication_id set: the debounce "
    "key is used as the workflow's deduplication ID.",
    "delay_seconds": "Cannot debounce a workflow with a delay set: the debounce period "
    "controls the workflow's delay.",
    "priority": "Cannot debounce a workflow with a priority set: priority is not supported "
    "for debounced workflows.",
    "queue_partition_key": "Cannot debounce a workflow with a queue partition key set: "
    "partitioned queues do not support deduplication, which debouncing requires.",
    "duplication_policy": "Cannot debounce a workflow with duplication_policy "
    "'return-existing': a debounce owns the workflow's deduplication behavior.",
}


def reject_conflicting_options(options: Mapping[str, Any]) -> None:
    """A debounce owns the workflow's deduplication ID (the key) and delay (the period), so
    the caller may set neither, nor a duplication policy over that key; priority and
    partition keys cannot apply to a debounced enqueue. (DBOS's rules and wording.)"""
    for name, message in _CONFLICTS.items():
        value = options.get(name)
        if value is not None and (name != "duplication_policy" or value == "return-existing"):
            raise DBOSException(message)


def _reject_conflicting_options() -> None:
    opts = start_options.get()
    if opts.enqueue_options_set:
        reject_conflicting_options(
            {
                "deduplication_id": opts.deduplication_id,
                "delay_seconds": opts.delay_seconds,
                "priority": opts.priority,
                "queue_partition_key": opts.queue_partition_key,
                "duplication_policy": opts.duplication_policy,
            }
        )


@dataclass(frozen=True)
class Bounce:
    """One call: its key, how long to wait for quiet, and the most the workflow may wait."""

    key: str
    period_sec: float
    timeout_sec: Optional[float] = None


BOUNCE_STEP = "DBOS.debounce_delayed_workflow"
LEGACY_DEBOUNCE_STEP = "DBOS.debounce"  # Waypoint before 0.2: one step for the whole call


def _bounce(eng: Engine, probe: Start, key: str, period_sec: float) -> Flow[dict[str, Any]]:
    """Push back the DELAYED workflow holding this key; what DBOS records of the attempt
    (``DebounceResult``): the workflow extended, or who holds the key."""
    wf = probe.new
    dedup = f"{wf.name}-{key}"
    queue = wf.queue_name or INTERNAL_QUEUE_NAME
    now = eng.now_ms()
    update = DebounceUpdate(
        queue,
        dedup,
        wf.name,
        wf.inputs,
        wf.serialization,
        now + int(period_sec * 1000),
        eng.app_name,
        now,
        # The row runs this call's arguments now, so on this call's version (after a deploy,
        # a key held by a row of the old version does not swallow the new version's calls).
        application_version=wf.application_version,
    )
    extended = yield Io(partial(eng.store.extend_debounce, update))
    holder = (
        None if extended is not None else (yield Io(partial(eng.store.dedup_holder, queue, dedup)))
    )
    row = None if holder is None else (yield Io(partial(eng.store.get_workflow, str(holder))))
    return {
        "bounced_workflow_id": None if extended is None else str(extended),
        "holder_workflow_id": None if holder is None else str(holder),
        "holder_is_debounced": row is not None and row.status == "DELAYED",
        "holder_workflow_name": row.name if row is not None else None,
        "holder_application_name": row.application_name if row is not None else None,
    }


def _action(result: dict[str, Any], name: str, app_name: Optional[str]) -> str:
    """What a bounce attempt leaves to do, as DBOS decides it: return the extended workflow,
    enqueue a fresh one, raise (the key is held by something else), or retry (a race)."""
    if result.get("bounced_workflow_id") is not None:
        return "return"
    if result.get("holder_workflow_id") is None:
        return "enqueue"
    if not result.get("holder_is_debounced") or result.get("holder_workflow_name") != name:
        return "raise"
    holder_app = result.get("holder_application_name")
    if app_name is not None and holder_app is not None and holder_app != app_name:
        return "raise"
    return "retry"


def debounce_flow(eng: Engine, make_start: Callable[[bool], Start], bounce: Bounce) -> Flow[str]:
    """Debounce one call. From a workflow body, as DBOS records it: each bounce attempt is a
    ``DBOS.debounce_delayed_workflow`` step, and a fresh debounced workflow is enqueued as a
    child of the caller (``make_start(True)``; ``make_start(False)`` gives the row's content
    without taking a position)."""
    key, period_sec, timeout_sec = bounce.key, bounce.period_sec, bounce.timeout_sec
    if not isinstance(key, str) or not key:
        raise DBOSException("a debounce key must be a non-empty string")
    if not isinstance(period_sec, (int, float)) or period_sec < 0:
        raise DBOSException("debounce_period_sec must be a non-negative number of seconds")
    for _ in range(10):
        probe = make_start(False)
        name = probe.new.name
        result = yield from checkpointed(eng, BOUNCE_STEP, _bounce(eng, probe, key, period_sec))
        action = _action(result, name, eng.app_name)
        queue = probe.new.queue_name or INTERNAL_QUEUE_NAME
        dedup = f"{name}-{key}"
        if action == "return":
            return str(result["bounced_workflow_id"])
        if action == "raise":
            raise DBOSQueueDeduplicatedError(str(result["holder_workflow_id"]), queue, dedup)
        if action == "retry":
            continue
        st = make_start(True)
        wf = st.new
        now = eng.now_ms()
        deadline = now + int(timeout_sec * 1000) if timeout_sec is not None else None
        until = now + int(period_sec * 1000)
        wf.status = "DELAYED"
        wf.delay_until_epoch_ms = until if deadline is None else min(until, deadline)
        wf.deduplication_id = dedup
        wf.is_debounced = True
        wf.debounce_deadline_epoch_ms = deadline
        try:
            return (yield from start_flow(eng, st))
        except DBOSQueueDeduplicatedError:
            continue  # another debouncer took the key meanwhile: bounce theirs
    raise DBOSException(f"could not debounce key {key!r}: too much contention")


def debounce_registered(
    eng: Engine,
    workflow_name: str,
    func: Optional[Callable[..., Any]],
    queue_name: str,
    bounce: Bounce,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Flow[str]:
    """Debounce a workflow registered in this process (from a workflow body, checkpointed
    as DBOS checkpoints it); an ID set by ``SetWorkflowID`` names the workflow it starts."""
    _reject_conflicting_options()
    if func is None:
        registered = REGISTRY.workflows.get(workflow_name)
        if registered is None or registered.wrapper is None:
            raise DBOSException(f"no workflow named {workflow_name!r} is registered")
        func = registered.wrapper
    info, call_args = resolve_workflow(func, args)
    run = workflow_scope()
    if run is not None:
        legacy = run.replay.get(run.peek_function_id())
        if legacy is not None and legacy.function_name == LEGACY_DEBOUNCE_STEP:
            _, recorded = yield from next_operation(run, LEGACY_DEBOUNCE_STEP, check=False)
            return str(recorded)
    pinned = take_workflow_id()

    def make_start(as_child: bool) -> Start:
        # The row's content alone (no position, no ID consumed), or the workflow to start,
        # under the pinned ID if there is one.
        holder = NextWorkflowID(pinned) if as_child and pinned is not None else None
        token = start_options.set(dataclasses.replace(start_options.get(), next_id=holder))
        run_token = current_run.set(run if as_child else None)
        try:
            return prepare(eng, info, call_args, kwargs, EnqueueSpec(queue_name))
        finally:
            current_run.reset(run_token)
            start_options.reset(token)

    return (yield from debounce_flow(eng, make_start, bounce))


def debounce_by_name(
    eng: Engine,
    options: EnqueueOptions,
    bounce: Bounce,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Flow[str]:
    """Debounce a workflow by name (a client: the function may live elsewhere)."""
    reject_conflicting_options(options)
    spec_from_options(options)  # validate once, before anything is written

    def make_start(as_child: bool) -> Start:
        return by_name_start(eng, options, args, kwargs, check_queue=False)

    return (yield from debounce_flow(eng, make_start, bounce))
