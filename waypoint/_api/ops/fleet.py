"""Operations on the application as a whole: versions, executors, recovery, retention."""

from __future__ import annotations

from typing import Any, Optional

from waypoint._api.ops.base import Ops, checkpoint
from waypoint._api.transactions import prune_transaction_outputs
from waypoint.core.effects import Flow, Io
from waypoint.core.recovery import recover
from waypoint.core.runtime import Runtime
from waypoint.core.settings import valid_app_name
from waypoint.core.types import INTERNAL_QUEUE_NAME, VersionInfo
from waypoint.error import DBOSException
from waypoint.storage.protocol import (
    ExecutorRow,
    RecoveryRequest,
    RetentionRequest,
    version_key,
)


@checkpoint("DBOS.listApplicationVersions")
def list_application_versions(ops: Ops) -> Flow[list[VersionInfo]]:
    """The application's versions, the latest first."""
    eng = ops.engine()
    rows = yield Io(lambda: eng.store.list_versions(eng.app_name))
    return [
        VersionInfo(
            version_id=v.version_id,
            version_name=v.version_name,
            version_timestamp=v.version_timestamp,
            created_at=v.created_at,
            application_name=v.application_name,
        )
        for v in rows
    ]


@checkpoint("DBOS.getLatestApplicationVersion")
def get_latest_application_version(ops: Ops) -> Flow[VersionInfo]:
    """The version unversioned work runs on."""
    found = yield from list_application_versions(ops)
    if not found:
        raise DBOSException("no application version is registered yet")
    return found[0]


@checkpoint("DBOS.setLatestApplicationVersion")
def set_latest_application_version(
    ops: Ops, version_name: str, *, application_name: Optional[str] = None
) -> Flow[None]:
    """Make a registered version the latest (its timestamp becomes now)."""
    eng = ops.engine()
    app = application_name or eng.app_name
    changed = yield Io(lambda: eng.store.set_latest_version(version_name, app))
    if not changed:
        raise DBOSException(f"application version {version_name!r} is not registered")
    eng.wakeups.fire(version_key(version_name))


@checkpoint("DBOS.listExecutors")
def list_executors(ops: Ops) -> Flow[list[dict[str, Any]]]:
    """Executor incarnations of this application (of every one, from a client without an
    application name), with the seconds since each was last heard from."""
    eng = ops.engine()
    rt = ops.runtime()
    this = rt.incarnation if rt is not None else None
    rows = yield Io(lambda: eng.store.list_executors(eng.app_name))
    return [
        {
            "executor_id": r.executor_id,
            "state": executor_state(r),
            "incarnation": r.incarnation,
            "application_name": r.application_name,
            "application_version": r.application_version,
            "hostname": r.hostname,
            "pid": r.pid,
            "started_at": r.started_at,
            "last_seen": r.last_seen,
            "silent_sec": ((r.db_now or 0) - (r.last_seen or 0)) / 1000,
            "this_process": r.incarnation == this,
        }
        for r in rows
    ]


def executor_state(row: ExecutorRow) -> str:
    """'live', 'draining' (shutting down gracefully) or 'gone': handed its work back, or
    not heard from for three of its heartbeat periods (killed, or cut off)."""
    silent_ms = (row.db_now or 0) - (row.last_seen or 0)
    if row.state == "gone" or silent_ms > 3 * row.heartbeat_ms:
        return "gone"
    return row.state


@checkpoint("DBOS.garbageCollect")
def garbage_collect(
    ops: Ops,
    *,
    cutoff_epoch_timestamp_ms: Optional[int] = None,
    rows_threshold: Optional[int] = None,
) -> Flow[int]:
    """Delete finished workflows older than the cutoff or beyond the newest
    ``rows_threshold`` (never PENDING, ENQUEUED or DELAYED ones); returns how many."""
    eng = ops.engine()
    deleted: int = yield Io(
        lambda: eng.store.garbage_collect(
            RetentionRequest(cutoff_epoch_timestamp_ms, rows_threshold, eng.app_name)
        )
    )
    if ops.runtime() is not None:  # and the application database's records of them
        yield Io(lambda: prune_transaction_outputs(eng.store, cutoff_epoch_timestamp_ms))
    return deleted


@checkpoint("DBOS.globalTimeout")
def global_timeout(ops: Ops, cutoff_epoch_timestamp_ms: int) -> Flow[list[str]]:
    """Cancel every in-flight workflow created at or before the cutoff."""
    eng = ops.engine()
    ids = yield Io(lambda: eng.store.active_created_before(cutoff_epoch_timestamp_ms))
    if not ids:
        return []
    cancelled: list[str] = yield Io(lambda: eng.cancel(ids))
    return cancelled


def _launched(ops: Ops) -> Runtime:
    rt = ops.runtime()
    if rt is None:
        raise DBOSException("this operation needs a launched DBOS, not a client")
    return rt


def recover_executors(ops: Ops, executor_ids: list[str]) -> Flow[list[str]]:
    """Take over the PENDING workflows of these executors: a launched DBOS runs those of
    its version here; a client (the ``waypoint`` command) puts them all back on their queues
    (direct ones on the internal queue), fenced, for any live executor of their version."""
    rt = ops.runtime()
    if rt is not None:
        recovered: list[str] = yield Io(lambda: recover(rt, list(executor_ids)))
        return recovered
    eng = ops.engine()
    found = yield Io(
        lambda: eng.store.recover_pending(
            RecoveryRequest(
                list(executor_ids), None, eng.app_name, INTERNAL_QUEUE_NAME, eng.now_ms()
            )
        )
    )
    requeued: list[str] = found.workflow_ids
    return requeued


def deactivate(ops: Ops) -> Flow[None]:
    """Finish what runs here, but dequeue and start nothing new."""
    rt = _launched(ops)
    rt.deactivate()
    yield from ()


def health(ops: Ops) -> Flow[Optional[str]]:
    """None if the system database answers now, else why not (no retries)."""
    eng = ops.engine()

    def ping() -> Optional[str]:
        try:
            eng.store.ping_once()
        except Exception as exc:
            return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return None

    problem: Optional[str] = yield Io(ping)
    return problem


DEFAULT_RENAME_BATCH_SIZE = 10000


def rename_application(
    ops: Ops,
    old_name: Optional[str],
    new_name: str,
    *,
    batch_size: Optional[int] = DEFAULT_RENAME_BATCH_SIZE,
    adopt_unclaimed_rows: bool = False,
) -> Flow[dict[str, int]]:
    """Give ``new_name`` the rows ``old_name`` owns (its queues, schedules, versions,
    workflows and steps), the rows no application owns (``adopt_unclaimed_rows``), or both;
    returns how many moved, by kind. Stop the application being renamed first: its dequeues
    would race the move. Finished workflows and steps move ``batch_size`` at a time (None: in
    one transaction)."""
    if old_name is not None and not old_name:
        raise DBOSException("The application's previous name cannot be empty.")
    if old_name is None and not adopt_unclaimed_rows:
        raise DBOSException(
            "Nothing to re-own: name the application to rename, adopt unclaimed rows, or both."
        )
    if not valid_app_name(new_name):
        raise DBOSException(
            f"Invalid application name '{new_name}'. Application names must be between 3 and "
            "30 characters long and contain only lowercase letters, numbers, dashes, and "
            "underscores."
        )
    if old_name == new_name:
        raise DBOSException(f"Application '{new_name}' already holds that name; nothing to rename.")
    if batch_size is not None and (isinstance(batch_size, bool) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
    eng = ops.engine()
    moved: dict[str, int] = yield Io(
        lambda: eng.store.rename_application(old_name, new_name, adopt_unclaimed_rows, batch_size)
    )
    return moved
