"""Operations on workflows from outside their execution: find, wait, list, cancel, resume,
fork, delete, delay, attributes."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, Optional, TypeVar

from waypoint._api.handles import WorkflowHandle, WorkflowHandleAsync, result_flow, status_flow
from waypoint._api.ops.base import Ops, checkpoint
from waypoint._api.transactions import application_database
from waypoint.core.context import take_workflow_id
from waypoint.core.effects import Flow, Io
from waypoint.core.engine import Engine
from waypoint.core.listing import build_filter
from waypoint.core.messaging import wait_first_flow
from waypoint.core.outcomes import to_status
from waypoint.core.prepare import validate_workflow_id
from waypoint.core.types import INTERNAL_QUEUE_NAME, StepInfo, WorkflowStatus
from waypoint.error import DBOSException, DBOSNonExistentWorkflowError
from waypoint.queues.enqueue import queue_limited
from waypoint.storage.protocol import ForkRequest, queue_key, timer_key

QUEUED_STATUSES = ["ENQUEUED", "PENDING", "DELAYED"]
T = TypeVar("T")


# -- finding and waiting ------------------------------------------------------------------------


def retrieve_workflow(ops: Ops, workflow_id: str, existing_workflow: bool = True) -> Flow[str]:
    """A handle to a workflow (by default, checking that it exists: from a workflow body, a
    ``DBOS.getStatus`` step, as DBOS records it)."""
    if existing_workflow:
        status = yield from status_flow(ops, workflow_id, legacy_unrecorded=True)
        if status is None:
            raise DBOSNonExistentWorkflowError("target", workflow_id)
    return workflow_id


def get_workflow_status(ops: Ops, workflow_id: str) -> Flow[Optional[WorkflowStatus]]:
    """The workflow's status, inputs and outcome (None if there is no such workflow)."""
    return status_flow(ops, workflow_id)


def get_result(ops: Ops, workflow_id: str, *, polling_interval_sec: float = 1.0) -> Flow[Any]:
    """Wait for the workflow to finish; return its result or raise its error."""
    return result_flow(ops, workflow_id, polling_interval_sec)


def wait_first(
    ops: Ops,
    handles: Sequence[WorkflowHandle[Any]] | Sequence[WorkflowHandleAsync[Any]],
    *,
    polling_interval_sec: float = 1.0,
) -> Flow[Any]:
    """The first of these handles whose workflow is no longer PENDING, ENQUEUED or DELAYED."""
    ids = [h.workflow_id for h in handles]
    first = yield from wait_first_flow(ops.engine(), ids, polling_interval_sec)
    return next(h for h in handles if h.workflow_id == first)


# -- listing ------------------------------------------------------------------------------------


@checkpoint("DBOS.listWorkflows")
def list_workflows(ops: Ops, /, **filters: Any) -> Flow[list[WorkflowStatus]]:
    """Workflows matching every filter given (strings or lists of them; ISO times)."""
    flt = build_filter(**filters)
    eng = ops.engine()
    if flt.application_name is None:
        flt.application_name = eng.app_name
    rows = yield Io(lambda: eng.store.list_workflows(flt))
    return [to_status(eng, row) for row in rows]


@checkpoint("DBOS.listQueuedWorkflows")
def list_queued_workflows(ops: Ops, /, **filters: Any) -> Flow[list[WorkflowStatus]]:
    """Workflows on a queue: ENQUEUED, PENDING or DELAYED unless ``status`` says otherwise."""
    filters["queues_only"] = True
    if filters.get("status") is None:
        filters["status"] = QUEUED_STATUSES
    return list_workflows(ops, **filters)


@checkpoint("DBOS.listWorkflowSteps")
def list_workflow_steps(
    ops: Ops,
    workflow_id: str,
    *,
    load_output: bool = True,
    limit: Optional[int] = None,
    offset: Optional[int] = None,
) -> Flow[list[StepInfo]]:
    """The workflow's checkpointed operations, in order."""
    eng = ops.engine()
    rows = yield Io(lambda: eng.store.list_steps(workflow_id, limit, offset))
    out: list[StepInfo] = []
    for row in rows:
        output: Any = None
        error: Any = None
        if load_output and row.output is not None:
            try:
                output = eng.codec.decode(row.output, row.serialization)
            except DBOSException:
                output = row.output  # shown raw rather than failing the whole listing
        if load_output and row.error is not None:
            error = eng.codec.decode_error(row.error, row.serialization)
        out.append(
            StepInfo(
                function_id=row.function_id,
                function_name=row.function_name,
                output=output,
                error=error,
                child_workflow_id=row.child_workflow_id,
                started_at_epoch_ms=row.started_at_epoch_ms,
                completed_at_epoch_ms=row.completed_at_epoch_ms,
            )
        )
    return out


# -- cancel, resume, fork, delete ---------------------------------------------------------------


def _with_descendants(eng: Engine, workflow_ids: Sequence[str], follow: bool) -> Flow[list[str]]:
    targets = list(dict.fromkeys(workflow_ids))
    frontier = list(targets) if follow else []
    seen = set(targets)
    while frontier:
        found = yield Io(partial(eng.store.children_of, frontier))
        frontier = [c for c in found if c not in seen]
        seen.update(frontier)
        targets.extend(frontier)
    return targets


def _on_tree(
    ops: Ops, workflow_ids: Sequence[str], descendants: bool, act: Callable[[list[str]], T]
) -> Flow[T]:
    """``act`` on these workflows and, if asked, on every workflow they started."""
    targets = yield from _with_descendants(ops.engine(), workflow_ids, descendants)
    done: T = yield Io(partial(act, targets))
    return done


@checkpoint("DBOS.cancelWorkflow")
def cancel_workflows(
    ops: Ops, workflow_ids: Sequence[str], *, cancel_children: bool = False
) -> Flow[list[str]]:
    """Cancel workflows (and, if asked, their descendants); running code stops at its next
    step. Returns the IDs whose status changed."""
    return _on_tree(ops, workflow_ids, cancel_children, ops.engine().cancel)


@checkpoint("DBOS.cancelWorkflow")
def cancel_workflow(ops: Ops, workflow_id: str, *, cancel_children: bool = False) -> Flow[None]:
    """Cancel a workflow (and, if asked, its descendants)."""
    yield from cancel_workflows(ops, [workflow_id], cancel_children=cancel_children)


@checkpoint("DBOS.resumeWorkflow")
def resume_workflows(
    ops: Ops, workflow_ids: Sequence[str], *, queue_name: Optional[str] = None
) -> Flow[list[str]]:
    """Put workflows that did not succeed or fail back on a queue (the internal one by
    default), with their recovery count reset."""
    eng = ops.engine()
    queue = queue_name or INTERNAL_QUEUE_NAME
    ids = list(workflow_ids)
    moved = yield Io(
        lambda: eng.store.resume_workflows(ids, queue, eng.now_ms(), queue_limited(eng, queue))
    )
    if moved:
        eng.wakeups.fire(queue_key(queue))
    return ids


def resume_workflow(ops: Ops, workflow_id: str, *, queue_name: Optional[str] = None) -> Flow[str]:
    """Put a workflow back on a queue; returns a handle to it (from a workflow body, the
    step records no output, as DBOS's does)."""

    def resume() -> Flow[None]:
        yield from resume_workflows(ops, [workflow_id], queue_name=queue_name)

    yield from ops.checkpointed("DBOS.resumeWorkflow", resume())
    return workflow_id


def fork_workflow(
    ops: Ops,
    workflow_id: str,
    start_step: int,
    *,
    application_version: Optional[str] = None,
    queue_name: Optional[str] = None,
    queue_partition_key: Optional[str] = None,
    replacement_children: Optional[dict[str, str]] = None,
    timeout_seconds: Optional[float] = None,
    forked_workflow_id: Optional[str] = None,
) -> Flow[str]:
    """A new workflow with the same inputs that re-runs this one from ``start_step`` (earlier
    checkpoints, events and stream values are copied); its ID comes from ``SetWorkflowID``,
    ``forked_workflow_id`` or a fresh UUID."""
    if isinstance(start_step, bool) or not isinstance(start_step, int):
        raise DBOSException(f"start_step must be an integer, got {start_step!r}")
    start_step = max(start_step, 0)  # before the first step (DBOS takes -1 so): copy nothing
    if timeout_seconds is not None and timeout_seconds <= 0:
        raise DBOSException("timeout_seconds must be positive")
    # Taken now, not when the flow runs: a replayed fork still consumes SetWorkflowID.
    new_id = validate_workflow_id(forked_workflow_id or take_workflow_id() or str(uuid.uuid4()))
    eng = ops.engine()
    queue = queue_name or INTERNAL_QUEUE_NAME
    request = ForkRequest(
        source_id=workflow_id,
        new_id=new_id,
        start_step=start_step,
        queue_name=queue,
        now_ms=eng.now_ms(),
        owner_xid=uuid.uuid4().hex,
        application_version=application_version,
        partition_key=queue_partition_key,
        timeout_ms=int(timeout_seconds * 1000) if timeout_seconds is not None else None,
        application_name=eng.app_name,
        replacement_children=dict(replacement_children or {}),
    )
    # From a workflow body, two steps as DBOS records them: the fork, then the new
    # workflow's status (the check that it exists behind the handle returned).
    forked: str = yield from ops.checkpointed("DBOS.forkWorkflow", _fork(eng, request))
    status = yield from status_flow(ops, forked, legacy_unrecorded=True)
    if status is None:
        raise DBOSNonExistentWorkflowError("target", forked)
    return forked


def _fork(eng: Engine, request: ForkRequest) -> Flow[str]:
    yield Io(lambda: eng.store.fork_workflow(request))
    eng.wakeups.fire(queue_key(request.queue_name))
    return request.new_id


@checkpoint("DBOS.deleteWorkflow")
def delete_workflows(
    ops: Ops, workflow_ids: Sequence[str], *, delete_children: bool = False
) -> Flow[int]:
    """Delete workflows (and, if asked, their descendants) with everything recorded for
    them, their transactions' records in the application database included; returns how
    many rows went."""
    store = ops.engine().store
    app_db = application_database() if ops.runtime() is not None else None

    def delete(targets: list[str]) -> int:
        deleted = store.delete_workflows(targets)
        if app_db is not None:
            app_db.delete_outputs(targets)
        return deleted

    return _on_tree(ops, workflow_ids, delete_children, delete)


@checkpoint("DBOS.deleteWorkflow")
def delete_workflow(ops: Ops, workflow_id: str, *, delete_children: bool = False) -> Flow[None]:
    """Delete a workflow (and, if asked, its descendants)."""
    yield from delete_workflows(ops, [workflow_id], delete_children=delete_children)


# -- delays and attributes ----------------------------------------------------------------------


@checkpoint("DBOS.setWorkflowDelay")
def set_workflow_delay(
    ops: Ops,
    workflow_id: str,
    *,
    delay_seconds: Optional[float] = None,
    delay_until_epoch_ms: Optional[int] = None,
) -> Flow[bool]:
    """Move a DELAYED workflow's start (give exactly one of the two)."""
    if (delay_seconds is None) == (delay_until_epoch_ms is None):
        raise DBOSException("give exactly one of delay_seconds and delay_until_epoch_ms")
    eng = ops.engine()
    if delay_seconds is not None:
        if delay_seconds < 0:
            raise DBOSException("delay_seconds must be non-negative")
        until = eng.now_ms() + int(delay_seconds * 1000)
    else:
        until = int(delay_until_epoch_ms or 0)
    changed: bool = yield Io(lambda: eng.store.set_delay(workflow_id, until))
    if changed:
        eng.wakeups.fire(timer_key(""))
    return changed


@checkpoint("DBOS.updateWorkflowAttributes")
def update_workflow_attributes(
    ops: Ops, workflow_id: str, attributes: Optional[dict[str, Any]]
) -> Flow[None]:
    """Replace the workflow's JSON attributes (None clears them)."""
    if attributes is not None and not isinstance(attributes, dict):
        raise DBOSException("workflow attributes must be a dict or None")
    try:
        text = json.dumps(attributes) if attributes is not None else None
    except (TypeError, ValueError) as exc:
        raise DBOSException(f"workflow attributes must be JSON-serializable: {exc}") from exc
    eng = ops.engine()
    found = yield Io(lambda: eng.store.set_attributes(workflow_id, text))
    if not found:
        raise DBOSNonExistentWorkflowError("target", workflow_id)
