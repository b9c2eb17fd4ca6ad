"""What the console reads from a store: keyset pages, capped counts, completions per minute,
rows by age, and a workflow's messages, event history and stream values."""

from __future__ import annotations

from tests.storage.build import APP, T0, enqueue, ids, start, with_everything
from waypoint.storage.protocol import Completion, ListFilter, Store


def test_keyset_pages_walk_every_row_once_in_either_order(store: Store) -> None:
    # Ties on created_at are broken by the ID, so no row is skipped or repeated at a page edge.
    for i in range(7):
        start(store, f"w{i}", created_at=T0 + i // 3)
    for desc in (True, False):
        seen: list[str] = []
        after = None
        while True:
            page = store.list_workflows(
                ListFilter(limit=2, sort_desc=desc, after=after, load_input=False)
            )
            if not page:
                break
            seen += ids(page)
            last = page[-1]
            after = (last.created_at or 0, last.workflow_id)
        expected = sorted(
            ids(store.list_workflows(ListFilter())), key=lambda w: (int(w[1]) // 3, w)
        )
        assert seen == (expected[::-1] if desc else expected)


def test_keyset_combines_with_filters(store: Store) -> None:
    for i in range(4):
        start(store, f"a{i}", name="alpha", created_at=T0 + i)
        start(store, f"b{i}", name="beta", created_at=T0 + i)
    page = store.list_workflows(ListFilter(name=["alpha"], sort_desc=True, after=(T0 + 2, "a2")))
    assert ids(page) == ["a1", "a0"]


def test_counts_stop_at_the_cap(store: Store) -> None:
    for i in range(5):
        start(store, f"p{i}")
    enqueue(store, "e0", application_name="other")
    enqueue(store, "e1", application_name=None)
    counts = store.count_capped("status", ["PENDING", "ENQUEUED", "SUCCESS"], APP, 3)
    assert counts == {"PENDING": 3, "ENQUEUED": 1, "SUCCESS": 0}  # e0 is another app's
    assert store.count_capped("status", ["ENQUEUED"], None, 10) == {"ENQUEUED": 2}
    assert store.count_capped("application_version", ["v1", "v9"], None, 100) == {"v1": 7, "v9": 0}


def test_counting_by_an_unknown_column_is_refused(store: Store) -> None:
    try:
        store.count_capped("status; DROP TABLE x", ["PENDING"], None, 1)
    except ValueError as exc:
        assert "cannot count workflows by" in str(exc)
    else:
        raise AssertionError("an arbitrary column was accepted")


def test_completions_per_minute_by_queue(store: Store) -> None:
    minute = 28_333_333
    for i, (queue, at) in enumerate([("q", 0), ("q", 10), ("q", 61_000), ("r", 5), (None, 5)]):
        wfid = f"c{i}"
        if queue is None:
            start(store, wfid)
        else:
            enqueue(store, wfid, queue, status="PENDING", owner_xid=f"run-{wfid}")
        done_at = minute * 60_000 + at
        assert store.complete_workflow(
            Completion(wfid, f"run-{wfid}", "SUCCESS", "1", None, done_at)
        )
    found = {
        (t.queue_name, t.minute): t.completed for t in store.completions_since(minute * 60_000, APP)
    }
    assert found == {("q", minute): 2, ("q", minute + 1): 1, ("r", minute): 1}
    assert store.completions_since((minute + 1) * 60_000, APP)[0].completed == 1


def test_rows_by_status_and_age(store: Store) -> None:
    now = T0 + 100 * 86_400_000
    start(store, "new", created_at=now - 10)
    start(store, "day", created_at=now - 2 * 3_600_000)
    start(store, "old", created_at=T0)
    found = {
        (b.status, b.band): b.count for b in store.age_buckets(now, [3_600_000, 86_400_000], APP)
    }
    assert found == {("PENDING", 0): 1, ("PENDING", 1): 1, ("PENDING", 2): 1}


def test_a_workflows_messages_events_and_streams(store: Store) -> None:
    with_everything(store, "w")
    with_everything(store, "other")
    messages = store.messages_to("w", 10)
    assert [(m.topic, m.message, m.consumed) for m in messages] == [("t", '"v"', False)]
    streams = store.stream_values("w", 10)
    assert [(s.key, s.offset, s.value) for s in streams] == [("s", 0, '"v"')]
    assert all(h.key == "k" for h in store.event_history("w", 10))
    assert store.messages_to("w", 0) == []
