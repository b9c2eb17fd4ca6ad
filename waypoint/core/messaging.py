"""Messages, events and waiting on several workflows (streams: ``core.streams``).

Every wait follows one pattern: subscribe to the wake-up key, read the database, and only
then sleep on the signal (for at most one wait interval) before reading again. Called from a
workflow body, each operation is a checkpointed step so replay sees what the first execution
saw; timeouts are durable (their deadline is checkpointed as a ``DBOS.sleep`` step).

Writes made from inside a *step* are keyed by their position in that step (workflow, step
ID, n-th write), so a retried step, or a step re-run after a crash, delivers each message or
stream value once.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Optional

from waypoint.core.context import current_run, current_step
from waypoint.core.effects import Flow, Io, Wait
from waypoint.core.engine import Engine
from waypoint.core.ids import new_uuid
from waypoint.core.observe import watched_wait
from waypoint.core.run import WorkflowRun, parked
from waypoint.core.serialization import Serializer
from waypoint.core.steps import (
    NOT_RECORDED,
    after_record,
    check_cancelled,
    durable_wake,
    next_operation,
    record,
    replay,
    step_record,
)
from waypoint.core.suspend import hold_until
from waypoint.core.types import ACTIVE_STATUSES, NULL_TOPIC, WorkflowSerializationFormat
from waypoint.core.waiting import wait_or_suspend
from waypoint.core.wakeups import WaitingReceive
from waypoint.error import (
    DBOSException,
    DBOSNonExistentWorkflowError,
    DBOSWorkflowCancelledError,
    DBOSWorkflowConflictIDError,
    WaypointPayloadError,
)
from waypoint.storage.protocol import (
    EventWrite,
    NewMessage,
    RecordOutcome,
    StepRecord,
    cancel_key,
    done_key,
    event_key,
    message_key,
)

MAX_PAYLOAD_BYTES = 64 * 1024 * 1024


@dataclass
class SendMessage:
    """One message of ``send_bulk``."""

    destination_id: str
    message: Any
    topic: Optional[str] = None
    idempotency_key: Optional[str] = None


def in_body() -> Optional[WorkflowRun]:
    return current_run.get() if current_step.get() is None else None


def _encode(eng: Engine, value: Any, ser: Serializer, what: str) -> str:
    text = eng.codec.encode(value, ser, what)
    if len(text) > MAX_PAYLOAD_BYTES:
        raise WaypointPayloadError(
            f"{what} is {len(text)} bytes once serialized; the limit is {MAX_PAYLOAD_BYTES}"
        )
    return text


def _serializer(
    eng: Engine, fmt: Optional[WorkflowSerializationFormat], run: Optional[WorkflowRun]
) -> Serializer:
    if fmt is None or fmt == WorkflowSerializationFormat.DEFAULT:
        return run.serializer if run is not None else eng.codec.default
    return eng.codec.for_format(fmt)


def _step_write_id(kind: str) -> Optional[tuple[str, int, int]]:
    """(workflow, step ID, n) for the n-th write of ``kind`` in the running step, if any."""
    run, step = current_run.get(), current_step.get()
    if run is None or step is None:
        return None
    n = int(step.extra.get(kind, 0))
    step.extra[kind] = n + 1
    return run.workflow_id, step.step_id, n


# -- messages ---------------------------------------------------------------------------------


def send_flow(
    eng: Engine,
    messages: Sequence[SendMessage],
    fmt: Optional[WorkflowSerializationFormat],
    send_to_forks: bool,
    step_name: str,
    conn: Any = None,
) -> Flow[None]:
    """Send ``messages``: checkpointed as ``step_name`` from a workflow body; with ``conn``
    (a caller's connection to the system database), inside the caller's transaction and
    never checkpointed."""
    run = in_body() if conn is None else None
    ser = _serializer(eng, fmt, run)
    keys = [m.idempotency_key for m in messages if m.idempotency_key is not None]
    if len(keys) != len(set(keys)):
        twice = sorted({k for k in keys if keys.count(k) > 1})
        raise DBOSException(f"send_bulk received duplicate idempotency keys: {', '.join(twice)}")
    encoded: list[tuple[SendMessage, str, str]] = []
    for m in messages:
        if not isinstance(m.destination_id, str) or not m.destination_id:
            raise DBOSException("a message needs a destination workflow ID")
        topic = m.topic if m.topic is not None else NULL_TOPIC
        encoded.append((m, topic, _encode(eng, m.message, ser, "a message")))
    fid = -1
    started = eng.now_ms()
    if run is not None:
        fid, recorded = yield from next_operation(run, step_name)
        if recorded is not NOT_RECORDED:
            return None
    step_id = _step_write_id("send")
    rows: list[NewMessage] = []
    for i, (m, topic, text) in enumerate(encoded):
        if m.idempotency_key is not None:
            msg_id = f"{m.idempotency_key}::{m.destination_id}"
        elif run is not None:
            msg_id = f"{run.workflow_id}::{fid}::{i}"
        elif step_id is not None:
            msg_id = f"{step_id[0]}::step{step_id[1]}::{step_id[2]}::{i}"
        else:
            msg_id = new_uuid()  # no system call (core/ids.py)
        rows.append(NewMessage(msg_id, m.destination_id, topic, text, ser.name()))
    if send_to_forks:
        extra: list[NewMessage] = []
        for dest in sorted({r.destination_id for r in rows}):
            forks = yield Io(partial(eng.store.forks_of, [dest]))
            extra.extend(
                NewMessage(f"{r.message_uuid}::{fork}", fork, r.topic, r.message, r.serialization)
                for r in rows
                if r.destination_id == dest
                for fork in forks
            )
        rows.extend(extra)
    if conn is not None:
        eng.store.send_on_connection(conn, rows)  # the caller's thread and transaction
        return None
    checkpoint = step_record(run, fid, step_name, started) if run is not None else None
    # One message to a receive waiting in this process is delivered to it by the send itself.
    waiting = None
    if len(rows) == 1:
        waiting = eng.wakeups.take_receive(message_key(rows[0].destination_id, rows[0].topic))
    try:
        if waiting is not None:
            outcome = yield from _deliver(eng, rows[0], waiting, checkpoint)
        else:
            outcome = yield Io(lambda: eng.store.send_messages(rows, checkpoint))
    except DBOSNonExistentWorkflowError as exc:
        raise DBOSNonExistentWorkflowError("`send` destination", exc.workflow_id) from None
    if run is not None and outcome is not None:
        after_record(run, outcome)
    if waiting is None:
        for r in rows:
            eng.wakeups.fire(message_key(r.destination_id, r.topic))


def _deliver(
    eng: Engine, msg: NewMessage, waiting: WaitingReceive, checkpoint: Optional[StepRecord]
) -> Flow[Optional[RecordOutcome]]:
    """Send ``msg`` and, in the same transaction, record it as the checkpoint of the receive
    ``waiting`` (``Store.deliver_message``; from a workflow, with the send's own
    ``checkpoint``: ``Store.deliver_recorded``); hand it over once that committed, then wake
    the receiver, which otherwise reads the database as it would have."""
    try:
        receipt = waiting.checkpoint(msg.message, msg.serialization, eng.now_ms())
        outcome: Optional[RecordOutcome] = None
        if checkpoint is None:
            delivered = yield Io(lambda: eng.store.deliver_message(msg, receipt))
        else:
            outcome, delivered = yield Io(
                lambda: eng.store.deliver_recorded(msg, receipt, checkpoint)
            )
        if delivered:
            waiting.hand_over(msg.message, msg.serialization)
        return outcome
    finally:
        waiting.settled.set()
        eng.wakeups.fire(message_key(msg.destination_id, msg.topic))


def recv_flow(eng: Engine, topic: Optional[str], timeout: float) -> Flow[Any]:
    run = in_body()
    if run is None:
        raise DBOSException("recv() must be called from within a workflow (not from a step)")
    topic_s = topic if topic is not None else NULL_TOPIC
    fid = run.next_function_id()
    sleep_fid = run.next_function_id()
    rec = run.replay.get(fid)
    if rec is not None:
        return replay(eng, run, rec, "DBOS.recv")
    yield from check_cancelled(run.runtime, run)
    started = run.wait_started(fid)
    deadline = yield from durable_wake(run.runtime, run, sleep_fid, timeout, timeout=True)
    waiting = _recv_wait(eng, run, fid, topic_s, deadline, started)
    waiting = parked(run.entry, waiting)
    return (yield from watched_wait(eng.observers, run, "recv", fid, waiting, run.parked_scopes))


def _recv_wait(
    eng: Engine, run: WorkflowRun, fid: int, topic_s: str, deadline: float, started: int
) -> Flow[Any]:
    """Read (consume) until a message comes or the deadline passes. Past the deadline, the
    read records the receive's None unless an answer is there first: a send from this
    process may have delivered a message at this position meanwhile (``_deliver``), and
    whichever is recorded first is the receive's answer."""
    key = message_key(run.workflow_id, topic_s)
    keys = (key, cancel_key(run.workflow_id))
    hold = hold_until(run)
    while True:
        signal = eng.wakeups.subscribe(*keys)
        try:
            timed_out = deadline - time.time() <= 0
            none_text = run.serializer.serialize(None) if timed_out else None
            checkpoint = step_record(run, fid, "DBOS.recv", started, output=none_text)
            got = yield Io(
                partial(eng.store.consume_message, run.workflow_id, topic_s, checkpoint, timed_out)
            )
            if got.found:
                if not got.accepted:
                    raise DBOSWorkflowConflictIDError(run.workflow_id)
                return eng.codec.decode(got.output, got.serialization)
            remaining = deadline - time.time()
            if remaining <= 0:
                continue  # read once more, recording the timeout if nothing came
            wait = min(remaining, eng.wait_interval())
            later = min(remaining, eng.suspended_wait_interval())
            waiting = eng.wakeups.offer_receive(key, checkpoint)
            try:
                yield from wait_or_suspend(
                    run, hold, eng.wakeups, keys, signal, wait, suspended_for=later
                )
            finally:
                if waiting is not None:
                    eng.wakeups.withdraw_receive(key, waiting)
            if waiting is not None and waiting.taken:
                if not waiting.settled.is_set():
                    # Woken while a send delivers to this receive: its answer is at most that
                    # send's statement away.
                    yield Wait(waiting.settled, min(wait, max(0.0, deadline - time.time())))
                if waiting.delivered:
                    return eng.codec.decode(waiting.output, waiting.serialization)
            if run.entry.cancel.is_set():
                raise DBOSWorkflowCancelledError(f"workflow {run.workflow_id} was cancelled")
        finally:
            eng.wakeups.unsubscribe(signal, *keys)


# -- events -----------------------------------------------------------------------------------


def set_event_flow(
    eng: Engine, key: str, value: Any, fmt: Optional[WorkflowSerializationFormat]
) -> Flow[None]:
    run, step = current_run.get(), current_step.get()
    if run is None:
        raise DBOSException("set_event() must be called from within a workflow or step")
    if not isinstance(key, str):
        raise DBOSException("an event key must be a string")
    ser = _serializer(eng, fmt, run)
    text = _encode(eng, value, ser, f"event {key!r}")
    checkpoint = None
    if step is None:
        fid, recorded = yield from next_operation(run, "DBOS.setEvent")
        if recorded is not NOT_RECORDED:
            return None
        checkpoint = step_record(run, fid, "DBOS.setEvent", eng.now_ms())
    else:
        fid = step.step_id  # not checkpointed: an upsert, so a retried step is harmless
    outcome = yield Io(
        lambda: eng.store.set_event(
            EventWrite(run.workflow_id, key, text, ser.name(), fid), checkpoint
        )
    )
    if checkpoint is not None and outcome is not None:
        after_record(run, outcome)
    eng.wakeups.fire(event_key(run.workflow_id, key))


def get_event_flow(eng: Engine, workflow_id: str, key: str, timeout: float) -> Flow[Any]:
    run = in_body()
    fid = sleep_fid = -1
    deadline = time.time() + max(0.0, float(timeout))
    if run is not None:
        fid = run.next_function_id()
        sleep_fid = run.next_function_id()
        rec = run.replay.get(fid)
        if rec is not None:
            return replay(eng, run, rec, "DBOS.getEvent")
        started = run.wait_started(fid)
        deadline = yield from durable_wake(run.runtime, run, sleep_fid, timeout, timeout=True)
        waiting = _event_wait(eng, run, fid, workflow_id, key, deadline, started)
        waiting = parked(run.entry, waiting)
        watched = watched_wait(eng.observers, run, "get_event", fid, waiting, run.parked_scopes)
        return (yield from watched)
    return (yield from _event_wait(eng, run, fid, workflow_id, key, deadline, eng.now_ms()))


def _event_wait(
    eng: Engine,
    run: Optional[WorkflowRun],
    fid: int,
    workflow_id: str,
    key: str,
    deadline: float,
    started: int,
) -> Flow[Any]:
    # A waiting workflow is also woken when it is handed back (a draining executor).
    keys = (event_key(workflow_id, key),) + (() if run is None else (cancel_key(run.workflow_id),))
    hold = hold_until(run)
    while True:
        signal = eng.wakeups.subscribe(*keys)
        try:
            if run is not None and run.entry.released:
                raise DBOSWorkflowConflictIDError(run.workflow_id)
            found = yield Io(lambda: eng.store.get_event(workflow_id, key))
            remaining = deadline - time.time()
            if found is not None or remaining <= 0:
                text, ser = found if found is not None else (None, None)
                if run is not None:
                    if text is None:
                        text, ser = run.serializer.serialize(None), run.serializer.name()
                    yield from record(
                        run.runtime,
                        run,
                        fid,
                        "DBOS.getEvent",
                        started,
                        output=text,
                        serialization=ser,
                    )
                return eng.codec.decode(text, ser) if text is not None else None
            wait = min(remaining, eng.wait_interval())
            later = min(remaining, eng.suspended_wait_interval())
            yield from wait_or_suspend(
                run, hold, eng.wakeups, keys, signal, wait, suspended_for=later
            )
        finally:
            eng.wakeups.unsubscribe(signal, *keys)


def get_all_events_flow(eng: Engine, workflow_id: str) -> Flow[dict[str, Any]]:
    rows = yield Io(lambda: eng.store.get_events(workflow_id))
    return {k: eng.codec.decode(text, ser) for k, (text, ser) in rows.items()}


# -- waiting on several workflows --------------------------------------------------------------


def wait_first_flow(eng: Engine, workflow_ids: Sequence[str], polling_interval: float) -> Flow[str]:
    if not workflow_ids:
        raise ValueError("handles must not be empty")  # DBOS's error
    if len(set(workflow_ids)) != len(workflow_ids):
        raise DBOSException("wait_first was given the same workflow twice")
    run = in_body()
    fid = -1
    if run is not None:
        fid, recorded = yield from next_operation(run, "DBOS.waitFirst", check=False)
        if recorded is not NOT_RECORDED:
            return str(recorded)
    keys = [done_key(w) for w in workflow_ids] + [cancel_key(w) for w in workflow_ids]
    started = eng.now_ms()
    while True:
        signal = eng.wakeups.subscribe(*keys)
        try:
            outcomes = yield Io(lambda: eng.store.get_outcomes(list(workflow_ids)))
            done = [
                w
                for w in workflow_ids
                if w in outcomes and outcomes[w].status not in ACTIVE_STATUSES
            ]
            if done:
                first = done[0]
                if run is not None:
                    yield from record(
                        run.runtime,
                        run,
                        fid,
                        "DBOS.waitFirst",
                        started,
                        output=eng.codec.encode(first, run.serializer),
                    )
                return first
            yield Wait(signal, min(polling_interval, eng.wait_interval()))
        finally:
            eng.wakeups.unsubscribe(signal, *keys)
