"""Behind a connection pooler: session mode works (notifications included); transaction mode
is refused at launch with a reason, instead of silently losing notifications."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import PG_BASE, requires_postgres
from waypoint import DBOS, Queue, SetWorkflowID
from waypoint.error import DBOSInitializationError

pytestmark = requires_postgres


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_pgbouncer(tmp: Path, mode: str) -> tuple[subprocess.Popen[bytes], int]:
    """Start pgbouncer in ``tmp`` (which the postgres user must be able to reach)."""
    binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    if not os.path.exists(binary):
        pytest.skip("pgbouncer is not installed (scripts/test.sh installs it)")
    base = psycopg.conninfo.conninfo_to_dict(PG_BASE + "/postgres")
    port = _free_port()
    tmp.chmod(0o777)
    (tmp / "users.txt").write_text('"postgres" ""\n')
    (tmp / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"* = host={base.get('host', '127.0.0.1')} port={base.get('port', 5432)}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\n"
        f"auth_type = trust\nauth_file = {tmp / 'users.txt'}\n"
        f"pool_mode = {mode}\nmax_client_conn = 200\ndefault_pool_size = 20\n"
        "unix_socket_dir =\n"
        f"logfile = {tmp / 'pgbouncer.log'}\npidfile = {tmp / 'pgbouncer.pid'}\n"
        "ignore_startup_parameters = extra_float_digits,options\n"
    )
    for f in tmp.iterdir():
        f.chmod(0o666)
    cmd = [binary, str(tmp / "pgbouncer.ini")]
    if os.geteuid() == 0:
        cmd[1:1] = ["-u", "postgres"]  # pgbouncer refuses to run as root
    with open(tmp / "stdout.log", "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc, port
        except OSError:
            if proc.poll() is not None:
                pytest.fail(f"pgbouncer exited: {(tmp / 'stdout.log').read_text()}")
            time.sleep(0.05)
    proc.kill()
    pytest.fail("pgbouncer did not start listening")


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


@pytest.mark.parametrize("bouncer", ["transaction"], indirect=True)
def test_transaction_mode_pooler_is_refused_at_launch(bouncer: str) -> None:
    DBOS.destroy(destroy_registry=True)
    DBOS(config={"name": "bouncer-app", "system_database_url": bouncer})

    @DBOS.workflow()
    def wf() -> int:
        return 1

    with pytest.raises(DBOSInitializationError, match="transaction mode"):
        DBOS.launch()
