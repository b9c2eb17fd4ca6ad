"""The ``DBOS`` class: decorators, lifecycle and workflow operations.

A thin layer: it validates arguments and delegates to ``waypoint.core``. The class is a
process-wide singleton, as in DBOS, because decorators run at import time.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Optional, TypeVar, cast

from waypoint._api.config import DBOSConfig
from waypoint._api.handles import Handle, HandleAsync, WorkflowHandle, WorkflowHandleAsync
from waypoint._api.management import ManagementMixin
from waypoint._api.messaging import MessagingMixin
from waypoint._api.queues import QueueMixin
from waypoint._api.schedules import ScheduleMixin
from waypoint.core import calls
from waypoint.core.config import RuntimeConfig, resolve
from waypoint.core.context import current_run, current_step
from waypoint.core.registry import REGISTRY, StepEntry, WorkflowInfo
from waypoint.core.runtime import Runtime, get_runtime, maybe_runtime, set_runtime
from waypoint.core.types import (
    StepOptions,
    StepSpec,
    StepStatus,
    WorkflowSerializationFormat,
    WorkflowStatus,
)
from waypoint.core.versioning import compute_app_version
from waypoint.error import DBOSException, DBOSInitializationError, DBOSNonExistentWorkflowError
from waypoint.queues.enqueue import step_workflow_name
from waypoint.queues.model import QUEUES

F = TypeVar("F", bound=Callable[..., Any])
R = TypeVar("R")
T = TypeVar("T")

logger = logging.getLogger("waypoint")

DEFAULT_MAX_RECOVERY_ATTEMPTS = 100


class classproperty:
    """A read-only property on the class itself (``DBOS.workflow_id``)."""

    def __init__(self, fget: Callable[[Any], Any]) -> None:
        self.fget = fget
        self.__doc__ = fget.__doc__

    def __get__(self, obj: Any, owner: Any) -> Any:
        return self.fget(owner)


def _step_spec(name: str, options: dict[str, Any], is_async: bool) -> StepSpec:
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
    if spec.timeout_seconds is not None and spec.timeout_seconds <= 0:
        raise ValueError(f"step {name}: timeout_seconds must be positive")
    if not is_async and (spec.preemptible or spec.timeout_seconds is not None):
        raise ValueError(
            f"step {name}: preemptible and timeout_seconds are only supported for async steps"
        )
    return spec


class DBOS(MessagingMixin, QueueMixin, ManagementMixin, ScheduleMixin):
    """Durable workflows: decorate functions, launch, start, wait."""

    _instance: Optional[DBOS] = None
    _initialized: bool = False

    def __new__(cls, *args: Any, **kwargs: Any) -> DBOS:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __init__(
        self,
        *,
        config: DBOSConfig,
        fastapi: Any = None,
        flask: Any = None,
        conductor_url: Optional[str] = None,
        conductor_key: Optional[str] = None,
    ) -> None:
        if self._initialized and maybe_runtime() is not None:
            logger.warning("DBOS was already launched; the new config is ignored")
            return
        self._config: RuntimeConfig = resolve(config)
        self._runtime: Optional[Runtime] = None
        self._initialized = True
        _configure_logging(self._config.log_level)

    # -- lifecycle ------------------------------------------------------------------------------
    @classmethod
    def _get(cls) -> DBOS:
        inst = cls._instance
        if inst is None or not inst._initialized:
            raise DBOSException("DBOS is not initialized: call DBOS(config=...) first")
        return inst

    @classmethod
    def launch(cls) -> None:
        inst = cls._get()
        if inst._runtime is not None:
            logger.warning("DBOS.launch() was called more than once; ignoring")
            return
        config = inst._config
        version = config.application_version or compute_app_version(
            config.name, calls.registered_workflow_funcs()
        )
        rt = Runtime(config, version)
        try:
            rt.start()
        except DBOSException:
            rt.stop()
            raise
        except Exception as exc:
            rt.stop()
            raise DBOSInitializationError(f"launch failed: {exc}") from exc
        inst._runtime = rt
        set_runtime(rt)
        logger.info(
            "Waypoint launched: executor %s, application version %s, %s",
            rt.executor_id,
            rt.app_version,
            rt.store.dialect,
        )

    @classmethod
    def destroy(
        cls, *, destroy_registry: bool = False, workflow_completion_timeout_sec: float = 0
    ) -> None:
        inst = cls._instance
        if inst is not None and inst._initialized and inst._runtime is not None:
            inst._runtime.stop(workflow_completion_timeout_sec)
            inst._runtime = None
        set_runtime(None)
        cls._instance = None
        if inst is not None:
            inst._initialized = False
        if destroy_registry:
            REGISTRY.clear()
            QUEUES.clear()

    @classmethod
    def reset_system_database(
        cls,
        *,
        system_database_url: Optional[str] = None,
        schema: Optional[str] = None,
        truncate: bool = False,
    ) -> None:
        inst = cls._instance
        if inst is not None and inst._runtime is not None:
            raise DBOSException("reset_system_database must be called before DBOS.launch()")
        if system_database_url is None:
            if inst is None or not inst._initialized:
                raise DBOSException(
                    "reset_system_database needs system_database_url or an initialized DBOS"
                )
            system_database_url = inst._config.system_database_url
            schema = schema or inst._config.schema
        from waypoint.storage.admin import reset_database

        reset_database(system_database_url, schema or "dbos", truncate=truncate)

    @classmethod
    def register_instance(cls, inst: object) -> None:
        config_name = getattr(inst, "config_name", None)
        if not isinstance(config_name, str):
            raise DBOSException("register_instance needs an object with a str config_name")
        class_name = getattr(type(inst), "__waypoint_class_name__", type(inst).__qualname__)
        REGISTRY.add_instance(class_name, config_name, inst)

    # -- decorators -----------------------------------------------------------------------------
    @classmethod
    def workflow(
        cls,
        *,
        name: Optional[str] = None,
        max_recovery_attempts: Optional[int] = DEFAULT_MAX_RECOVERY_ATTEMPTS,
        serialization_type: Optional[WorkflowSerializationFormat] = None,
        validate_args: Optional[Callable[..., Any]] = None,
    ) -> Callable[[F], F]:
        if max_recovery_attempts is not None and max_recovery_attempts < 0:
            raise ValueError("max_recovery_attempts must be >= 0 or None")

        def decorator(func: F) -> F:
            is_async = inspect.iscoroutinefunction(func)
            info = WorkflowInfo(
                name=name or func.__qualname__,
                func=func,
                is_async=is_async,
                max_recovery_attempts=max_recovery_attempts,
                serialization=serialization_type,
                validate_args=validate_args,
            )
            if is_async:

                @functools.wraps(func)
                async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                    return await calls.call_workflow_async(info, args, kwargs)

                wrapper: Callable[..., Any] = async_wrapper
            else:

                @functools.wraps(func)
                def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
                    return calls.call_workflow(info, args, kwargs)

                wrapper = sync_wrapper
            info.wrapper = wrapper
            wrapper.__waypoint_workflow__ = info  # type: ignore[attr-defined]
            REGISTRY.add_workflow(info)
            return cast(F, wrapper)

        return decorator

    @classmethod
    def step(
        cls,
        *,
        name: Optional[str] = None,
        retries_allowed: bool = False,
        interval_seconds: float = 1.0,
        max_attempts: int = 3,
        backoff_rate: float = 2.0,
        should_retry: Optional[Callable[[BaseException], Any]] = None,
        preemptible: bool = False,
        timeout_seconds: Optional[float] = None,
    ) -> Callable[[F], F]:
        def decorator(func: F) -> F:
            is_async = inspect.iscoroutinefunction(func)
            spec = _step_spec(
                name or func.__qualname__,
                {
                    "retries_allowed": retries_allowed,
                    "interval_seconds": interval_seconds,
                    "max_attempts": max_attempts,
                    "backoff_rate": backoff_rate,
                    "should_retry": should_retry,
                    "preemptible": preemptible,
                    "timeout_seconds": timeout_seconds,
                },
                is_async,
            )
            entry = StepEntry(spec.name, func, spec)
            REGISTRY.add_step(entry)
            if is_async:

                @functools.wraps(func)
                async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                    return await calls.call_step_async(entry, args, kwargs)

                wrapper: Callable[..., Any] = async_wrapper
            else:

                @functools.wraps(func)
                def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
                    return calls.call_step(entry, args, kwargs)

                wrapper = sync_wrapper
            wrapper.__waypoint_step__ = entry  # type: ignore[attr-defined]
            _register_step_workflow(entry, wrapper, is_async)
            return cast(F, wrapper)

        return decorator

    @classmethod
    def dbos_class(cls, class_name: Optional[str] = None) -> Callable[[type[T]], type[T]]:
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
                if isinstance(info, WorkflowInfo):
                    info.kind = kind  # type: ignore[assignment]
                    info.class_name = name if kind != "static" else None
            return klass

        return decorator

    # -- starting workflows ---------------------------------------------------------------------
    @classmethod
    def start_workflow(cls, func: Callable[..., R], *args: Any, **kwargs: Any) -> WorkflowHandle[R]:
        return Handle(calls.start(func, args, kwargs))

    @classmethod
    async def start_workflow_async(
        cls,
        func: Callable[..., Coroutine[Any, Any, R]] | Callable[..., R],
        *args: Any,
        **kwargs: Any,
    ) -> WorkflowHandleAsync[R]:
        return HandleAsync(await calls.start_async(func, args, kwargs))

    @classmethod
    def run_step(
        cls,
        dbos_step_options: Optional[StepOptions],
        func: Callable[..., R],
        *args: Any,
        **kwargs: Any,
    ) -> R:
        opts: dict[str, Any] = dict(dbos_step_options or {})
        spec = _step_spec(str(opts.get("name") or func.__qualname__), opts, False)
        result: R = calls.run_step(spec, func, args, kwargs)
        return result

    @classmethod
    async def run_step_async(
        cls,
        dbos_step_options: Optional[StepOptions],
        func: Callable[..., Awaitable[R]] | Callable[..., R],
        *args: Any,
        **kwargs: Any,
    ) -> R:
        opts: dict[str, Any] = dict(dbos_step_options or {})
        spec = _step_spec(
            str(opts.get("name") or getattr(func, "__qualname__", "step")),
            opts,
            inspect.iscoroutinefunction(func),
        )
        result: R = await calls.run_step_async(spec, func, args, kwargs)
        return result

    @classmethod
    def sleep(cls, seconds: float) -> None:
        calls.sleep(seconds)

    @classmethod
    async def sleep_async(cls, seconds: float) -> None:
        await calls.sleep_async(seconds)

    # -- results and status ---------------------------------------------------------------------
    @classmethod
    def retrieve_workflow(
        cls, workflow_id: str, existing_workflow: bool = True
    ) -> WorkflowHandle[Any]:
        if existing_workflow and get_runtime().store.get_workflow(workflow_id) is None:
            raise DBOSNonExistentWorkflowError(workflow_id)
        return Handle(workflow_id)

    @classmethod
    async def retrieve_workflow_async(
        cls, workflow_id: str, existing_workflow: bool = True
    ) -> WorkflowHandleAsync[Any]:
        if existing_workflow:
            rt = get_runtime()
            row = await asyncio.get_running_loop().run_in_executor(
                None, rt.store.get_workflow, workflow_id
            )
            if row is None:
                raise DBOSNonExistentWorkflowError(workflow_id)
        return HandleAsync(workflow_id)

    @classmethod
    def get_workflow_status(cls, workflow_id: str) -> Optional[WorkflowStatus]:
        return calls.get_status(workflow_id)

    @classmethod
    async def get_workflow_status_async(cls, workflow_id: str) -> Optional[WorkflowStatus]:
        return await calls.get_status_async(workflow_id)

    @classmethod
    def get_result(cls, workflow_id: str, *, polling_interval_sec: float = 1.0) -> Any:
        return calls.get_result(workflow_id, polling_interval_sec)

    @classmethod
    async def get_result_async(cls, workflow_id: str, *, polling_interval_sec: float = 1.0) -> Any:
        return await calls.get_result_async(workflow_id, polling_interval_sec)

    # -- properties -----------------------------------------------------------------------------
    @classproperty
    def workflow_id(cls) -> Optional[str]:
        run = current_run.get()
        return run.workflow_id if run is not None else None

    @classproperty
    def step_id(cls) -> Optional[int]:
        step = current_step.get()
        return step.step_id if step is not None else None

    @classproperty
    def step_status(cls) -> Optional[StepStatus]:
        step = current_step.get()
        if step is None:
            return None
        return StepStatus(step.step_id, step.current_attempt, step.max_attempts)

    @classproperty
    def executor_id(cls) -> str:
        rt = maybe_runtime()
        if rt is not None:
            return rt.executor_id
        inst = cls._instance
        if inst is not None and inst._initialized:
            return inst._config.executor_id
        return "local"

    @classproperty
    def application_version(cls) -> Optional[str]:
        rt = maybe_runtime()
        if rt is not None:
            return rt.app_version
        inst = cls._instance
        if inst is not None and inst._initialized:
            return inst._config.application_version
        return None

    @classproperty
    def logger(cls) -> logging.Logger:
        return logger

    @classproperty
    def authenticated_user(cls) -> Optional[str]:
        run = current_run.get()
        return run.auth.user if run is not None and run.auth is not None else None

    @classproperty
    def authenticated_roles(cls) -> Optional[list[str]]:
        run = current_run.get()
        return run.auth.roles if run is not None and run.auth is not None else None

    @classproperty
    def assumed_role(cls) -> Optional[str]:
        run = current_run.get()
        return run.auth.assumed_role if run is not None and run.auth is not None else None


def _register_step_workflow(entry: StepEntry, step: Callable[..., Any], is_async: bool) -> None:
    """Let a step be started or enqueued on its own, as a one-step workflow."""
    if is_async:

        async def run_async(*args: Any, **kwargs: Any) -> Any:
            return await step(*args, **kwargs)

        body: Callable[..., Any] = run_async
    else:

        def run(*args: Any, **kwargs: Any) -> Any:
            return step(*args, **kwargs)

        body = run
    DBOS.workflow(name=step_workflow_name(entry.name))(body)
    REGISTRY.workflows[step_workflow_name(entry.name)].internal = True


def _configure_logging(level: str) -> None:
    logger.setLevel(level.upper())
    if not logger.handlers and not logging.getLogger().handlers:
        # Nobody configured logging: give our records somewhere to go, once.
        handler = logging.StreamHandler()
        handler.setFormatter(
            logging.Formatter("%(asctime)s [%(levelname)s] (waypoint) %(message)s")
        )
        logger.addHandler(handler)


class DBOSConfiguredInstance:
    """Base for classes whose instance methods are workflows: recovery finds the instance
    again by ``"<ClassName>/<config_name>"``."""

    def __init__(self, config_name: str) -> None:
        self.config_name = config_name
        DBOS.register_instance(self)
