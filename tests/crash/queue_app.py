"""Worker and client program for the multi-process queue tests (tests/crash/test_queue_workers.py).

    python tests/crash/queue_app.py <db_url> <ledger_path> worker
    python tests/crash/queue_app.py <db_url> <ledger_path> client <count> <pace_ms>

``worker`` launches (recovering its executor's PENDING workflows: the executor ID comes from
DBOS__VMID) and dequeues from the "shared" queue until killed. ``client`` launches without
dequeueing any application queue, enqueues ``count`` ``job`` workflows with IDs
``job-00``..., one every ``pace_ms`` ms, and prints ``{"pid": ..., "ids": [...]}``.

Every process declares the same queue in code: ``Queue("shared", global_concurrency=2)``.
Each job runs two steps; a step appends 'start' to the ledger, sleeps 50-150 ms, appends
'end' with a fresh token and returns the token.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import ledger  # type: ignore[import-not-found]  # tests/crash/ledger.py, stdlib only

from waypoint import DBOS, Queue, SetWorkflowID

DB_URL, LEDGER_PATH, MODE = sys.argv[1], sys.argv[2], sys.argv[3]
ARGS = sys.argv[4:]

QUEUE_NAME = "shared"
GLOBAL_CONCURRENCY = 2
STEPS = 2

LEDGER = ledger.Writer(LEDGER_PATH)
shared = Queue(QUEUE_NAME, global_concurrency=GLOBAL_CONCURRENCY)


@DBOS.step()
def stage(workflow_id: str, index: int) -> str:
    LEDGER.step(workflow_id, index, "start", "-")
    time.sleep(random.uniform(0.05, 0.15))
    token = uuid.uuid4().hex
    LEDGER.step(workflow_id, index, "end", token)
    return token


@DBOS.workflow()
def job(n: int) -> list[str]:
    wfid = DBOS.workflow_id
    assert wfid is not None
    return [stage(wfid, i) for i in range(1, STEPS + 1)]


def main() -> None:
    DBOS(config={"name": "queue-app", "system_database_url": DB_URL})  # type: ignore[arg-type]
    if MODE == "client":
        DBOS.listen_queues([])  # enqueue only: this process runs none of the jobs
    DBOS.launch()
    LEDGER.event("launched")
    if MODE == "worker":
        while True:
            time.sleep(1)
    if MODE != "client":
        raise SystemExit(f"unknown mode {MODE!r}")
    count, pace = int(ARGS[0]), float(ARGS[1]) / 1000
    ids = []
    for n in range(count):
        wfid = f"job-{n:02d}"
        with SetWorkflowID(wfid):
            shared.enqueue(job, n)
        ids.append(wfid)
        time.sleep(pace)
    LEDGER.event("enqueued")
    print(json.dumps({"pid": os.getpid(), "ids": ids}), flush=True)
    DBOS.destroy()


if __name__ == "__main__":
    main()
