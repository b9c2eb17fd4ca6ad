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
from functools import partial
from typing import TYPE_CHECKING, Any, Optional

from waypoint.core.context import start_options
from waypoint.core.effects import Flow, Io, drive_async, drive_sync
from waypoint.core.engine import Engine
from waypoint.core.registry import WorkflowInfo
from waypoint.core.steps import recorded_flow
from waypoint.core.types import INTERNAL_QUEUE_NAME
from waypoint.core.workflows import EnqueueSpec, Start, prepare, start_flow
from waypoint.error import DBOSException, DBOSQueueDeduplicatedError
from waypoint.queues.enqueue import EnqueueOptions, spec_from_options
from waypoint.queues.queue import Queue

if TYPE_CHECKING:
    from waypoint._api.client import DBOSClient
    from waypoint._api.handles import WorkflowHandle, WorkflowHandleAsync


def _queue_name(queue: Optional[Queue | str]) -> str:
    if queue is None:
        return INTERNAL_QUEUE_NAME
    return queue.name if isinstance(queue, Queue) else queue


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


def debounce_flow(
    eng: Engine,
    make_start: Callable[[], Start],
    key: str,
    period_sec: float,
    timeout_sec: Optional[float],
) -> Flow[str]:
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
                queue,
                dedup,
                wf.name,
                wf.inputs,
                wf.serialization,
                until,
                eng.app_name,
                now,
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


class Debouncer:
    """Debounce a workflow of this application (``Debouncer.create(workflow)``)."""

    def __init__(
        self,
        workflow_name: str,
        *,
        debounce_timeout_sec: Optional[float] = None,
        queue: Optional[Queue | str] = None,
        application_name: Optional[str] = None,
    ) -> None:
        if debounce_timeout_sec is not None and debounce_timeout_sec <= 0:
            raise DBOSException("debounce_timeout_sec must be positive")
        self.workflow_name = workflow_name
        self.debounce_timeout_sec = debounce_timeout_sec
        self.queue_name = _queue_name(queue)
        self.application_name = application_name
        self._func: Optional[Callable[..., Any]] = None

    @classmethod
    def create(
        cls,
        workflow: Callable[..., Any],
        *,
        debounce_timeout_sec: Optional[float] = None,
        queue: Optional[Queue | str] = None,
        application_name: Optional[str] = None,
    ) -> Debouncer:
        info = getattr(workflow, "__waypoint_workflow__", None)
        if not isinstance(info, WorkflowInfo):
            raise DBOSException("Debouncer.create needs a function decorated with @DBOS.workflow")
        if info.kind in ("instance", "class"):
            raise DBOSException("Debouncer.create does not accept methods")
        deb = cls(
            info.name,
            debounce_timeout_sec=debounce_timeout_sec,
            queue=queue,
            application_name=application_name,
        )
        deb._func = workflow
        return deb

    @classmethod
    async def create_async(
        cls,
        workflow: Callable[..., Any],
        *,
        debounce_timeout_sec: Optional[float] = None,
        queue: Optional[Queue | str] = None,
        application_name: Optional[str] = None,
    ) -> Debouncer:
        return cls.create(
            workflow,
            debounce_timeout_sec=debounce_timeout_sec,
            queue=queue,
            application_name=application_name,
        )

    def _flow(
        self, key: str, period: float, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Flow[str]:
        from waypoint.core.calls import resolve_workflow, workflow_scope
        from waypoint.core.registry import REGISTRY
        from waypoint.core.runtime import get_runtime

        _reject_conflicting_options()
        rt = get_runtime()
        func = self._func
        if func is None:
            registered = REGISTRY.workflows.get(self.workflow_name)
            if registered is None or registered.wrapper is None:
                raise DBOSException(f"no workflow named {self.workflow_name!r} is registered")
            func = registered.wrapper
        info, call_args = resolve_workflow(func, args)

        def make_start() -> Start:
            # Never a child of the calling workflow: the bounce itself is the checkpoint.
            token = start_options.set(dataclasses.replace(start_options.get(), next_id=None))
            try:
                from waypoint.core.context import current_run

                run_token = current_run.set(None)
                try:
                    return prepare(rt, info, call_args, kwargs, EnqueueSpec(self.queue_name))
                finally:
                    current_run.reset(run_token)
            finally:
                start_options.reset(token)

        body = debounce_flow(rt, make_start, key, period, self.debounce_timeout_sec)
        run = workflow_scope()
        if run is None:
            return (yield from body)
        result: str = yield from recorded_flow(rt, run, "DBOS.debounce", body)
        return result

    def debounce(
        self, debounce_key: str, debounce_period_sec: float, *args: Any, **kwargs: Any
    ) -> WorkflowHandle[Any]:
        from waypoint._api.handles import Handle

        return Handle(drive_sync(self._flow(debounce_key, debounce_period_sec, args, kwargs)))

    async def debounce_async(
        self, debounce_key: str, debounce_period_sec: float, *args: Any, **kwargs: Any
    ) -> WorkflowHandleAsync[Any]:
        from waypoint._api.handles import HandleAsync

        return HandleAsync(
            await drive_async(self._flow(debounce_key, debounce_period_sec, args, kwargs))
        )


class DebouncerClient:
    """Debounce a workflow by name from a ``DBOSClient``."""

    def __init__(
        self,
        client: DBOSClient,
        workflow_options: EnqueueOptions,
        *,
        debounce_timeout_sec: Optional[float] = None,
        queue: Optional[Queue | str] = None,
        application_name: Optional[str] = None,
    ) -> None:
        if debounce_timeout_sec is not None and debounce_timeout_sec <= 0:
            raise DBOSException("debounce_timeout_sec must be positive")
        for forbidden in ("deduplication_id", "delay_seconds", "priority", "queue_partition_key"):
            if workflow_options.get(forbidden) is not None:
                raise DBOSException(f"a debounced workflow cannot take {forbidden}")
        self.client = client
        self.options = dict(workflow_options)
        if queue is not None:
            self.options["queue_name"] = _queue_name(queue)
        self.options.setdefault("queue_name", INTERNAL_QUEUE_NAME)
        self.debounce_timeout_sec = debounce_timeout_sec
        self.application_name = application_name

    def _flow(
        self, key: str, period: float, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Flow[str]:
        from waypoint.core.calls import by_name_start

        eng = self.client.engine
        options: EnqueueOptions = self.options  # type: ignore[assignment]
        spec_from_options(options)  # validate once, before anything is written

        def make_start() -> Start:
            return by_name_start(eng, options, args, kwargs, check_queue=False)

        return (yield from debounce_flow(eng, make_start, key, period, self.debounce_timeout_sec))

    def debounce(
        self, debounce_key: str, debounce_period_sec: float, *args: Any, **kwargs: Any
    ) -> WorkflowHandle[Any]:
        from waypoint._api.client import ClientHandle

        wfid = drive_sync(self._flow(debounce_key, debounce_period_sec, args, kwargs))
        return ClientHandle(self.client.engine, wfid)

    async def debounce_async(
        self, debounce_key: str, debounce_period_sec: float, *args: Any, **kwargs: Any
    ) -> WorkflowHandleAsync[Any]:
        from waypoint._api.client import ClientHandleAsync

        wfid = await drive_async(self._flow(debounce_key, debounce_period_sec, args, kwargs))
        return ClientHandleAsync(self.client.engine, wfid)
