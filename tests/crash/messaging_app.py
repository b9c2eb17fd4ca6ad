"""Worker program for tests/crash/test_messaging_crash.py; the test SIGKILLs it.

    python tests/crash/messaging_app.py <db_url> <workdir> first
    python tests/crash/messaging_app.py <db_url> <workdir> recover

``first`` launches and starts two workflows, then idles until killed:
    "consumer"  receives CONSUMED messages on topic "in" (recv, 60 s timeout each) and
                returns them in the order received;
    "producer"  runs one step, ``emit``, that writes "v1" and "v2" to its stream "out" and
                sends "from-step" to the consumer, then creates ``<workdir>/emitted-<pid>``;
                with MSG_CRASH_HANG=1 the step then blocks forever (killed before it can
                checkpoint, so recovery runs it again).
``recover`` launches (recovering both), waits for them and prints one JSON line:
    {"consumer": [...], "producer": ..., "stream": [...]}.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from waypoint import DBOS, SetWorkflowID

DB_URL, WORKDIR, MODE = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
CONSUMED = 6


@DBOS.step(name="emit")
def emit() -> None:
    DBOS.write_stream("out", "v1")
    DBOS.write_stream("out", "v2")
    DBOS.send("consumer", "from-step", "in")
    (WORKDIR / f"emitted-{os.getpid()}").touch()
    if os.environ.get("MSG_CRASH_HANG") == "1":
        while True:
            time.sleep(1)


@DBOS.workflow(name="producer")
def producer() -> str:
    emit()
    return "produced"


@DBOS.workflow(name="consumer")
def consumer(n: int) -> list[Any]:
    return [DBOS.recv("in", timeout_seconds=60) for _ in range(n)]


def main() -> None:
    # The application version comes from DBOS__APPVERSION, the same in both processes.
    DBOS(config={"name": "msg-crash", "system_database_url": DB_URL, "executor_id": "msg-crash"})
    DBOS.launch()
    if MODE == "first":
        with SetWorkflowID("consumer"):
            DBOS.start_workflow(consumer, CONSUMED)
        with SetWorkflowID("producer"):
            DBOS.start_workflow(producer)
        while True:
            time.sleep(1)
    assert MODE == "recover", MODE
    report = {
        "consumer": DBOS.retrieve_workflow("consumer").get_result(polling_interval_sec=0.1),
        "producer": DBOS.retrieve_workflow("producer").get_result(polling_interval_sec=0.1),
        "stream": list(DBOS.read_stream("producer", "out", timeout_seconds=10)),
    }
    print(json.dumps(report), flush=True)
    DBOS.destroy()


if __name__ == "__main__":
    main()
