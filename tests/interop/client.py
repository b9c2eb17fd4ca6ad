"""A DBOSClient program of the interop tests, run with DBOS 2.31.1's or Waypoint's client against
a database where the other side's worker (``app.py serve``) runs the workflows.

    python tests/interop/client.py <dbos|waypoint> <db_url> <mode> <prefix>

Modes:
    drive     enqueue ``waiter`` twice and drive both through the client: wait for its event,
              send it its reply, read the result, list it; cancel the second one, resume it
              and finish it
    enqueue   enqueue one ``waiter`` (<prefix>-parked) and exit, nothing waits for it

Output: one JSON line with what the client observed.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

IMPL, DB_URL, MODE, PREFIX = sys.argv[1:5]

if IMPL == "dbos":
    from dbos import DBOSClient, EnqueueOptions  # the interop venv
elif IMPL == "waypoint":
    from waypoint import DBOSClient, EnqueueOptions
else:
    raise SystemExit(f"unknown implementation {IMPL!r}: expected dbos or waypoint")


def options(workflow_id: str) -> EnqueueOptions:
    return {"queue_name": "interop-q", "workflow_name": "waiter", "workflow_id": workflow_id}


def status_of(client: Any, workflow_id: str) -> str:
    return str(client.retrieve_workflow(workflow_id).get_status().status)


def wait_status(client: Any, workflow_id: str, wanted: str) -> str:
    deadline = time.monotonic() + 60
    while (current := status_of(client, workflow_id)) != wanted and time.monotonic() < deadline:
        time.sleep(0.05)
    return current


def drive(client: Any) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    first, second = f"{PREFIX}-a", f"{PREFIX}-b"
    handle = client.enqueue(options(first), "a")
    seen["ready"] = client.get_event(first, "ready", timeout_seconds=60)
    client.send(first, "pong", "reply")
    seen["result"] = handle.get_result()
    listed = client.list_workflows(workflow_ids=[first])
    seen["listed"] = [(w.workflow_id, w.name, w.status, w.queue_name) for w in listed]

    client.enqueue(options(second), "b")
    seen["ready_b"] = client.get_event(second, "ready", timeout_seconds=60)
    client.cancel_workflow(second)
    seen["cancelled"] = wait_status(client, second, "CANCELLED")
    client.send(second, "again", "reply")
    client.resume_workflow(second)
    seen["resumed"] = client.retrieve_workflow(second).get_result()
    seen["steps_b"] = [s["function_name"] for s in client.list_workflow_steps(second)]
    return seen


def main() -> None:
    client = DBOSClient(system_database_url=DB_URL)
    try:
        if MODE == "drive":
            seen = drive(client)
        elif MODE == "enqueue":
            client.enqueue(options(f"{PREFIX}-parked"), "parked")
            seen = {"enqueued": f"{PREFIX}-parked"}
        else:
            raise SystemExit(f"unknown mode {MODE!r}")
    finally:
        client.destroy()
    print(json.dumps(seen), flush=True)


if __name__ == "__main__":
    main()
