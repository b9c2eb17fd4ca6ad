"""Taking back the PENDING workflows of executors (this one at launch, dead ones, or any the
recovery endpoint names) and running them here.

The claim is the single admission point: recovery moves rows to this executor in the same
statement that requeues them, with a fresh run token, so two executors asked to recover the
same workflows never both run one. Queued workflows go back on their own queue, where its
limits apply.
"""

from __future__ import annotations

import logging
import uuid

from waypoint.core.execution import dispatch_claimed
from waypoint.core.runtime import Runtime
from waypoint.core.types import INTERNAL_QUEUE_NAME
from waypoint.storage.protocol import RecoveryRequest

logger = logging.getLogger("waypoint")


def compatible_version(rt: Runtime) -> str:
    """The application version whose work this executor may take over from others (a dead
    or gone executor's PENDING workflows): today exactly its own, as in DBOS."""
    return rt.app_version


def recover(rt: Runtime, executor_ids: list[str]) -> list[str]:
    """Recover these executors' PENDING workflows of our version; returns their IDs."""
    found = rt.store.recover_pending(
        RecoveryRequest(
            executor_ids,
            compatible_version(rt),
            rt.app_name,
            INTERNAL_QUEUE_NAME,
            rt.now_ms(),
            claimant=(rt.executor_id, uuid.uuid4().hex),
        )
    )
    if found.workflow_ids:
        logger.info(
            "recovering %d pending workflow(s) of executor(s) %s",
            len(found.workflow_ids),
            executor_ids,
        )
        rt.observers.recovered(executor_ids, found.workflow_ids)
        for row in found.claimed:
            dispatch_claimed(rt, row)
        rt.dispatch.wake()
    return found.workflow_ids
