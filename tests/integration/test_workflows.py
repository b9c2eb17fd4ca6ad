"""Workflows and steps: checkpoints, idempotency, errors, children (both backends)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from tests.conftest import system_count
from waypoint import DBOS, SetWorkflowID, WorkflowStatusString
from waypoint.error import (
    DBOSConflictingWorkflowError,
    DBOSException,
    DBOSMaxStepRetriesExceeded,
    DBOSNonExistentWorkflowError,
)


class PaymentDeclined(Exception):
    pass


def count_rows(table: str) -> int:
    return system_count(table)


def test_steps_are_checkpointed_in_order(dbos: type[DBOS]) -> None:
    @DBOS.step()
    def double(x: int) -> int:
        return 2 * x

    @DBOS.workflow()
    def chain(x: int) -> int:
        a = double(x)
        b = double(a)
        return double(b)

    DBOS.launch()
    with SetWorkflowID("chain-1"):
        assert chain(1) == 8
    steps = DBOS.list_workflow_steps("chain-1")
    assert [s["function_id"] for s in steps] == [1, 2, 3]
    assert [s["output"] for s in steps] == [2, 4, 8]
    assert all(s["function_name"].endswith("double") for s in steps)
    status = DBOS.get_workflow_status("chain-1")
    assert status is not None
    assert status.status == WorkflowStatusString.SUCCESS.value
    assert status.output == 8
    assert status.input == {"args": (1,), "kwargs": {}}
    assert status.executor_id == "local"
    assert status.app_version == DBOS.application_version


def test_same_id_returns_recorded_outcome_without_rerunning(dbos: type[DBOS]) -> None:
    calls = {"step": 0, "body": 0}

    @DBOS.step()
    def side_effect() -> str:
        calls["step"] += 1
        return "done"

    @DBOS.workflow()
    def once(tag: str) -> str:
        calls["body"] += 1
        return side_effect() + tag

    DBOS.launch()
    with SetWorkflowID("idem"):
        assert once("!") == "done!"
    with SetWorkflowID("idem"):
        assert once("!") == "done!"
    with SetWorkflowID("idem"):
        handle = DBOS.start_workflow(once, "!")
    assert handle.get_result() == "done!"
    assert calls == {"step": 1, "body": 1}
    assert count_rows("workflow_status") == 1


def test_same_id_different_function_conflicts(dbos: type[DBOS]) -> None:
    @DBOS.workflow()
    def first() -> int:
        return 1

    @DBOS.workflow()
    def second() -> int:
        return 2

    DBOS.launch()
    with SetWorkflowID("shared"):
        first()
    with pytest.raises(DBOSConflictingWorkflowError), SetWorkflowID("shared"):
        second()
    with pytest.raises(DBOSConflictingWorkflowError), SetWorkflowID("shared"):
        DBOS.start_workflow(second)
    assert DBOS.retrieve_workflow("shared").get_result() == 1


@pytest.mark.parametrize("bad", ["", "   ", "\t\n", "a\x00b", "x" * 5000])
def test_bad_workflow_ids_are_rejected_before_writing(dbos: type[DBOS], bad: str) -> None:
    @DBOS.workflow()
    def wf() -> int:
        return 1

    DBOS.launch()
    with pytest.raises(ValueError):
        with SetWorkflowID(bad):
            wf()
    assert count_rows("workflow_status") == 0


def test_workflow_error_is_recorded_and_replayed(dbos: type[DBOS]) -> None:
    runs = {"n": 0}

    @DBOS.workflow()
    def fails(amount: int) -> None:
        runs["n"] += 1
        raise PaymentDeclined(f"declined {amount}")

    DBOS.launch()
    with SetWorkflowID("fail-1"), pytest.raises(PaymentDeclined, match="declined 5"):
        fails(5)
    with SetWorkflowID("fail-1"), pytest.raises(PaymentDeclined, match="declined 5"):
        fails(5)
    handle = DBOS.retrieve_workflow("fail-1")
    with pytest.raises(PaymentDeclined):
        handle.get_result()
    status = handle.get_status()
    assert status.status == "ERROR"
    assert isinstance(status.error, PaymentDeclined)
    assert runs["n"] == 1


def test_start_workflow_and_handles(dbos: type[DBOS]) -> None:
    gate = threading.Event()

    @DBOS.workflow()
    def waits(x: int) -> int:
        gate.wait(10)
        return x + 1

    DBOS.launch()
    with SetWorkflowID("bg-1"):
        handle = DBOS.start_workflow(waits, 41)
    assert handle.get_workflow_id() == "bg-1"
    assert handle.workflow_id == "bg-1"
    assert handle.get_status().status == "PENDING"
    gate.set()
    assert handle.get_result() == 42
    assert DBOS.retrieve_workflow("bg-1").get_result() == 42
    assert DBOS.get_result("bg-1") == 42
    with pytest.raises(DBOSNonExistentWorkflowError):
        DBOS.retrieve_workflow("nope")
    assert DBOS.get_workflow_status("nope") is None


def test_step_retries_with_backoff(dbos: type[DBOS]) -> None:
    attempts: list[Any] = []

    @DBOS.step(retries_allowed=True, max_attempts=4, interval_seconds=0.01, backoff_rate=1.5)
    def flaky() -> str:
        status = DBOS.step_status
        attempts.append((status.current_attempt, status.max_attempts))
        if len(attempts) < 3:
            raise ConnectionError("try again")
        return "ok"

    @DBOS.workflow()
    def wf() -> str:
        return flaky()

    DBOS.launch()
    with SetWorkflowID("retry-1"):
        assert wf() == "ok"
    assert attempts == [(0, 4), (1, 4), (2, 4)]
    steps = DBOS.list_workflow_steps("retry-1")
    assert len(steps) == 1 and steps[0]["output"] == "ok"


def test_step_retries_exhausted(dbos: type[DBOS]) -> None:
    count = {"n": 0}

    @DBOS.step(retries_allowed=True, max_attempts=3, interval_seconds=0)
    def always_fails() -> None:
        count["n"] += 1
        raise RuntimeError(f"failure {count['n']}")

    @DBOS.workflow()
    def wf() -> None:
        always_fails()

    DBOS.launch()
    with SetWorkflowID("exhaust"), pytest.raises(DBOSMaxStepRetriesExceeded) as info:
        wf()
    assert count["n"] == 3
    assert len(info.value.errors) == 3
    assert DBOS.get_workflow_status("exhaust").status == "ERROR"  # type: ignore[union-attr]
    step = DBOS.list_workflow_steps("exhaust")[0]
    assert isinstance(step["error"], DBOSMaxStepRetriesExceeded)


def test_should_retry_vetoes(dbos: type[DBOS]) -> None:
    count = {"n": 0}

    class Fatal(Exception):
        pass

    @DBOS.step(
        retries_allowed=True,
        max_attempts=5,
        interval_seconds=0,
        should_retry=lambda exc: not isinstance(exc, Fatal),
    )
    def step() -> None:
        count["n"] += 1
        raise Fatal("no point retrying")

    @DBOS.workflow()
    def wf() -> None:
        step()

    DBOS.launch()
    with pytest.raises(Fatal):
        wf()
    assert count["n"] == 1


def test_step_outside_workflow_is_a_plain_call(dbos: type[DBOS]) -> None:
    @DBOS.step()
    def plain(x: int) -> int:
        assert DBOS.workflow_id is None
        return x * 3

    DBOS.launch()
    assert plain(3) == 9
    assert count_rows("operation_outputs") == 0


def test_run_step(dbos: type[DBOS]) -> None:
    def add(a: int, b: int) -> int:
        return a + b

    @DBOS.workflow()
    def wf() -> int:
        return DBOS.run_step({"name": "adder"}, add, 2, b=3)

    DBOS.launch()
    with SetWorkflowID("run-step"):
        assert wf() == 5
    steps = DBOS.list_workflow_steps("run-step")
    assert [(s["function_name"], s["output"]) for s in steps] == [("adder", 5)]


def test_children_called_and_started(dbos: type[DBOS]) -> None:
    child_runs = {"n": 0}

    @DBOS.workflow()
    def child(x: int) -> int:
        child_runs["n"] += 1
        return x * 10

    @DBOS.workflow()
    def parent() -> list[int]:
        a = child(1)
        handle = DBOS.start_workflow(child, 2)
        b = handle.get_result()
        with SetWorkflowID("explicit-child"):
            c = child(3)
        return [a, b, c]

    DBOS.launch()
    with SetWorkflowID("parent"):
        assert parent() == [10, 20, 30]
    assert child_runs["n"] == 3
    steps = DBOS.list_workflow_steps("parent")
    # As DBOS records them: a child called inline is followed by the wait for its result,
    # and every wait on a child's handle names the child.
    name = child.__qualname__
    assert [(s["function_name"], s["child_workflow_id"]) for s in steps] == [
        (name, "parent-1"),
        ("DBOS.getResult", "parent-1"),
        (name, "parent-3"),
        ("DBOS.getResult", "parent-3"),
        (name, "explicit-child"),
        ("DBOS.getResult", "explicit-child"),
    ]
    assert [s["output"] for s in steps] == [None, 10, None, 20, None, 30]
    for cid in ("parent-1", "parent-3", "explicit-child"):
        status = DBOS.get_workflow_status(cid)
        assert status is not None and status.parent_workflow_id == "parent"
    # Running the parent again replays: no child runs again.
    with SetWorkflowID("parent"):
        assert parent() == [10, 20, 30]
    assert child_runs["n"] == 3


def test_workflow_properties(dbos: type[DBOS]) -> None:
    seen: dict[str, Any] = {}

    @DBOS.step()
    def step() -> None:
        seen["step_id"] = DBOS.step_id
        seen["step_wf"] = DBOS.workflow_id

    @DBOS.workflow()
    def wf() -> None:
        seen["wf"] = DBOS.workflow_id
        step()

    DBOS.launch()
    with SetWorkflowID("props"):
        wf()
    assert seen == {"wf": "props", "step_id": 1, "step_wf": "props"}
    assert DBOS.workflow_id is None
    assert DBOS.step_id is None
    assert DBOS.executor_id == "local"
    assert isinstance(DBOS.application_version, str) and DBOS.application_version
    assert DBOS.logger.name == "waypoint"


def test_not_launched_is_a_clear_error(dbos: type[DBOS]) -> None:
    @DBOS.workflow()
    def wf() -> int:
        return 1

    with pytest.raises(DBOSException, match="launch"):
        wf()


def test_list_workflows_filters(dbos: type[DBOS]) -> None:
    @DBOS.workflow()
    def a(x: int) -> int:
        return x

    @DBOS.workflow()
    def b() -> None:
        raise ValueError("no")

    DBOS.launch()
    for i in range(3):
        with SetWorkflowID(f"a-{i}"):
            a(i)
    with SetWorkflowID("b-0"), pytest.raises(ValueError):
        b()
    assert [w.workflow_id for w in DBOS.list_workflows()] == ["a-0", "a-1", "a-2", "b-0"]
    assert [w.workflow_id for w in DBOS.list_workflows(status="ERROR")] == ["b-0"]
    assert [
        w.workflow_id for w in DBOS.list_workflows(workflow_id_prefix="a-", limit=2, sort_desc=True)
    ] == ["a-2", "a-1"]
    assert [w.workflow_id for w in DBOS.list_workflows(workflow_id_prefix="%")] == []
    listed = DBOS.list_workflows(workflow_ids=["a-1"], load_input=False)
    assert listed[0].input is None and listed[0].output == 1


def test_get_result_waits_for_a_workflow_not_written_yet(dbos: type[DBOS]) -> None:
    """As in DBOS, get_result on an ID whose workflow another task is about to start waits
    for it rather than failing."""
    import threading

    @DBOS.workflow()
    def late() -> str:
        return "done"

    DBOS.launch()
    waiting = threading.Event()
    results: list[Any] = []

    def wait() -> None:
        waiting.set()
        results.append(DBOS.get_result("started-later", polling_interval_sec=0.05))

    waiter = threading.Thread(target=wait)
    waiter.start()
    assert waiting.wait(10)
    with SetWorkflowID("started-later"):
        DBOS.start_workflow(late)
    waiter.join(30)
    assert results == ["done"]


def test_a_running_workflow_whose_row_vanishes_fails_its_waiters(dbos: type[DBOS]) -> None:
    """A workflow's row can disappear under its running execution: deleted, or lost with
    the last commits of a primary that failed over to an asynchronous standby (see
    tests/crash/test_failover.py). Its next checkpoint is refused, and every waiter gets
    DBOSNonExistentWorkflowError instead of waiting forever for an outcome nobody records."""
    entered, release = threading.Event(), threading.Event()

    @DBOS.step()
    def blocked() -> int:
        entered.set()
        assert release.wait(30)
        return 1

    @DBOS.workflow()
    def vanishing() -> int:
        return blocked() + 1

    DBOS.launch()
    with SetWorkflowID("vanishing"):
        handle = DBOS.start_workflow(vanishing)
    assert entered.wait(30)
    DBOS.delete_workflow("vanishing")
    release.set()
    with pytest.raises(DBOSNonExistentWorkflowError):
        handle.get_result(polling_interval_sec=0.05)


def test_recent_completions_are_plain_data_and_reapplied_after_a_failover(
    dbos: type[DBOS],
) -> None:
    """The completions a runtime keeps for a failover (``Runtime.reapply_completions``) are
    untracked tuples, not objects every full garbage collection walks; re-applying one that
    the database lost moves its PENDING row to the recorded outcome."""
    import gc

    from waypoint.core.runtime import get_runtime
    from waypoint.storage.records import Completion

    @DBOS.workflow()
    def quick(i: int) -> int:
        return i

    @DBOS.workflow()
    def waiting() -> Any:
        return DBOS.recv("t", timeout_seconds=60)

    DBOS.launch()
    rt = get_runtime()
    for i in range(20):
        assert DBOS.start_workflow(quick, i).get_result() == i
    gc.collect()
    kept = list(rt._recent_completions)
    assert len(kept) >= 20 and not any(gc.is_tracked(c) for c in kept)
    assert rt.reapply_completions() == 0  # none was lost
    # A completion this process wrote and the database lost (its row is PENDING again).
    with SetWorkflowID("lost"):
        DBOS.start_workflow(waiting)
    row = rt.store.get_workflow("lost")
    assert row is not None and row.owner_xid
    rt.completed(Completion("lost", row.owner_xid, "SUCCESS", '"restored"', None, rt.now_ms()))
    assert rt.reapply_completions() == 1
    status = DBOS.get_workflow_status("lost")
    assert status is not None and status.status == "SUCCESS"
