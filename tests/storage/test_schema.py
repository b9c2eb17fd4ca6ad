"""Schema administration, URLs, the store's lifecycle and its errors: migrations that can run
twice, a missing or unmigrated database reported as a configuration error, truncation, drop,
notifications, enqueueing on the caller's connection, and a closed store."""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg import sql as pgsql

from tests.conftest import pg_url, requires_postgres
from tests.storage.build import T0, enqueue, queued, start, status, step, with_everything
from tests.storage.conftest import SCHEMA, is_public_error, open_store
from waypoint.error import DBOSException, DBOSWorkflowConflictIDError
from waypoint.storage.errors import (
    DeduplicatedError,
    StorageConfigError,
    StorageError,
    StoreClosedError,
)
from waypoint.storage.protocol import (
    Completion,
    EventWrite,
    QueueRow,
    Store,
    StreamWrite,
    done_key,
    queue_key,
)
from waypoint.storage.registry import open_url, reset_database

# -- migrations and schema checks -------------------------------------------------------------


def test_migrate_twice_is_harmless(store: Store) -> None:
    version = store.schema_version()
    assert version >= 1
    start(store, "w")
    store.migrate()
    store.verify_schema()
    assert store.schema_version() == version
    assert status(store, "w") == "PENDING"


def test_a_database_that_does_not_exist(scratch_url: str) -> None:
    missing = open_url(scratch_url, schema=SCHEMA)
    with pytest.raises(StorageConfigError):
        missing.verify_schema()
    # migrate creates it (where the backend can create databases).
    missing.migrate()
    missing.verify_schema()
    missing.drop()
    with pytest.raises(StorageConfigError):
        missing.verify_schema()


def test_a_database_without_the_schema(store_url: str) -> None:
    empty = open_url(store_url, schema="wp_never_migrated")
    empty.open()
    try:
        with pytest.raises(StorageConfigError):
            empty.verify_schema()
    finally:
        empty.close()


def test_truncate_all_keeps_the_schema(store: Store) -> None:
    with_everything(store, "w")
    enqueue(store, "q1")
    store.upsert_queue(QueueRow("emails"), update=False)
    store.register_version("v1", "app")
    store.truncate_all()
    store.verify_schema()
    assert store.get_workflow("w") is None and store.get_workflow("q1") is None
    assert store.list_queues(None) == [] and store.list_versions(None) == []
    start(store, "w")
    assert not store.consume_message("w", "t", step("w", 1, "run-w")).found
    assert store.get_events("w") == {} and store.load_steps("w") == {}


def test_reset_database(store_url: str, store: Store) -> None:
    start(store, "w")
    reset_database(store_url, SCHEMA, truncate=True)
    assert store.get_workflow("w") is None


def _table(store_url: str, name: str) -> str:
    return name if store_url.startswith("sqlite:") else f'"{SCHEMA}".{name}'


def test_a_version_registered_without_a_timestamp(
    store_url: str, store: Store, driver_connection: Any
) -> None:
    # DBOS inserts (version_id, version_name, application_name) and lets the database stamp it.
    table = _table(store_url, "application_versions")
    placeholder = "?" if store_url.startswith("sqlite:") else "%s"
    driver_connection.execute(
        f"INSERT INTO {table} (version_id, version_name, application_name) "
        f"VALUES ({placeholder}, {placeholder}, {placeholder})",
        ("id-1", "v-dbos", "app"),
    )
    driver_connection.commit()
    (row,) = store.list_versions("app")
    assert row.version_name == "v-dbos" and row.version_timestamp > T0


def _write_dbos_level(url: str, schema: str, version: int) -> None:
    """Leave ``url`` as an older DBOS would: a dbos_migrations table at ``version``."""
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            conn.execute("CREATE TABLE dbos_migrations (version INTEGER NOT NULL PRIMARY KEY)")
            conn.execute("INSERT INTO dbos_migrations VALUES (?)", (version,))
        return
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(pg_url("postgres"), autocommit=True) as admin:
        admin.execute(pgsql.SQL("CREATE DATABASE {}").format(pgsql.Identifier(name)))
    with psycopg.connect(url) as conn:
        conn.execute(pgsql.SQL("CREATE SCHEMA {}").format(pgsql.Identifier(schema)))
        conn.execute(
            pgsql.SQL("CREATE TABLE {}.dbos_migrations (version BIGINT PRIMARY KEY)").format(
                pgsql.Identifier(schema)
            )
        )
        conn.execute(
            pgsql.SQL("INSERT INTO {}.dbos_migrations VALUES (%s)").format(
                pgsql.Identifier(schema)
            ),
            (version,),
        )


def test_an_older_dbos_database_is_not_adopted(one_database_url: str) -> None:
    _write_dbos_level(one_database_url, SCHEMA, 95)
    older = open_url(one_database_url, schema=SCHEMA)
    with pytest.raises(StorageConfigError, match="DBOS migration 95"):
        older.migrate()


def test_a_current_or_newer_dbos_level_is_kept(one_database_url: str) -> None:
    # A DBOS database at a later level (a newer DBOS) is adopted; its level is left alone, so
    # neither side migrates the other's objects again.
    _write_dbos_level(one_database_url, SCHEMA, 120)
    newer = open_url(one_database_url, schema=SCHEMA)
    newer.migrate()
    newer.verify_schema()
    if one_database_url.startswith("sqlite:///"):
        with sqlite3.connect(one_database_url.removeprefix("sqlite:///")) as conn:
            levels = conn.execute("SELECT version FROM dbos_migrations").fetchall()
    else:
        with psycopg.connect(one_database_url) as pg:
            levels = pg.execute(f'SELECT version FROM "{SCHEMA}".dbos_migrations').fetchall()
    assert levels == [(120,)]
    newer.drop()


def test_adopting_a_database_without_waypoints_columns(one_database_url: str) -> None:
    """A database DBOS created has operation_outputs without Waypoint's owner_xid: migrating
    adds it (SQLite has no ADD COLUMN IF NOT EXISTS; the runner checks), and steps record."""
    _write_dbos_level(one_database_url, SCHEMA, 108)
    table = _table(one_database_url, "operation_outputs")
    dbos_shape = (
        f"CREATE TABLE {table} (workflow_uuid TEXT NOT NULL, function_id INTEGER NOT NULL, "
        "function_name TEXT NOT NULL DEFAULT '', output TEXT, error TEXT, "
        "child_workflow_id TEXT, started_at_epoch_ms BIGINT, completed_at_epoch_ms BIGINT, "
        "serialization TEXT, application_name TEXT, PRIMARY KEY (workflow_uuid, function_id))"
    )
    if one_database_url.startswith("sqlite:///"):
        with sqlite3.connect(one_database_url.removeprefix("sqlite:///")) as conn:
            conn.execute(dbos_shape)
    else:
        with psycopg.connect(one_database_url) as pg:
            pg.execute(dbos_shape)
    adopted = open_store(one_database_url)
    if one_database_url.startswith("sqlite:///"):
        # As an earlier Waypoint left such a file: at version 4, still without owner_xid.
        adopted.close()
        with sqlite3.connect(one_database_url.removeprefix("sqlite:///")) as conn:
            conn.execute("ALTER TABLE operation_outputs DROP COLUMN owner_xid")
            conn.execute("DELETE FROM waypoint_migrations WHERE version > 4")
        adopted = open_store(one_database_url)
    try:
        wf = start(adopted, "w")
        assert adopted.record_step(step("w", 1, wf.owner_xid)).accepted
        assert list(adopted.load_steps("w")) == [1]
    finally:
        adopted.drop()


@requires_postgres
def test_the_sql_entry_points_for_other_languages(store: Store, driver_connection: Any) -> None:
    """enqueue_workflow and send_message, the SQL functions DBOS's schema offers enqueuers
    that are not Python: portable-JSON rows Waypoint reads like its own."""
    if store.dialect != "postgresql":
        pytest.skip("stored functions are PostgreSQL's")
    fn = f'"{SCHEMA}"'

    def call(sql: str) -> Any:
        try:
            return driver_connection.execute(f"SELECT {fn}.{sql}").fetchone()[0]
        finally:
            driver_connection.commit()

    args = "ARRAY['1'::json, '\"a\"'::json], '{\"k\": 2}'::json"
    assert call(f"enqueue_workflow('job', 'q', {args}, workflow_id => 'sql-1', priority => 3)") == (
        "sql-1"
    )
    assert call(f"enqueue_workflow('job', 'q', {args}, workflow_id => 'sql-1')") == "sql-1"
    row = store.get_workflow("sql-1")
    assert row is not None and (row.status, row.queue_name, row.priority) == ("ENQUEUED", "q", 3)
    assert row.serialization == "portable_json" and row.owner_xid and row.recovery_attempts == 0
    assert json.loads(row.inputs or "") == {"positionalArgs": [1, "a"], "namedArgs": {"k": 2}}
    call("enqueue_workflow('job', 'q', workflow_id => 'sql-2', delay_until_epoch_ms => 5)")
    assert status(store, "sql-2") == "DELAYED"
    call("enqueue_workflow('job', 'q', workflow_id => 'sql-3', deduplication_id => 'd')")
    with pytest.raises(psycopg.errors.UniqueViolation, match="DBOS queue duplicated"):
        call("enqueue_workflow('job', 'q', workflow_id => 'sql-4', deduplication_id => 'd')")
    with pytest.raises(psycopg.errors.RaiseException, match="cannot be null or empty"):
        call("enqueue_workflow('', 'q')")

    for _ in range(2):  # a repeated message ID is one message
        call("send_message('sql-1', '\"hi\"'::json, 'topic', 'm-1')")
    call("send_message('sql-1', '3'::json)")
    rows = driver_connection.execute(
        f"SELECT topic, message, serialization FROM {fn}.notifications "
        "WHERE destination_uuid = 'sql-1' ORDER BY created_at_epoch_ms, seq"
    ).fetchall()
    driver_connection.commit()
    assert rows == [("topic", '"hi"', "portable_json"), ("__null__topic__", "3", "portable_json")]
    with pytest.raises(psycopg.errors.ForeignKeyViolation, match="DBOS non-existent workflow"):
        call("send_message('nobody', '1'::json)")


# -- URLs -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "",
        "   ",
        "no scheme at all",
        "mysql://user@host/db",
        "sqlite:///:memory:",
        "sqlite://",
    ],
)
def test_bad_urls(url: str) -> None:
    with pytest.raises(StorageConfigError):
        open_url(url)


@pytest.mark.parametrize("schema", ["bad-name", "1abc", "", "x" * 64, "a;drop"])
def test_bad_schema_names(schema: str) -> None:
    with pytest.raises(StorageConfigError):
        open_url("postgresql://postgres@127.0.0.1/db", schema=schema)


def test_identity_names_the_database_without_credentials(store: Store) -> None:
    assert isinstance(store.dialect, str) and isinstance(store.identity, str)
    other = open_url("postgresql://alice:s3cret@127.0.0.1:5432/db")
    assert "s3cret" not in other.identity and "db" in other.identity


@requires_postgres
def test_an_unreachable_server() -> None:
    down = open_url("postgresql://postgres@127.0.0.1:1/nothing?connect_timeout=2")
    for admin in (down.verify_schema, down.migrate):
        with pytest.raises(StorageConfigError):
            admin()


# -- lifecycle ----------------------------------------------------------------------------------


def test_ping_and_close(connect: Callable[[], Store]) -> None:
    s = connect()
    s.ping()
    s.ping_once()
    s.close()
    with pytest.raises(StoreClosedError):
        s.get_workflow("w")


class Heard:
    """The payloads a store's listener receives, in arrival order."""

    def __init__(self) -> None:
        self.received: list[str] = []
        self.connected = threading.Event()
        self.arrived = threading.Condition()

    def __call__(self, channel: str, payload: str) -> None:
        with self.arrived:
            self.received.append(payload)
            self.arrived.notify_all()

    def wait_for(self, ready: Callable[[list[str]], bool]) -> list[str]:
        with self.arrived:
            assert self.arrived.wait_for(lambda: ready(self.received), timeout=10), self.received
            return list(self.received)


def test_notifications_reach_other_processes(store: Store, connect: Callable[[], Store]) -> None:
    heard = Heard()
    listener = store.listen(heard, heard.connected.set)
    if listener is None:
        return  # a polling backend: nothing is pushed
    try:
        assert heard.connected.wait(10)
        other = connect()
        wf = start(other, "w")
        enqueue(other, "q1")
        other.complete_workflow(Completion("w", wf.owner_xid, "SUCCESS", None, None, T0))
        wanted = {done_key("w"), queue_key("q")}
        heard.wait_for(lambda got: wanted <= set(got))
    finally:
        listener.stop()


@requires_postgres
def test_other_writers_wake_waypoint(store: Store, driver_connection: Any) -> None:
    """Writes by anything but Waypoint (DBOS, plain SQL) notify Waypoint's wake-up keys through
    the schema's triggers; Waypoint's own writes notify once, themselves (an enqueue just
    after its commit, see postgres/notifier.py)."""
    heard = Heard()
    listener = store.listen(heard, heard.connected.set)
    if listener is None:
        pytest.skip("a polling backend: nothing is pushed")
    ws, ev = f'"{SCHEMA}".workflow_status', f'"{SCHEMA}".workflow_events'

    def foreign(sql: str, *params: Any) -> None:
        driver_connection.execute(sql, params)
        driver_connection.commit()

    def settle(mark: str) -> list[str]:
        # Notifications arrive in commit order: once this one is in, the earlier ones are.
        foreign("SELECT pg_notify('waypoint', %s)", mark)
        return heard.wait_for(lambda got: mark in got)

    try:
        assert heard.connected.wait(10)
        foreign(
            f"INSERT INTO {ws} (workflow_uuid, status, name, queue_name, created_at, updated_at)"
            " VALUES ('dbos-1', 'ENQUEUED', 'wf', 'foreign', 1, 1)"
        )
        foreign(f"UPDATE {ws} SET status = 'SUCCESS' WHERE workflow_uuid = 'dbos-1'")
        foreign(f"INSERT INTO {ev} (workflow_uuid, key, value) VALUES ('dbos-1', 'k', 'v')")
        foreign(f"UPDATE {ws} SET status = 'CANCELLED' WHERE workflow_uuid = 'dbos-1'")
        seen = settle("mark-1")
        assert seen[: seen.index("mark-1")] == [
            "q:foreign",
            "d:dbos-1",
            "q:foreign",
            "e:dbos-1::k",
            "c:dbos-1",
        ]
        enqueue(store, "own", "mine")
        heard.wait_for(lambda got: "q:mine" in got)  # sent after the commit, on its own
        seen = settle("mark-2")
        assert seen[seen.index("mark-1") + 1 : seen.index("mark-2")] == ["q:mine"]
    finally:
        listener.stop()


@requires_postgres
def test_waypoint_wakes_dbos_listeners(store: Store, store_url: str) -> None:
    """An event or stream value Waypoint writes is announced on the channels a DBOS process
    listens on, with DBOS's payload, so its waiters do not sit out their fallback poll."""
    if store.dialect != "postgresql":
        pytest.skip("SQLite has no notifications: every waiter polls")
    if store_url.startswith("shards://"):
        pytest.skip("a DBOS process listens on one database: each shard's (the postgres mode)")
    with psycopg.connect(store_url, autocommit=True) as dbos_side:
        for channel in ("dbos_workflow_events_channel", "dbos_streams_channel"):
            dbos_side.execute(pgsql.SQL("LISTEN {}").format(pgsql.Identifier(channel)))
        start(store, "w")
        store.set_event(EventWrite("w", "k", '"v"', "json", 1), None)
        store.write_stream(StreamWrite("w", "s", '"v"', "json", 1, "wf:1"), None)
        got = [(n.channel, n.payload) for n in dbos_side.notifies(timeout=10, stop_after=2)]
    assert got == [("dbos_workflow_events_channel", "w::k"), ("dbos_streams_channel", "w::s")]


def test_enqueue_on_the_callers_connection(store: Store, driver_connection: Any) -> None:
    store.insert_on_connection(driver_connection, queued("rolled-back"))
    driver_connection.rollback()
    assert store.get_workflow("rolled-back") is None
    store.insert_on_connection(driver_connection, queued("committed", deduplication_id="d"))
    store.insert_on_connection(driver_connection, queued("committed"))  # a retry: harmless
    driver_connection.commit()
    assert status(store, "committed") == "ENQUEUED"
    with pytest.raises(DeduplicatedError):
        store.insert_on_connection(driver_connection, queued("again", deduplication_id="d"))
    driver_connection.rollback()


# -- errors -------------------------------------------------------------------------------------


def test_the_public_error_check() -> None:
    assert is_public_error(DBOSException("x"))
    assert is_public_error(DBOSWorkflowConflictIDError("w"))
    assert not is_public_error(StorageError("x"))
    assert not is_public_error(ValueError("x"))


def test_protocol_only(store: Store) -> None:
    with pytest.raises(AttributeError):
        store._all  # type: ignore[attr-defined]


def test_the_conforming_store_is_reused(store_url: str) -> None:
    # Any number of stores on one database, opened and closed in any order.
    first, second = open_store(store_url), open_store(store_url)
    first.close()
    # (a fresh ID: this test does not reset the database, which earlier tests may have used)
    assert second.get_workflow(f"absent-{uuid.uuid4().hex}") is None
    second.close()


def test_history_id_names_the_line_of_writes(store: Store) -> None:
    """PostgreSQL names its WAL timeline (a promoted standby starts a new one:
    tests/crash/test_failover.py); SQLite has no standby and says nothing."""
    found = store.history_id()
    if store.dialect == "sqlite":
        assert found is None
    else:
        assert found is not None
        # Sharded: one timeline per shard ("<ordinal>:<timeline>|..."), changing when any does.
        for part in found.split("|"):
            timeline = part.rpartition(":")[2]
            assert len(timeline) == 8 and int(timeline, 16) >= 1
        assert store.history_id() == found  # stable while no failover happens
