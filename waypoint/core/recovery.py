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

from waypoint.core.claimed import dispatch_claimed, load_histories
from waypoint.core.runtime import Runtime
from waypoint.core.types import INTERNAL_QUEUE_NAME
from waypoint.storage.protocol import RecoveryRequest

logger = logging.getLogger("waypoint")


def compatible_version(rt: Runtime) -> str:
    """The application version a claim or a recovery by this executor is judged by. Which
    workflows that version may take is one rule, in SQL (``SqlCore._runnable``): its own
    version's (DBOS's rule), unversioned ones when it is the latest, and with
    version_compatibility "fingerprint" an older version's whose fingerprint it shares."""
    return rt.app_version


def recover(rt: Runtime, executor_ids: list[str]) -> list[str]:
    """Take back these executors' PENDING workflows and run here those this version may run
    (its own; with version_compatibility "fingerprint", also an older version's whose
    fingerprint it shares); the others wait on their queue for an executor that may. Returns
    every ID taken back."""
    found = rt.store.recover_pending(
        RecoveryRequest(
            executor_ids,
            compatible_version(rt),
            rt.app_name,
            INTERNAL_QUEUE_NAME,
            rt.now_ms(),
            claimant=(rt.executor_id, uuid.uuid4().hex),
            compatible=rt.compatible_versions,
        )
    )
    if found.workflow_ids:
        logger.info(
            "recovering %d pending workflow(s) of executor(s) %s",
            len(found.workflow_ids),
            executor_ids,
        )
        rt.observers.recovered(executor_ids, found.workflow_ids)
        histories = load_histories(rt, found.claimed)
        for row in found.claimed:
            dispatch_claimed(rt, row, histories=histories)
        rt.dispatch.wake()
    return found.workflow_ids
