"""Handles to workflow executions, sync and async."""

from __future__ import annotations

from typing import Generic, Protocol, TypeVar

from waypoint.core import calls
from waypoint.core.types import WorkflowStatus
from waypoint.error import DBOSNonExistentWorkflowError

R = TypeVar("R", covariant=True)
T = TypeVar("T")


class WorkflowHandle(Protocol[R]):
    workflow_id: str

    def get_workflow_id(self) -> str: ...
    def get_result(self, *, polling_interval_sec: float = 1.0) -> R: ...
    def get_status(self) -> WorkflowStatus: ...


class WorkflowHandleAsync(Protocol[R]):
    workflow_id: str

    def get_workflow_id(self) -> str: ...
    async def get_result(self, *, polling_interval_sec: float = 1.0) -> R: ...
    async def get_status(self) -> WorkflowStatus: ...


class Handle(Generic[T]):
    """A handle; waits on the local run when it is here, reads the database otherwise."""

    def __init__(self, workflow_id: str) -> None:
        self.workflow_id = workflow_id

    def get_workflow_id(self) -> str:
        return self.workflow_id

    def get_result(self, *, polling_interval_sec: float = 1.0) -> T:
        result: T = calls.get_result(self.workflow_id, polling_interval_sec)
        return result

    def get_status(self) -> WorkflowStatus:
        status = calls.get_status(self.workflow_id)
        if status is None:
            raise DBOSNonExistentWorkflowError(self.workflow_id)
        return status

    def __repr__(self) -> str:
        return f"WorkflowHandle({self.workflow_id!r})"


class HandleAsync(Generic[T]):
    def __init__(self, workflow_id: str) -> None:
        self.workflow_id = workflow_id

    def get_workflow_id(self) -> str:
        return self.workflow_id

    async def get_result(self, *, polling_interval_sec: float = 1.0) -> T:
        result: T = await calls.get_result_async(self.workflow_id, polling_interval_sec)
        return result

    async def get_status(self) -> WorkflowStatus:
        status = await calls.get_status_async(self.workflow_id)
        if status is None:
            raise DBOSNonExistentWorkflowError(self.workflow_id)
        return status

    def __repr__(self) -> str:
        return f"WorkflowHandleAsync({self.workflow_id!r})"
