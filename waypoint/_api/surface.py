"""Methods written once, offered by ``DBOS`` (on the class) and ``DBOSClient`` (on an
instance), in a sync and an async form.

An operation is a flow function ``f(ops, *args, **kwargs) -> Flow[T]`` (see ``_api.ops``).
``twins(f)`` makes the pair of descriptors ``(method, method_async)``: looked up on
``DBOS`` or a subclass they act on the launched runtime, looked up on a client instance they
act on that client's engine (each class says which through its ``_ops()``). The sync method
drives the flow on the calling thread; the async one awaits it, with storage calls on the I/O
pool. Both have the flow function's signature, for users and for type checkers. The flow
function names the checkpoint it becomes when ``DBOS`` calls it from a workflow body
(``ops.base.checkpoint``).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any, Concatenate, Generic, Optional, ParamSpec, TypeVar, cast, overload

from waypoint._api.argcheck import ArgumentChecker
from waypoint._api.handles import Handle, HandleAsync, WorkflowHandle, WorkflowHandleAsync
from waypoint._api.ops.base import Ops
from waypoint.core.effects import Flow, drive_async, drive_sync
from waypoint.core.streams import StreamReader

P = ParamSpec("P")
T = TypeVar("T")
U = TypeVar("U")
V = TypeVar("V")

OpFlow = Callable[Concatenate[Ops, P], Flow[T]]


def _public_signature(
    fn: Callable[..., Any], result: Optional[Callable[..., Any]] = None
) -> inspect.Signature:
    """The flow function's signature without its leading ``ops``, returning what the method
    returns: the flow's value (``Flow[X]`` gives ``X``), or what ``result`` makes of it."""
    signature = inspect.signature(fn)
    returns = signature.return_annotation
    if result is not None:
        returns = inspect.signature(result).return_annotation
    elif isinstance(returns, str) and returns.startswith("Flow[") and returns.endswith("]"):
        returns = returns[len("Flow[") : -1]
    return signature.replace(
        parameters=list(signature.parameters.values())[1:], return_annotation=returns
    )


def _dress(
    call: Any, fn: Callable[..., Any], name: str, signature: inspect.Signature, owner: Any
) -> None:
    """Give the bound method the flow function's docs and signature, and the name of a method
    of ``owner`` (so ``help()`` and the API reference list it as one)."""
    call.__signature__ = signature
    call.__doc__ = fn.__doc__
    call.__name__ = name
    call.__module__ = getattr(owner, "__module__", call.__module__)
    call.__qualname__ = f"{getattr(owner, '__qualname__', '')}.{name}".lstrip(".")


def _ops_of(obj: Any, owner: Any) -> Ops:
    target = obj if obj is not None else owner
    ops: Ops = target._ops()
    return ops


class _Operation(Generic[P, T]):
    def __init__(
        self,
        step: Optional[str],
        flow: Callable[..., Flow[Any]],
        result: Optional[Callable[[Ops, Any], Any]],
    ) -> None:
        self.step = step
        self.flow = flow
        self.result = result
        self.__doc__ = flow.__doc__
        self.__name__ = flow.__name__
        self.signature = _public_signature(flow, result)
        self._check: Optional[ArgumentChecker] = None
        self._per_class: dict[Any, Any] = {}

    def __set_name__(self, owner: type, name: str) -> None:
        self.__name__ = name

    def _bound(self, obj: Any, owner: Any) -> Any:
        """The operation bound to ``obj`` (an instance) or to ``owner`` (``DBOS.send``: made
        once per class, as building and dressing it costs more than many a call's own work)."""
        if obj is not None:
            return self._bind(obj, owner)
        made = self._per_class.get(owner)
        if made is None:
            made = self._per_class[owner] = self._bind(obj, owner)
        return made

    def _bind(self, obj: Any, owner: Any) -> Any:
        raise NotImplementedError

    def _prepare(self, ops: Ops, args: Any, kwargs: Any) -> Flow[Any]:
        check = self._check
        if check is None:  # built at the first call: hints may name later definitions
            check = self._check = ArgumentChecker(self.__name__, self.flow, self.signature)
        check(args, kwargs)
        return ops.checkpointed(self.step, self.flow(ops, *args, **kwargs))

    def _finish(self, ops: Ops, value: Any) -> Any:
        return value if self.result is None else self.result(ops, value)


# DBOS's sync methods that refuse to block a running event loop (DBOS's own list; a
# client's methods do not refuse).
LOOP_REFUSED = frozenset(
    {
        "cancel_workflows",
        "close_stream",
        "delete_queue",
        "delete_workflows",
        "deprecate_patch",
        "fork_workflow",
        "get_all_events",
        "get_event",
        "get_result",
        "get_workflow_status",
        "list_queued_workflows",
        "list_queues",
        "list_workflow_steps",
        "list_workflows",
        "patch",
        "read_stream",
        "read_stream_offset",
        "recv",
        "register_queue",
        "resume_workflow",
        "resume_workflows",
        "retrieve_queue",
        "retrieve_workflow",
        "run_step",
        "send",
        "send_bulk",
        "set_event",
        "set_workflow_delay",
        "sleep",
        "update_workflow_attributes",
        "wait_first",
        "write_stream",
    }
)


def refuse_in_event_loop(name: str) -> None:
    """``DBOS.<name>`` called on a thread whose event loop runs would block that loop on
    the database: refused, pointing to the async twin (DBOS's check and wording)."""
    if name not in LOOP_REFUSED:
        return
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise RuntimeError(
        f"{name}() was called while an event loop is running. Use await {name}_async(...) instead."
    )


class SyncOperation(_Operation[P, T]):
    def __get__(self, obj: Any, owner: Any = None) -> Callable[P, T]:
        made: Callable[P, T] = self._bound(obj, owner)
        return made

    def _bind(self, obj: Any, owner: Any) -> Callable[P, T]:
        def call(*args: P.args, **kwargs: P.kwargs) -> T:
            if obj is None:
                refuse_in_event_loop(self.__name__)
            ops = _ops_of(obj, owner)
            value = drive_sync(self._prepare(ops, args, kwargs))
            result: T = self._finish(ops, value)
            return result

        _dress(call, self.flow, self.__name__, self.signature, owner or type(obj))
        return call


class AsyncOperation(_Operation[P, T]):
    def __get__(self, obj: Any, owner: Any = None) -> Callable[P, Coroutine[Any, Any, T]]:
        made: Callable[P, Coroutine[Any, Any, T]] = self._bound(obj, owner)
        return made

    def _bind(self, obj: Any, owner: Any) -> Callable[P, Coroutine[Any, Any, T]]:
        async def call(*args: P.args, **kwargs: P.kwargs) -> T:
            ops = _ops_of(obj, owner)
            value = await drive_async(self._prepare(ops, args, kwargs))
            result: T = self._finish(ops, value)
            return result

        _dress(call, self.flow, self.__name__, self.signature, owner or type(obj))
        return call


def _step(flow: Callable[..., Any]) -> Optional[str]:
    step: Optional[str] = getattr(flow, "checkpoint_name", None)
    return step


@overload
def twins(flow: OpFlow[P, T]) -> tuple[SyncOperation[P, T], AsyncOperation[P, T]]: ...


@overload
def twins(
    flow: OpFlow[P, T], result: Callable[[Ops, T], U], result_async: Callable[[Ops, T], V]
) -> tuple[SyncOperation[P, U], AsyncOperation[P, V]]: ...


def twins(
    flow: Callable[..., Flow[Any]],
    result: Optional[Callable[[Ops, Any], Any]] = None,
    result_async: Optional[Callable[[Ops, Any], Any]] = None,
) -> tuple[SyncOperation[Any, Any], AsyncOperation[Any, Any]]:
    """``(method, method_async)`` from one flow; ``result``/``result_async`` turn the flow's
    value into what each returns (a workflow ID into a sync or an async handle)."""
    step = _step(flow)
    return SyncOperation(step, flow, result), AsyncOperation(step, flow, result_async)


def handle(ops: Ops, workflow_id: str) -> WorkflowHandle[Any]:
    return Handle(ops, workflow_id)


def handle_async(ops: Ops, workflow_id: str) -> WorkflowHandleAsync[Any]:
    return HandleAsync(ops, workflow_id)


def handles(ops: Ops, workflow_ids: list[str]) -> list[WorkflowHandle[Any]]:
    return [Handle(ops, w) for w in workflow_ids]


def handles_async(ops: Ops, workflow_ids: list[str]) -> list[WorkflowHandleAsync[Any]]:
    return [HandleAsync(ops, w) for w in workflow_ids]


@overload
def sync_only(flow: OpFlow[P, T]) -> SyncOperation[P, T]: ...


@overload
def sync_only(flow: OpFlow[P, T], result: Callable[[Ops, T], U]) -> SyncOperation[P, U]: ...


def sync_only(
    flow: Callable[..., Flow[Any]], result: Optional[Callable[[Ops, Any], Any]] = None
) -> SyncOperation[Any, Any]:
    """An operation with no async twin (as in DBOS's API)."""
    return SyncOperation(_step(flow), flow, result)


class StreamMethod(Generic[P]):
    """``read_stream`` / ``read_stream_async`` from one function that returns a reader: the
    sync method gives a generator, the async one is an async generator."""

    def __init__(self, fn: Callable[Concatenate[Ops, P], StreamReader], is_async: bool) -> None:
        self.fn = fn
        self.is_async = is_async
        self.__doc__ = fn.__doc__
        self.signature = _public_signature(fn)

    def __get__(self, obj: Any, owner: Any = None) -> Callable[P, Any]:
        fn, name = self.fn, self.fn.__name__ + ("_async" if self.is_async else "")

        def read(*args: P.args, **kwargs: P.kwargs) -> Iterator[Any]:
            if obj is None:
                refuse_in_event_loop(name)
            return iter(fn(_ops_of(obj, owner), *args, **kwargs))

        async def read_async(*args: P.args, **kwargs: P.kwargs) -> AsyncIterator[Any]:
            async for value in fn(_ops_of(obj, owner), *args, **kwargs):
                yield value

        method: Any = read_async if self.is_async else read
        signature = self.signature.replace(return_annotation=inspect.Signature.empty)
        _dress(method, fn, name, signature, owner or type(obj))
        return cast(Callable[P, Any], method)


def stream_twins(
    fn: Callable[Concatenate[Ops, P], StreamReader],
) -> tuple[StreamMethod[P], StreamMethod[P]]:
    return StreamMethod(fn, is_async=False), StreamMethod(fn, is_async=True)
