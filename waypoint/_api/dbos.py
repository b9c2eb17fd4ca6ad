"""The ``DBOS`` class: decorators, lifecycle, starting workflows and the operations of the
launched runtime.

A thin layer: the operations it shares with ``DBOSClient`` come from ``shared``, the ones only
a workflow body makes from ``ops.body`` and ``ops.messages``, and the engine does the rest.
The class is a process-wide singleton, as in DBOS, because decorators run at import time.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Optional, ParamSpec, TypeVar, overload

from waypoint._api import auth as _auth
from waypoint._api import decorators, telemetry, transactions, unsupported
from waypoint._api.config import DBOSConfig
from waypoint._api.handles import Handle, HandleAsync, WorkflowHandle, WorkflowHandleAsync
from waypoint._api.launch import launch, running_loop
from waypoint._api.ops import body, messages, queues
from waypoint._api.ops.base import RUNTIME, Ops
from waypoint._api.queue import Queue
from waypoint._api.shared import SharedOperations
from waypoint._api.shutdown import install_sigterm
from waypoint._api.surface import handle, handle_async, refuse_in_event_loop, twins
from waypoint.core import calls
from waypoint.core.context import current_run, current_step
from waypoint.core.effects import drive_async, drive_sync, release_io_pool
from waypoint.core.registrations import REGISTRY
from waypoint.core.runtime import Runtime, maybe_runtime, set_runtime
from waypoint.core.settings import RuntimeConfig, resolve, warn_no_effect
from waypoint.core.storage_errors import translated
from waypoint.core.transactions import in_transaction
from waypoint.core.types import StepOptions, StepStatus, WorkflowSerializationFormat
from waypoint.core.versioning import compute_app_version
from waypoint.error import DBOSException, DBOSInitializationError
from waypoint.queues.enqueue import enqueue_flow
from waypoint.queues.model import QUEUES
from waypoint.storage.registry import reset_database

F = TypeVar("F", bound=Callable[..., Any])
P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

logger = logging.getLogger("waypoint")


class classproperty:
    """A read-only property on the class itself (``DBOS.workflow_id``)."""

    def __init__(self, fget: Callable[[Any], Any]) -> None:
        self.fget = fget
        self.__doc__ = fget.__doc__

    def __get__(self, obj: Any, owner: Any) -> Any:
        return self.fget(owner)


class DBOS(SharedOperations):
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
        try:
            self._config: RuntimeConfig = resolve(config)
        except BaseException:
            if not self._initialized:  # leave no half-made instance behind a refused config
                DBOS._instance = None
            raise
        warn_no_effect({"conductor_url": conductor_url, "conductor_key": conductor_key}, "DBOS()")
        telemetry.configure(self._config)
        self._runtime: Optional[Runtime] = None
        self._initialized = True
        _configure_logging(self._config.log_level)
        if fastapi is not None or flask is not None:
            from waypoint._api.integrations import install

            install(fastapi=fastapi, flask=flask, start=DBOS._launch_once, stop=DBOS._shut_down)

    @classmethod
    def _ops(cls) -> Ops:
        return RUNTIME

    # -- lifecycle ------------------------------------------------------------------------------
    @classmethod
    def _get(cls) -> DBOS:
        inst = cls._instance
        if inst is None or not inst._initialized:
            raise DBOSException("DBOS is not initialized: call DBOS(config=...) first")
        return inst

    @classmethod
    def launch(cls) -> None:
        """Connect to the system database (migrating it unless ``run_migrations`` is False),
        start the queue dispatcher, scheduler and admin server, and recover this executor's
        unfinished workflows. Call once, after every workflow is registered."""
        inst = cls._get()
        if inst._runtime is not None:
            logger.warning("DBOS.launch() was called more than once; ignoring")
            return
        config = inst._config
        version = config.application_version or compute_app_version(
            config.name, calls.registered_workflow_funcs()
        )
        try:
            transactions.open_application_database(config)
            rt = launch(config, version)
        except BaseException as exc:
            transactions.close_application_database()
            if isinstance(exc, DBOSException) or not isinstance(exc, Exception):
                raise
            raise DBOSInitializationError(f"launch failed: {exc}") from exc
        inst._runtime = rt
        if config.shutdown_grace_sec is not None:
            install_sigterm(
                config.shutdown_grace_sec,
                lambda grace: cls.destroy(workflow_completion_timeout_sec=grace),
            )
        logger.info(
            "Waypoint launched: executor %s, application version %s, %s",
            rt.executor_id,
            rt.app_version,
            rt.store.dialect,
        )

    @classmethod
    def _launch_once(cls) -> None:
        """Launch unless launched (FastAPI's startup, after the user's lifespan began); the
        server's loop becomes the main loop either way."""
        inst = cls._get()
        if inst._runtime is None:
            cls.launch()
        if inst._runtime is not None:
            inst._runtime.main_loop = running_loop()

    @classmethod
    def _shut_down(cls) -> None:
        """A web server's shutdown (FastAPI's lifespan): graceful with ``shutdown_grace_sec``,
        as on SIGTERM (a server's own signal handler may run instead of Waypoint's)."""
        inst = cls._instance
        grace = inst._config.shutdown_grace_sec if inst is not None and inst._initialized else None
        cls.destroy(workflow_completion_timeout_sec=grace or 0)

    @classmethod
    def destroy(
        cls, *, destroy_registry: bool = False, workflow_completion_timeout_sec: float = 0
    ) -> None:
        """Stop the runtime, close the database and forget the configuration;
        ``destroy_registry`` also forgets registered workflows and queues (for tests).

        Without a timeout, workflows still running stay PENDING on this executor (recovered
        at its next launch). With ``workflow_completion_timeout_sec`` it is a graceful
        shutdown: nothing new is dequeued or fired, claimed work not yet started goes back to
        its queue, running workflows get that long to finish, and what is left is handed back
        to a peer of the same version (fenced: nothing more from this process is recorded)."""
        inst = cls._instance
        if inst is not None and inst._initialized and inst._runtime is not None:
            inst._runtime.stop(workflow_completion_timeout_sec)
            inst._runtime = None
        transactions.close_application_database()
        set_runtime(None)
        cls._instance = None
        if inst is not None:
            inst._initialized = False
        QUEUES.listen = None  # a choice of the DBOS object destroyed, as in DBOS
        release_io_pool()
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
        """Before launch: drop the system database (``truncate``: empty its tables instead).
        Every workflow is lost; meant for tests and development."""
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
        with translated():
            reset_database(system_database_url, schema or "dbos", truncate=truncate)

    @classmethod
    def register_instance(cls, inst: object) -> None:
        """Register an object whose methods are workflows, so recovery finds it again by
        its class and ``config_name`` (``DBOSConfiguredInstance`` does this itself)."""
        decorators.register_instance(inst)

    @classmethod
    def listen_queues(cls, queues: list[Queue | str]) -> None:
        """Before launch: dequeue only from these queues (the internal queue is implied)."""
        if maybe_runtime() is not None:
            raise DBOSException("listen_queues called after DBOS is launched")
        if QUEUES.listen is not None:
            raise DBOSException("listen_queues called more than once")
        names = {q.name if isinstance(q, Queue) else q for q in queues}
        if not all(isinstance(n, str) and n for n in names):
            raise DBOSException("listen_queues takes Queue objects or queue names")
        QUEUES.listen = names

    # -- decorators -----------------------------------------------------------------------------
    @classmethod
    def workflow(
        cls,
        *,
        name: Optional[str] = None,
        max_recovery_attempts: Optional[int] = decorators.DEFAULT_MAX_RECOVERY_ATTEMPTS,
        serialization_type: Optional[WorkflowSerializationFormat] = None,
        validate_args: Optional[Callable[..., Any]] = None,
    ) -> Callable[[F], F]:
        """Decorate a function (sync or ``async def``) as a durable workflow.

        ``name`` defaults to the qualified name; ``max_recovery_attempts`` bounds how often
        a workflow that keeps crashing its process is recovered; ``serialization_type`` picks
        how its inputs and outputs are stored; ``validate_args`` checks arguments at start."""
        return decorators.workflow(name, max_recovery_attempts, serialization_type, validate_args)

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
        """Decorate a function as a step: its result is checkpointed, so a recovered workflow
        gets it back instead of running it again. With ``retries_allowed`` a failing call is
        retried up to ``max_attempts`` times, ``interval_seconds`` apart, growing by
        ``backoff_rate`` (``should_retry`` decides per error)."""
        options = {
            "retries_allowed": retries_allowed,
            "interval_seconds": interval_seconds,
            "max_attempts": max_attempts,
            "backoff_rate": backoff_rate,
            "should_retry": should_retry,
            "preemptible": preemptible,
            "timeout_seconds": timeout_seconds,
        }
        return decorators.step(name, options)

    @classmethod
    def transaction(
        cls, isolation_level: str = "SERIALIZABLE", *, name: Optional[str] = None
    ) -> Callable[[F], F]:
        """Run the function in one transaction on the application database, its output
        recorded in the same commit (``DBOS.sql_session`` is the transaction's session)."""
        return transactions.transaction(name, isolation_level)

    @classmethod
    def dbos_class(cls, class_name: Optional[str] = None) -> Callable[[type[T]], type[T]]:
        """Decorate a class whose methods are workflows or steps; ``class_name`` (default the
        class's name) is what recovery and ``DBOSClient`` use to find them."""
        return decorators.dbos_class(class_name)

    @classmethod
    def required_roles(cls, roles: list[str]) -> Callable[[F], F]:
        """Calls need one of ``roles`` (else ``DBOSNotAuthorizedError``, HTTP 403)."""
        return _auth.required_roles(roles)

    @classmethod
    def default_required_roles(cls, roles: list[str]) -> Callable[[type[T]], type[T]]:
        """The roles the class's workflows and steps require unless they name their own."""
        return _auth.default_required_roles(roles)

    @classmethod
    def scheduled(cls, cron: str) -> Callable[[F], F]:
        """Fire a workflow ``(scheduled_time, actual_time)`` on a cron schedule."""
        return decorators.scheduled(cron)

    @classmethod
    def kafka_consumer(
        cls,
        config: dict[str, Any],
        topics: list[str],
        in_order: bool = False,
        *,
        ordering: Optional[str] = None,
        batch_size: int = 250,
        queue_name: Optional[str] = None,
    ) -> Callable[[F], F]:
        """Not supported yet: raises DBOSException where it decorates (see ``unsupported``)."""
        unsupported.kafka_consumer()

    @classmethod
    def alert_handler(cls, func: Callable[..., Any]) -> Callable[..., Any]:
        """Not supported (no Conductor): raises DBOSException where it decorates."""
        unsupported.alert_handler(func)

    # -- starting workflows and steps -----------------------------------------------------------
    @classmethod
    def start_workflow(
        cls, func: Callable[P, R], *args: P.args, **kwargs: P.kwargs
    ) -> WorkflowHandle[R]:
        """Start workflow ``func(*args, **kwargs)`` in the background; returns its handle.

        The workflow ID is the one set by ``SetWorkflowID``, else a new UUID. Starting an ID
        that already exists returns a handle to that workflow instead of running it again."""
        return Handle(
            RUNTIME, drive_sync(calls.start_workflow_flow(func, args, kwargs)), written=True
        )

    @overload
    @classmethod
    async def start_workflow_async(
        cls, func: Callable[P, Coroutine[Any, Any, R]], *args: P.args, **kwargs: P.kwargs
    ) -> WorkflowHandleAsync[R]: ...
    @overload
    @classmethod
    async def start_workflow_async(
        cls, func: Callable[P, R], *args: P.args, **kwargs: P.kwargs
    ) -> WorkflowHandleAsync[R]: ...
    @classmethod
    async def start_workflow_async(
        cls, func: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> WorkflowHandleAsync[Any]:
        """Async twin of ``start_workflow``: an ``async def`` workflow runs on this event loop."""
        wfid = await drive_async(calls.start_workflow_flow(func, args, kwargs))
        return HandleAsync(RUNTIME, wfid, written=True)

    @classmethod
    def enqueue_workflow(
        cls, queue_name: str, func: Callable[P, R], *args: P.args, **kwargs: P.kwargs
    ) -> WorkflowHandle[R]:
        """Enqueue ``func(*args, **kwargs)`` on the queue named ``queue_name`` (declared in code
        or stored in the database), with the options of any ``SetEnqueueOptions`` block."""
        flow = enqueue_flow(RUNTIME.engine(), queue_name, func, args, kwargs)
        return Handle(RUNTIME, drive_sync(flow), written=True)

    @overload
    @classmethod
    async def enqueue_workflow_async(
        cls,
        queue_name: str,
        func: Callable[P, Coroutine[Any, Any, R]],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> WorkflowHandleAsync[R]: ...
    @overload
    @classmethod
    async def enqueue_workflow_async(
        cls, queue_name: str, func: Callable[P, R], *args: P.args, **kwargs: P.kwargs
    ) -> WorkflowHandleAsync[R]: ...
    @classmethod
    async def enqueue_workflow_async(
        cls, queue_name: str, func: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> WorkflowHandleAsync[Any]:
        """Async twin of ``enqueue_workflow``."""
        flow = enqueue_flow(RUNTIME.engine(), queue_name, func, args, kwargs)
        return HandleAsync(RUNTIME, await drive_async(flow), written=True)

    enqueue_workflow_with_options, enqueue_workflow_with_options_async = twins(
        queues.enqueue_with_options, handle, handle_async
    )

    @classmethod
    def run_step(
        cls,
        dbos_step_options: Optional[StepOptions],
        func: Callable[P, R],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> R:
        """Run ``func(*args, **kwargs)`` as a step of the current workflow, with the options a
        ``@DBOS.step`` decorator takes (``name``, retries, timeout); outside a workflow it is a
        plain call. Its result is checkpointed: a recovered workflow gets it back instead of
        running it again."""
        refuse_in_event_loop("run_step")
        opts: dict[str, Any] = dict(dbos_step_options or {})
        name = str(opts.get("name") or func.__qualname__)
        spec = decorators.step_spec(name, opts, inspect.iscoroutinefunction(func))
        result: R = calls.run_step(spec, func, args, kwargs)
        return result

    @overload
    @classmethod
    async def run_step_async(
        cls,
        dbos_step_options: Optional[StepOptions],
        func: Callable[P, Awaitable[R]],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> R: ...
    @overload
    @classmethod
    async def run_step_async(
        cls,
        dbos_step_options: Optional[StepOptions],
        func: Callable[P, R],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> R: ...
    @classmethod
    async def run_step_async(
        cls,
        dbos_step_options: Optional[StepOptions],
        func: Callable[..., Any],
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        """Async twin of ``run_step``: a coroutine function is awaited on this event loop."""
        opts: dict[str, Any] = dict(dbos_step_options or {})
        name = str(opts.get("name") or getattr(func, "__qualname__", "step"))
        spec = decorators.step_spec(name, opts, inspect.iscoroutinefunction(func))
        return await calls.run_step_async(spec, func, args, kwargs)

    # -- what a workflow body does: its messages, events and streams --------------------------
    recv, recv_async = twins(messages.recv)
    set_event, set_event_async = twins(messages.set_event)
    write_stream, write_stream_async = twins(messages.write_stream)
    close_stream, close_stream_async = twins(messages.close_stream)

    # -- ...durable time, checkpointed waits and patches ----------------------------------------
    sleep, sleep_async = twins(body.sleep)
    asyncio_wait = staticmethod(body.asyncio_wait)
    patch, patch_async = twins(body.patch)
    deprecate_patch, deprecate_patch_async = twins(body.deprecate_patch)

    # -- properties -----------------------------------------------------------------------------
    @classproperty
    def workflow_id(cls) -> Optional[str]:
        """The ID of the workflow running here (None outside a workflow)."""
        run = current_run.get()
        return run.workflow_id if run is not None else None

    @classproperty
    def step_id(cls) -> Optional[int]:
        """The position of the step running here (None outside a step)."""
        step = current_step.get()
        return step.step_id if step is not None else None

    @classproperty
    def sql_session(cls) -> Any:
        """The SQLAlchemy ``Session`` of the running ``@DBOS.transaction``."""
        return transactions.sql_session()

    @classproperty
    def step_status(cls) -> Optional[StepStatus]:
        """The step running here: its ID, current attempt and maximum attempts."""
        step = current_step.get()
        if step is None or in_transaction() is not None:
            return None
        return StepStatus(step.step_id, step.current_attempt, step.max_attempts)

    @classmethod
    def _current(cls, runtime_attr: str, config_attr: str) -> Any:
        """A setting of the launched runtime, else of the initialized ``DBOS``, else None."""
        rt = maybe_runtime()
        if rt is not None:
            return getattr(rt, runtime_attr)
        inst = cls._instance
        if inst is not None and inst._initialized:
            return getattr(inst._config, config_attr)
        return None

    @classproperty
    def executor_id(cls) -> str:
        """This process's executor ID (``DBOS__VMID``, config ``executor_id``, or "local")."""
        return str(cls._current("executor_id", "executor_id") or "local")

    @classproperty
    def application_version(cls) -> Optional[str]:
        """The application version this process runs (None before launch unless configured)."""
        version: Optional[str] = cls._current("app_version", "application_version")
        return version

    @classproperty
    def logger(cls) -> logging.Logger:
        """The ``waypoint`` logger."""
        return logger

    @classproperty
    def span(cls) -> Any:
        """The active OpenTelemetry span (the running workflow's or step's, or one the
        application opened inside it); None without tracing."""
        return telemetry.current_span()

    @classproperty
    def tracer(cls) -> telemetry.DBOSTracer:
        """The tracer that opens DBOS-shaped spans (``start_span``/``end_span``)."""
        return telemetry.dbos_tracer

    @classproperty
    def authenticated_user(cls) -> Optional[str]:
        """The authenticated user in scope (``set_authentication``, ``DBOSContextSetAuth``,
        or the one recorded with the running workflow)."""
        auth = _auth.current()
        return auth.user if auth is not None else None

    @classproperty
    def authenticated_roles(cls) -> Optional[list[str]]:
        """The roles granted to the authenticated user in scope."""
        auth = _auth.current()
        return auth.roles if auth is not None else None

    @classproperty
    def assumed_role(cls) -> Optional[str]:
        """The role the running function assumed to pass its ``required_roles`` check."""
        auth = _auth.current()
        return auth.assumed_role if auth is not None else None

    @classmethod
    def set_authentication(
        cls, authenticated_user: Optional[str], authenticated_roles: Optional[list[str]]
    ) -> None:
        """Set the authenticated user and roles of the code that runs from here on."""
        _auth.set_authentication(authenticated_user, authenticated_roles)


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
