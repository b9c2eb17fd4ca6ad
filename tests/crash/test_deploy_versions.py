"""A version upgrade with real processes (tests/crash/version_app.py): v1 runs workflows A
(waiting in ``recv``) and B (waiting in ``DBOS.sleep``) and is SIGKILLed; v2, whose code
changes only B, runs with ``version_compatibility: "fingerprint"`` and recovers A's runs and
not B's; a v1 process (another executor ID) then drains B's. No completed step runs twice.

Two ways the v2 process finds the dead v1 work: takeover of the dead executor (heartbeats,
``dead_executor_recovery_sec``, a new executor ID: a new pod, PostgreSQL), and launch recovery
under the same executor ID (a restarted host, both backends).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Optional

import pytest

from tests.crash.conftest import BACKENDS
from tests.crash.harness import Harness, Proc
from waypoint import DBOSClient

pytestmark = [pytest.mark.crash]

APP = Path(__file__).with_name("version_app.py")
RUNS = 3
A_IDS = [f"a-{i}" for i in range(RUNS)]
B_IDS = [f"b-{i}" for i in range(RUNS)]


def spawn(
    harness: Harness,
    mode: str,
    *args: str,
    vmid: str,
    code: str,
    compat: bool = False,
    dead_sec: Optional[float] = None,
) -> Proc:
    name = f"p{len(harness.procs) + 1}-{mode}-{vmid}-{code}"
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("DBOS__", "CRASH_", "VERSION_"))
    }
    env.update(
        DBOS__APPVERSION=code,
        DBOS__VMID=vmid,
        VERSION_CODE=code,
        VERSION_B_SLEEP="20",
        PYTHONUNBUFFERED="1",
    )
    if compat:
        env["VERSION_COMPAT"] = "fingerprint"
    if dead_sec is not None:
        env["VERSION_DEAD_SEC"] = str(dead_sec)
    argv = [str(APP), harness.db_url, harness.ledger_path, mode, *args]
    return harness.start_process(name, argv, env)


def launched(harness: Harness, proc: Proc) -> None:
    harness.launched(proc)


def done_once(harness: Harness, wfid: str, step: int) -> list[str]:
    """The code versions that completed ``step`` of ``wfid`` (each completed step once)."""
    return [r.token for r in harness.ledger_rows(wfid, step=step, phase="end")]


def upgrade(harness: Harness, *, same_executor: bool) -> None:
    v1_id = "host-1" if same_executor else "pod-v1-a"
    v2_id = "host-1" if same_executor else "pod-v2-a"
    dead = None if same_executor else 1.0
    v1 = spawn(harness, "start", str(RUNS), vmid=v1_id, code="v1", dead_sec=dead)
    launched(harness, v1)
    # Checkpointed, not only run: a step whose checkpoint a SIGKILL beats runs again.
    harness.wait_until(
        "every run to wait (A in recv, B in its sleep)",
        # 'before', then the wake-up time of B's sleep or of A's recv timeout.
        lambda: all(len(harness.steps(w)) == 2 for w in A_IDS + B_IDS),
        60,
        watch=[v1],
    )
    harness.kill(v1)

    v2 = spawn(harness, "idle", vmid=v2_id, code="v2", compat=True, dead_sec=dead)
    launched(harness, v2)
    # A's code is unchanged: v2 takes A's runs. B changed: handed back, pinned to v1.
    rows = harness.wait_until(
        "v2 to take A's runs and hand B's back",
        lambda: (
            (w := harness.workflows(A_IDS + B_IDS))
            and all(
                w[a]["executor_id"] == v2_id and w[a]["application_version"] == "v2" for a in A_IDS
            )
            and all(
                w[b]["status"] == "ENQUEUED" and w[b]["application_version"] == "v1" for b in B_IDS
            )
            and w
        ),
        60,
        watch=[v2],
    )
    assert all(rows[a]["status"] == "PENDING" for a in A_IDS), rows
    client = DBOSClient(system_database_url=harness.db_url)
    try:
        for a in A_IDS:
            client.send(a, "go", "go")  # recv waits on topic "go"
        final = harness.wait_status(A_IDS, {"SUCCESS", "ERROR"}, timeout=60, watch=[v2])
        assert {r["status"] for r in final.values()} == {"SUCCESS"}
        for a in A_IDS:
            assert client.retrieve_workflow(a).get_result() == "go@v2"
        # B stays with v1 while only v2 runs.
        time.sleep(5)
        still = harness.workflows(B_IDS)
        assert all(
            r["status"] == "ENQUEUED" and r["application_version"] == "v1" for r in still.values()
        ), still
        assert all(done_once(harness, b, 2) == [] for b in B_IDS)

        v1b = spawn(harness, "idle", vmid="pod-v1-b", code="v1")
        launched(harness, v1b)
        drained = harness.wait_status(B_IDS, {"SUCCESS", "ERROR"}, timeout=60, watch=[v1b])
        assert all(
            r["status"] == "SUCCESS" and r["executor_id"] == "pod-v1-b" for r in drained.values()
        ), drained
        for b in B_IDS:
            assert client.retrieve_workflow(b).get_result() == "slept@v1"
    finally:
        client.destroy()
    # Every completed step ran once, on the code of the version that held the run.
    for a in A_IDS:
        assert (done_once(harness, a, 1), done_once(harness, a, 2)) == (["v1"], ["v2"])
    for b in B_IDS:
        assert (done_once(harness, b, 1), done_once(harness, b, 2)) == (["v1"], ["v1"])
    assert v2.alive()


@pytest.mark.skipif("postgres" not in BACKENDS, reason="PostgreSQL backend not selected")
@pytest.mark.parametrize("crash_backend", ["postgres"], indirect=True)
def test_new_pod_of_v2_takes_over_unchanged_workflows_only(harness: Harness) -> None:
    upgrade(harness, same_executor=False)


def test_restart_as_v2_recovers_unchanged_workflows_only(harness: Harness) -> None:
    upgrade(harness, same_executor=True)
