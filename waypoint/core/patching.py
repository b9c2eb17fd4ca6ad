"""``DBOS.patch``: a marker checkpoint that lets new code take a new path only in workflows
that had not reached that point when the code changed."""

from __future__ import annotations

from waypoint.core.effects import Flow
from waypoint.core.run import WorkflowRun
from waypoint.core.steps import check_cancelled, record
from waypoint.error import DBOSException


def patch_flow(run: WorkflowRun, name: str, deprecated: bool, enabled: bool) -> Flow[bool]:
    """Take the patched code path (True) or the old one (False), deterministically."""
    if not enabled:
        raise DBOSException("DBOS.patch needs enable_patching=True in the config")
    rt = run.runtime
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
