"""How the PostgreSQL store's statements are planned (issue 11).

psycopg prepares a statement after five executions and PostgreSQL then usually keeps one
generic plan, costed once for the table as it was. A store's connections live long and
start on a new, small database: there, the completion by workflow id was kept as a walk of
the partial index of PENDING rows, and the checkpoint's join as a scan of the whole table,
for the connection's life, so with 10,000 workflows parked every completion read all their
entries (other workflows ran at half their speed). So the statements a store connection
sends are planned for their values at every execution.

Planning every execution costs, most on the two writes a running workflow repeats (a step's
checkpoint, its outcome): those go through functions (schema version 15) whose plans are
kept, and can only be lookups of workflow_status by its key, whatever the table held when
they were made.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from psycopg import sql

from tests.conftest import BACKENDS, pg_url
from tests.storage.build import start, step
from waypoint.storage.protocol import ClaimRequest, NewMessage
from waypoint.storage.records import Completion, StepRecord
from waypoint.storage.registry import open_url

pytestmark = pytest.mark.skipif("postgres" not in BACKENDS, reason="PostgreSQL not selected")

COMPLETE = (
    'UPDATE "dbos".workflow_status SET status = %(status)s, updated_at = %(now)s '
    "WHERE workflow_uuid = %(id)s AND status = 'PENDING' AND owner_xid = %(owner)s"
)
INSERT = (
    'INSERT INTO "dbos".workflow_status (workflow_uuid, status, name, owner_xid, created_at, '
    "updated_at) SELECT %(prefix)s || g, %(status)s, 'w', 'o', g, g "
    "FROM generate_series(1, %(n)s) g"
)
# Scans of workflow_status the kept plans may hold: one row by its key.
BY_KEY = {"workflow_status_pkey", "idx_workflow_status_id_pattern"}
KEY_COND = r"\(workflow_uuid = (\$\d+|o\.workflow_uuid)\)"


@pytest.fixture
def store() -> Iterator[Any]:
    name = f"wp_plans_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_url("postgres"), autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    store: Any = open_url(pg_url(name), pool_size=1)
    try:
        store.migrate()
        store.open()
        yield store
    finally:
        store.close()
        with psycopg.connect(pg_url("postgres"), autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@contextmanager
def _session(store: Any) -> Iterator[psycopg.Connection[Any]]:
    """A connection of the store's, taken as its statements take theirs (postgres/hot.py)."""
    held = store._hot.take()
    try:
        yield held.conn
    finally:
        store._hot.give(held)


def test_a_store_connection_plans_each_execution_for_its_values(store: Any) -> None:
    with _session(store) as conn:
        conn.execute(INSERT, {"prefix": "small-", "n": 12, "status": "PENDING"})
        for i in range(1, 11):  # prepared by psycopg after five
            conn.execute(
                COMPLETE, {"status": "SUCCESS", "now": 1, "id": f"small-{i}", "owner": "o"}
            )
        conn.execute(INSERT, {"prefix": "parked-", "n": 2000, "status": "PENDING"})
        conn.execute(COMPLETE, {"status": "SUCCESS", "now": 1, "id": "small-11", "owner": "o"})
        rows = conn.execute(
            "SELECT generic_plans, custom_plans FROM pg_prepared_statements "
            "WHERE statement LIKE 'UPDATE%%'"
        ).fetchall()
    assert len(rows) == 1, rows
    generic, custom = rows[0]
    assert generic == 0, f"{generic} executions ran a kept generic plan"
    assert custom >= 6


def _scans(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The plan nodes that read workflow_status (with a bitmap heap scan, its index scans)."""
    kind = node.get("Node Type")
    if (node.get("Relation Name") == "workflow_status" and kind != "ModifyTable") or (
        kind == "Bitmap Index Scan"
        and str(node.get("Index Name", "")).startswith(("workflow_status", "idx_workflow_status"))
    ):
        yield node
    for child in node.get("Plans", []):
        yield from _scans(child)


def _explain_into(conn: psycopg.Connection[Any], plans: list[str]) -> None:
    """Every plan the connection runs from now on, nested ones too, as JSON into ``plans``."""
    conn.execute("LOAD 'auto_explain'")
    for setting in ("log_min_duration = 0", "log_nested_statements = on"):
        conn.execute(f"SET auto_explain.{setting}")
    conn.execute("SET auto_explain.log_level = notice")
    conn.execute("SET auto_explain.log_format = json")
    conn.add_notice_handler(lambda diag: plans.append(diag.message_primary or ""))


def test_the_hot_writes_keep_key_lookups_made_on_a_small_table(store: Any) -> None:
    """Plans made while workflow_status was small and freshly analyzed with one live row (a
    sequential scan was the cheapest read there, and a walk of a partial index of live rows
    the next), then kept while 2,000 workflows were parked: each still reads workflow_status
    by its key."""
    plans: list[str] = []
    with _session(store) as conn:  # the pool's one connection, configured
        conn.execute(INSERT, {"prefix": "done-", "n": 300, "status": "SUCCESS"})
        conn.execute(INSERT, {"prefix": "small-", "n": 1, "status": "PENDING"})
        conn.execute('ANALYZE "dbos".workflow_status')
        conn.execute(INSERT, {"prefix": "more-", "n": 10, "status": "PENDING"})
        _explain_into(conn, plans)

    def run(wf: str) -> None:
        step = StepRecord(wf, 1, "s", '"x"', None, "json", "o", 1, 1)
        assert store.record_step(step).accepted
        assert store.complete_workflow(Completion(wf, "o", "SUCCESS", '"ok"', None, 1))

    for wf in ["small-1", *(f"more-{i}" for i in range(1, 10))]:
        run(wf)
    with _session(store) as conn:
        conn.execute(INSERT, {"prefix": "parked-", "n": 2000, "status": "PENDING"})
    plans.clear()
    run("more-10")

    found: dict[str, list[dict[str, Any]]] = {}
    for message in plans:
        if "plan:" not in message:
            continue
        plan = json.loads(message.split("plan:", 1)[1])
        text = plan["Query Text"]
        scans = list(_scans(plan["Plan"]))
        if scans and "waypoint_" not in text:  # a function's statement, or a check under it
            found[" ".join(text.split())[:40]] = scans
    assert any(k.startswith("INSERT INTO") for k in found), found
    assert any(k.startswith("UPDATE") for k in found), found
    for text, scans in found.items():
        for scan in scans:
            assert scan["Node Type"] in ("Index Scan", "Bitmap Index Scan"), (text, scan)
            assert scan["Index Name"] in BY_KEY, (text, scan)
            # A parameter, not the value (the plan was made once and kept), or the key of
            # the row the statement wrote (the status it returns).
            assert re.fullmatch(KEY_COND, scan["Index Cond"]), (text, scan)


# The indexes the kept plans of the message functions may read each table by.
MESSAGE_INDEXES = {
    "workflow_status": BY_KEY,
    "operation_outputs": {"operation_outputs_pkey"},
    "notifications": {"notifications_pkey", "idx_notifications_unconsumed"},
}


def _reads(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every plan node that reads a table (or, under a bitmap heap scan, an index)."""
    if node.get("Node Type") != "ModifyTable" and (
        "Relation Name" in node or node.get("Node Type") == "Bitmap Index Scan"
    ):
        yield node
    for child in node.get("Plans", []):
        yield from _reads(child)


def test_the_message_functions_keep_key_lookups_made_on_a_small_table(store: Any) -> None:
    """The send, a delivery to a waiting receive (from a workflow too: version 18) and a
    receive (schema version 17), planned
    while the tables were small and freshly analyzed, then kept while 2,000 workflows were
    parked and one of them had 3,000 consumed messages on the topic: workflow_status and
    operation_outputs are still read by their keys, notifications by its key or by the index
    of unconsumed messages (not by destination and topic, which would walk the consumed)."""
    plans: list[str] = []
    with _session(store) as conn:  # the pool's one connection, configured
        conn.execute(INSERT, {"prefix": "done-", "n": 300, "status": "SUCCESS"})
        for table in ("workflow_status", "notifications", "operation_outputs"):
            conn.execute(f'ANALYZE "dbos".{table}')
        _explain_into(conn, plans)

    def round_trip(wf: str) -> None:
        # Only sent (the receive it names is another run's): the message waits, unconsumed.
        stale = step(wf, 1, "run-stale", output=None)
        assert not store.deliver_message(NewMessage(f"{wf}-a", wf, "t", '"a"', "json"), stale)
        got = store.consume_message(wf, "t", step(wf, 1, f"run-{wf}", output=None))
        assert got.found and got.accepted and got.output == '"a"'
        nothing = store.consume_message(wf, "t", step(wf, 2, f"run-{wf}", output=None))
        assert not nothing.found
        delivered = store.deliver_message(
            NewMessage(f"{wf}-b", wf, "t", '"b"', "json"), step(wf, 2, f"run-{wf}", output=None)
        )
        assert delivered
        again = store.consume_message(wf, "t", step(wf, 2, f"run-{wf}", output=None))
        assert again.found and again.accepted and again.output == '"b"'
        timeout = step(wf, 3, f"run-{wf}", output="null", serialization="json")
        assert store.consume_message(wf, "t", timeout, True).output == "null"
        # From a workflow (version 18; here the workflow sends to itself), then retried.
        sent = step(wf, 5, f"run-{wf}", function_name="DBOS.send", output=None)
        for first in (True, False):
            outcome, delivered = store.deliver_recorded(
                NewMessage(f"{wf}-c", wf, "t", '"c"', "json"),
                step(wf, 4, f"run-{wf}", output=None),
                sent,
            )
            assert outcome.accepted and delivered == first

    for i in range(10):  # kept from the first execution of each (force_generic_plan)
        start(store, f"small-{i}")
        round_trip(f"small-{i}")
    start(store, "late")
    with _session(store) as conn:
        conn.execute(INSERT, {"prefix": "parked-", "n": 2000, "status": "PENDING"})
        conn.execute(
            'INSERT INTO "dbos".notifications (message_uuid, destination_uuid, topic, message, '
            "consumed) SELECT 'old-' || g, 'late', 't', '1', TRUE "
            "FROM generate_series(1, 3000) g"
        )
    plans.clear()
    round_trip("late")

    found: list[tuple[str, list[dict[str, Any]]]] = []
    for message in plans:
        if "plan:" not in message:
            continue
        plan = json.loads(message.split("plan:", 1)[1])
        text = " ".join(plan["Query Text"].split())
        reads = list(_reads(plan["Plan"]))
        if reads and "waypoint_" not in text:  # a function's statement, or a check under it
            found.append((text, reads))
    texts = [text for text, _ in found]
    for read in ("SELECT 1 FROM", "SELECT n.message_uuid"):  # the send's, the receive's
        assert any(
            t.startswith(f'{read} "dbos".notifications n')
            or (t.startswith(read) and '"dbos".notifications n WHERE' in t)
            for t in texts
        ), texts
    assert any(t.startswith("UPDATE") for t in texts), texts
    assert any(t.startswith("SELECT w.status, w.owner_xid") for t in texts), texts  # the sender
    for text, reads in found:
        for scan in reads:
            assert scan["Node Type"] in ("Index Scan", "Index Only Scan"), (text, scan)
            table = scan["Relation Name"]
            assert scan["Index Name"] in MESSAGE_INDEXES[table], (text, scan)
            # A parameter, not the value: the plan was made once and kept.
            assert "late" not in scan.get("Index Cond", ""), (text, scan)


def test_a_grouped_batch_reads_workflow_status_by_key(store: Any) -> None:
    """The group commit's one statement (checkpoints and outcomes of many runs, their rows
    sent as JSON documents) finds each workflow by its key with 2,000 workflows parked, not
    by reading the PENDING rows: each document's row count reaches the planner."""
    with store._pool.connection() as conn:
        conn.execute(INSERT, {"prefix": "run-", "n": 4, "status": "PENDING"})
        conn.execute(INSERT, {"prefix": "parked-", "n": 2000, "status": "PENDING"})
        conn.execute('ANALYZE "dbos".workflow_status')
    sent: list[tuple[str, Any]] = []

    def capture(sql: str, params: Any, what: str) -> list[Any]:
        sent.append((sql, params))
        return []

    store._all = capture
    store._write_many(
        [
            StepRecord("run-1", 1, "s", '"x"', None, "json", "o", 1, 1),
            StepRecord("run-2", 1, "s", '"x"', None, "json", "o", 1, 1),
            Completion("run-3", "o", "SUCCESS", '"ok"', None, 1),
            Completion("run-4", "o", "SUCCESS", '"ok"', None, 1),
        ]
    )
    del store._all
    [(statement, params)] = sent
    with store._pool.connection() as conn:
        row = conn.execute("EXPLAIN (FORMAT JSON) " + statement, params).fetchone()
    plan = json.loads(row[0])[0]  # the store's connections hand JSON out as text
    scans = list(_scans(plan["Plan"]))
    assert len(scans) == 3, scans  # the checkpoints' fence and status, the outcomes' rows
    for scan in scans:
        assert scan["Node Type"] == "Index Scan" and scan["Index Name"] in BY_KEY, scan


def _rows_read(node: dict[str, Any]) -> int:
    """Rows the scans of workflow_status under ``node`` read, over all their loops."""
    return sum(
        (int(scan.get("Actual Rows", 0)) + int(scan.get("Rows Removed by Filter", 0)))
        * int(scan.get("Actual Loops", 1))
        for scan in _scans(node)
    )


def test_a_partitioned_claim_reads_the_first_rows_of_each_partition(store: Any) -> None:
    """A claim of a partitioned queue ranked every claimable row with row_number(): it read
    and sorted the whole backlog (benchmarks/bigtables.py). With 20,000 rows in four
    partitions, three of them at this process's limit, it reads the queue's first rows, then
    each partition's first rows: a few hundred rows at most, as it would with 200."""
    plans: list[str] = []
    with _session(store) as conn:
        conn.execute(
            'INSERT INTO "dbos".workflow_status (workflow_uuid, status, name, owner_xid, '
            "created_at, updated_at, queue_name, queue_partition_key, application_version, "
            "priority) SELECT 'q-' || g, 'ENQUEUED', 'w', 'o', g, g, 'pq', 'k' || (g % 4), "
            "'v1', g % 3 FROM generate_series(1, 20000) g"
        )
        conn.execute('ANALYZE "dbos".workflow_status')
        _explain_into(conn, plans)
        conn.execute("SET auto_explain.log_analyze = on")
    req = ClaimRequest(
        "pq",
        8,
        "exec",
        "v1",
        None,
        "tok",
        partitioned=True,
        partition_worker_concurrency=2,
        local_partition_running={"k0": 2, "k1": 2, "k2": 2},
    )
    assert sorted(r.workflow_id for r in store.claim(req, 1)) == ["q-15", "q-3"]
    found = [
        json.loads(m.split("plan:", 1)[1])
        for m in plans
        if "plan:" in m and "queue_partition_key" in m and "GROUP BY" not in m
    ]
    texts = [" ".join(p["Query Text"].split())[:60] for p in found]
    read = {t: _rows_read(p["Plan"]) for t, p in zip(texts, found, strict=True)}
    assert sum(read.values()) < 500, read
    assert any("WITH RECURSIVE" in t for t in texts), texts
