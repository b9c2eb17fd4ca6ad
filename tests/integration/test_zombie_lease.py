"""A worker frozen past its lease must not run a step body a peer may already have run.

Found by the chaos campaign (``pause`` with ``dead_executor_recovery_sec``): a worker
SIGSTOPped while a database reply was on its way resumed after a peer had taken its workflow
over and finished it; the stale reply said "you own it" (a checkpoint accepted, a workflow
created), and the zombie ran the next step body again before its next checkpoint was refused.
Now a run whose lease lapsed (waypoint/core/lease.py) renews it and re-reads its token
before a step body, and stops, fenced, when a peer owns the workflow.

The freeze is made deterministic: the body waits between two steps, the test lets the
lease lapse and (or not) moves the workflow's token to a "peer", as a takeover does.
"""

from __future__ import annotations

import logging
import math
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Optional

import pytest

from waypoint import DBOS, SetWorkflowID
from waypoint.core.runtime import get_runtime

pytestmark = pytest.mark.skipif(
    "sqlite" not in __import__("tests.conftest").conftest.BACKENDS, reason="SQLite not selected"
)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Path]:
    DBOS.destroy(destroy_registry=True)
    yield tmp_path / "zombie.sqlite"
    DBOS.destroy(destroy_registry=True)


def run_frozen(
    db: Path,
    taken_over: bool,
    in_status_read: bool = False,
    before_thaw: Optional[Callable[[], None]] = None,
) -> tuple[list[int], Any]:
    """``in_status_read``: the lease lapses and the takeover happens while the run reads its
    status before step 2 (a read that waited out an outage), not before it."""
    bodies: list[int] = []
    frozen, thawed = threading.Event(), threading.Event()

    @DBOS.step()
    def body(i: int) -> int:
        bodies.append(i)
        return i

    @DBOS.workflow()
    def two_steps() -> int:
        body(1)
        frozen.set()
        thawed.wait(60)  # SIGSTOP here, as it were
        return body(2)

    config: Any = {
        "name": "zombie",
        "system_database_url": f"sqlite:///{db}",
        "dead_executor_recovery_sec": 600,  # no real takeover during the test
    }
    DBOS(config=config)
    DBOS.launch()
    lease = get_runtime().lease
    assert lease is not None
    with SetWorkflowID("z-1"):
        handle = DBOS.start_workflow(two_steps)
    assert frozen.wait(60)

    def take_over() -> None:
        if taken_over:
            with sqlite3.connect(db) as conn:
                conn.execute(
                    "UPDATE workflow_status SET owner_xid = 'peer' WHERE workflow_uuid = 'z-1'"
                )
        lease.until = -math.inf  # frozen past the lease

    if in_status_read:
        rt = get_runtime()
        read = rt.store.get_outcome
        rt.status_freshness = 0.0  # the run reads its status before every operation

        def slow_read(workflow_id: str) -> Any:
            take_over()
            return read(workflow_id)

        rt.store.get_outcome = slow_read  # type: ignore[method-assign]
    else:
        take_over()
    if before_thaw is not None:
        before_thaw()
    thawed.set()
    return bodies, handle


@pytest.mark.parametrize("in_status_read", [False, True])
def test_a_zombie_whose_workflow_was_taken_over_runs_no_further_step_body(
    db: Path, in_status_read: bool
) -> None:
    stopped = threading.Event()

    class Fenced(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "is now owned by another execution" in record.getMessage():
                stopped.set()

    handler = Fenced()
    logging.getLogger("waypoint").addHandler(handler)
    try:
        bodies, _ = run_frozen(db, taken_over=True, in_status_read=in_status_read)
        assert stopped.wait(60), "the zombie run was not fenced"
    finally:
        logging.getLogger("waypoint").removeHandler(handler)
    assert bodies == [1]  # step 2 is the peer's to run
    with sqlite3.connect(db) as conn:
        steps = conn.execute(
            "SELECT function_id FROM operation_outputs WHERE workflow_uuid = 'z-1'"
        ).fetchall()
    assert steps == [(1,)]


def test_a_worker_that_still_owns_its_workflow_goes_on_after_its_lease_lapsed(db: Path) -> None:
    bodies, handle = run_frozen(db, taken_over=False)
    assert handle.get_result() == 2
    assert bodies == [1, 2]


def test_a_peer_writing_heartbeats_with_a_clock_behind_is_not_taken_over(db: Path) -> None:
    """Found by the chaos campaign (SQLite, ``clock_jump`` with takeover on): on SQLite each
    process stamps its heartbeats with its own wall clock, and a worker whose clock was 30-300
    s behind looked silent to its peers, which took its work over while it ran it, so both
    ran the same step bodies. A peer is now taken over only once its heartbeats have stood
    still for ``dead_executor_recovery_sec`` by the taker's own monotonic clock (and the
    database's clock agrees)."""
    from dataclasses import replace

    from waypoint.storage.protocol import ExecutorRow

    took_over = threading.Event()

    class TookOver(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "'peer'" in record.getMessage() and "took over" in record.getMessage():
                took_over.set()

    config: Any = {
        "name": "skewed",
        "system_database_url": f"sqlite:///{db}",
        "dead_executor_recovery_sec": 0.6,  # a heartbeat (and a look at the peers) each 0.2 s
    }
    DBOS(config=config)
    DBOS.launch()
    rt = get_runtime()
    peer = replace(
        ExecutorRow("peer", "p1", rt.app_name, rt.app_version, "host", 1), heartbeat_ms=200
    )
    beating = threading.Event()
    beating.set()
    beats = 0

    def beat() -> None:  # the peer's heartbeats, stamped five minutes late
        nonlocal beats
        while beating.is_set():
            rt.store.heartbeat(peer)
            with sqlite3.connect(db) as conn:
                conn.execute(
                    "UPDATE executors SET last_seen = last_seen - 300000 WHERE executor_id = 'peer'"
                )
            beats += 1
            time.sleep(0.05)

    handler = TookOver()
    logging.getLogger("waypoint").addHandler(handler)
    writer = threading.Thread(target=beat, daemon=True)
    writer.start()
    try:
        # 80 heartbeats of the peer: some 20 looks of the taker at the fleet, every one of
        # which used to take it over.
        deadline = time.monotonic() + 60
        while beats < 80 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not took_over.is_set(), "a live peer was taken over"
        beating.clear()
        writer.join(10)
        assert took_over.wait(60), "a peer that stopped writing heartbeats was not taken over"
    finally:
        beating.clear()
        logging.getLogger("waypoint").removeHandler(handler)


def test_a_lease_that_cannot_be_renewed_on_a_full_disk_waits_for_space(db: Path) -> None:
    """Found by the chaos campaign (SQLite, ``disk_full``): re-confirming a lapsed lease
    writes a heartbeat, and on a full disk that failed the workflow ("heartbeat was not
    written"). It waits for space instead, as an outcome write does."""
    from waypoint.error import WaypointStorageFullError

    failures: list[str] = []

    def install() -> None:  # the run's renewal (the heartbeat thread's are left alone)
        lease = get_runtime().lease
        assert lease is not None
        beat = lease._beat

        def full_once() -> float:
            if not failures:
                failures.append("full")
                raise WaypointStorageFullError("the system database is full; heartbeat")
            return beat()

        lease._beat = full_once

    bodies, handle = run_frozen(db, taken_over=False, before_thaw=install)
    assert handle.get_result() == 2
    assert bodies == [1, 2] and failures
