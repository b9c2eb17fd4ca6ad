"""A rolling deploy under load (PostgreSQL, real processes): three pods run a steady load of
direct, queued, sleeping and ``recv``-waiting workflows; each old pod in turn gets SIGTERM (or
SIGKILL) and a new pod with a new executor ID starts. Afterwards every workflow completes,
none is left PENDING on a pod that is gone, and the side-effect ledger shows that no step ran
again after it had completed.

The pod program is tests/crash/deploy_app.py. The test measures, for each workflow a pod owned
when it was stopped, the time until a peer owned it (or it finished elsewhere): the hand-back
latency after SIGTERM, the takeover latency after SIGKILL. The figures are printed and
written to ``deploy-figures.json`` in the test's directory; nothing is asserted on them
(speed lives in benchmarks/), only that every workflow is handed over in the end.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.crash.conftest import BACKENDS
from tests.crash.harness import APP_VERSION, Harness, Proc
from waypoint import DBOSClient

pytestmark = [
    pytest.mark.crash,
    pytest.mark.skipif("postgres" not in BACKENDS, reason="PostgreSQL backend not selected"),
    pytest.mark.parametrize("crash_backend", ["postgres"], indirect=True),
    pytest.mark.timeout(900),  # three pods replaced one by one under load, on a busy machine
]

APP = Path(__file__).with_name("deploy_app.py")
GRACE_SEC = 2.0  # shutdown_grace_sec of every pod
DEAD_SEC = 3.0  # dead_executor_recovery_sec of every pod
FINISHED = {"SUCCESS", "ERROR", "CANCELLED", "MAX_RECOVERY_ATTEMPTS_EXCEEDED"}


def spawn_pod(harness: Harness, vmid: str, stop_file: Path) -> Proc:
    """Start a pod like Harness.spawn starts app.py (the harness reaps it)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DBOS__", "CRASH_"))}
    env.update(
        {
            "DBOS__APPVERSION": APP_VERSION,
            "DBOS__VMID": vmid,
            "DEPLOY_GRACE_SEC": str(GRACE_SEC),
            "DEPLOY_DEAD_SEC": str(DEAD_SEC),
            "PYTHONUNBUFFERED": "1",
        }
    )
    argv = [str(APP), harness.db_url, harness.ledger_path, str(stop_file)]
    return harness.start_process(vmid, argv, env)


def launched(harness: Harness, proc: Proc) -> None:
    harness.launched(proc)


def owners(harness: Harness) -> dict[str, tuple[str, str]]:
    """workflow ID -> (status, executor ID)."""
    return {k: (v["status"], v["executor_id"]) for k, v in harness.workflows().items()}


class Load:
    """The outside world: enqueues queued workflows and answers recv waiters, from a client."""

    def __init__(self, harness: Harness, stop_file: Path) -> None:
        self.harness = harness
        self.stop_file = stop_file
        self.client = DBOSClient(system_database_url=harness.db_url)
        self.answered: set[str] = set()
        self.enqueued = 0
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, name="load", daemon=True)

    def _run(self) -> None:
        try:
            while not self.stop_file.exists():
                self.client.enqueue(
                    {
                        "queue_name": "deploy-q",
                        "workflow_name": "queued_wf",
                        "workflow_id": f"queued-{self.enqueued}",
                    }
                )
                self.enqueued += 1
                self.answer(older_than_sec=4.0)  # some recv waiters are still waiting at a stop
                time.sleep(0.25)
        except BaseException as exc:
            self.errors.append(exc)

    def answer(self, older_than_sec: float = 0.0) -> None:
        now_ms = time.time() * 1000
        rows = self.harness._query(
            "SELECT workflow_uuid, created_at FROM {workflow_status} "
            "WHERE workflow_uuid LIKE 'recv-%%'"
        )
        for wfid, created in rows:
            if wfid not in self.answered and now_ms - created >= older_than_sec * 1000:
                self.client.send(wfid, f"hello {wfid}", "go")
                self.answered.add(wfid)


def completed_steps_ran_once(harness: Harness) -> list[str]:
    """Steps that ran again after the execution whose result was checkpointed had ended."""
    problems: list[str] = []
    rows = harness._query(
        "SELECT workflow_uuid, function_id, output, serialization FROM {operation_outputs} "
        "WHERE function_name LIKE '%%work'"
    )
    ledger = harness.ledger()
    for wfid, function_id, output, serialization in rows:
        from tests.crash.harness import decode

        token = decode(output, serialization)
        mine = [r for r in ledger if r.workflow_id == wfid and r.phase in ("start", "end")]
        end = [r for r in mine if r.phase == "end" and r.token == token]
        if len(end) != 1:
            problems.append(f"{wfid} function {function_id}: no ledger end for its checkpoint")
            continue
        # The step index is the n-th work() call, numbered by the workflow itself. A body
        # started before that end may finish after it (a run cut off at the end of a grace
        # period, whose checkpoint was refused); none may start after it.
        index = end[0].step_index
        again = [
            r for r in mine if r.step_index == index and r.phase == "start" and r.seq > end[0].seq
        ]
        if again:
            problems.append(f"{wfid} step {index} ran again after completing: {again}")
    return problems


def rolling_deploy(harness: Harness, sig: signal.Signals) -> dict[str, Any]:
    stop_file = harness.workdir / "stop-load"
    old = [spawn_pod(harness, f"old-{i}", stop_file) for i in (1, 2, 3)]
    for pod in old:
        launched(harness, pod)
    load = Load(harness, stop_file)
    load.thread.start()
    time.sleep(4)  # the load builds up: steps running, sleepers and waiters parked

    # Seconds from the stop to a peer owning the workflow (or finishing it), by kind.
    handed: dict[str, list[float]] = {}
    finished_there = 0  # finished by the stopped pod itself (in its grace period)
    new: list[Proc] = []
    for i, pod in enumerate(old, start=1):
        in_flight = {
            w for w, (st, ex) in owners(harness).items() if st == "PENDING" and ex == pod.name
        }
        stopped_at = time.monotonic()
        if sig == signal.SIGTERM:
            os.kill(pod.pid, signal.SIGTERM)
        else:
            pod.sigkill()
        new.append(spawn_pod(harness, f"new-{i}", stop_file))
        waiting = set(in_flight)
        deadline = stopped_at + 120
        while waiting and time.monotonic() < deadline:
            now = owners(harness)
            for wfid in list(waiting):
                status, executor = now[wfid]
                if (status == "PENDING" and executor == pod.name) or status == "ENQUEUED":
                    continue
                if status in FINISHED and executor == pod.name:
                    finished_there += 1
                else:
                    kind = wfid.split("-", 1)[0]
                    handed.setdefault(kind, []).append(time.monotonic() - stopped_at)
                waiting.discard(wfid)
            time.sleep(0.05)
        assert not waiting, f"never handed over from {pod.name}: {sorted(waiting)}"
        if sig == signal.SIGTERM:
            rc = pod.popen.wait(60)  # drained, handed back, then ended by the signal
            assert rc == -signal.SIGTERM, f"{pod.name} exited with {rc}:\n{pod.diagnostics()}"
        launched(harness, new[-1])
        time.sleep(1.5)  # the load goes on, now on the new pod too

    stop_file.touch()
    load.thread.join(30)
    assert not load.errors, load.errors
    gone = {p.name for p in old}

    def nothing_on_gone_pods() -> bool:
        return not any(st not in FINISHED and ex in gone for st, ex in owners(harness).values())

    harness.wait_until("no workflow PENDING on a gone pod", nothing_on_gone_pods, 60, 0.1, new)
    load.answer()
    everything = owners(harness)
    harness.wait_status(list(everything), {"SUCCESS"}, timeout=240, watch=new)
    load.answer()  # waiters started in the last moments
    final = owners(harness)
    assert all(st == "SUCCESS" for st, _ in final.values()), final
    assert not (problems := completed_steps_ran_once(harness)), problems
    kinds = {k: sum(w.startswith(k) for w in final) for k in ("direct", "queued", "sleep", "recv")}
    assert all(kinds.values()), kinds
    every = [t for times in handed.values() for t in times]
    figures = {
        "signal": sig.name,
        "workflows": kinds,
        "handed_over": len(every),
        "finished_by_the_stopped_pod": finished_there,
        "latency_sec": {
            kind: {
                "n": len(times),
                "median": round(statistics.median(times), 2),
                "max": round(max(times), 2),
            }
            for kind, times in sorted({**handed, "all": every}.items())
            if times
        },
        "grace_sec": GRACE_SEC,
        "dead_executor_recovery_sec": DEAD_SEC,
    }
    (harness.workdir / "deploy-figures.json").write_text(json.dumps(figures))
    print("rolling deploy:", json.dumps(figures))
    return figures


def test_rolling_deploy_with_sigterm_hands_back(harness: Harness) -> None:
    figures = rolling_deploy(harness, signal.SIGTERM)
    assert figures["handed_over"] > 0


def test_rolling_deploy_with_sigkill_takes_over(harness: Harness) -> None:
    figures = rolling_deploy(harness, signal.SIGKILL)
    assert figures["handed_over"] > 0
