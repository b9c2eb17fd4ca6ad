"""``init_workflows``: many enqueues in one transaction, all or none, with the outcomes
``init_workflow`` would give one by one."""

from __future__ import annotations

import pytest

from tests.storage.build import T0, enqueue, queued
from waypoint.storage.errors import DeduplicatedError, InvalidTextError
from waypoint.storage.postgres import store as pg_store
from waypoint.storage.protocol import InitOutcome, Store


@pytest.fixture(params=["statement", "copy"], autouse=True)
def bulk_path(
    request: pytest.FixtureRequest, store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every test twice on PostgreSQL: a batch as one statement, and through COPY (which
    larger batches take)."""
    if request.param == "copy":
        if store_url.startswith("sqlite"):
            pytest.skip("SQLite has one way to insert a batch")
        monkeypatch.setattr(pg_store, "COPY_FROM", 1)


def test_bulk_insert_keeps_every_field_and_order(store: Store) -> None:
    wfs = [
        queued(f"b{i}", priority=i, created_at=T0 + i, queue_partition_key=None) for i in range(50)
    ]
    wfs.append(queued("late", status="DELAYED", delay_until_epoch_ms=T0 + 9999))
    wfs.append(queued("attrs", attributes='{"k": 1}', deduplication_id="d1"))
    outcomes = store.init_workflows(wfs)
    assert [o.created for o in outcomes] == [True] * len(wfs)
    assert [o.status for o in outcomes] == ["ENQUEUED"] * 50 + ["DELAYED", "ENQUEUED"]
    for wf in wfs:
        row = store.get_workflow(wf.workflow_id)
        assert row is not None
        assert (row.status, row.queue_name, row.priority) == (wf.status, "q", wf.priority)
        assert (row.created_at, row.updated_at, row.owner_xid) == (
            wf.created_at,
            wf.created_at,
            wf.owner_xid,
        )
        assert row.delay_until_epoch_ms == wf.delay_until_epoch_ms
        assert row.deduplication_id == wf.deduplication_id
        assert row.recovery_attempts == wf.recovery_attempts
    row = store.get_workflow("attrs")
    assert row is not None and row.attributes is not None and '"k"' in row.attributes
    assert store.dedup_holder("q", "d1") == "attrs"


def test_existing_ids_are_reported_not_overwritten(store: Store) -> None:
    enqueue(store, "old", inputs='{"args": [1], "kwargs": {}}')
    mine = queued("again")
    assert store.init_workflows([mine])[0].created
    out = store.init_workflows([queued("old", owner_xid="other"), mine, queued("new")])
    assert [o.created for o in out] == [False, True, True]  # a retry of ours is "created"
    assert out[0].status == "ENQUEUED" and out[0].name == "wf"
    row = store.get_workflow("old")
    assert row is not None and row.inputs == '{"args": [1], "kwargs": {}}'


def test_a_deduplication_conflict_writes_nothing(store: Store) -> None:
    enqueue(store, "holder", deduplication_id="k")
    batch = [queued("x1"), queued("x2", deduplication_id="k"), queued("x3")]
    with pytest.raises(DeduplicatedError) as caught:
        store.init_workflows(batch)
    assert (caught.value.workflow_id, caught.value.deduplication_id) == ("x2", "k")
    assert all(store.get_workflow(w) is None for w in ("x1", "x2", "x3"))
    # The same key on another queue is no conflict.
    assert store.init_workflows([queued("y", queue="q2", deduplication_id="k")])[0].created


def test_the_check_can_refuse_the_batch(store: Store) -> None:
    enqueue(store, "there", name="other_fn")

    def refuse(outcomes: list[InitOutcome]) -> None:
        for o in outcomes:
            if not o.created and o.name != "wf":
                raise LookupError(o.name)

    with pytest.raises(LookupError):
        store.init_workflows([queued("fresh"), queued("there", owner_xid="o2")], refuse)
    assert store.get_workflow("fresh") is None


def test_the_same_id_twice_is_refused_before_writing(store: Store) -> None:
    with pytest.raises(ValueError, match="twice"):
        store.init_workflows([queued("a"), queued("a")])
    assert store.get_workflow("a") is None
    assert store.init_workflows([]) == []


def test_a_value_that_cannot_be_stored_is_named(store: Store) -> None:
    batch = [queued(f"ok{i}") for i in range(3)] + [queued("bad", queue_partition_key="a\x00b")]
    with pytest.raises(InvalidTextError, match="queue_partition_key"):
        store.init_workflows(batch)
    assert store.get_workflow("ok0") is None
