"""Crash test for @DBOS.transaction: a real worker process is SIGKILLed after a transaction
committed in the application database and before its checkpoint reached the system
database. The recovered run must not apply the transaction a second time: it finds the
output recorded by the committed transaction and carries on from there."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from psycopg import sql

from tests.crash.conftest import PG_BASE
from tests.crash.harness import APP_VERSION, Harness, Proc

pytestmark = pytest.mark.crash

WORKER = Path(__file__).with_name("txn_app.py")


@pytest.fixture
def app_url(crash_backend: str, tmp_path: Path) -> Iterator[str]:
    """The application database, with the ledger table the transactions write."""
    if crash_backend == "sqlite":
        url = f"sqlite:///{tmp_path}/app.sqlite"
    else:
        name = f"wp_crash_app_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(f"{PG_BASE}/postgres", autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        url = f"{PG_BASE}/{name}"
    engine = app_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE ledger (wfid TEXT, step INT, token TEXT, pid INT)"))
    engine.dispose()
    yield url
    if crash_backend != "sqlite":
        with psycopg.connect(f"{PG_BASE}/postgres", autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def app_engine(url: str) -> sa.Engine:
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return sa.create_engine(parsed, poolclass=sa.pool.NullPool)


def app_query(url: str, statement: str) -> list[tuple[object, ...]]:
    engine = app_engine(url)
    try:
        with engine.begin() as conn:
            return [tuple(r) for r in conn.execute(sa.text(statement)).fetchall()]
    finally:
        engine.dispose()


def spawn(harness: Harness, app_url: str, mode: str, wfid: str, hold: int = 0) -> Proc:
    name = f"p{len(harness.procs) + 1}-{mode}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DBOS__", "CRASH_"))}
    env.update(DBOS__APPVERSION=APP_VERSION, PYTHONUNBUFFERED="1")
    if hold:
        env["CRASH_TXN_HOLD"] = str(hold)
    out, err = harness.workdir / f"{name}.stdout", harness.workdir / f"{name}.stderr"
    args = [str(WORKER), harness.db_url, app_url, str(harness.workdir), mode, wfid, "3"]
    with open(out, "wb") as fo, open(err, "wb") as fe:
        popen = subprocess.Popen(
            [sys.executable, *args],
            stdout=fo,
            stderr=fe,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=str(Path(__file__).parents[2]),
        )
    proc = Proc(name, popen, out, err, time.time())
    harness.procs.append(proc)
    return proc


def test_sigkill_after_commit_before_checkpoint_applies_the_transaction_once(
    harness: Harness, app_url: str
) -> None:
    wfid = f"transfer-{harness.backend}"
    outputs = "transaction_outputs" if harness.backend == "sqlite" else "dbos.transaction_outputs"
    marker = harness.workdir / "committed-2"

    p1 = spawn(harness, app_url, "start", wfid, hold=2)
    harness.wait_until("transaction 2 to commit", marker.exists, watch=[p1])
    harness.kill(p1)

    # Transaction 2 committed (its ledger row and its recorded output), but the system
    # database checkpointed transaction 1 only.
    ledger = app_query(app_url, "SELECT step, token, pid FROM ledger ORDER BY step")
    assert [(s, pid) for s, _, pid in ledger] == [(1, p1.pid), (2, p1.pid)]
    recorded = app_query(app_url, f"SELECT function_id, function_name FROM {outputs}")
    assert sorted(recorded) == [(1, "post"), (2, "post")]
    assert [fid for fid, _, _ in harness.steps(wfid)] == [1]
    assert harness.status(wfid) == "PENDING"

    p2 = spawn(harness, app_url, "wait", wfid)
    out = p2.wait_exit(60)
    result = out["result"]

    ledger = app_query(app_url, "SELECT step, token, pid FROM ledger ORDER BY step")
    assert [s for s, _, _ in ledger] == [1, 2, 3], f"a transaction ran twice: {ledger}"
    assert [t for _, t, _ in ledger] == result  # step 2's token is the one p1 committed
    assert [pid for _, _, pid in ledger] == [p1.pid, p1.pid, p2.pid]
    assert [(fid, name, value) for fid, name, value in harness.steps(wfid)] == [
        (1, "post", result[0]),
        (2, "post", result[1]),
        (3, "post", result[2]),
    ]
    assert harness.status(wfid) == "SUCCESS"
    assert json.dumps(result)  # plain tokens
