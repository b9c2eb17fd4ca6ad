"""The engine's entry points behind the decorators and ``DBOS``'s workflow methods, each
written once as a flow and driven sync or async by the caller."""

from __future__ import annotations

import asyncio
import contextvars
import inspect
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Optional

from waypoint.core.context import current_run, current_step, start_options
from waypoint.core.effects import Flow, drive_async, drive_sync
from waypoint.core.engine import Engine
from waypoint.core.execution import child_call_flow, start_flow
from waypoint.core.prepare import prepare
from waypoint.core.registrations import REGISTRY, StepEntry, WorkflowInfo, target_of
from waypoint.core.run import WorkflowRun
from waypoint.core.runtime import get_runtime
from waypoint.core.steps import recorded_flow, step_flow
from waypoint.core.transactions import in_transaction
from waypoint.core.types import StepSpec
from waypoint.error import DBOSException

# -- where are we? ------------------------------------------------------------------------------


def workflow_scope() -> Optional[WorkflowRun]:
    """The run whose body is executing here, unless we are inside one of its steps."""
    if current_step.get() is not None:
        return None
    return current_run.get()


def checkpointed(
    eng: Engine,
    name: str,
    body: Flow[Any],
    child_workflow_id: Optional[str] = None,
    *,
    legacy_unrecorded: bool = False,
) -> Flow[Any]:
    """Run ``body``; from a workflow body, as a step named ``name`` whose result replays
    (see ``recorded_flow`` for the arguments)."""
    if in_transaction() is not None:
        raise DBOSException(f"Invalid call to `{name}` inside a transaction")
    run = workflow_scope()
    if run is None:
        return (yield from body)
    return (
        yield from recorded_flow(
            eng, run, name, body, child_workflow_id, legacy_unrecorded=legacy_unrecorded
        )
    )


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
    return drive_sync(child_call_flow(rt, prepare(rt, info, args, kwargs)))


async def call_workflow_async(
    info: WorkflowInfo, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    if current_step.get() is not None:
        return await info.func(*args, **kwargs)
    rt = get_runtime()
    return await drive_async(child_call_flow(rt, prepare(rt, info, args, kwargs)))


def _reject_enqueue_options() -> None:
    """A workflow started (not enqueued) has no queue for enqueue options to apply to."""
    opts = start_options.get()
    if not opts.enqueue_options_set:
        return
    named = {
        "deduplication_id": opts.deduplication_id,
        "priority": opts.priority,
        "queue_partition_key": opts.queue_partition_key,
        "delay_seconds": opts.delay_seconds,
    }
    set_options = [name for name, value in named.items() if value is not None]
    if set_options:
        raise DBOSException(
            f"Enqueue option(s) {', '.join(set_options)} set on a workflow that is not being "
            "enqueued. These options are only supported when enqueueing a workflow onto a queue."
        )
    if opts.duplication_policy == "return-existing":
        raise DBOSException(
            "duplication_policy 'return-existing' requires a queue. It is only supported when "
            "enqueueing a workflow onto a queue."
        )


def start_workflow_flow(
    func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Flow[str]:
    """Start a workflow in the background; returns its ID."""
    rt = get_runtime()
    _reject_enqueue_options()
    info, args = resolve_workflow(target_of(func), args)
    return (yield from start_flow(rt, prepare(rt, info, args, kwargs)))


# -- steps ---------------------------------------------------------------------------------------


def _step_scope() -> tuple[Optional[Engine], Optional[WorkflowRun]]:
    run = workflow_scope()
    if run is None:
        return None, None
    return run.runtime, run


def _check_sync_step(run: Optional[WorkflowRun], spec: StepSpec, func: Callable[..., Any]) -> None:
    """A sync step cannot await an async ``should_retry`` (DBOS refuses it as it runs)."""
    if (
        run is not None
        and spec.should_retry is not None
        and inspect.iscoroutinefunction(spec.should_retry)
        and not inspect.iscoroutinefunction(func)
    ):
        raise DBOSException(
            f"Step {spec.name} is sync but should_retry is async. Use an async step to pair "
            "with an async validator."
        )


def call_step(entry: StepEntry, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if current_step.get() is not None:
        return entry.func(*args, **kwargs)  # a step inside a step is a plain call
    rt, run = _step_scope()
    _check_sync_step(run, entry.spec, entry.func)
    return drive_sync(step_flow(rt, run, entry.spec, entry.func, args, kwargs))


async def call_step_async(entry: StepEntry, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if current_step.get() is not None:
        return await entry.func(*args, **kwargs)
    rt, run = _step_scope()
    return await drive_async(step_flow(rt, run, entry.spec, entry.func, args, kwargs))


def run_step(
    spec: StepSpec, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """``DBOS.run_step``: a coroutine function is run to completion (as an async step, its
    timeout applying, inside a workflow), never returned as a coroutine."""
    rt, run = _step_scope()
    if run is None:
        return _complete(func(*args, **kwargs))
    if inspect.iscoroutinefunction(func):
        return _complete(drive_async(step_flow(rt, run, spec, func, args, kwargs)))
    _check_sync_step(run, spec, func)
    return drive_sync(step_flow(rt, run, spec, func, args, kwargs))


def _complete(result: Any) -> Any:
    """The value of ``result``, run to completion if it is awaitable: on this thread when no
    event loop runs here, else on a thread of its own (with this context)."""
    if not inspect.isawaitable(result):
        return result

    async def wait() -> Any:
        return await result

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(wait())
    ctx = contextvars.copy_context()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="waypoint-run-step") as pool:
        return pool.submit(ctx.run, asyncio.run, wait()).result()


async def run_step_async(
    spec: StepSpec, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    rt, run = _step_scope()
    if run is None:
        result = func(*args, **kwargs)
        return await result if inspect.isawaitable(result) else result
    return await drive_async(step_flow(rt, run, spec, func, args, kwargs))


def registered_workflow_funcs() -> list[Callable[..., Any]]:
    return [info.func for info in REGISTRY.workflows.values() if not info.internal]
