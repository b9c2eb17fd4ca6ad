"""The PostgreSQL system store.

Hot operations are single statements on an autocommit connection, so each costs one round
trip and one commit: starting a workflow (with its parent's child link), checkpointing a step
(with the ownership fence and the cancellation read), and claiming queued work.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import fields
from typing import Any, Optional, TypeVar, Union

import psycopg
import psycopg.errors as pgerr
from psycopg.types.string import TextLoader
from psycopg_pool import ConnectionPool, PoolTimeout

from waypoint.storage.errors import (
    DeduplicatedError,
    OwnershipLostError,
    StorageConfigError,
    UnavailableError,
)
from waypoint.storage.postgres.dialect import (
    PgConnection,
    PgCursor,
    PgDialect,
    positional,
    release,
)
from waypoint.storage.postgres.faults import classify, when_reachable
from waypoint.storage.postgres.grouped import DONE_KEYS, GroupedWrites, done_values
from waypoint.storage.postgres.hot import HotConnections
from waypoint.storage.postgres.listener import Listener, ListenerError
from waypoint.storage.postgres.messages import PgMessaging
from waypoint.storage.postgres.notifier import Notifier
from waypoint.storage.postgres.schema import PgSchemaAdmin
from waypoint.storage.protocol import DBOS_MESSAGE_CHANNEL, NOTIFY_CHANNEL
from waypoint.storage.records import (
    WORKFLOW_COLUMNS,
    ChildLink,
    ClaimRequest,
    Completion,
    InitOutcome,
    NewWorkflow,
    Outcome,
    RecordOutcome,
    StepRecord,
    WorkflowRow,
)
from waypoint.storage.retry import RetryPolicy
from waypoint.storage.sql_base import (
    EXISTING_COLUMNS,
    INIT_COLUMNS,
    RECORD_KEYS,
    Cursor,
    Params,
    Row,
    check_text_params,
    created_outcome,
    existing_outcome,
    init_params,
    init_values,
    record_values,
    unencodable,
    workflow_row,
)
from waypoint.storage.sql_store import SqlStore
from waypoint.storage.url import DatabaseTarget, redact

logger = logging.getLogger("waypoint")

T = TypeVar("T")


# The type of each workflow_status column in a bulk insert (text unless named).
_COLUMN_TYPES = {
    name: ("boolean" if kind == "bool" else "bigint")
    for name, kind in (
        (f.name, str(f.type).replace("Optional[", "").rstrip("]")) for f in fields(NewWorkflow)
    )
    if kind in ("bool", "int")
} | {"updated_at": "bigint"}


# From this many workflows on, a bulk insert COPYs (three statements) instead of sending one
# JSON document (one statement): below it the extra round trips cost more than they save.
COPY_FROM = 100


def _name_unstorable(wfs: Sequence[NewWorkflow]) -> None:
    """A bulk insert failed on a value: raise InvalidTextError naming the field that holds a
    NUL or an unpaired surrogate, as a one-row insert's parameters are checked."""
    for wf in wfs:
        params = init_params(wf)
        check_text_params(params)
        for value in params.values():
            if isinstance(value, str):
                try:
                    value.encode("utf-8")
                except UnicodeEncodeError as bad:
                    raise unencodable(params, bad) from None


def raise_if_dedup(exc: BaseException, wf: NewWorkflow) -> None:
    if isinstance(exc, pgerr.UniqueViolation) and wf.deduplication_id is not None:
        diag = getattr(exc, "diag", None)
        constraint = getattr(diag, "constraint_name", None)
        if constraint in (None, "uq_workflow_status_dedup_id"):
            raise DeduplicatedError(
                wf.workflow_id, wf.queue_name or "", wf.deduplication_id
            ) from exc


def _configure(conn: psycopg.Connection[Any]) -> None:
    """The store hands out JSON columns as text, as every backend does (the engine decodes).
    The session is marked as Waypoint's, so the wake-up triggers for other writers (schema
    version 7) skip its writes, which notify in their own statements.

    Statements are planned for their values at every execution (``force_custom_plan``).
    psycopg prepares a statement run five times, and PostgreSQL then keeps a generic plan,
    costed once for the table as it was: built while ``workflow_status`` was small (a new
    database), the completion scanned every PENDING row by ``idx_workflow_status_pending``
    and the checkpoint join the whole table, for as long as the connection lived. With
    10,000 parked workflows, other workflows ran at half their speed (issue 11).

    Planning is not free: over workflow_status's indexes it was half of a checkpoint's server
    time. The two writes a running workflow repeats, a step's checkpoint and its outcome, go
    through functions (schema version 15) that keep their plans, which sequential scans being
    off and the status compared as a variable leave no choice but a lookup by primary key."""
    for name in ("json", "jsonb"):
        conn.adapters.register_loader(name, TextLoader)
    conn.execute("SET waypoint.session = 'on'")
    conn.execute("SET plan_cache_mode = force_custom_plan")


def _rows(cur: psycopg.Cursor[Any]) -> list[Row]:
    # rownumber is None unless the result holds rows (TUPLES_OK), exactly when fetchall() can
    # read them; cur.description would build a Column object per column, on every checkpoint.
    return cur.fetchall() if cur.rownumber is not None else []


def _count(cur: psycopg.Cursor[Any]) -> int:
    return cur.rowcount


class PostgresStore(PgSchemaAdmin, GroupedWrites, PgMessaging, SqlStore):
    dialect = "postgresql"

    def __init__(
        self,
        target: DatabaseTarget,
        *,
        schema: str = "dbos",
        pool_size: int = 20,
        application_name: str = "waypoint",
        connect_timeout: int = 10,
        wait_for_server: bool = False,
    ) -> None:
        self.target = target
        self.d = PgDialect(schema)
        self.schema = self.d.schema
        self.identity = f"{redact(target.url)}#{self.schema}"
        self.wait_for_server = wait_for_server  # see StoreOptions
        self._closed = threading.Event()
        self.retry = RetryPolicy(classify, closed=self._closed, on_transient=self._connection_lost)
        self._conn_kwargs: dict[str, Any] = {
            "autocommit": True,
            "application_name": application_name,
            "keepalives": 1,
            "keepalives_idle": 30,
            "keepalives_interval": 10,
            "keepalives_count": 3,
        }
        if "connect_timeout" not in target.url:
            self._conn_kwargs["connect_timeout"] = connect_timeout
        self.pool_size = max(1, int(pool_size))
        self._pool: ConnectionPool[PgConnection] = ConnectionPool(
            target.url,
            connection_class=PgConnection,
            min_size=1,
            max_size=self.pool_size,
            kwargs=self._conn_kwargs,
            open=False,
            name="waypoint",
            reconnect_timeout=0,  # give up at once: our retry policy decides when to try again
            timeout=2.0,  # a short wait for a connection, so an outage surfaces to the retry loop
            configure=_configure,
        )
        # Idle connections kept out of the pool with their cursors (postgres/hot.py): a
        # few, the most statements that usually run at once here (the group commit's seats).
        self._hot = HotConnections(self._pool, keep=max(2, self.pool_size // 4))
        self._build_sql()
        self._setup_grouped()
        self._setup_messaging()
        self._notifier = Notifier(self._send_wakeups)

    # -- launch -------------------------------------------------------------------------------
    def when_reachable(self, call: Callable[[], None], what: str) -> None:
        """``call``, a launch step that connects outside the pool, once the server answers."""
        when_reachable(call, what, redact(self.target.url), self.wait_for_server)

    def migrate(self) -> None:
        self.when_reachable(super().migrate, "migrate the system database")

    def verify_schema(self) -> None:
        self.when_reachable(super().verify_schema, "check the system database")

    # -- plumbing -------------------------------------------------------------------------------
    def open(self) -> None:
        self._pool.open(wait=False)

    def close(self) -> None:
        self._notifier.stop()
        self._closed.set()
        self._writes.close()
        self._enqueues.close()
        self._reads.close()
        self._hot.flush(closing=True)
        self._pool.close(timeout=5)

    deferred_wakeups = True

    def _wake_after_commit(self, *keys: str) -> None:
        self._notifier.post(*keys)

    def _send_wakeups(self, keys: list[str]) -> None:
        self._count_raw(self._sql_wakeups, (keys,))

    # A single statement runs on a connection kept out of the pool (postgres/hot.py), on a
    # cursor the connection keeps: its own for the hot statements, which pass their values
    # positionally (``_call``, ``_count_raw``), a shared one for the rest. The cursor lets go
    # of the result and the parameters once it has been read (``release``).
    def _all_raw(self, sql: str, params: Params) -> list[Row]:
        return self._kept(sql, params, _rows, "")

    def _exec_raw(self, sql: str, params: Params) -> int:
        return self._kept(sql, params, _count, "")

    def _call_raw(self, sql: str, values: Sequence[Any]) -> list[Row]:
        return self._kept(sql, values, _rows, sql)

    def _count_raw(self, sql: str, values: Sequence[Any]) -> int:
        return self._kept(sql, values, _count, sql)

    def _call(self, sql: str, names: Sequence[str], values: Sequence[Any], what: str) -> list[Row]:
        """A hot statement (written by ``positional``), retried: its rows."""
        return self._checked(names, values, lambda: self._call_raw(sql, values), what)

    def _call_count(self, sql: str, names: Sequence[str], values: Sequence[Any], what: str) -> int:
        """A hot statement (written by ``positional``), retried: the rows it wrote."""
        return self._checked(names, values, lambda: self._count_raw(sql, values), what)

    def _kept(
        self,
        sql: str,
        params: Union[Params, Sequence[Any]],
        read: Callable[[psycopg.Cursor[Any]], T],
        cursor: str,
    ) -> T:
        held = self._hot.take()
        try:
            cur = held.conn.hot_cursor(cursor)
            cur.execute(sql, params)
            out = read(cur)
            release(cur)
        except BaseException:
            self._hot.drop(held)
            raise
        self._hot.give(held)
        return out

    def _tx_raw(self, body: Callable[[Cursor], T]) -> T:
        held = self._hot.take()
        try:
            conn = held.conn
            with conn.transaction(), conn.cursor() as cur:
                result = body(PgCursor(cur, self.d.render))
        except BaseException:
            self._hot.drop(held)
            raise
        self._hot.give(held)
        return result

    def _connection_lost(self, exc: BaseException) -> None:
        # One dead connection usually means the server restarted or killed backends: have
        # the pool test its idle connections now rather than hand out dead ones one by one.
        if isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError)) and not isinstance(
            exc, PoolTimeout
        ):
            try:
                self._hot.flush()  # into the pool, which tests them now
                self._pool.check()
            except psycopg.Error as check_exc:
                logger.debug("pool check after a lost connection failed: %s", check_exc)

    def listen(
        self, on_notify: Callable[[str, str], None], on_connect: Callable[[], None]
    ) -> Optional[Listener]:
        listener = Listener(
            self.target.url,
            self._conn_kwargs,
            [NOTIFY_CHANNEL, DBOS_MESSAGE_CHANNEL],
            on_notify,
            on_connect,
        )
        if self.pool_size > 1:
            # The LISTEN connection counts against sys_db_pool_size: that is the bound on
            # connections per process the operator configured.
            self._pool.resize(min_size=1, max_size=self.pool_size - 1)

        def start() -> None:
            try:
                listener.start()
            except ListenerError as exc:
                raise StorageConfigError(str(exc)) from exc
            except psycopg.OperationalError as exc:
                raise StorageConfigError(
                    f"cannot open the notification connection to {redact(self.target.url)}: {exc}"
                ) from exc

        self.when_reachable(start, "open the notification connection")
        return listener

    def ping_once(self) -> None:
        try:
            held = self._hot.take(timeout=2.0)
            try:
                held.conn.hot_cursor().execute("SELECT 1")
            except BaseException:
                self._hot.drop(held)
                raise
            self._hot.give(held)
        except PoolTimeout as timeout:
            # The pool only says it waited: one direct attempt gives the server's reason.
            try:
                with psycopg.connect(self.target.url, **self._conn_kwargs) as conn:
                    conn.execute("SELECT 1")
            except psycopg.Error as exc:
                raise UnavailableError(
                    f"cannot connect to the system database {redact(self.target.url)}: {exc}"
                ) from exc
            raise UnavailableError(f"the system database did not answer: {timeout}") from timeout

    def ping(self) -> None:
        self._all("SELECT 1", {}, "ping")

    def history_id(self) -> Optional[str]:
        # The timeline is the first 8 hex digits of the current WAL segment's name; promoting
        # a standby starts a new one. Managed services without WAL functions answer None.
        try:
            rows = self._all_raw("SELECT pg_walfile_name(pg_current_wal_lsn())", {})
        except psycopg.Error as exc:
            logger.debug("cannot read the WAL timeline: %s", exc)
            return None
        return str(rows[0][0])[:8] if rows and rows[0][0] else None

    # -- statements -----------------------------------------------------------------------------
    def _build_sql(self) -> None:
        ws = self.d.t("workflow_status")
        oo = self.d.t("operation_outputs")
        cols = ", ".join(INIT_COLUMNS)
        vals = ", ".join(
            "%(attributes)s::jsonb" if c == "attributes" else f"%({c})s" for c in INIT_COLUMNS
        )
        # Enqueues wake dispatchers everywhere ('q:' for ready work, 't:' for a new timer),
        # after the commit (``_wake_after_commit``).
        returning = "RETURNING owner_xid"
        # A top-level start or enqueue, one row: its values in INIT_COLUMNS' order, answered
        # by the row count (0: the ID exists), ``_init_top``.
        values = ", ".join("%s::jsonb" if c == "attributes" else "%s" for c in INIT_COLUMNS)
        self._sql_init = (
            f"INSERT INTO {ws} ({cols}) VALUES ({values}) ON CONFLICT (workflow_uuid) DO NOTHING"
        )
        # Child start: the child's row and the parent's checkpoint in one statement, both
        # fenced on the parent still being owned by the calling execution.
        # The child's row is written only from the parent's link as it now stands: one
        # that this run recorded and that names this child (never an orphan row when the
        # position belongs to another run or names another child).
        self._sql_init_child = (
            f"WITH fence AS (SELECT 1 AS ok FROM {ws} "
            "WHERE workflow_uuid = %(parent)s AND owner_xid = %(powner)s), "
            f"link AS (INSERT INTO {oo} (workflow_uuid, function_id, function_name, "
            "child_workflow_id, started_at_epoch_ms, completed_at_epoch_ms, owner_xid, "
            "application_name) SELECT %(parent)s, %(fid)s, %(fname)s, %(workflow_uuid)s, "
            "%(lt)s, %(lt)s, %(powner)s, %(application_name)s FROM fence "
            "ON CONFLICT (workflow_uuid, function_id) DO UPDATE "
            f"SET owner_xid = {oo}.owner_xid "
            "RETURNING child_workflow_id, function_name, owner_xid), "
            f"ins AS (INSERT INTO {ws} ({cols}) SELECT {vals} FROM link "
            "WHERE link.child_workflow_id = %(workflow_uuid)s "
            "AND link.owner_xid = %(powner)s "
            f"ON CONFLICT (workflow_uuid) DO NOTHING {returning}) "
            "SELECT (SELECT owner_xid FROM ins), (SELECT count(*) FROM fence), "
            "link.child_workflow_id, link.function_name, link.owner_xid "
            "FROM (SELECT 1) AS one LEFT JOIN link ON TRUE"
        )
        self._sql_existing = f"SELECT {EXISTING_COLUMNS} FROM {ws} WHERE workflow_uuid = %(id)s"
        # Many enqueues in one statement: the rows as one JSON document (psycopg's array
        # dumping costs more than the insert); dispatchers everywhere are woken once per
        # queue, not once per row, after the commit.
        typed = ", ".join(f"{c} {_COLUMN_TYPES.get(c, 'text')}" for c in INIT_COLUMNS)
        picked = ", ".join(f"d.{c}::jsonb" if c == "attributes" else f"d.{c}" for c in INIT_COLUMNS)
        self._sql_init_many = (
            f"INSERT INTO {ws} ({cols}) SELECT {picked} "
            f"FROM json_to_recordset(%(rows)s::json) AS d({typed}) "
            "ON CONFLICT (workflow_uuid) DO NOTHING RETURNING workflow_uuid"
        )
        # A large batch goes through a staging table of the same column types, which lives
        # only in the transaction (nothing is left in a pooled session).
        staged = ", ".join(INIT_COLUMNS[:-1])
        self._sql_stage_create = (
            "CREATE TEMP TABLE waypoint_bulk_init ON COMMIT DROP AS "
            f"SELECT {staged} FROM {ws} WITH NO DATA"
        )
        self._sql_stage_copy = f"COPY waypoint_bulk_init ({staged}) FROM STDIN"
        self._sql_stage_insert = (
            f"INSERT INTO {ws} ({cols}) SELECT {staged}, created_at FROM waypoint_bulk_init "
            "ON CONFLICT (workflow_uuid) DO NOTHING RETURNING workflow_uuid"
        )
        # A step checkpoint and a workflow's outcome, one statement each, through functions
        # (schema version 15) whose plans are kept and can only read workflow_status by its
        # key: see ``_configure``. The checkpoint is fenced on the run still owning the
        # workflow (a superseded run inserts nothing), idempotent on retry (the row names its
        # writer), and returns the workflow's status so a cancellation is seen at no extra
        # cost; the outcome is written only by the owning run of a PENDING workflow.
        # Both, as every statement run per step or per workflow, take their values
        # positionally (``positional``), in the order of RECORD_KEYS and DONE_KEYS.
        self._sql_record = positional(
            f"SELECT recorded_by, current_status FROM {self.d.t('waypoint_checkpoint')}("
            "%(wf)s, %(fid)s::integer, %(fname)s, %(output)s, %(error)s, %(child)s, "
            "%(started)s::bigint, %(completed)s::bigint, %(ser)s, %(owner)s, %(app)s)",
            RECORD_KEYS,
        )
        self._sql_complete = positional(
            f"SELECT freed_queue FROM {self.d.t('waypoint_complete')}("
            "%(id)s, %(owner)s, %(status)s, %(output)s, %(error)s, %(now)s::bigint)",
            DONE_KEYS,
        )
        # The notifier's wake-ups, a statement per workflow's outcome (``_send_wakeups``).
        self._sql_wakeups = positional(
            f"SELECT count(pg_notify('{NOTIFY_CHANNEL}', k)) FROM unnest(%(keys)s::text[]) k",
            ("keys",),
        )

    # -- workflows ------------------------------------------------------------------------------
    def init_workflow(self, wf: NewWorkflow, link: Optional[ChildLink]) -> InitOutcome:
        if link is None:
            return self._start_top(wf)  # grouped with other threads' starts
        params = init_params(wf)
        params.update(
            parent=link.parent_workflow_id,
            powner=link.parent_owner_xid,
            fid=link.function_id,
            fname=link.function_name,
            lt=link.started_at_epoch_ms,
        )
        try:
            row = self._one(self._sql_init_child, params, "start child workflow")
        except pgerr.UniqueViolation as exc:
            raise_if_dedup(exc, wf)
            raise
        assert row is not None
        child_owner, fence_ok, linked_child, linked_name, link_owner = row
        if not fence_ok or (link_owner is not None and link_owner != link.parent_owner_xid):
            raise OwnershipLostError(link.parent_workflow_id)
        if linked_child is not None and linked_child != wf.workflow_id:
            outcome = self._existing(wf)
            outcome.linked_child_id = linked_child
            outcome.linked_function_name = linked_name
            return outcome
        if child_owner is not None:
            self._woken_by(wf)
            return created_outcome(wf)
        return self._existing(wf)

    def _init_top(self, wf: NewWorkflow) -> InitOutcome:
        """Start one top-level workflow (one statement; the grouped path's lone write)."""
        values = (*init_values(wf), wf.created_at)  # INIT_COLUMNS: updated_at = created_at
        try:
            written = self._call_count(self._sql_init, INIT_COLUMNS, values, "start workflow")
        except pgerr.UniqueViolation as exc:
            raise_if_dedup(exc, wf)
            raise
        if not written:
            return self._existing(wf)
        self._woken_by(wf)
        return created_outcome(wf)

    def _complete_one(self, done: Completion) -> bool:
        rows = self._call(self._sql_complete, DONE_KEYS, done_values(done), "complete_workflow")
        if rows:
            queue = rows[0][0]
            self._wake_after_commit(f"d:{done.workflow_id}", *([f"q:{queue}"] if queue else []))
        return len(rows) > 0

    def _outcome_one(self, workflow_id: str) -> Optional[Outcome]:
        return SqlStore.get_outcome(self, workflow_id)

    def _outcomes_of(self, workflow_ids: Sequence[str]) -> dict[str, Outcome]:
        return SqlStore.get_outcomes(self, workflow_ids)

    def _woken_by(self, wf: NewWorkflow) -> None:
        """A new ENQUEUED (or DELAYED) row wakes dispatchers (or timers) everywhere."""
        if wf.status != "PENDING" and wf.queue_name is not None:
            self._wake_after_commit(("t:" if wf.status == "DELAYED" else "q:") + wf.queue_name)

    def init_workflows(
        self,
        wfs: Sequence[NewWorkflow],
        check: Optional[Callable[[list[InitOutcome]], None]] = None,
    ) -> list[InitOutcome]:
        outcomes = super().init_workflows(wfs, check)
        woken = {
            ("t:" if wf.status == "DELAYED" else "q:") + wf.queue_name
            for wf, out in zip(wfs, outcomes, strict=True)
            if out.created and wf.status != "PENDING" and wf.queue_name is not None
        }
        if woken:
            self._wake_after_commit(*sorted(woken))
        return outcomes

    def _insert_many(self, cur: Cursor, wfs: Sequence[NewWorkflow]) -> set[str]:
        if len(wfs) >= COPY_FROM and isinstance(cur, PgCursor):
            return self._copy_many(cur, wfs)
        rows = [{k: v for k, v in init_params(wf).items() if v is not None} for wf in wfs]
        try:
            return {r[0] for r in cur.all(self._sql_init_many, {"rows": json.dumps(rows)})}
        except psycopg.DataError:  # the server could not take a string out of the JSON
            _name_unstorable(wfs)
            raise

    def _copy_many(self, cur: PgCursor, wfs: Sequence[NewWorkflow]) -> set[str]:
        """A large batch: COPY into a staging table dropped at commit, then one INSERT ...
        SELECT ... ON CONFLICT DO NOTHING; twice the rows per second of one JSON document
        (psycopg's COPY writes each row in C; the server parses no JSON)."""
        cur.exec(self._sql_stage_create)
        try:
            cur.copy_rows(self._sql_stage_copy, map(init_values, wfs))
        except (psycopg.DataError, UnicodeEncodeError):
            _name_unstorable(wfs)
            raise
        return {r[0] for r in cur.all(self._sql_stage_insert)}

    def _is_dedup_violation(self, exc: BaseException) -> bool:
        constraint = getattr(getattr(exc, "diag", None), "constraint_name", None)
        return isinstance(exc, pgerr.UniqueViolation) and constraint in (
            None,
            "uq_workflow_status_dedup_id",
        )

    def _existing(self, wf: NewWorkflow) -> InitOutcome:
        row = self._one(self._sql_existing, {"id": wf.workflow_id}, "read existing workflow")
        if row is None:
            # Deleted between our insert attempt and this read: report it as missing.
            return InitOutcome(created=False, status="MISSING")
        return existing_outcome(row, wf.owner_xid)

    def _record_one(self, rec: StepRecord) -> RecordOutcome:
        rows = self._call(self._sql_record, RECORD_KEYS, record_values(rec), "checkpoint step")
        if not rows:  # fenced: another execution owns the workflow
            return RecordOutcome(accepted=False, workflow_status=None)
        return RecordOutcome(accepted=rows[0][0] == rec.owner_xid, workflow_status=rows[0][1])

    def claim(self, req: ClaimRequest, now_ms: int) -> list[WorkflowRow]:
        if req.shared_budget:
            return super().claim(req, now_ms)
        where, params = self._claim_where(req, now_ms, req.limit)
        ws = self.d.t("workflow_status")
        # The picked set is materialized: as a plain IN (subquery) the planner may re-run the
        # SKIP LOCKED scan once per row and claim far more than LIMIT.
        sql = (
            f"WITH picked AS MATERIALIZED (SELECT workflow_uuid FROM {ws} WHERE {where} "
            "ORDER BY priority, created_at LIMIT %(limit)s FOR NO KEY UPDATE SKIP LOCKED) "
            f"UPDATE {ws} SET {self._claim_set()} FROM picked "
            f"WHERE {ws}.workflow_uuid = picked.workflow_uuid AND status = 'ENQUEUED' "
            f"RETURNING {', '.join(f'{ws}.{c}' for c in WORKFLOW_COLUMNS)}, "
            # Whether the dispatcher must read the row's checkpoints: a fresh enqueue has
            # none, and one index probe here saves a statement per claim.
            f"NOT EXISTS (SELECT 1 FROM {self.d.t('operation_outputs')} o "
            f"WHERE o.workflow_uuid = {ws}.workflow_uuid)"
        )
        rows = self._claim_retrying(req.claim_token, lambda: self._all_raw(sql, params))
        n = len(WORKFLOW_COLUMNS)  # a claim found again after a lost answer has no flag
        req.stepless.update(r[0] for r in rows if len(r) > n and r[n])
        return [workflow_row(r[:n]) for r in rows]
