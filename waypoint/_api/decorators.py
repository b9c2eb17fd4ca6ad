"""What ``@DBOS.workflow``, ``@DBOS.step``, ``@DBOS.dbos_class`` and ``@DBOS.scheduled`` do:
register the function under its recorded name and wrap it so each call goes through the
engine. Decorators run at import time, before any ``DBOS`` object exists, so registrations
are process-wide (``core.registrations``)."""

from __future__ import annotations

import contextlib
import functools
import inspect
import math
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Optional, TypeVar, cast

from waypoint._api.validation import make_pydantic_args_validator, pydantic_args_validator
from waypoint.core import calls
from waypoint.core.registrations import (
    REGISTRY,
    StepEntry,
    WorkflowInfo,
    step_workflow_name,
    target_of,
)
from waypoint.core.roles import authorized, rule_for
from waypoint.core.runtime import maybe_runtime
from waypoint.core.types import StepSpec, WorkflowSerializationFormat
from waypoint.error import (
    DBOSConflictingRegistrationError,
    DBOSException,
    DBOSWorkflowFunctionNotFoundError,
)
from waypoint.scheduling.cron import CronError, parse_cron
from waypoint.scheduling.definitions import registered
from waypoint.scheduling.scheduler import Scheduler

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

DEFAULT_MAX_RECOVERY_ATTEMPTS = 100


def step_spec(name: str, options: dict[str, Any], is_async: bool) -> StepSpec:
    spec = StepSpec(
        name=name,
        retries_allowed=bool(options.get("retries_allowed", False)),
        interval_seconds=float(options.get("interval_seconds", 1.0)),
        max_attempts=int(options.get("max_attempts", 3)),
        backoff_rate=float(options.get("backoff_rate", 2.0)),
        should_retry=options.get("should_retry"),
        preemptible=bool(options.get("preemptible", False)),
        timeout_seconds=options.get("timeout_seconds"),
    )
    if spec.max_attempts < 1:
        raise ValueError(f"step {name}: max_attempts must be at least 1")
    if spec.interval_seconds < 0 or spec.backoff_rate <= 0:
        raise ValueError(f"step {name}: interval_seconds must be >= 0 and backoff_rate > 0")
    # DBOS's checks and wording (DBOSException, as DBOS raises).
    if spec.preemptible and not is_async:
        raise DBOSException(
            f"Step {name} is sync but preemptible=True. Preemption is only supported for async "
            "steps."
        )
    timeout = spec.timeout_seconds
    if timeout is not None:
        if not is_async:
            raise DBOSException(
                f"Step {name} is sync but timeout_seconds is set. Step timeouts are only "
                "supported for async steps."
            )
        if not (timeout > 0 and math.isfinite(timeout)):
            raise DBOSException(
                f"Step {name} has timeout_seconds={timeout}. Step timeouts must be positive "
                "and finite."
            )
    return spec


def _unwrap_static(decorated: Any) -> tuple[bool, Callable[..., Any]]:
    """A decorator over ``@staticmethod`` wraps the function and returns a staticmethod."""
    if isinstance(decorated, staticmethod):
        return True, decorated.__func__
    return False, decorated


def workflow(
    name: Optional[str],
    max_recovery_attempts: Optional[int],
    serialization_type: Optional[WorkflowSerializationFormat],
    validate_args: Optional[Callable[..., Any]],
) -> Callable[[F], F]:
    if max_recovery_attempts is not None and max_recovery_attempts < 0:
        raise ValueError("max_recovery_attempts must be >= 0 or None")

    def decorator(decorated: F) -> F:
        # ``@DBOS.workflow()`` over ``@staticmethod``: wrap the function, stay a staticmethod.
        static, func = _unwrap_static(decorated)
        is_async = inspect.iscoroutinefunction(func)
        info = WorkflowInfo(
            name=name or func.__qualname__,
            func=func,
            is_async=is_async,
            max_recovery_attempts=max_recovery_attempts,
            serialization=serialization_type,
            validate_args=make_pydantic_args_validator(func)
            if validate_args is pydantic_args_validator
            else validate_args,
            roles=rule_for(func),
            kind="static" if static else "function",
        )
        if is_async:

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                with authorized(info.roles, info.name):
                    return await calls.call_workflow_async(info, args, kwargs)

            wrapper: Callable[..., Any] = async_wrapper
        else:

            @functools.wraps(func)
            def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
                with authorized(info.roles, info.name):
                    return calls.call_workflow(info, args, kwargs)

            wrapper = sync_wrapper
        info.wrapper = wrapper
        wrapper.__waypoint_workflow__ = info  # type: ignore[attr-defined]
        wrapper.dbos_function_name = info.name  # type: ignore[attr-defined]  # DBOS's name for it
        REGISTRY.add_workflow(info)
        return cast(F, staticmethod(wrapper) if static else wrapper)

    return decorator


def step(name: Optional[str], options: dict[str, Any]) -> Callable[[F], F]:
    def decorator(decorated: F) -> F:
        static, func = _unwrap_static(decorated)
        is_async = inspect.iscoroutinefunction(func)
        spec = step_spec(name or func.__qualname__, options, is_async)
        if hasattr(func, "__waypoint_transaction__"):  # one function, one kind, as in DBOS
            raise DBOSConflictingRegistrationError(f"<temp>.{spec.name}")
        entry = StepEntry(spec.name, func, spec, rule_for(func))
        REGISTRY.add_step(entry)
        if is_async:

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                with _step_roles(entry):
                    return await calls.call_step_async(entry, args, kwargs)

            wrapper: Callable[..., Any] = async_wrapper
        else:

            @functools.wraps(func)
            def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
                with _step_roles(entry):
                    return calls.call_step(entry, args, kwargs)

            wrapper = sync_wrapper
        wrapper.__waypoint_step__ = entry  # type: ignore[attr-defined]
        wrapper.dbos_function_name = entry.name  # type: ignore[attr-defined]
        _register_step_workflow(entry, wrapper, is_async)
        return cast(F, staticmethod(wrapper) if static else wrapper)

    return decorator


def _step_roles(entry: StepEntry) -> AbstractContextManager[None]:
    """A step checks its roles when a workflow calls it (elsewhere it is a plain call)."""
    if calls.workflow_scope() is None:
        return contextlib.nullcontext()
    return authorized(entry.roles, entry.name)


def _register_step_workflow(entry: StepEntry, step_fn: Callable[..., Any], is_async: bool) -> None:
    """Let a step be started or enqueued on its own, as a one-step workflow."""
    if is_async:

        async def run_async(*args: Any, **kwargs: Any) -> Any:
            return await step_fn(*args, **kwargs)

        body: Callable[..., Any] = run_async
    else:

        def run(*args: Any, **kwargs: Any) -> Any:
            return step_fn(*args, **kwargs)

        body = run
    name = step_workflow_name(entry.name)
    workflow(name, DEFAULT_MAX_RECOVERY_ATTEMPTS, None, None)(body)
    REGISTRY.workflows[name].internal = True
    REGISTRY.workflows[name].roles = entry.roles


def dbos_class(class_name: Optional[str]) -> Callable[[type[T]], type[T]]:
    def decorator(klass: type[T]) -> type[T]:
        name = class_name or klass.__qualname__
        REGISTRY.add_class(name, klass)
        klass.__waypoint_class_name__ = name  # type: ignore[attr-defined]
        for value in klass.__dict__.values():
            if isinstance(value, classmethod):
                fn, kind = value.__func__, "class"
            elif isinstance(value, staticmethod):
                fn, kind = value.__func__, "static"
            else:
                fn, kind = value, "instance"
            info = getattr(fn, "__waypoint_workflow__", None)
            if isinstance(info, WorkflowInfo) and info.kind != "static":
                info.kind = kind  # type: ignore[assignment]
                info.class_name = name if kind != "static" else None
        return klass

    return decorator


def scheduled(cron: str) -> Callable[[F], F]:
    """Fire a workflow (or a step, as a one-step workflow) on ``cron``; decorated after launch,
    it starts firing at once."""

    def decorator(func: F) -> F:
        name = getattr(func, "dbos_function_name", None)
        if not isinstance(name, str):
            fname = getattr(func, "__name__", repr(func))
            raise DBOSWorkflowFunctionNotFoundError(
                "<NONE>", f"{fname} is not a registered workflow function"
            )
        if not parse_cron(cron):
            raise CronError(f"Invalid crontab {cron!r} for scheduled function {name}")
        target = target_of(func)
        registered(target)  # an instance method cannot be scheduled
        REGISTRY.scheduled.append((name, cron, target))
        rt = maybe_runtime()
        scheduler = rt.service(Scheduler.name) if rt is not None else None
        if isinstance(scheduler, Scheduler):
            scheduler.add_decorated(name, cron, target)
        return func

    return decorator


def register_instance(inst: object) -> None:
    config_name = getattr(inst, "config_name", None)
    if not isinstance(config_name, str):
        raise DBOSException("register_instance needs an object with a str config_name")
    class_name = getattr(type(inst), "__waypoint_class_name__", type(inst).__qualname__)
    REGISTRY.add_instance(class_name, config_name, inst)
