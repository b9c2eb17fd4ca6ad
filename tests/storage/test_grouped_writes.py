"""Starts and outcomes written by many threads at once (grouped into shared statements on
PostgreSQL): each caller still gets its own answer, fenced and deduplicated as when alone.

The PostgreSQL batch writers are also driven directly (``_write_many``
``_write_many``), since which calls end up batched under concurrency depends on timing."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from tests.conftest import requires_postgres
from tests.storage.build import T0, queued, start, status, step, workflow
from tests.storage.conftest import SCHEMA
from waypoint.storage.errors import DeduplicatedError
from waypoint.storage.protocol import Completion, Store


def _in_threads(n: int, body: Callable[[int], Any]) -> dict[int, Any]:
    results: dict[int, Any] = {}
    barrier = threading.Barrier(n)

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = body(i)
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_concurrent_starts_each_get_their_outcome(store: Store) -> None:
    start(store, "w3")  # exists already: reported as existing, not created
    enqueue_holder = queued("holder", deduplication_id="d")
    assert store.init_workflow(enqueue_holder, None).created

    def begin(i: int) -> Any:
        if i == 7:  # the deduplication ID is held: refused, the others unaffected
            return store.init_workflow(queued("dup", deduplication_id="d"), None)
        return store.init_workflow(workflow(f"w{i}", owner_xid=f"new-{i}"), None)

    results = _in_threads(12, begin)
    for i, outcome in results.items():
        if i == 7:
            assert isinstance(outcome, DeduplicatedError)
        elif i == 3:
            assert not outcome.created and outcome.status == "PENDING"
        else:
            assert outcome.created, i
            assert store.get_workflow(f"w{i}").owner_xid == f"new-{i}"  # type: ignore[union-attr]
    assert store.get_workflow("dup") is None


def test_concurrent_completions_each_get_their_outcome(store: Store) -> None:
    for i in range(12):
        start(store, f"w{i}")

    def finish(i: int) -> bool:
        owner = "run-stale" if i % 4 == 0 else f"run-w{i}"
        return store.complete_workflow(Completion(f"w{i}", owner, "SUCCESS", f'"{i}"', None, T0))

    results = _in_threads(12, finish)
    for i, done in results.items():
        assert done == (i % 4 != 0), i
        assert status(store, f"w{i}") == ("PENDING" if i % 4 == 0 else "SUCCESS")


@requires_postgres
def test_a_mixed_batch_answers_each_write(pg_store: Any) -> None:
    start(pg_store, "old")
    for wid in ("a", "b", "c"):
        start(pg_store, wid)
    writes = [
        workflow("new"),
        step("a", 1, "run-a", output='"s"'),
        Completion("c", "run-c", "ERROR", None, '"bad"', T0 + 3),
        workflow("old", owner_xid="run-other"),
        step("b", 1, "run-stale"),
        Completion("a", "run-a", "SUCCESS", '"ok"', None, T0 + 1),
        queued("queued"),
        Completion("b", "run-stale", "SUCCESS", None, None, T0 + 2),
        step("c", 1, "run-c"),
        Completion("missing", "run-x", "SUCCESS", None, None, T0),
    ]
    out = pg_store._write_many(writes)
    assert [o.created for o in (out[0], out[3], out[6])] == [True, False, True]
    assert out[3].status == "PENDING"
    assert (out[1].accepted, out[1].workflow_status) == (True, "PENDING")
    assert not out[4].accepted
    # One snapshot: c's checkpoint sees c still PENDING, its outcome is written alongside.
    assert (out[8].accepted, out[8].workflow_status) == (True, "PENDING")
    assert out[2] is True and out[5] is True and out[7] is False and out[9] is False
    a, b, c = (pg_store.get_workflow(w) for w in "abc")
    assert (a.status, a.output, a.completed_at, a.updated_at) == ("SUCCESS", '"ok"', T0 + 1, T0 + 1)
    assert b.status == "PENDING" and set(pg_store.load_steps("b")) == set()
    assert (c.status, c.error) == ("ERROR", '"bad"')
    assert pg_store.load_steps("a")[1].output == '"s"'
    assert pg_store.get_workflow("queued").status == "ENQUEUED"
    # Applied once: the same outcome again changes nothing.
    assert pg_store._write_many([Completion("a", "run-a", "ERROR", None, None, T0)]) == [False]


@requires_postgres
def test_a_batch_with_one_row_twice_is_refused_whole(pg_store: Any) -> None:
    start(pg_store, "b")
    for twice in (
        [workflow("c"), workflow("c")],
        [step("b", 1, "run-b"), step("b", 1, "run-b")],
        [Completion("b", "run-b", "SUCCESS", None, None, T0)] * 2,
    ):
        with pytest.raises(ValueError, match="twice"):
            pg_store._write_many([workflow("d"), *twice])
    assert pg_store.get_workflow("c") is None and pg_store.get_workflow("d") is None
    assert pg_store.get_workflow("b").status == "PENDING" and not pg_store.load_steps("b")


@requires_postgres
def test_a_queued_write_is_answered_once_committed(pg_store: Any) -> None:
    """``queue_write`` (async callers): no thread waits; the callback comes after the commit
    (another connection already sees the checkpoint) with the answer ``record_step`` gives."""
    start(pg_store, "a")
    seen: list[Any] = []
    answered = threading.Event()

    def done(result: Any, error: Any) -> None:
        seen.extend([result, error, set(pg_store.load_steps("a"))])
        answered.set()

    assert pg_store.queue_write(step("a", 1, "run-a", output='"s"'), done)
    assert answered.wait(10)
    outcome, error, visible = seen
    assert error is None and (outcome.accepted, outcome.workflow_status) == (True, "PENDING")
    assert visible == {1}


@requires_postgres
def test_concurrent_status_reads_share_one_statement(pg_store: Any) -> None:
    """Status reads (each run's check before an operation) that meet are read by one
    statement, begun after each of them asked: a change made after a caller asked is seen."""
    for wid in "abcde":
        start(pg_store, wid)
    reads = pg_store._reads
    gate = threading.Event()
    batches: list[list[str]] = []
    alone, together = reads._write_one, reads._write_many

    def held(wid: str) -> Any:
        if wid == "a":
            gate.wait(10)  # the only leader seat, held while the others queue up
        return alone(wid)

    def counted(wids: list[str]) -> Any:
        batches.append(list(wids))
        return together(wids)

    reads._write_one, reads._write_many = held, counted
    results = {}

    def read(wid: str) -> None:
        results[wid] = pg_store.get_outcome(wid)

    threads = [threading.Thread(target=read, args=(w,)) for w in "abcde"]
    threads[0].start()
    while reads._leaders == 0:
        threading.Event().wait(0.001)
    for t in threads[1:]:
        t.start()
    while len(reads._queue) < 4:
        threading.Event().wait(0.001)
    # After the question, before the answer: the queued readers must see this.
    assert pg_store.complete_workflow(Completion("c", "run-c", "SUCCESS", '"1"', None, T0))
    gate.set()
    for t in threads:
        t.join(10)
    assert sorted(batches[0]) == ["b", "c", "d", "e"] and len(batches) == 1
    assert {w: o.status for w, o in results.items()} == {
        "a": "PENDING",
        "b": "PENDING",
        "c": "SUCCESS",
        "d": "PENDING",
        "e": "PENDING",
    }


@requires_postgres
def test_an_enqueue_does_not_wait_for_the_workers_writes(pg_store: Any) -> None:
    """Enqueues are grouped among themselves: with the workers' writes saturated (their
    threads' seat taken by a checkpoint in flight, the other queued behind it), an enqueue
    is still written and answered at once."""
    for wid in ("a", "b"):
        start(pg_store, wid)
    writes = pg_store._writes
    gate = threading.Event()
    alone = writes._write_one

    def held(write: Any) -> Any:
        gate.wait(30)
        return alone(write)

    writes._write_one = held
    workers = [
        threading.Thread(target=pg_store.record_step, args=(step(wid, 1, f"run-{wid}"),))
        for wid in ("a", "b")
    ]
    try:
        for t in workers:
            t.start()
        while writes._leaders < writes._max_blocking or not writes._queue:
            threading.Event().wait(0.001)
        answered = threading.Event()
        outcome: list[Any] = []

        def enqueue() -> None:
            outcome.append(pg_store.init_workflow(queued("q1"), None))
            answered.set()

        threading.Thread(target=enqueue).start()
        assert answered.wait(10), "the enqueue waited for the checkpoints in flight"
        assert outcome[0].created and pg_store.get_workflow("q1").status == "ENQUEUED"
    finally:
        gate.set()
        for t in workers:
            t.join(10)
    assert set(pg_store.load_steps("a")) == {1} and set(pg_store.load_steps("b")) == {1}


@requires_postgres
def test_a_batch_lets_its_foreign_key_checks_keep_their_plans(
    pg_store: Any, pg_database: str
) -> None:
    """A batch of checkpoints runs under ``plan_cache_mode = auto`` for its own transaction,
    so each row's foreign-key check (a query PostgreSQL prepares once per session, always a
    lookup by workflow_status's key) keeps its plan: re-planned per row it was ~0.05 ms of a
    checkpoint's server time (threads32 +24 %). An AFTER trigger of this test's, fired where
    the foreign-key checks are, sees the setting; the store's next statement on the same
    connection is planned for its values again."""
    table = f'"{SCHEMA}".seen_plan_modes'
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (mode text)")
        conn.execute(
            f'CREATE FUNCTION "{SCHEMA}".note_plan_mode() RETURNS trigger LANGUAGE plpgsql AS '
            f"$$ BEGIN INSERT INTO {table} VALUES (current_setting('plan_cache_mode')); "
            "RETURN NULL; END $$"
        )
        conn.execute(
            f'CREATE TRIGGER note_plan_mode AFTER INSERT ON "{SCHEMA}".operation_outputs '
            f'FOR EACH ROW EXECUTE FUNCTION "{SCHEMA}".note_plan_mode()'
        )
        try:
            for wid in "ab":
                start(pg_store, wid)
            out = pg_store._write_many([step("a", 1, "run-a"), step("b", 1, "run-b")])
            assert [o.accepted for o in out] == [True, True]
            assert conn.execute(f"SELECT mode FROM {table}").fetchall() == [("auto",), ("auto",)]
            assert pg_store._all("SHOW plan_cache_mode", {}, "show") == [("force_custom_plan",)]
        finally:
            conn.execute(f'DROP TRIGGER note_plan_mode ON "{SCHEMA}".operation_outputs')
            conn.execute(f'DROP FUNCTION "{SCHEMA}".note_plan_mode()')
            conn.execute(f"DROP TABLE {table}")
