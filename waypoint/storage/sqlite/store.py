"""The SQLite system store: the zero-setup default, one file next to the application.

SQLite serialises writers, so multi-statement operations take the write lock up front
(``BEGIN IMMEDIATE``) and run as one local transaction; there is no network round trip to
save. The file is in WAL mode with ``synchronous=FULL``: a commit that returned survives a
crash of the process or of the machine.
"""

from __future__ import annotations

import logging
import os
import re
import sqlite3
import threading
from collections.abc import Callable, Sequence
from typing import Any, Optional, TypeVar

from waypoint.storage import migrations
from waypoint.storage.errors import (
    DeduplicatedError,
    OwnershipLostError,
    StorageConfigError,
)
from waypoint.storage.records import (
    ChildLink,
    InitOutcome,
    NewWorkflow,
    RecordOutcome,
    StepRecord,
)
from waypoint.storage.retry import Fault, RetryPolicy
from waypoint.storage.sql_base import (
    EXISTING_COLUMNS,
    INIT_COLUMNS,
    Cursor,
    Dialect,
    Params,
    Row,
    created_outcome,
    dumps_list,
    existing_outcome,
    init_params,
)
from waypoint.storage.sql_store import SqlStore
from waypoint.storage.url import DatabaseTarget

logger = logging.getLogger("waypoint")

T = TypeVar("T")

_PLACEHOLDER = re.compile(r"%\((\w+)\)s")


# Less free space than this under the database's directory makes a "disk I/O error" a full
# disk: SQLite maps its 32 KiB -shm index, which it must first allocate.
NEARLY_FULL_BYTES = 1 << 20


def classify(exc: BaseException, path: Optional[str] = None) -> Fault:
    """What a failure of a call on the database at ``path`` means for the retry policy."""
    if isinstance(exc, sqlite3.OperationalError):
        text = str(exc).lower()
        if "full" in text:
            return Fault.FULL
        if "disk i/o error" in text and path is not None and _out_of_space(path):
            # SQLite reports ENOSPC as SQLITE_FULL only where it grows the database or its
            # WAL; allocating the -shm index (the first connection after every other one
            # closed, e.g. a worker restarted on a full disk) fails as SQLITE_IOERR_SHMSIZE.
            return Fault.FULL
        if "locked" in text or "busy" in text:
            return Fault.TRANSIENT
    return Fault.FATAL


def _out_of_space(path: str) -> bool:
    try:
        st = os.statvfs(os.path.dirname(os.path.abspath(path)))
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < NEARLY_FULL_BYTES


def _has_column(conn: sqlite3.Connection, table: str, column: str) -> bool:
    return any(row[1] == column for row in conn.execute(f'PRAGMA table_info("{table}")'))


def _dbos_version(conn: sqlite3.Connection) -> Optional[int]:
    """The DBOS migration level recorded in the file, None when DBOS has recorded none."""
    if (
        conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'dbos_migrations'"
        ).fetchone()
        is None
    ):
        return None
    row = conn.execute("SELECT MAX(version) FROM dbos_migrations").fetchone()
    return None if row is None or row[0] is None else int(row[0])


class SqliteDialect(Dialect):
    name = "sqlite"
    true = "1"
    false = "0"

    def __init__(self) -> None:
        self._rendered: dict[str, str] = {}

    def t(self, table: str) -> str:
        return table

    def any(self, column: str, param: str) -> str:
        return f"{column} IN (SELECT value FROM json_each(%({param})s))"

    def list_param(self, values: Sequence[Any]) -> Any:
        return dumps_list(values)

    now_ms = "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)"
    skip_locked = ""  # writers are serialised by the IMMEDIATE transaction already

    def render(self, sql: str) -> str:
        out = self._rendered.get(sql)
        if out is None:
            out = _PLACEHOLDER.sub(r":\1", sql).replace("%%", "%")
            self._rendered[sql] = out
        return out


class SqliteStore(SqlStore):
    dialect = "sqlite"

    def __init__(self, target: DatabaseTarget, *, busy_timeout_ms: int = 30_000) -> None:
        self.target = target
        self.path = target.url
        self.identity = f"sqlite:{os.path.abspath(target.url)}"
        self.d = SqliteDialect()
        self._busy_timeout_ms = busy_timeout_ms
        self._closed = threading.Event()
        self.retry = RetryPolicy(
            lambda exc: classify(exc, self.path), closed=self._closed, max_delay=1.0
        )
        self._lock = threading.Lock()
        self._idle: list[sqlite3.Connection] = []
        self._all_conns: list[sqlite3.Connection] = []
        ws = self.d.t("workflow_status")
        cols = ", ".join(INIT_COLUMNS)
        vals = ", ".join(f"%({c})s" for c in INIT_COLUMNS)
        self._sql_init = (
            f"INSERT INTO {ws} ({cols}) VALUES ({vals}) "
            "ON CONFLICT (workflow_uuid) DO NOTHING RETURNING owner_xid"
        )
        self._sql_existing = f"SELECT {EXISTING_COLUMNS} FROM {ws} WHERE workflow_uuid = %(id)s"

    # -- connections ----------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path,
            timeout=self._busy_timeout_ms / 1000,
            isolation_level=None,
            check_same_thread=False,
        )
        conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA synchronous = FULL")
        return conn

    def _get(self) -> sqlite3.Connection:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        conn = self._connect()
        with self._lock:
            self._all_conns.append(conn)
        return conn

    def _put(self, conn: sqlite3.Connection, broken: bool) -> None:
        if broken or self._closed.is_set():
            with self._lock:
                if conn in self._all_conns:
                    self._all_conns.remove(conn)
            conn.close()
            return
        with self._lock:
            self._idle.append(conn)

    def open(self) -> None:
        conn = self._get()
        try:
            conn.execute("PRAGMA journal_mode = WAL")
        finally:
            self._put(conn, False)

    def close(self) -> None:
        """Close idle connections now; one in use by another thread is closed when that
        thread returns it (closing it under the thread's feet can crash the interpreter)."""
        self._closed.set()
        with self._lock:
            conns, self._idle = self._idle, []
            for conn in conns:
                self._all_conns.remove(conn)
        for conn in conns:
            try:
                conn.close()
            except sqlite3.Error as exc:  # closing during shutdown: nothing left to protect
                logger.debug("closing a SQLite connection failed: %s", exc)

    def _with_conn(self, op: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._get()
        broken = False
        try:
            return op(conn)
        except sqlite3.ProgrammingError:
            broken = True
            raise
        except BaseException as exc:
            # Interrupted mid-operation (KeyboardInterrupt, SystemExit): the connection may
            # have a statement half read, which would fail its next COMMIT; it is not reused.
            broken = not isinstance(exc, Exception)
            raise
        finally:
            if conn.in_transaction:
                # Left inside a transaction (the interrupt landed between BEGIN and the body's
                # own rollback): it holds the file's write lock, from every other writer, until
                # it ends. Closing does not end it while a statement is still open; ROLLBACK does.
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    broken = True
            self._put(conn, broken)

    def _all_raw(self, sql: str, params: Params) -> list[Row]:
        rendered = self.d.render(sql)

        def op(conn: sqlite3.Connection) -> list[Row]:
            cur = conn.execute(rendered, params)
            return cur.fetchall() if cur.description is not None else []

        return self._with_conn(op)

    def _exec_raw(self, sql: str, params: Params) -> int:
        rendered = self.d.render(sql)
        return self._with_conn(lambda conn: conn.execute(rendered, params).rowcount)

    def _tx_raw(self, body: Callable[[Cursor], T]) -> T:
        def op(conn: sqlite3.Connection) -> T:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = body(Cursor(conn.cursor(), self.d.render))
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            return result

        return self._with_conn(op)

    def listen(self, on_notify: Callable[[str, str], None], on_connect: Callable[[], None]) -> None:
        """SQLite has no notifications: other processes' writes are found by polling."""
        return None

    def history_id(self) -> Optional[str]:
        return None  # a file has no standby to fail over to

    def ping_once(self) -> None:
        self._all_raw("SELECT 1", {})

    def ping(self) -> None:
        self._all("SELECT 1", {}, "ping")

    # -- workflows ------------------------------------------------------------------------------
    def init_workflow(self, wf: NewWorkflow, link: Optional[ChildLink]) -> InitOutcome:
        params = init_params(wf)
        oo = self.d.t("operation_outputs")

        def body(cur: Cursor) -> InitOutcome:
            linked: Optional[Row] = None
            if link is not None:
                fence = cur.one(
                    f"SELECT 1 FROM {self.d.t('workflow_status')} "
                    "WHERE workflow_uuid = %(id)s AND owner_xid = %(owner)s",
                    {"id": link.parent_workflow_id, "owner": link.parent_owner_xid},
                )
                if fence is None:
                    raise OwnershipLostError(link.parent_workflow_id)
                linked = cur.one(
                    f"SELECT child_workflow_id, function_name, owner_xid FROM {oo} "
                    "WHERE workflow_uuid = %(id)s AND function_id = %(fid)s",
                    {"id": link.parent_workflow_id, "fid": link.function_id},
                )
                if linked is not None and linked[2] != link.parent_owner_xid:
                    raise OwnershipLostError(link.parent_workflow_id)
                if linked is None:
                    cur.exec(
                        f"INSERT INTO {oo} (workflow_uuid, function_id, function_name, "
                        "child_workflow_id, started_at_epoch_ms, completed_at_epoch_ms, "
                        "owner_xid, application_name) VALUES (%(id)s, %(fid)s, %(fname)s, "
                        "%(child)s, %(t)s, %(t)s, %(owner)s, %(app)s)",
                        {
                            "id": link.parent_workflow_id,
                            "fid": link.function_id,
                            "fname": link.function_name,
                            "child": wf.workflow_id,
                            "t": link.started_at_epoch_ms,
                            "owner": link.parent_owner_xid,
                            "app": wf.application_name,
                        },
                    )
            if linked is not None and linked[0] != wf.workflow_id:
                existing = cur.one(self._sql_existing, {"id": wf.workflow_id})
                outcome = (
                    existing_outcome(existing, wf.owner_xid) if existing else created_outcome(wf)
                )
                outcome.created = False
                outcome.linked_child_id = linked[0]
                outcome.linked_function_name = linked[1]
                return outcome
            try:
                inserted = cur.one(self._sql_init, params)
            except sqlite3.IntegrityError as exc:
                if wf.deduplication_id is not None and "deduplication_id" in str(exc):
                    raise DeduplicatedError(
                        wf.workflow_id, wf.queue_name or "", wf.deduplication_id
                    ) from exc
                raise
            if inserted is not None:
                return created_outcome(wf)
            existing = cur.one(self._sql_existing, {"id": wf.workflow_id})
            assert existing is not None
            return existing_outcome(existing, wf.owner_xid)

        return self._tx(body, "start workflow")

    def _insert_many(self, cur: Cursor, wfs: Sequence[NewWorkflow]) -> set[str]:
        # One local transaction: no round trips to save; dispatchers here poll.
        return {
            wf.workflow_id for wf in wfs if cur.one(self._sql_init, init_params(wf)) is not None
        }

    def _is_dedup_violation(self, exc: BaseException) -> bool:
        return isinstance(exc, sqlite3.IntegrityError) and "deduplication_id" in str(exc)

    def record_step(self, rec: StepRecord) -> RecordOutcome:
        return self._tx(lambda cur: self._record_in(cur, rec), "checkpoint step")

    # -- schema ---------------------------------------------------------------------------------
    def migrate(self) -> None:
        try:
            self.retry.run(self._migrate_once, "migrate the system schema")
        except sqlite3.OperationalError as exc:
            raise StorageConfigError(
                f"cannot create the SQLite system database at {self.path!r}: {exc}"
            ) from exc

    def _migrate_once(self) -> None:
        conn = self._connect()
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("BEGIN EXCLUSIVE")
            try:
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS waypoint_migrations (version INTEGER PRIMARY KEY, "
                    "name TEXT NOT NULL, applied_at INTEGER NOT NULL DEFAULT "
                    "(CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)))"
                )
                row = conn.execute("SELECT COALESCE(MAX(version), 0) FROM waypoint_migrations")
                current = int(row.fetchone()[0])
                migrations.check_adoptable(current, _dbos_version(conn), repr(self.path))

                def run(mig: migrations.Migration) -> None:
                    for statement in migrations.split_statements(mig.sql):
                        added = migrations.added_column(statement)
                        if added is None or not _has_column(conn, *added):
                            conn.execute(statement)
                    conn.execute(
                        "INSERT INTO waypoint_migrations (version, name) VALUES (?, ?)",
                        (mig.version, mig.name),
                    )

                migrations.apply("sqlite", current, run)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        finally:
            conn.close()

    def schema_version(self) -> int:
        rows = self._all("SELECT COALESCE(MAX(version), 0) FROM waypoint_migrations", {}, "version")
        return int(rows[0][0])

    def verify_schema(self) -> None:
        if not os.path.exists(self.path):
            raise StorageConfigError(
                f"the SQLite system database {self.path!r} does not exist and run_migrations is "
                "False; run `waypoint migrate` first"
            )
        try:
            current = self.schema_version()
        except sqlite3.OperationalError as exc:
            raise StorageConfigError(
                f"the SQLite system database {self.path!r} has no Waypoint schema; run "
                "`waypoint migrate` first"
            ) from exc
        migrations.require_current("sqlite", current, "run `waypoint migrate`")

    def drop(self) -> None:
        self.close()
        for suffix in ("", "-wal", "-shm"):
            try:
                os.remove(self.path + suffix)
            except FileNotFoundError:
                continue

    def grant(self, role: str) -> None:
        raise StorageConfigError(f"SQLite has no database roles; cannot grant access to {role!r}")
