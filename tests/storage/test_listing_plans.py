"""How the first page of a listing bounded by completed_before or dequeued_before is read
(issue 11): the rows created by the bound, and those stamped before their own creation,
never every workflow completed (or dequeued) after the bound, which made that page 6x
dearer at a million rows than at ten thousand (benchmarks/bigtables.py).

PostgreSQL: the rows the plan reads, as ``EXPLAIN ANALYZE`` counts them. SQLite: the index
ranges its query plan names. Not in the shards mode: each shard runs PostgreSQL's statement.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from typing import Any

import psycopg
import pytest
from psycopg import sql

from tests.storage.build import T0
from tests.storage.conftest import SCHEMA
from waypoint.storage.protocol import ListFilter
from waypoint.storage.registry import open_url

N = 3000  # finished workflows, created at T0 + i, dequeued then, completed a millisecond on
BOUND = T0 + 1000  # the 2,000 newest were dequeued and completed after it
PAGE = 20
COLUMNS = (
    "workflow_uuid, status, name, created_at, updated_at, started_at_epoch_ms, completed_at, "
    "application_name"
)
FILL_PG = (
    "INSERT INTO {} (" + COLUMNS + ") SELECT 'w' || lpad(i::text, 5, '0'), 'SUCCESS', 'wf', "
    "%(t0)s + i, %(t0)s + i, %(t0)s + i, %(t0)s + i + 1, 'app' "
    "FROM generate_series(1, %(n)s) AS i"
)
FILL_SQLITE = (
    "WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < :n) "
    "INSERT INTO workflow_status (" + COLUMNS + ") SELECT printf('w%05d', i), 'SUCCESS', 'wf', "
    ":t0 + i, :t0 + i, :t0 + i, :t0 + i + 1, 'app' FROM g"
)
SCANS = {"Seq Scan", "Index Scan", "Index Only Scan", "Bitmap Heap Scan"}


@pytest.fixture
def filled(store_url: str) -> Iterator[tuple[Any, str]]:
    """The store itself (not behind the protocol check: the test asks it for its SQL) on a
    database of ``N`` finished workflows."""
    if store_url.startswith("shards://"):
        pytest.skip("not with system_database_shards: each shard plans PostgreSQL's statement")
    store: Any = open_url(store_url, schema=SCHEMA, pool_size=1, application_name="wp-plans")
    store.migrate()
    store.open()
    store.truncate_all()
    params = {"t0": T0, "n": N}
    if store_url.startswith("sqlite:///"):
        with closing(sqlite3.connect(store_url.removeprefix("sqlite:///"))) as lite:
            lite.execute(FILL_SQLITE, params)
            lite.commit()
    else:
        with psycopg.connect(store_url, autocommit=True) as conn:
            table = sql.Identifier(SCHEMA, "workflow_status")
            conn.execute(sql.SQL(FILL_PG).format(table), params)
            conn.execute(sql.SQL("ANALYZE {}").format(table))
    try:
        yield store, store_url
    finally:
        store.close()


def rows_read(node: dict[str, Any]) -> int:
    """The rows every scan under ``node`` returned or filtered out."""
    own = 0
    if node["Node Type"] in SCANS:
        own = node["Actual Rows"] * node["Actual Loops"] + node.get("Rows Removed by Filter", 0)
    return own + sum(rows_read(child) for child in node.get("Plans", []))


@pytest.mark.parametrize(
    ("key", "index", "skew"),
    [("completed_before", "finished", "completed"), ("dequeued_before", "dequeued", "dequeued")],
)
def test_newest_first_before_a_bound_reads_a_page(
    filled: tuple[Any, str], key: str, index: str, skew: str
) -> None:
    store, url = filled
    flt = ListFilter(limit=PAGE, sort_desc=True, application_name="app", **{key: BOUND})
    statement, params, prelude = store.listing_statement(flt)
    newest = 1000 if key == "dequeued_before" else 999  # completed a millisecond after
    assert [r.workflow_id for r in store.list_workflows(flt)] == [
        f"w{i:05d}" for i in range(newest, newest - PAGE, -1)
    ]
    if url.startswith("sqlite:///"):
        with closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as lite:
            plan = [
                r[3]
                for r in lite.execute("EXPLAIN QUERY PLAN " + store.d.render(statement), params)
            ]
        # A range of each index, from the bound: not a scan of the rows after it.
        assert any(
            f"idx_workflow_status_{index}_created (created_at<?)" in step for step in plan
        ), "\n".join(plan)
        assert any(
            f"idx_workflow_status_{skew}_skew_created (created_at>?)" in step for step in plan
        ), "\n".join(plan)
        return
    with psycopg.connect(url) as conn:
        if prelude is not None:
            conn.execute(prelude)
        [[explained]] = conn.execute(
            "EXPLAIN (ANALYZE, FORMAT JSON) " + statement, params
        ).fetchall()
        conn.rollback()
    plan = (explained if isinstance(explained, list) else json.loads(explained))[0]["Plan"]
    # A page and the row at the bound (created by it, completed after it): not the 2,000
    # completed after the bound.
    assert rows_read(plan) <= 2 * PAGE, json.dumps(plan, indent=1)
