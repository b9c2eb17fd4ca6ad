"""Messages, events and streams: sending and reading from anywhere, and the writes only a
workflow (or its steps) can make. Called from a workflow body, each checkpoints itself."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

from waypoint._api.ops.base import Ops, checkpoint
from waypoint.core.effects import Flow
from waypoint.core.messaging import (
    SendMessage,
    get_all_events_flow,
    get_event_flow,
    recv_flow,
    send_flow,
    set_event_flow,
)
from waypoint.core.streams import (
    READ_STREAM_OFFSET_STEP,
    StreamRead,
    StreamReader,
    read_stream_flow,
    stream_value,
    write_stream_flow,
)
from waypoint.core.types import WorkflowSerializationFormat

DEFAULT = WorkflowSerializationFormat.DEFAULT
Format = Optional[WorkflowSerializationFormat]


def send(
    ops: Ops,
    destination_id: str,
    message: Any,
    topic: Optional[str] = None,
    idempotency_key: Optional[str] = None,
    *,
    serialization_type: Format = DEFAULT,
    send_to_forks: bool = False,
) -> Flow[None]:
    """Send a message to a workflow (once per idempotency key, if one is given)."""
    msg = SendMessage(destination_id, message, topic, idempotency_key)
    return send_flow(ops.engine(), [msg], serialization_type, send_to_forks, "DBOS.send")


def send_bulk(
    ops: Ops,
    messages: Sequence[SendMessage],
    *,
    serialization_type: Format = DEFAULT,
    send_to_forks: bool = False,
) -> Flow[None]:
    """Send many messages in one transaction."""
    return send_flow(ops.engine(), messages, serialization_type, send_to_forks, "DBOS.send_bulk")


def recv(ops: Ops, topic: Optional[str] = None, timeout_seconds: float = 60) -> Flow[Any]:
    """From a workflow: the oldest message on ``topic`` (None after the durable timeout)."""
    return recv_flow(ops.engine(), topic, timeout_seconds)


def set_event(
    ops: Ops, key: str, value: Any, *, serialization_type: Format = DEFAULT
) -> Flow[None]:
    """From a workflow or its steps: publish the latest value of an event."""
    return set_event_flow(ops.engine(), key, value, serialization_type)


def get_event(ops: Ops, workflow_id: str, key: str, timeout_seconds: float = 60) -> Flow[Any]:
    """Wait for a workflow's event to be set (None after the timeout)."""
    return get_event_flow(ops.engine(), workflow_id, key, timeout_seconds)


@checkpoint("DBOS.get_events")
def get_all_events(ops: Ops, workflow_id: str) -> Flow[dict[str, Any]]:
    """The current value of each of a workflow's events."""
    return get_all_events_flow(ops.engine(), workflow_id)


def write_stream(
    ops: Ops, key: str, value: Any, *, serialization_type: Format = DEFAULT
) -> Flow[None]:
    """From a workflow or its steps: append a value to one of its streams."""
    return write_stream_flow(ops.engine(), key, value, serialization_type)


def close_stream(ops: Ops, key: str) -> Flow[None]:
    """From a workflow: end one of its streams (readers stop there)."""
    return write_stream_flow(ops.engine(), key, None, None, closing=True)


def read_stream_offset(
    ops: Ops,
    workflow_id: str,
    key: str,
    offset: int,
    *,
    polling_interval_sec: Optional[float] = None,
    timeout_seconds: Optional[float] = None,
) -> Flow[Any]:
    """The value at ``offset`` of a workflow's stream, waiting for it to be written."""
    got: StreamRead = yield from read_stream_flow(
        ops.engine(), workflow_id, key, offset, timeout_seconds, READ_STREAM_OFFSET_STEP
    )
    return stream_value(got, workflow_id, key, offset)


def read_stream(
    ops: Ops,
    workflow_id: str,
    key: str,
    *,
    offset: int = 0,
    polling_interval_sec: Optional[float] = None,
    timeout_seconds: Optional[float] = None,
) -> StreamReader:
    """The stream's values from ``offset`` until it is closed or its writer ends."""
    return StreamReader(ops.engine(), workflow_id, key, offset, timeout_seconds)
