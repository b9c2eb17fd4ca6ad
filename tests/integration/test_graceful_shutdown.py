"""A graceful shutdown (``DBOS.destroy(workflow_completion_timeout_sec=N)``) hands back what it
cannot finish: nothing new starts, claimed work that has not started goes back at once, the
rest after the grace period, fenced; a new executor (another pod) picks it all up (both
backends). The crash suite does the same with real processes and SIGTERM
(tests/crash/test_rolling_deploy.py)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from waypoint import DBOS, SetWorkflowID
from waypoint.storage.protocol import Store, WorkflowRow
from waypoint.storage.registry import open_url

INTERNAL_QUEUE = "_dbos_internal_queue"


@pytest.fixture(name="store")
def store_fixture(db_url: str) -> Iterator[Store]:
    """The system database, read directly (also by test_cli_executors)."""
    s = open_url(db_url)
    s.open()
    yield s
    s.close()


def launch(config: dict[str, Any], executor_id: str, define: Callable[[], None]) -> None:
    DBOS.destroy(destroy_registry=True)
    DBOS(config={**config, "executor_id": executor_id, "application_version": "v1"})  # type: ignore[arg-type]
    define()
    DBOS.launch()


def row(store: Store, workflow_id: str) -> WorkflowRow:
    found = store.get_workflow(workflow_id)
    assert found is not None
    return found


def wait_until(what: str, predicate: Callable[[], Any], timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = predicate()
        if got:
            return got
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def test_running_workflows_finish_within_the_grace_period(
    dbos: type[DBOS], config: dict[str, Any], store: Store
) -> None:
    go = threading.Event()

    def define() -> None:
        @DBOS.step()
        def slow() -> str:
            go.wait(30)
            return "done"

        @DBOS.workflow()
        def short() -> str:
            return slow()

        define.short = short  # type: ignore[attr-defined]

    launch(config, "pod-1", define)
    with SetWorkflowID("short-1"):
        DBOS.start_workflow(define.short)  # type: ignore[attr-defined]
    wait_until("the workflow to start", lambda: row(store, "short-1").status == "PENDING")
    threading.Timer(0.5, go.set).start()
    DBOS.destroy(workflow_completion_timeout_sec=60)
    assert row(store, "short-1").status == "SUCCESS"
    # Nothing was left to hand back, and the executor says it is gone.
    assert [(e.executor_id, e.state) for e in store.list_executors("waypoint-test")] == [
        ("pod-1", "gone")
    ]


def test_unfinished_work_is_handed_back_fenced_and_a_new_pod_finishes_it(
    dbos: type[DBOS], config: dict[str, Any], store: Store
) -> None:
    ran: list[tuple[str, str]] = []  # (step, executor that ran its body)
    in_step = threading.Event()
    release_old_step = threading.Event()

    def define() -> None:
        @DBOS.step()
        def note(what: str) -> str:
            ran.append((what, DBOS.executor_id))
            return DBOS.executor_id

        @DBOS.step()
        def long_step() -> str:
            ran.append(("long", DBOS.executor_id))
            if DBOS.executor_id == "pod-1":
                in_step.set()
                release_old_step.wait(30)  # still running when the grace period ends
            return DBOS.executor_id

        @DBOS.workflow()
        def sleeper() -> str:
            note("before-sleep")
            DBOS.sleep(2)
            return note("after-sleep")

        @DBOS.workflow()
        def waiter() -> Any:
            note("before-recv")
            got = DBOS.recv("go", timeout_seconds=60)
            note("after-recv")
            return got

        @DBOS.workflow()
        def busy() -> str:
            first = long_step()
            return first + "/" + note("after-long")

        define.wfs = (sleeper, waiter, busy)  # type: ignore[attr-defined]

    launch(config, "pod-1", define)
    sleeper, waiter, busy = define.wfs  # type: ignore[attr-defined]
    for wfid, fn in (("sleeper", sleeper), ("waiter", waiter), ("busy", busy)):
        with SetWorkflowID(wfid):
            DBOS.start_workflow(fn)
    assert in_step.wait(30)
    wait_until("the sleeper and waiter to park", lambda: len(ran) >= 3)

    started = time.monotonic()
    DBOS.destroy(workflow_completion_timeout_sec=0.5)
    assert time.monotonic() - started < 20  # it did not wait for the sleep or the message

    for wfid in ("sleeper", "waiter", "busy"):
        r = row(store, wfid)
        assert (r.status, r.executor_id, r.owner_xid) == ("ENQUEUED", None, None), wfid
        assert r.queue_name == INTERNAL_QUEUE and r.recovery_attempts == 0, wfid
    assert [(e.executor_id, e.state) for e in store.list_executors("waypoint-test")] == [
        ("pod-1", "gone")
    ]

    # The old step body finishes now; its checkpoint (and anything after it) is refused.
    release_old_step.set()
    time.sleep(0.5)
    assert not any(what == "after-long" for what, _ in ran)
    assert row(store, "busy").status == "ENQUEUED"
    assert store.load_steps("busy") == {}

    # A new pod (another executor ID, the same version) takes it all.
    launch(config, "pod-2", define)
    DBOS.send("waiter", "hello", "go")
    assert DBOS.retrieve_workflow("sleeper").get_result(polling_interval_sec=0.05) == "pod-2"
    assert DBOS.retrieve_workflow("waiter").get_result(polling_interval_sec=0.05) == "hello"
    assert DBOS.retrieve_workflow("busy").get_result(polling_interval_sec=0.05) == "pod-2/pod-2"
    for wfid in ("sleeper", "waiter", "busy"):
        r = row(store, wfid)
        assert (r.executor_id, r.recovery_attempts) == ("pod-2", 1), wfid
    # Completed steps ran once; the step cut off by the hand-back ran again on pod-2.
    assert sorted(ran) == sorted(
        [
            ("before-sleep", "pod-1"),
            ("after-sleep", "pod-2"),
            ("before-recv", "pod-1"),
            ("after-recv", "pod-2"),
            ("long", "pod-1"),
            ("long", "pod-2"),
            ("after-long", "pod-2"),
        ]
    )


def test_claimed_work_not_yet_started_goes_back_at_once(
    dbos: type[DBOS], config: dict[str, Any], store: Store
) -> None:
    config = {**config, "max_executor_threads": 1}
    hold = threading.Event()
    bodies: list[str] = []

    def define() -> None:
        @DBOS.workflow()
        def job(n: int) -> int:
            bodies.append(f"{DBOS.workflow_id}@{DBOS.executor_id}")
            if DBOS.executor_id == "pod-1":
                hold.wait(30)
            return n

        define.job = job  # type: ignore[attr-defined]

    launch(config, "pod-1", define)
    for n in range(3):
        with SetWorkflowID(f"job-{n}"):
            DBOS.start_workflow(define.job, n)  # type: ignore[attr-defined]
    wait_until("the first job to run", lambda: bodies)
    assert bodies == ["job-0@pod-1"]  # one worker thread: the others wait their turn

    done = threading.Event()
    stopper = threading.Thread(
        target=lambda: (DBOS.destroy(workflow_completion_timeout_sec=60), done.set())
    )
    stopper.start()
    try:
        # The two that never started are back on the queue while the first still runs.
        for wfid in ("job-1", "job-2"):
            wait_until(
                f"{wfid} to be handed back", lambda w=wfid: row(store, w).status == "ENQUEUED"
            )
            r = row(store, wfid)
            assert (r.executor_id, r.owner_xid, r.queue_name) == (None, None, INTERNAL_QUEUE)
        assert row(store, "job-0").status == "PENDING"
        states = {e.executor_id: e.state for e in store.list_executors("waypoint-test")}
        assert states == {"pod-1": "draining"}
    finally:
        hold.set()
    stopper.join(60)
    assert done.is_set()
    assert row(store, "job-0").status == "SUCCESS"
    assert bodies == ["job-0@pod-1"]

    launch(config, "pod-2", define)
    for n in (1, 2):
        assert DBOS.retrieve_workflow(f"job-{n}").get_result(polling_interval_sec=0.05) == n
    assert sorted(bodies) == ["job-0@pod-1", "job-1@pod-2", "job-2@pod-2"]


def test_without_a_timeout_destroy_keeps_dbos_semantics(
    dbos: type[DBOS], config: dict[str, Any], store: Store
) -> None:
    gate = threading.Event()

    def define() -> None:
        @DBOS.workflow()
        def parked() -> None:
            gate.wait(30)

        define.parked = parked  # type: ignore[attr-defined]

    launch(config, "pod-1", define)
    with SetWorkflowID("parked-1"):
        DBOS.start_workflow(define.parked)  # type: ignore[attr-defined]
    wait_until("the workflow to start", lambda: row(store, "parked-1").status == "PENDING")
    DBOS.destroy()
    gate.set()
    r = row(store, "parked-1")
    # Still PENDING on this executor, for its next launch: DBOS's destroy.
    assert (r.status, r.executor_id) == ("PENDING", "pod-1")
    assert store.list_executors("waypoint-test") == []


def test_workflows_parked_in_a_wait_are_handed_back_at_once(
    dbos: type[DBOS], config: dict[str, Any], store: Store
) -> None:
    in_step = threading.Event()
    finish_step = threading.Event()

    def define() -> None:
        @DBOS.step()
        def long_step() -> str:
            if DBOS.executor_id == "pod-1":
                in_step.set()
                finish_step.wait(60)
            return DBOS.executor_id

        @DBOS.workflow()
        def sleeper() -> str:
            DBOS.sleep(3)
            return DBOS.executor_id

        @DBOS.workflow()
        def waiter() -> str:
            return f"{DBOS.recv('go', timeout_seconds=120)}@{DBOS.executor_id}"

        @DBOS.workflow()
        def event_waiter() -> str:
            return f"{DBOS.get_event('nobody', 'key', timeout_seconds=120)}@{DBOS.executor_id}"

        @DBOS.workflow()
        def busy() -> str:
            return long_step()

        define.wfs = {  # type: ignore[attr-defined]
            "sleeper": sleeper,
            "waiter": waiter,
            "event-waiter": event_waiter,
            "busy": busy,
        }

    launch(config, "pod-1", define)
    for wfid, fn in define.wfs.items():  # type: ignore[attr-defined]
        with SetWorkflowID(wfid):
            DBOS.start_workflow(fn)
    assert in_step.wait(30)
    parked = ("sleeper", "waiter", "event-waiter")
    wait_until("the waits to begin", lambda: all(store.load_steps(w) for w in parked))

    done = threading.Event()
    stopper = threading.Thread(
        target=lambda: (DBOS.destroy(workflow_completion_timeout_sec=120), done.set())
    )
    stopper.start()
    try:
        # The parked ones go back while the step still runs (within its grace period).
        for wfid in parked:
            wait_until(f"{wfid} handed back", lambda w=wfid: row(store, w).status == "ENQUEUED")
        assert row(store, "busy").status == "PENDING"
        assert [e.state for e in store.list_executors("waypoint-test")] == ["draining"]
    finally:
        finish_step.set()
    stopper.join(120)
    assert done.is_set()
    assert row(store, "busy").status == "SUCCESS"  # it finished within the grace period

    launch(config, "pod-2", define)
    DBOS.send("waiter", "hello", "go")
    assert result_of("sleeper") == "pod-2"
    assert result_of("waiter") == "hello@pod-2"
    assert result_of("busy") == "pod-1"
    # Nobody sets that event: the handed-back wait goes on at pod-2.
    wait_until(
        "pod-2 to claim the event waiter", lambda: row(store, "event-waiter").executor_id == "pod-2"
    )
    assert row(store, "event-waiter").status == "PENDING"


def result_of(workflow_id: str) -> Any:
    return DBOS.retrieve_workflow(workflow_id).get_result(polling_interval_sec=0.05)
