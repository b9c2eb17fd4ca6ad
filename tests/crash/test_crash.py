"""Crash tests: real worker processes (tests/crash/app.py), really SIGKILLed, then restarted.

Every scenario runs on a fresh SQLite file and a fresh PostgreSQL database. What "really
happened" is read from the side-effect ledger (a separate SQLite file the step bodies append
to on entry and exit); what Waypoint believes is read straight from the system tables.
"""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from tests.crash.harness import APP_VERSION, Harness
from tests.crash.ledger import Row

pytestmark = pytest.mark.crash

TERMINAL = {"SUCCESS", "ERROR", "CANCELLED", "MAX_RECOVERY_ATTEMPTS_EXCEEDED"}


def seed(wfid: str) -> str:
    return f"seed:{wfid}"


def phases(rows: list[Row], step: int) -> Counter[str]:
    return Counter(r.phase for r in rows if r.step_index == step)


def assert_chain(rows: list[Row], wfid: str, result: list[str]) -> None:
    """Nonce chaining: every entry of step i got exactly the token step i-1 checkpointed
    (the token in the workflow's result), and that token was produced by a real execution."""
    prev = seed(wfid)
    for i, token in enumerate(result, start=1):
        starts = [r for r in rows if r.step_index == i and r.phase == "start"]
        ends = [r for r in rows if r.step_index == i and r.phase == "end"]
        assert starts, f"{wfid} step {i} never started"
        assert all(r.token == prev for r in starts), (
            f"{wfid} step {i} was entered with {[r.token for r in starts]}, "
            f"but step {i - 1} checkpointed {prev}"
        )
        assert token in [r.token for r in ends], f"{wfid} step {i}: {token} was never produced"
        # The checkpointed output is the one of the LAST execution: an earlier execution whose
        # output was checkpointed must never have been followed by another execution.
        assert ends[-1].token == token, (
            f"{wfid} step {i} checkpointed {token} but ran again afterwards ({ends[-1]})"
        )
        prev = token


# -- 1. SIGKILL inside a step -------------------------------------------------------------------


@pytest.mark.parametrize("workflow", ["chain", "achain"], ids=["sync", "async"])
def test_sigkill_inside_step(harness: Harness, workflow: str) -> None:
    wfid = f"five-steps-{workflow}-{harness.backend}"
    p1 = harness.spawn("start", workflow, "[5]", wfid, block_step=3)
    harness.wait_until(
        "step 3 to start",
        lambda: harness.ledger_rows(wfid, step=3, phase="start"),
        watch=[p1],
    )
    harness.kill(p1)

    before = harness.ledger(wfid)
    assert harness.status(wfid) == "PENDING"
    assert [(r.step_index, r.phase) for r in before] == [
        (1, "start"),
        (1, "end"),
        (2, "start"),
        (2, "end"),
        (3, "start"),
    ]
    # Exactly the two finished steps are checkpointed, with the tokens they produced.
    checkpoints = harness.steps(wfid)
    assert [c[2] for c in checkpoints] == [r.token for r in before if r.phase == "end"]

    p2 = harness.spawn("wait", wfid)
    rows = harness.wait_status([wfid], TERMINAL)
    assert rows[wfid]["status"] == "SUCCESS", harness.diagnostics()
    assert rows[wfid]["recovery_attempts"] == 2  # one start, one recovery
    assert rows[wfid]["executor_id"] == "crash-executor"
    assert rows[wfid]["application_version"] == APP_VERSION
    out = p2.wait_exit()
    result = out["results"][wfid]["ok"]
    assert len(result) == 5

    after = harness.ledger(wfid)
    for step in (1, 2):
        assert phases(after, step) == Counter(start=1, end=1), after
        assert {r.pid for r in after if r.step_index == step} == {p1.pid}
    assert phases(after, 3) == Counter(start=2, end=1), after
    assert [r.pid for r in after if r.step_index == 3 and r.phase == "start"] == [p1.pid, p2.pid]
    for step in (4, 5):
        assert phases(after, step) == Counter(start=1, end=1), after
        assert {r.pid for r in after if r.step_index == step} == {p2.pid}
    assert_chain(after, wfid, result)
    assert [r.token for r in after if r.phase == "end"] == result
    assert len(harness.steps(wfid)) == 5


# -- 2. SIGKILL inside a durable sleep ----------------------------------------------------------


def test_sigkill_inside_durable_sleep(harness: Harness) -> None:
    wfid = f"sleepy-{harness.backend}"
    nap = 10.0
    p1 = harness.spawn("start", "sleepy", json.dumps([nap]), wfid)
    (step1_end,) = harness.wait_until(
        "step 1 to end", lambda: harness.ledger_rows(wfid, step=1, phase="end"), watch=[p1]
    )
    (step1_start,) = harness.ledger_rows(wfid, step=1, phase="start")

    # The sleep's wake-up time is checkpointed right after step 1; wait for it to be durable.
    def sleep_checkpoint() -> list[tuple[int, str, object]]:
        return [s for s in harness.steps(wfid) if s[1] == "DBOS.sleep"]

    ((_, _, wake),) = harness.wait_until("the sleep checkpoint", sleep_checkpoint, watch=[p1])
    assert isinstance(wake, float)
    assert nap - 0.5 <= wake - step1_end.t <= nap + 0.5

    # Kill about 1 s into the sleep, restart about 4 s later: a fresh nap could then end no
    # sooner than 4 s after the wake-up time, a margin no slow start of the new process eats.
    time.sleep(max(0.0, step1_end.t + 1.0 - time.time()))
    assert not harness.ledger_rows(wfid, step=2)
    harness.kill(p1)
    time.sleep(4.0)
    p2 = harness.spawn("wait", wfid)
    assert p2.spawned_at < wake - 1.0, "the restart must happen well before the wake-up time"

    harness.wait_status([wfid], TERMINAL, timeout=nap + 10)
    out = p2.wait_exit()
    assert harness.status(wfid) == "SUCCESS"
    result = out["results"][wfid]["ok"]

    rows = harness.ledger(wfid)
    assert phases(rows, 1) == Counter(start=1, end=1)
    assert phases(rows, 2) == Counter(start=1, end=1)
    assert {r.pid for r in rows if r.step_index == 1} == {p1.pid}
    assert {r.pid for r in rows if r.step_index == 2} == {p2.pid}
    assert_chain(rows, wfid, result)
    (step2_start,) = harness.ledger_rows(wfid, step=2, phase="start")
    assert len(harness.ledger_rows(wfid, step=2, phase="end")) == 1

    # The full nap elapsed between the original start and step 2 ...
    assert step2_start.t >= wake - 0.01, (step2_start.t, wake)
    assert step2_start.t - step1_start.t >= nap
    # ... but the restarted process only slept the remainder, not a fresh nap.
    # (A fresh nap starts after the process does, so it cannot end before spawned_at + nap.)
    remainder = wake - p2.spawned_at
    assert step2_start.t < p2.spawned_at + nap, (
        f"restarted process waited {step2_start.t - p2.spawned_at:.2f}s, "
        f"remainder was {remainder:.2f}s"
    )


# -- 3. SIGKILL between steps of many concurrent workflows --------------------------------------


def test_sigkill_many_concurrent_workflows(harness: Harness) -> None:
    n = 20
    ids = [f"many-{harness.backend}-{i:02d}" for i in range(n)]
    # Random delays inside step bodies, after a body's side effect but before its checkpoint,
    # and between steps: the kill catches workflows in every one of those places.
    p1 = harness.spawn(
        "start",
        "chain",
        "[3]",
        *ids,
        step_delay="0.02:0.3",
        post_delay="0:0.15",
        gap_delay="0:0.15",
    )

    def progress() -> bool:
        rows = harness.ledger()
        step1 = {r.workflow_id for r in rows if r.step_index == 1 and r.phase == "end"}
        step3 = {r.workflow_id for r in rows if r.step_index == 3 and r.phase == "end"}
        # Every start acknowledged too (sharded, a start is two commits, and a start the
        # kill interrupts leaves no workflow: the caller was never told it started).
        return len(step1) >= n // 2 and len(step3) >= 1 and len(harness.workflows(ids)) == n

    harness.wait_until("half the workflows to finish step 1", progress, watch=[p1])
    harness.kill(p1)

    # The state at the kill, frozen: what the killed process did, and what it checkpointed.
    before = harness.ledger()
    assert all(r.pid == p1.pid for r in before)
    checkpointed = {wfid: [c[2] for c in harness.steps(wfid)] for wfid in ids}
    assert sum(len(c) == 3 for c in checkpointed.values()) < n, "the kill came too late"
    statuses = harness.workflows(ids)
    for wfid in ids:
        done = len(checkpointed[wfid]) == 3
        assert statuses[wfid]["status"] in (("SUCCESS", "PENDING") if done else ("PENDING",))

    p2 = harness.spawn("wait", *ids)
    final = harness.wait_status(ids, TERMINAL, timeout=30)
    assert {s["status"] for s in final.values()} == {"SUCCESS"}, final
    out = p2.wait_exit()

    after = harness.ledger()
    assert {r.pid for r in after} <= {p1.pid, p2.pid}
    by_wf: dict[str, list[Row]] = defaultdict(list)
    for r in after:
        by_wf[r.workflow_id].append(r)

    kinds: Counter[str] = Counter()
    for wfid in ids:
        rows = by_wf[wfid]
        result = out["results"][wfid]["ok"]
        assert len(result) == 3
        assert [c[2] for c in harness.steps(wfid)] == result
        # No process ever entered or left a step twice.
        per_proc = Counter((r.step_index, r.phase, r.pid) for r in rows)
        assert max(per_proc.values()) == 1, per_proc
        saved = checkpointed[wfid]
        for step in (1, 2, 3):
            first = {r.phase: r.token for r in rows if r.step_index == step and r.pid == p1.pid}
            second = {r.phase: r.token for r in rows if r.step_index == step and r.pid == p2.pid}
            if step <= len(saved):
                # Checkpointed before the kill: never executed again, and its recorded output
                # is the token the killed process produced.
                assert set(first) == {"start", "end"} and not second, (wfid, step, rows)
                assert saved[step - 1] == first["end"] == result[step - 1]
                continue
            # Not checkpointed: executed exactly once more, and that execution's output is
            # the one the workflow went on with.
            assert set(second) == {"start", "end"}, (wfid, step, rows)
            assert second["end"] == result[step - 1]
            if step == len(saved) + 1:
                # The step the killed process was at (if it had got there).
                kinds[
                    {
                        frozenset(): "between steps" if step > 1 else "not started",
                        frozenset({"start"}): "inside a step body",
                        frozenset({"start", "end"}): "after a body, before its checkpoint",
                    }[frozenset(first)]
                ] += 1
            else:
                assert not first, (wfid, step, rows)
        if len(saved) == 3:
            kinds["all steps checkpointed"] += 1
        assert_chain(rows, wfid, result)
    # At-most-once per process, exactly-once for the checkpointed effects, and the kill
    # really interrupted workflows mid-flight.
    assert kinds["inside a step body"] >= 1, kinds
    print(f"state at the kill: {dict(kinds)}")


# -- 4. max_recovery_attempts -------------------------------------------------------------------


def test_max_recovery_attempts(harness: Harness) -> None:
    wfid = f"poison-{harness.backend}"
    max_recovery_attempts = 2  # chain_limited's decorator

    # Every process blocks inside step 1 and is SIGKILLed there: a poison workflow.
    p1 = harness.spawn("start", "chain_limited", "[1]", wfid, block_step=1)
    executions = 0
    procs = [p1]
    while True:
        executions += 1
        proc = procs[-1]
        harness.wait_until(
            f"execution {executions} to enter step 1",
            lambda: len(harness.ledger_rows(wfid, step=1, phase="start")) >= executions,
            watch=[proc],
        )
        harness.kill(proc)
        row = harness.workflows([wfid])[wfid]
        assert row["status"] == "PENDING"
        assert row["recovery_attempts"] == executions
        if executions == max_recovery_attempts + 1:
            break
        procs.append(harness.spawn("wait", wfid, block_step=1))

    # The next recovery would make recovery_attempts > max_recovery_attempts + 1.
    p_dead = harness.spawn("wait", wfid, block_step=1)
    harness.wait_status([wfid], TERMINAL)
    out = p_dead.wait_exit()
    assert harness.status(wfid) == "MAX_RECOVERY_ATTEMPTS_EXCEEDED"
    assert out["results"][wfid]["error"] == "DBOSAwaitedWorkflowMaxRecoveryAttemptsExceeded"

    # A fresh process neither runs it again nor reports anything but dead-lettering.
    p_fresh = harness.spawn("wait", wfid, block_step=1)
    out = p_fresh.wait_exit()
    err = out["results"][wfid]
    assert err["error"] == "DBOSAwaitedWorkflowMaxRecoveryAttemptsExceeded", err
    assert err["module"] == "waypoint.error"
    assert harness.status(wfid) == "MAX_RECOVERY_ATTEMPTS_EXCEEDED"

    starts = harness.ledger_rows(wfid, step=1, phase="start")
    assert len(starts) == max_recovery_attempts + 1
    assert [r.pid for r in starts] == [p.pid for p in procs]
    assert not harness.ledger_rows(wfid, phase="end")
    assert not harness.ledger_rows(wfid, pid=p_dead.pid)
    assert not harness.ledger_rows(wfid, pid=p_fresh.pid)


# -- 5. Executor isolation ----------------------------------------------------------------------


@pytest.mark.parametrize("crash_backend", ["postgres"])
def test_executor_isolation(harness: Harness) -> None:
    """Two executors on one PostgreSQL database: recovery only takes one's own workflows."""
    wf_a, wf_b = "isolation-A", "isolation-B"
    a1 = harness.spawn("start", "chain", "[2]", wf_a, block_step=1, executor_id=None, vmid="exec-A")
    b1 = harness.spawn("start", "chain", "[2]", wf_b, block_step=1, executor_id=None, vmid="exec-B")
    harness.wait_until(
        "both workflows to enter step 1",
        lambda: len(harness.ledger_rows(step=1, phase="start")) == 2,
        watch=[a1, b1],
    )
    harness.kill(a1, b1)
    rows = harness.workflows([wf_a, wf_b])
    assert rows[wf_a]["executor_id"] == "exec-A" and rows[wf_b]["executor_id"] == "exec-B"
    assert rows[wf_a]["status"] == rows[wf_b]["status"] == "PENDING"
    assert rows[wf_a]["application_version"] == rows[wf_b]["application_version"] == APP_VERSION

    # Restart only A; it stays up a moment after A's workflow ends, so a wrongful recovery of
    # B's workflow would have time to show.
    a2 = harness.spawn("wait", wf_a, executor_id=None, vmid="exec-A", linger=0.5)
    a2.wait_exit()
    rows = harness.workflows([wf_a, wf_b])
    assert rows[wf_a]["status"] == "SUCCESS"
    assert rows[wf_b]["status"] == "PENDING"
    assert rows[wf_b]["executor_id"] == "exec-B"
    assert rows[wf_b]["recovery_attempts"] == 1
    assert not harness.ledger_rows(wf_b, pid=a2.pid)
    assert phases(harness.ledger(wf_a), 1) == Counter(start=2, end=1)
    assert phases(harness.ledger(wf_b), 1) == Counter(start=1)

    b2 = harness.spawn("wait", wf_b, executor_id=None, vmid="exec-B")
    out = b2.wait_exit()
    rows = harness.workflows([wf_a, wf_b])
    assert rows[wf_b]["status"] == "SUCCESS"
    assert rows[wf_b]["executor_id"] == "exec-B"
    for wfid, restarted in ((wf_a, a2), (wf_b, b2)):
        ledger_rows = harness.ledger(wfid)
        assert {r.pid for r in ledger_rows if r.step_index == 2} == {restarted.pid}
        assert phases(ledger_rows, 2) == Counter(start=1, end=1)
    assert_chain(harness.ledger(wf_b), wf_b, out["results"][wf_b]["ok"])


# -- 6. The old process was not dead after all ---------------------------------------------------


def test_takeover_of_a_live_process(harness: Harness, tmp_path: Path) -> None:
    """A process that looked dead (here: waiting outside any step) is replaced by a restart
    with the same executor ID, which recovers and finishes its workflow. The old process must
    then lose every write (fencing) and adopt the outcome the new one recorded."""
    wfid = f"takeover-{harness.backend}"
    gate = tmp_path / "gate"
    old = harness.spawn("start", "gated", "[2]", wfid, gate_file=gate)
    harness.wait_until(
        "the old process to wait at the gate",
        lambda: f"gate:{wfid}" in harness.process_events(old.pid) and len(harness.steps(wfid)) == 2,
        watch=[old],
    )
    new = harness.spawn("wait", wfid, gate_file=gate)
    # The restart recovers the PENDING workflow of its executor ID, replays both steps and
    # waits at the gate too. (Its recovery flips the row to ENQUEUED for a few milliseconds;
    # in the rare case the OLD process's dispatcher claims it in that window, the old process
    # keeps it and there is no takeover to test.)
    try:
        harness.wait_until(
            "the new process to take over",
            lambda: f"gate:{wfid}" in harness.process_events(new.pid),
            timeout=10,
            watch=[old, new],
        )
    except AssertionError:
        if harness.workflows([wfid])[wfid]["recovery_attempts"] == 2:
            pytest.skip("the old process re-claimed the workflow itself; no takeover happened")
        raise
    assert harness.workflows([wfid])[wfid]["recovery_attempts"] == 2
    gate.touch()
    rows = harness.wait_status([wfid], TERMINAL)
    assert rows[wfid]["status"] == "SUCCESS"
    new_out = new.wait_exit()
    # Both processes report the single recorded outcome; no step ran twice.
    old_out = old.wait_exit(timeout=5)
    assert old_out["results"][wfid] == new_out["results"][wfid]
    ledger_rows = harness.ledger(wfid)
    assert {r.pid for r in ledger_rows} == {old.pid}
    assert_chain(ledger_rows, wfid, new_out["results"][wfid]["ok"])
