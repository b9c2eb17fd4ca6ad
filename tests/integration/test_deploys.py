"""Deploying a new application version (both backends): which version runs an old version's
workflows (DBOS's rule by default; with ``version_compatibility: "fingerprint"`` also the ones
whose code did not change), and no poison left by a version that is gone: a debounce key, a
concurrency-limited queue and a schedule keep working on the new version.

As in test_recovery.py, a "crashed" process is a runtime destroyed under its running work
(its threads keep blocking); tests/crash/test_deploy_versions.py does it with real processes.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.integration.test_cli import ok, wp
from waypoint import DBOS, Debouncer, Queue, SetWorkflowID
from waypoint.error import DBOSInitializationError

HOLD = {"on": True}  # the first process's runs block in hold(); later ones pass through
ENTERED: dict[str, threading.Event] = {}
RAN: list[tuple[str, str]] = []  # (workflow, version) of every run that got past hold()


def wait_for(what: str, cond: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def result_of(wfid: str, timeout: float = 60) -> Any:
    """The workflow's result, failing (not hanging) when it does not finish in time."""
    done = ("SUCCESS", "ERROR", "CANCELLED", "MAX_RECOVERY_ATTEMPTS_EXCEEDED")
    wait_for(f"{wfid} to finish", lambda: status_of(wfid)[0] in done, timeout)
    return DBOS.retrieve_workflow(wfid).get_result()


def status_of(wfid: str) -> tuple[str | None, str | None]:
    st = DBOS.get_workflow_status(wfid)
    return (st.status, st.app_version) if st is not None else (None, None)


def launch_as(config: dict[str, Any], version: str, b_code: str, **extra: Any) -> None:
    """A process of ``version`` running workflows A and B; ``b_code`` picks B's body."""
    DBOS.destroy(destroy_registry=True)
    DBOS(config={**config, "application_version": version, **extra})  # type: ignore[arg-type]

    @DBOS.step()
    def hold(tag: str) -> str:
        if HOLD["on"]:
            ENTERED.setdefault(tag, threading.Event()).set()
            time.sleep(60)  # the abandoned execution never gets past here
        RAN.append((tag, DBOS.application_version or "?"))
        return tag

    @DBOS.workflow(name="wf_a")
    def wf_a() -> str:
        return hold("A")

    if b_code == "old":

        @DBOS.workflow(name="wf_b")
        def wf_b() -> str:
            return hold("B")

    else:

        @DBOS.workflow(name="wf_b")
        def wf_b_changed() -> str:
            return hold("B") + "!"

    DBOS.launch()


def start_v1_runs(config: dict[str, Any]) -> None:
    """v1 starts A and B; both block in hold(); the process is then abandoned."""
    HOLD["on"] = True
    ENTERED.clear()
    RAN.clear()
    launch_as(config, "v1", "old")
    from waypoint.core.registrations import REGISTRY

    for wfid, name in (("a-1", "wf_a"), ("b-1", "wf_b")):
        info = REGISTRY.workflows[name]
        assert info.wrapper is not None
        with SetWorkflowID(wfid):
            DBOS.start_workflow(info.wrapper)
    for tag in ("A", "B"):
        assert ENTERED.setdefault(tag, threading.Event()).wait(20), tag
    HOLD["on"] = False


def test_unknown_compatibility_mode_is_refused(config: dict[str, Any]) -> None:
    DBOS.destroy(destroy_registry=True)
    for bad in ("fingerprints", "", 1):
        with pytest.raises(DBOSInitializationError, match="version_compatibility"):
            DBOS(config={**config, "version_compatibility": bad})  # type: ignore[typeddict-item]


def test_by_default_a_new_version_runs_none_of_the_old(
    dbos: type[DBOS], config: dict[str, Any]
) -> None:
    start_v1_runs(config)
    launch_as(config, "v2", "old")  # even unchanged code: DBOS's rule
    wait_for("both handed back", lambda: status_of("a-1") == status_of("b-1") == ("ENQUEUED", "v1"))
    time.sleep(0.5)
    assert RAN == []
    launch_as(config, "v1", "old")  # a process of v1 (any executor ID) drains them
    assert result_of("a-1") == "A"
    assert result_of("b-1") == "B"
    assert sorted(RAN) == [("A", "v1"), ("B", "v1")]


def test_fingerprint_check_takes_only_unchanged_workflows(
    dbos: type[DBOS], config: dict[str, Any]
) -> None:
    start_v1_runs(config)
    launch_as(config, "v2", "changed", version_compatibility="fingerprint")
    # A's code did not change: recovered here. B's did: left to v1.
    assert result_of("a-1") == "A"
    assert status_of("a-1") == ("SUCCESS", "v2")
    wait_for("B handed back", lambda: status_of("b-1") == ("ENQUEUED", "v1"))
    time.sleep(0.5)
    assert status_of("b-1") == ("ENQUEUED", "v1")
    assert RAN == [("A", "v2")]
    launch_as(config, "v1", "old", executor_id="another-v1")
    assert result_of("b-1") == "B"
    assert RAN == [("A", "v2"), ("B", "v1")]


def test_recovery_from_the_shell_follows_the_fingerprint_check(
    dbos: type[DBOS], config: dict[str, Any], db_url: str
) -> None:
    """`waypoint executors recover` (a client: it runs nothing) puts the dead pod's work back
    on its queues; the v2 pod, with the check on, dequeues A's run and leaves B's."""
    start_v1_runs({**config, "executor_id": "pod-v1"})
    launch_as(config, "v2", "changed", version_compatibility="fingerprint", executor_id="pod-v2")
    time.sleep(0.5)
    assert status_of("a-1") == ("PENDING", "v1")  # another executor's: not recovered at launch
    out = json.loads(ok(wp("executors", "recover", "pod-v1", "-s", db_url, "--json")))
    assert sorted(out["workflow_ids"]) == ["a-1", "b-1"]
    assert result_of("a-1") == "A"
    assert status_of("a-1") == ("SUCCESS", "v2")
    time.sleep(0.5)
    assert status_of("b-1") == ("ENQUEUED", "v1")
    assert RAN == [("A", "v2")]


# -- no poison after a deploy -------------------------------------------------------------------


def test_concurrency_one_queue_is_not_blocked_by_a_gone_version(
    dbos: type[DBOS], config: dict[str, Any]
) -> None:
    """dbos-transact-py#805, after a deploy: the old version's run of a concurrency-1 queue
    stayed PENDING on a process that is gone, and the queue admitted nothing more."""
    entered = threading.Event()
    hold = {"on": True}

    def define() -> Any:
        serial = Queue("serial", concurrency=1)

        @DBOS.workflow(name="job")
        def job(n: int) -> int:
            if hold["on"]:
                entered.set()
                time.sleep(60)
            return n

        return serial, job

    DBOS.destroy(destroy_registry=True)
    DBOS(config={**config, "application_version": "v1"})  # type: ignore[arg-type]
    serial, job = define()
    DBOS.launch()
    serial.enqueue(job, 1)
    assert entered.wait(20)
    hold["on"] = False
    DBOS.destroy(destroy_registry=True)
    DBOS(config={**config, "application_version": "v2"})  # type: ignore[arg-type]
    serial, job = define()
    DBOS.launch()
    # The new version's work runs; the old run went back on the queue, for a v1 executor.
    assert result_of(serial.enqueue(job, 2).workflow_id) == 2
    old = [w for w in DBOS.list_workflows(queue_name="serial") if w.status == "ENQUEUED"]
    assert [w.app_version for w in old] == ["v1"]


def test_debounce_key_held_by_a_gone_version(dbos: type[DBOS], config: dict[str, Any]) -> None:
    """dbos-transact-py#702: a debounce key held by the old version's debounced workflow.
    The new version's calls must neither spin nor be folded into a row no live executor
    will run."""
    runs: list[tuple[str, str]] = []

    def define() -> Any:
        @DBOS.workflow(name="notify")
        def notify(msg: str) -> str:
            runs.append((msg, DBOS.application_version or "?"))
            return msg

        return notify

    DBOS.destroy(destroy_registry=True)
    DBOS(config={**config, "application_version": "v1"})  # type: ignore[arg-type]
    notify = define()
    DBOS.launch()
    old = Debouncer.create(notify).debounce("user-7", 3600, "from v1")
    assert status_of(old.workflow_id) == ("DELAYED", "v1")
    DBOS.destroy(destroy_registry=True)
    DBOS(config={**config, "application_version": "v2"})  # type: ignore[arg-type]
    notify = define()
    DBOS.launch()
    began = time.monotonic()
    new = Debouncer.create(notify).debounce("user-7", 0.2, "from v2")
    assert time.monotonic() - began < 30  # no spin: the call returned
    assert result_of(new.workflow_id) == "from v2"
    assert runs == [("from v2", "v2")]


def test_schedule_slot_fired_before_a_deploy_runs_on_the_new_version(
    dbos: type[DBOS], config: dict[str, Any]
) -> None:
    """A slot the old version fired but had not started (its queue was busy) when it went
    away: the new version runs it, and fires the next slots; firing the slot again would
    only find its workflow ID taken."""
    entered = threading.Event()
    hold = {"on": True}
    slots: list[tuple[str, str]] = []

    def define() -> Any:
        lane = Queue("lane", worker_concurrency=1)

        @DBOS.workflow(name="blocker")
        def blocker() -> None:
            if hold["on"]:
                entered.set()
                time.sleep(60)

        @DBOS.workflow(name="tick")
        def tick(when: Any, context: Any) -> None:
            slots.append((when.isoformat(), DBOS.application_version or "?"))

        return lane, blocker

    DBOS.destroy(destroy_registry=True)
    DBOS(config={**config, "application_version": "v1"})  # type: ignore[arg-type]
    lane, blocker = define()
    DBOS.launch()
    lane.enqueue(blocker)
    assert entered.wait(20)
    DBOS.create_schedule(
        schedule_name="every-second",
        schedule="* * * * * *",
        workflow_name="tick",
        queue_name="lane",
    )
    wait_for(
        "a slot fired and waiting",
        lambda: any(
            w.status == "ENQUEUED" and w.workflow_id.startswith("sched-")
            for w in DBOS.list_workflows(queue_name="lane")
        ),
    )
    hold["on"] = False
    DBOS.destroy(destroy_registry=True)
    DBOS(config={**config, "application_version": "v2"})  # type: ignore[arg-type]
    define()
    DBOS.launch()
    fired = [
        w.workflow_id
        for w in DBOS.list_workflows(queue_name="lane")
        if w.workflow_id.startswith("sched-")
    ]
    waiting = sorted(fired)[0]
    assert result_of(waiting) is None
    wait_for("new slots on v2", lambda: len(slots) >= 3)
    assert {v for _, v in slots} == {"v2"}
