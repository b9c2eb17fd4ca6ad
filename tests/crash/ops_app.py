"""Worker program for the operations tests (tests/crash/test_operations.py): one executor
process with the admin API on a free port.

    python tests/crash/ops_app.py <db_url> <ledger_path> <mode> [wfid]

Modes:
    idle            launch, then do nothing until killed
    start <wfid>    launch, start ``ops_work`` under that ID, then do nothing until killed

After launch the worker records the ledger event ``admin:<port>`` (the port the admin server
got: the config asks for port 0) and prints ``{"pid": ..., "admin_port": ...}`` on stdout.

Environment (never workflow inputs: those are checkpointed and replayed elsewhere):
    DBOS__VMID        the executor ID (set by the test, different per process)
    DBOS__APPVERSION  the application version ("v1", "v2", ...)
    OPS_HOLD          "forever": the hold step never returns (the test SIGKILLs us there);
                      "gate:<path>": the hold step waits for that file to exist;
                      unset: it returns at once
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import ledger  # type: ignore[import-not-found]  # tests/crash/ledger.py, stdlib only

from waypoint import DBOS, Queue, SetWorkflowID
from waypoint.core.runtime import get_runtime

DB_URL, LEDGER_PATH, MODE = sys.argv[1], sys.argv[2], sys.argv[3]
ARGS = sys.argv[4:]
LEDGER = ledger.Writer(LEDGER_PATH)
HOLD = os.environ.get("OPS_HOLD") or ""
PID = os.getpid()

QUEUE = Queue("ops-queue")  # declared in code, the same in every process


@DBOS.step()
def first(wfid: str) -> int:
    LEDGER.step(wfid, 1, "start", "")
    LEDGER.step(wfid, 1, "end", str(PID))
    return PID


@DBOS.step()
def hold(wfid: str) -> str:
    LEDGER.step(wfid, 2, "start", "")
    if HOLD == "forever":
        while True:
            time.sleep(1)
    if HOLD.startswith("gate:"):
        gate = HOLD.split(":", 1)[1]
        while not os.path.exists(gate):
            time.sleep(0.02)
    LEDGER.step(wfid, 2, "end", str(PID))
    return f"hold-by-{PID}"


@DBOS.step()
def third(wfid: str) -> int:
    LEDGER.step(wfid, 3, "start", "")
    LEDGER.step(wfid, 3, "end", str(PID))
    return PID


@DBOS.workflow()
def ops_work() -> dict[str, Any]:
    wfid = DBOS.workflow_id
    assert wfid is not None
    return {"first": first(wfid), "hold": hold(wfid), "third": third(wfid)}


@DBOS.step()
def record(wfid: str) -> int:
    LEDGER.step(wfid, 1, "start", "")
    LEDGER.step(wfid, 1, "end", str(PID))
    return PID


@DBOS.workflow()
def queued_work(n: int) -> dict[str, int]:
    """Enqueued on ``ops-queue`` by the test's DBOSClient: reports which process ran it."""
    wfid = DBOS.workflow_id
    assert wfid is not None
    return {"n": n, "pid": record(wfid)}


def main() -> None:
    config: dict[str, Any] = {
        "name": "ops-app",
        "system_database_url": DB_URL,
        "run_admin_server": True,
        "admin_port": 0,  # a free port; reported below
    }
    DBOS(config=config)  # type: ignore[arg-type]
    DBOS.launch()
    admin = get_runtime().service("admin")
    if admin is None:
        raise SystemExit("the admin server did not start")
    port = int(admin.port)
    LEDGER.event(f"admin:{port}")
    LEDGER.event("launched")
    print(json.dumps({"pid": PID, "admin_port": port}), flush=True)
    if MODE == "start":
        with SetWorkflowID(ARGS[0]):
            DBOS.start_workflow(ops_work)
        LEDGER.event("started")
    elif MODE != "idle":
        raise SystemExit(f"unknown mode {MODE!r}")
    while True:
        time.sleep(1)


if __name__ == "__main__":
    main()
