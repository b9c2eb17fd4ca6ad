"""@DBOS.transaction and datasource steps across implementations: a worker of one side is
SIGKILLed after a transaction committed in the application database and before its system
checkpoint; a worker of the other side recovers the workflow, finds the output the first one
recorded (``transaction_outputs`` or ``datasource_outputs``) and does not apply the
transaction again."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from psycopg import sql

from tests.crash.conftest import PG_BASE
from tests.crash.harness import Proc
from tests.interop.conftest import Interop

WORKER = Path(__file__).with_name("txn_app.py")


@pytest.fixture
def app_url(crash_backend: str, tmp_path: Path) -> Iterator[str]:
    if crash_backend == "sqlite":
        url = f"sqlite:///{tmp_path}/app.sqlite"
    else:
        name = f"wp_interop_app_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(f"{PG_BASE}/postgres", autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        url = f"{PG_BASE}/{name}"
    app_query(url, "CREATE TABLE ledger (wfid TEXT, step INT, token TEXT, pid INT)")
    yield url
    if crash_backend != "sqlite":
        with psycopg.connect(f"{PG_BASE}/postgres", autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def app_query(url: str, statement: str) -> list[tuple[object, ...]]:
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    engine = sa.create_engine(parsed, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            result = conn.execute(sa.text(statement))
            return [tuple(r) for r in result.fetchall()] if result.returns_rows else []
    finally:
        engine.dispose()


def spawn(
    h: Interop, impl: str, app_url: str, mode: str, wfid: str, kind: str, hold: int = 0
) -> Proc:
    cmd = [h.python(impl), str(WORKER), impl, h.db_url, app_url, str(h.workdir), mode, wfid]
    env = {**h.env(), "INTEROP_TXN_KIND": kind}
    if hold:
        env["INTEROP_TXN_HOLD"] = str(hold)
    name = f"p{len(h.procs) + 1}-{impl}-txn-{mode}"
    out, err = h.workdir / f"{name}.stdout", h.workdir / f"{name}.stderr"
    with open(out, "wb") as fo, open(err, "wb") as fe:
        popen = subprocess.Popen(
            cmd, stdout=fo, stderr=fe, stdin=subprocess.DEVNULL, env=env, cwd=str(h.workdir)
        )
    proc = Proc(name, popen, out, err, time.time())
    h.procs.append(proc)
    return proc


@pytest.mark.parametrize("kind,name", [("transaction", "post"), ("datasource", "post_ds")])
@pytest.mark.parametrize("first,second", [("dbos", "waypoint"), ("waypoint", "dbos")])
def test_a_committed_transaction_is_not_applied_again_by_the_other_side(
    interop: Interop, app_url: str, first: str, second: str, kind: str, name: str
) -> None:
    wfid = f"{kind}-{first}-then-{second}-{interop.backend}"
    marker = interop.workdir / "committed-2"
    p1 = spawn(interop, first, app_url, "start", wfid, kind, hold=2)
    interop.wait_until("transaction 2 to commit", marker.exists, timeout=60, watch=[p1])
    interop.kill(p1)
    ledger = app_query(app_url, "SELECT step, pid FROM ledger ORDER BY step")
    assert ledger == [(1, p1.pid), (2, p1.pid)]
    assert [fid for fid, _, _ in interop.steps(wfid)] == [1]  # 2 committed, not checkpointed

    p2 = spawn(interop, second, app_url, "wait", wfid, kind)
    result = p2.wait_exit(60)["result"]
    ledger = app_query(app_url, "SELECT step, token, pid FROM ledger ORDER BY step")
    assert [s for s, _, _ in ledger] == [1, 2, 3], f"a transaction ran twice: {ledger}"
    assert [t for _, t, _ in ledger] == result
    assert [pid for _, _, pid in ledger] == [p1.pid, p1.pid, p2.pid]
    assert result[1].startswith(f"{first}-") and result[2].startswith(f"{second}-")
    assert [(fid, step) for fid, step, _ in interop.steps(wfid)] == [
        (1, name),
        (2, name),
        (3, name),
    ]
