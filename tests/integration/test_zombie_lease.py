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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


def run_frozen(db: Path, taken_over: bool) -> tuple[list[int], Any]:
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
    if taken_over:
        with sqlite3.connect(db) as conn:
            conn.execute(
                "UPDATE workflow_status SET owner_xid = 'peer' WHERE workflow_uuid = 'z-1'"
            )
    lease.until = -math.inf  # frozen past the lease
    thawed.set()
    return bodies, handle


def test_a_zombie_whose_workflow_was_taken_over_runs_no_further_step_body(db: Path) -> None:
    stopped = threading.Event()

    class Fenced(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "is now owned by another execution" in record.getMessage():
                stopped.set()

    handler = Fenced()
    logging.getLogger("waypoint").addHandler(handler)
    try:
        bodies, _ = run_frozen(db, taken_over=True)
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
