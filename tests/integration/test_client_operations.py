"""What a ``DBOSClient`` can do now that it shares ``DBOS``'s operations (both backends),
against a launched application in this process sharing the database, as in test_client.py (on
PostgreSQL the client's URL is spelled differently, so it is woken by NOTIFY only, like a
client in another process; one test runs a client in a real subprocess):

- stored schedules by ``workflow_name`` (and ``workflow_class_name``): create, list, get,
  pause, resume, delete, apply, backfill and trigger, fired by the application's scheduler;
- the async twins of workflow management, queue definitions and application versions;
- events and streams; retention, the global timeout and the executors table;
- and ``DBOS``'s superset: schedules by workflow name.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import inspect
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.integration import test_client
from tests.integration.test_client import REPO, Gate, opts
from tests.integration.test_management import (
    _gc_fixture_workflows,
    _make_active,
    _make_finished,
    now_ms,
    relaunch,
    running_here,
    status_of,
    stays,
    wait_until,
)
from tests.integration.test_schedules import FAR, fired, slot_of
from tests.unit.test_api_surface import CLIENT_SPEC
from waypoint import DBOS, ClientScheduleInput, DBOSClient, EnqueueOptions, Queue, SetWorkflowID
from waypoint.error import DBOSException, DBOSNonExistentWorkflowError

UTC = dt.timezone.utc
EVERY_SECOND = "* * * * * *"
POLL = 0.2  # the application re-reads stored schedules this often

make_client = test_client.make_client  # the fixture, shared


@pytest.fixture
def config(config: dict[str, Any]) -> dict[str, Any]:
    """A client in another process changes schedules without waking this process's
    scheduler (no wake-up crosses processes for them): the application notices by re-reading
    them, here every ``POLL`` seconds instead of every 30."""
    return {**config, "scheduler_polling_interval_sec": POLL}


Client = Callable[..., DBOSClient]


def names(schedules: list[Any]) -> list[str]:
    return [s["schedule_name"] for s in schedules]


def outputs(schedule_name: str) -> list[Any]:
    return [DBOS.get_workflow_status(w).output for w in fired(schedule_name)]  # type: ignore[union-attr]


def quiet(schedule_names: list[str], seconds: float = 1.3) -> None:
    """Once the application has re-read its schedules, none of these fires any more."""
    time.sleep(POLL + 0.3)
    before = {n: fired(n, status=None) for n in schedule_names}
    time.sleep(seconds)
    assert {n: fired(n, status=None) for n in schedule_names} == before


# -- schedules from a client --------------------------------------------------------------------


def test_client_schedules_by_name_are_fired_paused_resumed_and_deleted(
    dbos: type[DBOS], make_client: Client
) -> None:
    @DBOS.workflow(name="cl_tick")
    def cl_tick(scheduled: dt.datetime, context: Any) -> Any:
        return context

    DBOS.launch()
    client = make_client()
    client.create_schedule(
        schedule_name="cl-a", workflow_name="cl_tick", schedule=EVERY_SECOND, context={"n": 1}
    )
    applied: list[ClientScheduleInput] = [
        {
            "schedule_name": "cl-b",
            "workflow_name": "cl_tick",
            "schedule": EVERY_SECOND,
            "context": "applied",
            "application_name": "waypoint-test",
        },
        {
            "schedule_name": "cl-elsewhere",
            "workflow_name": "cl_tick",
            "schedule": EVERY_SECOND,
            "application_name": "other-app",
        },
    ]
    client.apply_schedules(applied)
    a = client.get_schedule("cl-a")
    assert a is not None
    assert (a["workflow_name"], a["status"], a["context"]) == ("cl_tick", "ACTIVE", {"n": 1})
    assert a["workflow_class_name"] is None and a["last_fired_at"] is None
    assert names(client.list_schedules()) == ["cl-a", "cl-b", "cl-elsewhere"]
    # An application sees its own schedules and unclaimed ones (the client named none for cl-a).
    assert names(client.list_schedules(application_name="other-app")) == ["cl-a", "cl-elsewhere"]
    assert names(DBOS.list_schedules()) == ["cl-a", "cl-b"]
    assert client.get_schedule("nope") is None

    wait_until("both schedules to fire", lambda: fired("cl-a") and fired("cl-b"), timeout=5)
    assert outputs("cl-a")[0] == {"n": 1} and outputs("cl-b")[0] == "applied"
    status = DBOS.get_workflow_status(fired("cl-a")[0])
    assert status is not None and status.schedule_name == "cl-a"
    last = client.get_schedule("cl-a")
    assert last is not None and last["last_fired_at"] is not None

    client.pause_schedule("cl-a")
    client.delete_schedule("cl-b")
    assert client.get_schedule("cl-a")["status"] == "PAUSED"  # type: ignore[index]
    assert client.get_schedule("cl-b") is None
    assert names(client.list_schedules(status="PAUSED")) == ["cl-a"]
    quiet(["cl-a", "cl-b"])

    resumed_at = dt.datetime.now(UTC)
    client.resume_schedule("cl-a")
    assert client.get_schedule("cl-a")["status"] == "ACTIVE"  # type: ignore[index]
    wait_until(
        "a firing after the resume",
        lambda: any(slot_of(w, "cl-a") > resumed_at for w in fired("cl-a")),
        timeout=5,
    )
    # Another application's schedule is not this application's to fire.
    assert fired("cl-elsewhere", status=None) == []

    for bad in (
        lambda: client.pause_schedule("cl-b"),  # deleted
        lambda: client.resume_schedule("nope"),
        lambda: client.create_schedule(schedule_name="cl-a", workflow_name="cl_tick", schedule=FAR),
        lambda: client.create_schedule(schedule_name="x", schedule=FAR),  # no workflow
        lambda: client.create_schedule(schedule_name="x", workflow_name="cl_tick", schedule="bad"),
        lambda: client.apply_schedules([applied[0], applied[0]]),
    ):
        with pytest.raises(DBOSException):
            bad()
    assert names(client.list_schedules()) == ["cl-a", "cl-elsewhere"]
    client.delete_schedule("cl-a")


def _define_jobs() -> type:
    """``cl_dated``, a function workflow, and ``cl_report``, a classmethod of ``Reports``
    (returned)."""

    @DBOS.workflow(name="cl_dated")
    def cl_dated(scheduled: dt.datetime, context: Any) -> str:
        return f"{context}@{scheduled.astimezone(UTC).isoformat()}"

    @DBOS.dbos_class("Reports")
    class Reports:
        @classmethod
        @DBOS.workflow(name="cl_report")
        def report(cls, scheduled: dt.datetime, context: Any) -> str:
            return f"{cls.__name__}:{context}@{scheduled.astimezone(UTC).isoformat()}"

    return Reports


def years(*ys: int) -> list[dt.datetime]:
    return [dt.datetime(y, 1, 1, tzinfo=UTC) for y in ys]


def test_client_backfills_and_triggers_by_name(dbos: type[DBOS], make_client: Client) -> None:
    _define_jobs()
    DBOS.launch()
    client = make_client()
    client.create_schedule(
        schedule_name="cl-yearly", workflow_name="cl_dated", schedule=FAR, context="c"
    )
    assert names(client.list_schedules(workflow_name="cl_dated")) == ["cl-yearly"]

    start = years(2020)[0]
    handles = client.backfill_schedule("cl-yearly", start, years(2023)[0])
    assert [h.workflow_id for h in handles] == [
        f"sched-cl-yearly-{d.isoformat()}" for d in years(2021, 2022)
    ]
    assert [h.get_result(polling_interval_sec=0.05) for h in handles] == [
        f"c@{d.isoformat()}" for d in years(2021, 2022)
    ]
    # An overlapping range fires only the slots not fired yet.
    again = client.backfill_schedule("cl-yearly", start, dt.datetime(2024, 6, 1, tzinfo=UTC))
    for h in again:
        h.get_result(polling_interval_sec=0.05)
    assert sorted(slot_of(w, "cl-yearly") for w in fired("cl-yearly", status=None)) == years(
        2021, 2022, 2023, 2024
    )

    before = dt.datetime.now(UTC)
    trig = client.trigger_schedule("cl-yearly")
    prefix = "sched-cl-yearly-trigger-"
    assert trig.workflow_id.startswith(prefix)
    when = dt.datetime.fromisoformat(trig.workflow_id[len(prefix) :])
    assert before - dt.timedelta(seconds=1) <= when <= dt.datetime.now(UTC)
    assert trig.get_result(polling_interval_sec=0.05) == f"c@{when.isoformat()}"
    status = trig.get_status()
    assert status.schedule_name == "cl-yearly" and status.name == "cl_dated"
    with pytest.raises(DBOSException):
        client.trigger_schedule("nope")
    with pytest.raises(DBOSException):
        client.backfill_schedule("nope", start, years(2023)[0])


def test_client_schedule_on_a_classmethod_workflow(dbos: type[DBOS], make_client: Client) -> None:
    _define_jobs()
    DBOS.launch()
    client = make_client()
    client.create_schedule(
        schedule_name="cl-cls",
        workflow_name="cl_report",
        workflow_class_name="Reports",
        schedule=FAR,
        context="c",
    )
    got = client.get_schedule("cl-cls")
    assert got is not None and got["workflow_class_name"] == "Reports"
    trig = client.trigger_schedule("cl-cls")
    assert trig.get_result(polling_interval_sec=0.05).startswith("Reports:c@")
    assert trig.get_status().class_name == "Reports"


def test_dbos_schedule_on_a_classmethod_workflow(dbos: type[DBOS]) -> None:
    """Fired with its class as the first argument (it once took the slot time for it)."""
    reports: Any = _define_jobs()
    DBOS.launch()
    DBOS.create_schedule(schedule_name="cls", workflow_fn=reports.report, schedule=FAR, context=1)
    trig = DBOS.trigger_schedule("cls")
    assert trig.get_result(polling_interval_sec=0.05).startswith("Reports:1@")


SUBPROCESS_SCHEDULER = """
import datetime as dt, json, sys
from waypoint import DBOSClient

UTC = dt.timezone.utc
client = DBOSClient(system_database_url=sys.argv[1])
try:
    client.create_schedule(schedule_name="sub-yearly", workflow_name="cl_report",
                           workflow_class_name="Reports", schedule="0 0 1 1 *", context="sub")
    client.create_schedule(schedule_name="sub-live", workflow_name="cl_dated",
                           schedule="* * * * * *", context="live")
    filled = client.backfill_schedule(
        "sub-yearly", dt.datetime(2020, 1, 1, tzinfo=UTC), dt.datetime(2022, 1, 1, tzinfo=UTC))
    handles = [*filled, client.trigger_schedule("sub-yearly")]
    print(json.dumps({"ids": [h.workflow_id for h in handles],
                      "results": [h.get_result(polling_interval_sec=0.05) for h in handles]}))
finally:
    client.destroy()
"""


def test_client_in_another_process_schedules_a_workflow_it_does_not_know(
    dbos: type[DBOS], db_url: str
) -> None:
    """The client process has no registration of the workflows: it stores, backfills and
    triggers by name (and class), and the application runs the firings."""
    _define_jobs()
    DBOS.launch()
    done = subprocess.run(
        [sys.executable, "-c", SUBPROCESS_SCHEDULER, db_url],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    backfilled, triggered = report["ids"]
    assert backfilled == "sched-sub-yearly-2021-01-01T00:00:00+00:00"
    assert triggered.startswith("sched-sub-yearly-trigger-")
    assert report["results"][0] == "Reports:sub@2021-01-01T00:00:00+00:00"
    assert report["results"][1].startswith("Reports:sub@")
    # The live schedule it created is picked up and fired by the application.
    wait_until("the application to fire sub-live", lambda: fired("sub-live"), timeout=5)
    assert outputs("sub-live")[0].startswith("live@")


def test_client_schedule_async_twins(dbos: type[DBOS], make_client: Client) -> None:
    @DBOS.workflow(name="cl_job")
    def cl_job(scheduled: dt.datetime, context: Any) -> Any:
        return context

    DBOS.launch()
    client = make_client()

    async def main() -> None:
        await client.create_schedule_async(
            schedule_name="as-1", workflow_name="cl_job", schedule=FAR, context=1
        )
        first = await client.get_schedule_async("as-1")
        assert first is not None and first["context"] == 1
        specs: list[ClientScheduleInput] = [
            {
                "schedule_name": "as-1",
                "workflow_name": "cl_job",
                "schedule": "0 0 2 1 *",
                "context": 2,
            },
            {"schedule_name": "as-2", "workflow_name": "cl_job", "schedule": EVERY_SECOND},
        ]
        await client.apply_schedules_async(specs)
        one = await client.get_schedule_async("as-1")
        assert one is not None
        assert (one["schedule"], one["context"]) == ("0 0 2 1 *", 2)
        assert one["schedule_id"] == first["schedule_id"]  # replaced in place
        assert names(await client.list_schedules_async(schedule_name_prefix="as-")) == [
            "as-1",
            "as-2",
        ]
        assert names(await client.list_schedules_async(workflow_name="other")) == []
        with pytest.raises(DBOSException):
            await client.apply_schedules_async([specs[1], specs[1]])
        with pytest.raises(DBOSException):
            await client.create_schedule_async(
                schedule_name="as-1", workflow_name="cl_job", schedule=FAR
            )
        await asyncio.to_thread(
            wait_until, "the applied schedule to fire", lambda: fired("as-2"), 5
        )
        await client.delete_schedule_async("as-2")
        assert await client.get_schedule_async("as-2") is None

    asyncio.run(main())
    quiet(["as-2"])


def test_dbos_creates_and_applies_schedules_by_workflow_name(dbos: type[DBOS]) -> None:
    @DBOS.workflow(name="named_job")
    def named_job(scheduled: dt.datetime, context: Any) -> Any:
        return context

    DBOS.launch()
    DBOS.create_schedule(
        schedule_name="by-name", workflow_name="named_job", schedule=EVERY_SECOND, context="n"
    )
    got = DBOS.get_schedule("by-name")
    assert got is not None and got["workflow_name"] == "named_job"
    wait_until("the schedule to fire", lambda: fired("by-name"), timeout=5)
    assert outputs("by-name")[0] == "n"
    assert DBOS.trigger_schedule("by-name").get_result(polling_interval_sec=0.05) == "n"
    DBOS.apply_schedules(
        [{"schedule_name": "by-name", "workflow_name": "named_job", "schedule": FAR, "context": 2}]  # type: ignore[list-item]
    )
    replaced = DBOS.get_schedule("by-name")
    assert replaced is not None and (replaced["schedule"], replaced["context"]) == (FAR, 2)
    # DBOS knows its own queues: an unknown one is refused, by name as by function.
    with pytest.raises(DBOSException):
        DBOS.create_schedule(
            schedule_name="q", workflow_name="named_job", schedule=FAR, queue_name="no-such-q"
        )
    DBOS.delete_schedule("by-name")
    assert DBOS.list_schedules() == []


# -- workflow management, async -----------------------------------------------------------------


def test_client_async_cancel_resume_fork_steps_retrieve_and_delete(
    dbos: type[DBOS], make_client: Client
) -> None:
    Queue("q")
    gate = Gate()

    @DBOS.step(name="first")
    def first(x: int) -> int:
        return x + 1

    @DBOS.step(name="hold")
    def hold() -> None:
        gate()

    @DBOS.workflow(name="gated")
    def gated(x: int) -> int:
        y = first(x)
        hold()
        return y * 10

    DBOS.launch()
    client = make_client()

    async def main() -> None:
        handle = await client.enqueue_async(opts("gated", workflow_id="as-g"), 1)
        assert inspect.iscoroutinefunction(handle.get_result)
        await asyncio.to_thread(gate.reached)
        listed = await client.list_workflows_async(workflow_ids=["as-g"])
        assert [(s.workflow_id, s.status) for s in listed] == [("as-g", "PENDING")]
        queued = await client.list_queued_workflows_async(queue_name="q")
        assert [s.workflow_id for s in queued] == ["as-g"]

        await client.cancel_workflow_async("as-g")
        assert (await handle.get_status()).status == "CANCELLED"
        assert await client.list_queued_workflows_async() == []
        gate.release.set()
        await asyncio.to_thread(
            wait_until, "the cancelled run to stop", lambda: not running_here("as-g")
        )

        resumed = await client.resume_workflow_async("as-g")
        assert resumed.workflow_id == "as-g" and inspect.iscoroutinefunction(resumed.get_status)
        assert await resumed.get_result(polling_interval_sec=0.05) == 20
        steps = await client.list_workflow_steps_async("as-g")
        assert [(s["function_id"], s["function_name"]) for s in steps] == [
            (1, "first"),
            (2, "hold"),
        ]
        assert steps[0]["output"] == 2
        assert (await client.list_workflow_steps_async("as-g", limit=1, offset=1))[0][
            "function_name"
        ] == "hold"

        with SetWorkflowID("as-fork"):
            fork = await client.fork_workflow_async("as-g", 2)
        assert fork.workflow_id == "as-fork" and inspect.iscoroutinefunction(fork.get_result)
        assert await fork.get_result(polling_interval_sec=0.05) == 20
        forked = await fork.get_status()
        assert forked.forked_from == "as-g"
        copied = await client.list_workflow_steps_async("as-fork")
        assert [s["function_name"] for s in copied] == ["first", "hold"]

        again = await client.retrieve_workflow_async("as-fork")
        assert inspect.iscoroutinefunction(again.get_result)
        assert await again.get_result() == 20
        with pytest.raises(DBOSNonExistentWorkflowError):
            await client.retrieve_workflow_async("no-such-workflow")

        await client.delete_workflow_async("as-fork")
        assert await client.get_workflow_status_async("as-fork") is None
        with pytest.raises(DBOSNonExistentWorkflowError):
            await client.retrieve_workflow_async("as-fork")
        await client.delete_workflows_async(["as-g"])
        assert await client.list_workflows_async() == []

    asyncio.run(main())


def test_client_async_wait_first_delay_attributes_and_bulk_operations(
    dbos: type[DBOS], make_client: Client
) -> None:
    Queue("q")

    @DBOS.workflow(name="echo")
    def echo(x: int) -> int:
        return x

    @DBOS.workflow(name="waiter")
    def waiter() -> Any:
        return DBOS.recv("go", timeout_seconds=20)

    DBOS.launch()
    client = make_client()

    async def main() -> None:
        slow = await client.enqueue_async(opts("waiter", workflow_id="as-wait"))
        quick = await client.enqueue_async(opts("echo", workflow_id="as-quick"), 5)
        first = await client.wait_first_async([slow, quick], polling_interval_sec=0.05)
        assert first is quick
        with pytest.raises(ValueError):
            await client.wait_first_async([])
        await client.send_async("as-wait", "now", "go")
        assert await asyncio.wait_for(slow.get_result(polling_interval_sec=0.05), 10) == "now"

        later = await client.enqueue_async(
            opts("echo", workflow_id="as-late", delay_seconds=3600), 7
        )
        status = await later.get_status()
        assert status.status == "DELAYED"
        assert await client.set_workflow_delay_async("as-late", delay_seconds=0) is True
        assert await asyncio.wait_for(later.get_result(polling_interval_sec=0.05), 10) == 7
        # Only a DELAYED workflow's start can move.
        assert await client.set_workflow_delay_async("as-late", delay_seconds=5) is False
        with pytest.raises(DBOSException):
            await client.set_workflow_delay_async("as-late")

        await client.update_workflow_attributes_async("as-late", {"team": "a", "n": 1})
        assert (await later.get_status()).attributes == {"team": "a", "n": 1}
        await client.update_workflow_attributes_async("as-late", None)
        assert not (await later.get_status()).attributes
        with pytest.raises(DBOSNonExistentWorkflowError):
            await client.update_workflow_attributes_async("no-such-workflow", {})

        parked = [
            await client.enqueue_async(
                opts("echo", workflow_id=f"as-park-{i}", delay_seconds=3600), i
            )
            for i in range(2)
        ]
        await client.cancel_workflows_async([h.workflow_id for h in parked])
        assert {(await h.get_status()).status for h in parked} == {"CANCELLED"}
        resumed = await client.resume_workflows_async([h.workflow_id for h in parked])
        assert [h.workflow_id for h in resumed] == ["as-park-0", "as-park-1"]
        assert [await h.get_result(polling_interval_sec=0.05) for h in resumed] == [0, 1]

    asyncio.run(main())


def test_client_events_and_streams(dbos: type[DBOS], make_client: Client) -> None:
    Queue("q")

    @DBOS.workflow(name="publisher")
    def publisher() -> None:
        DBOS.set_event("a", 1)
        DBOS.set_event("b", "x")
        DBOS.set_event("a", 2)
        for value in ("v0", "v1", "v2"):
            DBOS.write_stream("out", value)
        DBOS.close_stream("out")

    DBOS.launch()
    client = make_client()
    client.enqueue(opts("publisher", workflow_id="pub")).get_result(polling_interval_sec=0.05)
    assert client.get_all_events("pub") == {"a": 2, "b": "x"}
    assert client.get_all_events("no-such-workflow") == {}

    async def main() -> None:
        await client.check_connection_async()
        assert await client.get_all_events_async("pub") == {"a": 2, "b": "x"}
        assert await client.get_event_async("pub", "b", timeout_seconds=1) == "x"
        assert await client.read_stream_offset_async("pub", "out", 2) == "v2"
        assert [v async for v in client.read_stream_async("pub", "out", offset=1)] == ["v1", "v2"]
        with pytest.raises(DBOSException):  # past the closed stream's end
            await client.read_stream_offset_async("pub", "out", 3, timeout_seconds=0.2)

    asyncio.run(main())


# -- queues and application versions, async -----------------------------------------------------


def test_client_queue_definitions_async(dbos: type[DBOS], make_client: Client) -> None:
    @DBOS.workflow(name="add")
    def add(a: int, b: int) -> int:
        return a + b

    DBOS.launch()
    client = make_client()

    async def main() -> None:
        queue = await client.register_queue_async("aq", worker_concurrency=2, global_concurrency=4)
        assert (queue.name, queue.worker_concurrency, queue.global_concurrency) == ("aq", 2, 4)
        found = await client.retrieve_queue_async("aq")
        assert found is not None and found.global_concurrency == 4
        await client.register_queue_async("aq-owned", application_name="waypoint-test")
        assert [q.name for q in await client.list_queues_async()] == ["aq", "aq-owned"]
        # Another application sees unclaimed queues (the client named none for aq), not ours.
        assert [q.name for q in await client.list_queues_async(application_name="other-app")] == [
            "aq"
        ]
        # A client's default on_conflict is always_update.
        await client.register_queue_async("aq", worker_concurrency=1, global_concurrency=4)
        assert (await client.retrieve_queue_async("aq")).worker_concurrency == 1  # type: ignore[union-attr]
        await client.register_queue_async("aq", worker_concurrency=3, on_conflict="never_update")
        assert (await client.retrieve_queue_async("aq")).worker_concurrency == 1  # type: ignore[union-attr]
        # The application serves the queue the client defined.
        handle = await client.enqueue_async(
            EnqueueOptions(workflow_name="add", queue_name="aq"), 2, 3
        )
        assert await asyncio.wait_for(handle.get_result(polling_interval_sec=0.05), 10) == 5
        await client.delete_queue_async("aq")
        assert await client.retrieve_queue_async("aq") is None

    asyncio.run(main())


def test_client_application_versions_async(
    dbos: type[DBOS], config: dict[str, Any], make_client: Client
) -> None:
    def define() -> None:
        Queue("ver-q")

        @DBOS.workflow(name="ver_wf")
        def ver_wf() -> str:
            return str(DBOS.application_version)

    relaunch({**config, "application_version": "v1"}, define)
    time.sleep(0.01)
    relaunch({**config, "application_version": "v2"}, define)
    client = make_client(application_name="waypoint-test")

    async def version_names() -> list[str]:
        return [v["version_name"] for v in await client.list_application_versions_async()]

    async def demote() -> None:
        assert await version_names() == ["v2", "v1"]
        latest = await client.get_latest_application_version_async()
        assert latest["version_name"] == "v2" and latest["application_name"] == "waypoint-test"
        await client.set_latest_application_version_async("v1")
        assert (await client.get_latest_application_version_async())["version_name"] == "v1"
        assert await version_names() == ["v1", "v2"]
        with pytest.raises(DBOSException):
            await client.set_latest_application_version_async("never-registered")

    asyncio.run(demote())
    assert DBOS.get_latest_application_version()["version_name"] == "v1"
    # The application (v2) is no longer the latest: it leaves unversioned work alone, until
    # the client promotes it again.
    handle = client.enqueue(
        {"workflow_name": "ver_wf", "queue_name": "ver-q", "workflow_id": "unv"}
    )
    stays("v2 leaves unversioned work alone", lambda: status_of("unv") == "ENQUEUED", 0.7)
    asyncio.run(client.set_latest_application_version_async("v2", application_name="waypoint-test"))
    assert handle.get_result(polling_interval_sec=0.05) == "v2"


# -- retention, global timeout, executors -------------------------------------------------------


def test_client_garbage_collect_global_timeout_and_executors(
    dbos: type[DBOS], db_url: str, make_client: Client
) -> None:
    wfs = _gc_fixture_workflows(db_url)
    DBOS.launch()
    client = make_client()
    other = make_client(application_name="other-app")
    try:
        finished = _make_finished(wfs["done"], 4)
        active = _make_active(wfs)
        time.sleep(0.003)
        cutoff = now_ms()
        time.sleep(0.003)

        # A client of another application collects nothing of this one's.
        assert other.garbage_collect(cutoff_epoch_timestamp_ms=cutoff) == 0
        third = client.get_workflow_status(finished[2])
        assert third is not None and third.created_at is not None
        assert client.garbage_collect(cutoff_epoch_timestamp_ms=third.created_at) == 2
        assert {w.workflow_id for w in client.list_workflows()} == {*finished[2:], *active}
        assert asyncio.run(client.garbage_collect_async(cutoff_epoch_timestamp_ms=cutoff)) == 2
        assert {w.workflow_id for w in client.list_workflows()} == set(active)
        assert client.garbage_collect(rows_threshold=1) == 0  # never an active workflow

        wfs["entered"].clear()
        with SetWorkflowID("gt-new"):
            DBOS.start_workflow(wfs["blocker"])
        assert wfs["entered"].wait(10)
        assert sorted(client.global_timeout(cutoff)) == sorted(active)
        assert {status_of(w) for w in active} == {"CANCELLED"}
        assert status_of("gt-new") == "PENDING"
        assert asyncio.run(client.global_timeout_async(cutoff)) == []

        rows = client.list_executors()
        mine = [r for r in rows if r["pid"] == os.getpid()]
        assert len(mine) == 1, rows
        assert mine[0]["executor_id"] == DBOS.executor_id
        assert mine[0]["application_name"] == "waypoint-test"
        assert mine[0]["this_process"] is False  # a client is not the runtime
        assert 0 <= mine[0]["silent_sec"] < 5
        assert [r["executor_id"] for r in DBOS.list_executors() if r["this_process"]] == [
            DBOS.executor_id
        ]
        async_rows = asyncio.run(client.list_executors_async())
        assert [r["incarnation"] for r in async_rows] == [r["incarnation"] for r in rows]
        assert other.list_executors() == []
    finally:
        wfs["release"].set()


# -- list filters -------------------------------------------------------------------------------


def test_every_spec_list_filter_is_accepted_with_its_default(
    dbos: type[DBOS], make_client: Client
) -> None:
    @DBOS.workflow(name="listed")
    def listed() -> int:
        return 1

    DBOS.launch()
    with SetWorkflowID("listed-1"):
        listed()
    client = make_client()
    for method in ("list_workflows", "list_queued_workflows"):
        defaults = {name: p.default for name, p in CLIENT_SPEC[method].parameters.items()}
        expected = ["listed-1"] if method == "list_workflows" else []
        for surface in (client, DBOS):
            found = getattr(surface, method)(**defaults)
            assert [w.workflow_id for w in found] == expected, (surface, method)
            found = asyncio.run(getattr(surface, f"{method}_async")(**defaults))
            assert [w.workflow_id for w in found] == expected, (surface, method)
