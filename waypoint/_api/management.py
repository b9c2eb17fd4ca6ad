"""``DBOS`` methods that manage workflows (a mixin). Called from inside a workflow, each one
is a checkpointed step, so replay sees the same answer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional, TypeVar

from waypoint._api.handles import Handle, HandleAsync, WorkflowHandle, WorkflowHandleAsync
from waypoint.core import calls, management
from waypoint.core.context import current_run
from waypoint.core.effects import drive_async, drive_sync
from waypoint.core.listing import build_filter
from waypoint.core.outcomes import to_status
from waypoint.core.runtime import Runtime
from waypoint.core.types import StepInfo, VersionInfo, WorkflowStatus
from waypoint.error import DBOSException

T = TypeVar("T")
Many = Optional[str | list[str]]


def _sync(name: str, op: Callable[[Runtime], T]) -> T:
    result: T = drive_sync(calls.managed(name, op))
    return result


async def _async(name: str, op: Callable[[Runtime], T]) -> T:
    result: T = await drive_async(calls.managed(name, op))
    return result


def _lister(queued: bool, filters: dict[str, Any]) -> Callable[[Runtime], list[WorkflowStatus]]:
    if queued:
        filters["queues_only"] = True
        if filters.get("status") is None:
            filters["status"] = ["ENQUEUED", "PENDING", "DELAYED"]
    try:
        flt = build_filter(**filters)
    except TypeError as exc:
        raise DBOSException(f"unknown workflow list filter: {exc}") from exc

    def op(rt: Runtime) -> list[WorkflowStatus]:
        if flt.application_name is None:
            flt.application_name = rt.app_name
        return [to_status(rt, row) for row in rt.store.list_workflows(flt)]

    return op


class ManagementMixin:
    # -- cancel / resume ------------------------------------------------------------------------
    @classmethod
    def cancel_workflow(cls, workflow_id: str, *, cancel_children: bool = False) -> None:
        cls.cancel_workflows([workflow_id], cancel_children=cancel_children)

    @classmethod
    def cancel_workflows(cls, workflow_ids: list[str], *, cancel_children: bool = False) -> None:
        _sync(
            "DBOS.cancelWorkflow",
            lambda rt: management.cancel(rt, workflow_ids, cancel_children),
        )

    @classmethod
    async def cancel_workflow_async(
        cls, workflow_id: str, *, cancel_children: bool = False
    ) -> None:
        await cls.cancel_workflows_async([workflow_id], cancel_children=cancel_children)

    @classmethod
    async def cancel_workflows_async(
        cls, workflow_ids: list[str], *, cancel_children: bool = False
    ) -> None:
        await _async(
            "DBOS.cancelWorkflow",
            lambda rt: management.cancel(rt, workflow_ids, cancel_children),
        )

    @classmethod
    def resume_workflow(
        cls, workflow_id: str, *, queue_name: Optional[str] = None
    ) -> WorkflowHandle[Any]:
        cls.resume_workflows([workflow_id], queue_name=queue_name)
        return Handle(workflow_id)

    @classmethod
    def resume_workflows(
        cls, workflow_ids: list[str], *, queue_name: Optional[str] = None
    ) -> list[WorkflowHandle[Any]]:
        _sync("DBOS.resumeWorkflow", lambda rt: management.resume(rt, workflow_ids, queue_name))
        return [Handle(w) for w in workflow_ids]

    @classmethod
    async def resume_workflow_async(
        cls, workflow_id: str, *, queue_name: Optional[str] = None
    ) -> WorkflowHandleAsync[Any]:
        await _async(
            "DBOS.resumeWorkflow", lambda rt: management.resume(rt, [workflow_id], queue_name)
        )
        return HandleAsync(workflow_id)

    @classmethod
    async def resume_workflows_async(
        cls, workflow_ids: list[str], *, queue_name: Optional[str] = None
    ) -> list[WorkflowHandleAsync[Any]]:
        await _async(
            "DBOS.resumeWorkflow", lambda rt: management.resume(rt, workflow_ids, queue_name)
        )
        return [HandleAsync(w) for w in workflow_ids]

    # -- fork -----------------------------------------------------------------------------------
    @classmethod
    def fork_workflow(
        cls,
        workflow_id: str,
        start_step: int,
        *,
        application_version: Optional[str] = None,
        queue_name: Optional[str] = None,
        queue_partition_key: Optional[str] = None,
        replacement_children: Optional[dict[str, str]] = None,
        timeout_seconds: Optional[float] = None,
    ) -> WorkflowHandle[Any]:
        from waypoint.core.context import take_workflow_id

        new_id = take_workflow_id()
        forked = _sync(
            "DBOS.forkWorkflow",
            lambda rt: management.fork(
                rt,
                workflow_id,
                start_step,
                application_version=application_version,
                queue_name=queue_name,
                queue_partition_key=queue_partition_key,
                replacement_children=replacement_children,
                timeout_seconds=timeout_seconds,
                new_workflow_id=new_id,
            ),
        )
        return Handle(forked)

    @classmethod
    async def fork_workflow_async(
        cls,
        workflow_id: str,
        start_step: int,
        *,
        application_version: Optional[str] = None,
        queue_name: Optional[str] = None,
        queue_partition_key: Optional[str] = None,
        replacement_children: Optional[dict[str, str]] = None,
        timeout_seconds: Optional[float] = None,
    ) -> WorkflowHandleAsync[Any]:
        from waypoint.core.context import take_workflow_id

        new_id = take_workflow_id()
        forked = await _async(
            "DBOS.forkWorkflow",
            lambda rt: management.fork(
                rt,
                workflow_id,
                start_step,
                application_version=application_version,
                queue_name=queue_name,
                queue_partition_key=queue_partition_key,
                replacement_children=replacement_children,
                timeout_seconds=timeout_seconds,
                new_workflow_id=new_id,
            ),
        )
        return HandleAsync(forked)

    # -- delete, delay, attributes ------------------------------------------------------------
    @classmethod
    def delete_workflow(cls, workflow_id: str, *, delete_children: bool = False) -> None:
        cls.delete_workflows([workflow_id], delete_children=delete_children)

    @classmethod
    def delete_workflows(cls, workflow_ids: list[str], *, delete_children: bool = False) -> None:
        _sync(
            "DBOS.deleteWorkflow",
            lambda rt: management.delete(rt, workflow_ids, delete_children),
        )

    @classmethod
    async def delete_workflow_async(
        cls, workflow_id: str, *, delete_children: bool = False
    ) -> None:
        await cls.delete_workflows_async([workflow_id], delete_children=delete_children)

    @classmethod
    async def delete_workflows_async(
        cls, workflow_ids: list[str], *, delete_children: bool = False
    ) -> None:
        await _async(
            "DBOS.deleteWorkflow",
            lambda rt: management.delete(rt, workflow_ids, delete_children),
        )

    @classmethod
    def set_workflow_delay(
        cls,
        workflow_id: str,
        *,
        delay_seconds: Optional[float] = None,
        delay_until_epoch_ms: Optional[int] = None,
    ) -> None:
        _sync(
            "DBOS.setWorkflowDelay",
            lambda rt: management.set_delay(rt, workflow_id, delay_seconds, delay_until_epoch_ms),
        )

    @classmethod
    async def set_workflow_delay_async(
        cls,
        workflow_id: str,
        *,
        delay_seconds: Optional[float] = None,
        delay_until_epoch_ms: Optional[int] = None,
    ) -> None:
        await _async(
            "DBOS.setWorkflowDelay",
            lambda rt: management.set_delay(rt, workflow_id, delay_seconds, delay_until_epoch_ms),
        )

    @classmethod
    def update_workflow_attributes(
        cls, workflow_id: str, attributes: Optional[dict[str, Any]]
    ) -> None:
        _sync(
            "DBOS.updateWorkflowAttributes",
            lambda rt: management.update_attributes(rt, workflow_id, attributes),
        )

    @classmethod
    async def update_workflow_attributes_async(
        cls, workflow_id: str, attributes: Optional[dict[str, Any]]
    ) -> None:
        await _async(
            "DBOS.updateWorkflowAttributes",
            lambda rt: management.update_attributes(rt, workflow_id, attributes),
        )

    # -- listing --------------------------------------------------------------------------------
    @classmethod
    def list_workflows(cls, **filters: Any) -> list[WorkflowStatus]:
        return _sync("DBOS.listWorkflows", _lister(False, filters))

    @classmethod
    async def list_workflows_async(cls, **filters: Any) -> list[WorkflowStatus]:
        return await _async("DBOS.listWorkflows", _lister(False, filters))

    @classmethod
    def list_queued_workflows(cls, **filters: Any) -> list[WorkflowStatus]:
        return _sync("DBOS.listQueuedWorkflows", _lister(True, filters))

    @classmethod
    async def list_queued_workflows_async(cls, **filters: Any) -> list[WorkflowStatus]:
        return await _async("DBOS.listQueuedWorkflows", _lister(True, filters))

    @classmethod
    def list_workflow_steps(
        cls,
        workflow_id: str,
        *,
        load_output: bool = True,
        limit: Optional[int] = None,
        offset: Optional[int] = None,
    ) -> list[StepInfo]:
        return _sync(
            "DBOS.listWorkflowSteps",
            lambda rt: management.steps(rt, workflow_id, load_output, limit, offset),
        )

    @classmethod
    async def list_workflow_steps_async(
        cls,
        workflow_id: str,
        *,
        load_output: bool = True,
        limit: Optional[int] = None,
        offset: Optional[int] = None,
    ) -> list[StepInfo]:
        return await _async(
            "DBOS.listWorkflowSteps",
            lambda rt: management.steps(rt, workflow_id, load_output, limit, offset),
        )

    # -- application versions -----------------------------------------------------------------
    @classmethod
    def list_application_versions(cls) -> list[VersionInfo]:
        return _sync("DBOS.listApplicationVersions", lambda rt: management.versions(rt, None))

    @classmethod
    async def list_application_versions_async(cls) -> list[VersionInfo]:
        return await _async(
            "DBOS.listApplicationVersions", lambda rt: management.versions(rt, None)
        )

    @classmethod
    def get_latest_application_version(cls) -> VersionInfo:
        return _sync(
            "DBOS.getLatestApplicationVersion", lambda rt: management.latest_version(rt, None)
        )

    @classmethod
    async def get_latest_application_version_async(cls) -> VersionInfo:
        return await _async(
            "DBOS.getLatestApplicationVersion", lambda rt: management.latest_version(rt, None)
        )

    @classmethod
    def set_latest_application_version(
        cls, version_name: str, *, application_name: Optional[str] = None
    ) -> None:
        _sync(
            "DBOS.setLatestApplicationVersion",
            lambda rt: management.set_latest_version(rt, version_name, application_name),
        )

    @classmethod
    async def set_latest_application_version_async(
        cls, version_name: str, *, application_name: Optional[str] = None
    ) -> None:
        await _async(
            "DBOS.setLatestApplicationVersion",
            lambda rt: management.set_latest_version(rt, version_name, application_name),
        )

    # -- retention ------------------------------------------------------------------------------
    @classmethod
    def garbage_collect(
        cls,
        *,
        cutoff_epoch_timestamp_ms: Optional[int] = None,
        rows_threshold: Optional[int] = None,
    ) -> int:
        """Delete finished workflows older than the cutoff or beyond the newest
        ``rows_threshold`` (never PENDING, ENQUEUED or DELAYED ones); returns how many."""
        return _sync(
            "DBOS.garbageCollect",
            lambda rt: rt.store.garbage_collect(
                cutoff_epoch_timestamp_ms, rows_threshold, rt.app_name
            ),
        )

    @classmethod
    def global_timeout(cls, cutoff_epoch_timestamp_ms: int) -> list[str]:
        """Cancel every in-flight workflow created at or before the cutoff."""
        return _sync(
            "DBOS.globalTimeout",
            lambda rt: management.global_timeout(rt, cutoff_epoch_timestamp_ms),
        )

    # -- patching -------------------------------------------------------------------------------
    @classmethod
    def patch(cls, patch_name: str) -> bool:
        run = current_run.get()
        if run is None:
            raise DBOSException("DBOS.patch can only be called from a workflow")
        result: bool = drive_sync(management.patch_flow(run, patch_name, deprecated=False))
        return result

    @classmethod
    async def patch_async(cls, patch_name: str) -> bool:
        run = current_run.get()
        if run is None:
            raise DBOSException("DBOS.patch can only be called from a workflow")
        result: bool = await drive_async(management.patch_flow(run, patch_name, deprecated=False))
        return result

    @classmethod
    def deprecate_patch(cls, patch_name: str) -> bool:
        run = current_run.get()
        if run is None:
            raise DBOSException("DBOS.deprecate_patch can only be called from a workflow")
        result: bool = drive_sync(management.patch_flow(run, patch_name, deprecated=True))
        return result

    @classmethod
    async def deprecate_patch_async(cls, patch_name: str) -> bool:
        run = current_run.get()
        if run is None:
            raise DBOSException("DBOS.deprecate_patch can only be called from a workflow")
        result: bool = await drive_async(management.patch_flow(run, patch_name, deprecated=True))
        return result
