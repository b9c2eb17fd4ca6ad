"""Queues as DBOS 2.31 defines them (both backends): the partition_* limits and the
deprecated ``partition_queue`` flag, the rules a configuration must keep and their wording,
enqueue checks on every path, and what a queue's lifetime is tied to."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from waypoint import DBOS, Queue, SetEnqueueOptions
from waypoint.error import DBOSException


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        ({"concurrency": 1, "global_concurrency": 1}, "set only one of them"),
        ({"partition_queue": True, "partition_concurrency": 1}, "set only one of them"),
        ({"partition_queue": True, "partition_limiter": {"limit": 1, "period": 1}}, "only one"),
        ({"partition_queue": True, "global_concurrency": 5}, "cannot be combined with global_c"),
        ({"global_concurrency": 1, "partition_concurrency": 2}, "global_concurrency must be gre"),
        ({"worker_concurrency": 1, "partition_worker_concurrency": 2}, "worker_concurrency must"),
        ({"partition_concurrency": 1, "partition_worker_concurrency": 2}, "greater than or equal"),
        ({"global_concurrency": 1, "partition_worker_concurrency": 2}, "greater than or equal"),
        ({"global_concurrency": 1, "worker_concurrency": 2}, "greater than or equal"),
        ({"partition_concurrency": 0}, "partition_concurrency must be at least 1"),
        ({"partition_worker_concurrency": 0}, "must be at least 1"),
        ({"partition_limiter": {"limit": 1}}, "must specify both 'limit' and 'period'"),
    ],
)
def test_limits_that_could_never_bind_are_refused(
    dbos: type[DBOS], limits: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        Queue(f"bad-{uuid.uuid4().hex[:8]}", **limits)
    assert isinstance(caught.value, DBOSException)


def test_partitioning_follows_the_partition_limits(dbos: type[DBOS]) -> None:
    DBOS.launch()
    assert Queue("by-limit", partition_concurrency=2).partition_queue is True
    assert Queue("plain").partition_queue is False
    stored = DBOS.register_queue(
        "stored-parts",
        global_concurrency=8,
        partition_concurrency=4,
        partition_worker_concurrency=2,
    )
    assert stored.database_backed_queue is True and stored.partition_queue is True
    with pytest.raises(ValueError, match="greater than or equal to"):
        stored.set_partition_concurrency(1)  # below its per-worker limit
    with pytest.raises(ValueError, match="at least 1"):
        stored.set_partition_worker_concurrency(0)
    stored.set_partition_concurrency(None)
    assert DBOS.retrieve_queue("stored-parts").partition_queue is True  # type: ignore[union-attr]
    stored.set_partition_worker_concurrency(None)  # the last one: no longer partitioned
    assert DBOS.retrieve_queue("stored-parts").partition_queue is False  # type: ignore[union-attr]


def test_a_queue_registered_the_deprecated_way_keeps_its_per_partition_limits(
    dbos: type[DBOS],
) -> None:
    DBOS.launch()
    legacy = DBOS.register_queue(
        "legacy",
        partition_queue=True,
        concurrency=2,
        worker_concurrency=1,
        limiter={"limit": 7, "period": 2.0},
    )
    assert (legacy.partition_concurrency, legacy.partition_worker_concurrency) == (2, 1)
    assert legacy.partition_limiter == {"limit": 7, "period": 2.0}
    assert (legacy.global_concurrency, legacy.worker_concurrency, legacy.limiter) == (None,) * 3
    for setter, value in [
        (legacy.set_global_concurrency, 5),
        (legacy.set_worker_concurrency, None),
        (legacy.set_limiter, None),
        (legacy.set_partition_concurrency, 1),
    ]:
        with pytest.raises(DBOSException, match="deprecated partition_queue option"):
            setter(value)  # type: ignore[operator]
    legacy.set_polling_interval_sec(0.5)  # not a limit: allowed
    again = DBOS.retrieve_queue("legacy")
    assert again is not None and again.partition_worker_concurrency == 1
    assert again.polling_interval_sec == 0.5 and again.partition_queue is True


def test_enqueue_checks_apply_on_every_path(dbos: type[DBOS]) -> None:
    @DBOS.workflow()
    async def noop() -> None:
        return None

    parted = Queue("parted", partition_queue=True)
    unparted = Queue("unparted")
    DBOS.launch()

    async def main() -> None:
        with pytest.raises(DBOSException, match="parted without a partition key"):
            await parted.enqueue_async(noop)
        with pytest.raises(DBOSException, match="Key k was used with non-partitioned queue"):
            with SetEnqueueOptions(queue_partition_key="k"):
                await unparted.enqueue_async(noop)
        with pytest.raises(DBOSException, match="Deduplication is not supported for partitioned"):
            with SetEnqueueOptions(queue_partition_key="k", deduplication_id="d"):
                await parted.enqueue_async(noop)
        with SetEnqueueOptions(queue_partition_key="k"):
            assert await (await parted.enqueue_async(noop)).get_result() is None

    asyncio.run(main())


def test_a_queue_may_be_registered_after_its_first_enqueue(dbos: type[DBOS]) -> None:
    @DBOS.workflow()
    def job(x: int) -> int:
        return x

    DBOS.launch()
    with SetEnqueueOptions(queue_partition_key="p"):
        early = DBOS.enqueue_workflow("later", job, 5)  # nobody declared "later" yet
    assert early.get_status().status == "ENQUEUED"
    DBOS.register_queue("later", partition_concurrency=1, polling_interval_sec=0.1)
    assert early.get_result() == 5


def test_listened_queues_are_a_choice_of_one_dbos_object(
    dbos: type[DBOS], config: dict[str, Any]
) -> None:
    @DBOS.workflow()
    def job() -> str:
        return "ran"

    DBOS.listen_queues(["one"])
    with pytest.raises(DBOSException, match="listen_queues called more than once"):
        DBOS.listen_queues(["two"])
    DBOS.launch()
    with pytest.raises(DBOSException, match="listen_queues called after DBOS is launched"):
        DBOS.listen_queues(["two"])
    DBOS.register_queue("one", polling_interval_sec=0.1)
    DBOS.register_queue("two", polling_interval_sec=0.1)
    assert DBOS.enqueue_workflow("one", job).get_result() == "ran"
    waiting = DBOS.enqueue_workflow("two", job)
    DBOS.destroy()

    DBOS(config=config)  # type: ignore[arg-type]
    DBOS.listen_queues(["two"])  # a new DBOS object chooses again
    DBOS.launch()
    assert DBOS.retrieve_workflow(waiting.workflow_id).get_result() == "ran"
