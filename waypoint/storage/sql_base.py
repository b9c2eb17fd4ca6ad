"""SQL shared by both backends, written once against a small ``Dialect``.

Backends subclass ``SqlStore`` and supply the connection plumbing (``_all``, ``_exec``, ``_tx``)
plus their own versions of the few hot statements where PostgreSQL can do in one round trip
what SQLite does in one local transaction.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, Optional, TypeVar

from waypoint.storage.errors import UnsupportedError
from waypoint.storage.protocol import (
    WORKFLOW_COLUMNS,
    InitOutcome,
    NewWorkflow,
    RecordOutcome,
    StepRecord,
    StepRow,
    WorkflowRow,
)
from waypoint.storage.retry import RetryPolicy

T = TypeVar("T")
Params = dict[str, Any]
Row = tuple[Any, ...]


class Cursor:
    """What a transaction body gets: execute and read rows, nothing else."""

    def __init__(self, raw: Any, render: Callable[[str], str]) -> None:
        self._raw = raw
        self._render = render

    def all(self, sql: str, params: Optional[Params] = None) -> list[Row]:
        self._raw.execute(self._render(sql), params or {})
        return list(self._raw.fetchall()) if self._raw.description else []

    def one(self, sql: str, params: Optional[Params] = None) -> Optional[Row]:
        rows = self.all(sql, params)
        return rows[0] if rows else None

    def exec(self, sql: str, params: Optional[Params] = None) -> int:
        self._raw.execute(self._render(sql), params or {})
        return int(self._raw.rowcount)


class Dialect(ABC):
    name: str
    true: str
    false: str

    @abstractmethod
    def t(self, table: str) -> str:
        """A table name, schema-qualified where the backend has schemas."""

    @abstractmethod
    def any(self, column: str, param: str) -> str:
        """``column`` equals any element of the list parameter ``param``."""

    @abstractmethod
    def list_param(self, values: Sequence[Any]) -> Any: ...

    @abstractmethod
    def render(self, sql: str) -> str:
        """Turn ``%(name)s`` placeholders into the driver's style."""

    # The database's clock in epoch milliseconds: limits and windows shared by processes
    # must not depend on any one machine's clock.
    now_ms: str
    # Suffix that locks selected rows, skipping rows other claimers hold.
    skip_locked: str

    def lock_queue(self, cur: Cursor, queue_name: str) -> None:  # noqa: B027
        """Serialise claimers of one queue for the rest of the transaction (SQLite: the
        IMMEDIATE transaction already serialises every writer, so nothing to do)."""

    def notify(self, key_expr: str) -> str:
        """A RETURNING item that tells other processes about a change (``""``: cannot)."""
        return ""

    def notify_in(self, cur: Cursor, key_expr: str, params: Params) -> None:  # noqa: B027
        """Tell other processes about a change made in this transaction (if possible)."""

    def starts_with(self, column: str, param: str) -> str:
        """``column`` starts with the literal text of ``param`` (no wildcards, case matters).
        SQLite's LIKE ignores ASCII case, so it compares the leading substring instead."""
        return f"substr({column}, 1, length(%({param})s)) = %({param})s"

    def prefix_param(self, prefix: str) -> str:
        return prefix

    least = "MIN"  # the smaller of two values (PostgreSQL: LEAST)
    greatest = "MAX"  # the larger of two values (PostgreSQL: GREATEST)

    def json_contains(self, column: str, param: str) -> str:
        """``column`` (a JSON object) contains the JSON object parameter ``param``."""
        raise UnsupportedError("filtering workflows by attributes needs PostgreSQL")

    def json_value(self, param: str) -> str:
        """The placeholder of a JSON text parameter stored in a JSON column."""
        return f"%({param})s"

    # What an OFFSET without a LIMIT needs in front of it (SQLite: LIMIT -1).
    no_limit = " LIMIT -1"

    # Row locks for read-modify-write inside a transaction (SQLite: the write lock suffices).
    lock_shared = ""
    lock_exclusive = ""
    # A column that orders rows by insertion, for ties on timestamps.
    insertion_order = "rowid"

    def notify_when(self, condition: str, key_expr: str) -> str:
        """Like ``notify`` but only for rows matching ``condition``."""
        expr = self.notify(key_expr)
        return f"CASE WHEN {condition} THEN {expr} END" if expr else ""

    def returning(self, *items: str) -> str:
        present = [i for i in items if i]
        return " RETURNING " + ", ".join(present) if present else ""


SELECT_WORKFLOW = ", ".join(WORKFLOW_COLUMNS)
STEP_COLUMNS = (
    "function_id, function_name, output, error, child_workflow_id, "
    "started_at_epoch_ms, completed_at_epoch_ms, serialization"
)


def workflow_row(row: Row) -> WorkflowRow:
    values = list(row)
    values[WORKFLOW_COLUMNS.index("was_forked_from")] = bool(
        values[WORKFLOW_COLUMNS.index("was_forked_from")]
    )
    return WorkflowRow(*values)


def step_row(row: Row) -> StepRow:
    return StepRow(*row)


INIT_COLUMNS = (
    "workflow_uuid",
    "status",
    "name",
    "class_name",
    "config_name",
    "inputs",
    "serialization",
    "owner_xid",
    "executor_id",
    "application_version",
    "application_id",
    "application_name",
    "created_at",
    "updated_at",
    "authenticated_user",
    "assumed_role",
    "authenticated_roles",
    "queue_name",
    "queue_partition_key",
    "deduplication_id",
    "priority",
    "workflow_timeout_ms",
    "workflow_deadline_epoch_ms",
    "delay_until_epoch_ms",
    "parent_workflow_id",
    "recovery_attempts",
    "attributes",
    "schedule_name",
    "forked_from",
    "started_at_epoch_ms",
    "is_debounced",
    "debounce_deadline_epoch_ms",
)

EXISTING_COLUMNS = (
    "status, name, class_name, config_name, serialization, output, error, "
    "workflow_deadline_epoch_ms, queue_name, owner_xid"
)


def init_params(wf: NewWorkflow) -> Params:
    return {
        "workflow_uuid": wf.workflow_id,
        "status": wf.status,
        "name": wf.name,
        "class_name": wf.class_name,
        "config_name": wf.config_name,
        "inputs": wf.inputs,
        "serialization": wf.serialization,
        "owner_xid": wf.owner_xid,
        "executor_id": wf.executor_id,
        "application_version": wf.application_version,
        "application_id": wf.application_id,
        "application_name": wf.application_name,
        "created_at": wf.created_at,
        "updated_at": wf.created_at,
        "authenticated_user": wf.authenticated_user,
        "assumed_role": wf.assumed_role,
        "authenticated_roles": wf.authenticated_roles,
        "queue_name": wf.queue_name,
        "queue_partition_key": wf.queue_partition_key,
        "deduplication_id": wf.deduplication_id,
        "priority": wf.priority,
        "workflow_timeout_ms": wf.workflow_timeout_ms,
        "workflow_deadline_epoch_ms": wf.workflow_deadline_epoch_ms,
        "delay_until_epoch_ms": wf.delay_until_epoch_ms,
        "parent_workflow_id": wf.parent_workflow_id,
        "recovery_attempts": wf.recovery_attempts,
        "attributes": wf.attributes,
        "schedule_name": wf.schedule_name,
        "forked_from": wf.forked_from,
        "started_at_epoch_ms": wf.started_at_epoch_ms,
        "is_debounced": wf.is_debounced,
        "debounce_deadline_epoch_ms": wf.debounce_deadline_epoch_ms,
    }


def existing_outcome(row: Row, owner_xid: str) -> InitOutcome:
    status, name, cls, cfg, ser, output, error, deadline, queue, owner = row
    return InitOutcome(
        created=owner == owner_xid,
        status=status,
        name=name,
        class_name=cls,
        config_name=cfg,
        serialization=ser,
        output=output,
        error=error,
        workflow_deadline_epoch_ms=deadline,
        queue_name=queue,
    )


def created_outcome(wf: NewWorkflow) -> InitOutcome:
    return InitOutcome(
        created=True,
        status=wf.status,
        name=wf.name,
        class_name=wf.class_name,
        config_name=wf.config_name,
        serialization=wf.serialization,
        output=None,
        error=None,
        workflow_deadline_epoch_ms=wf.workflow_deadline_epoch_ms,
        queue_name=wf.queue_name,
    )


class SqlCore(ABC):
    """Plumbing shared by the SQL mixins: connections, retries, fenced checkpoints."""

    d: Dialect

    retry: RetryPolicy

    # -- plumbing supplied by the backend (single attempts, no retry) ---------------------------
    @abstractmethod
    def _all_raw(self, sql: str, params: Params) -> list[Row]: ...

    @abstractmethod
    def _exec_raw(self, sql: str, params: Params) -> int: ...

    @abstractmethod
    def _tx_raw(self, body: Callable[[Cursor], T]) -> T: ...

    # -- the same, retried through outages ------------------------------------------------------
    def _all(self, sql: str, params: Params, what: str) -> list[Row]:
        return self.retry.run(lambda: self._all_raw(sql, params), what)

    def _exec(self, sql: str, params: Params, what: str) -> int:
        return self.retry.run(lambda: self._exec_raw(sql, params), what)

    def _tx(self, body: Callable[[Cursor], T], what: str) -> T:
        return self.retry.run(lambda: self._tx_raw(body), what)

    def _one(self, sql: str, params: Params, what: str) -> Optional[Row]:
        rows = self._all(sql, params, what)
        return rows[0] if rows else None

    def _claim_retrying(self, token: str, attempt: Callable[[], list[Row]]) -> list[Row]:
        """Retry a claim; after an ambiguous failure first look for rows it already claimed,
        so a lost acknowledgement cannot strand workflows PENDING on this executor."""
        tried = False

        def op() -> list[Row]:
            nonlocal tried
            if tried:
                rows = self._all_raw(self._reclaim_sql(), {"token": token})
                if rows:
                    return rows
            tried = True
            return attempt()

        return self.retry.run(op, "claim queued workflows")

    def _claim_set(self) -> str:
        return (
            "status = 'PENDING', executor_id = %(executor)s, "
            "application_version = %(ver)s, "
            "application_name = COALESCE(application_name, %(app)s), "
            "started_at_epoch_ms = %(now)s, updated_at = %(now)s, owner_xid = %(token)s, "
            "recovery_attempts = COALESCE(recovery_attempts, 0) + 1, "
            "workflow_deadline_epoch_ms = CASE WHEN workflow_timeout_ms IS NOT NULL "
            "AND workflow_deadline_epoch_ms IS NULL THEN %(now)s + workflow_timeout_ms "
            "ELSE workflow_deadline_epoch_ms END"
        )

    def _reclaim_sql(self) -> str:
        return (
            f"SELECT {SELECT_WORKFLOW} FROM {self.d.t('workflow_status')} "
            "WHERE status = 'PENDING' AND owner_xid = %(token)s"
        )

    # -- checkpoints inside a transaction ----------------------------------------------------
    def _record_in(self, cur: Cursor, rec: StepRecord) -> RecordOutcome:
        """Fenced, idempotent checkpoint as part of a larger transaction."""
        wf = cur.one(
            f"SELECT status, owner_xid FROM {self.d.t('workflow_status')} "
            "WHERE workflow_uuid = %(wf)s" + self.d.lock_shared,
            {"wf": rec.workflow_id},
        )
        if wf is None or wf[1] != rec.owner_xid:
            return RecordOutcome(False, wf[0] if wf else None)
        oo = self.d.t("operation_outputs")
        inserted = cur.one(
            f"INSERT INTO {oo} (workflow_uuid, function_id, function_name, output, error, "
            "child_workflow_id, started_at_epoch_ms, completed_at_epoch_ms, serialization, "
            "owner_xid, application_name) VALUES (%(wf)s, %(fid)s, %(fname)s, %(output)s, "
            "%(error)s, %(child)s, %(started)s, %(completed)s, %(ser)s, %(owner)s, %(app)s) "
            "ON CONFLICT (workflow_uuid, function_id) DO NOTHING RETURNING owner_xid",
            {
                "wf": rec.workflow_id,
                "fid": rec.function_id,
                "fname": rec.function_name,
                "output": rec.output,
                "error": rec.error,
                "child": rec.child_workflow_id,
                "started": rec.started_at_epoch_ms,
                "completed": rec.completed_at_epoch_ms,
                "ser": rec.serialization,
                "owner": rec.owner_xid,
                "app": rec.application_name,
            },
        )
        if inserted is not None:
            return RecordOutcome(True, wf[0])
        existing = cur.one(
            f"SELECT owner_xid FROM {oo} WHERE workflow_uuid = %(wf)s AND function_id = %(fid)s",
            {"wf": rec.workflow_id, "fid": rec.function_id},
        )
        return RecordOutcome(existing is not None and existing[0] == rec.owner_xid, wf[0])


def _like_prefix(prefix: str) -> str:
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)


def dumps_list(values: Sequence[Any]) -> str:
    return json.dumps(list(values))
