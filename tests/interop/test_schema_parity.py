"""The system schema DBOS 2.31.1 creates and the one Waypoint creates, compared object by
object on each backend: every table, column (type, NULL-ability, whether it has a default),
index, constraint, function and trigger DBOS has, Waypoint has too; what Waypoint adds is
listed here, so a new addition (or a lost DBOS object) is a decision, not an accident."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from typing import Any

import psycopg

from tests.interop.conftest import Interop

# Waypoint's own objects (see waypoint/storage/migrations), on both backends.
WAYPOINT_ONLY = {
    "table executors",
    "table waypoint_migrations",
    "table workflow_fingerprints",
    "column operation_outputs.owner_xid",
    "column streams.write_key",
    "index idx_executors_last_seen",
    "index idx_notifications_unconsumed",
    "index uq_streams_write_key",
    # Version 10: live rows in creation order, across queues and per queue (listing at scale).
    "index idx_workflow_status_active_created",
    "index idx_workflow_status_queue_created",
    # Version 11: each filter's rows in listing order (list_workflows' first page at scale).
    *(
        f"index idx_workflow_status_{name}_created"
        for name in (
            "status",
            "name",
            "version",
            "user",
            "queue_name",
            "executor",
            "schedule",
            "finished",
            "dequeued",
            "child",
            "was_forked",
            "attributes",
        )
    ),
    # Version 12: the shard catalog and the placement markers (waypoint/storage/sharded).
    "table waypoint_shards",
    "table workflow_placement",
    "index idx_workflow_placement_created",
    # Version 13: rows stamped completed or dequeued before they were created (a clock behind
    # the creator's), the second branch of a completed_before/dequeued_before listing.
    "index idx_workflow_status_completed_skew_created",
    "index idx_workflow_status_dequeued_skew_created",
    # Each workflow's span, created to completed (dequeued): the rows running at an "after"
    # bound of a listing. PostgreSQL's version 14 (GiST), SQLite's 16 (by span class).
    "index idx_workflow_status_completed_span",
    "index idx_workflow_status_dequeued_span",
}
# And on PostgreSQL: the message insertion order (SQLite uses rowid), the primary keys' index
# names (SQLite's are automatic), and the wake-up triggers for other writers (version 7).
WAYPOINT_ONLY_PG = {
    "column notifications.seq",
    "sequence notifications_seq_seq",
    "index executors_pkey",
    "index waypoint_migrations_pkey",
    "index workflow_fingerprints_pkey",
    "index waypoint_shards_pkey",
    "index waypoint_shards_shard_id_key",
    "index workflow_placement_pkey",
    "index idx_workflow_status_id_pattern",  # version 10: ID-prefix search (text_pattern_ops)
    "function waypoint_wake_others()",
    # Version 15: the checkpoint and the outcome with kept primary-key plans.
    "function waypoint_checkpoint(p_workflow_uuid text, p_function_id integer, "
    "p_function_name text, p_output text, p_error text, p_child_workflow_id text, "
    "p_started_at bigint, p_completed_at bigint, p_serialization text, p_owner_xid text, "
    "p_application_name text, OUT recorded_by text, OUT current_status text)",
    "function waypoint_complete(p_workflow_uuid text, p_owner_xid text, p_status text, "
    "p_output text, p_error text, p_now bigint, OUT freed_queue text)",
    # Version 17: a message's receive and send with kept plans (the send delivers to a waiting
    # receive of the sender's process).
    "function waypoint_receive(p_workflow_uuid text, p_function_id integer, "
    "p_function_name text, p_topic text, p_started_at bigint, p_completed_at bigint, "
    "p_owner_xid text, p_application_name text, p_none text, p_none_serialization text, "
    "OUT r_owner text, OUT r_found boolean, OUT r_output text, OUT r_serialization text, "
    "OUT r_recorded_by text)",
    "function waypoint_send(p_message_uuid text, p_destination_uuid text, p_topic text, "
    "p_message text, p_serialization text, p_function_id integer, p_function_name text, "
    "p_started_at bigint, p_completed_at bigint, p_owner_xid text, p_application_name text, "
    "OUT r_delivered boolean)",
    # Version 18: a send from a workflow that delivers to a waiting receive, with its checkpoint.
    "function waypoint_send_recorded(p_workflow_uuid text, p_function_id integer, "
    "p_function_name text, p_output text, p_error text, p_child_workflow_id text, "
    "p_started_at bigint, p_completed_at bigint, p_serialization text, p_owner_xid text, "
    "p_application_name text, m_message_uuid text, m_destination_uuid text, m_topic text, "
    "m_message text, m_serialization text, d_function_id integer, d_function_name text, "
    "d_started_at bigint, d_completed_at bigint, d_owner_xid text, d_application_name text, "
    "OUT r_status text, OUT r_owner text, OUT r_recorded_by text, OUT r_delivered boolean)",
    *(
        f"trigger {t}"
        for t in (
            "workflow_status: waypoint_wake_status_insert",
            "workflow_status: waypoint_wake_status_update",
            "workflow_events: waypoint_wake_events",
            "streams: waypoint_wake_streams",
            "application_versions: waypoint_wake_versions",
            "queues: waypoint_wake_queues",
            "workflow_schedules: waypoint_wake_schedules",
        )
    ),
}
# And on SQLite: version 19's index of each partition's in-flight rows in queue order, ending
# in the rowid (PostgreSQL's claim reads DBOS's partition index, in that order already).
WAYPOINT_ONLY_SQLITE = {"index idx_workflow_status_partition_claim"}
# DBOS's that Waypoint leaves out: an extension no SDK uses (gen_random_uuid is built in),
# whose creation needs a privilege the application role may not have.
DBOS_ONLY_PG = {"extension uuid-ossp"}
# Where the two differ on purpose: SQLite lets a TEXT primary key hold NULL unless told not to;
# Waypoint tells it (DBOS's default fills the column, so DBOS's inserts are unaffected).
DIFFERENT_SQLITE = {"column queues.queue_id": (("text", False, True, 1), ("text", True, True, 1))}
# Columns and constraints of Waypoint's own tables come with the tables.
_OWN_PREFIXES = (
    "column executors.",
    "column waypoint_migrations.",
    "column workflow_fingerprints.",
    "column waypoint_shards.",
    "column workflow_placement.",
    "constraint executors_",
    "constraint waypoint_migrations_",
    "constraint workflow_fingerprints_",
    "constraint waypoint_shards_",
    "constraint workflow_placement_",
)


def _sqlite_objects(path: str) -> dict[str, Any]:
    found: dict[str, Any] = {}
    with closing(sqlite3.connect(path)) as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        ]
        for table in tables:
            found[f"table {table}"] = True
            for _, name, kind, notnull, default, pk in conn.execute(
                f'PRAGMA table_info("{table}")'
            ):
                # Compared by affinity: BIGINT and INTEGER, VARCHAR(255) and TEXT are alike.
                affinity = conn.execute(f"SELECT typeof(CAST(1 AS {kind or 'BLOB'}))")
                found[f"column {table}.{name}"] = (
                    affinity.fetchone()[0],
                    bool(notnull),
                    default not in (None, "NULL"),
                    pk,
                )
            for fk in conn.execute(f'PRAGMA foreign_key_list("{table}")'):
                found[f"foreign key {table}.{fk[3]}"] = (fk[2], fk[4], fk[5], fk[6])
        for name, table, sql_text in conn.execute(
            "SELECT name, tbl_name, sql FROM sqlite_master WHERE type = 'index'"
        ):
            if sql_text is not None:  # automatic indexes are named after their table
                unique = sql_text.upper().startswith("CREATE UNIQUE")
                cols = [r[2] for r in conn.execute(f'PRAGMA index_info("{name}")')]
                found[f"index {name}"] = (table, unique, cols)
    return found


def _pg_objects(url: str) -> dict[str, Any]:
    found: dict[str, Any] = {}
    with psycopg.connect(url) as conn:

        def rows(sql: str) -> list[tuple[Any, ...]]:
            return conn.execute(sql, ("dbos",)).fetchall()

        for (table,) in rows("SELECT tablename FROM pg_tables WHERE schemaname = %s"):
            found[f"table {table}"] = True
        for table, column, kind, nullable, default in rows(
            "SELECT table_name, column_name, data_type, is_nullable, column_default "
            "FROM information_schema.columns WHERE table_schema = %s"
        ):
            found[f"column {table}.{column}"] = (kind, nullable, default is not None)
        for name, table, definition in rows(
            "SELECT indexname, tablename, indexdef FROM pg_indexes WHERE schemaname = %s"
        ):
            head, _, rest = definition.partition(" USING ")
            found[f"index {name}"] = (table, head.startswith("CREATE UNIQUE"), rest.split(")")[0])
        for name, kind, definition in rows(
            "SELECT c.conname, c.contype, pg_get_constraintdef(c.oid) FROM pg_constraint c "
            "JOIN pg_namespace n ON n.oid = c.connamespace WHERE n.nspname = %s"
        ):
            found[f"constraint {name}"] = (kind, definition.replace("dbos.", ""))
        for name, args in rows(
            "SELECT p.proname, pg_get_function_identity_arguments(p.oid) FROM pg_proc p "
            "JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = %s"
        ):
            found[f"function {name}({args})"] = True
        for table, name in rows(
            "SELECT c.relname, t.tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND NOT t.tgisinternal"
        ):
            found[f"trigger {table}: {name}"] = True
        for (extension,) in conn.execute("SELECT extname FROM pg_extension").fetchall():
            if extension != "plpgsql":
                found[f"extension {extension}"] = True
        for (sequence,) in rows("SELECT sequencename FROM pg_sequences WHERE schemaname = %s"):
            found[f"sequence {sequence}"] = True
    return found


def _objects(h: Interop) -> dict[str, Any]:
    if h.backend == "sqlite":
        return _sqlite_objects(h.db_url.removeprefix("sqlite:///"))
    return _pg_objects(h.db_url)


def _objects(h: Interop) -> dict[str, Any]:
    if h.backend == "sqlite":
        return _sqlite_objects(h.db_url.removeprefix("sqlite:///"))
    return _pg_objects(h.db_url)


def test_the_schemas_dbos_and_waypoint_create_match(interop: Interop, tmp_path: Any) -> None:
    interop.spawn_as("dbos", "wait").wait_exit(timeout=60)
    dbos = _objects(interop)
    # The same harness on a second, fresh database for Waypoint.
    (tmp_path / "wp").mkdir()
    other = Interop(interop.backend, _second_url(interop, tmp_path), tmp_path / "wp")
    other.dbos_bin = interop.dbos_bin
    try:
        other.spawn_as("waypoint", "wait").wait_exit(timeout=60)
        waypoint = _objects(other)
    finally:
        other.cleanup()
        _drop(other)
    pg = interop.backend != "sqlite"
    missing = {k for k in dbos if k not in waypoint}
    added = {k for k in waypoint if k not in dbos and not k.startswith(_OWN_PREFIXES)}
    differ = {k: (dbos[k], waypoint[k]) for k in dbos if k in waypoint and dbos[k] != waypoint[k]}
    assert missing == (DBOS_ONLY_PG if pg else set())
    assert added == WAYPOINT_ONLY | (WAYPOINT_ONLY_PG if pg else WAYPOINT_ONLY_SQLITE)
    assert differ == ({} if pg else DIFFERENT_SQLITE)


def _second_url(h: Interop, tmp_path: Any) -> str:
    if h.backend == "sqlite":
        return f"sqlite:///{tmp_path}/waypoint-system.sqlite"
    name = h.db_url.rsplit("/", 1)[1] + "_wp"
    base = h.db_url.rsplit("/", 1)[0]
    with psycopg.connect(f"{base}/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    return f"{base}/{name}"


def _drop(h: Interop) -> None:
    if h.backend != "sqlite":
        base, name = h.db_url.rsplit("/", 1)
        with psycopg.connect(f"{base}/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
