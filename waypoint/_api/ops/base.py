"""``Ops``: what an operation runs against, and the rules of the surface that calls it.

``DBOS`` operates on the launched runtime (resolved at each call, so a handle outlives a
relaunch) and, called from a workflow body, checkpoints each operation as a step so replay
sees what the first execution saw. A ``DBOSClient`` (and the CLI) operates on its own engine,
never checkpoints, and cannot know what another process declared in code.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional, TypeVar

from waypoint.core.calls import checkpointed
from waypoint.core.effects import Flow, drive_sync
from waypoint.core.engine import Engine
from waypoint.core.runtime import Runtime, get_runtime

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


def checkpoint(name: str) -> Callable[[F], F]:
    """Name the step an operation becomes when ``DBOS`` calls it from a workflow body (an
    operation without one is not checkpointed, or checkpoints itself)."""

    def mark(operation: F) -> F:
        setattr(operation, "checkpoint_name", name)  # noqa: B010 (a function attribute)
        return operation

    return mark


class Ops:
    # Inside a workflow body, operations are checkpointed steps.
    records_steps = False
    # This process runs the application: its queues and workflows must be known here.
    strict = False

    def engine(self) -> Engine:
        raise NotImplementedError

    def runtime(self) -> Optional[Runtime]:
        """The launched runtime these operations act on, if they act on one."""
        return None

    def run(self, flow: Flow[T]) -> T:
        """Drive an operation to its end on this thread (the admin API and the CLI)."""
        return drive_sync(flow)

    def checkpointed(
        self,
        name: Optional[str],
        flow: Flow[T],
        child_workflow_id: Optional[str] = None,
        *,
        legacy_unrecorded: bool = False,
    ) -> Flow[T]:
        if name is None or not self.records_steps:
            return flow
        result: Flow[T] = checkpointed(
            self.engine(), name, flow, child_workflow_id, legacy_unrecorded=legacy_unrecorded
        )
        return result


class RuntimeOps(Ops):
    records_steps = True
    strict = True

    def engine(self) -> Engine:
        return get_runtime()

    def runtime(self) -> Runtime:
        return get_runtime()


class ClientOps(Ops):
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def engine(self) -> Engine:
        return self._engine

    def __repr__(self) -> str:
        return f"ClientOps({self._engine.store.identity!r})"


RUNTIME = RuntimeOps()


def as_ops(value: Any) -> Ops:
    """An ``Ops`` from what a caller holds: ops, an engine, or nothing (the runtime)."""
    if value is None:
        return RUNTIME
    if isinstance(value, Ops):
        return value
    if isinstance(value, Engine):
        return RUNTIME if isinstance(value, Runtime) else ClientOps(value)
    raise TypeError(f"expected a Waypoint engine, got {type(value).__name__}")
