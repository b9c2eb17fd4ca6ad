"""Behind a connection pooler: session mode works (notifications included); transaction mode
is refused at launch with a reason, instead of silently losing notifications."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests import pgbouncer
from tests.conftest import PG_BASE, requires_postgres
from waypoint import DBOS, Queue, SetWorkflowID
from waypoint.error import DBOSInitializationError

pytestmark = requires_postgres


def _start_pgbouncer(tmp: Path, mode: str) -> tuple[subprocess.Popen[bytes], int]:
    """Start pgbouncer in ``tmp`` (which the postgres user must be able to reach)."""
    if not pgbouncer.installed():
        pytest.skip("pgbouncer is not installed (scripts/test.sh installs it)")
    base = psycopg.conninfo.conninfo_to_dict(PG_BASE + "/postgres")
    host, port = str(base.get("host", "127.0.0.1")), int(base.get("port", 5432))
    try:
        return pgbouncer.start(tmp, mode, host, port)
    except RuntimeError as exc:
        pytest.fail(str(exc))


@pytest.fixture
def bouncer(pg_database: str, request: pytest.FixtureRequest) -> Iterator[str]:
    DBOS.reset_system_database(system_database_url=pg_database, truncate=True)
    # pytest's tmp_path is private to root; pgbouncer runs as postgres.
    workdir = Path(tempfile.mkdtemp(prefix="waypoint-pgbouncer-"))
    proc, port = _start_pgbouncer(workdir, request.param)
    dbname = psycopg.conninfo.conninfo_to_dict(pg_database)["dbname"]
    yield f"postgresql://postgres@127.0.0.1:{port}/{dbname}"
    DBOS.destroy(destroy_registry=True)
    proc.terminate()
    proc.wait(10)
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.mark.parametrize("bouncer", ["session"], indirect=True)
def test_session_mode_pooler_works(bouncer: str) -> None:
    DBOS.destroy(destroy_registry=True)
    DBOS(config={"name": "bouncer-app", "system_database_url": bouncer})
    q = Queue("bq")

    @DBOS.step()
    def double(x: int) -> int:
        return 2 * x

    @DBOS.workflow()
    def waits() -> Any:
        return DBOS.recv("go", timeout_seconds=10)

    @DBOS.workflow()
    def wf(x: int) -> int:
        return double(x)

    DBOS.launch()
    assert q.enqueue(wf, 21).get_result() == 42
    with SetWorkflowID("bouncer-recv"):
        handle = DBOS.start_workflow(waits)
    started = time.time()
    DBOS.send("bouncer-recv", "hello", "go")
    assert handle.get_result() == "hello"
    assert time.time() - started < 2  # woken by NOTIFY, not by a timeout


@pytest.mark.parametrize("bouncer", ["session"], indirect=True)
def test_backends_terminated_behind_the_pooler_are_retried(bouncer: str) -> None:
    """Behind pgbouncer, the first transaction on a connection whose server backend was
    terminated fails in the client library ("received 2 results from command 'BEGIN'", no
    SQLSTATE), not with the server's error: a retry on a new connection, not a failed call
    or workflow (found by the chaos campaign: two workflows ended in ERROR)."""
    DBOS.destroy(destroy_registry=True)
    DBOS(config={"name": "bouncer-kill", "system_database_url": bouncer, "sys_db_pool_size": 2})

    @DBOS.step()
    def double(x: int) -> int:
        return 2 * x

    @DBOS.workflow()
    def wf(x: int) -> int:
        return double(x) + double(x)

    DBOS.launch()
    with SetWorkflowID("bouncer-kill-1"):
        assert wf(1) == 4
    dbname = psycopg.conninfo.conninfo_to_dict(bouncer)["dbname"]

    def terminate_backends() -> None:
        with psycopg.connect(PG_BASE + "/postgres", autocommit=True) as admin:
            killed = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (dbname,),
            ).fetchone()
        assert killed is not None and killed[0] > 0

    for i in range(3):
        terminate_backends()  # then calls that open a transaction first
        DBOS.resume_workflow("bouncer-kill-1")
        terminate_backends()
        assert DBOS.fork_workflow("bouncer-kill-1", 1).get_result() == 4
        terminate_backends()
        assert wf(i) == 4 * i


@pytest.mark.parametrize("bouncer", ["transaction"], indirect=True)
def test_transaction_mode_pooler_is_refused_at_launch(bouncer: str) -> None:
    DBOS.destroy(destroy_registry=True)
    DBOS(config={"name": "bouncer-app", "system_database_url": bouncer})

    @DBOS.workflow()
    def wf() -> int:
        return 1

    with pytest.raises(DBOSInitializationError, match="transaction mode"):
        DBOS.launch()
