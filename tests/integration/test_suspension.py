"""Waiting workflows give their thread back (core/suspend.py), both backends.

Each test runs far more waiting workflows than the pool has threads: without suspension only
``POOL`` of them could ever reach their wait. A side-effect ledger (a list appended to by
the steps) shows that no step runs twice when a suspended workflow is re-run from its
checkpoints, and the values each wait returns are checked.
"""

from __future__ import annotations

import collections
import gc
import threading
import time
from collections.abc import Callable
from typing import Any, Optional

import pytest

from waypoint import DBOS, SetWorkflowID
from waypoint.core.observe import ObservedRun, Observer, Watch
from waypoint.core.runtime import get_runtime
from waypoint.error import DBOSAwaitedWorkflowCancelledError

POOL = 2
MANY = 8


@pytest.fixture
def config(db_url: str) -> dict[str, Any]:
    return {"name": "waypoint-test", "system_database_url": db_url, "max_executor_threads": POOL}


def wait_for(what: str, predicate: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def all_threads_free() -> bool:
    """No worker thread of the pool runs anything (and nothing waits for one)."""
    return get_runtime().pool.free_slots() == POOL


class Ledger:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.entries: list[str] = []

    def add(self, tag: str) -> str:
        with self.lock:
            self.entries.append(tag)
        return tag

    def count(self, prefix: str) -> int:
        with self.lock:
            return sum(1 for e in self.entries if e.startswith(prefix))

    def twice(self) -> list[str]:
        with self.lock:
            return [k for k, n in collections.Counter(self.entries).items() if n > 1]


class WaitEvents(Observer):
    """Records the events of every durable wait (``suspended`` among them) and its end."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, str]] = []  # (workflow, wait, event or end status)

    def wait(self, run: ObservedRun, name: str, function_id: int) -> Optional[Watch]:
        events, wid = self.events, run.workflow_id

        class W(Watch):
            def event(self, event: str, attributes: dict[str, Any]) -> None:
                events.append((wid, name, event))

            def end(self, status: str, error: Optional[BaseException]) -> None:
                events.append((wid, name, status))

        return W()

    def of(self, workflow_id: str) -> list[str]:
        return [e for w, _, e in self.events if w == workflow_id]


def test_recv_suspends_and_resumes_with_each_message(dbos: type[DBOS]) -> None:
    ledger = Ledger()

    @DBOS.step()
    def mark(tag: str) -> str:
        return ledger.add(tag)

    @DBOS.workflow()
    def waiter(i: int) -> list[Any]:
        mark(f"before-{i}")
        got = [DBOS.recv("t", timeout_seconds=300), DBOS.recv("t", timeout_seconds=300)]
        mark(f"after-{i}")
        return got

    DBOS.launch()
    handles = []
    for i in range(MANY):
        with SetWorkflowID(f"recv-{i}"):
            handles.append(DBOS.start_workflow(waiter, i))
    wait_for("every workflow to reach its recv", lambda: ledger.count("before-") == MANY)
    wait_for("the pool's threads to be free", all_threads_free)
    for i in range(MANY):
        DBOS.send(f"recv-{i}", f"first-{i}", "t")
    for i in range(MANY):
        DBOS.send(f"recv-{i}", f"second-{i}", "t")
    assert [h.get_result() for h in handles] == [[f"first-{i}", f"second-{i}"] for i in range(MANY)]
    assert ledger.count("after-") == MANY
    assert ledger.twice() == []
    wait_for("the pool's threads to be free", all_threads_free)


def test_sleep_suspends_and_resumes_after_its_wake_time(dbos: type[DBOS]) -> None:
    ledger = Ledger()

    @DBOS.step()
    def mark(tag: str) -> str:
        return ledger.add(tag)

    @DBOS.workflow()
    def sleeper(i: int) -> float:
        mark(f"before-{i}")
        DBOS.sleep(3)
        mark(f"after-{i}")
        return time.time()

    DBOS.launch()
    handles = []
    for i in range(MANY):
        with SetWorkflowID(f"sleep-{i}"):
            handles.append(DBOS.start_workflow(sleeper, i))
    # Holding a thread each, only POOL of them could have started before the first woke.
    wait_for("every workflow to reach its sleep", lambda: ledger.count("before-") == MANY)
    assert ledger.count("after-") == 0
    wait_for("the pool's threads to be free", all_threads_free)
    ended = [h.get_result() for h in handles]
    for i, at in enumerate(ended):
        wake = DBOS.list_workflow_steps(f"sleep-{i}")[1]["output"]
        assert at >= wake  # resumed no earlier than the recorded wake-up time
    assert ledger.count("after-") == MANY
    assert ledger.twice() == []


def test_get_event_suspends_until_the_event_is_set(dbos: type[DBOS]) -> None:
    ledger = Ledger()

    @DBOS.step()
    def mark(tag: str) -> str:
        return ledger.add(tag)

    @DBOS.workflow()
    def reader(i: int) -> Any:
        mark(f"before-{i}")
        value = DBOS.get_event(f"setter-{i}", "ready", timeout_seconds=300)
        mark(f"after-{i}")
        return value

    @DBOS.workflow()
    def setter(i: int) -> None:
        DBOS.set_event("ready", f"value-{i}")

    DBOS.launch()
    handles = [DBOS.start_workflow(reader, i) for i in range(MANY)]
    wait_for("every reader to wait", lambda: ledger.count("before-") == MANY)
    wait_for("the pool's threads to be free", all_threads_free)
    for i in range(MANY):
        with SetWorkflowID(f"setter-{i}"):
            DBOS.start_workflow(setter, i).get_result()
    assert [h.get_result() for h in handles] == [f"value-{i}" for i in range(MANY)]
    assert ledger.twice() == []


def test_get_event_times_out_after_suspending(dbos: type[DBOS], config: dict[str, Any]) -> None:
    @DBOS.workflow()
    def reader() -> Any:
        return DBOS.get_event("nobody", "never", timeout_seconds=1.5)

    events = WaitEvents()
    DBOS.launch()
    get_runtime().observers.add(events)
    runtime = get_runtime()
    runtime.config.wait_suspend_after_sec = 0
    with SetWorkflowID("timing-out"):
        handle = DBOS.start_workflow(reader)
    assert handle.get_result() is None
    # Suspended (again at each safety re-read without notifications), then one end.
    seen = events.of("timing-out")
    assert seen[0] == "suspended" and seen[-1] == "SUCCESS"
    assert set(seen[:-1]) == {"suspended"}


def test_parent_suspends_on_its_childs_result(dbos: type[DBOS]) -> None:
    ledger = Ledger()

    @DBOS.step()
    def mark(tag: str) -> str:
        return ledger.add(tag)

    @DBOS.workflow()
    def child(i: int) -> str:
        mark(f"child-before-{i}")
        got = DBOS.recv("go", timeout_seconds=300)
        mark(f"child-after-{i}")
        return f"{got}-done"

    @DBOS.workflow()
    def parent(i: int) -> str:
        mark(f"parent-before-{i}")
        with SetWorkflowID(f"child-{i}"):
            handle = DBOS.start_workflow(child, i)
        result = handle.get_result()
        mark(f"parent-after-{i}")
        return f"parent got {result}"

    DBOS.launch()
    handles = [DBOS.start_workflow(parent, i) for i in range(MANY)]
    # 2 * MANY workflows wait at once on POOL threads.
    wait_for("every child to wait", lambda: ledger.count("child-before-") == MANY)
    wait_for("the pool's threads to be free", all_threads_free)
    for i in range(MANY):
        DBOS.send(f"child-{i}", f"go{i}", "go")
    assert [h.get_result() for h in handles] == [f"parent got go{i}-done" for i in range(MANY)]
    assert ledger.count("parent-after-") == MANY
    assert ledger.twice() == []
    # The parent's wait is one recorded operation, naming the child, as without suspension.
    steps = DBOS.list_workflow_steps(handles[0].workflow_id)
    names = [s["function_name"] for s in steps]
    assert names[-2] == "DBOS.getResult" and names[-1].endswith("mark")
    assert steps[-2]["child_workflow_id"] == "child-0"


def test_short_waits_and_direct_calls_keep_their_thread(dbos: type[DBOS]) -> None:
    @DBOS.workflow()
    def napper(seconds: float) -> str:
        DBOS.sleep(seconds)
        return "rested"

    events = WaitEvents()
    DBOS.launch()
    get_runtime().observers.add(events)
    with SetWorkflowID("short"):
        assert DBOS.start_workflow(napper, 0.05).get_result() == "rested"
    with SetWorkflowID("direct"):
        assert napper(1.5) == "rested"  # runs on this thread, whose caller waits anyway
    with SetWorkflowID("long"):
        assert DBOS.start_workflow(napper, 1.5).get_result() == "rested"
    assert events.of("short") == ["SUCCESS"]
    assert events.of("direct") == ["SUCCESS"]
    assert events.of("long") == ["suspended", "SUCCESS"]


def test_swallowed_suspension_cannot_go_on(dbos: type[DBOS]) -> None:
    ledger = Ledger()

    @DBOS.step()
    def mark(tag: str) -> str:
        return ledger.add(tag)

    @DBOS.workflow()
    def stubborn() -> Any:
        try:
            got = DBOS.recv("t", timeout_seconds=300)
        except BaseException:  # what the test is about: the wait's suspension is caught
            got = "swallowed"
        mark(f"after-{got}")
        return got

    DBOS.launch()
    get_runtime().config.wait_suspend_after_sec = 0
    with SetWorkflowID("stubborn"):
        handle = DBOS.start_workflow(stubborn)
    wait_for("the wait to be suspended", lambda: _parked("stubborn"))
    DBOS.send("stubborn", "real", "t")
    assert handle.get_result() == "real"
    assert ledger.entries == ["after-real"]


def test_resumed_body_gets_its_arguments_afresh(dbos: type[DBOS]) -> None:
    @DBOS.workflow()
    def mutator(items: list[str]) -> int:
        items.append("added")  # not deterministic if the same list were passed again
        DBOS.recv("t", timeout_seconds=300)
        return len(items)

    DBOS.launch()
    get_runtime().config.wait_suspend_after_sec = 0
    with SetWorkflowID("mutator"):
        handle = DBOS.start_workflow(mutator, ["a", "b"])
    wait_for("the wait to be suspended", lambda: _parked("mutator"))
    DBOS.send("mutator", "go", "t")
    assert handle.get_result() == 3


def test_cancelling_a_suspended_workflow(dbos: type[DBOS]) -> None:
    ledger = Ledger()

    @DBOS.step()
    def mark(tag: str) -> str:
        return ledger.add(tag)

    @DBOS.workflow()
    def waiter() -> None:
        DBOS.recv("t", timeout_seconds=300)
        mark("after")

    DBOS.launch()
    get_runtime().config.wait_suspend_after_sec = 0
    with SetWorkflowID("to-cancel"):
        handle = DBOS.start_workflow(waiter)
    wait_for("the wait to be suspended", lambda: _parked("to-cancel"))
    DBOS.cancel_workflow("to-cancel")
    with pytest.raises(DBOSAwaitedWorkflowCancelledError):
        handle.get_result()
    wait_for("the run to end here", lambda: get_runtime().active("to-cancel") is None)
    assert handle.get_status().status == "CANCELLED"
    assert ledger.entries == []


def test_a_resumed_run_reads_its_status_with_its_checkpoints(dbos: type[DBOS]) -> None:
    """Resuming costs one read before the body re-runs (its checkpoints and its status
    together), not a second one for the status at its first new operation; a cancellation
    made while it was parked, that no wake-up told of, is still seen there."""
    ledger = Ledger()

    @DBOS.step()
    def mark(tag: str) -> str:
        return ledger.add(tag)

    @DBOS.workflow()
    def waiter(tag: str) -> Any:
        got = DBOS.recv("t", timeout_seconds=300)
        mark(tag)
        return got

    DBOS.launch()
    rt = get_runtime()
    rt.config.wait_suspend_after_sec = 0
    rt.status_freshness = 60.0  # a slow machine must not make the status stale in between
    for wid in ("resumed", "cancelled"):
        with SetWorkflowID(wid):
            DBOS.start_workflow(waiter, wid)
        wait_for("the wait to be suspended", lambda wid=wid: _parked(wid))
    status_reads = []
    get_outcome = rt.store.get_outcome

    def counted(workflow_id: str) -> Any:
        status_reads.append(workflow_id)
        return get_outcome(workflow_id)

    def ended(wid: str) -> bool:
        return rt.active(wid) is None and not _parked(wid)

    rt.store.get_outcome = counted  # type: ignore[method-assign]
    DBOS.send("resumed", "go", "t")
    wait_for("the resumed run to end", lambda: ended("resumed"))
    assert status_reads == []
    del rt.store.get_outcome
    assert DBOS.retrieve_workflow("resumed").get_result() == "go"
    # Cancelled behind its back (as another process without notifications would), then
    # woken by a message: the read it resumes with tells it.
    rt.store.cancel_workflows(["cancelled"], rt.now_ms())
    DBOS.send("cancelled", "go", "t")
    wait_for("the cancelled run to end", lambda: ended("cancelled"))
    assert DBOS.get_workflow_status("cancelled").status == "CANCELLED"
    assert ledger.entries == ["resumed"]


def test_timed_out_recv_after_suspending(dbos: type[DBOS]) -> None:
    @DBOS.workflow()
    def waiter() -> Any:
        return DBOS.recv("t", timeout_seconds=1)

    DBOS.launch()
    get_runtime().config.wait_suspend_after_sec = 0
    assert DBOS.start_workflow(waiter).get_result() is None


def _parked(workflow_id: str) -> bool:
    """Suspended, its body unwound: it waits in the runtime's parking lot (core/parking.py)."""
    return workflow_id in get_runtime().lot


def test_a_parked_run_is_plain_data_out_of_the_collectors_sight(dbos: type[DBOS]) -> None:
    """Every full garbage collection walks every tracked object: a suspended run must not
    keep any (core/parking.py). Parked sleepers, receivers and parents with their children
    add next to nothing to what the collector tracks, and what the lot keeps of them is
    untracked plain data once the collector has seen it."""
    ledger = Ledger()

    @DBOS.step()
    def mark(tag: str) -> str:
        return ledger.add(tag)

    @DBOS.workflow()
    def sleeper(i: int) -> None:
        mark(f"sleeper-{i}")
        DBOS.sleep(3600)

    @DBOS.workflow()
    def receiver(i: int) -> Any:
        mark(f"receiver-{i}")
        return DBOS.recv("t", timeout_seconds=3600)

    @DBOS.workflow()
    def parent(i: int) -> Any:
        with SetWorkflowID(f"child-{i}"):
            handle = DBOS.start_workflow(receiver, 1000 + i)
        return handle.get_result()

    DBOS.launch()
    rt = get_runtime()
    rt.config.wait_suspend_after_sec = 0

    def park(first: int, count: int) -> tuple[int, int]:
        """Park ``count`` of each kind; returns how many objects the collector tracks then,
        and how many of those are Waypoint's own (runs, entries, signals, waits, tasks)."""
        for i in range(first, first + count):
            for name, fn in (("s", sleeper), ("r", receiver), ("p", parent)):
                with SetWorkflowID(f"{name}-{i}"):
                    DBOS.start_workflow(fn, i)
        total = 4 * (first + count)  # a parent's child waits too
        wait_for("every workflow to be parked", lambda: len(rt.lot) == total)
        wait_for("the pool's threads to be free", all_threads_free)
        gc.collect()
        gc.collect()
        tracked = gc.get_objects()
        ours = sum(1 for o in tracked if str(type(o).__module__).startswith("waypoint"))
        return len(tracked), ours

    before, ours_before = park(0, 10)  # made once (threads, connections, caches) exists now
    after, ours_after = park(10, 40)
    per_run = (after - before) / (4 * 40)
    # About 25 each before (run, entry, 3 signals, their locks, the wait, closures, task),
    # 8 of them Waypoint's. What is left: caches filling (SQLite's statements and their weak
    # references, the query builder's parts) and a few runs that last unwound, still held by
    # a worker thread's last traceback; nothing that grows with the parked runs.
    assert (ours_after - ours_before) / (4 * 40) < 2
    assert per_run < 10, f"{per_run:.1f} tracked objects per parked run"
    records = list(rt.lot._records.values())
    assert len(records) == 200
    assert not any(gc.is_tracked(rec) for rec in records)
    # And they all still resume.
    for i in range(50):
        DBOS.send(f"r-{i}", f"to-r-{i}", "t")
        DBOS.send(f"child-{i}", f"to-child-{i}", "t")
    for i in range(50):
        assert DBOS.retrieve_workflow(f"p-{i}").get_result() == f"to-child-{i}"
        assert DBOS.retrieve_workflow(f"r-{i}").get_result() == f"to-r-{i}"
    assert ledger.twice() == []
    DBOS.cancel_workflow("s-0")
    wait_for("the cancelled sleeper to leave the lot", lambda: "s-0" not in rt.lot)
    assert DBOS.get_workflow_status("s-0").status == "CANCELLED"


def test_a_suspended_waits_record_spans_the_whole_wait(dbos: type[DBOS]) -> None:
    """A recv, a get_event and a handle's get_result recorded after their run was suspended
    and resumed start when the wait began, not when the resumed run re-entered it: the
    record of a wait is the same whether its thread was given back meanwhile or not."""

    @DBOS.workflow()
    def receiver() -> Any:
        return DBOS.recv("t", timeout_seconds=300)

    @DBOS.workflow()
    async def async_receiver() -> Any:
        return await DBOS.recv_async("t", timeout_seconds=300)

    @DBOS.workflow()
    def reader() -> Any:
        return DBOS.get_event("setter", "k", timeout_seconds=300)

    @DBOS.workflow()
    def setter() -> None:
        DBOS.set_event("k", "v")

    @DBOS.workflow()
    def child() -> Any:
        return DBOS.recv("go", timeout_seconds=300)

    @DBOS.workflow()
    def parent() -> Any:
        with SetWorkflowID("child"):
            handle = DBOS.start_workflow(child)
        return handle.get_result()

    DBOS.launch()
    get_runtime().config.wait_suspend_after_sec = 0
    waits: list[tuple[str, Any, str]] = [
        ("receiver", receiver, "DBOS.recv"),
        ("async-receiver", async_receiver, "DBOS.recv"),
        ("reader", reader, "DBOS.getEvent"),
        ("parent", parent, "DBOS.getResult"),
    ]
    for wid, fn, _ in waits:
        with SetWorkflowID(wid):
            DBOS.start_workflow(fn)
    for wid in ("receiver", "async-receiver", "reader", "parent", "child"):
        wait_for(f"{wid} to be parked", lambda wid=wid: _parked(wid))
    waiting_since = int(time.time() * 1000)
    time.sleep(0.5)
    DBOS.send("receiver", "m", "t")
    DBOS.send("async-receiver", "m", "t")
    with SetWorkflowID("setter"):
        DBOS.start_workflow(setter).get_result()
    DBOS.send("child", "go", "go")
    results = [DBOS.retrieve_workflow(wid).get_result() for wid, _, _ in waits]
    assert results == ["m", "m", "v", "go"]
    for wid, _, name in waits:
        (step,) = [s for s in DBOS.list_workflow_steps(wid) if s["function_name"] == name]
        assert step["started_at_epoch_ms"] <= waiting_since, (wid, name)
        assert step["completed_at_epoch_ms"] - step["started_at_epoch_ms"] >= 500, (wid, name)
    # As DBOS records them: the wait begins before its timeout's registration (DBOS.sleep).
    for wid in ("receiver", "async-receiver", "reader"):
        steps = DBOS.list_workflow_steps(wid)
        assert steps[0]["started_at_epoch_ms"] <= steps[1]["started_at_epoch_ms"]
