"""Cron schedules (both backends unless noted): ``@DBOS.scheduled`` and stored schedules
(create/list/get/pause/resume/delete/apply/backfill/trigger), slot workflow IDs, a second
runtime on the same database, and a deactivated runtime."""

from __future__ import annotations

import datetime as dt
import itertools
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import pytest

from tests.conftest import requires_postgres
from waypoint import DBOS, DBOSConfiguredInstance, Queue, ScheduleInput, SetWorkflowID
from waypoint.core.runtime import get_runtime
from waypoint.error import DBOSException, DBOSWorkflowFunctionNotFoundError

UTC = dt.timezone.utc
FAR = "0 0 1 1 *"  # once a year: never fires during a test


def wait_until(what: str, predicate: Callable[[], Any], timeout: float = 10) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def slot_of(workflow_id: str, name: str) -> dt.datetime:
    prefix = f"sched-{name}-"
    assert workflow_id.startswith(prefix), workflow_id
    when = dt.datetime.fromisoformat(workflow_id[len(prefix) :])
    assert when.tzinfo is not None and when.utcoffset() == dt.timedelta(0), workflow_id
    return when


def fired(name: str, status: Optional[str] = "SUCCESS") -> list[str]:
    rows = DBOS.list_workflows(workflow_id_prefix=f"sched-{name}-")
    return [w.workflow_id for w in rows if status is None or w.status == status]


# -- @DBOS.scheduled ------------------------------------------------------------------------------


def test_decorated_schedule_fires_every_second_until_deactivated(dbos: type[DBOS]) -> None:
    calls: list[tuple[dt.datetime, dt.datetime]] = []

    @DBOS.scheduled("* * * * * *")
    @DBOS.workflow(name="tick")
    def tick(scheduled: dt.datetime, actual: dt.datetime) -> str:
        calls.append((scheduled, actual))
        return scheduled.isoformat()

    DBOS.launch()
    wait_until("three firings", lambda: len(fired("tick")) >= 3, timeout=6)
    ids = fired("tick")
    slots = sorted(slot_of(w, "tick") for w in ids)
    assert len(set(slots)) == len(slots)
    for s in slots:
        assert s.microsecond == 0
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(slots)]
    assert all(g >= 1 and g == int(g) for g in gaps), gaps
    assert gaps.count(1.0) >= len(gaps) - 1, gaps  # about once a second
    for scheduled, actual in calls:
        assert scheduled.tzinfo is not None
        assert actual >= scheduled - dt.timedelta(milliseconds=5)
        assert actual - scheduled < dt.timedelta(seconds=2)
    status = DBOS.get_workflow_status(ids[0])
    assert status is not None
    assert status.output == slot_of(ids[0], "tick").isoformat()

    # A deactivated runtime fires nothing more.
    get_runtime().deactivate()
    stopped_at = dt.datetime.now(UTC)
    time.sleep(1.5)
    later = [slot_of(w, "tick") for w in fired("tick", status=None)]
    assert all(s <= stopped_at for s in later), (stopped_at, later)


def test_scheduled_after_launch_fires_steps_and_workflows(dbos: type[DBOS]) -> None:
    DBOS.launch()
    steps: list[dt.datetime] = []

    # Decorated after launch (a test, a plug-in loaded late): it fires from then on.
    @DBOS.scheduled("* * * * * *")
    @DBOS.workflow(name="late_tick")
    def late_tick(scheduled: dt.datetime, actual: dt.datetime) -> None:
        return None

    # A step is scheduled as a one-step workflow.
    @DBOS.scheduled("* * * * * *")
    @DBOS.step(name="step_tick")
    def step_tick(scheduled: dt.datetime, actual: dt.datetime) -> None:
        steps.append(scheduled)

    assert late_tick.dbos_function_name == "late_tick"  # type: ignore[attr-defined]
    assert step_tick.dbos_function_name == "step_tick"  # type: ignore[attr-defined]
    wait_until("two late firings", lambda: len(fired("late_tick")) >= 2, timeout=6)
    wait_until("two step firings", lambda: len(steps) >= 2, timeout=6)
    assert all(slot_of(w, "step_tick") for w in fired("step_tick"))


def test_scheduled_rejects_bad_cron_and_non_workflows(dbos: type[DBOS]) -> None:
    @DBOS.workflow()
    def tick(a: dt.datetime, b: dt.datetime) -> None:
        return None

    # As in DBOS, the cron is checked when the function is decorated (naming it).
    for bad in ("every minute", "* * * * * * * *"):
        with pytest.raises(DBOSException, match="Invalid crontab") as caught:
            DBOS.scheduled(bad)(tick)
        assert isinstance(caught.value, ValueError)  # DBOS raises ValueError here

    def plain(a: dt.datetime, b: dt.datetime) -> None:
        return None

    # An undecorated function is refused first, whatever its cron.
    for cron in ("* * * * *", "*/invalid * * * * *"):
        with pytest.raises(DBOSWorkflowFunctionNotFoundError, match="not a registered workflow"):
            DBOS.scheduled(cron)(plain)


_SECOND_RUNTIME = textwrap.dedent(
    """
    import datetime as dt, os, sys, time
    from waypoint import DBOS

    url, log, ready, seconds = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    DBOS(config={"name": "waypoint-test", "system_database_url": url,
                 "application_version": "sched-v1", "executor_id": "second"})

    @DBOS.step()
    def note(slot: str) -> None:
        with open(log, "a") as f:
            f.write(f"{slot} {os.getpid()}\\n")

    @DBOS.scheduled("* * * * * *")
    @DBOS.workflow(name="shared_tick")
    def shared_tick(scheduled: dt.datetime, actual: dt.datetime) -> None:
        note(scheduled.isoformat())

    DBOS.launch()
    open(ready, "w").close()
    time.sleep(seconds)
    DBOS.destroy(workflow_completion_timeout_sec=3)
    """
)


@requires_postgres
def test_two_runtimes_never_fire_a_slot_twice(
    config: dict[str, Any], backend: str, tmp_path: Path, db_url: str
) -> None:
    if backend != "postgres":
        pytest.skip("two processes on one database: PostgreSQL")
    log = tmp_path / "executions.log"
    ready = tmp_path / "ready"
    script = tmp_path / "second_runtime.py"
    script.write_text(_SECOND_RUNTIME)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DBOS__")}
    errors = tmp_path / "second_runtime.stderr"
    with open(errors, "wb") as err:
        child = subprocess.Popen(
            [sys.executable, str(script), db_url, str(log), str(ready), "4"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    DBOS.destroy(destroy_registry=True)
    try:
        DBOS(  # type: ignore[arg-type]
            config={**config, "application_version": "sched-v1", "executor_id": "first"}
        )

        @DBOS.step()
        def note(slot: str) -> None:
            with open(log, "a") as f:
                f.write(f"{slot} {os.getpid()}\n")

        @DBOS.scheduled("* * * * * *")
        @DBOS.workflow(name="shared_tick")
        def shared_tick(scheduled: dt.datetime, actual: dt.datetime) -> None:
            note(scheduled.isoformat())

        DBOS.launch()
        wait_until("the second runtime to launch", ready.exists, timeout=15)
        both_from = dt.datetime.now(UTC)
        wait_until(
            "three slots fired while both runtimes run",
            lambda: sum(slot_of(w, "shared_tick") > both_from for w in fired("shared_tick")) >= 3,
            timeout=8,
        )
        child.wait(15)
        assert child.returncode == 0, errors.read_text()[-3000:]
        time.sleep(0.3)  # our own in-flight firing, if any, completes
        executions = Counter(line.split()[0] for line in log.read_text().splitlines())
        twice = {slot: n for slot, n in executions.items() if n > 1}
        assert not twice, twice
        ids = fired("shared_tick", status=None)
        assert len(ids) == len(set(ids))
        done = {slot_of(w, "shared_tick") for w in fired("shared_tick")}
        assert {dt.datetime.fromisoformat(s) for s in executions} >= done
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(5)
        DBOS.destroy(destroy_registry=True)


# -- stored schedules ---------------------------------------------------------------------------


def test_create_schedule_validation(dbos: type[DBOS]) -> None:
    Queue("sched-q")

    @DBOS.workflow()
    def job(scheduled: dt.datetime, context: Any) -> Any:
        return context

    @DBOS.dbos_class()
    class Service(DBOSConfiguredInstance):
        @DBOS.workflow()
        def method(self, scheduled: dt.datetime, context: Any) -> None:
            return None

    svc = Service("svc")

    def plain(scheduled: dt.datetime, context: Any) -> None:
        return None

    DBOS.launch()
    DBOS.create_schedule(schedule_name="ok", workflow_fn=job, schedule=FAR)
    # Each refusal, with DBOS's wording where DBOS has one.
    bad: list[tuple[dict[str, Any], str]] = [
        ({"schedule": "not a cron"}, "Invalid cron schedule: 'not a cron'"),
        ({"schedule": "* * *"}, "Invalid cron schedule"),
        ({"schedule": "61 * * * *"}, "Invalid cron schedule"),
        ({"cron_timezone": "Mars/Olympus_Mons"}, "Invalid timezone: 'Mars/Olympus_Mons'"),
        ({"queue_name": "no-such-queue"}, "Queue 'no-such-queue' is not declared"),
        ({"schedule_name": "ok"}, "already exists"),  # duplicate
        ({"schedule_name": ""}, "schedule_name"),
        ({"workflow_fn": svc.method}, "Configured instance methods cannot be used"),
        ({"workflow_fn": plain}, "decorated with @DBOS.workflow"),  # not a workflow
    ]
    for i, (override, message) in enumerate(bad):
        kwargs: dict[str, Any] = {
            "schedule_name": f"bad-{i}",
            "workflow_fn": job,
            "schedule": FAR,
            **override,
        }
        with pytest.raises(DBOSException, match=message):
            DBOS.create_schedule(**kwargs)
    with pytest.raises(DBOSException, match="Schedule entry 1 is missing required field 'sch"):
        DBOS.apply_schedules(
            [
                {"schedule_name": "fine", "workflow_fn": job, "schedule": FAR},
                {"workflow_fn": job, "schedule": FAR},  # type: ignore[typeddict-item]
            ]
        )
    with pytest.raises(DBOSException, match="Schedule entry 0 is missing required field 'work"):
        DBOS.apply_schedules([{"schedule_name": "x", "schedule": FAR}])  # type: ignore[typeddict-item]
    for missing in (DBOS.trigger_schedule, DBOS.pause_schedule):
        with pytest.raises(DBOSException, match="Schedule 'nope' does not exist"):
            missing("nope")
    assert [s["schedule_name"] for s in DBOS.list_schedules()] == ["ok"]
    ok = DBOS.get_schedule("ok")
    assert ok is not None and ok["schedule"] == FAR and ok["status"] == "ACTIVE"
    # A valid timezone and an existing queue are accepted.
    DBOS.create_schedule(
        schedule_name="ok-tz",
        workflow_fn=job,
        schedule=FAR,
        cron_timezone="America/New_York",
        queue_name="sched-q",
    )
    tz = DBOS.get_schedule("ok-tz")
    assert tz is not None and tz["cron_timezone"] == "America/New_York"
    assert tz["queue_name"] == "sched-q"


def test_list_get_pause_resume_delete(dbos: type[DBOS]) -> None:
    @DBOS.workflow(name="job_a")
    def job_a(scheduled: dt.datetime, context: Any) -> Any:
        return context

    @DBOS.workflow(name="job_b")
    def job_b(scheduled: dt.datetime, context: Any) -> Any:
        return context

    DBOS.launch()
    DBOS.create_schedule(schedule_name="rep-a1", workflow_fn=job_a, schedule=FAR, context={"n": 1})
    DBOS.create_schedule(schedule_name="rep-a2", workflow_fn=job_a, schedule="0 * * * *")
    DBOS.create_schedule(schedule_name="other-b", workflow_fn=job_b, schedule=FAR)

    assert [s["schedule_name"] for s in DBOS.list_schedules()] == ["other-b", "rep-a1", "rep-a2"]
    assert [s["schedule_name"] for s in DBOS.list_schedules(schedule_name_prefix="rep-")] == [
        "rep-a1",
        "rep-a2",
    ]
    assert [s["schedule_name"] for s in DBOS.list_schedules(workflow_name="job_b")] == ["other-b"]
    got = DBOS.get_schedule("rep-a1")
    assert got is not None
    assert got["workflow_name"] == "job_a" and got["context"] == {"n": 1}
    assert got["application_name"] == "waypoint-test" and got["last_fired_at"] is None
    assert DBOS.get_schedule("nope") is None

    DBOS.pause_schedule("rep-a1")
    assert DBOS.get_schedule("rep-a1")["status"] == "PAUSED"  # type: ignore[index]
    assert [s["schedule_name"] for s in DBOS.list_schedules(status="PAUSED")] == ["rep-a1"]
    assert len(DBOS.list_schedules(status="ACTIVE")) == 2
    # A list matches any of its values (as in DBOS).
    assert len(DBOS.list_schedules(status=["ACTIVE", "PAUSED"])) == 3
    assert [s["schedule_name"] for s in DBOS.list_schedules(workflow_name=["job_b"])] == ["other-b"]
    named = DBOS.list_schedules(schedule_name_prefix=["other-", "rep-a2"])
    assert [s["schedule_name"] for s in named] == ["other-b", "rep-a2"]
    DBOS.resume_schedule("rep-a1")
    assert DBOS.get_schedule("rep-a1")["status"] == "ACTIVE"  # type: ignore[index]
    with pytest.raises(DBOSException):
        DBOS.pause_schedule("nope")
    with pytest.raises(DBOSException):
        DBOS.resume_schedule("nope")

    DBOS.delete_schedule("rep-a2")
    assert DBOS.get_schedule("rep-a2") is None
    assert [s["schedule_name"] for s in DBOS.list_schedules()] == ["other-b", "rep-a1"]


def test_stored_schedule_fires_with_context_and_pause_stops_it(dbos: type[DBOS]) -> None:
    seen: list[tuple[dt.datetime, Any]] = []

    @DBOS.workflow(name="ctx_job")
    def ctx_job(scheduled: dt.datetime, context: Any) -> Any:
        seen.append((scheduled, context))
        return context

    DBOS.launch()
    DBOS.create_schedule(
        schedule_name="every-sec",
        workflow_fn=ctx_job,
        schedule="* * * * * *",
        context={"tenant": "acme", "ids": [1, 2]},
    )
    ids = wait_until("two firings", lambda: len(fired("every-sec")) >= 2 and fired("every-sec"))
    status = DBOS.get_workflow_status(ids[0])
    assert status is not None
    assert status.output == {"tenant": "acme", "ids": [1, 2]}
    assert status.schedule_name == "every-sec"
    for scheduled, context in seen:
        assert context == {"tenant": "acme", "ids": [1, 2]}
        assert scheduled.microsecond == 0
    last = DBOS.get_schedule("every-sec")
    assert last is not None and last["last_fired_at"] is not None
    assert dt.datetime.fromisoformat(last["last_fired_at"]) >= max(
        slot_of(w, "every-sec") for w in ids
    )

    DBOS.pause_schedule("every-sec")
    paused_at = dt.datetime.now(UTC)
    time.sleep(1.3)
    after = [slot_of(w, "every-sec") for w in fired("every-sec", status=None)]
    assert all(s <= paused_at for s in after), (paused_at, after)


def test_apply_schedules_creates_and_replaces(dbos: type[DBOS]) -> None:
    @DBOS.workflow(name="apply_job")
    def apply_job(scheduled: dt.datetime, context: Any) -> Any:
        return context

    @DBOS.workflow()
    def inside() -> None:
        DBOS.apply_schedules([])

    DBOS.launch()
    DBOS.create_schedule(schedule_name="ap-1", workflow_fn=apply_job, schedule=FAR, context=1)
    before = DBOS.get_schedule("ap-1")
    assert before is not None
    DBOS.pause_schedule("ap-1")
    specs: list[ScheduleInput] = [
        {"schedule_name": "ap-1", "workflow_fn": apply_job, "schedule": "0 0 2 1 *", "context": 2},
        {"schedule_name": "ap-2", "workflow_fn": apply_job, "schedule": FAR, "context": 3},
    ]
    DBOS.apply_schedules(specs)
    one = DBOS.get_schedule("ap-1")
    two = DBOS.get_schedule("ap-2")
    assert one is not None and two is not None
    assert one["schedule"] == "0 0 2 1 *" and one["context"] == 2
    assert one["schedule_id"] == before["schedule_id"]
    assert two["context"] == 3

    # Invalid input changes nothing: duplicated names, or one bad entry among good ones.
    with pytest.raises(DBOSException):
        DBOS.apply_schedules([specs[1], specs[1]])
    with pytest.raises(DBOSException):
        DBOS.apply_schedules(
            [
                {"schedule_name": "ap-3", "workflow_fn": apply_job, "schedule": FAR},
                {"schedule_name": "ap-4", "workflow_fn": apply_job, "schedule": "bogus"},
            ]
        )
    assert [s["schedule_name"] for s in DBOS.list_schedules()] == ["ap-1", "ap-2"]
    with SetWorkflowID("apply-inside"), pytest.raises(DBOSException):
        inside()


def test_backfill_fires_each_slot_once(dbos: type[DBOS]) -> None:
    runs: Counter[dt.datetime] = Counter()

    @DBOS.workflow(name="bf_job")
    def bf_job(scheduled: dt.datetime, context: Any) -> str:
        runs[scheduled] += 1
        return f"{context}@{scheduled.isoformat()}"

    DBOS.launch()
    DBOS.create_schedule(schedule_name="yearly", workflow_fn=bf_job, schedule=FAR, context="c")
    start = dt.datetime(2020, 1, 1, tzinfo=UTC)
    end = dt.datetime(2024, 1, 1, tzinfo=UTC)
    handles = DBOS.backfill_schedule("yearly", start, end)
    expected = [dt.datetime(y, 1, 1, tzinfo=UTC) for y in (2021, 2022, 2023)]
    assert [h.workflow_id for h in handles] == [f"sched-yearly-{d.isoformat()}" for d in expected]
    results = [h.get_result(polling_interval_sec=0.05) for h in handles]
    assert results == [f"c@{d.isoformat()}" for d in expected]

    # Backfilling an overlapping range fires only the new slots (the end is exclusive, so
    # 2024 was not fired above).
    again = DBOS.backfill_schedule("yearly", start, dt.datetime(2025, 6, 1, tzinfo=UTC))
    for h in again:
        h.get_result(polling_interval_sec=0.05)
    new = [dt.datetime(y, 1, 1, tzinfo=UTC) for y in (2024, 2025)]
    assert sorted(runs) == [*expected, *new]
    assert set(runs.values()) == {1}
    assert len(fired("yearly")) == 5
    with pytest.raises(DBOSException):
        DBOS.backfill_schedule("no-such", start, end)


def test_backfill_honours_the_cron_timezone(dbos: type[DBOS]) -> None:
    @DBOS.workflow(name="tz_job")
    def tz_job(scheduled: dt.datetime, context: Any) -> str:
        return scheduled.astimezone(UTC).isoformat()

    DBOS.launch()
    DBOS.create_schedule(
        schedule_name="ny-9am",
        workflow_fn=tz_job,
        schedule="0 9 * * *",
        cron_timezone="America/New_York",
    )
    start = dt.datetime(2024, 1, 10, tzinfo=UTC)
    handles = DBOS.backfill_schedule("ny-9am", start, start + dt.timedelta(days=2))
    # 09:00 in New York in January is 14:00 UTC; a slot is named in the schedule's own
    # zone, as DBOS names it.
    assert [h.workflow_id for h in handles] == [
        "sched-ny-9am-2024-01-10T09:00:00-05:00",
        "sched-ny-9am-2024-01-11T09:00:00-05:00",
    ]
    assert handles[0].get_result(polling_interval_sec=0.05) == "2024-01-10T14:00:00+00:00"
    assert DBOS.get_schedule("ny-9am")["last_fired_at"] == "2024-01-11T09:00:00-05:00"

    # Naive times are UTC: the same two slots, already fired, so nothing new runs.
    naive = dt.datetime(2024, 1, 10)
    again = DBOS.backfill_schedule("ny-9am", naive, naive + dt.timedelta(days=2))
    assert [h.workflow_id for h in again] == [h.workflow_id for h in handles]


def test_trigger_schedule(dbos: type[DBOS]) -> None:
    Queue("trigger-q")

    @DBOS.workflow(name="trig_job")
    def trig_job(scheduled: dt.datetime, context: Any) -> Any:
        return {"context": context, "queue": DBOS.workflow_id}

    DBOS.launch()
    DBOS.create_schedule(
        schedule_name="trig",
        workflow_fn=trig_job,
        schedule=FAR,
        context=["x"],
        queue_name="trigger-q",
    )
    before = dt.datetime.now(UTC)
    handle = DBOS.trigger_schedule("trig")
    assert handle.workflow_id.startswith("sched-trig-trigger-")
    when = dt.datetime.fromisoformat(handle.workflow_id[len("sched-trig-trigger-") :])
    assert before - dt.timedelta(seconds=1) <= when <= dt.datetime.now(UTC)
    assert handle.get_result(polling_interval_sec=0.05) == {
        "context": ["x"],
        "queue": handle.workflow_id,
    }
    status = handle.get_status()
    assert status.queue_name == "trigger-q" and status.schedule_name == "trig"
    with pytest.raises(DBOSException):
        DBOS.trigger_schedule("no-such")


def test_schedule_crud_from_a_workflow_is_checkpointed(dbos: type[DBOS]) -> None:
    @DBOS.workflow(name="crud_job")
    def crud_job(scheduled: dt.datetime, context: Any) -> None:
        return None

    @DBOS.workflow()
    def manage() -> Optional[str]:
        DBOS.create_schedule(schedule_name="from-wf", workflow_fn=crud_job, schedule=FAR)
        got = DBOS.get_schedule("from-wf")
        return got["schedule_name"] if got else None

    DBOS.launch()
    with SetWorkflowID("crud"):
        assert manage() == "from-wf"
    names = [s["function_name"] for s in DBOS.list_workflow_steps("crud")]
    assert names == ["DBOS.createSchedule", "DBOS.getSchedule"]


def test_deactivated_runtime_fires_no_stored_schedule(dbos: type[DBOS]) -> None:
    calls = threading.Event()

    @DBOS.workflow(name="never")
    def never(scheduled: dt.datetime, context: Any) -> None:
        calls.set()

    DBOS.launch()
    get_runtime().deactivate()
    DBOS.create_schedule(schedule_name="dead", workflow_fn=never, schedule="* * * * * *")
    time.sleep(1.3)
    assert fired("dead", status=None) == []
    assert not calls.is_set()


def test_automatic_backfill_fires_slots_missed_while_down(
    dbos: type[DBOS], config: dict[str, Any], db_url: str
) -> None:
    def define() -> None:
        @DBOS.workflow(name="catch_up")
        def catch_up(scheduled: dt.datetime, context: Any) -> None:
            return None

        define.wf = catch_up  # type: ignore[attr-defined]

    define()
    DBOS.launch()
    for name, backfill in (("with-bf", True), ("without-bf", False)):
        DBOS.create_schedule(
            schedule_name=name,
            workflow_fn=define.wf,  # type: ignore[attr-defined]
            schedule=FAR,
            automatic_backfill=backfill,
        )
    DBOS.destroy(destroy_registry=True)

    # While no process runs, the schedules become every-second ones that last fired 3 s ago
    # (as if the application had been down since then).
    from waypoint.scheduling.cron import iso
    from waypoint.storage.registry import open_url

    last = dt.datetime.now(UTC).replace(microsecond=0) - dt.timedelta(seconds=3)
    store = open_url(db_url)
    store.open()
    try:
        for name in ("with-bf", "without-bf"):
            row = store.get_schedule(name)
            row.schedule = "* * * * * *"
            store.upsert_schedule(row, replace=True)
            store.set_last_fired(name, iso(last))
    finally:
        store.close()

    DBOS(config=config)  # type: ignore[arg-type]
    define()
    DBOS.launch()
    relaunched = dt.datetime.now(UTC)
    missed = [last + dt.timedelta(seconds=i) for i in range(1, 3)]
    wait_until(
        "the missed slots to be fired",
        lambda: {slot_of(w, "with-bf") for w in fired("with-bf")} >= set(missed),
        timeout=5,
    )
    wait_until("a live firing", lambda: fired("without-bf"), timeout=5)
    slots = sorted(slot_of(w, "with-bf") for w in fired("with-bf", status=None))
    assert slots[: len(missed)] == missed
    assert len(slots) == len(set(slots))
    # Without automatic_backfill only slots after the restart fire.
    late = [slot_of(w, "without-bf") for w in fired("without-bf", status=None)]
    assert all(s > relaunched - dt.timedelta(seconds=1) for s in late), (relaunched, late)
