"""Suspended workflows across a real SIGKILL (issue 11), both backends.

A worker with an 8-thread pool starts 1,200 workflows that wait (a durable sleep, a recv, or
a child's result, the children waiting in recv too): 1,600 waits at once, only possible
because each wait gave its thread back. The worker is SIGKILLed while they are all
suspended. Half of the messages are sent before a new worker launches, half after it has
recovered everything (so recovered workflows suspend again and are woken). Every workflow
must finish with the right value, and the side-effect ledger must show each step body ran
exactly once: nothing resumed twice, nothing lost. The same again with async workflows, which
park as plain data too (their tasks ended, re-run as new tasks when they wake).
"""

from __future__ import annotations

import collections
import os
import time
from pathlib import Path

import pytest

from tests.crash.harness import APP_VERSION, REPO, Harness, Proc
from waypoint import DBOSClient

pytestmark = pytest.mark.crash

APP = Path(__file__).with_name("suspend_app.py")
N = 1200
SLEEP_FOR = 60.0  # the sleepers' wake-up, from the start: well after the kill


def spawn(h: Harness, mode: str, wake_at: float, kind: str) -> Proc:
    name = f"p{len(h.procs) + 1}-{mode}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DBOS__")}
    env.update(DBOS__APPVERSION=APP_VERSION, PYTHONUNBUFFERED="1", PYTHONPATH=str(REPO))
    args = [h.db_url, h.ledger_path, mode, str(N), repr(wake_at), kind]
    return h.start_process(name, [str(APP), *args], env)


def receivers() -> list[str]:
    """The workflows that wait in recv: the recv waiters and the children."""
    return [f"w-{i}" if i % 3 == 1 else f"w-{i}-child" for i in range(N) if i % 3 != 0]


def wait_checkpoints(h: Harness) -> int:
    """How many waits have checkpointed their deadline (the sleeps, the recv timeouts)."""
    rows = h._query("SELECT count(*) FROM {operation_outputs} WHERE function_name = 'DBOS.sleep'")
    return int(rows[0][0])


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_thousands_suspended_all_resume_once(harness: Harness, kind: str) -> None:
    h = harness
    wake_at = time.time() + SLEEP_FOR
    first = spawn(h, "first", wake_at, kind)
    everyone = N + N // 3  # the children too
    h.wait_until(
        "every workflow to run its first step",
        lambda: len({r.workflow_id for r in h.ledger_rows(step=0)}) == everyone or None,
        timeout=SLEEP_FOR - 15,
        interval=0.5,
        watch=[first],
    )
    h.wait_until(
        "every wait to be under way",
        lambda: wait_checkpoints(h) == N // 3 + len(receivers()) or None,
        timeout=10,
        interval=0.2,
        watch=[first],
    )
    assert h.ledger_rows(step=1) == [], "a wait ended before the kill (machine too slow?)"
    assert time.time() < wake_at - 5, "the workers took too long to start everything"
    h.kill(first)

    targets = receivers()
    half = len(targets) // 2
    c = DBOSClient(system_database_url=h.db_url)
    try:
        for wid in targets[:half]:
            c.send(wid, f"m-{wid}", "go")
        second = spawn(h, "recover", wake_at, kind)
        h.wait_until(
            "the new worker to launch (and recover)",
            lambda: "launched" in h.process_events(second.pid) or None,
            timeout=60,
            interval=0.2,
            watch=[second],
        )
        for wid in targets[half:]:
            c.send(wid, f"m-{wid}", "go")
    finally:
        c.destroy()
    report = second.wait_exit(SLEEP_FOR + 120)

    results = report["results"]
    for i in range(N):
        wid = f"w-{i}"
        want = {0: "slept", 1: f"m-{wid}", 2: f"child:m-{wid}-child"}[i % 3]
        assert results[wid] == want, (wid, results[wid])
    starts = collections.Counter((r.workflow_id, r.step_index) for r in h.ledger())
    twice = [key for key, n in starts.items() if n != 1]
    assert twice == [], f"steps that ran more than once: {twice[:10]}"
    assert len(starts) == 2 * everyone  # before and after, once each, for every workflow
