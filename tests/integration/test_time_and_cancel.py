"""Durable sleep, timeouts and cancellation (both backends)."""

from __future__ import annotations

import json
import threading
import time

import pytest

from waypoint import DBOS, SetWorkflowID, SetWorkflowTimeout
from waypoint.error import DBOSAwaitedWorkflowCancelledError, DBOSWorkflowCancelledError


def test_durable_sleep_records_wake_time(dbos: type[DBOS]) -> None:
    @DBOS.workflow()
    def sleeper() -> float:
        start = time.time()
        DBOS.sleep(0.2)
        return time.time() - start

    DBOS.launch()
    with SetWorkflowID("sleep-1"):
        before = time.time()
        assert sleeper() >= 0.19
    step = DBOS.list_workflow_steps("sleep-1")[0]
    assert step["function_name"] == "DBOS.sleep"
    assert before + 0.2 <= step["output"] <= time.time() + 0.01
    # Replaying a finished sleep does not sleep again.
    with SetWorkflowID("sleep-1"):
        t = time.time()
        sleeper()
        assert time.time() - t < 0.15


def test_sleep_zero_takes_no_position(dbos: type[DBOS]) -> None:
    # DBOS 2.31 returns at once from DBOS.sleep(0): no checkpoint, no position.
    @DBOS.step()
    def s() -> int:
        return DBOS.step_id  # type: ignore[return-value]

    @DBOS.workflow()
    def wf() -> int:
        DBOS.sleep(0)
        DBOS.sleep(-1)
        return s()

    DBOS.launch()
    assert wf() == 1


def test_timeout_cancels_at_deadline(dbos: type[DBOS]) -> None:
    reached = {"after": False}

    @DBOS.workflow()
    def slow() -> None:
        DBOS.sleep(5)
        reached["after"] = True

    DBOS.launch()
    start = time.time()
    with SetWorkflowID("timeout-1"), SetWorkflowTimeout(0.3):
        handle = DBOS.start_workflow(slow)
    with pytest.raises(DBOSAwaitedWorkflowCancelledError):
        handle.get_result()
    assert time.time() - start < 3
    status = handle.get_status()
    assert status.status == "CANCELLED"
    assert status.workflow_timeout_ms == 300
    assert status.workflow_deadline_epoch_ms is not None
    assert not reached["after"]


def test_timeout_direct_call_raises_cancelled(dbos: type[DBOS]) -> None:
    @DBOS.step()
    def tick() -> None:
        time.sleep(0.05)

    @DBOS.workflow()
    def busy() -> None:
        for _ in range(100):
            tick()

    DBOS.launch()
    with SetWorkflowTimeout(0.2), pytest.raises(DBOSWorkflowCancelledError):
        busy()


def test_children_inherit_deadline(dbos: type[DBOS]) -> None:
    @DBOS.workflow()
    def child() -> None:
        DBOS.sleep(5)

    @DBOS.workflow()
    def parent() -> str:
        handle = DBOS.start_workflow(child)
        return handle.workflow_id

    DBOS.launch()
    with SetWorkflowID("dl-parent"), SetWorkflowTimeout(0.5):
        child_id = parent()
    parent_status = DBOS.get_workflow_status("dl-parent")
    child_status = DBOS.get_workflow_status(child_id)
    assert parent_status is not None and child_status is not None
    assert child_status.workflow_deadline_epoch_ms == parent_status.workflow_deadline_epoch_ms
    with pytest.raises(DBOSAwaitedWorkflowCancelledError):
        DBOS.retrieve_workflow(child_id).get_result()


def test_explicit_none_timeout_clears_inherited_deadline(dbos: type[DBOS]) -> None:
    @DBOS.workflow()
    def child() -> int:
        return 7

    @DBOS.workflow()
    def parent() -> str:
        with SetWorkflowTimeout(None):
            return DBOS.start_workflow(child).workflow_id

    DBOS.launch()
    with SetWorkflowTimeout(10):
        child_id = parent()
    status = DBOS.get_workflow_status(child_id)
    assert status is not None and status.workflow_deadline_epoch_ms is None


def test_bad_timeouts_are_rejected() -> None:
    with pytest.raises(ValueError):
        SetWorkflowTimeout(0)
    with pytest.raises(ValueError):
        SetWorkflowTimeout(-1)
    with pytest.raises(TypeError):
        SetWorkflowTimeout("10")  # type: ignore[arg-type]


def test_cancel_stops_at_next_step(dbos: type[DBOS]) -> None:
    entered = threading.Event()
    release = threading.Event()
    ran: list[int] = []

    @DBOS.step()
    def step(i: int) -> None:
        ran.append(i)
        if i == 0:
            entered.set()
            release.wait(10)

    @DBOS.workflow()
    def wf() -> None:
        for i in range(3):
            step(i)

    DBOS.launch()
    with SetWorkflowID("cancel-1"):
        handle = DBOS.start_workflow(wf)
    assert entered.wait(10)
    DBOS.cancel_workflow("cancel-1")
    release.set()
    with pytest.raises(DBOSAwaitedWorkflowCancelledError):
        handle.get_result()
    assert ran == [0]
    status = handle.get_status()
    assert status.status == "CANCELLED"
    assert status.completed_at is not None
    # The step in flight when the cancel arrived still has its checkpoint.
    assert [s["function_id"] for s in DBOS.list_workflow_steps("cancel-1")] == [1]


def test_cancel_interrupts_sleep(dbos: type[DBOS]) -> None:
    @DBOS.workflow()
    def wf() -> None:
        DBOS.sleep(30)

    DBOS.launch()
    with SetWorkflowID("cancel-sleep"):
        handle = DBOS.start_workflow(wf)
    time.sleep(0.2)
    start = time.time()
    DBOS.cancel_workflow("cancel-sleep")
    with pytest.raises(DBOSAwaitedWorkflowCancelledError):
        handle.get_result()
    assert time.time() - start < 5


def test_cancel_children(dbos: type[DBOS]) -> None:
    @DBOS.workflow()
    def child() -> None:
        DBOS.sleep(30)

    @DBOS.workflow()
    def parent() -> None:
        DBOS.start_workflow(child)
        DBOS.sleep(30)

    DBOS.launch()
    with SetWorkflowID("cp"):
        DBOS.start_workflow(parent)
    deadline = time.time() + 10
    while DBOS.get_workflow_status("cp-1") is None and time.time() < deadline:
        time.sleep(0.02)
    DBOS.cancel_workflow("cp", cancel_children=True)
    for wid in ("cp", "cp-1"):
        with pytest.raises(DBOSAwaitedWorkflowCancelledError):
            DBOS.retrieve_workflow(wid).get_result()


def test_cancel_does_not_touch_finished_workflows(dbos: type[DBOS]) -> None:
    @DBOS.workflow()
    def wf() -> int:
        return 3

    DBOS.launch()
    with SetWorkflowID("done-1"):
        wf()
    DBOS.cancel_workflow("done-1")
    assert DBOS.retrieve_workflow("done-1").get_result() == 3


def test_cancel_from_another_process_is_seen(dbos: type[DBOS], db_url: str) -> None:
    """A cancellation written straight to the database (as another process would) stops the
    workflow at its next step."""
    from waypoint.storage.registry import open_url

    entered = threading.Event()
    release = threading.Event()
    ran: list[int] = []

    @DBOS.step()
    def step(i: int) -> None:
        ran.append(i)
        if i == 0:
            entered.set()
            release.wait(10)

    @DBOS.workflow()
    def wf() -> None:
        for i in range(3):
            step(i)

    DBOS.launch()
    with SetWorkflowID("remote-cancel"):
        handle = DBOS.start_workflow(wf)
    assert entered.wait(10)
    other = open_url(db_url)
    other.open()
    try:
        assert other.cancel_workflows(["remote-cancel"], int(time.time() * 1000)) == [
            "remote-cancel"
        ]
    finally:
        other.close()
    release.set()
    with pytest.raises(DBOSAwaitedWorkflowCancelledError):
        handle.get_result()
    assert ran == [0]


def test_sleep_output_is_portable_json(dbos: type[DBOS]) -> None:
    @DBOS.workflow()
    def wf() -> None:
        DBOS.sleep(0.01)

    DBOS.launch()
    with SetWorkflowID("sleep-json"):
        wf()
    from waypoint.core.runtime import get_runtime

    row = get_runtime().store.load_steps("sleep-json")[1]
    assert row.serialization == "portable_json"
    assert isinstance(json.loads(row.output or "null"), float)
