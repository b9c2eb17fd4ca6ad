"""Transaction worker of the interop tests, run by DBOS 2.31.1 or by Waypoint on one system
database and one application database; the tests SIGKILL it and let the other take over.

    python tests/interop/txn_app.py <dbos|waypoint> <system_url> <app_url> <markers> <mode> <wfid>

Modes: ``start`` runs ``transfer(3)`` (or, with INTEROP_TXN_KIND=datasource,
``transfer_ds(3)``) under <wfid>; ``wait`` launches (recovering this executor's PENDING
workflows) and waits for <wfid>. ``transfer(n)`` runs the transaction ``post(i)`` for
i = 1..n; each inserts one row into the application database's ``ledger`` table (created by
the test; no key, so a second execution would show) and returns a token. ``transfer_ds``
does the same through a ``SQLAlchemyDatasource`` on that database (``post_ds``).

With INTEROP_TXN_HOLD=<i> the worker holds right after transaction i committed (its output in
``transaction_outputs``) and before its system-database checkpoint, after writing
``<markers>/committed-<i>``. The hold wraps each side's own seam for that window: DBOS's
``SystemDatabase.record_operation_result``; Waypoint's ``ApplicationDatabase.attempt`` (a
transaction) or the datasource's transaction flow (a datasource step).

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

IMPL, SYSTEM_URL, APP_URL, MARKERS, MODE, WFID = sys.argv[1:7]
HOLD = int(os.environ.get("INTEROP_TXN_HOLD") or 0)
KIND = os.environ.get("INTEROP_TXN_KIND") or "transaction"

if IMPL == "dbos":
    from dbos import DBOS, SetWorkflowID, SQLAlchemyDatasource  # the interop venv
else:
    from waypoint import DBOS, SetWorkflowID, SQLAlchemyDatasource


def hold() -> None:
    Path(MARKERS, f"committed-{HOLD}").write_text(str(os.getpid()))
    time.sleep(3600)  # until the test SIGKILLs this process


def install_hold() -> None:
    if IMPL == "dbos":
        from dbos._sys_db import SystemDatabase

        original = SystemDatabase.record_operation_result

        def record(self: Any, result: Any, **kwargs: Any) -> None:
            if result["function_id"] == HOLD and result["function_name"] in ("post", "post_ds"):
                hold()
            original(self, result, **kwargs)

        SystemDatabase.record_operation_result = record  # type: ignore[method-assign]
    else:
        from waypoint._api import appdb

        attempt = appdb.ApplicationDatabase.attempt

        def held(self: Any, level: str, key: Any, body: Any, encode: Any) -> Any:
            outcome = attempt(self, level, key, body, encode)
            if key.function_id == HOLD and not outcome.replayed:
                hold()
            return outcome

        appdb.ApplicationDatabase.attempt = held  # type: ignore[method-assign]

        from waypoint._api import datasource
        from waypoint.core.context import current_step

        drive = datasource.drive_sync

        def drive_and_hold(flow: Any) -> Any:
            value = drive(flow)  # the datasource transaction committed
            step = current_step.get()
            if step is not None and step.step_id == HOLD and step.name == "post_ds":
                hold()
            return value

        datasource.drive_sync = drive_and_hold  # type: ignore[assignment]


@DBOS.transaction()
def post(i: int) -> str:
    token = f"{IMPL}-{uuid.uuid4().hex[:8]}"
    DBOS.sql_session.execute(
        sa.text("INSERT INTO ledger (wfid, step, token, pid) VALUES (:w, :s, :t, :p)"),
        {"w": DBOS.workflow_id, "s": i, "t": token, "p": os.getpid()},
    )
    return token


@DBOS.workflow()
def transfer(n: int) -> list[str]:
    return [post(i) for i in range(1, n + 1)]


DS: Any = None


def post_ds(i: int) -> str:
    token = f"{IMPL}-{uuid.uuid4().hex[:8]}"
    DS.sql_session().execute(
        sa.text("INSERT INTO ledger (wfid, step, token, pid) VALUES (:w, :s, :t, :p)"),
        {"w": DBOS.workflow_id, "s": i, "t": token, "p": os.getpid()},
    )
    return token


@DBOS.workflow()
def transfer_ds(n: int) -> list[str]:
    return [DS.run_tx_step({"name": "post_ds"}, post_ds, i) for i in range(1, n + 1)]


def main() -> None:
    if HOLD:
        install_hold()
    config: Any = {
        "name": "interop",
        "system_database_url": SYSTEM_URL,
        "application_database_url": APP_URL,
    }
    global DS
    DS = SQLAlchemyDatasource.create(APP_URL)
    DBOS(config=config)
    DBOS.launch()
    if MODE == "start":
        with SetWorkflowID(WFID):
            result = transfer(3) if KIND == "transaction" else transfer_ds(3)
    else:
        result = DBOS.retrieve_workflow(WFID).get_result()
    print(json.dumps({"pid": os.getpid(), "result": result}), flush=True)
    DBOS.destroy()


if __name__ == "__main__":
    main()
