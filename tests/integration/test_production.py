"""Operating guide requirements that need the real PostgreSQL server: the connection bound and
a server crash-restart in the middle of work (of a private server: see tests/private_pg.py)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import psycopg
import pytest

from tests.conftest import pg_url, requires_postgres
from tests.private_pg import PrivatePostgres, accepts_connections
from waypoint import DBOS, Queue, SetWorkflowID


def _backends(db_url: str, app: str) -> int:
    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name = %s",
            (f"waypoint:{app}",),
        ).fetchone()
    return int(row[0]) if row else 0


@requires_postgres
def test_sys_db_pool_size_bounds_connections(pg_database: str) -> None:
    DBOS.destroy(destroy_registry=True)
    DBOS.reset_system_database(system_database_url=pg_database, truncate=True)
    DBOS(config={"name": "pool-app", "system_database_url": pg_database, "sys_db_pool_size": 3})
    try:
        q = Queue("busy", worker_concurrency=20)
        peak = {"n": 0}
        stop = threading.Event()

        @DBOS.step()
        def work(i: int) -> int:
            time.sleep(0.01)
            return i

        @DBOS.workflow()
        def wf(i: int) -> int:
            return sum(work(j) for j in range(5)) + i

        DBOS.launch()

        def sample() -> None:
            while not stop.is_set():
                peak["n"] = max(peak["n"], _backends(pg_database, "pool-app"))
                time.sleep(0.02)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        handles = [q.enqueue(wf, i) for i in range(40)]
        handles += [DBOS.start_workflow(wf, i) for i in range(20)]
        assert [h.get_result() for h in handles] == [10 + i for i in range(40)] + [
            10 + i for i in range(20)
        ]
        stop.set()
        sampler.join()
        # The pool plus the LISTEN connection never exceed the configured bound.
        assert 1 <= peak["n"] <= 3
    finally:
        DBOS.destroy(destroy_registry=True)


@requires_postgres
@pytest.mark.crash
def test_postgres_crash_restart_mid_run(private_pg: PrivatePostgres) -> None:
    """Stop PostgreSQL hard (immediate shutdown, WAL replay on start) while workflows run:
    everything completes, no checkpointed step runs again, no process restarts. The server
    is a private one: the machine's shared server is never stopped."""
    db_url = private_pg.create_database("crash_restart")
    DBOS.destroy(destroy_registry=True)
    DBOS(config={"name": "outage-app", "system_database_url": db_url})
    ran: Counter[tuple[str, int]] = Counter()
    lock = threading.Lock()
    try:

        @DBOS.step()
        def work(i: int) -> int:
            with lock:
                ran[(DBOS.workflow_id or "", i)] += 1
            time.sleep(0.02)
            return i

        @DBOS.workflow()
        def wf(n: int) -> int:
            return sum(work(i) for i in range(n))

        DBOS.launch()
        handles = []
        for k in range(6):
            with SetWorkflowID(f"crash-restart-{k}"):
                handles.append(DBOS.start_workflow(wf, 30))
        time.sleep(0.3)
        private_pg.stop("immediate")
        try:
            assert not accepts_connections(private_pg.url())
            assert accepts_connections(pg_url("postgres")), "the shared PostgreSQL went down"
            time.sleep(1.0)
        finally:
            private_pg.start()
        results: list[Any] = [h.get_result(polling_interval_sec=0.2) for h in handles]
        assert results == [sum(range(30))] * 6
        # The process never restarted: a checkpoint interrupted by the crash is retried (and
        # recognised as ours if it had committed), so no step body ran twice.
        assert set(ran.values()) == {1} and len(ran) == 6 * 30
        steps = {h.workflow_id: DBOS.list_workflow_steps(h.workflow_id) for h in handles}
        assert all(len(s) == 30 for s in steps.values())
    finally:
        DBOS.destroy(destroy_registry=True)
