"""Managing workflows from outside their execution: resume, fork, delete, delays, attributes,
versions, retention, patches. Shared by ``DBOS``, ``DBOSClient``, the admin API and the CLI."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import Any, Optional

from waypoint.core.context import take_workflow_id
from waypoint.core.effects import Flow
from waypoint.core.engine import Engine
from waypoint.core.run import WorkflowRun
from waypoint.core.steps import check_cancelled, record
from waypoint.core.types import INTERNAL_QUEUE_NAME, StepInfo, VersionInfo
from waypoint.core.workflows import validate_workflow_id
from waypoint.error import DBOSException, DBOSNonExistentWorkflowError
from waypoint.storage.protocol import ForkRequest, queue_key, timer_key


def cancel(eng: Engine, workflow_ids: Sequence[str], cancel_children: bool) -> list[str]:
    targets = list(dict.fromkeys(workflow_ids))
    if cancel_children:
        frontier = list(targets)
        seen = set(targets)
        while frontier:
            children = [c for c in eng.store.children_of(frontier) if c not in seen]
            seen.update(children)
            targets.extend(children)
            frontier = children
    return eng.cancel(targets)


def steps(
    eng: Engine,
    workflow_id: str,
    load_output: bool = True,
    limit: Optional[int] = None,
    offset: Optional[int] = None,
) -> list[StepInfo]:
    out: list[StepInfo] = []
    for row in eng.store.list_steps(workflow_id, limit, offset):
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


def resume(eng: Engine, workflow_ids: Sequence[str], queue_name: Optional[str]) -> list[str]:
    queue = queue_name or INTERNAL_QUEUE_NAME
    moved = eng.store.resume_workflows(list(workflow_ids), queue, eng.now_ms())
    if moved:
        eng.wakeups.fire(queue_key(queue))
    return moved


def fork(
    eng: Engine,
    workflow_id: str,
    start_step: int,
    *,
    application_version: Optional[str] = None,
    queue_name: Optional[str] = None,
    queue_partition_key: Optional[str] = None,
    replacement_children: Optional[dict[str, str]] = None,
    timeout_seconds: Optional[float] = None,
    new_workflow_id: Optional[str] = None,
) -> str:
    if isinstance(start_step, bool) or not isinstance(start_step, int) or start_step < 0:
        raise DBOSException(f"start_step must be a non-negative integer, got {start_step!r}")
    if timeout_seconds is not None and timeout_seconds <= 0:
        raise DBOSException("timeout_seconds must be positive")
    new_id = new_workflow_id or take_workflow_id() or str(uuid.uuid4())
    validate_workflow_id(new_id)
    queue = queue_name or INTERNAL_QUEUE_NAME
    eng.store.fork_workflow(
        ForkRequest(
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
    )
    eng.wakeups.fire(queue_key(queue))
    return new_id


def delete(eng: Engine, workflow_ids: Sequence[str], delete_children: bool) -> int:
    targets = list(dict.fromkeys(workflow_ids))
    if delete_children:
        frontier = list(targets)
        seen = set(targets)
        while frontier:
            children = [c for c in eng.store.children_of(frontier) if c not in seen]
            seen.update(children)
            targets.extend(children)
            frontier = children
    return eng.store.delete_workflows(targets)


def set_delay(
    eng: Engine,
    workflow_id: str,
    delay_seconds: Optional[float],
    delay_until_epoch_ms: Optional[int],
) -> bool:
    if (delay_seconds is None) == (delay_until_epoch_ms is None):
        raise DBOSException("give exactly one of delay_seconds and delay_until_epoch_ms")
    if delay_seconds is not None:
        if delay_seconds < 0:
            raise DBOSException("delay_seconds must be non-negative")
        until = eng.now_ms() + int(delay_seconds * 1000)
    else:
        until = int(delay_until_epoch_ms or 0)
    changed = eng.store.set_delay(workflow_id, until)
    if changed:
        eng.wakeups.fire(timer_key(""))
    return changed


def update_attributes(eng: Engine, workflow_id: str, attributes: Optional[dict[str, Any]]) -> None:
    if attributes is not None and not isinstance(attributes, dict):
        raise DBOSException("workflow attributes must be a dict or None")
    try:
        text = json.dumps(attributes) if attributes is not None else None
    except (TypeError, ValueError) as exc:
        raise DBOSException(f"workflow attributes must be JSON-serializable: {exc}") from exc
    if not eng.store.set_attributes(workflow_id, text):
        raise DBOSNonExistentWorkflowError(workflow_id)


def versions(eng: Engine, application_name: Optional[str]) -> list[VersionInfo]:
    return [
        VersionInfo(
            version_id=v.version_id,
            version_name=v.version_name,
            version_timestamp=v.version_timestamp,
            created_at=v.created_at,
            application_name=v.application_name,
        )
        for v in eng.store.list_versions(application_name or eng.app_name)
    ]


def latest_version(eng: Engine, application_name: Optional[str]) -> VersionInfo:
    found = versions(eng, application_name)
    if not found:
        raise DBOSException("no application version is registered yet")
    return found[0]


def set_latest_version(eng: Engine, version_name: str, application_name: Optional[str]) -> None:
    if not eng.store.set_latest_version(version_name, application_name or eng.app_name):
        raise DBOSException(f"application version {version_name!r} is not registered")
    eng.wakeups.fire(f"V:{version_name}")


def executors(
    eng: Engine, application_name: Optional[str], this_incarnation: Optional[str] = None
) -> list[dict[str, Any]]:
    """Executor incarnations (of one application, or all), with seconds since last heard."""
    return [
        {
            "executor_id": r.executor_id,
            "incarnation": r.incarnation,
            "application_name": r.application_name,
            "application_version": r.application_version,
            "hostname": r.hostname,
            "pid": r.pid,
            "started_at": r.started_at,
            "last_seen": r.last_seen,
            "silent_sec": ((r.db_now or 0) - (r.last_seen or 0)) / 1000,
            "this_process": r.incarnation == this_incarnation,
        }
        for r in eng.store.list_executors(application_name)
    ]


def global_timeout(eng: Engine, cutoff_epoch_ms: int) -> list[str]:
    """Cancel every workflow still in flight that was created at or before the cutoff."""
    ids = eng.store.active_created_before(cutoff_epoch_ms)
    return eng.cancel(ids) if ids else []


# -- patching ------------------------------------------------------------------------------------


def patch_flow(run: WorkflowRun, name: str, deprecated: bool) -> Flow[bool]:
    """Take the patched code path (True) or the old one (False), deterministically."""
    rt = run.runtime
    if not rt.config.enable_patching:
        raise DBOSException("DBOS.patch needs enable_patching=True in the config")
    marker = f"DBOS.patch-{name}"
    position = run.peek_function_id()
    rec = run.replay.get(position)
    if rec is not None:
        if rec.function_name == marker:
            run.next_function_id()
            return True
        return deprecated  # the old code ran here: keep its path (a deprecated patch is gone)
    if deprecated:
        return True
    fid = run.next_function_id()
    yield from check_cancelled(rt, run)
    yield from record(rt, run, fid, marker, rt.now_ms(), output=run.serializer.serialize(True))
    return True
