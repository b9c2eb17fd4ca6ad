"""Every operation a workflow checkpoints is recorded as DBOS 2.31 records it: the same
operations, at the same positions, under the same ``function_name``, naming the same child
workflow, with outputs in the same form. (Established by running the same workflows under
dbos==2.31.1 with ``scripts/op_catalogue.py`` and comparing the rows.) Histories written by
earlier Waypoint versions, which recorded some of these differently, still replay."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from waypoint import DBOS, Debouncer, Queue, SetWorkflowID
from waypoint.core.serialization import Codec
from waypoint.error import (
    DBOSAwaitedWorkflowCancelledError,
    DBOSPatchNondeterminismError,
    DBOSStreamNondeterminismError,
)
from waypoint.storage.protocol import Completion, NewWorkflow, StepRecord, StepRow
from waypoint.storage.registry import open_url

T0 = 1_700_000_000_000


@pytest.fixture
def store(db_url: str) -> Iterator[Any]:
    s = open_url(db_url)
    s.migrate()
    s.open()
    yield s
    s.close()


def rows(store: Any, workflow_id: str) -> list[StepRow]:
    return [rec for _, rec in sorted(store.load_steps(workflow_id).items())]


def names(store: Any, workflow_id: str) -> list[tuple[int, str, Any]]:
    return [(r.function_id, r.function_name, r.child_workflow_id) for r in rows(store, workflow_id)]


def test_steps_sleeps_children_and_results(dbos: type[DBOS], store: Any) -> None:
    @DBOS.step()
    def one() -> int:
        return 1

    @DBOS.workflow()
    def child(x: int) -> int:
        return x * 10

    @DBOS.workflow()
    def parent() -> list[Any]:
        one()
        DBOS.sleep(0)  # no position: DBOS returns at once
        DBOS.sleep(0.01)
        a = child(1)  # the child's link, then the wait for its result
        h = DBOS.start_workflow(child, 2)
        h.get_status()
        b = h.get_result()
        c = DBOS.get_result(h.get_workflow_id())  # by ID: no child named
        DBOS.retrieve_workflow(h.get_workflow_id())  # checks existence: a getStatus step
        return [a, b, c]

    DBOS.launch()
    with SetWorkflowID("ops"):
        assert parent() == [10, 20, 20]
    cname = child.__qualname__
    assert names(store, "ops") == [
        (1, one.__qualname__, None),
        (2, "DBOS.sleep", None),
        (3, cname, "ops-3"),
        (4, "DBOS.getResult", "ops-3"),
        (5, cname, "ops-5"),
        (6, "DBOS.getStatus", None),
        (7, "DBOS.getResult", "ops-5"),
        (8, "DBOS.getResult", None),
        (9, "DBOS.getStatus", None),
    ]
    recs = rows(store, "ops")
    # A child's link row has no output; the result step holds the child's value.
    assert recs[2].output is None and recs[2].serialization is None
    assert store_value(recs[3]) == 10


def store_value(rec: StepRow) -> Any:
    return Codec().decode(rec.output, rec.serialization)


def test_inline_child_failure_is_recorded_on_the_result_step(dbos: type[DBOS], store: Any) -> None:
    @DBOS.workflow()
    def bad() -> None:
        raise KeyError("no")

    @DBOS.workflow()
    def parent() -> str:
        try:
            bad()
        except KeyError:
            return "caught"
        return "not raised"

    DBOS.launch()
    with SetWorkflowID("fails"):
        assert parent() == "caught"
    recs = rows(store, "fails")
    assert [(r.function_name, r.child_workflow_id) for r in recs] == [
        (bad.__qualname__, "fails-1"),
        ("DBOS.getResult", "fails-1"),
    ]
    assert recs[1].output is None
    assert isinstance(Codec().decode_error(recs[1].error, recs[1].serialization), KeyError)
    # Replayed, the recorded failure is raised again without running anything.
    with SetWorkflowID("fails"):
        assert parent() == "caught"


def test_messages_events_streams_and_patches(
    dbos: type[DBOS], config: dict[str, Any], store: Any
) -> None:
    DBOS.destroy(destroy_registry=True)
    DBOS(config={**config, "enable_patching": True})  # type: ignore[arg-type]

    @DBOS.workflow()
    def writer() -> Any:
        assert DBOS.patch("p1")
        assert DBOS.deprecate_patch("p2")  # not in history: no marker, no position
        DBOS.set_event("k", 1)
        found = DBOS.get_event(DBOS.workflow_id or "", "k", timeout_seconds=1)
        missing = DBOS.get_event(DBOS.workflow_id or "", "none", timeout_seconds=0.05)
        DBOS.send(DBOS.workflow_id or "", "m", topic="t")
        got = DBOS.recv("t", timeout_seconds=1)
        DBOS.write_stream("s", 1)
        DBOS.close_stream("s")
        return [found, missing, got]

    @DBOS.workflow()
    def reader(source: str) -> Any:
        return list(DBOS.read_stream(source, "s"))

    DBOS.launch()
    with SetWorkflowID("msg"):
        assert writer() == [1, None, "m"]
    assert [(r.function_id, r.function_name) for r in rows(store, "msg")] == [
        (1, "DBOS.patch-p1"),
        (2, "DBOS.setEvent"),
        (3, "DBOS.getEvent"),
        (4, "DBOS.sleep"),
        (5, "DBOS.getEvent"),
        (6, "DBOS.sleep"),
        (7, "DBOS.send"),
        (8, "DBOS.recv"),
        (9, "DBOS.sleep"),
        (10, "DBOS.writeStream"),
        (11, "DBOS.closeStream"),
    ]
    by_name = {r.function_id: r for r in rows(store, "msg")}
    # Operations without a result record neither output nor serialization, as DBOS's.
    for fid in (1, 2, 7, 10, 11):
        assert (by_name[fid].output, by_name[fid].serialization) == (None, None)
    # A wait's timeout registration completes at once; it does not last the timeout.
    for fid in (4, 6, 9):
        rec = by_name[fid]
        assert rec.serialization == "portable_json"
        assert rec.completed_at_epoch_ms is not None and rec.started_at_epoch_ms is not None
        wake_ms = json.loads(rec.output or "0") * 1000
        assert rec.completed_at_epoch_ms < wake_ms
    with SetWorkflowID("rd"):
        assert reader("msg") == [1]
    recs = rows(store, "rd")
    # One step per value read, holding the value itself; the end is the closed-stream marker.
    assert [(r.function_name, store_value(r)) for r in recs] == [
        ("DBOS.readStream", 1),
        ("DBOS.readStream", "__DBOS_STREAM_CLOSED__"),
    ]
    # Replayed from those rows, the reader sees the same values.
    with SetWorkflowID("rd"):
        assert reader("msg") == [1]


def test_steps_started_or_enqueued_as_workflows_are_named_as_dbos_names_them(
    dbos: type[DBOS], store: Any
) -> None:
    q = Queue("opq")

    @DBOS.step()
    def lone(x: int) -> int:
        return x + 1

    @DBOS.workflow()
    def parent() -> list[int]:
        h1 = DBOS.start_workflow(lone, 1)
        h2 = q.enqueue(lone, 2)
        return [h1.get_result(), h2.get_result()]

    DBOS.launch()
    with SetWorkflowID("sw"):
        assert parent() == [2, 3]
    temp = f"<temp>.{lone.__qualname__}"
    assert names(store, "sw") == [
        (1, temp, "sw-1"),
        (2, temp, "sw-2"),
        (3, "DBOS.getResult", "sw-1"),
        (4, "DBOS.getResult", "sw-2"),
    ]
    for wid in ("sw-1", "sw-2"):
        status = DBOS.get_workflow_status(wid)
        assert status is not None and status.name == temp


def test_management_operations_inside_a_workflow(dbos: type[DBOS], store: Any) -> None:
    @DBOS.workflow()
    def target() -> int:
        return 5

    @DBOS.workflow()
    def manager(wid: str) -> str:
        h = DBOS.resume_workflow(wid)
        forked = DBOS.fork_workflow(wid, 1)  # the fork, then the new workflow's status
        assert h.get_workflow_id() == wid
        return forked.get_workflow_id()

    DBOS.launch()
    with SetWorkflowID("tgt"):
        assert target() == 5
    with SetWorkflowID("mgr"):
        forked_id = manager("tgt")
    recs = rows(store, "mgr")
    assert [r.function_name for r in recs] == [
        "DBOS.resumeWorkflow",
        "DBOS.forkWorkflow",
        "DBOS.getStatus",
    ]
    assert store_value(recs[0]) is None  # DBOS's resume step returns nothing
    assert store_value(recs[1]) == forked_id
    # Replayed, the same handles come back.
    with SetWorkflowID("mgr"):
        assert manager("tgt") == forked_id


def test_asyncio_wait_with_timeout_replays_from_a_fork(dbos: type[DBOS]) -> None:
    gate = asyncio.Event()
    runs = {"n": 0}

    @DBOS.step()
    async def blocked(v: str) -> str:
        runs["n"] += 1
        await gate.wait()
        return v

    @DBOS.workflow()
    async def waiter() -> list[str]:
        done, pending = await DBOS.asyncio_wait([blocked("a"), blocked("b")], timeout=0.05)
        assert not done and len(pending) == 2
        gate.set()
        done2, _ = await DBOS.asyncio_wait(list(pending))
        return sorted(t.result() for t in done2)

    DBOS.launch()

    async def main() -> None:
        handle = await DBOS.start_workflow_async(waiter)
        assert await handle.get_result() == ["a", "b"]
        steps = await asyncio.to_thread(DBOS.list_workflow_steps, handle.workflow_id)
        assert [s["function_name"] for s in steps] == [
            "DBOS.asyncio_wait",
            blocked.__qualname__,
            blocked.__qualname__,
            "DBOS.asyncio_wait",
        ]
        # Everything replays from the copied history: the steps do not run again.
        forked = await DBOS.fork_workflow_async(handle.workflow_id, 100)
        assert await forked.get_result() == ["a", "b"]
        assert runs["n"] == 2

    asyncio.run(main())


def test_interleaved_async_patches_fail_the_workflow(
    dbos: type[DBOS], config: dict[str, Any]
) -> None:
    DBOS.destroy(destroy_registry=True)
    DBOS(config={**config, "enable_patching": True})  # type: ignore[arg-type]

    @DBOS.step()
    async def small(tag: str) -> str:
        return tag

    async def patched(tag: str) -> str:
        await DBOS.patch_async(tag)
        return await small(tag)

    @DBOS.workflow()
    async def racing() -> list[str]:
        return list(await asyncio.gather(patched("a"), patched("b")))

    @DBOS.workflow()
    async def sequential() -> list[str]:
        return [await patched("a"), await patched("b")]

    DBOS.launch()

    async def main() -> None:
        with SetWorkflowID("race"):
            with pytest.raises(DBOSPatchNondeterminismError, match="concurrently"):
                await racing()
        status = await DBOS.get_workflow_status_async("race")
        assert status is not None and status.status == "ERROR"
        with SetWorkflowID("seq"):
            assert await sequential() == ["a", "b"]

    asyncio.run(main())


# -- histories written by earlier Waypoint versions ---------------------------------------------


def test_histories_of_earlier_waypoint_still_replay(
    db_url: str, config: dict[str, Any], store: Any
) -> None:
    """Waypoint before 0.2 recorded no result step after an inline child, recorded
    ``DBOS.sleep(0)``, recorded no status step for ``retrieve_workflow``, recorded stream
    reads as a dict, recorded a debounce as one ``DBOS.debounce`` step, and named a step's
    one-step workflow ``waypoint.step:NAME``."""
    codec = Codec()
    ser = codec.default
    DBOS.destroy(destroy_registry=True)
    DBOS(config={**config, "application_version": "v-old"})  # type: ignore[arg-type]
    ran: list[str] = []

    @DBOS.step()
    def tail() -> str:
        ran.append("tail")
        return "t"

    @DBOS.workflow()
    def kid() -> str:
        ran.append("kid")
        return "k"

    @DBOS.workflow()
    def old() -> str:
        a = kid()
        DBOS.sleep(0)
        DBOS.retrieve_workflow("old-1")
        got = list(DBOS.read_stream("old-1", "s"))  # replayed; the stream does not exist
        debounced = Debouncer.create(kid).debounce("key", 0.01)  # one step, then
        return a + str(got) + debounced.workflow_id + tail()

    @DBOS.step()
    def lone() -> str:
        ran.append("lone")
        return "lone"

    def new_row(wid: str, name: str, status: str, owner: str) -> NewWorkflow:
        row = NewWorkflow(
            workflow_id=wid,
            status=status,
            name=name,
            class_name=None,
            config_name=None,
            inputs=codec.encode_inputs((), {}, ser),
            serialization=ser.name(),
            owner_xid=owner,
            executor_id="local",
            application_version="v-old",
            application_id=None,
            application_name="waypoint-test",
            created_at=T0,
        )
        if status == "ENQUEUED":
            row.queue_name = "_dbos_internal_queue"
        return row

    store.init_workflow(new_row("old", old.__qualname__, "PENDING", "old-run"), None)
    store.init_workflow(new_row("old-1", kid.__qualname__, "PENDING", "kid-run"), None)
    store.complete_workflow(
        Completion("old-1", "kid-run", "SUCCESS", codec.encode("k", ser), None, T0)
    )

    def step(fid: int, name: str, out: Any, child: Any = None, started: int = T0) -> None:
        text = None if out is None else codec.encode(out, ser)
        store.record_step(
            StepRecord(
                "old",
                fid,
                name,
                text,
                None,
                ser.name() if text else None,
                "old-run",
                started,
                started,
                child_workflow_id=child,
            )
        )

    # The old layout: child at 1 (no result step), sleep(0) at 2, two stream reads at 3 and 4.
    step(1, kid.__qualname__, None, child="old-1")
    store.record_step(
        StepRecord(
            "old", 2, "DBOS.sleep", json.dumps(T0 / 1000), None, "portable_json", "old-run", T0, T0
        )
    )
    step(3, "DBOS.readStream", {"found": True, "value": 7, "ended": False, "timed_out": None})
    step(4, "DBOS.readStream", {"found": False, "value": None, "ended": True, "timed_out": None})
    step(5, "DBOS.debounce", "old-1")
    # A lone step enqueued under the old one-step workflow name.
    store.init_workflow(
        new_row("old-lone", f"waypoint.step:{lone.__qualname__}", "ENQUEUED", "x"), None
    )

    DBOS.launch()
    try:
        assert DBOS.retrieve_workflow("old").get_result(polling_interval_sec=0.05) == "k[7]old-1t"
        assert DBOS.retrieve_workflow("old-lone").get_result(polling_interval_sec=0.05) == "lone"
        assert sorted(ran) == ["lone", "tail"]
        assert [s["function_name"] for s in DBOS.list_workflow_steps("old")] == [
            kid.__qualname__,
            "DBOS.sleep",
            "DBOS.readStream",
            "DBOS.readStream",
            "DBOS.debounce",
            tail.__qualname__,
        ]
    finally:
        DBOS.destroy(destroy_registry=True)


# -- step execution semantics -------------------------------------------------------------------


class Fatal(Exception):
    pass


def test_run_step_inside_and_outside_a_workflow(dbos: type[DBOS], store: Any) -> None:
    seen: list[Any] = []

    def plain(x: int) -> int:
        seen.append(DBOS.step_status)
        return x + 1

    async def coro(x: int) -> int:
        await asyncio.sleep(0)
        seen.append(DBOS.step_status)
        return x * 2

    @DBOS.workflow()
    def wf() -> list[int]:
        # A sync run_step runs a coroutine function to completion, as an async step whose
        # timeout applies.
        a = DBOS.run_step({"name": "c", "timeout_seconds": 5}, coro, 3)
        b = DBOS.run_step(None, plain, 1)
        return [a, b]

    DBOS.launch()
    # Outside a workflow: a plain call, with no step status set.
    assert DBOS.run_step(None, plain, 1) == 2
    assert DBOS.run_step(None, coro, 2) == 4
    assert seen == [None, None]
    seen.clear()
    with SetWorkflowID("rs"):
        assert wf() == [6, 2]
    assert [(s.step_id, s.current_attempt) for s in seen] == [(1, None), (2, None)]
    assert [r.function_name for r in rows(store, "rs")] == ["c", plain.__qualname__]


def test_steps_outside_workflows_are_plain_calls(dbos: type[DBOS]) -> None:
    calls = {"n": 0}

    @DBOS.step(retries_allowed=True, max_attempts=3, interval_seconds=0)
    def flaky() -> None:
        calls["n"] += 1
        raise Fatal("once")

    @DBOS.step(timeout_seconds=0.01)
    async def slow() -> str:
        await asyncio.sleep(0.05)
        return "done"

    DBOS.launch()
    with pytest.raises(Fatal):
        flaky()
    assert calls["n"] == 1  # no retries outside a workflow, as in DBOS
    assert asyncio.run(slow()) == "done"  # nor a timeout


def test_should_retry_declining_the_last_attempt_raises_the_step_error(
    dbos: type[DBOS],
) -> None:
    calls = {"n": 0}

    @DBOS.step(
        retries_allowed=True,
        max_attempts=3,
        interval_seconds=0,
        should_retry=lambda e: not isinstance(e, Fatal),
    )
    def mixed() -> None:
        calls["n"] += 1
        if calls["n"] < 3:
            raise RuntimeError("retry me")
        raise Fatal("stop")

    @DBOS.workflow()
    def wf() -> None:
        mixed()

    DBOS.launch()
    with pytest.raises(Fatal, match="stop"):
        wf()
    assert calls["n"] == 3


# -- debouncing ----------------------------------------------------------------------------------


def test_debounce_from_a_workflow(dbos: type[DBOS], store: Any) -> None:
    runs: list[int] = []

    @DBOS.workflow()
    def target(x: int) -> int:
        runs.append(x)
        return x

    @DBOS.workflow()
    def caller() -> int:
        handle = Debouncer.create(target).debounce("k", 0.05, 7)
        result: int = handle.get_result()
        return result

    DBOS.launch()
    with SetWorkflowID("deb"):
        assert caller() == 7
    # As DBOS records it: the bounce attempt, then the debounced workflow enqueued as a
    # child (its ID derived from the caller's position), then the wait for its result.
    assert names(store, "deb") == [
        (1, "DBOS.debounce_delayed_workflow", None),
        (2, target.__qualname__, "deb-2"),
        (3, "DBOS.getResult", "deb-2"),
    ]
    bounce = store_value(rows(store, "deb")[0])
    assert bounce["bounced_workflow_id"] is None and bounce["holder_workflow_id"] is None
    status = DBOS.get_workflow_status("deb-2")
    assert status is not None and status.parent_workflow_id == "deb"
    with SetWorkflowID("deb"):
        assert caller() == 7  # replayed: nothing is debounced again
    assert runs == [7]


def test_debounce_coalesces_under_a_pinned_id(dbos: type[DBOS]) -> None:
    @DBOS.workflow()
    def target(x: int) -> int:
        return x

    DBOS.launch()
    debouncer = Debouncer.create(target)
    with SetWorkflowID("pinned-deb"):
        first = debouncer.debounce("k", 1.5, 1)
    second = debouncer.debounce("k", 1.5, 2)  # within the period: the same workflow, new input
    assert first.workflow_id == second.workflow_id == "pinned-deb"
    assert second.get_result(polling_interval_sec=0.05) == 2


# -- stream reads --------------------------------------------------------------------------------


def test_a_stream_reader_notices_its_cancellation(dbos: type[DBOS]) -> None:
    release = threading.Event()
    entered = threading.Event()

    @DBOS.workflow()
    def writer() -> None:
        DBOS.write_stream("s", "v0")
        release.wait()  # stays active and silent: the reader waits for more

    @DBOS.workflow()
    def reader(source: str) -> list[Any]:
        seen = []
        for value in DBOS.read_stream(source, "s"):
            seen.append(value)
            entered.set()
        return seen

    DBOS.launch()
    with SetWorkflowID("live-writer"):
        writer_handle = DBOS.start_workflow(writer)
    try:
        with SetWorkflowID("cancelled-reader"):
            reader_handle = DBOS.start_workflow(reader, "live-writer")
        assert entered.wait(30)
        DBOS.cancel_workflow("cancelled-reader")
        with pytest.raises(DBOSAwaitedWorkflowCancelledError):
            reader_handle.get_result(polling_interval_sec=0.05)
    finally:
        release.set()
        writer_handle.get_result(polling_interval_sec=0.05)


def test_concurrent_stream_reads_in_one_workflow_are_refused(dbos: type[DBOS]) -> None:
    @DBOS.workflow()
    def writer() -> None:
        DBOS.write_stream("a", 1)
        DBOS.write_stream("b", 2)

    @DBOS.workflow()
    async def gathering(source: str) -> list[Any]:
        return list(
            await asyncio.gather(
                DBOS.read_stream_offset_async(source, "a", 0),
                DBOS.read_stream_offset_async(source, "b", 0),
            )
        )

    @DBOS.workflow()
    async def sequential(source: str) -> list[Any]:
        a = await DBOS.read_stream_offset_async(source, "a", 0)
        return [a, await DBOS.read_stream_offset_async(source, "b", 0)]

    DBOS.launch()
    with SetWorkflowID("two-streams"):
        writer()

    async def main() -> None:
        with SetWorkflowID("gathering"), pytest.raises(DBOSStreamNondeterminismError):
            await gathering("two-streams")
        with SetWorkflowID("sequential"):
            assert await sequential("two-streams") == [1, 2]

    asyncio.run(main())
