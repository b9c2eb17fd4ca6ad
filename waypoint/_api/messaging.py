"""``DBOS`` methods for messages, events, streams and waiting on several workflows
(a mixin, to keep the ``DBOS`` class module small)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Generator, Iterable, Sequence
from typing import Any, Optional

from waypoint._api.handles import Handle, HandleAsync, WorkflowHandle, WorkflowHandleAsync
from waypoint.core.effects import drive_async, drive_sync
from waypoint.core.messaging import (
    SendMessage,
    StreamRead,
    aiter_stream,
    get_all_events_flow,
    get_event_flow,
    iter_stream,
    read_stream_flow,
    recv_flow,
    send_flow,
    set_event_flow,
    stream_value,
    wait_first_flow,
    write_stream_flow,
)
from waypoint.core.runtime import get_runtime
from waypoint.core.steps import record, recorded_flow, replay
from waypoint.core.types import WorkflowSerializationFormat
from waypoint.error import DBOSStreamTimeoutError

DEFAULT = WorkflowSerializationFormat.DEFAULT


def _events_flow(workflow_id: str) -> Any:
    from waypoint.core.messaging import in_body

    rt = get_runtime()
    run = in_body()
    body = get_all_events_flow(rt, workflow_id)
    return body if run is None else recorded_flow(rt, run, "DBOS.get_events", body)


def _ended(workflow_id: str, key: str, offset: int) -> DBOSStreamTimeoutError:
    return DBOSStreamTimeoutError(
        f"stream {key!r} of workflow {workflow_id} ended before offset {offset}"
    )


class MessagingMixin:
    # -- messages -------------------------------------------------------------------------------
    @classmethod
    def send(
        cls,
        destination_id: str,
        message: Any,
        topic: Optional[str] = None,
        *,
        idempotency_key: Optional[str] = None,
        serialization_type: Optional[WorkflowSerializationFormat] = DEFAULT,
        send_to_forks: bool = False,
    ) -> None:
        msg = SendMessage(destination_id, message, topic, idempotency_key)
        drive_sync(send_flow(get_runtime(), [msg], serialization_type, send_to_forks, "DBOS.send"))

    @classmethod
    async def send_async(
        cls,
        destination_id: str,
        message: Any,
        topic: Optional[str] = None,
        *,
        idempotency_key: Optional[str] = None,
        serialization_type: Optional[WorkflowSerializationFormat] = DEFAULT,
        send_to_forks: bool = False,
    ) -> None:
        msg = SendMessage(destination_id, message, topic, idempotency_key)
        await drive_async(
            send_flow(get_runtime(), [msg], serialization_type, send_to_forks, "DBOS.send")
        )

    @classmethod
    def send_bulk(
        cls,
        messages: Sequence[SendMessage],
        *,
        serialization_type: Optional[WorkflowSerializationFormat] = DEFAULT,
        send_to_forks: bool = False,
    ) -> None:
        drive_sync(
            send_flow(get_runtime(), messages, serialization_type, send_to_forks, "DBOS.send_bulk")
        )

    @classmethod
    async def send_bulk_async(
        cls,
        messages: Sequence[SendMessage],
        *,
        serialization_type: Optional[WorkflowSerializationFormat] = DEFAULT,
        send_to_forks: bool = False,
    ) -> None:
        await drive_async(
            send_flow(get_runtime(), messages, serialization_type, send_to_forks, "DBOS.send_bulk")
        )

    @classmethod
    def recv(cls, topic: Optional[str] = None, timeout_seconds: float = 60) -> Any:
        return drive_sync(recv_flow(get_runtime(), topic, timeout_seconds))

    @classmethod
    async def recv_async(cls, topic: Optional[str] = None, timeout_seconds: float = 60) -> Any:
        return await drive_async(recv_flow(get_runtime(), topic, timeout_seconds))

    # -- events ---------------------------------------------------------------------------------
    @classmethod
    def set_event(
        cls,
        key: str,
        value: Any,
        *,
        serialization_type: Optional[WorkflowSerializationFormat] = DEFAULT,
    ) -> None:
        drive_sync(set_event_flow(get_runtime(), key, value, serialization_type))

    @classmethod
    async def set_event_async(
        cls,
        key: str,
        value: Any,
        *,
        serialization_type: Optional[WorkflowSerializationFormat] = DEFAULT,
    ) -> None:
        await drive_async(set_event_flow(get_runtime(), key, value, serialization_type))

    @classmethod
    def get_event(cls, workflow_id: str, key: str, timeout_seconds: float = 60) -> Any:
        return drive_sync(get_event_flow(get_runtime(), workflow_id, key, timeout_seconds))

    @classmethod
    async def get_event_async(cls, workflow_id: str, key: str, timeout_seconds: float = 60) -> Any:
        return await drive_async(get_event_flow(get_runtime(), workflow_id, key, timeout_seconds))

    @classmethod
    def get_all_events(cls, workflow_id: str) -> dict[str, Any]:
        result: dict[str, Any] = drive_sync(_events_flow(workflow_id))
        return result

    @classmethod
    async def get_all_events_async(cls, workflow_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await drive_async(_events_flow(workflow_id))
        return result

    # -- streams --------------------------------------------------------------------------------
    @classmethod
    def write_stream(
        cls,
        key: str,
        value: Any,
        *,
        serialization_type: Optional[WorkflowSerializationFormat] = DEFAULT,
    ) -> None:
        drive_sync(write_stream_flow(get_runtime(), key, value, serialization_type))

    @classmethod
    async def write_stream_async(
        cls,
        key: str,
        value: Any,
        *,
        serialization_type: Optional[WorkflowSerializationFormat] = DEFAULT,
    ) -> None:
        await drive_async(write_stream_flow(get_runtime(), key, value, serialization_type))

    @classmethod
    def close_stream(cls, key: str) -> None:
        drive_sync(write_stream_flow(get_runtime(), key, None, None, closing=True))

    @classmethod
    async def close_stream_async(cls, key: str) -> None:
        await drive_async(write_stream_flow(get_runtime(), key, None, None, closing=True))

    @classmethod
    def read_stream(
        cls,
        workflow_id: str,
        key: str,
        *,
        offset: int = 0,
        polling_interval_sec: Optional[float] = None,
        timeout_seconds: Optional[float] = None,
    ) -> Generator[Any, None, None]:
        return iter_stream(get_runtime(), workflow_id, key, offset, timeout_seconds)

    @classmethod
    async def read_stream_async(
        cls,
        workflow_id: str,
        key: str,
        *,
        offset: int = 0,
        polling_interval_sec: Optional[float] = None,
        timeout_seconds: Optional[float] = None,
    ) -> AsyncGenerator[Any, None]:
        async for value in aiter_stream(get_runtime(), workflow_id, key, offset, timeout_seconds):
            yield value

    @classmethod
    def read_stream_offset(
        cls,
        workflow_id: str,
        key: str,
        offset: int,
        *,
        polling_interval_sec: Optional[float] = None,
        timeout_seconds: Optional[float] = None,
    ) -> Any:
        got: StreamRead = drive_sync(
            read_stream_flow(get_runtime(), workflow_id, key, offset, timeout_seconds)
        )
        return stream_value(got, workflow_id, key, offset)

    @classmethod
    async def read_stream_offset_async(
        cls,
        workflow_id: str,
        key: str,
        offset: int,
        *,
        polling_interval_sec: Optional[float] = None,
        timeout_seconds: Optional[float] = None,
    ) -> Any:
        got: StreamRead = await drive_async(
            read_stream_flow(get_runtime(), workflow_id, key, offset, timeout_seconds)
        )
        return stream_value(got, workflow_id, key, offset)

    # -- several workflows ----------------------------------------------------------------------
    @classmethod
    def wait_first(
        cls, handles: Sequence[WorkflowHandle[Any]], *, polling_interval_sec: float = 1.0
    ) -> WorkflowHandle[Any]:
        ids = [h.workflow_id for h in handles]
        first = drive_sync(wait_first_flow(get_runtime(), ids, polling_interval_sec))
        for h in handles:
            if h.workflow_id == first:
                return h
        return Handle(first)

    @classmethod
    async def wait_first_async(
        cls, handles: Sequence[WorkflowHandleAsync[Any]], *, polling_interval_sec: float = 1.0
    ) -> WorkflowHandleAsync[Any]:
        ids = [h.workflow_id for h in handles]
        first = await drive_async(wait_first_flow(get_runtime(), ids, polling_interval_sec))
        for h in handles:
            if h.workflow_id == first:
                return h
        return HandleAsync(first)

    @classmethod
    async def asyncio_wait(
        cls,
        fs: Iterable[Awaitable[Any]],
        *,
        timeout: Optional[float] = None,
        return_when: str = asyncio.ALL_COMPLETED,
    ) -> tuple[set[Any], set[Any]]:
        """``asyncio.wait`` whose outcome (which tasks were done) is checkpointed, so replay
        takes the same branch even if the tasks finish in a different order."""
        from waypoint.core.messaging import in_body

        tasks: list[asyncio.Future[Any]] = [asyncio.ensure_future(f) for f in fs]
        run = in_body()
        if run is None:
            plain_done, plain_pending = await asyncio.wait(
                tasks, timeout=timeout, return_when=return_when
            )
            return set(plain_done), set(plain_pending)
        rt = run.runtime
        fid = run.next_function_id()
        rec = run.replay.get(fid)
        if rec is not None:
            indices = set(replay(rt, run, rec, "DBOS.asyncio_wait"))
            done = {t for i, t in enumerate(tasks) if i in indices}
            if done:
                await asyncio.wait(done)
            return done, {t for i, t in enumerate(tasks) if i not in indices}
        started = rt.now_ms()
        done, pending = await asyncio.wait(tasks, timeout=timeout, return_when=return_when)
        indices_done = sorted(i for i, t in enumerate(tasks) if t in done)
        await drive_async(
            record(
                rt,
                run,
                fid,
                "DBOS.asyncio_wait",
                started,
                output=rt.codec.encode(indices_done, run.serializer),
            )
        )
        return done, pending
