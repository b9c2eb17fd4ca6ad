"""Operating a self-hosted fleet (PostgreSQL, real processes, admin API over HTTP): recovering
another executor's workflows through ``/dbos-workflow-recovery``, leaving workflows of an old
code version to a process running that version, draining an executor with ``/deactivate``,
and the health check through a database outage.

Every worker is tests/crash/ops_app.py with its own ``DBOS__VMID``, ``DBOS__APPVERSION`` and
the admin server on a free port (reported in the ledger). What really ran is read from the
side-effect ledger, what Waypoint believes from the tables.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Optional

import pytest

from tests.admin_http import Reply, call
from tests.crash.conftest import BACKENDS, PG_BASE
from tests.crash.harness import Harness, Proc
from tests.private_pg import PrivatePostgres, accepts_connections
from waypoint import DBOSClient, EnqueueOptions

pytestmark = [
    pytest.mark.crash,
    pytest.mark.skipif("postgres" not in BACKENDS, reason="PostgreSQL backend not selected"),
    pytest.mark.parametrize("crash_backend", ["postgres"], indirect=True),
]

APP = Path(__file__).with_name("ops_app.py")


# -- workers --------------------------------------------------------------------------------------


def spawn(
    harness: Harness,
    mode: str,
    *args: str,
    vmid: str,
    version: str,
    hold: Optional[str] = None,
) -> Proc:
    """Start ops_app.py (the harness reaps it); ``vmid`` and ``version`` go in the environment."""
    name = f"p{len(harness.procs) + 1}-{mode}-{vmid}-{version}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DBOS__", "CRASH_", "OPS_"))}
    env["DBOS__VMID"] = vmid
    env["DBOS__APPVERSION"] = version
    env["PYTHONUNBUFFERED"] = "1"
    if hold is not None:
        env["OPS_HOLD"] = hold
    out = harness.workdir / f"{name}.stdout"
    err = harness.workdir / f"{name}.stderr"
    with open(out, "wb") as fo, open(err, "wb") as fe:
        popen = subprocess.Popen(
            [sys.executable, str(APP), harness.db_url, harness.ledger_path, mode, *args],
            stdout=fo,
            stderr=fe,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=str(harness.workdir),
        )
    proc = Proc(name, popen, out, err, time.time())
    harness.procs.append(proc)
    return proc


def admin_port(harness: Harness, proc: Proc) -> int:
    """Wait for the worker to launch and return the port its admin server got."""

    def port() -> Optional[int]:
        events = harness.process_events(proc.pid)
        if "launched" not in events:
            return None
        return next(int(e.split(":", 1)[1]) for e in events if e.startswith("admin:"))

    return harness.wait_until(f"{proc.name} to launch", port, 30, watch=[proc])


def get(port: int, path: str, timeout: float = 10) -> Reply:
    return call("GET", path, port=port, timeout=timeout)


def post(port: int, path: str, body: Any) -> Reply:
    return call("POST", path, body, port=port, headers={"Content-Type": "application/json"})


def recover(port: int, executor_ids: list[str]) -> list[str]:
    reply = post(port, "/dbos-workflow-recovery", executor_ids)
    assert reply.status == 200, (reply.status, reply.body)
    assert reply.headers["content-type"] == "application/json"
    ids = reply.json()
    assert isinstance(ids, list)
    return ids


def entered_hold(harness: Harness, wfid: str, proc: Proc) -> None:
    harness.wait_until(
        f"{proc.name} to enter the hold step of {wfid}",
        lambda: harness.ledger_rows(wfid, step=2, phase="start", pid=proc.pid),
        20,
        watch=[proc],
    )


def stays(what: str, predicate: Callable[[], bool], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert predicate(), what
        time.sleep(0.05)


def untouched(harness: Harness, wfid: str, executor_id: str, version: str) -> bool:
    """Still PENDING from its first (direct) start on ``executor_id``: never re-enqueued."""
    row = harness.workflows([wfid])[wfid]
    return bool(
        row["status"] == "PENDING"
        and row["executor_id"] == executor_id
        and row["application_version"] == version
        and row["recovery_attempts"] == 1
    )


def finished_by(harness: Harness, wfid: str, dead: Proc, survivor: Proc, executor_id: str) -> None:
    """``wfid`` (started by ``dead``, killed inside its hold step) was finished by ``survivor``
    under ``executor_id``; the step checkpointed before the kill never ran again."""
    rows = harness.wait_status([wfid], {"SUCCESS", "ERROR"}, timeout=15, watch=[survivor])
    row = rows[wfid]
    assert row["status"] == "SUCCESS", row
    assert row["executor_id"] == executor_id
    assert row["recovery_attempts"] == 2
    assert [s[2] for s in harness.steps(wfid)] == [
        dead.pid,
        f"hold-by-{survivor.pid}",
        survivor.pid,
    ]
    assert [r.pid for r in harness.ledger_rows(wfid, step=1, phase="start")] == [dead.pid]
    assert [r.pid for r in harness.ledger_rows(wfid, step=2, phase="start")] == [
        dead.pid,
        survivor.pid,
    ]
    assert [r.pid for r in harness.ledger_rows(wfid, step=3, phase="start")] == [survivor.pid]


@pytest.fixture
def client(harness: Harness) -> Iterator[DBOSClient]:
    c = DBOSClient(system_database_url=harness.db_url)
    try:
        yield c
    finally:
        c.destroy()


# -- 1. the recovery endpoint across executors ----------------------------------------------------


def test_recovery_endpoint_recovers_another_executors_workflow(harness: Harness) -> None:
    c = spawn(harness, "idle", vmid="ops-c", version="v1")
    a = spawn(harness, "start", "wf-a", vmid="ops-a", version="v1", hold="forever")
    c_port = admin_port(harness, c)
    admin_port(harness, a)
    entered_hold(harness, "wf-a", a)
    harness.kill(a)

    # C leaves A's workflow alone until it is told to take it.
    stays(
        "C does not recover A's workflow by itself",
        lambda: untouched(harness, "wf-a", "ops-a", "v1"),
        1,
    )
    assert recover(c_port, ["ops-c"]) == []  # nothing of its own to recover

    assert recover(c_port, ["ops-a"]) == ["wf-a"]
    finished_by(harness, "wf-a", a, c, "ops-c")
    # Nothing is left to recover: asking again is a no-op.
    assert recover(c_port, ["ops-a"]) == []
    assert c.alive()


# -- 2. workflows of an old code version ----------------------------------------------------------


def test_old_version_workflows_wait_for_a_process_of_their_version(harness: Harness) -> None:
    a = spawn(harness, "start", "wf-old-a", vmid="ops-a", version="v1", hold="forever")
    b = spawn(harness, "start", "wf-old-b", vmid="ops-b", version="v1", hold="forever")
    admin_port(harness, a)
    admin_port(harness, b)
    entered_hold(harness, "wf-old-a", a)
    entered_hold(harness, "wf-old-b", b)
    harness.kill(a, b)

    # The upgraded code (v2) restarts as executor ops-a. At launch, and when asked through
    # its recovery endpoint, it takes back the dead executors' PENDING work but runs none of
    # v1's: it hands each back to its queue, pinned to v1 (a rolling deploy strands nothing
    # on a gone executor, and a v2 process never runs v1 code).
    new = spawn(harness, "idle", vmid="ops-a", version="v2")
    new_port = admin_port(harness, new)
    assert set(recover(new_port, ["ops-a", "ops-b"])) <= {"wf-old-a", "wf-old-b"}

    def waiting_for_v1(wfid: str) -> bool:
        row = harness.workflows([wfid])[wfid]
        return bool(row["status"] == "ENQUEUED" and row["application_version"] == "v1")

    stays(
        "v2 runs none of the v1 workflows",
        lambda: waiting_for_v1("wf-old-a") and waiting_for_v1("wf-old-b"),
        1.5,
    )
    assert not harness.ledger_rows(pid=new.pid)

    # A v1 process (any executor ID) runs both from their queue, while v2 keeps running.
    old_c = spawn(harness, "idle", vmid="ops-c", version="v1")
    rows = harness.wait_status(
        ["wf-old-a", "wf-old-b"], {"SUCCESS", "ERROR"}, timeout=30, watch=[old_c]
    )
    for wfid, dead in (("wf-old-a", a), ("wf-old-b", b)):
        row = rows[wfid]
        assert row["status"] == "SUCCESS", row
        assert row["executor_id"] == "ops-c" and row["application_version"] == "v1"
        # The step checkpointed before the kill never ran again; the rest ran on ops-c.
        assert [r.pid for r in harness.ledger_rows(wfid, step=1, phase="start")] == [dead.pid]
        assert [r.pid for r in harness.ledger_rows(wfid, step=3, phase="start")] == [old_c.pid]
    assert not harness.ledger_rows(pid=new.pid)  # the v2 process never ran anything
    assert new.alive() and old_c.alive()


# -- 3. deactivate --------------------------------------------------------------------------------


def test_deactivated_executor_drains_and_dequeues_nothing(
    harness: Harness, client: DBOSClient
) -> None:
    gate = harness.workdir / "release-d"
    d = spawn(harness, "start", "wf-d", vmid="ops-d", version="v1", hold=f"gate:{gate}")
    d_port = admin_port(harness, d)
    entered_hold(harness, "wf-d", d)

    def enqueue(wfid: str, n: int) -> None:
        opts = EnqueueOptions(workflow_name="queued_work", queue_name="ops-queue", workflow_id=wfid)
        client.enqueue(opts, n)

    # D is a worker of the queue while active.
    enqueue("q-before", 0)
    row = harness.wait_status(["q-before"], {"SUCCESS"}, timeout=15, watch=[d])["q-before"]
    assert row["executor_id"] == "ops-d"
    assert [r.pid for r in harness.ledger_rows("q-before", phase="start")] == [d.pid]

    e = spawn(harness, "idle", vmid="ops-e", version="v1")
    e_port = admin_port(harness, e)

    reply = get(d_port, "/deactivate")
    assert reply.status == 200, (reply.status, reply.body)
    assert get(d_port, "/dbos-healthz").status == 200

    # Everything enqueued from now on runs on E.
    ids = [f"q-after-{i}" for i in range(12)]
    for i, wfid in enumerate(ids):
        enqueue(wfid, i)
    rows = harness.wait_status(ids, {"SUCCESS", "ERROR"}, timeout=20, watch=[d, e])
    assert {r["status"] for r in rows.values()} == {"SUCCESS"}
    assert {wfid: r["executor_id"] for wfid, r in rows.items()} == dict.fromkeys(ids, "ops-e")
    ran = {r.workflow_id: r.pid for r in harness.ledger(None) if r.workflow_id in ids}
    assert ran == dict.fromkeys(ids, e.pid)
    assert [
        client.retrieve_workflow(wfid).get_result(polling_interval_sec=0.1) for wfid in ids
    ] == [{"n": i, "pid": e.pid} for i in range(len(ids))]

    # D, deactivated, still finishes the workflow it was running.
    assert harness.status("wf-d") == "PENDING"
    gate.touch()
    row = harness.wait_status(["wf-d"], {"SUCCESS", "ERROR"}, timeout=15, watch=[d])["wf-d"]
    assert row["status"] == "SUCCESS" and row["executor_id"] == "ops-d"
    assert [s[2] for s in harness.steps("wf-d")] == [d.pid, f"hold-by-{d.pid}", d.pid]
    assert {r.pid for r in harness.ledger("wf-d")} == {d.pid}

    # Deactivated but alive: its health check answers, and it still dequeues nothing.
    health = get(d_port, "/dbos-healthz")
    assert health.status == 200 and health.body == b"healthy"
    assert get(e_port, "/dbos-healthz").status == 200
    enqueue("q-last", 99)
    row = harness.wait_status(["q-last"], {"SUCCESS"}, timeout=15, watch=[d, e])["q-last"]
    assert row["executor_id"] == "ops-e"
    assert d.alive() and e.alive()


def test_deactivated_executor_still_recovers_when_asked(harness: Harness) -> None:
    """The seed: "A deactivated executor may complete active workflows and recover PENDING
    workflows, but may not start new workflows or dequeue workflows"."""
    d = spawn(harness, "idle", vmid="ops-d", version="v1")
    a = spawn(harness, "start", "wf-r", vmid="ops-a", version="v1", hold="forever")
    d_port = admin_port(harness, d)
    admin_port(harness, a)
    entered_hold(harness, "wf-r", a)
    harness.kill(a)
    assert get(d_port, "/deactivate").status == 200

    assert recover(d_port, ["ops-a"]) == ["wf-r"]  # passes: D says it is recovering wf-r
    deadline = time.monotonic() + 5
    while harness.status("wf-r") != "SUCCESS" and time.monotonic() < deadline:
        time.sleep(0.05)
    row = harness.workflows(["wf-r"])["wf-r"]
    assert row["status"] == "SUCCESS", f"the deactivated executor never ran it: {row}"
    finished_by(harness, "wf-r", a, d, "ops-d")


# -- 4. health through a database outage (of a private server: only this test's is stopped) ------


@pytest.fixture
def private_harness(
    crash_backend: str, private_pg: PrivatePostgres, tmp_path: Path
) -> Iterator[Harness]:
    """A harness whose system database is on a private server, which the test may stop."""
    h = Harness(crash_backend, private_pg.create_database("ops_health"), tmp_path)
    try:
        yield h
    finally:
        h.cleanup()  # before the private server goes away


def test_health_check_follows_a_database_outage(
    private_harness: Harness, private_pg: PrivatePostgres
) -> None:
    harness = private_harness
    w = spawn(harness, "idle", vmid="ops-h", version="v1")
    port = admin_port(harness, w)
    healthy = get(port, "/dbos-healthz")
    assert healthy.status == 200, (healthy.status, healthy.body)
    assert healthy.body == b"healthy"

    down: list[Reply] = []
    private_pg.stop("fast")
    try:
        stopped_at = time.monotonic()
        # The outage is of the worker's server only: the machine's shared server stays up.
        assert not accepts_connections(private_pg.url())
        assert accepts_connections(f"{PG_BASE}/postgres"), "the shared PostgreSQL went down"
        # While PostgreSQL is down, every health check answers an error status with JSON.
        while time.monotonic() - stopped_at < 1.5:
            reply = get(port, "/dbos-healthz", timeout=10)
            down.append(reply)
            time.sleep(0.1)
    finally:
        private_pg.start()
    assert down, "no health check ran during the outage"
    bad = [(r.status, r.body) for r in down if not 500 <= r.status < 600]
    assert not bad, f"health checks during the outage that did not fail: {bad}"
    for r in down:
        assert r.headers["content-type"] == "application/json"
        body = r.json()
        assert body["status"] == "unhealthy" and isinstance(body["error"], str), body
    assert all(r.elapsed < 5 for r in down), [r.elapsed for r in down]

    # Back to healthy once PostgreSQL is, without restarting the worker.
    def recovered() -> Optional[Reply]:
        reply = get(port, "/dbos-healthz", timeout=10)
        return reply if reply.status == 200 else None

    reply = harness.wait_until("the health check to recover", recovered, 20, 0.2, watch=[w])
    assert reply.body == b"healthy"
    assert w.alive()
    assert json.loads(w.stdout_path.read_text().splitlines()[0])["pid"] == w.pid
    # The same process still does work after the outage.
    client = DBOSClient(system_database_url=harness.db_url)
    try:
        opts = EnqueueOptions(
            workflow_name="queued_work", queue_name="ops-queue", workflow_id="q-h"
        )
        assert client.enqueue(opts, 7).get_result(polling_interval_sec=0.1) == {
            "n": 7,
            "pid": w.pid,
        }
    finally:
        client.destroy()
    assert harness.workflows(["q-h"])["q-h"]["executor_id"] == "ops-h"
