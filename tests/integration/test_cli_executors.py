"""`waypoint executors` shows each executor's state (live, draining, gone) and `waypoint
executors recover ID` puts a gone executor's PENDING workflows back for a live one to run
(both backends; the real installed command against a launched DBOS in this process)."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from tests.integration.test_cli import fails, ok, wp
from tests.integration.test_graceful_shutdown import store_fixture  # noqa: F401
from waypoint import DBOS, SetWorkflowID
from waypoint.storage.protocol import ExecutorRow, Store


def test_executor_states_and_recovery_from_the_shell(
    dbos: type[DBOS], config: dict[str, Any], db_url: str, store: Store
) -> None:
    gate = threading.Event()
    ran_on: list[str] = []

    def define() -> None:
        @DBOS.workflow()
        def stuck() -> str:
            ran_on.append(DBOS.executor_id)
            if DBOS.executor_id == "pod-dead":
                gate.wait(30)
            return DBOS.executor_id

        define.stuck = stuck  # type: ignore[attr-defined]

    def launch(executor_id: str) -> None:
        DBOS.destroy(destroy_registry=True)
        DBOS(config={**config, "executor_id": executor_id, "application_version": "v1"})  # type: ignore[arg-type]
        define()
        DBOS.launch()

    # A pod that dies with a workflow in flight: it stays PENDING there (no graceful stop).
    launch("pod-dead")
    with SetWorkflowID("stranded"):
        DBOS.start_workflow(define.stuck)  # type: ignore[attr-defined]
    deadline = time.monotonic() + 30
    while not ran_on and time.monotonic() < deadline:
        time.sleep(0.02)
    DBOS.destroy()
    gate.set()
    stranded = store.get_workflow("stranded")
    assert stranded is not None and (stranded.status, stranded.executor_id) == (
        "PENDING",
        "pod-dead",
    )
    # Its last heartbeat (a period of 1 ms: silent for three of them by now), and a pod
    # that is draining.
    store.heartbeat(ExecutorRow("pod-dead", "i1", "waypoint-test", "v1", "h", 1, heartbeat_ms=1))
    store.heartbeat(
        ExecutorRow("pod-drain", "i1", "waypoint-test", "v1", "h", 2, heartbeat_ms=3_600_000)
    )
    store.set_executor_state("pod-drain", "i1", "draining")
    launch("pod-live")

    rows = json.loads(ok(wp("executors", "-s", db_url, "--json")))
    assert {r["executor_id"]: r["state"] for r in rows} == {
        "pod-dead": "gone",
        "pod-drain": "draining",
        "pod-live": "live",
    }
    table = ok(wp("executors", "-s", db_url))
    assert "State" in table and "draining" in table and "gone" in table

    # A live (or draining) executor's work is running: recovering it needs --force.
    fails(wp("executors", "recover", "pod-live", "-s", db_url), "pod-live is live", "--force")
    fails(wp("executors", "recover", "pod-drain", "-s", db_url), "draining")

    out = json.loads(ok(wp("executors", "recover", "pod-dead", "-s", db_url, "--json")))
    assert out == {"workflow_ids": ["stranded"]}
    # The live executor of the same version picks it up from its queue and finishes it.
    assert DBOS.retrieve_workflow("stranded").get_result(polling_interval_sec=0.05) == "pod-live"
    assert ran_on == ["pod-dead", "pod-live"]
    # Nothing left: recovering again requeues nothing.
    assert "Requeued 0 workflow(s)" in ok(wp("executors", "recover", "pod-dead", "-s", db_url))
