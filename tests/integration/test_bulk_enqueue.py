"""Bulk enqueue (``Queue.enqueue_many``, its async twin, ``DBOSClient.enqueue_many``): the same
rows and handles as one enqueue per item, written in one transaction: all or none."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from waypoint import (
    DBOS,
    DBOSClient,
    EnqueueCall,
    EnqueueOptions,
    Queue,
    SetEnqueueOptions,
    SetWorkflowID,
)
from waypoint.error import (
    DBOSConflictingWorkflowError,
    DBOSException,
    DBOSQueueDeduplicatedError,
)
from waypoint.storage.registry import open_url

WAIT = 60.0


def stored(queue: str) -> set[str]:
    return {s.workflow_id for s in DBOS.list_workflows(queue_name=queue)}


@pytest.fixture
def gated(dbos: type[DBOS]) -> Iterator[tuple[threading.Event, Callable[..., Any]]]:
    """A workflow that waits for the gate, so the rows can be read before they run."""
    gate = threading.Event()

    @DBOS.workflow()
    def job(x: int, tag: str = "") -> str:
        assert gate.wait(WAIT)
        return f"{x}{tag}"

    yield gate, job
    gate.set()


ROW_FIELDS = (
    "status",
    "name",
    "queue_name",
    "priority",
    "deduplication_id",
    "queue_partition_key",
    "app_version",
    "input",
)


def row(workflow_id: str) -> tuple[Any, ...]:
    st = DBOS.get_workflow_status(workflow_id)
    assert st is not None
    return tuple(getattr(st, f) for f in ROW_FIELDS)


def test_same_rows_and_results_as_single_enqueues(
    gated: tuple[threading.Event, Callable[..., Any]],
) -> None:
    gate, job = gated
    q = Queue("bulk", worker_concurrency=1, priority_enabled=True)
    DBOS.launch()
    blocker = q.enqueue(job, 0)  # takes the queue's one slot until the gate opens
    while blocker.get_status().status != "PENDING":
        time.sleep(0.02)
    items: list[Any] = [
        (1,),
        EnqueueCall(args=(2,), kwargs={"tag": "b"}, workflow_id="many-2"),
        EnqueueCall(args=(3,), priority=7, deduplication_id="k3"),
        EnqueueCall(args=(4,), delay_seconds=0.5, app_version="v-x"),
    ]
    with SetEnqueueOptions(priority=2):
        handles = q.enqueue_many(job, items)
        singles = []
        for i, item in enumerate(items):
            call = item if isinstance(item, EnqueueCall) else EnqueueCall(args=item)
            with (
                SetWorkflowID(f"single-{i}"),
                SetEnqueueOptions(
                    priority=call.priority or 2,
                    deduplication_id=(call.deduplication_id or "") + "-single"
                    if call.deduplication_id
                    else None,
                    delay_seconds=call.delay_seconds,
                    app_version=call.app_version,
                ),
            ):
                singles.append(q.enqueue(job, *call.args, **call.kwargs))
    assert handles[1].get_workflow_id() == "many-2"
    for many, single in zip(handles, singles, strict=True):
        a, b = row(many.get_workflow_id()), row(single.get_workflow_id())
        if a[4] is not None:
            a = (*a[:4], a[4] + "-single", *a[5:])
        assert a == b
    assert row(handles[0].get_workflow_id())[3] == 2  # the block's priority applies
    assert row(handles[3].get_workflow_id())[0] == "DELAYED"
    gate.set()
    # (The last is pinned to a version no process runs.)
    assert [h.get_result(polling_interval_sec=0.05) for h in handles[:3]] == ["1", "2b", "3"]


def test_a_bad_item_stores_nothing(gated: tuple[threading.Event, Callable[..., Any]]) -> None:
    _, job = gated
    q = Queue("bulk-bad")
    DBOS.launch()
    bad_items: list[tuple[list[Any], str]] = [
        ([(1,), EnqueueCall(args=(2,), priority=0)], "item 1: priority"),
        ([(1,), (2,), (threading.Lock(),)], "item 2"),
        ([(1,), "not-a-call"], "item 1: expected an EnqueueCall"),
        ([(1,), EnqueueCall(args=(2,), workflow_id="")], "item 1"),
        ([(1,), EnqueueCall(args=(2,), delay_seconds=-1)], "item 1: delay_seconds"),
        ([EnqueueCall(args=(2,), queue_partition_key="p")], "partition"),
    ]
    for items, message in bad_items:
        with pytest.raises(DBOSException, match=message):
            q.enqueue_many(job, items)
    assert stored("bulk-bad") == set()
    with pytest.raises(DBOSException, match="SetWorkflowID"), SetWorkflowID("one-id"):
        q.enqueue_many(job, [(1,), (2,)])
    assert stored("bulk-bad") == set()
    assert q.enqueue_many(job, []) == []


def test_deduplication_in_and_across_batches(
    gated: tuple[threading.Event, Callable[..., Any]],
) -> None:
    gate, job = gated
    q = Queue("bulk-dedup")
    DBOS.launch()
    with SetWorkflowID("holder"), SetEnqueueOptions(deduplication_id="k"):
        q.enqueue(job, 0)
    # Reject (the default): the whole batch is refused, naming the conflicting workflow.
    with pytest.raises(DBOSQueueDeduplicatedError) as info:
        q.enqueue_many(
            job,
            [
                EnqueueCall(args=(1,), workflow_id="d1"),
                EnqueueCall(args=(2,), workflow_id="d2", deduplication_id="k"),
            ],
        )
    assert (info.value.workflow_id, info.value.deduplication_id) == ("d2", "k")
    assert stored("bulk-dedup") == {"holder"}
    # Twice in one batch: refused too (one by one, the second would be).
    with pytest.raises(DBOSQueueDeduplicatedError):
        q.enqueue_many(
            job,
            [EnqueueCall(args=(i,), deduplication_id="fresh") for i in range(2)],
        )
    assert stored("bulk-dedup") == {"holder"}
    # return-existing: the holder's handle, in the batch and in the table.
    handles = q.enqueue_many(
        job,
        [
            EnqueueCall(args=(1,), workflow_id="r1", deduplication_id="fresh"),
            EnqueueCall(args=(2,), deduplication_id="fresh", duplication_policy="return-existing"),
            EnqueueCall(args=(3,), deduplication_id="k", duplication_policy="return-existing"),
            EnqueueCall(args=(4,), workflow_id="r4"),
        ],
    )
    assert [h.get_workflow_id() for h in handles] == ["r1", "r1", "holder", "r4"]
    assert stored("bulk-dedup") == {"holder", "r1", "r4"}
    gate.set()
    assert handles[2].get_result(polling_interval_sec=0.05) == "0"


def test_items_with_only_arguments_are_whole_rows_of_their_own(
    gated: tuple[threading.Event, Callable[..., Any]], db_url: str
) -> None:
    """After the first, items that differ only in their arguments reuse the first's row
    (bulk._like): each still gets its own ID, run token, inputs and creation time, and the
    block's options; an item with options of its own in between keeps them to itself."""
    gate, job = gated
    q = Queue("bulk-like", priority_enabled=True)
    DBOS.launch()
    items: list[Any] = [
        (1,),
        EnqueueCall(args=(2,), kwargs={"tag": "k"}),
        EnqueueCall(args=(3,), priority=9),
        (4,),
        (5,),
    ]
    with SetEnqueueOptions(priority=3, delay_seconds=30):
        handles = q.enqueue_many(job, items)
    ids = [h.get_workflow_id() for h in handles]
    assert len(set(ids)) == 5
    rows = DBOS.list_workflows(workflow_ids=ids)
    by_id = {r.workflow_id: r for r in rows}
    st = [by_id[i] for i in ids]
    assert [r.input for r in st] == [
        {"args": (1,), "kwargs": {}},
        {"args": (2,), "kwargs": {"tag": "k"}},
        {"args": (3,), "kwargs": {}},
        {"args": (4,), "kwargs": {}},
        {"args": (5,), "kwargs": {}},
    ]
    assert [r.priority for r in st] == [3, 3, 9, 3, 3]
    assert {r.status for r in st} == {"DELAYED"}
    created = [r.created_at or 0 for r in st]
    assert created == sorted(created)
    for r in st:  # each delayed from its own creation
        assert r.created_at is not None and r.delay_until_epoch_ms == r.created_at + 30_000
    assert {r.queue_name for r in st} == {"bulk-like"}
    store = open_url(db_url)
    store.open()
    try:  # each its own run token (what fences a superseded execution)
        owners = {store.get_workflow(i).owner_xid for i in ids}  # type: ignore[union-attr]
    finally:
        store.close()
    assert len(owners) == 5
    # Both as uuid4 makes them (waypoint.core.ids draws the random bytes a block at a time).
    for wid in ids:
        assert str(uuid.UUID(wid)) == wid and uuid.UUID(wid).version == 4
    for owner in owners:
        assert owner is not None and uuid.UUID(hex=owner).hex == owner
        assert uuid.UUID(hex=owner).version == 4
    gate.set()


def test_existing_and_repeated_ids(gated: tuple[threading.Event, Callable[..., Any]]) -> None:
    gate, job = gated

    @DBOS.workflow()
    def other(x: int) -> int:
        return x

    q = Queue("bulk-ids")
    DBOS.launch()
    with SetWorkflowID("old"):
        q.enqueue(job, 100)
    handles = q.enqueue_many(
        job,
        [
            EnqueueCall(args=(1,), workflow_id="old"),
            EnqueueCall(args=(2,), workflow_id="twice"),
            EnqueueCall(args=(3,), workflow_id="twice"),
        ],
    )
    assert [h.get_workflow_id() for h in handles] == ["old", "twice", "twice"]
    assert stored("bulk-ids") == {"old", "twice"}
    # An ID that names another workflow function: refused, nothing stored.
    with pytest.raises(DBOSConflictingWorkflowError):
        q.enqueue_many(
            other,
            [
                EnqueueCall(args=(5,), workflow_id="new-one"),
                EnqueueCall(args=(6,), workflow_id="old"),
            ],
        )
    assert stored("bulk-ids") == {"old", "twice"}
    gate.set()
    assert handles[0].get_result(polling_interval_sec=0.05) == "100"
    assert handles[1].get_result(polling_interval_sec=0.05) == "2"


def test_partitions(dbos: type[DBOS]) -> None:
    @DBOS.workflow()
    def part(x: int) -> int:
        return x

    q = Queue("bulk-parts", partition_concurrency=1)
    DBOS.launch()
    with pytest.raises(DBOSException, match=r"item 1: .*without a partition key"):
        q.enqueue_many(part, [EnqueueCall(args=(1,), queue_partition_key="a"), (2,)])
    assert stored("bulk-parts") == set()
    with SetEnqueueOptions(queue_partition_key="a"):
        handles = q.enqueue_many(
            part, [(1,), EnqueueCall(args=(2,), queue_partition_key="b"), (3,)]
        )
    keys = [DBOS.get_workflow_status(h.get_workflow_id()) for h in handles]
    assert [k.queue_partition_key for k in keys if k is not None] == ["a", "b", "a"]
    assert [h.get_result(polling_interval_sec=0.05) for h in handles] == [1, 2, 3]


def test_refused_in_a_workflow_body_allowed_in_a_step(dbos: type[DBOS]) -> None:
    @DBOS.workflow()
    def child(x: int) -> int:
        return x * 10

    q = Queue("bulk-nested")

    @DBOS.step()
    def fan_out() -> list[str]:
        return [h.get_workflow_id() for h in q.enqueue_many(child, [(1,), (2,)])]

    @DBOS.workflow()
    def body_parent() -> None:
        q.enqueue_many(child, [(1,)])

    @DBOS.workflow()
    def step_parent() -> list[str]:
        return fan_out()

    DBOS.launch()
    with pytest.raises(DBOSException, match="workflow body"):
        body_parent()
    ids = step_parent()
    assert [DBOS.retrieve_workflow(i).get_result() for i in ids] == [10, 20]


def test_async_twin(dbos: type[DBOS]) -> None:
    @DBOS.workflow()
    async def aw(x: int) -> int:
        return x + 1

    q = Queue("bulk-async")
    DBOS.launch()

    async def go() -> list[int]:
        handles = await q.enqueue_many_async(aw, [(i,) for i in range(20)])
        return [await h.get_result() for h in handles]

    assert asyncio.run(go()) == list(range(1, 21))


def test_client_enqueue_many(dbos: type[DBOS], db_url: str) -> None:
    gate = threading.Event()

    @DBOS.workflow()
    def named(x: int) -> int:
        assert gate.wait(WAIT)
        return -x

    Queue("bulk-client")
    DBOS.launch()
    client = DBOSClient(system_database_url=db_url)
    try:
        options = EnqueueOptions(workflow_name=named.__qualname__, queue_name="bulk-client")
        handles = client.enqueue_many(
            options,
            [(1,), EnqueueCall(args=(2,), workflow_id="c-2", priority=3), (3,)],
        )
        assert handles[1].get_workflow_id() == "c-2"
        with pytest.raises(DBOSException, match="workflow_id"):
            client.enqueue_many(
                EnqueueOptions(
                    workflow_name=named.__qualname__, queue_name="bulk-client", workflow_id="x"
                ),
                [(4,)],
            )

        async def more() -> list[str]:
            hs = await client.enqueue_many_async(options, [(5,)])
            return [h.get_workflow_id() for h in hs]

        ids = asyncio.run(more())
        gate.set()
        assert [h.get_result(polling_interval_sec=0.05) for h in handles] == [-1, -2, -3]
        assert DBOS.retrieve_workflow(ids[0]).get_result(polling_interval_sec=0.05) == -5
    finally:
        gate.set()
        client.destroy()
