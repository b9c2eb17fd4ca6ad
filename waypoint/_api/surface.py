"""Methods written once, offered by ``DBOS`` (on the class) and ``DBOSClient`` (on an
instance), in a sync and an async form.

An operation is a flow function ``f(ops, *args, **kwargs) -> Flow[T]`` (see ``_api.ops``).
``twins(step, f)`` makes the pair of descriptors ``(method, method_async)``: looked up on
``DBOS`` or a subclass they act on the launched runtime, looked up on a client instance they
act on that client's engine (each class says which through its ``_ops()``). The sync method
drives the flow on the calling thread; the async one awaits it, with storage calls on the I/O
pool. Both have the flow function's signature, for users and for type checkers. ``step``
names the checkpoint the operation becomes when ``DBOS`` calls it from a workflow body
(``None``: it is not one, or it checkpoints itself).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine
from typing import Any, Concatenate, Generic, Optional, ParamSpec, TypeVar, overload

from waypoint._api.handles import Handle, HandleAsync, WorkflowHandle, WorkflowHandleAsync
from waypoint._api.ops.base import Ops
from waypoint.core.effects import Flow, drive_async, drive_sync

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


def _dress(call: Any, fn: Callable[..., Any], name: str, signature: inspect.Signature) -> None:
    """Give the bound method the flow function's name, docs and signature."""
    call.__signature__ = signature
    call.__doc__ = fn.__doc__
    call.__name__ = call.__qualname__ = name


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

    def __set_name__(self, owner: type, name: str) -> None:
        self.__name__ = name

    def _prepare(self, ops: Ops, args: Any, kwargs: Any) -> Flow[Any]:
        return ops.checkpointed(self.step, self.flow(ops, *args, **kwargs))

    def _finish(self, ops: Ops, value: Any) -> Any:
        return value if self.result is None else self.result(ops, value)


class SyncOperation(_Operation[P, T]):
    def __get__(self, obj: Any, owner: Any = None) -> Callable[P, T]:
        def call(*args: P.args, **kwargs: P.kwargs) -> T:
            ops = _ops_of(obj, owner)
            value = drive_sync(self._prepare(ops, args, kwargs))
            result: T = self._finish(ops, value)
            return result

        _dress(call, self.flow, self.__name__, self.signature)
        return call


class AsyncOperation(_Operation[P, T]):
    def __get__(self, obj: Any, owner: Any = None) -> Callable[P, Coroutine[Any, Any, T]]:
        async def call(*args: P.args, **kwargs: P.kwargs) -> T:
            ops = _ops_of(obj, owner)
            value = await drive_async(self._prepare(ops, args, kwargs))
            result: T = self._finish(ops, value)
            return result

        _dress(call, self.flow, self.__name__, self.signature)
        return call


@overload
def twins(
    step: Optional[str], flow: OpFlow[P, T]
) -> tuple[SyncOperation[P, T], AsyncOperation[P, T]]: ...


@overload
def twins(
    step: Optional[str],
    flow: OpFlow[P, T],
    result: Callable[[Ops, T], U],
    result_async: Callable[[Ops, T], V],
) -> tuple[SyncOperation[P, U], AsyncOperation[P, V]]: ...


def twins(
    step: Optional[str],
    flow: Callable[..., Flow[Any]],
    result: Optional[Callable[[Ops, Any], Any]] = None,
    result_async: Optional[Callable[[Ops, Any], Any]] = None,
) -> tuple[SyncOperation[Any, Any], AsyncOperation[Any, Any]]:
    """``(method, method_async)`` from one flow; ``result``/``result_async`` turn the flow's
    value into what each returns (a workflow ID into a sync or an async handle)."""
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
def sync_only(step: Optional[str], flow: OpFlow[P, T]) -> SyncOperation[P, T]: ...


@overload
def sync_only(
    step: Optional[str], flow: OpFlow[P, T], result: Callable[[Ops, T], U]
) -> SyncOperation[P, U]: ...


def sync_only(
    step: Optional[str],
    flow: Callable[..., Flow[Any]],
    result: Optional[Callable[[Ops, Any], Any]] = None,
) -> SyncOperation[Any, Any]:
    """An operation with no async twin (as in DBOS's API)."""
    return SyncOperation(step, flow, result)


class Bound(Generic[P, T]):
    """A plain function of ``ops`` (an iterator, say) offered the same way as an operation."""

    def __init__(self, fn: Callable[Concatenate[Ops, P], T]) -> None:
        self.fn = fn
        self.__doc__ = fn.__doc__
        self.signature = _public_signature(fn)

    def __get__(self, obj: Any, owner: Any = None) -> Callable[P, T]:
        fn: Any = self.fn
        if inspect.isasyncgenfunction(fn):

            async def agen(*args: Any, **kwargs: Any) -> Any:
                async for value in fn(_ops_of(obj, owner), *args, **kwargs):
                    yield value

            _dress(agen, fn, fn.__name__, self.signature)
            return agen

        def call(*args: P.args, **kwargs: P.kwargs) -> T:
            return self.fn(_ops_of(obj, owner), *args, **kwargs)

        _dress(call, self.fn, self.fn.__name__, self.signature)
        return call
