"""The PostgreSQL store's statements are planned for their values, never by a kept generic
plan (issue 11).

psycopg prepares a statement after five executions and PostgreSQL then usually keeps one
generic plan, costed once for the table as it was. A store's connections live long and
start on a new, small database: there, the completion by workflow id was kept as a walk of
the partial index of PENDING rows, and the checkpoint's join as a scan of the whole table,
for the connection's life, so with 10,000 workflows parked every completion read all their
entries (other workflows ran at half their speed). How the planner costs a tiny table is
not stable enough to reproduce that one bad plan here; what the store guarantees is that
no statement of its connections runs a kept generic plan.
"""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest
from psycopg import sql

from tests.conftest import BACKENDS, pg_url
from waypoint.storage.registry import open_url

pytestmark = pytest.mark.skipif("postgres" not in BACKENDS, reason="PostgreSQL not selected")

COMPLETE = (
    'UPDATE "dbos".workflow_status SET status = %(status)s, updated_at = %(now)s '
    "WHERE workflow_uuid = %(id)s AND status = 'PENDING' AND owner_xid = %(owner)s"
)
INSERT = (
    'INSERT INTO "dbos".workflow_status (workflow_uuid, status, name, owner_xid, created_at, '
    "updated_at) SELECT %(prefix)s || g, 'PENDING', 'w', 'o', g, g "
    "FROM generate_series(1, %(n)s) g"
)


def test_a_store_connection_plans_each_execution_for_its_values() -> None:
    name = f"wp_plans_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_url("postgres"), autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    store: Any = open_url(pg_url(name), pool_size=1)
    try:
        store.migrate()
        store.open()
        with store._pool.connection() as conn:
            conn.execute(INSERT, {"prefix": "small-", "n": 12})
            for i in range(1, 11):  # prepared by psycopg after five
                conn.execute(
                    COMPLETE, {"status": "SUCCESS", "now": 1, "id": f"small-{i}", "owner": "o"}
                )
            conn.execute(INSERT, {"prefix": "parked-", "n": 2000})
            conn.execute(COMPLETE, {"status": "SUCCESS", "now": 1, "id": "small-11", "owner": "o"})
            rows = conn.execute(
                "SELECT generic_plans, custom_plans FROM pg_prepared_statements "
                "WHERE statement LIKE 'UPDATE%%'"
            ).fetchall()
        assert len(rows) == 1, rows
        generic, custom = rows[0]
        assert generic == 0, f"{generic} executions ran a kept generic plan"
        assert custom >= 6
    finally:
        store.close()
        with psycopg.connect(pg_url("postgres"), autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
