"""Steps, durable sleeps and other checkpointed operations inside a workflow.

A step inside a workflow takes the next function ID; if an earlier execution recorded that
position, its result is replayed without running the body. Otherwise the body runs (with
retries) and its outcome is checkpointed in one statement that also fences on ownership and
reads the workflow's status, so a cancellation made while the step ran is seen at once.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import Callable
from typing import Any, NoReturn, Optional

from waypoint.core.context import StepState, current_step
from waypoint.core.effects import Call, Flow, Io, Sleep, io_pool
from waypoint.core.engine import Engine
from waypoint.core.lease import Lease
from waypoint.core.observe import Scope, watched_wait
from waypoint.core.run import WorkflowRun, parked
from waypoint.core.serialization import PORTABLE_NAME
from waypoint.core.signals import Signal
from waypoint.core.suspend import suspend, wait_grace
from waypoint.core.types import StepSpec
from waypoint.error import (
    DBOSMaxStepRetriesExceeded,
    DBOSStepTimeoutError,
    DBOSUnexpectedStepError,
    DBOSWorkflowCancelledError,
    DBOSWorkflowConflictIDError,
    WaypointPayloadError,
    WaypointStorageFullError,
)
from waypoint.storage.protocol import RecordOutcome, StepRecord, StepRow

logger = logging.getLogger("waypoint")

SLEEP_STEP = "DBOS.sleep"
FULL_RENEW_DELAY = 0.5  # seconds between heartbeats tried on a full disk before a step
SETTLE_POLL = 0.2  # seconds between token reads while a takeover of this executor settles


class StepCall(Call):
    """Call a step body; async bodies can be bounded by a timeout and preempted by a cancel."""

    __slots__ = ("preempt", "probe", "state", "step_name", "timeout")

    def __init__(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        state: StepState,
        timeout: Optional[float],
        preempt: Optional[Signal],
        probe: Optional[Callable[[], bool]],
        scope: Optional[Scope] = None,
    ) -> None:
        super().__init__(fn, args, kwargs, ((current_step, state),), scope)
        self.state = state
        self.step_name = state.name
        self.timeout = timeout
        self.preempt = preempt
        self.probe = probe

    @classmethod
    def of(
        cls, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Callable[..., StepCall]:
        """What calls ``fn(*args, **kwargs)`` as one attempt, given the attempt's settings."""
        return functools.partial(cls, fn, args, kwargs)

    async def run_async(self) -> Any:
        if self.timeout is None and self.preempt is None:
            return await super().run_async()
        tokens = self._enter()
        try:
            result = self.fn(*self.args, **self.kwargs)
            if not asyncio.iscoroutine(result) and not isinstance(result, asyncio.Future):
                return result
            task = asyncio.ensure_future(result)  # copies the context: the task sees the step
        finally:
            self._exit(tokens)
        loop = asyncio.get_running_loop()
        deadline = None if self.timeout is None else loop.time() + self.timeout
        cancel_wait = (
            asyncio.ensure_future(self.preempt.wait_async()) if self.preempt is not None else None
        )
        try:
            while True:
                wait_for: float | None = None if deadline is None else deadline - loop.time()
                if self.preempt is not None:
                    wait_for = 1.0 if wait_for is None else min(wait_for, 1.0)
                waiters: set[asyncio.Future[Any]] = {task}
                if cancel_wait is not None:
                    waiters.add(cancel_wait)
                done, _ = await asyncio.wait(
                    waiters, timeout=wait_for, return_when=asyncio.FIRST_COMPLETED
                )
                if task in done:
                    return task.result()
                preempted = self.preempt is not None and (
                    self.preempt.is_set()
                    or (
                        self.probe is not None and await loop.run_in_executor(io_pool(), self.probe)
                    )
                )
                if preempted or (deadline is not None and loop.time() >= deadline):
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
                    if preempted:
                        raise DBOSWorkflowCancelledError(
                            f"step {self.step_name} was preempted: its workflow was cancelled"
                        )
                    raise DBOSStepTimeoutError(self.step_name, float(self.timeout or 0))
        finally:
            if cancel_wait is not None:
                cancel_wait.cancel()


def replay(rt: Engine, run: WorkflowRun, rec: StepRow, name: str) -> Any:
    if rec.function_name != name:
        raise DBOSUnexpectedStepError(run.workflow_id, rec.function_id, name, rec.function_name)
    if rec.error is not None:
        raise rt.codec.decode_error(rec.error, rec.serialization)
    return rt.codec.decode(rec.output, rec.serialization)


NOT_RECORDED: Any = object()  # what ``next_operation`` gives for a position not yet recorded


def next_operation(run: WorkflowRun, name: str, *, check: bool = True) -> Flow[tuple[int, Any]]:
    """Take the run's next operation position. If an earlier execution recorded it, its
    recorded value (replay; a recorded error is raised); else ``NOT_RECORDED``, after checking
    for a cancellation (unless ``check`` is False)."""
    fid = run.next_function_id()
    rec = run.replay.get(fid)
    if rec is not None:
        return fid, replay(run.runtime, run, rec, name)
    if check:
        yield from check_cancelled(run.runtime, run)
    return fid, NOT_RECORDED


def check_cancelled(rt: Engine, run: WorkflowRun) -> Flow[None]:
    """Raise if the workflow was cancelled (or its deadline passed) before the next operation."""
    if run.entry.released:
        # Handed back by a draining executor: a peer runs the rest; nothing more here.
        raise DBOSWorkflowConflictIDError(run.workflow_id)
    if run.entry.cancel.is_set():
        raise DBOSWorkflowCancelledError(f"workflow {run.workflow_id} was cancelled")
    if run.deadline_ms is not None and time.time() * 1000 >= run.deadline_ms:
        yield Io(lambda: rt.cancel([run.workflow_id]))
        raise DBOSWorkflowCancelledError(f"workflow {run.workflow_id} reached its deadline")
    if time.monotonic() - run.status_checked > rt.status_freshness:
        outcome = yield Io(lambda: rt.store.get_outcome(run.workflow_id))
        run.status_checked = time.monotonic()
        if outcome is not None and outcome.status == "CANCELLED":
            run.entry.cancel.set()
            raise DBOSWorkflowCancelledError(f"workflow {run.workflow_id} was cancelled")
    # Last, right before the operation: the status read above may itself have waited out
    # an outage for longer than the lease.
    lease = rt.lease
    if lease is not None and run.owner_xid and lease.stale(run.owned_at):
        yield from confirm_owner(rt, run, lease)


def confirm_owner(rt: Engine, run: WorkflowRun, lease: Lease) -> Flow[None]:
    """The lease lapsed since the run last knew it owned its workflow (lease.py): renew it,
    then re-read the run token. A peer that took the workflow over meanwhile may already
    have run the next step: stop before its body, as a refused checkpoint stops."""
    while True:
        try:
            began = yield Io(lease.renew)  # nobody takes over for a span from here
        except WaypointStorageFullError:
            # No room for a heartbeat: wait for space as an outcome write does, rather
            # than fail the workflow for a write of the fleet's.
            if (yield Sleep(FULL_RENEW_DELAY, run.entry.cancel)):
                raise DBOSWorkflowCancelledError(
                    f"workflow {run.workflow_id} was cancelled"
                ) from None
            continue
        row = yield Io(lambda: rt.store.get_workflow(run.workflow_id))
        if row is None or row.owner_xid != run.owner_xid:
            fenced(run)
        if lease.settling():
            # Taken over: the peer has removed this executor but may not have moved this
            # workflow yet. Wait until it has (fenced above) or could not have (a span).
            if (yield Sleep(SETTLE_POLL, run.entry.cancel)):
                raise DBOSWorkflowCancelledError(
                    f"workflow {run.workflow_id} was cancelled"
                ) from None
            continue
        if not lease.stale(began):
            break  # else frozen while reading: the answer may predate a takeover
    run.owned_at = time.monotonic()


def fenced(run: WorkflowRun) -> NoReturn:
    """Another execution owns this workflow now (it was recovered or resumed elsewhere):
    stop here and let the caller wait for that execution's outcome."""
    if run.scope is not None:
        run.scope.event("fenced")
    raise DBOSWorkflowConflictIDError(run.workflow_id)


def after_record(run: WorkflowRun, outcome: RecordOutcome) -> None:
    if not outcome.accepted:
        fenced(run)
    run.status_checked = time.monotonic()
    if outcome.workflow_status == "CANCELLED":
        run.entry.cancel.set()


def step_record(
    run: WorkflowRun,
    fid: int,
    name: str,
    started_ms: int,
    *,
    output: Optional[str] = None,
    error: Optional[str] = None,
    serialization: Optional[str] = None,
    completed_ms: Optional[int] = None,
    child_workflow_id: Optional[str] = None,
) -> StepRecord:
    """The checkpoint of operation ``fid`` of ``run``, written as that run (its token).

    As DBOS writes them, a checkpoint with neither output nor error (a send, an event, a
    stream write, a patch marker) has no serialization either."""
    rt = run.runtime
    if serialization is None and (output is not None or error is not None):
        serialization = run.serializer.name()
    return StepRecord(
        workflow_id=run.workflow_id,
        function_id=fid,
        function_name=name,
        output=output,
        error=error,
        serialization=serialization,
        owner_xid=run.owner_xid,
        started_at_epoch_ms=started_ms,
        completed_at_epoch_ms=completed_ms if completed_ms is not None else rt.now_ms(),
        child_workflow_id=child_workflow_id,
        application_name=rt.app_name,
    )


def record(
    rt: Engine, run: WorkflowRun, fid: int, name: str, started_ms: int, **fields: Any
) -> Flow[None]:
    """Write ``step_record(run, fid, name, started_ms, **fields)`` and act on the answer."""
    rec = step_record(run, fid, name, started_ms, **fields)
    if rt.observers:
        outcome = yield Io(lambda: _timed_record(rt, rec))
    else:
        queued = functools.partial(rt.store.queue_write, rec)
        outcome = yield Io(lambda: rt.store.record_step(rec), queued)
    after_record(run, outcome)


def _timed_record(rt: Engine, rec: StepRecord) -> RecordOutcome:
    began = time.perf_counter()
    outcome = rt.store.record_step(rec)
    rt.observers.checkpointed(time.perf_counter() - began)
    return outcome


def step_flow(
    rt: Optional[Engine],
    run: Optional[WorkflowRun],
    spec: StepSpec,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Flow[Any]:
    """Run ``fn`` as a step: checkpointed inside a workflow; outside one, a plain call, as
    DBOS makes it (no retries, no timeout, no step status)."""
    if run is None or rt is None:
        return (yield Call(fn, args, kwargs))
    fid, recorded = yield from next_operation(run, spec.name)
    if recorded is not NOT_RECORDED:
        return recorded
    scope = rt.observers.step(run, spec.name, fid) if rt.observers else None
    try:
        value = yield from _attempts(rt, run, spec, StepCall.of(fn, args, kwargs), fid, scope)
    except BaseException as exc:
        if scope is not None:
            cancelled = isinstance(exc, DBOSWorkflowCancelledError)
            scope.end("CANCELLED" if cancelled else "ERROR", exc)
        raise
    if scope is not None:
        scope.end("SUCCESS")
    return value


def _attempts(
    rt: Optional[Engine],
    run: Optional[WorkflowRun],
    spec: StepSpec,
    call: Callable[..., StepCall],
    fid: int,
    scope: Optional[Scope],
) -> Flow[Any]:
    """The attempts of one step (with its retry policy), then its checkpoint; ``call`` makes
    the effect of one attempt."""
    started = int(time.time() * 1000)
    attempts = max(1, spec.max_attempts) if spec.retries_allowed else 1
    errors: list[Exception] = []
    preempt = run.entry.cancel if (spec.preemptible and run is not None) else None
    probe = _cancel_probe(rt, run) if preempt is not None else None
    attempt = 0
    while True:
        state = StepState(
            step_id=fid,
            name=spec.name,
            current_attempt=attempt if spec.retries_allowed else None,
            max_attempts=attempts if spec.retries_allowed else None,
        )
        try:
            value = yield call(state, spec.timeout_seconds, preempt, probe, scope)
            break
        except Exception as exc:
            errors.append(exc)
            final: Optional[Exception] = None
            if not spec.retries_allowed:
                final = exc
            else:
                # Asked on every attempt, the last included: an error it declines to retry
                # is raised as it is, as DBOS does, not as retries exhausted.
                if spec.should_retry is not None:
                    verdict = yield Call(spec.should_retry, (exc,), {})
                    if not verdict:
                        final = exc
                if final is None and attempt + 1 >= attempts:
                    final = DBOSMaxStepRetriesExceeded(spec.name, attempts, errors)
            if final is not None:
                if run is not None and rt is not None:
                    text = rt.codec.encode_error(final, run.serializer)
                    yield from record(rt, run, fid, spec.name, started, error=text)
                if final is exc:
                    raise
                raise final from exc
            delay = spec.retry_delay(attempt)
            logger.warning(
                "step %s failed (attempt %d of %d): %s; retrying in %.2fs",
                spec.name,
                attempt + 1,
                attempts,
                exc,
                delay,
            )
            if scope is not None:
                scope.event("retry", attempt=attempt + 1, error=exc, delay=delay)
            interrupted = yield Sleep(delay, run.entry.cancel if run is not None else None)
            if interrupted and run is not None:
                raise DBOSWorkflowCancelledError(
                    f"workflow {run.workflow_id} was cancelled while step {spec.name} waited to "
                    "retry"
                ) from exc
            attempt += 1
    if run is None or rt is None:
        return value
    try:
        text = rt.codec.encode(value, run.serializer, f"the result of step {spec.name!r}")
    except WaypointPayloadError as exc:
        # Not retryable: the same value would fail again. Record the failure once.
        yield from record(
            rt, run, fid, spec.name, started, error=rt.codec.encode_error(exc, run.serializer)
        )
        raise
    yield from record(rt, run, fid, spec.name, started, output=text)
    return value


def _cancel_probe(rt: Optional[Engine], run: Optional[WorkflowRun]) -> Optional[Callable[[], bool]]:
    if rt is None or run is None:
        return None

    def probe() -> bool:
        outcome = rt.store.get_outcome(run.workflow_id)
        if outcome is not None and outcome.status == "CANCELLED":
            run.entry.cancel.set()
            return True
        return False

    return probe


def durable_wake(
    rt: Engine, run: WorkflowRun, fid: int, seconds: float, *, timeout: bool = False
) -> Flow[float]:
    """The wall-clock time ``seconds`` from now, checkpointed at ``fid`` the first time, so
    a recovered run keeps the original deadline (sleeps, and the timeouts of waits).

    A sleep's checkpoint lasts until the wake-up time; a wait's ``timeout`` registration (a
    recv or get_event may end long before it) completes at once, as DBOS records it."""
    rec = run.replay.get(fid)
    if rec is not None:
        return float(replay(rt, run, rec, SLEEP_STEP))
    now = time.time()
    wake = now + max(0.0, float(seconds))
    yield from record(
        rt,
        run,
        fid,
        SLEEP_STEP,
        int(now * 1000),
        output=json.dumps(wake),
        serialization=PORTABLE_NAME,
        completed_ms=int(now * 1000) if timeout else int(wake * 1000),
    )
    return wake


def _legacy_zero_sleep(run: WorkflowRun) -> bool:
    """Whether the next recorded operation is a zero-length sleep written by an earlier
    Waypoint (which checkpointed ``DBOS.sleep(0)``; DBOS records nothing for it)."""
    rec = run.replay.get(run.peek_function_id())
    if rec is None or rec.function_name != SLEEP_STEP or rec.started_at_epoch_ms is None:
        return False
    try:
        wake_ms = float(json.loads(rec.output or "null")) * 1000
    except (TypeError, ValueError):
        return False
    return wake_ms - rec.started_at_epoch_ms < 1.0


def sleep_flow(rt: Engine, run: WorkflowRun, seconds: float) -> Flow[None]:
    """A durable sleep: the wake-up time is checkpointed, so recovery sleeps the remainder.
    A sleep of zero or less is no operation at all (DBOS takes no position for it)."""
    if seconds <= 0:
        if _legacy_zero_sleep(run):
            run.next_function_id()
        return
    fid = run.next_function_id()
    waiting = parked(run.entry, _sleep(rt, run, fid, seconds))
    yield from watched_wait(rt.observers, run, "sleep", fid, waiting, run.parked_scopes)


def _sleep(rt: Engine, run: WorkflowRun, fid: int, seconds: float) -> Flow[None]:
    if fid not in run.replay:
        yield from check_cancelled(rt, run)
    wake = yield from durable_wake(rt, run, fid, seconds)
    remaining = wake - time.time()
    if remaining > 0:
        grace = wait_grace(run)
        if grace is not None and remaining > grace:
            suspend(run, rt.wakeups, wake_at=wake)  # raises Suspended
        interrupted = yield Sleep(remaining, run.entry.cancel)
        if interrupted:
            raise DBOSWorkflowCancelledError(f"workflow {run.workflow_id} was cancelled")


def recorded_flow(
    rt: Engine,
    run: WorkflowRun,
    name: str,
    body: Flow[Any],
    child_workflow_id: Optional[str] = None,
    *,
    legacy_unrecorded: bool = False,
) -> Flow[Any]:
    """Checkpoint the result of ``body`` (a read that must replay identically) as a step;
    ``child_workflow_id`` names the workflow it waited on (a handle's ``get_result``).

    ``legacy_unrecorded``: earlier Waypoint versions did not checkpoint this operation; if
    the history holds another operation at its position, it was written so, and the body
    runs without taking a position."""
    if legacy_unrecorded:
        later = run.replay.get(run.peek_function_id())
        if later is not None and later.function_name != name:
            return (yield from body)
    fid, recorded = yield from next_operation(run, name, check=False)
    if recorded is not NOT_RECORDED:
        return recorded
    started = run.wait_started(fid)  # a handle's get_result may be a suspended wait
    child = {"child_workflow_id": child_workflow_id}
    try:
        value = yield from body
    except Exception as exc:
        text = rt.codec.encode_error(exc, run.serializer)
        yield from record(rt, run, fid, name, started, error=text, **child)
        raise
    text = rt.codec.encode(value, run.serializer)
    yield from record(rt, run, fid, name, started, output=text, **child)
    return value
