"""How the first page of a listing bounded by completed_before or dequeued_before (newest
first), or by completed_after or dequeued_after (oldest first), is read (issue 11): the rows
created on the bound's side of it, and those running at it or stamped before their own
creation, never every workflow stamped on the other side, which made that page 6x (before)
and 240x (after) dearer at a million rows than at ten thousand (benchmarks/bigtables.py).

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


# (filter, its bound, newest first?, the first page's first workflow, the index ranges
# SQLite's plan must name). completed at T0 + i + 1, dequeued at T0 + i.
CASES = {
    # Newest first before T0 + 1000: the 2,000 newest were stamped after it.
    "completed_before": (
        BOUND,
        True,
        999,
        ["finished_created (created_at<?)", "completed_skew_created (created_at>?)"],
    ),
    "dequeued_before": (
        BOUND,
        True,
        1000,
        ["dequeued_created (created_at<?)", "dequeued_skew_created (created_at>?)"],
    ),
    # Oldest first after T0 + 2000: the 2,000 oldest were stamped before it.
    "completed_after": (
        T0 + 2000,
        False,
        1999,
        ["finished_created (created_at>?)", "completed_span (<expr>=? AND created_at>?"],
    ),
    "dequeued_after": (
        T0 + 2000,
        False,
        2000,
        ["dequeued_created (created_at>?)", "dequeued_span (<expr>=? AND created_at>?"],
    ),
}


@pytest.mark.parametrize("key", CASES)
def test_a_bound_page_reads_a_page(filled: tuple[Any, str], key: str) -> None:
    store, url = filled
    bound, desc, first, ranges = CASES[key]
    flt = ListFilter(limit=PAGE, sort_desc=desc, application_name="app", **{key: bound})
    statement, params, prelude = store.listing_statement(flt)
    step = -1 if desc else 1
    assert [r.workflow_id for r in store.list_workflows(flt)] == [
        f"w{i:05d}" for i in range(first, first + step * PAGE, step)
    ]
    if url.startswith("sqlite:///"):
        with closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as lite:
            plan = [
                r[3]
                for r in lite.execute("EXPLAIN QUERY PLAN " + store.d.render(statement), params)
            ]
        # A range of each index, from the bound: not a walk past the rows on its other side.
        for index_range in ranges:
            assert any(f"idx_workflow_status_{index_range}" in s for s in plan), "\n".join(plan)
        return
    with psycopg.connect(url) as conn:
        if prelude is not None:
            conn.execute(prelude)
        [[explained]] = conn.execute(
            "EXPLAIN (ANALYZE, FORMAT JSON) " + statement, params
        ).fetchall()
        conn.rollback()
    plan = (explained if isinstance(explained, list) else json.loads(explained))[0]["Plan"]
    # A page and the rows at the bound: not the 2,000 on its other side.
    assert rows_read(plan) <= 2 * PAGE, json.dumps(plan, indent=1)
