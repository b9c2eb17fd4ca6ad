"""Index-building migrations on a PostgreSQL database in use (issue 11, big tables).

Migrations 10 and 11 build their indexes with ``CREATE INDEX CONCURRENTLY`` outside any
transaction (``waypoint/storage/postgres/migrator.py``). These tests hold the build at a
known point instead of racing it: a transaction left open after an UPDATE of
``workflow_status`` makes a ``CONCURRENTLY`` build wait for it (its index already exists,
not yet valid), and a plain ``CREATE INDEX`` wait for its lock; while it waits, the tests
write, kill the migrating backend or process, or start a second migrator, and read what
PostgreSQL's lock tables say about who waits for whom. Each test has a database of its own
on the shared server; a backend is ended with ``pg_terminate_backend`` (the server stays up).
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Optional, TypeVar

import psycopg
import pytest
from psycopg import sql

from tests.conftest import _recreate, pg_url, requires_postgres
from waypoint.storage import migrations
from waypoint.storage.errors import StorageError
from waypoint.storage.postgres.migrator import index_validity
from waypoint.storage.registry import open_url

pytestmark = requires_postgres

SCHEMA = "dbos"
LATEST = migrations.latest_version("postgresql")
MIGRATE = """
import logging, sys
logging.basicConfig(level=logging.INFO, format="%(message)s")
from waypoint.storage.registry import open_url
store = open_url(sys.argv[1], schema=sys.argv[2], pool_size=1)
store.migrate()
print("version", store.schema_version(), flush=True)
store.close()
"""
T = TypeVar("T")


@pytest.fixture
def db() -> Iterator[str]:
    base = pg_url("").rstrip("/")
    name = f"wp_idxmig_{uuid.uuid4().hex[:10]}"
    _recreate(base, name)
    yield pg_url(name)
    _recreate(base, name, drop_only=True)


def migrate_as_before(url: str, schema: str, upto: int) -> None:
    """Migrations 1..``upto`` as the runner applied them before: one transaction, plain
    ``CREATE INDEX`` (the files then said exactly that), each version recorded."""
    ident = sql.Identifier(schema)
    with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(ident))
        conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {}.waypoint_migrations (version INTEGER PRIMARY KEY, "
                "name TEXT NOT NULL, applied_at BIGINT NOT NULL "
                "DEFAULT (EXTRACT(EPOCH FROM now()) * 1000)::bigint)"
            ).format(ident)
        )
        for mig in migrations.load("postgresql")[:upto]:
            conn.execute(mig.in_transaction().replace("{schema}", schema))
            record = "INSERT INTO {}.waypoint_migrations (version, name) VALUES (%s, %s)"
            conn.execute(sql.SQL(record).format(ident), (mig.version, mig.name))


def fill(url: str, schema: str, rows: int) -> None:
    """``rows`` workflows, a tenth of them ENQUEUED on a queue, the rest finished."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            sql.SQL(
                "INSERT INTO {}.workflow_status (workflow_uuid, status, name, queue_name, "
                "created_at, updated_at, completed_at) "
                "SELECT 'wf-' || i, CASE WHEN i %% 10 = 0 THEN 'ENQUEUED' ELSE 'SUCCESS' END, "
                "'fn-' || (i %% 7), CASE WHEN i %% 10 = 0 THEN 'q' END, i, i, "
                "CASE WHEN i %% 10 <> 0 THEN i END FROM generate_series(1, %s) AS i"
            ).format(sql.Identifier(schema)),
            (rows,),
        )


def version(conn: psycopg.Connection[Any], schema: str = SCHEMA) -> int:
    row = conn.execute(
        sql.SQL("SELECT MAX(version) FROM {}.waypoint_migrations").format(sql.Identifier(schema))
    ).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def indexes(conn: psycopg.Connection[Any], schema: str) -> list[tuple[str, str, str, bool]]:
    """(table, index, definition with the schema name left out, valid) of every index."""
    rows = conn.execute(
        "SELECT x.tablename, x.indexname, x.indexdef, i.indisvalid FROM pg_indexes x "
        "JOIN pg_namespace n ON n.nspname = x.schemaname "
        "JOIN pg_class c ON c.relname = x.indexname AND c.relnamespace = n.oid "
        "JOIN pg_index i ON i.indexrelid = c.oid WHERE x.schemaname = %s",
        (schema,),
    ).fetchall()
    return sorted((t, n, d.replace(f" {schema}.", " "), bool(v)) for t, n, d, v in rows)


def check_every_row_indexed(conn: psycopg.Connection[Any], schema: str) -> set[str]:
    """amcheck's ``bt_index_check(heapallindexed)`` on every B-tree index of workflow_status:
    raises if a row (one written during a concurrent build, say) is missing from one."""
    conn.execute("CREATE EXTENSION IF NOT EXISTS amcheck")
    rows = conn.execute(
        "SELECT c.relname, bt_index_check(c.oid, true) FROM pg_index i "
        "JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_class t ON t.oid = i.indrelid "
        "JOIN pg_namespace n ON n.oid = t.relnamespace JOIN pg_am a ON a.oid = c.relam "
        "WHERE n.nspname = %s AND t.relname = 'workflow_status' AND a.amname = 'btree'",
        (schema,),
    ).fetchall()
    return {name for name, _ in rows}


class Migration:
    """``store.migrate()`` in a process of its own, its output in ``log``."""

    def __init__(self, url: str, log: Path, schema: str = SCHEMA) -> None:
        self.log = log
        self._out = log.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", MIGRATE, url, schema], stdout=self._out, stderr=self._out
        )

    def running(self) -> bool:
        return self.proc.poll() is None

    def wait(self) -> int:
        code = self.proc.wait(180)
        self._out.close()
        return code

    def output(self) -> str:
        return self.log.read_text()


def wait_for(what: str, check: Callable[[], Optional[T]], *alive: Migration) -> T:
    """Poll ``check`` until it returns something; fail if a migration in ``alive`` exits."""
    deadline = time.monotonic() + 120
    while True:
        got = check()
        if got:
            return got
        for m in alive:
            if not m.running():
                pytest.fail(f"waiting for {what}: the migration exited:\n{m.output()}")
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.05)


def blocked_by(watch: psycopg.Connection[Any], pid: int) -> Optional[int]:
    """The backend of this database waiting for backend ``pid``, if any."""
    row = watch.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
        "AND %s = ANY(pg_blocking_pids(pid))",
        (pid,),
    ).fetchone()
    return int(row[0]) if row else None


def open_writer(url: str) -> psycopg.Connection[Any]:
    """A writer of ``workflow_status`` left in its transaction: the build waits for it."""
    holder = psycopg.connect(url)
    touch = "UPDATE {} SET updated_at = updated_at + 1 WHERE workflow_uuid = 'wf-1'"
    holder.execute(sql.SQL(touch).format(sql.Identifier(SCHEMA, "workflow_status")))
    return holder


class Writer(threading.Thread):
    """What a running application does meanwhile: enqueue one workflow, finish another."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.pid: Optional[int] = None
        self.done = threading.Event()

    def run(self) -> None:
        ws = sql.Identifier(SCHEMA, "workflow_status")
        with psycopg.connect(self.url, autocommit=True) as conn:
            self.pid = conn.info.backend_pid
            conn.execute(
                sql.SQL(
                    "INSERT INTO {} (workflow_uuid, status, name, queue_name, created_at, "
                    "updated_at) VALUES ('written-meanwhile', 'ENQUEUED', 'fn-0', 'q', 0, 0)"
                ).format(ws)
            )
            conn.execute(
                sql.SQL(
                    "UPDATE {} SET status = 'ERROR', completed_at = 1 WHERE workflow_uuid = 'wf-10'"
                ).format(ws)
            )
        self.done.set()


def test_writes_go_on_while_the_indexes_build(db: str, tmp_path: Path) -> None:
    """(1) INSERT and UPDATE on workflow_status complete while migration 10 builds its first
    index on 20,000 rows; before, they queued behind the migration's lock until it committed."""
    migrate_as_before(db, SCHEMA, 9)
    fill(db, SCHEMA, 20_000)
    with psycopg.connect(db, autocommit=True) as watch, open_writer(db) as holder:
        migration = Migration(db, tmp_path / "migrate.log")
        migrating = wait_for(
            "the build to wait for the open transaction",
            lambda: blocked_by(watch, holder.info.backend_pid),
            migration,
        )
        writer = Writer(db)
        writer.start()

        def outcome() -> Optional[str]:
            if writer.done.is_set():
                return "done"
            if writer.pid is None:
                return None
            row = watch.execute("SELECT pg_blocking_pids(%s)", (writer.pid,)).fetchone()
            return f"blocked by {row[0]} (migration: {migrating})" if row and row[0] else None

        assert wait_for("the writer to finish or block", outcome) == "done"
        # ...while the build was in progress: its index is there, not valid yet, the version
        # not recorded, the migrating backend still waiting.
        assert index_validity(watch, SCHEMA, "idx_workflow_status_active_created") is False
        assert version(watch) == 9 and migration.running()
        assert blocked_by(watch, holder.info.backend_pid) == migrating
        holder.commit()
    assert migration.wait() == 0, migration.output()
    with psycopg.connect(db, autocommit=True) as conn:
        assert version(conn) == LATEST
        assert all(valid for *_, valid in indexes(conn, SCHEMA))
        # The rows written during the build are in the indexes built meanwhile.
        checked = check_every_row_indexed(conn, SCHEMA)
    assert {name for name, _ in migrations.load("postgresql")[9].concurrent_indexes} <= checked


@pytest.mark.parametrize("how", ["killed_process_and_backend", "killed_process"])
def test_an_interrupted_build_is_finished_by_the_next_launch(
    db: str, tmp_path: Path, how: str
) -> None:
    """(2) Migration 11 interrupted mid-build: its version is not recorded, and the next
    migration ends with every index valid. With the backend killed too, the build leaves its
    index invalid and the next migration drops and rebuilds it; with only the process killed,
    its backend goes on building, lock held, and the next migration waits for it to end."""
    migrate_as_before(db, SCHEMA, 10)
    fill(db, SCHEMA, 20_000)
    first = "idx_workflow_status_status_created"
    with psycopg.connect(db, autocommit=True) as watch, open_writer(db) as holder:
        migration = Migration(db, tmp_path / "first.log")
        migrating = wait_for(
            "the build to wait for the open transaction",
            lambda: blocked_by(watch, holder.info.backend_pid),
            migration,
        )
        assert index_validity(watch, SCHEMA, first) is False
        migration.proc.kill()  # SIGKILL: nothing of the process runs again
        migration.wait()
        if how == "killed_process_and_backend":
            watch.execute("SELECT pg_terminate_backend(%s)", (migrating,))
            wait_for("the backend to end", lambda: not _alive(watch, migrating))
            assert index_validity(watch, SCHEMA, first) is False  # left behind, invalid
        assert version(watch) == 10
        again = Migration(db, tmp_path / "again.log")
        if how == "killed_process":
            wait_for(
                "the next migration to wait for the orphaned backend",
                lambda: _polling_for_the_lock(watch, exclude=migrating),
                again,
            )
            assert again.running() and version(watch) == 10 and _alive(watch, migrating)
        holder.commit()
    assert again.wait() == 0, again.output()
    assert f"version {LATEST}" in again.output()
    if how == "killed_process_and_backend":
        assert f"index {SCHEMA}.{first} was left invalid" in again.output()
    check_all_built(db)


def test_a_launch_whose_backend_is_killed_finishes_its_own_migration(
    db: str, tmp_path: Path
) -> None:
    """The migrating backend terminated (``pg_terminate_backend``, as an administrator or a
    failover would): the launch tries again (``when_reachable``), and its second attempt drops
    the index the first left invalid, builds it again and records the version."""
    migrate_as_before(db, SCHEMA, 10)
    fill(db, SCHEMA, 20_000)
    first = "idx_workflow_status_status_created"
    with psycopg.connect(db, autocommit=True) as watch, open_writer(db) as holder:
        migration = Migration(db, tmp_path / "migrate.log")
        hpid = holder.info.backend_pid
        migrating = wait_for(
            "the build to wait for the open transaction", lambda: blocked_by(watch, hpid), migration
        )
        watch.execute("SELECT pg_terminate_backend(%s)", (migrating,))
        retried = wait_for(
            "the second attempt to build",
            lambda: (pid := blocked_by(watch, hpid)) != migrating and pid,
            migration,
        )
        assert retried != migrating and version(watch) == 10
        assert index_validity(watch, SCHEMA, first) is False  # being built again
        holder.commit()
    assert migration.wait() == 0, migration.output()
    assert f"index {SCHEMA}.{first} was left invalid" in migration.output()
    check_all_built(db)


def _alive(watch: psycopg.Connection[Any], pid: int) -> bool:
    row = watch.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
    return row is not None


def check_all_built(url: str) -> None:
    """At the latest version, every index valid, migration 11's there, every row in each."""
    with psycopg.connect(url, autocommit=True) as conn:
        assert version(conn) == LATEST
        found = indexes(conn, SCHEMA)
        check_every_row_indexed(conn, SCHEMA)
    assert all(valid for *_, valid in found)
    built = {name for name, _ in migrations.load("postgresql")[10].concurrent_indexes}
    assert built <= {name for _, name, _, _ in found}


def _polling_for_the_lock(watch: psycopg.Connection[Any], exclude: int) -> Optional[int]:
    row = watch.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid NOT IN (pg_backend_pid(), %s) AND query LIKE '%%pg_try_advisory_lock%%'",
        (exclude,),
    ).fetchone()
    return int(row[0]) if row else None


def test_two_processes_migrating_at_once(db: str, tmp_path: Path) -> None:
    """(3) While one process builds the indexes, a second one waits for the migration lock
    without building anything; both end at the latest version, each version applied once."""
    migrate_as_before(db, SCHEMA, 9)
    fill(db, SCHEMA, 20_000)
    with psycopg.connect(db, autocommit=True) as watch, open_writer(db) as holder:
        a = Migration(db, tmp_path / "a.log")
        builder = wait_for(
            "the first migration to build", lambda: blocked_by(watch, holder.info.backend_pid), a
        )
        b = Migration(db, tmp_path / "b.log")
        waiter = wait_for(
            "the second migration to wait for the lock",
            lambda: _polling_for_the_lock(watch, exclude=builder),
            b,
        )
        assert waiter != builder and a.running() and b.running()
        building = watch.execute(
            "SELECT pid FROM pg_stat_progress_create_index WHERE datname = current_database()"
        ).fetchall()
        assert building == [(builder,)]
        holder.commit()
    assert a.wait() == 0, a.output()
    assert b.wait() == 0, b.output()
    for m in (a, b):
        assert f"version {LATEST}" in m.output()
    assert "another process is migrating" in b.output()
    assert "applied" not in b.output(), b.output()
    for mig in migrations.pending("postgresql", 9):
        assert f"applied system schema migration {mig.version:04d}_{mig.name}" in a.output()
    with psycopg.connect(db, autocommit=True) as conn:
        assert version(conn) == LATEST
        assert all(valid for *_, valid in indexes(conn, SCHEMA))


def _dbos_created(url: str, schema: str) -> None:
    """A database as DBOS 2.31 leaves it, as far as Waypoint's indexes go: its migration level
    and a workflow_status table with rows (the table's columns are DBOS's)."""
    base = migrations.load("postgresql")[0].sql
    start = base.index('CREATE TABLE IF NOT EXISTS "{schema}".workflow_status')
    table = base[start : base.index(");", start) + 2]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        conn.execute(
            sql.SQL("CREATE TABLE {}.dbos_migrations (version BIGINT PRIMARY KEY)").format(
                sql.Identifier(schema)
            )
        )
        conn.execute(
            sql.SQL("INSERT INTO {}.dbos_migrations VALUES (108)").format(sql.Identifier(schema))
        )
        conn.execute(table.replace("{schema}", schema))
    fill(url, schema, 1_000)


def _invalid_leftover(url: str, schema: str) -> None:
    """At version 10, with an index of migration 11 left invalid by a failed build (a unique
    one, another definition: only a rebuild gives the right one)."""
    migrate_as_before(url, schema, 10)
    fill(url, schema, 1_000)
    with psycopg.connect(url, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute(
                sql.SQL(
                    "CREATE UNIQUE INDEX CONCURRENTLY idx_workflow_status_name_created ON {} (name)"
                ).format(sql.Identifier(schema, "workflow_status"))
            )
        assert index_validity(conn, schema, "idx_workflow_status_name_created") is False


def _at(upto: int) -> Callable[[str, str], None]:
    def prepare(url: str, schema: str) -> None:
        migrate_as_before(url, schema, upto)
        fill(url, schema, 1_000)

    return prepare


STARTS: dict[str, Callable[[str, str], None]] = {
    "new": lambda url, schema: None,
    "adopted_dbos": _dbos_created,
    "at_9": _at(9),
    "at_10": _at(10),
    "at_11": _at(11),
    "at_12": _at(12),
    "invalid_leftover": _invalid_leftover,
}


def test_the_final_schema_is_the_same_whatever_the_start(db: str) -> None:
    """(4) Every index, with its definition, as the runner created them before this change
    (all migrations in one transaction, plain CREATE INDEX), whatever the database started
    from; and every one valid."""
    migrate_as_before(db, "reference", LATEST)
    with psycopg.connect(db, autocommit=True) as conn:
        reference = indexes(conn, "reference")
    assert reference and all(valid for *_, valid in reference)
    for start, prepare in STARTS.items():
        schema = f"s_{start}"
        prepare(db, schema)
        store = open_url(db, schema=schema, pool_size=1)
        try:
            store.migrate()
        finally:
            store.close()
        with psycopg.connect(db, autocommit=True) as conn:
            assert version(conn, schema) == LATEST, start
            assert indexes(conn, schema) == reference, start


def test_an_index_that_cannot_be_built_is_never_counted_done(db: str) -> None:
    """``IF NOT EXISTS`` skips a name that is taken by something else than the index (here a
    table): the runner finds no valid index under it and refuses to record the version."""
    migrate_as_before(db, SCHEMA, 9)
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE TABLE {} (x INT)").format(
                sql.Identifier(SCHEMA, "idx_workflow_status_id_pattern")
            )
        )
    store = open_url(db, schema=SCHEMA, pool_size=1)
    try:
        with pytest.raises(StorageError, match="idx_workflow_status_id_pattern"):
            store.migrate()
    finally:
        store.close()
    with psycopg.connect(db, autocommit=True) as conn:
        assert version(conn) == 9
