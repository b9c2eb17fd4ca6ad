"""Worker program for tests/crash/test_suspend_crash.py; the test SIGKILLs it.

    python tests/crash/suspend_app.py <db_url> <ledger> first <n> <wake_at> <kind>
    python tests/crash/suspend_app.py <db_url> <ledger> recover <n> <wake_at> <kind>

``first`` launches with a small pool (``POOL`` threads) and starts ``n`` workflows ``w-<i>``,
each of which runs the step ``before`` and then waits — far more of them than there are
threads, so they can only all be waiting at once if their waits gave their threads back:

* ``i % 3 == 0`` sleeps until ``wake_at`` (epoch seconds);
* ``i % 3 == 1`` receives a message on topic "go";
* ``i % 3 == 2`` starts the child ``w-<i>-child`` (which runs ``before`` and receives on
  "go") and waits for its result.

Then each runs the step ``after`` and returns. Both steps write to the side-effect ledger.
``kind`` is ``sync`` or ``async``: the same workflows, as plain or as async functions (an
async wait parks as plain data too, its task ended).
``first`` idles until killed. ``recover`` launches (recovering all of them), waits for every
result and prints one JSON line: {"results": {workflow_id: result}}.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from tests.crash import ledger as ledgerlib
from waypoint import DBOS, SetWorkflowID

DB_URL, LEDGER, MODE, N, WAKE_AT, KIND = (
    sys.argv[1],
    sys.argv[2],
    sys.argv[3],
    int(sys.argv[4]),
    float(sys.argv[5]),
    sys.argv[6],
)
POOL = 8
writer = ledgerlib.Writer(LEDGER)


@DBOS.step(name="before")
def before() -> None:
    writer.step(DBOS.workflow_id or "?", 0, "start", "")


@DBOS.step(name="after")
def after() -> None:
    writer.step(DBOS.workflow_id or "?", 1, "start", "")


@DBOS.step(name="before_async")
async def before_async() -> None:
    writer.step(DBOS.workflow_id or "?", 0, "start", "")


@DBOS.step(name="after_async")
async def after_async() -> None:
    writer.step(DBOS.workflow_id or "?", 1, "start", "")


def child() -> str:
    before()
    got = DBOS.recv("go", timeout_seconds=3600)
    after()
    return f"child:{got}"


def waiter(i: int, wake_at: float) -> Any:
    before()
    if i % 3 == 0:
        # Never zero: a sleep of zero takes no position, and replay must see the same ones.
        DBOS.sleep(max(0.01, wake_at - time.time()))
        value: Any = "slept"
    elif i % 3 == 1:
        value = DBOS.recv("go", timeout_seconds=3600)
    else:
        with SetWorkflowID(f"w-{i}-child"):
            handle = DBOS.start_workflow(child_workflow)
        value = handle.get_result()
    after()
    return value


async def child_async() -> str:
    await before_async()
    got = await DBOS.recv_async("go", timeout_seconds=3600)
    await after_async()
    return f"child:{got}"


async def waiter_async(i: int, wake_at: float) -> Any:
    await before_async()
    if i % 3 == 0:
        await DBOS.sleep_async(max(0.01, wake_at - time.time()))
        value: Any = "slept"
    elif i % 3 == 1:
        value = await DBOS.recv_async("go", timeout_seconds=3600)
    else:
        with SetWorkflowID(f"w-{i}-child"):
            handle = await DBOS.start_workflow_async(child_workflow)
        value = await handle.get_result()
    await after_async()
    return value


child_workflow: Any = DBOS.workflow(name="child")(child if KIND == "sync" else child_async)
waiter_workflow: Any = DBOS.workflow(name="waiter")(waiter if KIND == "sync" else waiter_async)


def main() -> None:
    DBOS(
        config={
            "name": "suspend-crash",
            "system_database_url": DB_URL,
            "executor_id": "suspend-crash",
            "max_executor_threads": POOL,
        }
    )
    DBOS.launch()
    if MODE == "first":
        for i in range(N):
            with SetWorkflowID(f"w-{i}"):
                DBOS.start_workflow(waiter_workflow, i, WAKE_AT)
        while True:
            time.sleep(1)
    assert MODE == "recover", MODE
    writer.event("launched")
    results = {
        f"w-{i}": DBOS.retrieve_workflow(f"w-{i}").get_result(polling_interval_sec=0.5)
        for i in range(N)
    }
    print(json.dumps({"results": results}), flush=True)
    DBOS.destroy()


if __name__ == "__main__":
    main()
