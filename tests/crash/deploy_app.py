"""Worker program for the rolling-deploy test (tests/crash/test_rolling_deploy.py): one pod.

    python tests/crash/deploy_app.py <db_url> <ledger_path> <stop_file>

It launches with ``shutdown_grace_sec`` (SIGTERM drains, then hands back) and
``dead_executor_recovery_sec`` (a SIGKILLed peer is taken over), then starts a steady load
of its own — direct workflows, durable sleepers and ``recv`` waiters, as requests into a pod
would — until ``stop_file`` exists. The test enqueues the queued workflows from outside.

Every step body appends 'start' and 'end' rows to the side-effect ledger; the 'end' row
carries a token the step returns, so the test can tell which execution's result was
checkpointed and whether a step ran again after it had completed.

Environment: DBOS__VMID (the pod name: the executor ID), DBOS__APPVERSION, DEPLOY_GRACE_SEC,
DEPLOY_DEAD_SEC.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import ledger  # type: ignore[import-not-found]  # tests/crash/ledger.py, stdlib only

from waypoint import DBOS, Queue, SetWorkflowID

DB_URL, LEDGER_PATH, STOP_FILE = sys.argv[1], sys.argv[2], Path(sys.argv[3])
LEDGER = ledger.Writer(LEDGER_PATH)
VMID = os.environ["DBOS__VMID"]
QUEUE = Queue("deploy-q")


@DBOS.step()
def work(wfid: str, index: int, seconds: float) -> str:
    """A step with a visible side effect that takes a while (long enough to be cut off)."""
    LEDGER.step(wfid, index, "start", "")
    time.sleep(seconds)
    token = uuid.uuid4().hex
    LEDGER.step(wfid, index, "end", token)
    return token


def me() -> str:
    wfid = DBOS.workflow_id
    assert wfid is not None
    return wfid


@DBOS.workflow()
def direct_wf() -> list[str]:
    wfid = me()
    return [work(wfid, 1, 0.3), work(wfid, 2, 0.6), work(wfid, 3, 0.3)]


@DBOS.workflow()
def queued_wf() -> list[str]:
    wfid = me()
    return [work(wfid, 1, 0.4), work(wfid, 2, 0.8)]


@DBOS.workflow()
def sleeping_wf(seconds: float) -> list[str]:
    wfid = me()
    first = work(wfid, 1, 0.1)
    DBOS.sleep(seconds)
    return [first, work(wfid, 2, 0.1)]


@DBOS.workflow()
def recv_wf() -> list[str]:
    wfid = me()
    first = work(wfid, 1, 0.1)
    got = DBOS.recv("go", timeout_seconds=600)
    return [first, work(wfid, 2, 0.1), str(got)]


def load() -> None:
    """Start a workflow of each kind in turn, about three a second, until told to stop."""
    n = 0
    while not STOP_FILE.exists():
        kind = n % 3
        wfid = f"{('direct', 'sleep', 'recv')[kind]}-{VMID}-{n}"
        try:
            with SetWorkflowID(wfid):
                if kind == 0:
                    DBOS.start_workflow(direct_wf)
                elif kind == 1:
                    DBOS.start_workflow(sleeping_wf, 1.0 + (n % 4))
                else:
                    DBOS.start_workflow(recv_wf)
        except Exception:  # destroyed by the SIGTERM drain: this pod is going away
            return
        n += 1
        time.sleep(0.3)


def main() -> None:
    config: dict[str, Any] = {
        "name": "deploy-app",
        "system_database_url": DB_URL,
        "shutdown_grace_sec": float(os.environ["DEPLOY_GRACE_SEC"]),
        "dead_executor_recovery_sec": float(os.environ["DEPLOY_DEAD_SEC"]),
    }
    DBOS(config=config)  # type: ignore[arg-type]
    DBOS.launch()
    LEDGER.event("launched")
    threading.Thread(target=load, name="load", daemon=True).start()
    while True:
        time.sleep(0.2)


if __name__ == "__main__":
    main()
