"""``Debouncer`` and ``DebouncerClient``: many calls within a quiet period become one
workflow run, with the last call's arguments (see ``waypoint.queues.debounce``)."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Generic, Optional, ParamSpec, TypeVar, overload

from waypoint._api.handles import Handle, HandleAsync, WorkflowHandle, WorkflowHandleAsync
from waypoint._api.ops.base import RUNTIME, Ops
from waypoint._api.queue import Queue
from waypoint.core.effects import Flow, drive_async, drive_sync
from waypoint.core.registrations import WorkflowInfo
from waypoint.core.types import INTERNAL_QUEUE_NAME
from waypoint.error import DBOSException
from waypoint.queues.debounce import Bounce, debounce_by_name, debounce_registered
from waypoint.queues.enqueue import EnqueueOptions

if TYPE_CHECKING:
    from waypoint._api.client import DBOSClient

P = ParamSpec("P")
R = TypeVar("R")


def _queue_name(queue: Optional[Queue | str]) -> str:
    if queue is None:
        return INTERNAL_QUEUE_NAME
    return queue.name if isinstance(queue, Queue) else queue


class _Debounce:
    """Shared by both: drive the debounce flow sync or async and hand back a handle."""

    def __init__(
        self, debounce_timeout_sec: Optional[float], application_name: Optional[str], ops: Ops
    ) -> None:
        if debounce_timeout_sec is not None and debounce_timeout_sec <= 0:
            raise DBOSException("debounce_timeout_sec must be positive")
        self.debounce_timeout_sec = debounce_timeout_sec
        self.application_name = application_name
        self._handle_ops = ops

    def _flow(
        self, key: str, period: float, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Flow[str]:
        raise NotImplementedError

    def _debounce(
        self, debounce_key: str, debounce_period_sec: float, *args: Any, **kwargs: Any
    ) -> WorkflowHandle[Any]:
        """Drive the debounce flow on this thread; the handle of the run it joined."""
        wfid = drive_sync(self._flow(debounce_key, debounce_period_sec, args, kwargs))
        return Handle(self._handle_ops, wfid)

    async def _debounce_async(
        self, debounce_key: str, debounce_period_sec: float, *args: Any, **kwargs: Any
    ) -> WorkflowHandleAsync[Any]:
        """Async twin of ``debounce``."""
        wfid = await drive_async(self._flow(debounce_key, debounce_period_sec, args, kwargs))
        return HandleAsync(self._handle_ops, wfid)


class Debouncer(_Debounce, Generic[P, R]):
    """Debounce a workflow of this application (``Debouncer.create(workflow)``); typed by the
    workflow's parameters and result, as ``DBOS.start_workflow`` is."""

    def __init__(
        self,
        workflow_name: str,
        *,
        debounce_timeout_sec: Optional[float] = None,
        queue: Optional[Queue | str] = None,
        application_name: Optional[str] = None,
    ) -> None:
        super().__init__(debounce_timeout_sec, application_name, RUNTIME)
        self.workflow_name = workflow_name
        self.queue_name = _queue_name(queue)
        self._func: Optional[Callable[..., Any]] = None

    @overload
    @classmethod
    def create(
        cls,
        workflow: Callable[P, Coroutine[Any, Any, R]],
        *,
        debounce_timeout_sec: Optional[float] = None,
        queue: Optional[Queue | str] = None,
        application_name: Optional[str] = None,
    ) -> Debouncer[P, R]: ...
    @overload
    @classmethod
    def create(
        cls,
        workflow: Callable[P, R],
        *,
        debounce_timeout_sec: Optional[float] = None,
        queue: Optional[Queue | str] = None,
        application_name: Optional[str] = None,
    ) -> Debouncer[P, R]: ...
    @classmethod
    def create(
        cls,
        workflow: Callable[..., Any],
        *,
        debounce_timeout_sec: Optional[float] = None,
        queue: Optional[Queue | str] = None,
        application_name: Optional[str] = None,
    ) -> Debouncer[Any, Any]:
        """A debouncer for ``workflow`` (a function decorated with ``@DBOS.workflow``), started
        on ``queue`` (default: the internal queue)."""
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

    def debounce(
        self, debounce_key: str, debounce_period_sec: float, *args: P.args, **kwargs: P.kwargs
    ) -> WorkflowHandle[R]:
        """Start the workflow with these arguments once ``debounce_period_sec`` passes with no
        other call for ``debounce_key``; each call restarts the wait and replaces the arguments
        (until ``debounce_timeout_sec`` after the first). Returns the run's handle."""
        return self._debounce(debounce_key, debounce_period_sec, *args, **kwargs)

    async def debounce_async(
        self, debounce_key: str, debounce_period_sec: float, *args: P.args, **kwargs: P.kwargs
    ) -> WorkflowHandleAsync[R]:
        """Async twin of ``debounce``."""
        return await self._debounce_async(debounce_key, debounce_period_sec, *args, **kwargs)

    @classmethod
    def create_async(
        cls,
        workflow: Callable[P, Coroutine[Any, Any, R]],
        *,
        debounce_timeout_sec: Optional[float] = None,
        queue: Optional[Queue | str] = None,
        application_name: Optional[str] = None,
    ) -> Debouncer[P, R]:
        """``create`` for an async workflow. It returns the Debouncer itself, as DBOS's does
        (it writes nothing, so there is nothing to await); ``debounce_async`` is what waits."""
        return cls.create(
            workflow,
            debounce_timeout_sec=debounce_timeout_sec,
            queue=queue,
            application_name=application_name,
        )

    def _flow(
        self, key: str, period: float, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Flow[str]:
        bounce = Bounce(key, period, self.debounce_timeout_sec)
        engine = RUNTIME.engine()
        return debounce_registered(
            engine, self.workflow_name, self._func, self.queue_name, bounce, args, kwargs
        )


class DebouncerClient(_Debounce):
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
        super().__init__(debounce_timeout_sec, application_name, client._ops())
        self.client = client
        self.options = dict(workflow_options)
        if queue is not None:
            self.options["queue_name"] = _queue_name(queue)
        self.options.setdefault("queue_name", INTERNAL_QUEUE_NAME)

    def _flow(
        self, key: str, period: float, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Flow[str]:
        options: EnqueueOptions = self.options  # type: ignore[assignment]
        eng = self.client._ops().engine()
        bounce = Bounce(key, period, self.debounce_timeout_sec)
        return debounce_by_name(eng, options, bounce, args, kwargs)

    def debounce(
        self, debounce_key: str, debounce_period_sec: float, *args: Any, **kwargs: Any
    ) -> WorkflowHandle[Any]:
        """Enqueue the workflow named by the options once ``debounce_period_sec`` passes with
        no other call for ``debounce_key`` (see ``Debouncer.debounce``)."""
        return self._debounce(debounce_key, debounce_period_sec, *args, **kwargs)

    async def debounce_async(
        self, debounce_key: str, debounce_period_sec: float, *args: Any, **kwargs: Any
    ) -> WorkflowHandleAsync[Any]:
        """Async twin of ``debounce``."""
        return await self._debounce_async(debounce_key, debounce_period_sec, *args, **kwargs)
