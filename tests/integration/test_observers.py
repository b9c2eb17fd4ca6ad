"""The observation seam: observers see workflow runs, steps (with retries), claims and
recoveries, and what an observer enters for an operation is in force wherever the engine runs
that operation's code (a worker thread, the event loop, a dequeued run)."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from collections import Counter
from typing import Any, Optional

import pytest

from tests.admin_http import orphan
from waypoint import DBOS, Queue, SetWorkflowID
from waypoint._api.ops import fleet
from waypoint._api.ops.base import RUNTIME
from waypoint.core.observe import ObservedRun, Observer, Watch
from waypoint.core.runtime import get_runtime
from waypoint.error import DBOSAwaitedWorkflowCancelledError

in_workflow: contextvars.ContextVar[Optional[str]] = contextvars.ContextVar(
    "in_workflow", default=None
)
in_step: contextvars.ContextVar[Optional[str]] = contextvars.ContextVar("in_step", default=None)


class Tagging(Watch):
    """Sets a context variable while the operation's code runs, and records how it ended."""

    def __init__(self, log: StepCounter, var: contextvars.ContextVar[Optional[str]], tag: str):
        self.log, self.var, self.tag = log, var, tag

    def enter(self) -> Any:
        return self.var.set(self.tag)

    def exit(self, token: Any) -> None:
        self.var.reset(token)

    def event(self, name: str, attributes: dict[str, Any]) -> None:
        self.log.events.append((self.tag, name, attributes["attempt"]))

    def end(self, status: str, error: Optional[BaseException]) -> None:
        self.log.ended.append((self.tag, status, type(error).__name__ if error else None))


class StepCounter(Observer):
    def __init__(self) -> None:
        self.steps: Counter[str] = Counter()
        self.workflows: list[str] = []
        self.events: list[tuple[str, str, int]] = []
        self.ended: list[tuple[str, str, Optional[str]]] = []
        self.claims: list[tuple[str, list[str]]] = []
        self.recoveries: list[tuple[list[str], list[str]]] = []

    def workflow(self, run: ObservedRun) -> Optional[Watch]:
        self.workflows.append(run.workflow_id)
        return Tagging(self, in_workflow, run.workflow_id)

    def step(self, run: ObservedRun, name: str, function_id: int) -> Optional[Watch]:
        self.steps[run.workflow_id] += 1
        return Tagging(self, in_step, f"{run.workflow_id}#{function_id}")

    def claimed(self, queue_name: str, workflow_ids: Any) -> None:
        self.claims.append((queue_name, list(workflow_ids)))

    def recovered(self, executor_ids: Any, workflow_ids: Any) -> None:
        self.recoveries.append((list(executor_ids), list(workflow_ids)))


def observe() -> StepCounter:
    counter = StepCounter()
    get_runtime().observers.add(counter)
    return counter


def test_steps_retries_and_outcomes_are_observed(dbos: type[DBOS]) -> None:
    attempts = {"flaky": 0}

    @DBOS.step(retries_allowed=True, interval_seconds=0.01, max_attempts=3)
    def flaky() -> str:
        attempts["flaky"] += 1
        if attempts["flaky"] == 1:
            raise RuntimeError("first attempt fails")
        return f"{in_workflow.get()}|{in_step.get()}"

    @DBOS.step()
    def plain(x: int) -> int:
        return x + 1

    @DBOS.workflow()
    def wf() -> tuple[str, int, int]:
        return flaky(), plain(1), plain(2)

    @DBOS.workflow()
    def broken() -> None:
        plain(0)
        raise ValueError("no")

    DBOS.launch()
    seen = observe()
    with SetWorkflowID("obs-1"):
        result = wf()
    assert result == ("obs-1|obs-1#1", 2, 3)
    assert seen.steps["obs-1"] == 3
    assert seen.events == [("obs-1#1", "retry", 1)]
    assert ("obs-1#1", "SUCCESS", None) in seen.ended
    assert ("obs-1", "SUCCESS", None) in seen.ended
    with SetWorkflowID("obs-2"), pytest.raises(ValueError):
        broken()
    assert ("obs-2", "ERROR", "ValueError") in seen.ended
    # Outside any operation, nothing an observer entered is left in force.
    assert in_workflow.get() is None and in_step.get() is None

    # A second call with the same ID replays: no body runs, nothing is observed again.
    with SetWorkflowID("obs-1"):
        assert wf() == result
    assert seen.workflows.count("obs-1") == 1 and seen.steps["obs-1"] == 3


def test_context_follows_the_run_across_threads_and_tasks(dbos: type[DBOS]) -> None:
    queue = Queue("obs-q")

    @DBOS.step()
    def where() -> tuple[Optional[str], Optional[str], str]:
        return in_workflow.get(), in_step.get(), threading.current_thread().name

    @DBOS.workflow()
    def sync_wf() -> list[Any]:
        return [where(), where()]

    @DBOS.step()
    async def awhere(delay: float) -> tuple[Optional[str], Optional[str]]:
        await asyncio.sleep(delay)  # the two steps interleave on one loop
        return in_workflow.get(), in_step.get()

    @DBOS.workflow()
    async def async_wf() -> list[Any]:
        return list(await asyncio.gather(awhere(0.02), awhere(0.0)))

    DBOS.launch()
    seen = observe()

    handle = DBOS.start_workflow(sync_wf)  # runs on a worker thread
    wfid = handle.workflow_id
    deadline = time.monotonic() + 10
    while wfid not in seen.workflows and time.monotonic() < deadline:
        time.sleep(0.005)  # (a waiter would otherwise run a not-yet-started workflow itself)
    first, second = handle.get_result()
    assert (first[0], first[1]) == (wfid, f"{wfid}#1")
    assert (second[0], second[1]) == (wfid, f"{wfid}#2")
    assert first[2] != threading.current_thread().name

    with SetWorkflowID("obs-async"):
        assert asyncio.run(async_wf()) == [
            ("obs-async", "obs-async#1"),
            ("obs-async", "obs-async#2"),
        ]

    with SetWorkflowID("obs-queued"):
        queued = queue.enqueue(sync_wf)
    assert [r[:2] for r in queued.get_result()] == [
        ("obs-queued", "obs-queued#1"),
        ("obs-queued", "obs-queued#2"),
    ]
    assert ("obs-q", ["obs-queued"]) in seen.claims


def test_recoveries_cancellations_and_failing_observers(dbos: type[DBOS]) -> None:
    release = threading.Event()

    @DBOS.workflow()
    def waits() -> str:
        release.wait(10)
        DBOS.sleep(0)
        return "done"

    DBOS.launch()
    seen = observe()

    class Broken(Observer):
        def workflow(self, run: ObservedRun) -> Optional[Watch]:
            raise RuntimeError("an observer bug must not fail workflows")

        def step(self, run: ObservedRun, name: str, function_id: int) -> Optional[Watch]:
            raise RuntimeError("nor steps")

    get_runtime().observers.add(Broken())

    # Another executor's PENDING workflow, taken over through the recovery operation.
    wfid = orphan(waits.__qualname__, "obs-rec")
    assert RUNTIME.run(fleet.recover_executors(RUNTIME, ["gone-executor"])) == [wfid]
    assert seen.recoveries == [(["gone-executor"], [wfid])]
    release.set()
    assert DBOS.retrieve_workflow(wfid).get_result() == "done"
    assert (wfid, "SUCCESS", None) in seen.ended

    release.clear()
    with SetWorkflowID("obs-cancel"):
        handle = DBOS.start_workflow(waits)
    deadline = time.monotonic() + 10
    while "obs-cancel" not in seen.workflows and time.monotonic() < deadline:
        time.sleep(0.01)
    DBOS.cancel_workflow("obs-cancel")
    release.set()
    with pytest.raises(DBOSAwaitedWorkflowCancelledError):
        handle.get_result()
    deadline = time.monotonic() + 10
    while ("obs-cancel", "CANCELLED", None) not in seen.ended and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ("obs-cancel", "CANCELLED", None) in seen.ended
