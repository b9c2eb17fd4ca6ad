"""The fleet (PostgreSQL, real processes): executor heartbeats, takeover of a dead executor's
PENDING workflows with ``dead_executor_recovery_sec``, and fencing of a paused ("zombie")
executor whose work was taken over.

The worker program is tests/crash/fleet_app.py; what really ran is read from the side-effect
ledger, what Waypoint believes from the tables.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import pytest

from tests.crash.conftest import BACKENDS
from tests.crash.harness import APP_VERSION, Harness, Proc
from waypoint.storage.registry import open_url

pytestmark = [
    pytest.mark.crash,
    pytest.mark.skipif("postgres" not in BACKENDS, reason="PostgreSQL backend not selected"),
    pytest.mark.parametrize("crash_backend", ["postgres"], indirect=True),
]

APP = Path(__file__).with_name("fleet_app.py")
APP_NAME = "fleet-app"


def spawn(
    harness: Harness,
    mode: str,
    *args: str,
    vmid: str,
    dead_sec: Optional[float] = None,
    hold: Optional[str] = None,
) -> Proc:
    """Start fleet_app.py like Harness.spawn starts app.py (the harness reaps it)."""
    name = f"p{len(harness.procs) + 1}-{mode}-{vmid}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DBOS__", "CRASH_", "FLEET_"))}
    env["DBOS__APPVERSION"] = APP_VERSION
    env["DBOS__VMID"] = vmid
    env["PYTHONUNBUFFERED"] = "1"
    if dead_sec is not None:
        env["FLEET_DEAD_SEC"] = str(dead_sec)
    if hold is not None:
        env["FLEET_HOLD"] = hold
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


@pytest.fixture
def store(harness: Harness) -> Iterator[Any]:
    s = open_url(harness.db_url)
    s.open()
    yield s
    s.close()


def launched(harness: Harness, *procs: Proc) -> None:
    for p in procs:
        harness.wait_until(
            f"{p.name} to launch",
            lambda p=p: "launched" in harness.process_events(p.pid),
            30,
            watch=[p],
        )


def executors(store: Any) -> dict[str, dict[str, Any]]:
    """executor_id -> its freshest incarnation (pid, seconds since last heard from)."""
    out: dict[str, dict[str, Any]] = {}
    for row in store.list_executors(APP_NAME):
        silent = ((row.db_now or 0) - (row.last_seen or 0)) / 1000
        current = out.get(row.executor_id)
        if current is None or silent < current["silent_sec"]:
            out[row.executor_id] = {
                "pid": row.pid,
                "silent_sec": silent,
                "version": row.application_version,
            }
    return out


def entered_hold(harness: Harness, wfid: str, proc: Proc) -> None:
    harness.wait_until(
        f"{proc.name} to enter the hold step",
        lambda: harness.ledger_rows(wfid, step=2, phase="start", pid=proc.pid),
        20,
        watch=[proc],
    )


def untouched(harness: Harness, wfid: str) -> bool:
    """Still PENDING on executor A from its first (direct) start: never re-enqueued."""
    row = harness.workflows([wfid])[wfid]
    return bool(
        row["status"] == "PENDING"
        and row["executor_id"] == "fleet-a"
        and row["recovery_attempts"] == 1
    )


def stays(what: str, predicate: Any, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert predicate(), what
        time.sleep(0.05)


def test_dead_executor_is_taken_over(harness: Harness, store: Any) -> None:
    b = spawn(harness, "idle", vmid="fleet-b", dead_sec=1)
    a = spawn(harness, "start", "fw-1", vmid="fleet-a", dead_sec=1, hold="forever")
    launched(harness, a, b)
    entered_hold(harness, "fw-1", a)

    # Both executors are live in the executors table.
    live = harness.wait_until(
        "both executors to heartbeat",
        lambda: (e := executors(store)).keys() >= {"fleet-a", "fleet-b"} and e,
        10,
    )
    assert live["fleet-a"]["pid"] == a.pid and live["fleet-b"]["pid"] == b.pid
    assert live["fleet-a"]["version"] == APP_VERSION
    assert all(e["silent_sec"] < 1.5 for e in live.values()), live

    # A is alive (heartbeating) though busy: B leaves its workflow alone.
    def still_a() -> bool:
        return untouched(harness, "fw-1")

    stays("a live executor is not taken over", still_a, 2.5)
    assert not harness.ledger_rows("fw-1", step=2, pid=b.pid)

    harness.kill(a)
    killed_at = time.monotonic()
    rows = harness.wait_status(["fw-1"], {"SUCCESS", "ERROR"}, timeout=10, watch=[b])
    took = time.monotonic() - killed_at
    assert took < 6, f"takeover took {took:.1f}s"
    row = rows["fw-1"]
    assert row["status"] == "SUCCESS" and row["executor_id"] == "fleet-b"
    assert row["recovery_attempts"] == 2
    steps = harness.steps("fw-1")
    assert [s[2] for s in steps] == [a.pid, f"hold-by-{b.pid}", b.pid]
    # The first step ran once (on A); the hold step was entered by A and re-run by B.
    assert [r.pid for r in harness.ledger_rows("fw-1", step=1, phase="start")] == [a.pid]
    assert [r.pid for r in harness.ledger_rows("fw-1", step=2, phase="start")] == [a.pid, b.pid]
    # The dead executor's heartbeat rows were claimed (removed) by the survivor.
    assert set(executors(store)) == {"fleet-b"}


def test_without_dead_executor_recovery_nothing_is_taken_over(harness: Harness) -> None:
    b = spawn(harness, "idle", vmid="fleet-b")
    a = spawn(harness, "start", "fw-2", vmid="fleet-a", hold="forever")
    launched(harness, a, b)
    entered_hold(harness, "fw-2", a)
    harness.kill(a)

    stays("nothing takes over a dead executor by default", lambda: untouched(harness, "fw-2"), 3)
    assert b.alive()
    assert [r.pid for r in harness.ledger_rows("fw-2", step=2, phase="start")] == [a.pid]


def test_paused_zombie_cannot_overwrite_the_takeover(harness: Harness, store: Any) -> None:
    gate = harness.workdir / "release-zombie"
    b = spawn(harness, "idle", vmid="fleet-b", dead_sec=1)
    a = spawn(harness, "start", "fw-z", vmid="fleet-a", dead_sec=1, hold=f"gate:{gate}")
    launched(harness, a, b)
    entered_hold(harness, "fw-z", a)
    os.kill(a.pid, signal.SIGSTOP)
    try:
        rows = harness.wait_status(["fw-z"], {"SUCCESS", "ERROR"}, timeout=10, watch=[b])
    finally:
        gate.touch()
        os.kill(a.pid, signal.SIGCONT)
    row = rows["fw-z"]
    assert row["status"] == "SUCCESS" and row["executor_id"] == "fleet-b"
    winner = harness.steps("fw-z")
    assert [s[2] for s in winner] == [a.pid, f"hold-by-{b.pid}", b.pid]

    # The zombie wakes up, finishes its step body and tries to checkpoint it.
    harness.wait_until(
        "the zombie to finish its hold step",
        lambda: harness.ledger_rows("fw-z", step=2, phase="end", pid=a.pid),
        10,
        watch=[a],
    )
    # It heartbeats again (it is alive and well) ...
    harness.wait_until(
        "the zombie to heartbeat again",
        lambda: (e := executors(store).get("fleet-a")) is not None and e["silent_sec"] < 1,
        10,
        watch=[a],
    )
    time.sleep(0.5)  # its rejected checkpoint and whatever follows have happened by now
    assert a.alive(), a.diagnostics()
    # ... but nothing it did after the takeover was recorded.
    assert harness.steps("fw-z") == winner
    after = harness.workflows(["fw-z"])["fw-z"]
    assert after["status"] == "SUCCESS" and after["executor_id"] == "fleet-b"
    assert after["completed_at"] == row["completed_at"]
    assert not harness.ledger_rows("fw-z", step=3, pid=a.pid), "the zombie ran on"
    from tests.crash.harness import decode

    out = harness._query(
        "SELECT output, serialization FROM {workflow_status} WHERE workflow_uuid = %s", ("fw-z",)
    )
    assert decode(out[0][0], out[0][1]) == {
        "first": a.pid,
        "hold": f"hold-by-{b.pid}",
        "third": b.pid,
    }


def test_live_executor_with_default_heartbeat_is_not_taken_over(harness: Harness) -> None:
    b = spawn(harness, "idle", vmid="fleet-b", dead_sec=1)
    a = spawn(harness, "start", "fw-m", vmid="fleet-a", hold="forever")
    launched(harness, a, b)
    entered_hold(harness, "fw-m", a)

    stays("a live executor is not taken over", lambda: untouched(harness, "fw-m"), 3)
    assert not harness.ledger_rows("fw-m", step=2, pid=b.pid)
