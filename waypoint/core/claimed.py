"""Running the rows a claim or a recovery took: their checkpoints loaded in one read, then
each one started in the background (or handed back, or dead-lettered). Split from
``execution``, which runs one workflow, so each module keeps one job.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from typing import Any, Optional

from waypoint.core.execution import Histories, run_in_background
from waypoint.core.parking import StoredCall
from waypoint.core.registrations import REGISTRY
from waypoint.core.run import RunEntry, WorkflowRun
from waypoint.core.runtime import Runtime
from waypoint.core.serialization import PICKLE_NAME
from waypoint.core.types import Auth
from waypoint.error import (
    DBOSWorkflowFunctionNotFoundError,
    MaxRecoveryAttemptsExceededError,
    WaypointPayloadError,
)
from waypoint.storage.protocol import (
    Completion,
    WorkflowRow,
    done_key,
)

logger = logging.getLogger("waypoint")


def load_histories(rt: Runtime, rows: Sequence[WorkflowRow]) -> Optional[Histories]:
    """The checkpoints of every row just claimed, in one read (None if it failed: each run
    then loads its own when it starts). Loaded now or when the run starts, they are the
    same: the claim gave the rows a new run token, and no other run can add to them."""
    if not rows:
        return {}
    try:
        return rt.store.load_steps_many([r.workflow_id for r in rows])
    except Exception as exc:
        logger.warning(
            "could not load the checkpoints of %d claimed workflow(s): %s", len(rows), exc
        )
        return None


def dispatch_claimed(
    rt: Runtime,
    row: WorkflowRow,
    verify: bool = False,
    admitted: Optional[Callable[[RunEntry], None]] = None,
    histories: Optional[Histories] = None,
) -> None:
    """Run a workflow this executor just claimed from a queue (or from recovery);
    ``admitted`` sees its entry before it starts (the dispatcher's accounting);
    ``histories``: the checkpoints of the rows claimed with it (``load_histories``)."""
    info = REGISTRY.workflow(row.name or "")
    if info is None:
        _unrunnable(row, f"no workflow named {row.name!r} is registered in this process")
        return
    attempts = row.recovery_attempts or 0
    if info.max_recovery_attempts is not None and attempts > info.max_recovery_attempts + 1:
        if rt.store.dead_letter(row.workflow_id, attempts, rt.now_ms()):
            logger.error(
                "%s", MaxRecoveryAttemptsExceededError(row.workflow_id, info.max_recovery_attempts)
            )
            rt.wakeups.fire(done_key(row.workflow_id))
        return
    bound: Any = None
    if info.kind == "instance":
        bound = REGISTRY.instance(row.class_name or "", row.config_name or "")
        if bound is None:
            _unrunnable(row, f"no instance {row.class_name}/{row.config_name} is registered")
            return
    elif info.kind == "class":
        bound = REGISTRY.classes.get(row.class_name or "")
        if bound is None:
            _unrunnable(row, f"no class {row.class_name} is registered")
            return
    stored = StoredCall(info, row.inputs, row.serialization, bound)
    try:
        call_args, kwargs = stored.decode(rt)
        serializer = rt.codec.by_name(row.serialization)
    except WaypointPayloadError as exc:
        if rt.codec.refuse_pickle and row.serialization in (None, PICKLE_NAME):
            # Readable by a process that unpickles: not this one's to fail.
            _unrunnable(row, f"its inputs are a pickle: {exc}")
            return
        logger.error("workflow %s has unreadable inputs and fails: %s", row.workflow_id, exc)
        rt.store.complete_workflow(
            Completion(
                row.workflow_id,
                row.owner_xid or "",
                "ERROR",
                None,
                rt.codec.encode_error(exc, rt.codec.default),
                rt.now_ms(),
            )
        )
        rt.wakeups.fire(done_key(row.workflow_id))
        return
    entry, fresh = rt.register(row.workflow_id)
    if not fresh:
        _hand_over(rt, entry, row, admitted)
        return
    roles = json.loads(row.authenticated_roles) if row.authenticated_roles else None
    run = WorkflowRun(
        rt,
        row.workflow_id,
        info.name,
        row.owner_xid or "",
        serializer,
        entry,
        is_async=info.is_async,
        deadline_ms=row.workflow_deadline_epoch_ms,
        auth=Auth(row.authenticated_user, roles, row.assumed_role)
        if row.authenticated_user or roles
        else None,
        class_name=row.class_name,
        config_name=row.config_name,
        queue_name=row.queue_name,
        attributes=row.attributes,
    )
    entry.run = run
    if admitted is not None:
        admitted(entry)
    rt.arm_deadline(row.workflow_id, run.deadline_ms)
    if histories is not None and not verify:
        run.replay = histories.get(row.workflow_id, {})
        run_in_background(rt, run, stored, call_args, kwargs, load_replay=False)
        return
    run_in_background(rt, run, stored, call_args, kwargs, load_replay=True, verify=verify)


def _unrunnable(row: WorkflowRow, why: str) -> None:
    """The claimed workflow cannot run in this process: say so (another process, or this
    one after a deploy, runs it when it is claimed again)."""
    logger.error("%s", DBOSWorkflowFunctionNotFoundError(row.workflow_id, why))


def _hand_over(
    rt: Runtime,
    existing: RunEntry,
    row: WorkflowRow,
    admitted: Optional[Callable[[RunEntry], None]],
) -> None:
    """The workflow was re-claimed while it still runs here: the running execution adopts the
    new claim; if it loses a race with its own old token, the claim is re-run after it ends."""
    if existing.run is not None and row.owner_xid:
        existing.run.owner_xid = row.owner_xid

    def later() -> None:
        if existing.lost:
            dispatch_claimed(rt, row, verify=True, admitted=admitted)

    def ended() -> None:
        # No thread waits for the end (the run may be suspended for days).
        try:
            rt.pool.submit(later, name=f"handover-{row.workflow_id}")
        except RuntimeError:
            pass  # the runtime stopped: the next launch recovers the workflow

    existing.done.on_set(ended)
