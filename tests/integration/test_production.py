"""Operating guide requirements that need the real PostgreSQL server: the connection bound and
a server crash-restart in the middle of work."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import threading
import time
from collections import Counter
from typing import Any

import psycopg
import pytest

from tests.conftest import requires_postgres
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


def _cluster() -> list[str] | None:
    if shutil.which("pg_ctlcluster") is None or os.geteuid() != 0:
        return None
    versions = sorted(glob.glob("/etc/postgresql/*/main"))
    if not versions:
        return None
    return [versions[-1].split("/")[3], "main"]


def _pg(action: str, cluster: list[str], *extra: str) -> None:
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", *cluster, action, *extra],
        check=True,
        capture_output=True,
        timeout=60,
    )


@requires_postgres
@pytest.mark.crash
def test_postgres_crash_restart_mid_run(pg_database: str) -> None:
    """Stop PostgreSQL hard (immediate shutdown, WAL replay on start) while workflows run:
    everything completes, no checkpointed step runs again, no process restarts."""
    cluster = _cluster()
    if cluster is None:
        pytest.skip("needs root and pg_ctlcluster to stop and start PostgreSQL")
    DBOS.destroy(destroy_registry=True)
    DBOS.reset_system_database(system_database_url=pg_database, truncate=True)
    DBOS(config={"name": "outage-app", "system_database_url": pg_database})
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
        try:
            _pg("stop", cluster, "-m", "immediate")
            time.sleep(1.0)
        finally:
            _pg("start", cluster)
        results: list[Any] = [h.get_result(polling_interval_sec=0.2) for h in handles]
        assert results == [sum(range(30))] * 6
        # The process never restarted: a checkpoint interrupted by the crash is retried (and
        # recognised as ours if it had committed), so no step body ran twice.
        assert set(ran.values()) == {1} and len(ran) == 6 * 30
        steps = {h.workflow_id: DBOS.list_workflow_steps(h.workflow_id) for h in handles}
        assert all(len(s) == 30 for s in steps.values())
    finally:
        DBOS.destroy(destroy_registry=True)
