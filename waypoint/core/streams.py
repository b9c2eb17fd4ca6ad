"""Streams: a workflow's append-only values under a key, written from its body or its steps
and read (waiting for each value) from anywhere. The same wait pattern and write keys as
messages (``core.messaging``)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Generator
from dataclasses import dataclass
from typing import Any, Optional

from waypoint.core.context import current_run, current_step
from waypoint.core.effects import Flow, Io, Wait, drive_async, drive_sync
from waypoint.core.engine import Engine
from waypoint.core.messaging import _encode, _serializer, _step_write_id, in_body
from waypoint.core.run import WorkflowRun
from waypoint.core.steps import (
    NOT_RECORDED,
    after_record,
    check_cancelled,
    next_operation,
    record,
    replay,
    step_record,
)
from waypoint.core.types import ACTIVE_STATUSES, WorkflowSerializationFormat
from waypoint.error import (
    DBOSException,
    DBOSStreamNondeterminismError,
    DBOSStreamTimeoutError,
    DBOSWorkflowCancelledError,
)
from waypoint.storage.protocol import StepRow, StreamWrite, cancel_key, done_key, stream_key

STREAM_CLOSED = "__DBOS_STREAM_CLOSED__"


def write_stream_flow(
    eng: Engine,
    key: str,
    value: Any,
    fmt: Optional[WorkflowSerializationFormat],
    closing: bool = False,
) -> Flow[None]:
    run = current_run.get()
    if run is None:
        what = "close_stream()" if closing else "write_stream()"
        raise DBOSException(f"{what} must be called from within a workflow or step")
    if not isinstance(key, str):
        raise DBOSException("a stream key must be a string")
    if closing:
        ser = eng.codec.for_format(WorkflowSerializationFormat.PORTABLE)
        text = ser.serialize(STREAM_CLOSED)
    else:
        ser = _serializer(eng, fmt, run)
        text = _encode(eng, value, ser, f"a value of stream {key!r}")
    name = "DBOS.closeStream" if closing else "DBOS.writeStream"
    checkpoint = None
    step_write = _step_write_id("stream")
    if step_write is None:
        fid, recorded = yield from next_operation(run, name)
        if recorded is not NOT_RECORDED:
            return None
        checkpoint = step_record(run, fid, name, eng.now_ms())
        write_key = f"wf:{fid}"
    else:
        # Each attempt of a retried step writes its own values (as in DBOS); a re-run of
        # the same attempt (recovery) writes nothing twice.
        _, fid, n = step_write
        step = current_step.get()
        attempt = step.current_attempt if step is not None else None
        write_key = f"step:{fid}:{n}" if not attempt else f"step:{fid}:a{attempt}:{n}"
    outcome = yield Io(
        lambda: eng.store.write_stream(
            StreamWrite(run.workflow_id, key, text, ser.name(), fid, write_key), checkpoint
        )
    )
    if checkpoint is not None and outcome is not None:
        after_record(run, outcome)
    eng.wakeups.fire(stream_key(run.workflow_id, key))


@dataclass
class StreamRead:
    found: bool  # a value was read
    value: Any = None
    ended: bool = False  # the stream is closed (or its writer finished) at this offset
    timed_out: Optional[str] = None  # no value came in time (the message of the error)


READ_STREAM_STEP = "DBOS.readStream"
READ_STREAM_OFFSET_STEP = "DBOS.readStreamOffset"
_LEGACY_READ_KEYS = {"found", "value", "ended", "timed_out"}


def _replay_read(eng: Engine, run: WorkflowRun, rec: StepRow, name: str) -> StreamRead:
    """A recorded read, as DBOS records it: the value, the closed-stream marker at the end, or
    the timeout error. (Waypoint before 0.2 recorded a dict of the read's fields, and named
    offset reads ``DBOS.readStream``.)"""
    if name == READ_STREAM_OFFSET_STEP and rec.function_name == READ_STREAM_STEP:
        name = READ_STREAM_STEP
    value = replay(eng, run, rec, name)
    if isinstance(value, dict) and set(value) == _LEGACY_READ_KEYS:
        legacy = StreamRead(**value)
        if legacy.timed_out is not None:
            raise DBOSStreamTimeoutError(legacy.timed_out)
        return legacy
    if isinstance(value, str) and value == STREAM_CLOSED:
        return StreamRead(False, None, True)
    return StreamRead(True, value)


def read_stream_flow(
    eng: Engine,
    workflow_id: str,
    key: str,
    offset: int,
    timeout: Optional[float],
    name: str = READ_STREAM_STEP,
) -> Flow[StreamRead]:
    """Read the value at ``offset``, waiting for it; from a workflow body, one step ``name``
    per value read (spanning the wait), whose output is the value in the application's
    serializer, as DBOS records it."""
    run = in_body()
    if run is None:
        return (yield from _read_value(eng, None, -1, workflow_id, key, offset, timeout, name))
    if run.stream_reads > 0:
        # Two reads in flight at once (asyncio.gather, say): which one records which value,
        # at which position, would depend on task scheduling. DBOS refuses it the same way.
        raise DBOSStreamNondeterminismError(
            f"Cannot deterministically read stream {key} in workflow {run.workflow_id}: another "
            "stream read in the same workflow is still in progress, so which read records which "
            "value would depend on task scheduling. Read streams from sequential workflow code, "
            "or read them from a step."
        )
    run.stream_reads += 1
    try:
        fid = run.next_function_id()
        rec = run.replay.get(fid)
        if rec is not None:
            return _replay_read(eng, run, rec, name)
        return (yield from _read_value(eng, run, fid, workflow_id, key, offset, timeout, name))
    finally:
        run.stream_reads -= 1


def _read_value(
    eng: Engine,
    run: Optional[WorkflowRun],
    fid: int,
    workflow_id: str,
    key: str,
    offset: int,
    timeout: Optional[float],
    name: str,
) -> Flow[StreamRead]:
    """Wait for the value at ``offset`` (a reading workflow notices its own cancellation),
    then, from a workflow body, checkpoint it at ``fid``."""
    started = eng.now_ms()
    deadline = None if timeout is None else time.time() + timeout
    skey = stream_key(workflow_id, key)
    keys: tuple[str, ...] = (skey, done_key(workflow_id))
    if run is not None:
        keys += (cancel_key(run.workflow_id),)
    drained = False
    result: Optional[StreamRead] = None
    while result is None:
        if run is not None:
            yield from check_cancelled(run.runtime, run)
        signal = eng.wakeups.subscribe(*keys)
        try:
            value, writer = yield Io(lambda: eng.store.read_stream(workflow_id, key, offset))
            if value is not None:
                decoded = eng.codec.decode(value[0], value[1])
                result = (
                    StreamRead(False, None, True)
                    if decoded == STREAM_CLOSED
                    else StreamRead(True, decoded)
                )
            elif writer is None or writer not in ACTIVE_STATUSES:
                if drained:  # one last read after the writer finished, then the end
                    result = StreamRead(False, None, True)
                drained = True
            else:
                remaining = None if deadline is None else deadline - time.time()
                if remaining is not None and remaining <= 0:
                    result = StreamRead(
                        False,
                        timed_out=f"no value at offset {offset} of stream {key!r} of workflow "
                        f"{workflow_id} within {timeout} seconds",
                    )
                    break
                wait = eng.wait_interval()
                yield Wait(signal, wait if remaining is None else min(remaining, wait))
                if run is not None and run.entry.cancel.is_set():
                    raise DBOSWorkflowCancelledError(f"workflow {run.workflow_id} was cancelled")
        finally:
            eng.wakeups.unsubscribe(signal, *keys)
    error = DBOSStreamTimeoutError(result.timed_out) if result.timed_out is not None else None
    if run is not None:
        ser = eng.codec.default
        if error is not None:
            fields: dict[str, Any] = {"error": eng.codec.encode_error(error, ser)}
        else:
            fields = {
                "output": eng.codec.encode(STREAM_CLOSED if result.ended else result.value, ser)
            }
        yield from record(run.runtime, run, fid, name, started, serialization=ser.name(), **fields)
    if error is not None:  # checkpointed first, so replay times out the same way
        raise error
    return result


@dataclass
class StreamReader:
    """A stream's values from ``offset`` until it is closed or its writer ends; iterate it
    with ``for`` or ``async for`` (the same reads, driven either way)."""

    eng: Engine
    workflow_id: str
    key: str
    offset: int = 0
    timeout: Optional[float] = None

    def _next(self) -> Flow[StreamRead]:
        return read_stream_flow(self.eng, self.workflow_id, self.key, self.offset, self.timeout)

    def __iter__(self) -> Generator[Any, None, None]:
        while not (got := drive_sync(self._next())).ended:
            yield got.value
            self.offset += 1

    async def __aiter__(self) -> AsyncIterator[Any]:
        while not (got := await drive_async(self._next())).ended:
            yield got.value
            self.offset += 1


def stream_value(got: StreamRead, workflow_id: str, key: str, offset: int) -> Any:
    """The value of a single-offset read; the stream having ended there is an error."""
    if got.ended:
        raise DBOSStreamTimeoutError(
            f"stream {key!r} of workflow {workflow_id} ended before offset {offset}"
        )
    return got.value
