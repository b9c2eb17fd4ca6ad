"""Worker program for the version-upgrade tests (tests/crash/test_deploy_versions.py): one
executor process of application version v1 or v2. v2 changes workflow B only.

    python tests/crash/version_app.py <db_url> <ledger_path> <mode> [count]

Modes:
    idle            launch, then do nothing until killed
    start <count>   launch, start ``count`` runs each of A (``a-<i>``, waits in ``recv``) and
                    B (``b-<i>``, waits in ``DBOS.sleep``), then do nothing until killed

Environment (never workflow inputs: those are checkpointed):
    DBOS__VMID            the executor ID
    DBOS__APPVERSION      the application version (v1 or v2)
    VERSION_CODE          "v1" or "v2": which code B has
    VERSION_COMPAT        config version_compatibility (unset: the default)
    VERSION_DEAD_SEC      config dead_executor_recovery_sec (unset: no takeover)
    VERSION_B_SLEEP       how long B sleeps (seconds)

Ledger steps: 1 before the wait, 2 after it; the token is the code version that ran it.
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
CODE = os.environ["VERSION_CODE"]
B_SLEEP = float(os.environ.get("VERSION_B_SLEEP") or 5)


@DBOS.step()
def before(wfid: str) -> str:
    LEDGER.step(wfid, 1, "start", CODE)
    LEDGER.step(wfid, 1, "end", CODE)
    return CODE


@DBOS.step()
def after(wfid: str, got: Any) -> str:
    LEDGER.step(wfid, 2, "start", CODE)
    LEDGER.step(wfid, 2, "end", CODE)
    return f"{got}@{CODE}"


@DBOS.workflow(name="wf_a")
def wf_a() -> str:
    wfid = DBOS.workflow_id or "?"
    before(wfid)
    got = DBOS.recv("go", timeout_seconds=600)
    return after(wfid, got)


if CODE == "v1":

    @DBOS.workflow(name="wf_b")
    def wf_b() -> str:
        wfid = DBOS.workflow_id or "?"
        before(wfid)
        DBOS.sleep(B_SLEEP)
        return after(wfid, "slept")

else:

    @DBOS.workflow(name="wf_b")
    def wf_b_v2() -> str:
        wfid = DBOS.workflow_id or "?"
        before(wfid)
        DBOS.sleep(B_SLEEP)
        return after(wfid, "slept, then something new")


def main() -> None:
    config: dict[str, Any] = {"name": "version-app", "system_database_url": DB_URL}
    if os.environ.get("VERSION_COMPAT"):
        config["version_compatibility"] = os.environ["VERSION_COMPAT"]
    if os.environ.get("VERSION_DEAD_SEC"):
        config["dead_executor_recovery_sec"] = float(os.environ["VERSION_DEAD_SEC"])
    DBOS(config=config)  # type: ignore[arg-type]
    DBOS.launch()
    LEDGER.event("launched")
    if MODE == "start":
        for i in range(int(ARGS[0])):
            for prefix, fn in (
                ("a", wf_a),
                ("b", globals()["wf_b" if CODE == "v1" else "wf_b_v2"]),
            ):
                with SetWorkflowID(f"{prefix}-{i}"):
                    DBOS.start_workflow(fn)
        LEDGER.event("started")
    elif MODE != "idle":
        raise SystemExit(f"unknown mode {MODE!r}")
    while True:
        time.sleep(1)


if __name__ == "__main__":
    main()
