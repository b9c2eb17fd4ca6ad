"""SQL shared by both backends, written once against a small ``Dialect``.

Backends subclass ``SqlStore`` and supply the connection plumbing (``_all``, ``_exec``, ``_tx``)
plus their own versions of the few hot statements where PostgreSQL can do in one round trip
what SQLite does in one local transaction.
"""

from __future__ import annotations

import json
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, Optional, TypeVar

from waypoint.error import DBOSNonExistentWorkflowError
from waypoint.storage.protocol import (
    QUEUE_COLUMNS,
    WORKFLOW_COLUMNS,
    ClaimRequest,
    InitOutcome,
    ListFilter,
    NewMessage,
    NewWorkflow,
    Outcome,
    QueueOwnedError,
    QueueRow,
    Received,
    RecordOutcome,
    StepRecord,
    StepRow,
    VersionRow,
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

    least = "MIN"  # the smaller of two values (PostgreSQL: LEAST)
    # Row locks for read-modify-write inside a transaction (SQLite: the write lock suffices).
    lock_shared = ""
    lock_exclusive = ""
    # A column that orders rows by insertion, for ties on timestamps.
    insertion_order = "rowid"

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


class SqlStore(ABC):
    """The backend-independent part of a ``SystemStore``."""

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

    def _reclaim_sql(self) -> str:
        return (
            f"SELECT {SELECT_WORKFLOW} FROM {self.d.t('workflow_status')} "
            "WHERE status = 'PENDING' AND owner_xid = %(token)s"
        )

    # -- a caller's own connection -------------------------------------------------------------
    def _on_caller_connection(self, conn: Any, sql: str, params: Params) -> None:
        if hasattr(conn, "exec_driver_sql"):  # a SQLAlchemy Connection
            conn.exec_driver_sql(self.d.render(sql), params)
        elif hasattr(conn, "get_bind") and callable(getattr(conn, "connection", None)):
            conn.connection().exec_driver_sql(self.d.render(sql), params)  # a SQLAlchemy Session
        else:  # a DB-API connection of this backend's driver
            conn.execute(self.d.render(sql), params)

    def insert_on_connection(self, conn: Any, wf: NewWorkflow) -> None:
        ws = self.d.t("workflow_status")
        cols = ", ".join(INIT_COLUMNS)
        jsonb = "::jsonb" if self.d.name == "postgresql" else ""
        vals = ", ".join(
            f"%({c})s{jsonb}" if c == "attributes" else f"%({c})s" for c in INIT_COLUMNS
        )
        try:
            self._on_caller_connection(
                conn,
                f"INSERT INTO {ws} ({cols}) VALUES ({vals}) ON CONFLICT (workflow_uuid) DO NOTHING",
                init_params(wf),
            )
        except Exception as exc:
            if wf.deduplication_id is not None and "dedup" in str(exc).lower():
                from waypoint.error import DBOSQueueDeduplicatedError

                raise DBOSQueueDeduplicatedError(
                    wf.workflow_id, wf.queue_name or "", wf.deduplication_id
                ) from exc
            raise

    # -- workflows ------------------------------------------------------------------------------
    def get_workflow(self, workflow_id: str) -> Optional[WorkflowRow]:
        row = self._one(
            f"SELECT {SELECT_WORKFLOW} FROM {self.d.t('workflow_status')} "
            "WHERE workflow_uuid = %(id)s",
            {"id": workflow_id},
            "get_workflow",
        )
        return workflow_row(row) if row else None

    def get_outcome(self, workflow_id: str) -> Optional[Outcome]:
        row = self._one(
            f"SELECT status, output, error, serialization FROM {self.d.t('workflow_status')} "
            "WHERE workflow_uuid = %(id)s",
            {"id": workflow_id},
            "get_outcome",
        )
        return Outcome(*row) if row else None

    def get_outcomes(self, workflow_ids: Sequence[str]) -> dict[str, Outcome]:
        if not workflow_ids:
            return {}
        rows = self._all(
            f"SELECT workflow_uuid, status, output, error, serialization "
            f"FROM {self.d.t('workflow_status')} WHERE {self.d.any('workflow_uuid', 'ids')}",
            {"ids": self.d.list_param(list(workflow_ids))},
            "get_outcomes",
        )
        return {r[0]: Outcome(r[1], r[2], r[3], r[4]) for r in rows}

    def complete_workflow(
        self,
        workflow_id: str,
        owner_xid: str,
        status: str,
        output: Optional[str],
        error: Optional[str],
        now_ms: int,
    ) -> bool:
        rows = self._all(
            f"UPDATE {self.d.t('workflow_status')} SET status = %(status)s, output = %(output)s, "
            "error = %(error)s, updated_at = %(now)s, completed_at = %(now)s, "
            "deduplication_id = NULL "
            "WHERE workflow_uuid = %(id)s AND status = 'PENDING' AND owner_xid = %(owner)s"
            + self.d.returning("1", self.d.notify("'d:' || workflow_uuid")),
            {
                "status": status,
                "output": output,
                "error": error,
                "now": now_ms,
                "id": workflow_id,
                "owner": owner_xid,
            },
            "complete_workflow",
        )
        return len(rows) > 0

    def cancel_workflows(self, workflow_ids: Sequence[str], now_ms: int) -> list[str]:
        if not workflow_ids:
            return []
        rows = self._all(
            f"UPDATE {self.d.t('workflow_status')} SET status = 'CANCELLED', "
            "deduplication_id = NULL, started_at_epoch_ms = NULL, queue_name = NULL, "
            "updated_at = %(now)s, completed_at = %(now)s "
            f"WHERE {self.d.any('workflow_uuid', 'ids')} "
            "AND status NOT IN ('SUCCESS', 'ERROR', 'CANCELLED')"
            + self.d.returning("workflow_uuid", self.d.notify("'c:' || workflow_uuid")),
            {"ids": self.d.list_param(list(workflow_ids)), "now": now_ms},
            "cancel_workflows",
        )
        return [r[0] for r in rows]

    def children_of(self, workflow_ids: Sequence[str]) -> list[str]:
        if not workflow_ids:
            return []
        rows = self._all(
            f"SELECT workflow_uuid FROM {self.d.t('workflow_status')} "
            f"WHERE {self.d.any('parent_workflow_id', 'ids')}",
            {"ids": self.d.list_param(list(workflow_ids))},
            "children_of",
        )
        return [r[0] for r in rows]

    def list_workflows(self, flt: ListFilter) -> list[WorkflowRow]:
        where: list[str] = []
        params: Params = {}

        def any_of(column: str, key: str, values: Optional[list[str]]) -> None:
            if values is not None:
                where.append(self.d.any(column, key))
                params[key] = self.d.list_param(values)

        any_of("workflow_uuid", "ids", flt.workflow_ids)
        any_of("status", "status", flt.status)
        any_of("name", "name", flt.name)
        any_of("application_version", "ver", flt.app_version)
        any_of("authenticated_user", "usr", flt.user)
        any_of("queue_name", "queue", flt.queue_name)
        any_of("executor_id", "exec", flt.executor_id)
        any_of("parent_workflow_id", "parent", flt.parent_workflow_id)
        any_of("forked_from", "forked", flt.forked_from)
        if flt.start_time_ms is not None:
            where.append("created_at >= %(start)s")
            params["start"] = flt.start_time_ms
        if flt.end_time_ms is not None:
            where.append("created_at <= %(end)s")
            params["end"] = flt.end_time_ms
        if flt.workflow_id_prefix:
            ors = []
            for i, prefix in enumerate(flt.workflow_id_prefix):
                ors.append(f"workflow_uuid LIKE %(pfx{i})s ESCAPE '\\'")
                params[f"pfx{i}"] = _like_prefix(prefix)
            where.append("(" + " OR ".join(ors) + ")")
        if flt.application_name is not None:
            where.append("(application_name = %(app)s OR application_name IS NULL)")
            params["app"] = flt.application_name
        if flt.queues_only:
            where.append("queue_name IS NOT NULL")
        columns = list(WORKFLOW_COLUMNS)
        select = ", ".join(
            "NULL"
            if (c == "inputs" and not flt.load_input)
            or (c in ("output", "error") and not flt.load_output)
            else c
            for c in columns
        )
        sql = f"SELECT {select} FROM {self.d.t('workflow_status')}"
        if where:
            sql += " WHERE " + " AND ".join(where)
        direction = "DESC" if flt.sort_desc else "ASC"
        sql += f" ORDER BY created_at {direction}, workflow_uuid {direction}"
        if flt.limit is not None:
            sql += " LIMIT %(limit)s"
            params["limit"] = flt.limit
        if flt.offset is not None:
            if flt.limit is None:
                sql += " LIMIT -1" if self.d.name == "sqlite" else ""
            sql += " OFFSET %(offset)s"
            params["offset"] = flt.offset
        return [workflow_row(r) for r in self._all(sql, params, "list_workflows")]

    # -- steps ----------------------------------------------------------------------------------
    def load_steps(self, workflow_id: str) -> dict[int, StepRow]:
        rows = self._all(
            f"SELECT {STEP_COLUMNS} FROM {self.d.t('operation_outputs')} "
            "WHERE workflow_uuid = %(id)s",
            {"id": workflow_id},
            "load_steps",
        )
        return {r[0]: step_row(r) for r in rows}

    def list_steps(
        self, workflow_id: str, limit: Optional[int] = None, offset: Optional[int] = None
    ) -> list[StepRow]:
        sql = (
            f"SELECT {STEP_COLUMNS} FROM {self.d.t('operation_outputs')} "
            "WHERE workflow_uuid = %(id)s ORDER BY function_id"
        )
        params: Params = {"id": workflow_id}
        if limit is not None:
            sql += " LIMIT %(limit)s"
            params["limit"] = limit
        elif offset is not None and self.d.name == "sqlite":
            sql += " LIMIT -1"
        if offset is not None:
            sql += " OFFSET %(offset)s"
            params["offset"] = offset
        return [step_row(r) for r in self._all(sql, params, "list_steps")]

    # -- recovery and dispatch ------------------------------------------------------------------
    def recover_pending(
        self,
        executor_ids: Sequence[str],
        application_version: Optional[str],
        application_name: Optional[str],
        internal_queue: str,
        now_ms: int,
    ) -> list[str]:
        if not executor_ids:
            return []
        sql = (
            f"UPDATE {self.d.t('workflow_status')} SET status = 'ENQUEUED', "
            "started_at_epoch_ms = NULL, updated_at = %(now)s, "
            "queue_name = COALESCE(queue_name, %(iq)s) "
            f"WHERE status = 'PENDING' AND {self.d.any('executor_id', 'ids')} "
        )
        params: Params = {
            "now": now_ms,
            "iq": internal_queue,
            "ids": self.d.list_param(list(executor_ids)),
        }
        if application_version is not None:
            sql += "AND application_version = %(ver)s "
            params["ver"] = application_version
        if application_name is not None:
            sql += "AND (application_name = %(app)s OR application_name IS NULL) "
            params["app"] = application_name
        sql += self.d.returning("workflow_uuid", self.d.notify("'q:' || queue_name"))
        return [r[0] for r in self._all(sql, params, "recover_pending")]

    def _claim_where(self, req: ClaimRequest) -> tuple[str, Params]:
        sql = (
            "queue_name = %(queue)s AND status = 'ENQUEUED' "
            "AND (application_version = %(ver)s"
            + (" OR application_version IS NULL)" if req.accept_unversioned else ")")
        )
        params: Params = {"queue": req.queue_name, "ver": req.application_version}
        if req.application_name is not None:
            sql += " AND (application_name = %(app)s OR application_name IS NULL)"
            params["app"] = req.application_name
        return sql, params

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

    def claim(self, req: ClaimRequest, now_ms: int) -> list[WorkflowRow]:
        if req.shared_budget:
            rows = self._claim_retrying(
                req.claim_token, lambda: self._tx_raw(lambda cur: self._claim_limited(cur, req))
            )
            return [workflow_row(r) for r in rows]
        where, params = self._claim_where(req)
        params.update(
            executor=req.executor_id,
            app=req.application_name,
            now=now_ms,
            token=req.claim_token,
            limit=req.limit,
            rl=False,
        )

        def body(cur: Cursor) -> list[Row]:
            ids = [
                r[0]
                for r in cur.all(
                    f"SELECT workflow_uuid FROM {self.d.t('workflow_status')} WHERE {where} "
                    "ORDER BY priority, created_at LIMIT %(limit)s" + self.d.skip_locked,
                    params,
                )
            ]
            return self._flip(cur, ids, params)

        rows = self._claim_retrying(req.claim_token, lambda: self._tx_raw(body))
        return [workflow_row(r) for r in rows]

    def _flip(self, cur: Cursor, ids: list[str], params: Params) -> list[Row]:
        if not ids:
            return []
        return cur.all(
            f"UPDATE {self.d.t('workflow_status')} SET {self._claim_set()}, "
            "rate_limited = %(rl)s "
            f"WHERE {self.d.any('workflow_uuid', 'ids')} AND status = 'ENQUEUED' "
            f"RETURNING {SELECT_WORKFLOW}",
            {**params, "ids": self.d.list_param(ids)},
        )

    def _claim_limited(self, cur: Cursor, req: ClaimRequest) -> list[Row]:
        """Claim under shared limits: one claimer per queue at a time (a transaction-scoped
        lock), counting from the database what every process has running and has started."""
        ws = self.d.t("workflow_status")
        self.d.lock_queue(cur, req.queue_name)
        row = cur.one(f"SELECT {self.d.now_ms}")
        now = int(row[0]) if row else 0
        q = {"queue": req.queue_name}
        budget = req.limit
        if req.global_concurrency is not None:
            running = cur.one(
                f"SELECT count(*) FROM {ws} WHERE queue_name = %(queue)s AND status = 'PENDING'",
                q,
            )
            budget = min(budget, req.global_concurrency - int(running[0] if running else 0))
        if req.rate_limit is not None:
            limit, period = req.rate_limit
            started = cur.one(
                f"SELECT count(*) FROM {ws} WHERE queue_name = %(queue)s AND rate_limited "
                f"= {self.d.true} AND started_at_epoch_ms > %(since)s "
                "AND status NOT IN ('ENQUEUED', 'DELAYED')",
                {**q, "since": now - int(period * 1000)},
            )
            budget = min(budget, limit - int(started[0] if started else 0))
        if budget <= 0:
            return []
        where, params = self._claim_where(req)
        params.update(
            executor=req.executor_id,
            app=req.application_name,
            now=now,
            token=req.claim_token,
            limit=budget,
            rl=req.rate_limit is not None or req.partition_rate_limit is not None,
        )
        if not req.partitioned:
            ids = [
                r[0]
                for r in cur.all(
                    f"SELECT workflow_uuid FROM {ws} WHERE {where} "
                    "ORDER BY priority, created_at LIMIT %(limit)s" + self.d.skip_locked,
                    params,
                )
            ]
            return self._flip(cur, ids, params)
        return self._flip(cur, self._pick_partitions(cur, req, where, params, budget, now), params)

    def _pick_partitions(
        self, cur: Cursor, req: ClaimRequest, where: str, params: Params, budget: int, now: int
    ) -> list[str]:
        ws = self.d.t("workflow_status")
        q = {"queue": req.queue_name}
        running: dict[str, int] = {}
        if req.partition_concurrency is not None:
            running = {
                r[0]: int(r[1])
                for r in cur.all(
                    f"SELECT queue_partition_key, count(*) FROM {ws} WHERE queue_name = %(queue)s "
                    "AND status = 'PENDING' GROUP BY queue_partition_key",
                    q,
                )
            }
        recent: dict[str, int] = {}
        if req.partition_rate_limit is not None:
            recent = {
                r[0]: int(r[1])
                for r in cur.all(
                    f"SELECT queue_partition_key, count(*) FROM {ws} WHERE queue_name = %(queue)s "
                    f"AND rate_limited = {self.d.true} AND started_at_epoch_ms > %(since)s "
                    "AND status NOT IN ('ENQUEUED', 'DELAYED') GROUP BY queue_partition_key",
                    {**q, "since": now - int(req.partition_rate_limit[1] * 1000)},
                )
            }
        per_partition = budget
        for cap in (
            req.partition_concurrency,
            req.partition_worker_concurrency,
            req.partition_rate_limit[0] if req.partition_rate_limit else None,
        ):
            if cap is not None:
                per_partition = min(per_partition, cap)
        candidates = cur.all(
            "SELECT workflow_uuid, queue_partition_key FROM (SELECT workflow_uuid, "
            "queue_partition_key, priority, created_at, row_number() OVER (PARTITION BY "
            "queue_partition_key ORDER BY priority, created_at) AS rn "
            f"FROM {ws} WHERE {where}) AS c WHERE rn <= %(per)s "
            "ORDER BY priority, created_at",
            {**params, "per": per_partition},
        )
        taken: dict[str, int] = {}
        ids: list[str] = []
        for wfid, key in candidates:
            if len(ids) >= budget:
                break
            n = taken.get(key, 0)
            if req.partition_concurrency is not None and (
                running.get(key, 0) + n >= req.partition_concurrency
            ):
                continue
            if req.partition_worker_concurrency is not None and (
                req.local_partition_running.get(key, 0) + n >= req.partition_worker_concurrency
            ):
                continue
            if req.partition_rate_limit is not None and (
                recent.get(key, 0) + n >= req.partition_rate_limit[0]
            ):
                continue
            taken[key] = n + 1
            ids.append(wfid)
        return ids

    def promote_delayed(self, now_ms: int) -> list[str]:
        rows = self._all(
            f"UPDATE {self.d.t('workflow_status')} SET status = 'ENQUEUED', "
            "updated_at = %(now)s, deduplication_id = CASE WHEN is_debounced = "
            f"{self.d.true} THEN NULL ELSE deduplication_id END "
            "WHERE status = 'DELAYED' AND delay_until_epoch_ms <= %(now)s"
            + self.d.returning("queue_name", self.d.notify("'q:' || queue_name")),
            {"now": now_ms},
            "promote delayed workflows",
        )
        return sorted({r[0] for r in rows if r[0]})

    def next_delayed(self) -> Optional[int]:
        row = self._one(
            f"SELECT MIN(delay_until_epoch_ms) FROM {self.d.t('workflow_status')} "
            "WHERE status = 'DELAYED'",
            {},
            "next delayed workflow",
        )
        return int(row[0]) if row and row[0] is not None else None

    def extend_debounce(
        self,
        queue_name: str,
        deduplication_id: str,
        name: str,
        inputs: str,
        serialization: str,
        delay_until_ms: int,
        application_name: Optional[str],
        now_ms: int,
    ) -> Optional[str]:
        """Push back a pending debounced workflow (never past its deadline) with new inputs."""
        row = self._one(
            f"UPDATE {self.d.t('workflow_status')} SET inputs = %(inputs)s, "
            "serialization = %(ser)s, updated_at = %(now)s, "
            "application_name = COALESCE(application_name, %(app)s), "
            "delay_until_epoch_ms = CASE WHEN debounce_deadline_epoch_ms IS NULL THEN %(until)s "
            f"ELSE {self.d.least}(%(until)s, debounce_deadline_epoch_ms) END "
            "WHERE queue_name = %(queue)s AND deduplication_id = %(dedup)s "
            f"AND status = 'DELAYED' AND is_debounced = {self.d.true} AND name = %(name)s "
            "RETURNING workflow_uuid",
            {
                "inputs": inputs,
                "ser": serialization,
                "now": now_ms,
                "app": application_name,
                "until": delay_until_ms,
                "queue": queue_name,
                "dedup": deduplication_id,
                "name": name,
            },
            "extend a debounced workflow",
        )
        return str(row[0]) if row else None

    def dedup_holder(self, queue_name: str, deduplication_id: str) -> Optional[str]:
        row = self._one(
            f"SELECT workflow_uuid FROM {self.d.t('workflow_status')} "
            "WHERE queue_name = %(queue)s AND deduplication_id = %(dedup)s",
            {"queue": queue_name, "dedup": deduplication_id},
            "find deduplication holder",
        )
        return str(row[0]) if row else None

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

    # -- messages -------------------------------------------------------------------------------
    def send_messages(
        self, messages: Sequence[NewMessage], record: Optional[StepRecord]
    ) -> Optional[RecordOutcome]:
        nt = self.d.t("notifications")
        dests = sorted({m.destination_id for m in messages})

        def body(cur: Cursor) -> Optional[RecordOutcome]:
            outcome: Optional[RecordOutcome] = None
            if record is not None:
                outcome = self._record_in(cur, record)
                if not outcome.accepted:
                    return outcome
            found = {
                r[0]
                for r in cur.all(
                    f"SELECT workflow_uuid FROM {self.d.t('workflow_status')} "
                    f"WHERE {self.d.any('workflow_uuid', 'ids')}",
                    {"ids": self.d.list_param(dests)},
                )
            }
            missing = [d for d in dests if d not in found]
            if missing:
                raise DBOSNonExistentWorkflowError(missing[0])
            for m in messages:
                cur.exec(
                    f"INSERT INTO {nt} (message_uuid, destination_uuid, topic, message, "
                    "serialization) VALUES (%(id)s, %(dest)s, %(topic)s, %(msg)s, %(ser)s) "
                    "ON CONFLICT (message_uuid) DO NOTHING",
                    {
                        "id": m.message_uuid,
                        "dest": m.destination_id,
                        "topic": m.topic,
                        "msg": m.message,
                        "ser": m.serialization,
                    },
                )
            return outcome

        return self._tx(body, "send message")

    def consume_message(self, workflow_id: str, topic: str, record: StepRecord) -> Received:
        nt = self.d.t("notifications")
        oo = self.d.t("operation_outputs")

        def body(cur: Cursor) -> Received:
            wf = cur.one(
                f"SELECT owner_xid FROM {self.d.t('workflow_status')} "
                "WHERE workflow_uuid = %(wf)s" + self.d.lock_shared,
                {"wf": workflow_id},
            )
            if wf is None or wf[0] != record.owner_xid:
                return Received(found=True, accepted=False)
            done = cur.one(
                f"SELECT output, serialization, owner_xid FROM {oo} "
                "WHERE workflow_uuid = %(wf)s AND function_id = %(fid)s",
                {"wf": workflow_id, "fid": record.function_id},
            )
            if done is not None:  # consumed by an earlier attempt whose reply was lost
                return Received(True, done[2] == record.owner_xid, done[0], done[1])
            msg = cur.one(
                f"SELECT message_uuid, message, serialization FROM {nt} "
                "WHERE destination_uuid = %(wf)s AND topic = %(topic)s "
                f"AND consumed = {self.d.false} "
                f"ORDER BY created_at_epoch_ms, {self.d.insertion_order} LIMIT 1"
                + self.d.skip_locked,
                {"wf": workflow_id, "topic": topic},
            )
            if msg is None:
                return Received(found=False, accepted=True)
            cur.exec(
                f"UPDATE {nt} SET consumed = {self.d.true} WHERE message_uuid = %(id)s",
                {"id": msg[0]},
            )
            record.output, record.serialization = msg[1], msg[2]
            outcome = self._record_in(cur, record)
            return Received(True, outcome.accepted, msg[1], msg[2])

        return self._tx(body, "receive message")

    def forks_of(self, workflow_ids: Sequence[str]) -> list[str]:
        found: list[str] = []
        frontier = list(workflow_ids)
        seen = set(frontier)
        while frontier:
            rows = self._all(
                f"SELECT workflow_uuid FROM {self.d.t('workflow_status')} "
                f"WHERE {self.d.any('forked_from', 'ids')}",
                {"ids": self.d.list_param(frontier)},
                "find forks",
            )
            frontier = [r[0] for r in rows if r[0] not in seen]
            seen.update(frontier)
            found.extend(frontier)
        return found

    # -- events ---------------------------------------------------------------------------------
    def set_event(
        self,
        workflow_id: str,
        key: str,
        value: str,
        serialization: Optional[str],
        function_id: int,
        record: Optional[StepRecord],
    ) -> Optional[RecordOutcome]:
        params: Params = {
            "wf": workflow_id,
            "key": key,
            "value": value,
            "ser": serialization,
            "fid": function_id,
        }

        def body(cur: Cursor) -> Optional[RecordOutcome]:
            outcome: Optional[RecordOutcome] = None
            if record is not None:
                outcome = self._record_in(cur, record)
                if not outcome.accepted:
                    return outcome
            cur.exec(
                f"INSERT INTO {self.d.t('workflow_events')} (workflow_uuid, key, value, "
                "serialization) VALUES (%(wf)s, %(key)s, %(value)s, %(ser)s) "
                "ON CONFLICT (workflow_uuid, key) DO UPDATE SET value = excluded.value, "
                "serialization = excluded.serialization",
                params,
            )
            cur.exec(
                f"INSERT INTO {self.d.t('workflow_events_history')} (workflow_uuid, function_id, "
                "key, value, serialization) VALUES (%(wf)s, %(fid)s, %(key)s, %(value)s, "
                "%(ser)s) ON CONFLICT (workflow_uuid, function_id, key) DO UPDATE "
                "SET value = excluded.value, serialization = excluded.serialization",
                params,
            )
            self.d.notify_in(cur, "'e:' || %(wf)s || '::' || %(key)s", params)
            return outcome

        return self._tx(body, "set event")

    def get_event(self, workflow_id: str, key: str) -> Optional[tuple[str, Optional[str]]]:
        row = self._one(
            f"SELECT value, serialization FROM {self.d.t('workflow_events')} "
            "WHERE workflow_uuid = %(wf)s AND key = %(key)s",
            {"wf": workflow_id, "key": key},
            "get event",
        )
        return (row[0], row[1]) if row else None

    def get_events(self, workflow_id: str) -> dict[str, tuple[str, Optional[str]]]:
        rows = self._all(
            f"SELECT key, value, serialization FROM {self.d.t('workflow_events')} "
            "WHERE workflow_uuid = %(wf)s ORDER BY key",
            {"wf": workflow_id},
            "get events",
        )
        return {r[0]: (r[1], r[2]) for r in rows}

    # -- streams --------------------------------------------------------------------------------
    def write_stream(
        self,
        workflow_id: str,
        key: str,
        value: str,
        serialization: Optional[str],
        function_id: int,
        write_key: str,
        record: Optional[StepRecord],
    ) -> Optional[RecordOutcome]:
        st = self.d.t("streams")
        params: Params = {
            "wf": workflow_id,
            "key": key,
            "value": value,
            "ser": serialization,
            "fid": function_id,
            "wk": write_key,
        }

        def body(cur: Cursor) -> Optional[RecordOutcome]:
            outcome: Optional[RecordOutcome] = None
            if record is not None:
                outcome = self._record_in(cur, record)
                if not outcome.accepted:
                    return outcome
            # Writers of one stream queue up on the workflow row, so offsets never collide.
            cur.one(
                f"SELECT 1 FROM {self.d.t('workflow_status')} WHERE workflow_uuid = %(wf)s"
                + self.d.lock_exclusive,
                params,
            )
            cur.exec(
                f'INSERT INTO {st} (workflow_uuid, key, value, "offset", function_id, '
                "serialization, write_key) SELECT %(wf)s, %(key)s, %(value)s, "
                f'COALESCE(MAX("offset"), -1) + 1, %(fid)s, %(ser)s, %(wk)s FROM {st} '
                "WHERE workflow_uuid = %(wf)s AND key = %(key)s "
                "ON CONFLICT (workflow_uuid, key, write_key) WHERE write_key IS NOT NULL "
                "DO NOTHING",
                params,
            )
            self.d.notify_in(cur, "'s:' || %(wf)s || '::' || %(key)s", params)
            return outcome

        return self._tx(body, "write stream")

    def read_stream(
        self, workflow_id: str, key: str, offset: int
    ) -> tuple[Optional[tuple[str, Optional[str]]], Optional[str]]:
        row = self._one(
            f"SELECT s.value, s.serialization, w.status FROM {self.d.t('workflow_status')} w "
            f"LEFT JOIN {self.d.t('streams')} s ON s.workflow_uuid = w.workflow_uuid "
            'AND s.key = %(key)s AND s."offset" = %(offset)s WHERE w.workflow_uuid = %(wf)s',
            {"wf": workflow_id, "key": key, "offset": offset},
            "read stream",
        )
        if row is None:
            return None, None
        value = (row[0], row[1]) if row[0] is not None else None
        return value, row[2]

    # -- database-backed queues -----------------------------------------------------------------
    def _queue_row(self, row: Row) -> QueueRow:
        values = dict(zip(QUEUE_COLUMNS, row, strict=True))
        values["priority_enabled"] = bool(values["priority_enabled"])
        values["partition_queue"] = bool(values["partition_queue"])
        return QueueRow(**values)

    def upsert_queue(self, row: QueueRow, update: bool) -> QueueRow:
        qt = self.d.t("queues")
        cols = [c for c in QUEUE_COLUMNS if c not in ("created_at", "updated_at")]
        params: Params = {c: getattr(row, c) for c in cols}
        params["now"] = _now_ms()
        params["id"] = str(uuid.uuid4())

        def body(cur: Cursor) -> QueueRow:
            existing = cur.one(
                f"SELECT {', '.join(QUEUE_COLUMNS)} FROM {qt} WHERE name = %(name)s", params
            )
            if existing is not None:
                current = self._queue_row(existing)
                if current.application_name not in (None, row.application_name):
                    raise QueueOwnedError(row.name, current.application_name)
                if not update:
                    return current
                sets = ", ".join(f"{c} = %({c})s" for c in cols if c != "name")
                cur.exec(
                    f"UPDATE {qt} SET {sets}, updated_at = %(now)s WHERE name = %(name)s", params
                )
            else:
                cur.exec(
                    f"INSERT INTO {qt} (queue_id, {', '.join(cols)}, created_at, updated_at) "
                    f"VALUES (%(id)s, {', '.join(f'%({c})s' for c in cols)}, %(now)s, %(now)s)",
                    params,
                )
            stored = cur.one(
                f"SELECT {', '.join(QUEUE_COLUMNS)} FROM {qt} WHERE name = %(name)s", params
            )
            assert stored is not None
            return self._queue_row(stored)

        return self._tx(body, "register queue")

    def get_queue(self, name: str) -> Optional[QueueRow]:
        row = self._one(
            f"SELECT {', '.join(QUEUE_COLUMNS)} FROM {self.d.t('queues')} WHERE name = %(name)s",
            {"name": name},
            "read queue",
        )
        return self._queue_row(row) if row else None

    def delete_queue(self, name: str) -> bool:
        return (
            self._exec(
                f"DELETE FROM {self.d.t('queues')} WHERE name = %(name)s",
                {"name": name},
                "delete queue",
            )
            > 0
        )

    def list_queues(self, application_name: Optional[str]) -> list[QueueRow]:
        sql = f"SELECT {', '.join(QUEUE_COLUMNS)} FROM {self.d.t('queues')}"
        params: Params = {}
        if application_name is not None:
            sql += " WHERE application_name = %(app)s OR application_name IS NULL"
            params["app"] = application_name
        return [
            self._queue_row(r) for r in self._all(sql + " ORDER BY name", params, "list queues")
        ]

    def reclaim_by_token(self, claim_token: str) -> list[WorkflowRow]:
        rows = self._all(self._reclaim_sql(), {"token": claim_token}, "reclaim_by_token")
        return [workflow_row(r) for r in rows]

    def dead_letter(self, workflow_id: str, recovery_attempts: int, now_ms: int) -> bool:
        rows = self._all(
            f"UPDATE {self.d.t('workflow_status')} SET "
            "status = 'MAX_RECOVERY_ATTEMPTS_EXCEEDED', deduplication_id = NULL, "
            "started_at_epoch_ms = NULL, queue_name = NULL, "
            "updated_at = %(now)s, completed_at = %(now)s "
            "WHERE workflow_uuid = %(id)s AND status = 'PENDING' "
            "AND recovery_attempts = %(attempts)s"
            + self.d.returning("1", self.d.notify("'d:' || workflow_uuid")),
            {"id": workflow_id, "attempts": recovery_attempts, "now": now_ms},
            "dead_letter",
        )
        return len(rows) > 0

    # -- application versions -------------------------------------------------------------------
    def register_version(self, version_name: str, application_name: Optional[str]) -> None:
        self._exec(
            f"INSERT INTO {self.d.t('application_versions')} "
            "(version_id, version_name, version_timestamp, created_at, application_name) "
            "VALUES (%(id)s, %(name)s, %(ts)s, %(ts)s, %(app)s) ON CONFLICT DO NOTHING",
            {
                "id": str(uuid.uuid4()),
                "name": version_name,
                "ts": _now_ms(),
                "app": application_name,
            },
            "register_version",
        )

    def list_versions(self, application_name: Optional[str]) -> list[VersionRow]:
        sql = (
            "SELECT version_id, version_name, version_timestamp, created_at, application_name "
            f"FROM {self.d.t('application_versions')}"
        )
        params: Params = {}
        if application_name is not None:
            sql += " WHERE application_name = %(app)s OR application_name IS NULL"
            params["app"] = application_name
        sql += " ORDER BY version_timestamp DESC, version_name"
        return [VersionRow(*r) for r in self._all(sql, params, "list_versions")]

    # -- maintenance ----------------------------------------------------------------------------
    _DATA_TABLES = (
        "notifications",
        "workflow_events_history",
        "workflow_events",
        "streams",
        "operation_outputs",
        "workflow_status",
        "workflow_schedules",
        "application_versions",
        "queues",
    )

    def truncate_all(self) -> None:
        def body(cur: Cursor) -> None:
            for table in self._DATA_TABLES:
                cur.exec(f"DELETE FROM {self.d.t(table)}")

        self._tx(body, "truncate_all")


def _like_prefix(prefix: str) -> str:
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)


def dumps_list(values: Sequence[Any]) -> str:
    return json.dumps(list(values))
