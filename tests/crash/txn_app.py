"""Worker program for the transaction crash test; the test runs it and SIGKILLs it.

    python tests/crash/txn_app.py <system_url> <app_url> <marker_dir> <mode> <wfid> <n>

Modes:
    start   launch, run workflow ``transfer(n)`` under ID <wfid>, print its result
    wait    launch (recovering this executor's PENDING workflows), wait for <wfid>, print it

``transfer(n)`` runs the transaction ``post(i)`` for i = 1..n; each inserts one row into
the application database's ``ledger`` table (created by the test; no key, so a second
execution would add a second row) and returns a fresh token. With CRASH_TXN_HOLD=<i>, the
process holds right after transaction i committed (its output recorded in
``transaction_outputs``) and before its system-database checkpoint, after writing
``<marker_dir>/committed-<i>``: the window a crash must not turn into a second execution.

Output: one JSON line, {"pid": ..., "result": [...tokens]}.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from waypoint import DBOS, SetWorkflowID
from waypoint._api import appdb

SYSTEM_URL, APP_URL, MARKERS, MODE, WFID, N = sys.argv[1:7]
HOLD = int(os.environ.get("CRASH_TXN_HOLD") or 0)


@DBOS.transaction()
def post(i: int) -> str:
    token = uuid.uuid4().hex
    DBOS.sql_session.execute(
        sa.text("INSERT INTO ledger (wfid, step, token, pid) VALUES (:w, :s, :t, :p)"),
        {"w": DBOS.workflow_id, "s": i, "t": token, "p": os.getpid()},
    )
    return token


@DBOS.workflow()
def transfer(n: int) -> list[str]:
    return [post(i) for i in range(1, n + 1)]


def hold_after_commit() -> None:
    """Hold the process between transaction HOLD's commit and its system checkpoint."""
    original = appdb.ApplicationDatabase.attempt

    def attempt(self: Any, level: str, key: Any, body: Any, encode: Any) -> Any:
        outcome = original(self, level, key, body, encode)
        if key.function_id == HOLD and not outcome.replayed:
            Path(MARKERS, f"committed-{HOLD}").write_text(str(os.getpid()))
            time.sleep(3600)
        return outcome

    appdb.ApplicationDatabase.attempt = attempt  # type: ignore[method-assign]


def main() -> None:
    if HOLD:
        hold_after_commit()
    config: dict[str, Any] = {
        "name": "txn-crash",
        "system_database_url": SYSTEM_URL,
        "application_database_url": APP_URL,
        "executor_id": "txn-crash-executor",
    }
    DBOS(config=config)  # type: ignore[arg-type]
    DBOS.launch()  # recovers this executor's PENDING workflows
    if MODE == "start":
        with SetWorkflowID(WFID):
            result = transfer(int(N))
    else:
        result = DBOS.retrieve_workflow(WFID).get_result()
    print(json.dumps({"pid": os.getpid(), "result": result}), flush=True)
    DBOS.destroy()


if __name__ == "__main__":
    main()
