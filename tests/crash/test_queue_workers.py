"""Several real worker processes on one queue (PostgreSQL only): a global concurrency limit
declared in every process's code holds across processes, and a SIGKILLed worker restarted
with the same executor ID gets its PENDING workflows back onto the queue, so every job
completes exactly once.

The programs are tests/crash/queue_app.py (two workers and an enqueueing client); what
really ran is read from the side-effect ledger, what Waypoint believes from the tables.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest

from tests.crash.conftest import BACKENDS
from tests.crash.harness import APP_VERSION, Harness, Proc
from tests.crash.ledger import Row

pytestmark = [
    pytest.mark.crash,
    pytest.mark.skipif("postgres" not in BACKENDS, reason="PostgreSQL backend not selected"),
]

APP = Path(__file__).with_name("queue_app.py")
JOBS = 40
STEPS = 2
GLOBAL_CONCURRENCY = 2
PACE_MS = 150


def spawn(harness: Harness, mode: str, *args: str, vmid: str) -> Proc:
    """Start queue_app.py like Harness.spawn starts app.py (the harness reaps it)."""
    name = f"p{len(harness.procs) + 1}-{mode}-{vmid}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DBOS__", "CRASH_"))}
    env["DBOS__APPVERSION"] = APP_VERSION
    env["DBOS__VMID"] = vmid
    env["PYTHONUNBUFFERED"] = "1"
    out = harness.workdir / f"{name}.stdout"
    err = harness.workdir / f"{name}.stderr"
    with open(out, "wb") as fo, open(err, "wb") as fe:
        popen = subprocess.Popen(
            [sys.executable, str(APP), harness.db_url, harness.ledger_path, mode, *args],
            stdout=fo,
            stderr=fe,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=str(harness.workdir),
        )
    proc = Proc(name, popen, out, err, time.time())
    harness.procs.append(proc)
    return proc


def launched(harness: Harness, *procs: Proc) -> None:
    for p in procs:
        harness.wait_until(
            f"{p.name} to launch", lambda p=p: "launched" in harness.process_events(p.pid), 30
        )


def ends(rows: list[Row], pid: int | None = None) -> list[Row]:
    return [r for r in rows if r.phase == "end" and (pid is None or r.pid == pid)]


def open_steps(rows: list[Row], pid: int) -> list[Row]:
    """Steps ``pid`` has entered and not (yet) left."""
    done = {(r.workflow_id, r.step_index) for r in rows if r.phase == "end" and r.pid == pid}
    return [
        r
        for r in rows
        if r.phase == "start" and r.pid == pid and (r.workflow_id, r.step_index) not in done
    ]


def max_overlap(spans: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    best = current = 0
    for _, delta in events:
        current += delta
        best = max(best, current)
    return best


@pytest.mark.parametrize("crash_backend", ["postgres"], indirect=True)
def test_global_concurrency_across_workers_and_recovery_after_sigkill(harness: Harness) -> None:
    a = spawn(harness, "worker", vmid="queue-worker-a")
    b = spawn(harness, "worker", vmid="queue-worker-b")
    launched(harness, a, b)
    # Paced so that the queue often runs dry: a worker's dispatcher is woken by its own
    # completions (and then re-claims at once) but by other processes only through enqueue
    # notifications, so with a standing backlog whichever worker holds both slots keeps them.
    client = spawn(harness, "client", str(JOBS), str(PACE_MS), vmid="queue-client")
    ids = [f"job-{n:02d}" for n in range(JOBS)]

    # Phase 1: both workers take jobs from the shared queue.
    def both_busy() -> bool:
        done = ends(harness.ledger())
        pids = {r.pid for r in done}
        return a.pid in pids and b.pid in pids and len(done) >= 12

    harness.wait_until("both workers to finish steps", both_busy, 30, watch=[a, b])

    # SIGKILL worker A inside the first step of a job (the job is PENDING on A's executor).
    harness.wait_until(
        "worker A to be inside a first step",
        lambda: [r for r in open_steps(harness.ledger(), a.pid) if r.step_index == 1],
        20,
        interval=0.005,
        watch=[a],
    )
    harness.kill(a)
    kill_time = time.time()
    time.sleep(0.3)  # a COMMIT A sent just before dying may still be landing on the server
    stranded = sorted(
        wfid
        for wfid, row in harness.workflows(ids).items()
        if row["status"] == "PENDING" and row["executor_id"] == "queue-worker-a"
    )
    assert stranded, "worker A was killed inside a step, so it held a PENDING job"
    assert len(stranded) <= GLOBAL_CONCURRENCY

    # Restart A with the same executor ID: recovery puts its PENDING jobs back on the queue.
    a2 = spawn(harness, "worker", vmid="queue-worker-a")
    out = client.wait_exit(30)
    assert out["ids"] == ids
    rows = harness.wait_status(ids, {"SUCCESS", "ERROR"}, timeout=30, watch=[a2, b])
    assert {r["status"] for r in rows.values()} == {"SUCCESS"}, harness.diagnostics()
    assert set(harness.workflows()) == set(ids)  # nothing enqueued twice
    assert all(r["application_version"] == APP_VERSION for r in rows.values())
    for wfid in stranded:
        assert rows[wfid]["recovery_attempts"] == 2, (wfid, rows[wfid])

    ledger = harness.ledger()
    by_wf: dict[str, list[Row]] = defaultdict(list)
    for r in ledger:
        by_wf[r.workflow_id].append(r)
    assert set(by_wf) == set(ids)

    # Exactly once: every step of every job ended once, except a step worker A was inside
    # when it died (that one may have run again, in the restarted process or in B).
    repeated = []
    for wfid in ids:
        checkpoints = harness.steps(wfid)
        assert [c[0] for c in checkpoints] == list(range(1, STEPS + 1)), (wfid, checkpoints)
        for index in range(1, STEPS + 1):
            starts = [r for r in by_wf[wfid] if r.step_index == index and r.phase == "start"]
            finished = [r for r in by_wf[wfid] if r.step_index == index and r.phase == "end"]
            assert finished, f"{wfid} step {index} never ended"
            # The checkpoint is the token of the last execution.
            assert checkpoints[index - 1][2] == finished[-1].token, (wfid, index)
            if len(starts) == 1:
                assert len(finished) == 1, (wfid, index, by_wf[wfid])
                continue
            repeated.append((wfid, index))
            # Run again only because the first run was in flight on A at the kill.
            assert wfid in stranded, (wfid, index, by_wf[wfid])
            assert len(starts) == 2 and starts[0].pid == a.pid and starts[1].pid != a.pid
            assert starts[0].t <= kill_time
            assert [r.pid for r in finished] in ([starts[1].pid], [a.pid, starts[1].pid])
    assert 1 <= len(repeated) <= GLOBAL_CONCURRENCY, repeated
    # The global limit held across processes: spans of each job's execution in each process
    # (a span cut short by the kill ends at the kill).
    spans = []
    for wfid, wf_rows in by_wf.items():
        for pid in {r.pid for r in wf_rows}:
            mine = [r for r in wf_rows if r.pid == pid]
            start = min(r.t for r in mine)
            finished = [r for r in mine if r.phase == "end" and r.step_index == STEPS]
            end = finished[0].t if finished else kill_time
            assert pid == a.pid or finished, (wfid, pid, mine)
            spans.append((start, end))
    assert max_overlap(spans) == GLOBAL_CONCURRENCY
    # Both original workers did work, and the restarted one or B finished A's stranded jobs.
    workers = {r.pid for r in ends(ledger)}
    assert {a.pid, b.pid} <= workers
    assert workers <= {a.pid, b.pid, a2.pid}
