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
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Optional

from waypoint.core.calls import checkpointed, resolve_workflow
from waypoint.core.context import current_run, start_options
from waypoint.core.effects import Flow, Io
from waypoint.core.engine import Engine
from waypoint.core.execution import start_flow
from waypoint.core.prepare import EnqueueSpec, Start, prepare
from waypoint.core.registrations import REGISTRY
from waypoint.core.types import INTERNAL_QUEUE_NAME
from waypoint.error import DBOSException, DBOSQueueDeduplicatedError
from waypoint.queues.enqueue import EnqueueOptions, by_name_start, spec_from_options
from waypoint.storage.protocol import DebounceUpdate


def _reject_conflicting_options() -> None:
    opts = start_options.get()
    if opts.enqueue_options_set and (
        opts.deduplication_id is not None
        or opts.delay_seconds is not None
        or opts.priority is not None
        or opts.queue_partition_key is not None
        or opts.duplication_policy == "return-existing"
    ):
        raise DBOSException(
            "a debounced workflow sets its own deduplication ID and delay: do not combine it "
            "with deduplication_id, delay_seconds, priority, queue_partition_key or "
            "return-existing"
        )


@dataclass(frozen=True)
class Bounce:
    """One call: its key, how long to wait for quiet, and the most the workflow may wait."""

    key: str
    period_sec: float
    timeout_sec: Optional[float] = None


def debounce_flow(eng: Engine, make_start: Callable[[], Start], bounce: Bounce) -> Flow[str]:
    key, period_sec, timeout_sec = bounce.key, bounce.period_sec, bounce.timeout_sec
    if not isinstance(key, str) or not key:
        raise DBOSException("a debounce key must be a non-empty string")
    if not isinstance(period_sec, (int, float)) or period_sec < 0:
        raise DBOSException("debounce_period_sec must be a non-negative number of seconds")
    for _ in range(10):
        st = make_start()
        wf = st.new
        dedup = f"{wf.name}-{key}"
        now = eng.now_ms()
        until = now + int(period_sec * 1000)
        queue = wf.queue_name or INTERNAL_QUEUE_NAME
        extended = yield Io(
            partial(
                eng.store.extend_debounce,
                DebounceUpdate(
                    queue, dedup, wf.name, wf.inputs, wf.serialization, until, eng.app_name, now
                ),
            )
        )
        if extended is not None:
            return str(extended)
        wf.status = "DELAYED"
        wf.delay_until_epoch_ms = until
        wf.deduplication_id = dedup
        wf.is_debounced = True
        wf.debounce_deadline_epoch_ms = (
            now + int(timeout_sec * 1000) if timeout_sec is not None else None
        )
        try:
            return (yield from start_flow(eng, st))
        except DBOSQueueDeduplicatedError:
            holder = yield Io(partial(eng.store.dedup_holder, queue, dedup))
            if holder is None:
                continue  # the holder was promoted meanwhile: start a new one
            row = yield Io(partial(eng.store.get_workflow, str(holder)))
            if row is None or row.name != wf.name or row.status != "DELAYED":
                raise
            # Lost a race with another debouncer: extend theirs on the next round.
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
    """Debounce a workflow registered in this process; a checkpointed step in a workflow."""
    _reject_conflicting_options()
    if func is None:
        registered = REGISTRY.workflows.get(workflow_name)
        if registered is None or registered.wrapper is None:
            raise DBOSException(f"no workflow named {workflow_name!r} is registered")
        func = registered.wrapper
    info, call_args = resolve_workflow(func, args)

    def make_start() -> Start:
        # Never a child of the calling workflow: the bounce itself is the checkpoint.
        token = start_options.set(dataclasses.replace(start_options.get(), next_id=None))
        run_token = current_run.set(None)
        try:
            return prepare(eng, info, call_args, kwargs, EnqueueSpec(queue_name))
        finally:
            current_run.reset(run_token)
            start_options.reset(token)

    body = debounce_flow(eng, make_start, bounce)
    result: str = yield from checkpointed(eng, "DBOS.debounce", body)
    return result


def debounce_by_name(
    eng: Engine,
    options: EnqueueOptions,
    bounce: Bounce,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Flow[str]:
    """Debounce a workflow by name (a client: the function may live elsewhere)."""
    spec_from_options(options)  # validate once, before anything is written

    def make_start() -> Start:
        return by_name_start(eng, options, args, kwargs, check_queue=False)

    return (yield from debounce_flow(eng, make_start, bounce))
