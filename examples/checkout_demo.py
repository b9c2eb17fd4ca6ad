"""A durable checkout that survives ``kill -9``.

Run with ``bash scripts/demo.sh``. The parent process starts a child that begins checking out
order 42, kills it with SIGKILL while the workflow is in a durable sleep, then launches
Waypoint itself: recovery resumes the workflow after its last checkpoint, so the card is
charged exactly once and the sleep only lasts its remainder.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time

from waypoint import DBOS, SetWorkflowID

LEDGER = os.path.join(tempfile.gettempdir(), "waypoint-demo-charges.txt")


@DBOS.step(retries_allowed=True, max_attempts=5)
def charge(order_id: str) -> str:
    with open(LEDGER, "a") as ledger:  # a side effect outside the database
        ledger.write(f"charged order {order_id} (pid {os.getpid()})\n")
    print(f"    [pid {os.getpid()}] step charge: card charged for order {order_id}", flush=True)
    return f"receipt-{order_id}"


@DBOS.step()
def ship(order_id: str, receipt: str) -> str:
    print(f"    [pid {os.getpid()}] step ship: order {order_id} shipped", flush=True)
    return f"order {order_id} shipped with {receipt}"


@DBOS.workflow()
def checkout(order_id: str) -> str:
    receipt = charge(order_id)
    print(f"    [pid {os.getpid()}] durable sleep: wakes 4 s after it first began", flush=True)
    DBOS.sleep(4)
    return ship(order_id, receipt)


def launch(db_path: str) -> None:
    DBOS(
        config={
            "name": "shop",
            "system_database_url": f"sqlite:///{db_path}",
            "application_version": "demo",
            "log_level": "WARNING",
        }
    )
    DBOS.launch()


def child(db_path: str) -> None:
    launch(db_path)
    with SetWorkflowID("order-42"):
        DBOS.start_workflow(checkout, "42")
    time.sleep(60)  # the parent kills us long before this ends


def parent() -> None:
    workdir = tempfile.mkdtemp(prefix="waypoint-demo-")
    db_path = os.path.join(workdir, "shop.sqlite")
    if os.path.exists(LEDGER):
        os.remove(LEDGER)
    print(f"System database: {db_path} (SQLite, created on launch)\n")
    print("1. A process starts checkout('42') as workflow order-42.", flush=True)
    proc = subprocess.Popen([sys.executable, __file__, "child", db_path])
    time.sleep(2.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    print(f"\n2. Killed pid {proc.pid} with SIGKILL in the middle of the sleep.\n", flush=True)
    print("3. A fresh process launches Waypoint; recovery picks the workflow up.", flush=True)
    started = time.time()
    launch(db_path)
    result = DBOS.retrieve_workflow("order-42").get_result(polling_interval_sec=0.1)
    print(f"\n   result: {result!r} ({time.time() - started:.1f} s after relaunch)")
    steps = DBOS.list_workflow_steps("order-42")
    print("   checkpoints:", ", ".join(f"{s['function_id']}:{s['function_name']}" for s in steps))
    with open(LEDGER) as ledger:
        charges = ledger.read().splitlines()
    print(f"   card charges recorded outside the database: {len(charges)}")
    DBOS.destroy()
    assert len(charges) == 1, "the card must be charged exactly once"


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "child":
        child(sys.argv[2])
    else:
        parent()
