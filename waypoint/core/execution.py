"""Running workflows: the body under a ``WorkflowRun``, its outcome recorded with an update
fenced on the run's token.

Three ways in, one way through:

* a direct call runs the body inline on the caller's thread (or task);
* ``start_workflow`` writes the row, then runs the body on the worker pool (sync) or as a task
  (async) and returns at once;
* the dispatcher (and recovery) hand over rows they claimed (``dispatch_claimed``); the atomic
  ENQUEUED→PENDING claim is the single admission point.
"""

from __future__ import annotations

import asyncio
import logging
from functools import partial
from typing import Any, Optional

from waypoint.core.context import (
    StartOptions,
    current_auth,
    current_request,
    current_run,
    current_step,
    handler_auth,
    start_options,
)
from waypoint.core.effects import Call, Flow, Io, Sleep, drive_async, drive_sync
from waypoint.core.engine import Engine
from waypoint.core.outcomes import await_outcome
from waypoint.core.parking import Record, StoredCall, record_of, stored_call
from waypoint.core.prepare import Start, check_init
from waypoint.core.registrations import WorkflowInfo
from waypoint.core.roles import check_roles, with_role
from waypoint.core.run import RunEntry, WorkflowRun, park_suspended, unpark_suspended
from waypoint.core.runtime import Runtime
from waypoint.core.steps import record, replay
from waypoint.core.suspend import Suspender, abort_parked
from waypoint.core.types import Auth
from waypoint.error import (
    DBOSAwaitedWorkflowCancelledError,
    DBOSQueueDeduplicatedError,
    DBOSWorkflowCancelledError,
    DBOSWorkflowConflictIDError,
    WaypointPayloadError,
    WaypointStorageFullError,
)
from waypoint.storage.protocol import (
    Completion,
    StepRow,
    done_key,
    queue_key,
    timer_key,
)

logger = logging.getLogger("waypoint")
Histories = dict[str, dict[int, StepRow]]  # checkpoints by workflow ID
FULL_RETRY_MAX_DELAY = 5.0  # seconds between attempts to record an outcome on a full disk


def new_run(rt: Runtime, st: Start, entry: RunEntry) -> WorkflowRun:
    run = WorkflowRun(
        rt,
        st.workflow_id,
        st.info.name,
        st.new.owner_xid,
        st.serializer,
        entry,
        is_async=st.info.is_async,
        deadline_ms=st.new.workflow_deadline_epoch_ms,
        auth=st.auth,
        class_name=st.new.class_name,
        config_name=st.new.config_name,
        request=st.request,
        attributes=st.new.attributes,
        origins=rt.observers.origins() if rt.observers else None,
    )
    entry.run = run
    return run


# -- running a body ---------------------------------------------------------------------------


SUSPENDED: Any = object()  # what ``run_body`` returns when the body's wait was suspended


def run_body(
    rt: Runtime, run: WorkflowRun, info: WorkflowInfo, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Flow[Any]:
    """Run the body and record its outcome; ``SUSPENDED`` if it suspended in a wait (the run
    stays registered and PENDING: it resumes when its ``run.parked`` wait fires)."""
    entry = run.entry
    if run.scope is None:  # a resumed run keeps the watches of its first start
        run.scope = rt.observers.workflow(run) if rt.observers else None
    suspended = False
    try:
        try:
            auth = with_role(run.auth, check_roles(info.roles, run.auth, info.name))
            output = yield Call(info.func, args, kwargs, _body_bindings(run, auth), run.scope)
        except BaseException as exc:
            if run.parked is not None:  # suspended (even if the body caught it and went on)
                suspended = True
                return SUSPENDED
            return (yield from _body_failed(rt, run, exc))
        if run.parked is not None:
            suspended = True
            return SUSPENDED
        try:
            text = rt.codec.encode(output, run.serializer, f"the result of workflow {run.name!r}")
        except WaypointPayloadError as exc:
            return (yield from _fail(rt, run, exc))
        yield from finish(rt, run, "SUCCESS", output=text)
        if entry.lost:
            return (yield from await_outcome(rt, run.workflow_id))
        entry.finish(output=output)
        return output
    finally:
        if not suspended:
            abort_parked(run)
            rt.unregister(entry)
            _end_scopes(run)


def _body_failed(rt: Runtime, run: WorkflowRun, exc: BaseException) -> Flow[Any]:
    """The body raised ``exc``: record the failure, or wait for the execution that owns the
    workflow now, or leave it PENDING (cancelled here, or the interpreter is stopping)."""
    entry = run.entry
    if isinstance(exc, DBOSWorkflowConflictIDError):
        if exc.workflow_id != run.workflow_id:
            return (yield from _fail(rt, run, exc))
        logger.info(
            "workflow %s is now owned by another execution; waiting for its outcome",
            run.workflow_id,
        )
        entry.abandon()
        return (yield from await_outcome(rt, run.workflow_id))
    if isinstance(exc, DBOSWorkflowCancelledError):
        if entry.released:  # a wait interrupted by the hand-back, not a cancellation
            logger.info("workflow %s was handed back to its queue", run.workflow_id)
            entry.abandon()
            return (yield from await_outcome(rt, run.workflow_id))
        if not entry.cancel.is_set():
            # Raised by user code although nobody cancelled this workflow: a failure.
            return (yield from _fail(rt, run, exc))
        entry.abandon()
        raise exc
    if isinstance(exc, Exception):
        return (yield from _fail(rt, run, exc))
    entry.abandon()  # interpreter shutdown and the like: stay PENDING, recover later
    raise exc


def _how_it_ended(entry: RunEntry) -> tuple[str, Optional[BaseException]]:
    if entry.lost:
        cancelled = entry.cancel.is_set() and not entry.released
        return ("CANCELLED" if cancelled else "ABANDONED"), None
    if not entry.done.is_set():
        return "ABANDONED", None
    return ("ERROR", entry.error) if entry.error is not None else ("SUCCESS", None)


def _body_bindings(run: WorkflowRun, auth: Optional[Auth]) -> tuple[Any, ...]:
    # The body starts with a clean slate: options set around the call (an ID, a timeout)
    # applied to this workflow and must not leak into the children it starts. Its
    # authentication is the one recorded with it, with the role its own check assumed.
    return (
        (current_run, run),
        (current_step, None),
        (start_options, StartOptions()),
        (current_auth, auth),
        (handler_auth, None),
        (current_request, run.request),
    )


def _fail(rt: Runtime, run: WorkflowRun, exc: BaseException) -> Flow[Any]:
    """Record the workflow's failure and re-raise it (or adopt the outcome another run wrote)."""
    yield from finish(rt, run, "ERROR", error=rt.codec.encode_error(exc, run.serializer))
    if run.entry.lost:
        return (yield from await_outcome(rt, run.workflow_id))
    run.entry.finish(error=exc)
    raise exc


def finish(
    rt: Runtime,
    run: WorkflowRun,
    status: str,
    *,
    output: Optional[str] = None,
    error: Optional[str] = None,
) -> Flow[None]:
    done = Completion(run.workflow_id, run.owner_xid, status, output, error, rt.now_ms())
    try:
        ok = yield from _record_outcome(rt, run, done)
    except BaseException:
        # Not recorded (the store closed under us, ...): the row stays PENDING for recovery,
        # and local waiters must not wait on this run for an outcome it will never deliver.
        run.entry.abandon()
        raise
    if ok:
        rt.completed(done)
    if not ok:
        # Another execution owns the workflow now: local waiters must read its outcome.
        if run.scope is not None:
            run.scope.event("fenced")
        run.entry.abandon()
    else:
        rt.wakeups.fire(done_key(run.workflow_id))


def _record_outcome(rt: Runtime, run: WorkflowRun, done: Completion) -> Flow[bool]:
    """Write the outcome, waiting through a full disk: the storage layer retries outages
    itself but raises at once when the database is full (a caller enqueueing wants to know);
    a finished run has nobody to tell, and giving up would leave the row PENDING in a live
    process, which only a restart recovers."""
    delay = 0.1
    while True:
        try:
            ok: bool = yield Io(
                lambda: rt.store.complete_workflow(done), partial(rt.store.queue_write, done)
            )
            return ok
        except WaypointStorageFullError as exc:
            logger.warning(
                "workflow %s: its outcome (%s) was not recorded, the system database is full; "
                "retrying in %.1fs (%s)",
                run.workflow_id,
                done.status,
                delay,
                exc,
            )
        yield Sleep(delay)
        delay = min(delay * 2, FULL_RETRY_MAX_DELAY)


# -- direct calls -----------------------------------------------------------------------------


def _init(rt: Engine, st: Start) -> Io:
    """Write the row; a top-level start may join a group commit in flight (async callers)."""
    queued = None if st.link is not None else partial(rt.store.queue_write, st.new)
    return Io(lambda: rt.store.init_workflow(st.new, st.link), queued)


def direct_flow(rt: Runtime, st: Start) -> Flow[Any]:
    init = yield _init(rt, st)
    check_init(st, init)
    if not init.created:
        return (yield from _await_existing(rt, st))
    entry, fresh = rt.register(st.workflow_id)
    if not fresh:
        return (yield from _await_existing(rt, st))
    run = new_run(rt, st, entry)
    rt.arm_deadline(st.workflow_id, run.deadline_ms)
    try:
        return (yield from run_body(rt, run, st.info, st.call_args, st.kwargs))
    except DBOSWorkflowCancelledError:
        if st.parent is not None and not st.parent.entry.cancel.is_set():
            # The child was cancelled, not the parent: to the parent this is a failed call.
            raise DBOSAwaitedWorkflowCancelledError(st.workflow_id) from None
        raise


RESULT_STEP = "DBOS.getResult"


def child_call_flow(rt: Runtime, st: Start) -> Flow[Any]:
    """A workflow called directly from a workflow body: as DBOS records it, the child's link
    takes one position of the parent and the parent's wait for its result the next (a
    ``DBOS.getResult`` step naming the child), so replay skips a finished child at once."""
    parent = st.parent
    if parent is None:
        return (yield from direct_flow(rt, st))
    if st.replayed_child and st.parent_fid is not None:
        later = parent.replay.get(st.parent_fid + 1)
        if later is not None and later.function_name != RESULT_STEP:
            # Written by an earlier Waypoint, which recorded no result step here.
            return (yield from direct_flow(rt, st))
    fid = parent.next_function_id()
    rec = parent.replay.get(fid)
    if rec is not None:
        return replay(rt, parent, rec, RESULT_STEP)
    started = rt.now_ms()
    try:
        value = yield from direct_flow(rt, st)
    except Exception as exc:
        text = rt.codec.encode_error(exc, parent.serializer)
        yield from record(
            rt, parent, fid, RESULT_STEP, started, error=text, child_workflow_id=st.workflow_id
        )
        raise
    text = rt.codec.encode(value, parent.serializer)
    yield from record(
        rt, parent, fid, RESULT_STEP, started, output=text, child_workflow_id=st.workflow_id
    )
    return value


def _await_existing(rt: Runtime, st: Start) -> Flow[Any]:
    return (yield from await_outcome(rt, st.workflow_id))


# -- background starts ------------------------------------------------------------------------


def start_flow(rt: Engine, st: Start) -> Flow[str]:
    """Write the row, then launch the body in the background (or leave it to a dispatcher,
    when enqueued); returns the workflow ID (with ``return-existing``, the holder's)."""
    if st.replayed_child:
        # The parent already recorded this child: never create or launch it again.
        return st.workflow_id
    queue, dedup = st.new.queue_name or "", st.new.deduplication_id or ""
    for _ in range(5):
        try:
            init = yield _init(rt, st)
            break
        except DBOSQueueDeduplicatedError:
            if st.duplication_policy != "return-existing":
                raise
            holder = yield Io(lambda: rt.store.dedup_holder(queue, dedup))
            if holder is not None:
                return str(holder)
            # The holder finished between our insert and our read: try again.
    else:
        raise DBOSQueueDeduplicatedError(st.workflow_id, queue, dedup)
    check_init(st, init)
    if init.created:
        if st.new.status == "PENDING":
            assert isinstance(rt, Runtime), "only a launched runtime starts workflows itself"
            launch(rt, st)
        else:
            kind = queue_key if st.new.status == "ENQUEUED" else timer_key
            rt.wakeups.fire(kind(st.new.queue_name or ""))
    return st.workflow_id


def launch(rt: Runtime, st: Start) -> None:
    entry, fresh = rt.register(st.workflow_id)
    if not fresh:
        return
    run = new_run(rt, st, entry)
    rt.arm_deadline(st.workflow_id, run.deadline_ms)
    bound = st.call_args[0] if st.info.kind in ("instance", "class") else None
    stored = StoredCall(st.info, st.new.inputs, st.new.serialization, bound)
    run_in_background(rt, run, stored, st.call_args, st.kwargs, load_replay=False)


def run_in_background(
    rt: Runtime,
    run: WorkflowRun,
    stored: StoredCall,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    load_replay: bool,
    verify: bool = False,
    resumed: bool = False,
    loop: Optional[asyncio.AbstractEventLoop] = None,
) -> None:
    """Run the body on the worker pool (sync) or as a task (async; on ``loop`` while it
    runs: a resumed run goes back to the loop it ran on). Either can suspend its long waits
    (core/suspend.py) and is then parked (``_park``) until what it waits for comes."""
    info = stored.info

    def flow() -> Flow[Any]:
        call_args, call_kwargs = args, kwargs
        if resumed:
            try:
                # Its checkpoints and its status in one read: the status is what the first new
                # operation would otherwise read on its own (a cancellation made meanwhile).
                status, steps = yield Io(lambda: rt.store.resume_state(run.workflow_id))
                run.rewind(steps, status)
                call_args, call_kwargs = stored.decode(rt)
            except BaseException:
                # Not resumable now (the database is gone, say): it stays PENDING, for the
                # next launch to recover; local waiters read its outcome from the database.
                _end_parked(rt, run)
                raise
        elif load_replay:
            ready = yield Io(lambda: _prepare_replay(rt, run, verify))
            if not ready:
                rt.unregister(run.entry)
                run.entry.abandon()
                return None
        return (yield from run_body(rt, run, info, call_args, call_kwargs))

    if info.is_async:

        async def task() -> None:
            # The body runs as this task of its own: its long waits may end it, and a new
            # task re-runs it when they are over.
            run.suspender = Suspender(rt.config.wait_suspend_after_sec)
            try:
                outcome = await drive_async(flow())
            except BaseException as exc:
                _log_background_end(run.workflow_id, exc)
                return
            finally:
                run.suspender = None
            if outcome is SUSPENDED:
                _park(rt, run, stored, asyncio.get_running_loop())

        rt.spawn(task(), loop)
    else:

        def work() -> None:
            # The body runs on this thread of its own: its long waits may give it back.
            run.suspender = Suspender(rt.config.wait_suspend_after_sec, rt.pool.is_busy)
            try:
                outcome = drive_sync(flow())
            except BaseException as exc:
                _log_background_end(run.workflow_id, exc)
                if not isinstance(exc, (Exception, DBOSWorkflowCancelledError)):
                    raise  # Ctrl-C or exit: the pool hands it to a caller running this inline
                return
            finally:
                run.suspender = None
            if outcome is SUSPENDED:
                _park(rt, run, stored)

        run.entry.task = rt.pool.submit(work, name=run.workflow_id)


def _park(
    rt: Runtime,
    run: WorkflowRun,
    stored: StoredCall,
    loop: Optional[asyncio.AbstractEventLoop] = None,
) -> None:
    """The body unwound out of a suspended wait and its thread (or task) is free: the run
    waits as plain data in the runtime's parking lot (core/parking.py) and is rebuilt, then
    resumed from its checkpoints, on the pool (or as a task on ``loop``), when the wait's
    wake-up comes."""
    parked = run.parked
    assert parked is not None
    entry = run.entry
    run.replay = {}  # reloaded when it resumes
    park_suspended(entry)
    lot = rt.lot
    if lot.on_wake is None:
        lot.on_wake = partial(_wake, rt)
    rec = record_of(rt, run, stored, parked.keys, lot.loop_slot(loop))
    # A callback waits for this entry's end (a re-claim handed over to it): it stays
    # registered, and the run is resumed with it. Otherwise it goes, and threads or tasks
    # waiting on it are told to read the outcome from the database (ParkingLot.park).
    watched = entry.done.has_callbacks() or entry.cancel.has_callbacks()

    def to_lot() -> None:
        lot.park(entry, rec, parked.wake_at, parked.hooked, keep_entry=watched)

    if parked.hand_over(to_lot):
        lot.wake(run.workflow_id)  # what it waits for came while it unwound


def _wake(rt: Runtime, entry: RunEntry, rec: Record) -> None:
    """A parked run's wake-up: resume it (it left the lot, into the registry, just now)."""
    run = entry.run
    assert run is not None
    if unpark_suspended(entry) or rt.stopping.is_set():
        # Handed back by a draining executor, or the runtime stops: a peer, or the next
        # launch, runs the rest. Nothing to re-run here.
        _end_parked(rt, run)
        return
    try:
        loop = rt.lot.loop_of(rec)
        run_in_background(
            rt, run, stored_call(rec), (), {}, load_replay=False, resumed=True, loop=loop
        )
    except RuntimeError:
        # The pool is shut down: this process stops, and the workflow stays PENDING for
        # the next launch to recover.
        logger.debug("workflow %s was not resumed: the runtime stopped", run.workflow_id)


def _end_parked(rt: Runtime, run: WorkflowRun) -> None:
    """A suspended run that will not resume here ends as abandoned."""
    run.parked = None
    rt.unregister(run.entry)
    run.entry.abandon()
    _end_scopes(run)


def _end_scopes(run: WorkflowRun) -> None:
    """End the observers' watches of a run that is over (and of a wait it never finished)."""
    for scope in run.parked_scopes.values():
        scope.end("ABANDONED")
    run.parked_scopes.clear()
    if run.scope is not None:
        run.scope.end(*_how_it_ended(run.entry))


def _log_background_end(workflow_id: str, exc: BaseException) -> None:
    if isinstance(exc, (Exception, DBOSWorkflowCancelledError)):
        logger.debug("workflow %s ended with %s: %s", workflow_id, type(exc).__name__, exc)
    else:
        logger.warning("workflow %s was interrupted: %r", workflow_id, exc)


def _prepare_replay(rt: Runtime, run: WorkflowRun, verify: bool) -> bool:
    """Load earlier checkpoints. A claim just made is ours; a claim handed over from a run
    that was still going is first checked (False: it finished or was re-claimed since)."""
    if verify:
        row = rt.store.get_workflow(run.workflow_id)
        if row is None or row.status != "PENDING" or row.owner_xid != run.owner_xid:
            return False
    run.replay = rt.store.load_steps(run.workflow_id)
    return True
