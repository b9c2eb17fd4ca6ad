"""Worker program for tests/crash/test_failover.py: a steady workload through a failover.

    python tests/crash/failover_app.py <db_url> <ledger_path> <name> <peer> <stop_file>

It launches as executor ``<name>`` on ``<db_url>`` (a multi-host URL: primary, then
standby), starts ``collector-<name>`` (receives messages on topic "in" until "STOP"), and
then, until ``<stop_file>`` exists, repeatedly:

- starts a workflow ``<name>-direct-<i>`` (``chain``: CHAIN_STEPS steps, a durable sleep, and
  one event per step) and writes ``ack:start:<id>`` to the ledger once the start returned;
- enqueues ``<name>-queued-<i>`` on the queue ``failover`` (``ack:enqueue:<id>``);
- sends ``<name>-msg-<i>`` to ``collector-<peer>``, the other worker's collector
  (``ack:send:<msg>``), so every delivery crosses processes and needs LISTEN/NOTIFY.

Then it waits for all of them (and for every other ``chain`` workflow still PENDING or
ENQUEUED: started with the stop file in place, a worker only finishes what it and its peer
recover), sends "STOP" to the peer's collector, waits for its own
collector, and prints one JSON line: ``{"pid", "started", "results", "lost", "received"}``
(``lost``: the workflows whose handle said they no longer exist).

Inside the workflows, each step body writes 'start' and 'end' rows to the ledger (what really
ran), ``chain`` writes ``ack:event:<id>:<key>`` once each ``set_event`` returned, and the
collector writes ``recv:<msg>`` as each message arrives. With FAILOVER_NO_SAFETY_POLL=1 a
waiter never re-reads the database on its own (the safety period is an hour): a message from
the other process can then only arrive through a notification.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import deque
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import ledger  # type: ignore[import-not-found]  # tests/crash/ledger.py, stdlib only

import waypoint.core.engine as engine_module
from waypoint import DBOS, Queue, SetWorkflowID
from waypoint.error import DBOSNonExistentWorkflowError

DB_URL, LEDGER_PATH, NAME, PEER, STOP_FILE = sys.argv[1:6]
LEDGER = ledger.Writer(LEDGER_PATH)
CHAIN_STEPS = 6
IN_FLIGHT = 8  # direct workflows running at once, per worker

if os.environ.get("FAILOVER_NO_SAFETY_POLL") == "1":
    engine_module.SAFETY_INTERVAL = 3600.0

queue = Queue("failover", worker_concurrency=4)


@DBOS.step(name="work")
def work(workflow_id: str, index: int) -> int:
    LEDGER.step(workflow_id, index, "start", NAME)
    time.sleep(0.05)
    LEDGER.step(workflow_id, index, "end", NAME)
    return index * 10


@DBOS.workflow(name="chain")
def chain(n: int) -> int:
    wid = DBOS.workflow_id or ""
    total = 0
    for k in range(n):
        total += work(wid, k)
        DBOS.set_event(f"k{k}", k)
        LEDGER.event(f"ack:event:{wid}:k{k}")
        if k == 2:
            DBOS.sleep(0.3)
    return total


@DBOS.workflow(name="collector")
def collector() -> list[Any]:
    got: list[Any] = []
    while True:
        msg = DBOS.recv("in", timeout_seconds=600)
        if msg == "STOP":
            return got
        LEDGER.event(f"recv:{msg}")
        got.append(msg)


def main() -> None:
    DBOS(config={"name": "failover", "system_database_url": DB_URL, "executor_id": NAME})
    DBOS.launch()
    with SetWorkflowID(f"collector-{NAME}"):
        own_collector = DBOS.start_workflow(collector)
    LEDGER.event("launched")
    while DBOS.get_workflow_status(f"collector-{PEER}") is None:  # the peer's, to send to
        time.sleep(0.05)
    direct: deque[Any] = deque()
    handles: list[Any] = []
    i = 0
    while not os.path.exists(STOP_FILE):
        while len(direct) >= IN_FLIGHT:
            direct.popleft().get_result(polling_interval_sec=0.1)
        wid = f"{NAME}-direct-{i}"
        with SetWorkflowID(wid):
            handle = DBOS.start_workflow(chain, CHAIN_STEPS)
        LEDGER.event(f"ack:start:{wid}")
        direct.append(handle)
        handles.append(handle)
        qid = f"{NAME}-queued-{i}"
        with SetWorkflowID(qid):
            handles.append(queue.enqueue(chain, CHAIN_STEPS))
        LEDGER.event(f"ack:enqueue:{qid}")
        msg = f"{NAME}-msg-{i}"
        DBOS.send(f"collector-{PEER}", msg, "in")
        LEDGER.event(f"ack:send:{msg}")
        i += 1
        time.sleep(0.1)
    results: dict[str, Any] = {}
    lost: list[str] = []
    for h in handles:
        try:
            results[h.workflow_id] = h.get_result(polling_interval_sec=0.1)
        except DBOSNonExistentWorkflowError:  # its row was lost in the failover
            lost.append(h.workflow_id)
    # Started again after a crash (the stop file was there at launch): the work recovered at
    # launch, and what the other worker recovers or dequeues, finishes first.
    while DBOS.list_workflows(status=["PENDING", "ENQUEUED"], name="chain"):
        time.sleep(0.1)
    DBOS.send(f"collector-{PEER}", "STOP", "in")
    received = own_collector.get_result(polling_interval_sec=0.1)
    report = {"pid": os.getpid(), "started": i, "results": results, "lost": lost}
    print(json.dumps({**report, "received": received}))
    DBOS.destroy()


if __name__ == "__main__":
    main()
