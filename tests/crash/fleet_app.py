"""Worker program for the fleet tests (tests/crash/test_fleet.py): one executor process.

    python tests/crash/fleet_app.py <db_url> <ledger_path> <mode> [wfid]

Modes:
    idle            launch, then do nothing until killed
    start <wfid>    launch, start ``fleet_work`` under that ID, then do nothing until killed

Environment (never workflow inputs: those are checkpointed and replayed elsewhere):
    DBOS__VMID        the executor ID (set by the test, different per process)
    DBOS__APPVERSION  the application version (the same in every process)
    FLEET_DEAD_SEC    config dead_executor_recovery_sec (unset: the default, no takeover)
    FLEET_HOLD        "forever": the hold step never returns (the test SIGKILLs us there);
                      "gate:<path>": the hold step waits for that file to exist
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import ledger  # type: ignore[import-not-found]  # tests/crash/ledger.py, stdlib only

from waypoint import DBOS, SetWorkflowID

DB_URL, LEDGER_PATH, MODE = sys.argv[1], sys.argv[2], sys.argv[3]
ARGS = sys.argv[4:]
LEDGER = ledger.Writer(LEDGER_PATH)
HOLD = os.environ.get("FLEET_HOLD") or ""
PID = os.getpid()


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
def fleet_work() -> dict[str, Any]:
    wfid = DBOS.workflow_id
    assert wfid is not None
    return {"first": first(wfid), "hold": hold(wfid), "third": third(wfid)}


def main() -> None:
    config: dict[str, Any] = {"name": "fleet-app", "system_database_url": DB_URL}
    dead = os.environ.get("FLEET_DEAD_SEC")
    if dead:
        config["dead_executor_recovery_sec"] = float(dead)
    DBOS(config=config)  # type: ignore[arg-type]
    DBOS.launch()
    LEDGER.event("launched")
    if MODE == "start":
        with SetWorkflowID(ARGS[0]):
            DBOS.start_workflow(fleet_work)
        LEDGER.event("started")
    elif MODE != "idle":
        raise SystemExit(f"unknown mode {MODE!r}")
    while True:
        time.sleep(1)


if __name__ == "__main__":
    main()
