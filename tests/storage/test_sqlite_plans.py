"""SQLite's plans for the statements whose cost grew with the table (issue 11,
benchmarks/bigtables_sqlite.py): a claim sorted its queue's whole backlog (32x at a million
rows), a queue's running count read its whole history, a listing of queued workflows read
and sorted every queued row (99x), an ID prefix walked the whole history (58x).

SQLite uses a partial index only when the query states the index's condition, and it has no
statistics unless someone runs ANALYZE: each statement here is checked, by the plan SQLite
reports for it, to read an index range in the order it needs (every top-level sort it needs
is a sort of a page, never of the table).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from tests.storage.build import APP, EXECUTOR, T0, VERSION
from waypoint.storage.protocol import ClaimRequest, ListFilter
from waypoint.storage.registry import open_url

N = 3000
FILL = """
WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < :n)
INSERT INTO workflow_status (workflow_uuid, status, name, created_at, updated_at,
    application_version, application_name, queue_name, queue_partition_key, priority,
    started_at_epoch_ms, completed_at, owner_xid, serialization)
SELECT printf('done-%05d', i), 'SUCCESS', 'wf', :t0 + i, :t0 + i, :ver, :app, 'q',
    'k' || (i % 3), 0, :t0 + i, :t0 + i + 1, 'x', 'json' FROM g
UNION ALL
SELECT printf('todo-%05d', i), 'ENQUEUED', 'wf', :t0 + :n + i, :t0 + :n + i, :ver, :app,
    'q', 'k' || (i % 3), 0, NULL, NULL, 'x', 'json' FROM g
"""


class Traced:
    """A SQLite store whose connections report each statement they run (with its values)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.store: Any = open_url(f"sqlite:///{path}", application_name="wp-plans")
        self.seen: list[str] = []
        connect = self.store._connect

        def traced() -> sqlite3.Connection:
            conn: sqlite3.Connection = connect()
            conn.set_trace_callback(self.seen.append)
            return conn

        self.store._connect = traced

    def plans(self, marker: str) -> list[list[tuple[int, str]]]:
        """The plan (parent node, detail) of each statement seen that contains ``marker``."""
        found = []
        with closing(sqlite3.connect(self.path)) as conn:
            for statement in self.seen:
                if marker in statement:
                    rows = conn.execute("EXPLAIN QUERY PLAN " + statement).fetchall()
                    found.append([(int(r[1]), str(r[3])) for r in rows])
        assert found, f"no statement with {marker!r} among {self.seen}"
        return found


@pytest.fixture
def traced(tmp_path: Path) -> Iterator[Traced]:
    t = Traced(tmp_path / "plans.sqlite")
    t.store.migrate()
    t.store.open()
    with closing(sqlite3.connect(t.path)) as conn:
        conn.execute(FILL, {"n": N, "t0": T0, "ver": VERSION, "app": APP})
        conn.commit()
    t.seen.clear()
    try:
        yield t
    finally:
        t.store.close()


def sorts_the_rows(plan: list[tuple[int, str]]) -> bool:
    """A sort of the whole result at the top (not of a subquery's, nor the right part of an
    order an index already gives)."""
    return any(parent == 0 and d == "USE TEMP B-TREE FOR ORDER BY" for parent, d in plan)


def details(plan: list[tuple[int, str]]) -> str:
    return "\n".join(d for _, d in plan)


def claim(t: Traced, **limits: Any) -> None:
    req = ClaimRequest("q", 2, EXECUTOR, VERSION, APP, "token", **limits)
    assert len(t.store.claim(req, T0 + 10 * N)) == 2


def test_a_claim_reads_its_queue_in_order(traced: Traced) -> None:
    claim(traced)
    [plan] = traced.plans("ORDER BY priority")
    assert "idx_workflow_status_in_flight (queue_name=? AND status=?)" in details(plan)
    assert not sorts_the_rows(plan), details(plan)


def test_a_queue_running_count_reads_what_runs(traced: Traced) -> None:
    claim(traced, global_concurrency=10)
    [count] = traced.plans("SELECT count(*)")
    assert "idx_workflow_status_in_flight (queue_name=? AND status=?)" in details(count)


def test_a_partition_running_count_reads_what_runs(traced: Traced) -> None:
    claim(traced, partitioned=True, partition_concurrency=5)
    [count] = traced.plans("GROUP BY queue_partition_key")
    assert "idx_workflow_status_queue_name_created" not in details(count), details(count)
    assert "(queue_name=? AND status=?" in details(count), details(count)


@pytest.mark.parametrize("live", [False, True])
def test_a_page_of_queued_workflows_is_not_a_sort_of_them(traced: Traced, live: bool) -> None:
    status = ["ENQUEUED", "PENDING", "DELAYED"] if live else None
    page = ListFilter(queues_only=True, status=status, limit=20, sort_desc=True)
    listed = traced.store.list_workflows(page)
    assert [r.workflow_id for r in listed][:2] == [f"todo-{N:05d}", f"todo-{N - 1:05d}"]
    [plan] = traced.plans("queue_name IS NOT NULL")
    assert not sorts_the_rows(plan), details(plan)
    assert "idx_workflow_status_queue_name_created" not in details(plan), details(plan)


def test_an_id_prefix_is_a_range_of_the_key(traced: Traced) -> None:
    page = ListFilter(workflow_id_prefix=["done-015"], limit=20, sort_desc=True)
    listed = traced.store.list_workflows(page)
    assert [r.workflow_id for r in listed][:2] == ["done-01599", "done-01598"]
    [plan] = traced.plans("substr(workflow_uuid")
    assert "(workflow_uuid>? AND workflow_uuid<?)" in details(plan), details(plan)


def test_a_claim_flips_its_rows_by_their_keys(traced: Traced) -> None:
    claim(traced)
    [flip] = traced.plans("SET status = 'PENDING'")
    assert "(workflow_uuid=?)" in details(flip), details(flip)


def sorts_what_it_reads(plan: list[tuple[int, str]]) -> bool:
    """A sort below the top, other than of the few rows of the version lookup."""
    versions = {parent for parent, d in plan if d == "SCAN application_versions"}
    return any(
        d.startswith("USE TEMP B-TREE") and parent != 0 and parent not in versions
        for parent, d in plan
    )


def test_a_partitioned_claim_reads_the_first_rows_of_each_partition(traced: Traced) -> None:
    """Ranking every claimable row of the queue with row_number() read and sorted the whole
    backlog (9-12x at a million rows). A claim reads the queue's first rows in order (then
    sorts those few again) and,
    when those fall short (here two of the three partitions are at this process's limit),
    walks the partitions one index seek each and reads each one's first rows in queue order
    from the partition index, unsorted."""
    req = ClaimRequest(
        "q",
        2,
        EXECUTOR,
        VERSION,
        APP,
        "token",
        partitioned=True,
        partition_worker_concurrency=1,
        local_partition_running={"k0": 1, "k1": 1},
    )
    assert [r.workflow_id for r in traced.store.claim(req, T0 + 10 * N)] == ["todo-00002"]
    [head] = traced.plans("queue_partition_key, priority")
    assert "idx_workflow_status_in_flight (queue_name=? AND status=?)" in details(head)
    assert "(workflow_uuid=?)" in details(head), details(head)  # the head's rows, by key
    assert not sorts_what_it_reads(head), details(head)
    [plan] = traced.plans("WITH RECURSIVE parts")
    found = details(plan)
    walk = "idx_workflow_status_partition_claim (queue_name=? AND status=? AND queue_partition_key"
    assert f"{walk}>?)" in found, found
    assert f"{walk}=?)" in found, found
    assert not sorts_what_it_reads(plan), found
