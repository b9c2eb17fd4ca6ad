"""``DBOS.patch``: a marker checkpoint that lets new code take a new path only in workflows
that had not reached that point when the code changed."""

from __future__ import annotations

from waypoint.core.effects import Flow, Yield
from waypoint.core.run import WorkflowRun
from waypoint.core.steps import check_cancelled, record
from waypoint.error import DBOSException, DBOSPatchNondeterminismError


def patch_flow(run: WorkflowRun, name: str, deprecated: bool, enabled: bool) -> Flow[bool]:
    """Take the patched code path (True) or the old one (False), deterministically.

    Driven on an event loop, the flow first lets the workflow's other ready tasks run (as
    DBOS's probe of the database does): if one of them takes a position meanwhile, the
    marker's position would depend on task scheduling, and the patch fails instead."""
    what = "DBOS.deprecate_patch" if deprecated else "DBOS.patch"
    if not enabled:
        raise DBOSException(f"{what} needs enable_patching=True in the config")
    rt = run.runtime
    marker = f"DBOS.patch-{name}"
    position = run.peek_function_id()
    yield Yield()
    if run.peek_function_id() != position:
        raise DBOSPatchNondeterminismError(
            f"Cannot deterministically apply patch {marker} in workflow {run.workflow_id}: "
            f"{what} was called concurrently with other operations in the same workflow, so "
            "the position of its marker would depend on task scheduling; call it from "
            "sequential workflow code. Check that your workflow is deterministic."
        )
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
    yield from record(rt, run, fid, marker, rt.now_ms())
    return True
