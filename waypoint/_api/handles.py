"""Handles to workflow executions: one family for ``DBOS`` and ``DBOSClient``, sync and async.

A handle holds the workflow's ID and the ``Ops`` it came from: a runtime handle waits on the
local run when the workflow executes in this process and, called from a workflow body,
checkpoints what it read; a client handle reads the database (woken by NOTIFY when the client
listens).
"""

from __future__ import annotations

from typing import Any, Generic, Optional, Protocol, TypeVar

from waypoint._api.ops.base import Ops
from waypoint.core.calls import workflow_scope
from waypoint.core.effects import Flow, Io, drive_async, drive_sync
from waypoint.core.outcomes import await_outcome, to_status
from waypoint.core.types import WorkflowStatus
from waypoint.error import DBOSNonExistentWorkflowError

R = TypeVar("R", covariant=True)
T = TypeVar("T")


class WorkflowHandle(Protocol[R]):
    """A workflow execution, by ID: wait for its result or read its status."""

    workflow_id: str

    def get_workflow_id(self) -> str:
        """The workflow's ID."""
        ...

    def get_result(self, *, polling_interval_sec: float = 1.0) -> R:
        """Wait for the workflow to finish and return its result, or raise its error
        (``DBOSAwaitedWorkflowCancelledError`` if it was cancelled). From a workflow body the
        result is checkpointed."""
        ...

    def get_status(self) -> WorkflowStatus:
        """The workflow's current status (``DBOSNonExistentWorkflowError`` if it is gone)."""
        ...


class WorkflowHandleAsync(Protocol[R]):
    """``WorkflowHandle`` for async code: the same methods, awaited."""

    workflow_id: str

    def get_workflow_id(self) -> str:
        """The workflow's ID."""
        ...

    async def get_result(self, *, polling_interval_sec: float = 1.0) -> R:
        """Await the workflow's result, or raise its error (see ``WorkflowHandle``)."""
        ...

    async def get_status(self) -> WorkflowStatus:
        """The workflow's current status."""
        ...


def status_flow(
    ops: Ops, workflow_id: str, *, legacy_unrecorded: bool = False
) -> Flow[Optional[WorkflowStatus]]:
    """The workflow's status (None if it does not exist); a step from a workflow body
    (``legacy_unrecorded``: one that Waypoint before 0.2 did not checkpoint)."""
    eng = ops.engine()

    def read() -> Flow[Optional[WorkflowStatus]]:
        row = yield Io(lambda: eng.store.get_workflow(workflow_id))
        return to_status(eng, row) if row is not None else None

    return ops.checkpointed("DBOS.getStatus", read(), legacy_unrecorded=legacy_unrecorded)


def result_flow(
    ops: Ops,
    workflow_id: str,
    polling_interval_sec: float = 1.0,
    *,
    from_handle: bool = False,
    written: bool = False,
) -> Flow[Any]:
    """The workflow's result once it is done (its error raised); a step from a workflow body.
    As DBOS records it, the step names the awaited workflow when a handle waited."""
    # As in DBOS, a workflow not written yet is waited for (another task may be starting it);
    # one this handle's caller wrote (``written``) and that is gone is an error at once.
    # From a workflow body the wait may be suspended (core/suspend.py), never from a client.
    waiter = workflow_scope() if ops.records_steps else None
    body = await_outcome(
        ops.engine(), workflow_id, polling_interval_sec, wait_if_missing=not written, waiter=waiter
    )
    return ops.checkpointed("DBOS.getResult", body, workflow_id if from_handle else None)


def _existing(status: Optional[WorkflowStatus], workflow_id: str) -> WorkflowStatus:
    if status is None:
        raise DBOSNonExistentWorkflowError("target", workflow_id)
    return status


class _Handle:
    def __init__(self, ops: Ops, workflow_id: str, *, written: bool = False) -> None:
        self._ops = ops
        self.workflow_id = workflow_id
        # Returned by a start or an enqueue, whose row was written before it returned: if the
        # row is gone later (deleted, or lost in a failover to an asynchronous standby),
        # get_result says so instead of waiting for a workflow that will never be written.
        self._written = written

    def get_workflow_id(self) -> str:
        return self.workflow_id

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.workflow_id!r})"


class Handle(_Handle, Generic[T]):
    def get_result(self, *, polling_interval_sec: float = 1.0) -> T:
        flow = result_flow(
            self._ops,
            self.workflow_id,
            polling_interval_sec,
            from_handle=True,
            written=self._written,
        )
        result: T = drive_sync(flow)
        return result

    def get_status(self) -> WorkflowStatus:
        return _existing(drive_sync(status_flow(self._ops, self.workflow_id)), self.workflow_id)


class HandleAsync(_Handle, Generic[T]):
    async def get_result(self, *, polling_interval_sec: float = 1.0) -> T:
        flow = result_flow(
            self._ops,
            self.workflow_id,
            polling_interval_sec,
            from_handle=True,
            written=self._written,
        )
        result: T = await drive_async(flow)
        return result

    async def get_status(self) -> WorkflowStatus:
        status = await drive_async(status_flow(self._ops, self.workflow_id))
        return _existing(status, self.workflow_id)
