"""Waiting for a workflow's outcome and turning stored rows into Python values.

A run in this process hands its result to local waiters straight from memory (no database
read, no deserialization). Anything else is read from the database: first after a few
milliseconds, then backing off to the caller's polling interval.
"""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING, Any, Optional

from waypoint.core.effects import Flow, Io, Wait
from waypoint.core.engine import Engine, LocalRun
from waypoint.core.suspend import hold_until, suspend
from waypoint.core.types import TERMINAL_STATUSES, WorkflowStatus
from waypoint.core.waiting import wait_or_suspend
from waypoint.error import (
    DBOSAwaitedWorkflowCancelledError,
    DBOSAwaitedWorkflowMaxRecoveryAttemptsExceeded,
    DBOSNonExistentWorkflowError,
)
from waypoint.storage.protocol import Outcome, WorkflowRow, cancel_key, done_key

if TYPE_CHECKING:
    from waypoint.core.run import WorkflowRun

logger = logging.getLogger("waypoint")


class StealOrWait(Wait):
    """Wait for a local run; a sync waiter first runs it itself if no worker has yet."""

    __slots__ = ("entry",)

    def __init__(self, entry: LocalRun, timeout: Optional[float]) -> None:
        super().__init__(entry.done, timeout)
        self.entry = entry

    def run_sync(self) -> bool:
        task = getattr(self.entry, "task", None)
        if task is not None and not self.signal.is_set():
            task.run_inline()
        return self.signal.wait(self.timeout)


def decode_outcome(rt: Engine, workflow_id: str, outcome: Outcome) -> Any:
    status = outcome.status
    if status == "SUCCESS":
        return rt.codec.decode(outcome.output, outcome.serialization)
    if status == "ERROR":
        raise rt.codec.decode_error(outcome.error, outcome.serialization)
    if status == "CANCELLED":
        raise DBOSAwaitedWorkflowCancelledError(workflow_id)
    if status == "MAX_RECOVERY_ATTEMPTS_EXCEEDED":
        raise DBOSAwaitedWorkflowMaxRecoveryAttemptsExceeded(workflow_id)
    raise AssertionError(f"not a terminal status: {status}")


def await_outcome(
    rt: Engine,
    workflow_id: str,
    polling_interval_sec: float = 1.0,
    *,
    wait_if_missing: bool = False,
    waiter: Optional[WorkflowRun] = None,
) -> Flow[Any]:
    """Return the workflow's result (or raise its error) once it is terminal. A workflow
    that does not exist yet is an error, or (``wait_if_missing``, as DBOS's get_result) is
    waited for: it may be being started concurrently. One that existed (it ran here, or was
    read) and is gone is always an error: deleted, or lost with the last commits of a
    primary that failed over to an asynchronous standby; nobody will record its outcome.

    A run in this process hands over its result from memory. Otherwise the completion's
    wake-up (local, or NOTIFY from another process) ends the wait; without notifications the
    database is re-read, quickly at first, then every ``polling_interval_sec``. ``waiter``:
    the workflow body waiting, whose wait may be suspended (``core.suspend``)."""
    interval = max(0.001, float(polling_interval_sec))
    delay = min(0.005, interval)
    keys = (done_key(workflow_id), cancel_key(workflow_id))
    seen = False
    hold = hold_until(waiter)
    while True:
        entry = rt.active(workflow_id)
        if entry is not None:
            seen = True
            wait = interval
            if waiter is not None and hold is not None:
                left = hold - time.monotonic()
                if left <= 0 and not entry.done.is_set():
                    # Running here, and outlasting the grace: resume when it ends.
                    suspend(
                        waiter,
                        rt.wakeups,
                        keys,
                        time.time() + rt.suspended_wait_interval(),
                        signals=(entry.done,),
                    )
                wait = max(0.0, min(wait, left))
            done = yield StealOrWait(entry, wait)
            if done and not entry.lost:
                if entry.error is not None:
                    raise entry.error
                return entry.output
            if not done:
                continue  # still running here; keep waiting on the signal
        signal = rt.wakeups.subscribe(*keys)
        try:
            outcome = yield Io(lambda: rt.store.get_outcome(workflow_id))
            if outcome is None and (seen or not wait_if_missing):
                raise DBOSNonExistentWorkflowError("target", workflow_id)
            seen = seen or outcome is not None
            if outcome is not None and outcome.status in TERMINAL_STATUSES:
                return decode_outcome(rt, workflow_id, outcome)
            wait = rt.wait_interval() if rt.notifications else delay
            later = rt.suspended_wait_interval()
            yield from wait_or_suspend(
                waiter, hold, rt.wakeups, keys, signal, wait, suspended_for=later
            )
            delay = min(delay * 2, interval)
        finally:
            rt.wakeups.unsubscribe(signal, *keys)


def to_status(rt: Engine, row: WorkflowRow) -> WorkflowStatus:
    codec = rt.codec
    inputs: Any = None
    output: Any = None
    error: Any = None
    if row.inputs is not None:
        try:
            args, kwargs = codec.decode_inputs(row.inputs, row.serialization)
            inputs = {"args": args, "kwargs": kwargs}
        except Exception as exc:
            logger.warning("cannot deserialize the inputs of workflow %s: %s", row.workflow_id, exc)
            inputs = row.inputs
    if row.output is not None:
        try:
            output = codec.decode(row.output, row.serialization)
        except Exception as exc:
            logger.warning("cannot deserialize the output of workflow %s: %s", row.workflow_id, exc)
            output = row.output
    if row.error is not None:
        error = codec.decode_error(row.error, row.serialization)
    roles: Any = None
    if row.authenticated_roles:
        try:
            roles = json.loads(row.authenticated_roles)
        except ValueError:
            roles = row.authenticated_roles
    attributes: Any = None
    if row.attributes is not None:
        attributes = _json(row.attributes)
    fields = {name: getattr(row, column) for name, column in _STATUS_COLUMNS.items()}
    return WorkflowStatus(
        **fields,
        authenticated_roles=roles,
        input=inputs,
        output=output,
        error=error,
        attributes=attributes,
    )


# WorkflowStatus fields copied from the row as they are: field name -> WorkflowRow attribute.
_STATUS_COLUMNS = {
    **{
        name: name
        for name in [
            "workflow_id",
            "status",
            "name",
            "class_name",
            "config_name",
            "authenticated_user",
            "assumed_role",
            "created_at",
            "updated_at",
            "queue_name",
            "executor_id",
            "workflow_timeout_ms",
            "workflow_deadline_epoch_ms",
            "deduplication_id",
            "priority",
            "queue_partition_key",
            "forked_from",
            "was_forked_from",
            "parent_workflow_id",
            "delay_until_epoch_ms",
            "completed_at",
            "schedule_name",
            "application_name",
            "recovery_attempts",
        ]
    },
    "app_version": "application_version",
    "dequeued_at": "started_at_epoch_ms",
    "app_id": "application_id",
}


def _json(text: Any) -> Any:
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return text
