"""A database that goes away does not lose work (PostgreSQL: cut connections for real)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests.conftest import requires_postgres
from tests.proxy import TcpProxy
from waypoint import DBOS, SetWorkflowID


@pytest.fixture
def proxied(pg_database: str) -> Iterator[tuple[TcpProxy, str]]:
    DBOS.reset_system_database(system_database_url=pg_database, truncate=True)
    base = psycopg.conninfo.conninfo_to_dict(pg_database)
    proxy = TcpProxy(str(base.get("host", "127.0.0.1")), int(base.get("port", 5432)))
    url = f"postgresql://postgres@127.0.0.1:{proxy.port}/{base['dbname']}"
    yield proxy, url
    DBOS.destroy(destroy_registry=True)
    proxy.close()


@requires_postgres
def test_outage_pauses_work_and_loses_nothing(proxied: tuple[TcpProxy, str]) -> None:
    proxy, url = proxied
    ran: Counter[tuple[str, int]] = Counter()
    lock = threading.Lock()

    DBOS.destroy(destroy_registry=True)
    DBOS(config={"name": "outage-app", "system_database_url": url, "sys_db_pool_size": 4})

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
    for k in range(8):
        with SetWorkflowID(f"outage-{k}"):
            handles.append(DBOS.start_workflow(wf, 40))
    time.sleep(0.3)
    proxy.cut()
    time.sleep(2.0)
    proxy.restore()
    results = [h.get_result(polling_interval_sec=0.1) for h in handles]
    assert results == [sum(range(40))] * 8
    # Every checkpointed step body ran exactly once: a checkpoint whose acknowledgement was
    # lost in the cut is recognised as our own on retry instead of being redone.
    assert set(ran.values()) == {1}
    assert len(ran) == 8 * 40


@requires_postgres
def test_killed_backends_are_replaced(pg_database: str) -> None:
    DBOS.destroy(destroy_registry=True)
    DBOS.reset_system_database(system_database_url=pg_database, truncate=True)
    DBOS(config={"name": "killer-app", "system_database_url": pg_database})
    try:

        @DBOS.step()
        def step(i: int) -> int:
            time.sleep(0.01)
            return i

        @DBOS.workflow()
        def wf() -> int:
            return sum(step(i) for i in range(60))

        DBOS.launch()
        with SetWorkflowID("killed-backends"):
            handle = DBOS.start_workflow(wf)
        stop = threading.Event()

        def killer() -> None:
            with psycopg.connect(pg_database, autocommit=True) as conn:
                while not stop.is_set():
                    conn.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE application_name LIKE 'waypoint:%%' AND pid <> pg_backend_pid() "
                        "AND datname = current_database()"
                    )
                    time.sleep(0.3)

        t = threading.Thread(target=killer, daemon=True)
        t.start()
        try:
            assert handle.get_result(polling_interval_sec=0.05) == sum(range(60))
        finally:
            stop.set()
            t.join()
        assert len(DBOS.list_workflow_steps("killed-backends")) == 60
    finally:
        DBOS.destroy(destroy_registry=True)


def test_sqlite_lock_contention_is_retried(tmp_path: Any) -> None:
    """Another process holding SQLite's write lock makes calls wait, not fail."""
    import sqlite3

    db = tmp_path / "locked.sqlite"
    DBOS.destroy(destroy_registry=True)
    DBOS(config={"name": "lock-app", "system_database_url": f"sqlite:///{db}"})
    try:

        @DBOS.step()
        def step() -> str:
            return "ok"

        @DBOS.workflow()
        def wf() -> str:
            return step()

        DBOS.launch()
        holder = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
        holder.execute("BEGIN EXCLUSIVE")
        released = threading.Timer(0.5, lambda: holder.execute("COMMIT"))
        released.start()
        start = time.time()
        with SetWorkflowID("locked"):
            assert wf() == "ok"
        assert time.time() - start >= 0.4
        released.join()
        holder.close()
    finally:
        DBOS.destroy(destroy_registry=True)
