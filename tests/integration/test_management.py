"""Managing workflows from outside their execution (both backends): resume, fork, delete,
delays, attributes, listing, application versions, patching, garbage collection, retention
and the global timeout.

Runs are abandoned and relaunched in-process the way tests/integration/test_recovery.py does.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any, Optional

import pytest

from tests.conftest import database_urls, requires_postgres
from waypoint import DBOS, EnqueueOptions, Queue, SetEnqueueOptions, SetWorkflowID
from waypoint.error import (
    DBOSAwaitedWorkflowCancelledError,
    DBOSException,
    DBOSNonExistentWorkflowError,
)
from waypoint.storage.registry import open_url

# -- helpers ------------------------------------------------------------------------------------


def relaunch(config: dict[str, Any], define: Callable[[], None]) -> None:
    """Tear down the current runtime (abandoning its work) and launch a fresh one."""
    DBOS.destroy(destroy_registry=True)
    DBOS(config=config)  # type: ignore[arg-type]
    define()
    DBOS.launch()


def status_of(workflow_id: str) -> Optional[str]:
    st = DBOS.get_workflow_status(workflow_id)
    return st.status if st is not None else None


def wait_status(workflow_id: str, wanted: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    status = None
    while time.monotonic() < deadline:
        status = status_of(workflow_id)
        if status == wanted:
            return
        time.sleep(0.02)
    raise AssertionError(f"{workflow_id} is {status}, expected {wanted}")


def wait_until(what: str, predicate: Callable[[], Any], timeout: float = 10) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def stays(what: str, predicate: Callable[[], bool], seconds: float) -> None:
    """Assert that ``predicate`` holds during the whole window (for negative checks)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert predicate(), what
        time.sleep(0.05)


def running_here(workflow_id: str) -> bool:
    """Whether an execution of the workflow is still in flight in this process."""
    from waypoint.core.runtime import get_runtime

    return get_runtime().active(workflow_id) is not None


def now_ms() -> int:
    return int(time.time() * 1000)


@pytest.fixture
def store(db_url: str) -> Iterator[Any]:
    """A second handle on the system database, as another process would have."""
    other = open_url(db_url)
    other.open()
    yield other
    other.close()


def step_names(workflow_id: str) -> list[str]:
    return [s["function_name"] for s in DBOS.list_workflow_steps(workflow_id)]


# -- resume -------------------------------------------------------------------------------------


def test_resume_cancelled_workflow_finishes_without_rerunning_steps(dbos: type[DBOS]) -> None:
    runs: Counter[int] = Counter()
    entered = threading.Event()
    release = threading.Event()

    @DBOS.step()
    def step(i: int) -> int:
        runs[i] += 1
        if i == 0 and runs[i] == 1:
            entered.set()
            release.wait(10)
        return i * 10

    @DBOS.workflow()
    def wf() -> list[int]:
        return [step(i) for i in range(3)]

    DBOS.launch()
    with SetWorkflowID("res-1"):
        handle = DBOS.start_workflow(wf)
    assert entered.wait(10)
    DBOS.cancel_workflow("res-1")
    release.set()
    with pytest.raises(DBOSAwaitedWorkflowCancelledError):
        handle.get_result()
    # The step in flight finishes and is checkpointed; the run stops at the next step.
    wait_until("the cancelled run to end", lambda: not running_here("res-1"))
    assert len(DBOS.list_workflow_steps("res-1")) == 1
    assert runs == {0: 1}

    resumed = DBOS.resume_workflow("res-1")
    assert resumed.workflow_id == "res-1"
    assert resumed.get_result(polling_interval_sec=0.05) == [0, 10, 20]
    assert runs == {0: 1, 1: 1, 2: 1}  # step 0 was checkpointed before the cancel
    status = DBOS.get_workflow_status("res-1")
    assert status is not None and status.status == "SUCCESS"
    assert status.recovery_attempts == 1  # reset to 0 by resume, then one claim


def test_resume_finished_workflow_changes_nothing(dbos: type[DBOS]) -> None:
    runs: list[int] = []

    @DBOS.workflow()
    def wf() -> int:
        runs.append(1)
        return 7

    DBOS.launch()
    with SetWorkflowID("res-done"):
        assert wf() == 7
    before = DBOS.get_workflow_status("res-done")
    assert before is not None
    handle = DBOS.resume_workflow("res-done")
    assert handle.get_result() == 7
    time.sleep(0.2)  # give a (wrongly) re-enqueued run the chance to start
    after = DBOS.get_workflow_status("res-done")
    assert after is not None
    assert runs == [1]
    for field in ("status", "output", "queue_name", "recovery_attempts", "updated_at"):
        assert getattr(after, field) == getattr(before, field), field


def test_resume_missing_workflow_raises_and_changes_nothing(dbos: type[DBOS]) -> None:
    @DBOS.workflow()
    def wf() -> None:
        DBOS.sleep(30)

    DBOS.launch()
    with SetWorkflowID("res-c"):
        DBOS.start_workflow(wf)
    DBOS.cancel_workflow("res-c")
    with pytest.raises(DBOSNonExistentWorkflowError):
        DBOS.resume_workflow("res-missing")
    with pytest.raises(DBOSNonExistentWorkflowError):
        DBOS.resume_workflows(["res-c", "res-missing"])
    assert DBOS.get_workflow_status("res-missing") is None
    time.sleep(0.1)
    assert status_of("res-c") == "CANCELLED"


def test_resume_onto_a_queue(dbos: type[DBOS]) -> None:
    Queue("resume-q")
    entered = threading.Event()
    release = threading.Event()
    runs: list[int] = []

    @DBOS.step()
    def first() -> None:
        runs.append(0)
        if len(runs) == 1:
            entered.set()
            release.wait(10)

    @DBOS.step()
    def second() -> str:
        runs.append(1)
        return DBOS.workflow_id or ""

    @DBOS.workflow()
    def wf() -> str:
        first()
        return second()

    DBOS.launch()
    with SetWorkflowID("res-q"):
        DBOS.start_workflow(wf)
    assert entered.wait(10)
    DBOS.cancel_workflow("res-q")
    release.set()
    wait_status("res-q", "CANCELLED")
    wait_until("the cancelled run to end", lambda: not running_here("res-q"))
    assert len(DBOS.list_workflow_steps("res-q")) == 1
    [handle] = DBOS.resume_workflows(["res-q"], queue_name="resume-q")
    assert handle.get_result(polling_interval_sec=0.05) == "res-q"
    status = DBOS.get_workflow_status("res-q")
    assert status is not None and status.queue_name == "resume-q"
    assert runs == [0, 1]


# -- fork ---------------------------------------------------------------------------------------


def _define_forkable(runs: Counter[str], gate: dict[str, threading.Event]) -> Any:
    @DBOS.step()
    def a() -> str:
        runs["a"] += 1
        return "a"

    @DBOS.step()
    def b() -> str:
        runs["b"] += 1
        wfid = DBOS.workflow_id or ""
        if wfid in gate:
            gate[wfid].wait(10)
        return "b"

    @DBOS.step()
    def c() -> str:
        runs["c"] += 1
        return "c"

    @DBOS.workflow(name="forkable")
    def forkable() -> str:
        out = a()
        DBOS.set_event("e1", "v1")
        DBOS.write_stream("s", "x1")
        out += b()
        DBOS.set_event("e2", "v2")
        DBOS.write_stream("s", "x2")
        out += c()
        return out

    return forkable


def test_fork_reruns_only_later_steps_and_copies_earlier_events_and_streams(
    dbos: type[DBOS],
) -> None:
    Queue("fork-q")
    runs: Counter[str] = Counter()
    gate: dict[str, threading.Event] = {}
    forkable = _define_forkable(runs, gate)
    DBOS.launch()
    with SetWorkflowID("src"):
        assert forkable() == "abc"
    names = step_names("src")
    start = names.index(next(n for n in names if n.endswith("b"))) + 1  # numbered from 1
    assert start == 4, names  # a, setEvent, writeStream, then b
    assert runs == {"a": 1, "b": 1, "c": 1}

    gate["fork-1"] = threading.Event()
    with SetWorkflowID("fork-1"):
        handle = DBOS.fork_workflow("src", start)
    assert handle.workflow_id == "fork-1"
    # While the fork is held inside b, it has only what was written before the fork point.
    wait_until("the fork to enter b", lambda: runs["b"] == 2)
    assert DBOS.get_all_events("fork-1") == {"e1": "v1"}
    assert DBOS.read_stream_offset("fork-1", "s", 0) == "x1"
    copied = DBOS.list_workflow_steps("fork-1")
    assert [s["function_id"] for s in copied] == [1, 2, 3]
    gate["fork-1"].set()
    assert handle.get_result(polling_interval_sec=0.05) == "abc"
    assert runs == {"a": 1, "b": 2, "c": 2}
    assert DBOS.get_all_events("fork-1") == {"e1": "v1", "e2": "v2"}
    assert [DBOS.read_stream_offset("fork-1", "s", i) for i in range(2)] == ["x1", "x2"]
    assert step_names("fork-1") == names

    fork = DBOS.get_workflow_status("fork-1")
    src = DBOS.get_workflow_status("src")
    assert fork is not None and src is not None
    assert fork.forked_from == "src" and not fork.was_forked_from
    assert src.was_forked_from and src.forked_from is None
    assert fork.app_version == src.app_version
    assert [w.workflow_id for w in DBOS.list_workflows(forked_from="src")] == ["fork-1"]

    # From step 1 everything runs again; a fork without SetWorkflowID gets a fresh ID, and
    # it can go to a queue of choice with a timeout of its own.
    again = DBOS.fork_workflow("src", 1, queue_name="fork-q", timeout_seconds=30)
    assert again.workflow_id not in ("src", "fork-1")
    assert again.get_result(polling_interval_sec=0.05) == "abc"
    assert runs == {"a": 2, "b": 3, "c": 3}
    st = again.get_status()
    assert st.queue_name == "fork-q" and st.workflow_timeout_ms == 30_000
    assert st.forked_from == "src"


def test_fork_application_version_stamps_the_fork(dbos: type[DBOS]) -> None:
    runs: Counter[str] = Counter()
    forkable = _define_forkable(runs, {})
    DBOS.launch()
    with SetWorkflowID("src-v"):
        forkable()
    with SetWorkflowID("fork-v"):
        DBOS.fork_workflow("src-v", 3, application_version="some-other-version")
    status = DBOS.get_workflow_status("fork-v")
    assert status is not None and status.app_version == "some-other-version"
    # This executor runs another version, so the fork waits for its own executors.
    stays("fork of another version stays ENQUEUED", lambda: status_of("fork-v") == "ENQUEUED", 0.5)
    assert runs["b"] == 1


def test_fork_replacement_children(dbos: type[DBOS]) -> None:
    child_runs: list[str] = []

    @DBOS.workflow()
    def child() -> str:
        child_runs.append(DBOS.workflow_id or "")
        return f"child:{DBOS.workflow_id}"

    @DBOS.workflow()
    def parent() -> str:
        handle = DBOS.start_workflow(child)
        return str(handle.get_result(polling_interval_sec=0.05))

    DBOS.launch()
    with SetWorkflowID("par"):
        assert parent() == "child:par-1"
    steps = DBOS.list_workflow_steps("par")
    assert steps[0]["child_workflow_id"] == "par-1"
    with SetWorkflowID("new-child"):
        DBOS.fork_workflow("par-1", 1).get_result(polling_interval_sec=0.05)
    with SetWorkflowID("par-fork"):
        handle = DBOS.fork_workflow("par", 2, replacement_children={"par-1": "new-child"})
    assert handle.get_result(polling_interval_sec=0.05) == "child:new-child"
    assert DBOS.list_workflow_steps("par-fork")[0]["child_workflow_id"] == "new-child"
    assert DBOS.list_workflow_steps("par")[0]["child_workflow_id"] == "par-1"
    assert child_runs == ["par-1", "new-child"]


def test_fork_errors(dbos: type[DBOS]) -> None:
    @DBOS.workflow()
    def wf() -> int:
        return 1

    DBOS.launch()
    with SetWorkflowID("f-src"):
        wf()
    with SetWorkflowID("f-other"):
        wf()
    with pytest.raises(DBOSNonExistentWorkflowError):
        DBOS.fork_workflow("f-missing", 0)
    with SetWorkflowID("f-other"), pytest.raises(DBOSException):
        DBOS.fork_workflow("f-src", 0)
    with pytest.raises(DBOSException):
        DBOS.fork_workflow("f-src", "1")  # type: ignore[arg-type]
    other = DBOS.get_workflow_status("f-other")
    assert other is not None and other.forked_from is None and other.status == "SUCCESS"
    assert len(DBOS.list_workflows()) == 2


# -- delete, delay, attributes ------------------------------------------------------------------


def test_delete_workflow_with_and_without_children(dbos: type[DBOS], store: Any) -> None:
    @DBOS.workflow()
    def child() -> str:
        DBOS.set_event("k", "child")
        return "c"

    @DBOS.workflow()
    def parent() -> str:
        DBOS.set_event("k", "parent")
        DBOS.send(f"{DBOS.workflow_id}", "note")
        return str(DBOS.start_workflow(child).get_result(polling_interval_sec=0.05))

    DBOS.launch()
    for wid in ("del-a", "del-b"):
        with SetWorkflowID(wid):
            assert parent() == "c"
    assert store.list_steps("del-a", None, None)
    [child_a] = [w.workflow_id for w in DBOS.list_workflows(parent_workflow_id="del-a")]
    [child_b] = [w.workflow_id for w in DBOS.list_workflows(parent_workflow_id="del-b")]

    DBOS.delete_workflow("del-a")
    assert DBOS.get_workflow_status("del-a") is None
    assert store.list_steps("del-a", None, None) == []
    assert DBOS.get_workflow_status(child_a) is not None  # the child stays
    assert DBOS.get_all_events(child_a) == {"k": "child"}

    DBOS.delete_workflows(["del-b"], delete_children=True)
    assert DBOS.get_workflow_status("del-b") is None
    assert DBOS.get_workflow_status(child_b) is None
    assert store.list_steps(child_b, None, None) == []
    assert {w.workflow_id for w in DBOS.list_workflows()} == {child_a}
    DBOS.delete_workflow("del-missing")  # deleting nothing is not an error


def test_delete_cascades_to_events_streams_and_messages(dbos: type[DBOS], db_url: str) -> None:
    @DBOS.workflow()
    def wf() -> None:
        DBOS.set_event("k", 1)
        DBOS.write_stream("s", 1)

    DBOS.launch()
    with SetWorkflowID("casc"):
        wf()
    DBOS.send("casc", "unread")
    DBOS.delete_workflow("casc")
    counts = _row_counts(db_url, "casc")
    assert counts == dict.fromkeys(counts, 0), counts


def _row_counts(db_url: str, workflow_id: str) -> dict[str, int]:
    tables = {
        "operation_outputs": "workflow_uuid",
        "workflow_events": "workflow_uuid",
        "workflow_events_history": "workflow_uuid",
        "streams": "workflow_uuid",
        "notifications": "destination_uuid",
    }
    out: dict[str, int] = {}
    if db_url.startswith("sqlite"):
        import sqlite3

        with sqlite3.connect(db_url.split("sqlite:///", 1)[1]) as conn:
            for t, col in tables.items():
                q = f"SELECT count(*) FROM {t} WHERE {col} = ?"
                out[t] = conn.execute(q, (workflow_id,)).fetchone()[0]
        return out
    import psycopg

    for url in database_urls(db_url):
        with psycopg.connect(url, autocommit=True) as conn:
            for t, col in tables.items():
                q = f"SELECT count(*) FROM dbos.{t} WHERE {col} = %s"
                row = conn.execute(q, (workflow_id,)).fetchone()  # type: ignore[arg-type]
                assert row is not None
                out[t] = out.get(t, 0) + row[0]
    return out


def test_set_workflow_delay(dbos: type[DBOS]) -> None:
    Queue("delay-q")

    @DBOS.workflow()
    def wf() -> str:
        return "ran"

    DBOS.launch()
    with SetWorkflowID("dl-1"), SetEnqueueOptions(delay_seconds=60):
        handle = DBOS.enqueue_workflow("delay-q", wf)
    with SetWorkflowID("dl-2"), SetEnqueueOptions(delay_seconds=60):
        DBOS.enqueue_workflow("delay-q", wf)
    with SetWorkflowID("dl-done"):
        wf()
    assert status_of("dl-1") == "DELAYED"
    first = DBOS.get_workflow_status("dl-2")
    assert first is not None and first.delay_until_epoch_ms is not None

    # Exactly one of the two arguments.
    with pytest.raises(DBOSException):
        DBOS.set_workflow_delay("dl-1")
    with pytest.raises(DBOSException):
        DBOS.set_workflow_delay("dl-1", delay_seconds=1, delay_until_epoch_ms=now_ms())

    later = now_ms() + 120_000
    DBOS.set_workflow_delay("dl-2", delay_until_epoch_ms=later)
    st = DBOS.get_workflow_status("dl-2")
    assert st is not None and st.status == "DELAYED" and st.delay_until_epoch_ms == later

    DBOS.set_workflow_delay("dl-1", delay_seconds=0)
    assert handle.get_result(polling_interval_sec=0.05) == "ran"

    # Only DELAYED workflows change.
    done_before = DBOS.get_workflow_status("dl-done")
    DBOS.set_workflow_delay("dl-done", delay_seconds=30)
    done_after = DBOS.get_workflow_status("dl-done")
    assert done_before is not None and done_after is not None
    assert done_after.status == "SUCCESS" and done_after.delay_until_epoch_ms is None
    assert done_after.updated_at == done_before.updated_at
    assert status_of("dl-2") == "DELAYED"


def test_update_workflow_attributes(dbos: type[DBOS]) -> None:
    @DBOS.workflow()
    def wf() -> None:
        return None

    DBOS.launch()
    with SetWorkflowID("attr-1"):
        wf()
    attrs = {"team": "payments", "n": 3, "nested": {"ok": True, "xs": [1, 2]}}
    DBOS.update_workflow_attributes("attr-1", attrs)
    st = DBOS.get_workflow_status("attr-1")
    assert st is not None and st.attributes == attrs
    DBOS.update_workflow_attributes("attr-1", {"only": "this"})
    st = DBOS.get_workflow_status("attr-1")
    assert st is not None and st.attributes == {"only": "this"}
    for bad in (["not", "a", "dict"], "text", 5):
        with pytest.raises(DBOSException):
            DBOS.update_workflow_attributes("attr-1", bad)  # type: ignore[arg-type]
    with pytest.raises(DBOSException):
        DBOS.update_workflow_attributes("attr-1", {"not-json": {1, 2}})
    st = DBOS.get_workflow_status("attr-1")
    assert st is not None and st.attributes == {"only": "this"}
    with pytest.raises(DBOSNonExistentWorkflowError):
        DBOS.update_workflow_attributes("attr-missing", {"a": 1})
    DBOS.update_workflow_attributes("attr-1", None)
    st = DBOS.get_workflow_status("attr-1")
    assert st is not None and not st.attributes


# -- listing ------------------------------------------------------------------------------------


def test_list_queued_workflows(dbos: type[DBOS]) -> None:
    served = Queue("served-q")
    Queue("idle-q")  # declared, but this process does not dequeue from it
    DBOS.listen_queues([served])
    entered = threading.Event()
    release = threading.Event()

    @DBOS.workflow()
    def blocker() -> None:
        entered.set()
        release.wait(10)

    @DBOS.workflow()
    def quick() -> int:
        return 1

    DBOS.launch()
    try:
        with SetWorkflowID("lq-pending"):
            DBOS.enqueue_workflow("served-q", blocker)
        assert entered.wait(10)
        with SetWorkflowID("lq-done"):
            DBOS.enqueue_workflow("served-q", quick).get_result(polling_interval_sec=0.05)
        with SetWorkflowID("lq-enq"):
            DBOS.enqueue_workflow("idle-q", quick)
        with SetWorkflowID("lq-delayed"), SetEnqueueOptions(delay_seconds=60):
            DBOS.enqueue_workflow("served-q", quick)
        with SetWorkflowID("lq-direct"):
            DBOS.start_workflow(quick).get_result()
        wait_status("lq-pending", "PENDING")

        queued = {w.workflow_id: w.status for w in DBOS.list_queued_workflows()}
        assert queued == {"lq-pending": "PENDING", "lq-enq": "ENQUEUED", "lq-delayed": "DELAYED"}
        only = DBOS.list_queued_workflows(queue_name="idle-q")
        assert [w.workflow_id for w in only] == ["lq-enq"]
        enq = DBOS.list_queued_workflows(status="ENQUEUED")
        assert [w.workflow_id for w in enq] == ["lq-enq"]
        assert {w.workflow_id for w in DBOS.list_workflows()} == {
            "lq-pending",
            "lq-done",
            "lq-enq",
            "lq-delayed",
            "lq-direct",
        }
    finally:
        release.set()


def test_list_workflows_filters_and_validation(dbos: type[DBOS]) -> None:
    @DBOS.workflow(name="alpha")
    def alpha(i: int) -> int:
        return i

    @DBOS.workflow(name="beta")
    def beta() -> None:
        raise ValueError("boom")

    DBOS.launch()
    for i in range(3):
        with SetWorkflowID(f"lw-a{i}"):
            alpha(i)
        time.sleep(0.005)  # distinct created_at
    with SetWorkflowID("lw-b"), pytest.raises(ValueError):
        beta()

    ids = [w.workflow_id for w in DBOS.list_workflows()]
    assert ids == ["lw-a0", "lw-a1", "lw-a2", "lw-b"]
    assert [w.workflow_id for w in DBOS.list_workflows(sort_desc=True, limit=2)] == [
        "lw-b",
        "lw-a2",
    ]
    assert [w.workflow_id for w in DBOS.list_workflows(limit=2, offset=1)] == ["lw-a1", "lw-a2"]
    assert [w.workflow_id for w in DBOS.list_workflows(status="ERROR")] == ["lw-b"]
    assert len(DBOS.list_workflows(status=["SUCCESS", "ERROR"])) == 4
    assert len(DBOS.list_workflows(name="alpha")) == 3
    assert [w.workflow_id for w in DBOS.list_workflows(workflow_ids=["lw-a1", "nope"])] == ["lw-a1"]
    assert len(DBOS.list_workflows(workflow_id_prefix="lw-a")) == 3
    no_io = DBOS.list_workflows(workflow_ids=["lw-a2"], load_input=False, load_output=False)
    assert no_io[0].input is None and no_io[0].output is None
    full = DBOS.list_workflows(workflow_ids=["lw-a2"])
    assert full[0].output == 2
    assert DBOS.list_workflows(status="SUCCESS", name="beta") == []

    for bad in ("RUNNING", ["SUCCESS", "nope"], "success"):
        with pytest.raises(DBOSException):
            DBOS.list_workflows(status=bad)
    for bad_limit in (-1, "3", 1.5, True):
        with pytest.raises(DBOSException):
            DBOS.list_workflows(limit=bad_limit)
    with pytest.raises(DBOSException):
        DBOS.list_workflows(offset=-2)
    with pytest.raises(DBOSException):
        DBOS.list_workflows(start_time="yesterday")
    with pytest.raises(DBOSException):
        DBOS.list_workflows(no_such_filter=1)


def test_list_workflows_accepts_all_spec_filters(dbos: type[DBOS]) -> None:
    @DBOS.workflow()
    def wf() -> None:
        return None

    DBOS.launch()
    with SetWorkflowID("spec-f"):
        wf()
    DBOS.fork_workflow("spec-f", 0).get_result(polling_interval_sec=0.05)
    assert [w.workflow_id for w in DBOS.list_workflows(was_forked_from=True)] == ["spec-f"]
    assert len(DBOS.list_workflows(has_parent=False)) == 2
    assert DBOS.list_workflows(schedule_name="none") == []
    assert len(DBOS.list_workflows(completed_after="2000-01-01T00:00:00Z")) == 2


# -- application versions -----------------------------------------------------------------------


def test_application_versions_and_unversioned_enqueues(
    dbos: type[DBOS], config: dict[str, Any]
) -> None:
    Queue("ver-q")

    def define() -> None:
        Queue("ver-q")

        @DBOS.workflow(name="ver_wf")
        def ver_wf(x: int) -> str:
            return f"{DBOS.application_version}:{x}"

    DBOS.destroy(destroy_registry=True)
    relaunch({**config, "application_version": "v1"}, define)
    versions = DBOS.list_application_versions()
    assert [v["version_name"] for v in versions] == ["v1"]
    assert DBOS.get_latest_application_version()["version_name"] == "v1"
    time.sleep(0.01)
    relaunch({**config, "application_version": "v2"}, define)
    versions = DBOS.list_application_versions()
    assert [v["version_name"] for v in versions] == ["v2", "v1"]
    assert versions[0]["version_timestamp"] >= versions[1]["version_timestamp"]
    assert DBOS.get_latest_application_version()["version_name"] == "v2"

    opts: EnqueueOptions = {"workflow_name": "ver_wf", "queue_name": "ver-q"}
    h1 = DBOS.enqueue_workflow_with_options({**opts, "workflow_id": "unv-1"}, 1)
    assert h1.get_result(polling_interval_sec=0.05) == "v2:1"
    # Let the dispatcher pass triggered by unv-1's completion end: a claim already in flight
    # when the version is demoted below may still take unversioned work (a benign race).
    time.sleep(0.2)

    DBOS.set_latest_application_version("v1")
    assert DBOS.get_latest_application_version()["version_name"] == "v1"
    assert [v["version_name"] for v in DBOS.list_application_versions()] == ["v1", "v2"]
    h2 = DBOS.enqueue_workflow_with_options({**opts, "workflow_id": "unv-2"}, 2)
    st = DBOS.get_workflow_status("unv-2")
    assert st is not None and st.app_version is None
    # v2 is no longer the latest version: it leaves unversioned work alone.
    stays("unversioned enqueue stays ENQUEUED", lambda: status_of("unv-2") == "ENQUEUED", 0.7)
    # Pinned to this version, it runs.
    h3 = DBOS.enqueue_workflow_with_options(
        {**opts, "workflow_id": "pin-3", "app_version": "v2"}, 3
    )
    assert h3.get_result(polling_interval_sec=0.05) == "v2:3"
    assert status_of("unv-2") == "ENQUEUED"

    DBOS.set_latest_application_version("v2")
    assert DBOS.get_latest_application_version()["version_name"] == "v2"
    # Latest again: the next claim on the queue (nudged by a new enqueue) takes it too.
    h4 = DBOS.enqueue_workflow_with_options({**opts, "workflow_id": "unv-4"}, 4)
    assert h4.get_result(polling_interval_sec=0.05) == "v2:4"
    assert h2.get_result(polling_interval_sec=0.05) == "v2:2"
    with pytest.raises(DBOSException):
        DBOS.set_latest_application_version("never-registered")
    assert DBOS.get_latest_application_version()["version_name"] == "v2"


@requires_postgres
def test_promotion_starts_waiting_unversioned_work_promptly(
    dbos: type[DBOS], config: dict[str, Any], backend: str
) -> None:
    if backend != "postgres":
        pytest.skip("SQLite polls queues every second")

    def define() -> None:
        Queue("ver-q3")

        @DBOS.workflow(name="ver_wf3")
        def ver_wf3() -> str:
            return str(DBOS.application_version)

    DBOS.destroy(destroy_registry=True)
    relaunch({**config, "application_version": "a"}, define)
    time.sleep(0.01)
    relaunch({**config, "application_version": "b"}, define)
    DBOS.set_latest_application_version("a")
    DBOS.enqueue_workflow_with_options(
        {"workflow_name": "ver_wf3", "queue_name": "ver-q3", "workflow_id": "unv-p"}
    )
    stays("demoted executor leaves it", lambda: status_of("unv-p") == "ENQUEUED", 0.3)
    DBOS.set_latest_application_version("b")
    wait_status("unv-p", "SUCCESS", timeout=3)


def test_version_promoted_elsewhere_is_noticed(
    dbos: type[DBOS], config: dict[str, Any], store: Any
) -> None:
    def define() -> None:
        Queue("ver-q2")

        @DBOS.workflow(name="ver_wf2")
        def ver_wf2() -> str:
            return str(DBOS.application_version)

    DBOS.destroy(destroy_registry=True)
    relaunch({**config, "application_version": "old"}, define)
    time.sleep(0.01)
    store.register_version("new", "waypoint-test")  # another process deploys "new"
    assert DBOS.get_latest_application_version()["version_name"] == "new"
    DBOS.enqueue_workflow_with_options(
        {"workflow_name": "ver_wf2", "queue_name": "ver-q2", "workflow_id": "unv-x"}
    )
    stays("old executor leaves unversioned work alone", lambda: status_of("unv-x") == "ENQUEUED", 2)


# -- patching -----------------------------------------------------------------------------------


def test_patch_takes_new_path_and_records_marker(dbos: type[DBOS], config: dict[str, Any]) -> None:
    calls: list[str] = []

    def define() -> None:
        @DBOS.step()
        def old_step() -> str:
            calls.append("old")
            return "old"

        @DBOS.step()
        def new_step() -> str:
            calls.append("new")
            return "new"

        @DBOS.workflow(name="patched")
        def patched() -> str:
            if DBOS.patch("fix-1"):
                return new_step()
            return old_step()

        define.wf = patched  # type: ignore[attr-defined]

    relaunch({**config, "enable_patching": True}, define)
    assert DBOS.application_version == "PATCHING_ENABLED"
    with SetWorkflowID("p-new"):
        assert define.wf() == "new"  # type: ignore[attr-defined]
    steps = DBOS.list_workflow_steps("p-new")
    assert (steps[0]["function_id"], steps[0]["function_name"]) == (1, "DBOS.patch-fix-1")
    assert steps[1]["output"] == "new"
    assert calls == ["new"]
    # Replaying the same ID (a fork past the end) sees the marker and keeps the new path.
    assert DBOS.fork_workflow("p-new", 3).get_result(polling_interval_sec=0.05) == "new"
    assert calls == ["new"]


def test_patch_replays_old_path_for_workflows_recorded_by_old_code(
    dbos: type[DBOS], config: dict[str, Any]
) -> None:
    config = {**config, "enable_patching": True}
    calls: list[str] = []
    entered = threading.Event()
    release_old = threading.Event()

    def old_code() -> None:
        @DBOS.step(name="charge")
        def charge() -> str:
            calls.append("charge")
            return "charged"

        @DBOS.step(name="finish")
        def finish(prev: str) -> str:
            calls.append("finish")
            if not entered.is_set():
                entered.set()
                release_old.wait(10)  # the abandoned execution never gets further
            return prev + "+finished"

        @DBOS.workflow(name="checkout")
        def checkout() -> str:
            return finish(charge())

        old_code.wf = checkout  # type: ignore[attr-defined]

    def new_code() -> None:
        @DBOS.step(name="charge")
        def charge() -> str:
            calls.append("charge")
            return "charged"

        @DBOS.step(name="charge_v2")
        def charge_v2() -> str:
            calls.append("charge_v2")
            return "charged-v2"

        @DBOS.step(name="finish")
        def finish(prev: str) -> str:
            calls.append("finish")
            return prev + "+finished"

        @DBOS.workflow(name="checkout")
        def checkout() -> str:
            took = DBOS.patch("v2-charge")
            calls.append(f"patch={took}")
            first = charge_v2() if took else charge()
            return finish(first)

        new_code.wf = checkout  # type: ignore[attr-defined]

    try:
        relaunch(config, old_code)
        with SetWorkflowID("p-old"):
            DBOS.start_workflow(old_code.wf)  # type: ignore[attr-defined]
        assert entered.wait(10)
        assert calls == ["charge", "finish"]
        relaunch(config, new_code)  # recovery replays p-old under the new code
        assert (
            DBOS.retrieve_workflow("p-old").get_result(polling_interval_sec=0.05)
            == "charged+finished"
        )
        # charge was replayed from its checkpoint; the patch did not consume position 0.
        assert calls == ["charge", "finish", "patch=False", "finish"]
        assert step_names("p-old")[0].endswith("charge")
        assert not any(n.startswith("DBOS.patch") for n in step_names("p-old"))

        calls.clear()
        with SetWorkflowID("p-fresh"):
            assert new_code.wf() == "charged-v2+finished"  # type: ignore[attr-defined]
        assert calls == ["patch=True", "charge_v2", "finish"]
        assert step_names("p-fresh")[0] == "DBOS.patch-v2-charge"
    finally:
        release_old.set()


def test_deprecate_patch(dbos: type[DBOS], config: dict[str, Any]) -> None:
    config = {**config, "enable_patching": True}
    calls: list[str] = []

    def patched_code() -> None:
        @DBOS.step(name="work")
        def work() -> str:
            calls.append("work")
            return "w"

        @DBOS.workflow(name="dep")
        def dep() -> str:
            assert DBOS.patch("p")
            return work()

        patched_code.wf = dep  # type: ignore[attr-defined]

    def deprecated_code() -> None:
        @DBOS.step(name="work")
        def work() -> str:
            calls.append("work")
            return "w"

        @DBOS.step(name="tail")
        def tail() -> str:
            calls.append("tail")
            return "t"

        @DBOS.workflow(name="dep")
        def dep() -> str:
            assert DBOS.deprecate_patch("p")
            return work() + tail()

        deprecated_code.wf = dep  # type: ignore[attr-defined]

    relaunch(config, patched_code)
    with SetWorkflowID("dp-1"):
        assert patched_code.wf() == "w"  # type: ignore[attr-defined]
    assert step_names("dp-1")[0] == "DBOS.patch-p"
    relaunch(config, deprecated_code)
    calls.clear()
    # Replay of a workflow that has the marker: the marker's position is consumed.
    with SetWorkflowID("dp-1b"):
        fork = DBOS.fork_workflow("dp-1", 3)
    assert fork.get_result(polling_interval_sec=0.05) == "wt"
    assert calls == ["tail"]
    names = step_names("dp-1b")
    assert names[0] == "DBOS.patch-p" and names[1].endswith("work") and names[2].endswith("tail")
    # A fresh workflow records no marker.
    calls.clear()
    with SetWorkflowID("dp-2"):
        assert deprecated_code.wf() == "wt"  # type: ignore[attr-defined]
    assert calls == ["work", "tail"]
    assert not any(n.startswith("DBOS.patch") for n in step_names("dp-2"))


def test_patch_requires_enable_patching(dbos: type[DBOS]) -> None:
    @DBOS.workflow()
    def wf() -> bool:
        return DBOS.patch("x")

    DBOS.launch()
    with SetWorkflowID("np"), pytest.raises(DBOSException):
        wf()
    with pytest.raises(DBOSException):
        DBOS.patch("x")  # outside a workflow


# -- garbage collection, retention, global timeout ----------------------------------------------


def _gc_fixture_workflows(db_url: str) -> dict[str, Any]:
    """Finished workflows (oldest first, distinct created_at) plus one of each active kind."""
    Queue("gc-served")
    Queue("gc-idle")
    DBOS.listen_queues(["gc-served"])
    release = threading.Event()
    entered = threading.Event()

    @DBOS.step()
    def note() -> str:
        return "step"

    @DBOS.workflow()
    def done(i: int) -> int:
        note()
        DBOS.set_event("k", i)
        DBOS.write_stream("s", i)
        if i == 1:
            raise ValueError("failed on purpose")
        return i

    @DBOS.workflow()
    def blocker() -> None:
        entered.set()
        release.wait(10)

    return {"done": done, "blocker": blocker, "release": release, "entered": entered}


def _make_finished(done: Any, n: int, prefix: str = "gc") -> list[str]:
    ids = []
    for i in range(n):
        wid = f"{prefix}-{i}"
        with SetWorkflowID(wid):
            try:
                done(i)
            except ValueError:
                pass
        ids.append(wid)
        time.sleep(0.003)
    return ids


def _make_active(wfs: dict[str, Any]) -> list[str]:
    with SetWorkflowID("gc-pending"):
        DBOS.start_workflow(wfs["blocker"])
    assert wfs["entered"].wait(10)
    with SetWorkflowID("gc-enqueued"):
        DBOS.enqueue_workflow("gc-idle", wfs["done"], 99)
    with SetWorkflowID("gc-delayed"), SetEnqueueOptions(delay_seconds=60):
        DBOS.enqueue_workflow("gc-served", wfs["done"], 98)
    return ["gc-pending", "gc-enqueued", "gc-delayed"]


def test_garbage_collect_by_cutoff_keeps_active_workflows(dbos: type[DBOS], db_url: str) -> None:
    wfs = _gc_fixture_workflows(db_url)
    DBOS.launch()
    try:
        old = _make_finished(wfs["done"], 3)
        with SetWorkflowID("gc-cancelled"):
            DBOS.start_workflow(wfs["blocker"])
        DBOS.cancel_workflow("gc-cancelled")
        old.append("gc-cancelled")
        wfs["entered"].clear()
        active = _make_active(wfs)
        time.sleep(0.003)
        cutoff = now_ms()
        time.sleep(0.003)
        recent = _make_finished(wfs["done"], 1, prefix="gc-new")
        assert status_of("gc-1") == "ERROR"
        assert {status_of(w) for w in active} == {"PENDING", "ENQUEUED", "DELAYED"}

        assert DBOS.garbage_collect(cutoff_epoch_timestamp_ms=cutoff) == len(old)
        left = {w.workflow_id for w in DBOS.list_workflows()}
        assert left == set(active) | set(recent)
        for wid in old:
            counts = _row_counts(db_url, wid)
            assert counts == dict.fromkeys(counts, 0), (wid, counts)
        assert _row_counts(db_url, recent[0])["operation_outputs"] > 0
        # Nothing more to do; active workflows are never collected, however old.
        assert DBOS.garbage_collect(cutoff_epoch_timestamp_ms=now_ms() + 60_000) == len(recent)
        assert {w.workflow_id for w in DBOS.list_workflows()} == set(active)
        assert DBOS.garbage_collect() == 0
    finally:
        wfs["release"].set()


def test_garbage_collect_by_rows_threshold(dbos: type[DBOS], db_url: str) -> None:
    wfs = _gc_fixture_workflows(db_url)
    DBOS.launch()
    ids = _make_finished(wfs["done"], 5)
    assert DBOS.garbage_collect(rows_threshold=10) == 0
    assert DBOS.garbage_collect(rows_threshold=2) == 3
    assert [w.workflow_id for w in DBOS.list_workflows()] == ids[3:]
    assert DBOS.garbage_collect(rows_threshold=2) == 0


def test_garbage_collect_cutoff_or_rows_threshold(dbos: type[DBOS], db_url: str) -> None:
    wfs = _gc_fixture_workflows(db_url)
    DBOS.launch()
    ids = _make_finished(wfs["done"], 4)
    newest = DBOS.get_workflow_status(ids[3])
    assert newest is not None and newest.created_at is not None
    # The cutoff alone would delete gc-0..gc-2; the threshold alone only gc-0.
    deleted = DBOS.garbage_collect(cutoff_epoch_timestamp_ms=newest.created_at, rows_threshold=3)
    assert deleted == 3
    assert [w.workflow_id for w in DBOS.list_workflows()] == ids[3:]


def test_global_timeout_cancels_old_in_flight_workflows(dbos: type[DBOS], db_url: str) -> None:
    wfs = _gc_fixture_workflows(db_url)
    DBOS.launch()
    try:
        finished = _make_finished(wfs["done"], 1)
        with SetWorkflowID("gt-old"):
            old = DBOS.start_workflow(wfs["blocker"])
        with SetWorkflowID("gt-enq"):
            DBOS.enqueue_workflow("gc-idle", wfs["done"], 7)
        time.sleep(0.003)
        cutoff = now_ms()
        time.sleep(0.003)
        wfs["entered"].clear()
        with SetWorkflowID("gt-new"):
            DBOS.start_workflow(wfs["blocker"])
        assert wfs["entered"].wait(10)

        cancelled = DBOS.global_timeout(cutoff)
        assert sorted(cancelled) == ["gt-enq", "gt-old"]
        assert status_of("gt-old") == "CANCELLED"
        assert status_of("gt-enq") == "CANCELLED"
        assert status_of("gt-new") == "PENDING"
        assert status_of(finished[0]) == "SUCCESS"
        wfs["release"].set()
        with pytest.raises(DBOSAwaitedWorkflowCancelledError):
            old.get_result()
        wait_status("gt-new", "SUCCESS")
    finally:
        wfs["release"].set()


def test_retention_policy_runs_periodically(config: dict[str, Any], db_url: str) -> None:
    """retention_max_age_sec is applied by the runtime on its own, every
    retention_interval_sec, to finished workflows only."""
    DBOS.destroy(destroy_registry=True)
    DBOS(  # type: ignore[arg-type]
        config={**config, "retention_max_age_sec": 1.0, "retention_interval_sec": 0.2}
    )
    try:
        wfs = _gc_fixture_workflows(db_url)
        DBOS.launch()
        try:
            ids = _make_finished(wfs["done"], 2)
            active = _make_active(wfs)
            # Younger than the maximum age: kept for now.
            assert all(DBOS.get_workflow_status(w) is not None for w in ids)
            wait_until(
                "the retention policy to delete finished workflows",
                lambda: all(DBOS.get_workflow_status(w) is None for w in ids),
                timeout=5,
            )
            assert {w.workflow_id for w in DBOS.list_workflows()} == set(active)
            for wid in ids:
                counts = _row_counts(db_url, wid)
                assert counts == dict.fromkeys(counts, 0), (wid, counts)
        finally:
            wfs["release"].set()
    finally:
        DBOS.destroy(destroy_registry=True)


# -- the executors table --------------------------------------------------------------------------


def test_executors_table_lists_this_process(
    dbos: type[DBOS], config: dict[str, Any], store: Any
) -> None:
    import os

    DBOS.destroy(destroy_registry=True)
    DBOS(config={**config, "executor_id": "exec-live", "application_version": "ev1"})  # type: ignore[arg-type]
    DBOS.launch()

    rows = DBOS.list_executors()
    mine = [r for r in rows if r["this_process"]]
    assert len(mine) == 1
    assert mine[0]["executor_id"] == "exec-live" and mine[0]["pid"] == os.getpid()
    assert mine[0]["application_version"] == "ev1"
    assert 0 <= mine[0]["silent_sec"] < 5
    assert [r.executor_id for r in store.list_executors("waypoint-test")] == ["exec-live"]
    # A clean shutdown retires the row.
    DBOS.destroy(destroy_registry=True)
    assert store.list_executors("waypoint-test") == []
