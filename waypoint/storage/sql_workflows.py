"""SQL for workflow rows, checkpoints, recovery, versions and maintenance (both backends)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Optional, Union

from waypoint.storage.errors import DeduplicatedError
from waypoint.storage.records import (
    Completion,
    InitOutcome,
    NewWorkflow,
    Outcome,
    Recovered,
    RecoveryRequest,
    StepRecord,
    StepRow,
    VersionRow,
    WorkflowRow,
)
from waypoint.storage.sql_base import (
    EXISTING_COLUMNS,
    INIT_COLUMNS,
    OWNED,
    SELECT_WORKFLOW,
    STEP_COLUMNS,
    Cursor,
    Params,
    Row,
    SqlCore,
    _now_ms,
    created_outcome,
    existing_outcome,
    init_params,
    step_row,
    workflow_row,
)

# ``init_workflows``'s last look before its commit: raises to write nothing.
BatchCheck = Callable[[list[InitOutcome]], None]


class WorkflowSql(SqlCore):
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
        vals = ", ".join(
            self.d.json_value(c) if c == "attributes" else f"%({c})s" for c in INIT_COLUMNS
        )
        params = init_params(wf)
        try:
            self._on_caller_connection(
                conn,
                f"INSERT INTO {ws} ({cols}) VALUES ({vals}) ON CONFLICT (workflow_uuid) DO NOTHING",
                params,
            )
            wake = self.d.notify("%(wake)s")
            if wake:  # delivered when (and only if) the caller commits
                kind = "t:" if wf.status == "DELAYED" else "q:"
                self._on_caller_connection(
                    conn, f"SELECT {wake}", {"wake": kind + (wf.queue_name or "")}
                )
        except Exception as exc:
            if wf.deduplication_id is not None and "dedup" in str(exc).lower():
                raise DeduplicatedError(
                    wf.workflow_id, wf.queue_name or "", wf.deduplication_id
                ) from exc
            raise

    # -- many workflows at once (bulk enqueue) ---------------------------------------------------
    def init_workflows(
        self, wfs: Sequence[NewWorkflow], check: Optional[BatchCheck] = None
    ) -> list[InitOutcome]:
        """Create many top-level workflows in one transaction: all of them or none. A row whose
        ID exists already is left as it is and reported as ``init_workflow`` reports it;
        ``check`` sees every outcome before the commit and may raise, to write nothing. A
        deduplication conflict raises DeduplicatedError naming the workflow that conflicts,
        having written nothing."""
        if not wfs:
            return []
        if len({wf.workflow_id for wf in wfs}) != len(wfs):
            raise ValueError("init_workflows: the same workflow ID twice in one batch")
        try:
            return self._tx(lambda cur: self._init_many_in(cur, wfs, check), "enqueue workflows")
        except DeduplicatedError:
            raise
        except Exception as exc:
            if not self._is_dedup_violation(exc):
                raise
            raise self._dedup_conflict(wfs) from exc

    def _init_many_in(
        self, cur: Cursor, wfs: Sequence[NewWorkflow], check: Optional[BatchCheck]
    ) -> list[InitOutcome]:
        """Insert the rows (the backend's way); then read the rows that already existed."""
        inserted = self._insert_many(cur, wfs)
        existing: dict[str, Row] = {}
        missing = [wf.workflow_id for wf in wfs if wf.workflow_id not in inserted]
        if missing:
            rows = cur.all(
                f"SELECT workflow_uuid, {EXISTING_COLUMNS} FROM {self.d.t('workflow_status')} "
                f"WHERE {self.d.any('workflow_uuid', 'ids')}",
                {"ids": self.d.list_param(missing)},
            )
            existing = {r[0]: r[1:] for r in rows}
        result = []
        for wf in wfs:
            if wf.workflow_id in inserted:
                result.append(created_outcome(wf))
            elif wf.workflow_id in existing:
                result.append(existing_outcome(existing[wf.workflow_id], wf.owner_xid))
            else:  # deleted again between the insert and the read
                result.append(InitOutcome(created=False, status="MISSING"))
        if check is not None:
            check(result)
        return result

    def _insert_many(self, cur: Cursor, wfs: Sequence[NewWorkflow]) -> set[str]:
        """Insert ``wfs`` (skipping existing IDs), waking dispatchers; the IDs inserted."""
        raise NotImplementedError

    def _is_dedup_violation(self, exc: BaseException) -> bool:
        """Whether ``exc`` is the deduplication index refusing a row."""
        raise NotImplementedError

    def _dedup_conflict(self, wfs: Sequence[NewWorkflow]) -> DeduplicatedError:
        """The error for a batch the deduplication index refused: names the first workflow
        whose (queue, deduplication ID) another workflow holds."""
        keyed = [wf for wf in wfs if wf.deduplication_id is not None]
        rows = self._all(
            f"SELECT queue_name, deduplication_id, workflow_uuid "
            f"FROM {self.d.t('workflow_status')} WHERE {self.d.any('deduplication_id', 'ids')}",
            {"ids": self.d.list_param(sorted({str(wf.deduplication_id) for wf in keyed}))},
            "find deduplication holders",
        )
        held = {(r[0], r[1]): r[2] for r in rows}
        for wf in keyed:
            holder = held.get((wf.queue_name, wf.deduplication_id))
            if holder is not None and holder != wf.workflow_id:
                return DeduplicatedError(
                    wf.workflow_id, wf.queue_name or "", str(wf.deduplication_id)
                )
        first = keyed[0] if keyed else wfs[0]
        return DeduplicatedError(
            first.workflow_id, first.queue_name or "", str(first.deduplication_id)
        )

    # -- workflows ------------------------------------------------------------------------------
    def get_workflow(self, workflow_id: str) -> Optional[WorkflowRow]:
        row = self._workflow_columns(SELECT_WORKFLOW, workflow_id, "get_workflow")
        return workflow_row(row) if row else None

    def get_outcome(self, workflow_id: str) -> Optional[Outcome]:
        row = self._workflow_columns(
            "status, output, error, serialization", workflow_id, "get_outcome"
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

    def queue_write(
        self,
        write: Union[NewWorkflow, StepRecord, Completion],
        done: Callable[[Any, Optional[BaseException]], None],
    ) -> bool:
        """Nothing is grouped here (the PostgreSQL store groups its hot writes)."""
        return False

    def complete_workflow(self, done: Completion) -> bool:
        rows = self._all(
            f"UPDATE {self.d.t('workflow_status')} SET status = %(status)s, output = %(output)s, "
            "error = %(error)s, updated_at = %(now)s, completed_at = %(now)s, "
            "deduplication_id = NULL "
            "WHERE workflow_uuid = %(id)s AND status = 'PENDING' AND owner_xid = %(owner)s"
            + (
                self.d.returning("queue_name")
                if self.deferred_wakeups
                else self.d.returning(
                    "queue_name",
                    self.d.notify("'d:' || workflow_uuid"),
                    # A queue slot freed up: dispatchers everywhere may claim the next one.
                    self.d.notify_when("queue_name IS NOT NULL", "'q:' || queue_name"),
                )
            ),
            {
                "status": done.status,
                "output": done.output,
                "error": done.error,
                "now": done.now_ms,
                "id": done.workflow_id,
                "owner": done.owner_xid,
            },
            "complete_workflow",
        )
        if rows and self.deferred_wakeups:
            queue = rows[0][0]
            self._wake_after_commit(f"d:{done.workflow_id}", *([f"q:{queue}"] if queue else []))
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

    # -- steps ----------------------------------------------------------------------------------
    def load_steps(self, workflow_id: str) -> dict[int, StepRow]:
        rows = self._all(
            f"SELECT {STEP_COLUMNS} FROM {self.d.t('operation_outputs')} "
            "WHERE workflow_uuid = %(id)s",
            {"id": workflow_id},
            "load_steps",
        )
        return {r[0]: step_row(r) for r in rows}

    def resume_state(self, workflow_id: str) -> tuple[Optional[str], dict[int, StepRow]]:
        oo = ", ".join(f"oo.{c.strip()}" for c in STEP_COLUMNS.split(","))
        rows = self._all(
            f"SELECT ws.status, {oo} FROM {self.d.t('workflow_status')} ws "
            f"LEFT JOIN {self.d.t('operation_outputs')} oo "
            "ON oo.workflow_uuid = ws.workflow_uuid WHERE ws.workflow_uuid = %(id)s",
            {"id": workflow_id},
            "resume_state",
        )
        if not rows:
            return None, {}
        return rows[0][0], {r[1]: step_row(r[1:]) for r in rows if r[1] is not None}

    def load_steps_many(self, workflow_ids: Sequence[str]) -> dict[str, dict[int, StepRow]]:
        loaded: dict[str, dict[int, StepRow]] = {}
        if not workflow_ids:
            return loaded
        rows = self._all(
            f"SELECT workflow_uuid, {STEP_COLUMNS} FROM {self.d.t('operation_outputs')} "
            f"WHERE {self.d.any('workflow_uuid', 'ids')}",
            {"ids": self.d.list_param(list(workflow_ids))},
            "load_steps_many",
        )
        for r in rows:
            loaded.setdefault(r[0], {})[r[1]] = step_row(r[1:])
        return loaded

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
        elif offset is not None:
            sql += self.d.no_limit
        if offset is not None:
            sql += " OFFSET %(offset)s"
            params["offset"] = offset
        return [step_row(r) for r in self._all(sql, params, "list_steps")]

    # -- recovery and dispatch ------------------------------------------------------------------
    def recover_pending(self, req: RecoveryRequest) -> Recovered:
        """Hand back every PENDING workflow of these executors, of any version: queued ones
        to their queue (a dead executor's run no longer holds a slot of a concurrency-limited
        queue), the others to the internal queue, each still pinned to its version; with a
        claimant, claim at once the direct ones its version may run (``_runnable``)."""
        if not req.executor_ids:
            return Recovered([], [])
        ws = self.d.t("workflow_status")
        where = f"status = 'PENDING' AND {self.d.any('executor_id', 'ids')} "
        params: Params = {
            "now": req.now_ms,
            "iq": req.internal_queue,
            "ids": self.d.list_param(list(req.executor_ids)),
            "ver": req.application_version,
            "app": req.application_name,
        }
        if req.application_name is not None:
            where += f"AND {OWNED} "
        requeue_sql = (
            # No run token: whatever the old run still writes is refused from now on.
            f"UPDATE {ws} SET status = 'ENQUEUED', started_at_epoch_ms = NULL, owner_xid = NULL, "
            "updated_at = %(now)s, queue_name = COALESCE(queue_name, %(iq)s) WHERE " + where
        )
        notify = self.d.returning("workflow_uuid", self.d.notify("'q:' || queue_name"))
        if req.claimant is None:
            rows = self._all(requeue_sql + notify, params, "recover pending workflows")
            return Recovered([r[0] for r in rows], [])
        params["executor"], params["token"] = req.claimant
        runnable = "1 = 1" if req.application_version is None else self._runnable(req.compatible)
        # Queued ones, and direct ones this version may not run (a NULL verdict is a no).
        rest = (
            "AND ((queue_name IS NOT NULL AND queue_name <> %(iq)s) "
            f"OR CASE WHEN {runnable} THEN 0 ELSE 1 END = 1) "
        )
        requeued: list[str] = []

        def body(cur: Cursor) -> list[Row]:
            requeued[:] = [r[0] for r in cur.all(requeue_sql + rest + notify, params)]
            return cur.all(
                f"UPDATE {ws} SET {self._claim_set()}, queue_name = COALESCE(queue_name, %(iq)s) "
                f"WHERE {where}AND (queue_name IS NULL OR queue_name = %(iq)s) AND {runnable} "
                f"RETURNING {SELECT_WORKFLOW}",
                params,
            )

        rows = self._claim_retrying(req.claimant[1], lambda: self._tx_raw(body))
        claimed = [workflow_row(r) for r in rows]
        return Recovered(requeued + [w.workflow_id for w in claimed], claimed)

    def release_runs(
        self, owner_xids: Sequence[str], internal_queue: str, now_ms: int
    ) -> list[str]:
        """Hand back the PENDING workflows these runs own (a graceful shutdown): each goes
        back to its queue (direct ones to ``internal_queue``) as ENQUEUED with no executor and
        no run token, so any write the old run still attempts is refused by the fence, and a
        peer's claim is the next admission. The hand-back does not count as a recovery
        attempt: the claim that started the run is taken back."""
        if not owner_xids:
            return []
        rows = self._all(
            f"UPDATE {self.d.t('workflow_status')} SET status = 'ENQUEUED', executor_id = NULL, "
            "owner_xid = NULL, started_at_epoch_ms = NULL, updated_at = %(now)s, "
            "queue_name = COALESCE(queue_name, %(iq)s), recovery_attempts = CASE "
            "WHEN recovery_attempts > 0 THEN recovery_attempts - 1 ELSE 0 END "
            f"WHERE status = 'PENDING' AND {self.d.any('owner_xid', 'tokens')}"
            + self.d.returning("workflow_uuid", self.d.notify("'q:' || queue_name")),
            {"now": now_ms, "iq": internal_queue, "tokens": self.d.list_param(list(owner_xids))},
            "release workflows",
        )
        return [r[0] for r in rows]

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
        self._all(
            f"INSERT INTO {self.d.t('application_versions')} "
            "(version_id, version_name, version_timestamp, created_at, application_name) "
            "VALUES (%(id)s, %(name)s, %(ts)s, %(ts)s, %(app)s) ON CONFLICT DO NOTHING"
            + self.d.returning(self.d.notify("'V:' || version_name")),
            {
                "id": str(uuid.uuid4()),
                "name": version_name,
                "ts": _now_ms(),
                "app": application_name,
            },
            "register_version",
        )

    def register_fingerprints(
        self,
        application_version: str,
        application_name: Optional[str],
        fingerprints: Mapping[str, str],
    ) -> None:
        """Record each workflow's fingerprint in this version (kept if already there)."""
        if not fingerprints:
            return
        fp = self.d.t("workflow_fingerprints")
        rows = [
            {
                "name": name,
                "ver": application_version,
                "fp": value,
                "app": application_name,
                "now": _now_ms(),
            }
            for name, value in sorted(fingerprints.items())
        ]

        def body(cur: Cursor) -> None:
            for row in rows:
                cur.exec(
                    f"INSERT INTO {fp} (workflow_name, application_version, fingerprint, "
                    "application_name, created_at) VALUES (%(name)s, %(ver)s, %(fp)s, %(app)s, "
                    "%(now)s) ON CONFLICT DO NOTHING",
                    row,
                )

        self._tx(body, "register workflow fingerprints")

    def list_fingerprints(self, application_version: str) -> dict[str, list[str]]:
        """The fingerprints recorded for each workflow of a version (a pinned version shared
        by different code can have several)."""
        rows = self._all(
            f"SELECT workflow_name, fingerprint FROM {self.d.t('workflow_fingerprints')} "
            "WHERE application_version = %(ver)s ORDER BY workflow_name, fingerprint",
            {"ver": application_version},
            "list workflow fingerprints",
        )
        found: dict[str, list[str]] = {}
        for name, value in rows:
            found.setdefault(name, []).append(value)
        return found

    def list_versions(self, application_name: Optional[str]) -> list[VersionRow]:
        rows = self._owned_rows(
            "SELECT version_id, version_name, version_timestamp, created_at, application_name "
            f"FROM {self.d.t('application_versions')}",
            application_name,
            "version_timestamp DESC, version_name",
            "list_versions",
        )
        return [VersionRow(*r) for r in rows]

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
        "workflow_fingerprints",
        "queues",
        "executors",
    )

    def truncate_all(self) -> None:
        def body(cur: Cursor) -> None:
            for table in self._DATA_TABLES:
                cur.exec(f"DELETE FROM {self.d.t(table)}")

        self._tx(body, "truncate_all")
