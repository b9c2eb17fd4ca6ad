"""The engine's entry points behind the public API, each written once as a flow and exposed
in a sync and an async form."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any, Optional

from waypoint.core.context import (
    UNSET,
    Auth,
    NextWorkflowID,
    StartOptions,
    current_auth,
    current_run,
    current_step,
    start_options,
)
from waypoint.core.effects import Flow, Io, drive_async, drive_sync
from waypoint.core.engine import Engine
from waypoint.core.outcomes import await_outcome, to_status
from waypoint.core.registry import REGISTRY, StepEntry, WorkflowInfo
from waypoint.core.run import WorkflowRun
from waypoint.core.runtime import Runtime, get_runtime
from waypoint.core.steps import recorded_flow, sleep_flow, step_flow
from waypoint.core.types import INTERNAL_QUEUE_NAME, StepSpec, WorkflowStatus
from waypoint.core.workflows import EnqueueSpec, Start, direct_flow, prepare, start_flow
from waypoint.error import DBOSException
from waypoint.queues.enqueue import (
    EnqueueOptions,
    by_name,
    require_queue,
    spec_from_context,
    spec_from_options,
    target_of,
    validate_for_queue,
)

# -- where are we? ------------------------------------------------------------------------------


def workflow_scope() -> Optional[WorkflowRun]:
    """The run whose body is executing here, unless we are inside one of its steps."""
    if current_step.get() is not None:
        return None
    return current_run.get()


def resolve_workflow(
    func: Callable[..., Any], args: tuple[Any, ...]
) -> tuple[WorkflowInfo, tuple[Any, ...]]:
    """Find the registration behind a decorated function or bound method."""
    target = func
    if inspect.ismethod(func):
        args = (func.__self__, *args)
        target = func.__func__
    info = getattr(target, "__waypoint_workflow__", None)
    if not isinstance(info, WorkflowInfo):
        name = getattr(func, "__qualname__", repr(func))
        raise DBOSException(
            f"{name} is not a registered workflow: decorate it with @DBOS.workflow()"
        )
    return info, args


# -- workflows ----------------------------------------------------------------------------------


def call_workflow(info: WorkflowInfo, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if current_step.get() is not None:
        return info.func(*args, **kwargs)  # a workflow called from a step is a plain call
    rt = get_runtime()
    return drive_sync(direct_flow(rt, prepare(rt, info, args, kwargs)))


async def call_workflow_async(
    info: WorkflowInfo, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    if current_step.get() is not None:
        return await info.func(*args, **kwargs)
    rt = get_runtime()
    return await drive_async(direct_flow(rt, prepare(rt, info, args, kwargs)))


def _reject_enqueue_options() -> None:
    opts = start_options.get()
    if opts.enqueue_options_set and any(
        v is not None
        for v in (
            opts.deduplication_id,
            opts.priority,
            opts.queue_partition_key,
            opts.delay_seconds,
        )
    ):
        raise DBOSException(
            "deduplication_id, priority, queue_partition_key and delay_seconds apply only to "
            "enqueued workflows; use Queue.enqueue or DBOS.enqueue_workflow"
        )


def start(func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    rt = get_runtime()
    _reject_enqueue_options()
    info, args = resolve_workflow(target_of(func), args)
    return drive_sync(start_flow(rt, prepare(rt, info, args, kwargs)))


async def start_async(
    func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> str:
    rt = get_runtime()
    _reject_enqueue_options()
    info, args = resolve_workflow(target_of(func), args)
    return await drive_async(start_flow(rt, prepare(rt, info, args, kwargs)))


def _enqueue_start(
    rt: Engine,
    queue_name: str,
    func: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Start:
    spec = spec_from_context(queue_name)
    validate_for_queue(spec, require_queue(rt, queue_name))
    info, args = resolve_workflow(target_of(func), args)
    return prepare(rt, info, args, kwargs, spec)


def enqueue(
    queue_name: str, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> str:
    rt = get_runtime()
    return drive_sync(start_flow(rt, _enqueue_start(rt, queue_name, func, args, kwargs)))


async def enqueue_async(
    queue_name: str, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> str:
    rt = get_runtime()
    return await drive_async(start_flow(rt, _enqueue_start(rt, queue_name, func, args, kwargs)))


def by_name_start(
    rt: Engine,
    options: EnqueueOptions,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    check_queue: bool,
) -> Start:
    """Prepare an enqueue by workflow name (the function may live in another process)."""
    spec = spec_from_options(options)
    validate_for_queue(spec, require_queue(rt, spec.queue_name) if check_queue else None)
    info = by_name(options)
    wfid = options.get("workflow_id")
    holder = NextWorkflowID(wfid) if wfid is not None else None
    token = start_options.set(
        dataclasses.replace(
            start_options.get(),
            next_id=holder,
            attributes=options.get("attributes", UNSET),
        )
    )
    auth_token = None
    if options.get("authenticated_user") is not None or options.get("authenticated_roles"):
        auth_token = current_auth.set(
            Auth(options.get("authenticated_user"), options.get("authenticated_roles"))
        )
    try:
        return prepare(rt, info, args, kwargs, spec)
    finally:
        start_options.reset(token)
        if auth_token is not None:
            current_auth.reset(auth_token)


def enqueue_with_options(
    options: EnqueueOptions, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> str:
    rt = get_runtime()
    return drive_sync(start_flow(rt, by_name_start(rt, options, args, kwargs, check_queue=True)))


async def enqueue_with_options_async(
    options: EnqueueOptions, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> str:
    rt = get_runtime()
    return await drive_async(
        start_flow(rt, by_name_start(rt, options, args, kwargs, check_queue=True))
    )


# -- results and status ------------------------------------------------------------------------


def result_flow(rt: Runtime, workflow_id: str, polling_interval_sec: float) -> Flow[Any]:
    run = workflow_scope()
    body = await_outcome(rt, workflow_id, polling_interval_sec)
    if run is None:
        return (yield from body)
    return (yield from recorded_flow(rt, run, "DBOS.getResult", body))


def get_result(workflow_id: str, polling_interval_sec: float = 1.0) -> Any:
    rt = get_runtime()
    return drive_sync(result_flow(rt, workflow_id, polling_interval_sec))


async def get_result_async(workflow_id: str, polling_interval_sec: float = 1.0) -> Any:
    rt = get_runtime()
    return await drive_async(result_flow(rt, workflow_id, polling_interval_sec))


def status_flow(rt: Runtime, workflow_id: str) -> Flow[Optional[WorkflowStatus]]:
    def read() -> Flow[Optional[WorkflowStatus]]:
        row = yield Io(lambda: rt.store.get_workflow(workflow_id))
        return to_status(rt, row) if row is not None else None

    run = workflow_scope()
    if run is None:
        return (yield from read())
    status: Optional[WorkflowStatus] = yield from recorded_flow(rt, run, "DBOS.getStatus", read())
    return status


def get_status(workflow_id: str) -> Optional[WorkflowStatus]:
    rt = get_runtime()
    return drive_sync(status_flow(rt, workflow_id))


async def get_status_async(workflow_id: str) -> Optional[WorkflowStatus]:
    rt = get_runtime()
    return await drive_async(status_flow(rt, workflow_id))


def managed(name: str, op: Callable[[Runtime], Any]) -> Flow[Any]:
    """A management operation; checkpointed as a step when called from a workflow."""
    rt = get_runtime()

    def body() -> Flow[Any]:
        return (yield Io(lambda: op(rt)))

    run = workflow_scope()
    if run is None:
        return (yield from body())
    return (yield from recorded_flow(rt, run, name, body()))


# -- steps ---------------------------------------------------------------------------------------


def _step_scope() -> tuple[Optional[Runtime], Optional[WorkflowRun]]:
    run = workflow_scope()
    if run is None:
        return None, None
    return run.runtime, run


def call_step(entry: StepEntry, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if current_step.get() is not None:
        return entry.func(*args, **kwargs)  # a step inside a step is a plain call
    rt, run = _step_scope()
    return drive_sync(step_flow(rt, run, entry.spec, entry.func, args, kwargs))


async def call_step_async(entry: StepEntry, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if current_step.get() is not None:
        return await entry.func(*args, **kwargs)
    rt, run = _step_scope()
    return await drive_async(step_flow(rt, run, entry.spec, entry.func, args, kwargs))


def run_step(
    spec: StepSpec, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    if current_step.get() is not None:
        return func(*args, **kwargs)
    rt, run = _step_scope()
    return drive_sync(step_flow(rt, run, spec, func, args, kwargs))


async def run_step_async(
    spec: StepSpec, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    if current_step.get() is not None:
        result = func(*args, **kwargs)
        return await result if inspect.isawaitable(result) else result
    rt, run = _step_scope()
    return await drive_async(step_flow(rt, run, spec, func, args, kwargs))


# -- durable sleep -------------------------------------------------------------------------------


def sleep(seconds: float) -> None:
    run = workflow_scope()
    if run is None:
        import time

        time.sleep(max(0.0, seconds))
        return
    drive_sync(sleep_flow(run.runtime, run, seconds))


async def sleep_async(seconds: float) -> None:
    run = workflow_scope()
    if run is None:
        import asyncio

        await asyncio.sleep(max(0.0, seconds))
        return
    await drive_async(sleep_flow(run.runtime, run, seconds))


def registered_workflow_funcs() -> list[Callable[..., Any]]:
    return [info.func for info in REGISTRY.workflows.values() if not info.internal]


# -- scheduled firings ---------------------------------------------------------------------------


def enqueue_scheduled(
    rt: Engine,
    func: Callable[..., Any],
    workflow_id: str,
    queue_name: str,
    args: tuple[Any, ...],
    schedule_name: Optional[str],
) -> str:
    """Enqueue one firing of a schedule under its slot's workflow ID (idempotent per slot)."""
    info, call_args = resolve_workflow(func, args)
    options = start_options.set(StartOptions(next_id=NextWorkflowID(workflow_id)))
    outer = current_run.set(None)
    try:
        st = prepare(rt, info, call_args, {}, EnqueueSpec(queue_name=queue_name))
    finally:
        current_run.reset(outer)
        start_options.reset(options)
    st.new.schedule_name = schedule_name
    return drive_sync(start_flow(rt, st))


def fire_schedule(rt: Engine, name: str, when: Any, workflow_id: str) -> Optional[str]:
    """Fire a stored schedule for one time slot (its context is stored with it)."""
    row = rt.store.get_schedule(name)
    if row is None:
        return None
    info = REGISTRY.workflows.get(row.workflow_name)
    if info is None or info.wrapper is None:
        raise DBOSException(
            f"schedule {name}: workflow {row.workflow_name!r} is not registered here"
        )
    context = rt.codec.decode(row.context, None) if row.context else None
    wfid = enqueue_scheduled(
        rt,
        info.wrapper,
        workflow_id,
        row.queue_name or INTERNAL_QUEUE_NAME,
        (when, context),
        name,
    )
    from waypoint.queues.scheduler import iso

    rt.store.set_last_fired(name, iso(when))
    return wfid
