"""The PostgreSQL store's idle connections, kept out of the pool between statements
(``waypoint/storage/postgres/hot.py``): one thread's statements, one after the other, run on
one connection; a connection that broke while it waited is replaced; a caller waiting in the
pool is never left waiting while a connection idles outside it."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from tests.conftest import BACKENDS, pg_url
from tests.storage.build import start, step
from waypoint.storage.postgres.dialect import positional
from waypoint.storage.records import Completion
from waypoint.storage.registry import open_url

pytestmark = pytest.mark.skipif("postgres" not in BACKENDS, reason="PostgreSQL not selected")


@pytest.fixture
def make_store() -> Iterator[Any]:
    name = f"wp_hot_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_url("postgres"), autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    stores: list[Any] = []

    def make(pool_size: int) -> Any:
        store: Any = open_url(pg_url(name), pool_size=pool_size)
        store.migrate()
        store.open()
        stores.append(store)
        return store

    try:
        yield make
    finally:
        for store in stores:
            store.close()
        with psycopg.connect(pg_url("postgres"), autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def _backend(store: Any) -> int:
    return int(store._all_raw("SELECT pg_backend_pid()", {})[0][0])


def _kept_cursors(store: Any) -> dict[str, psycopg.Cursor[Any]]:
    """The cursors the connections waiting on the stack keep, by statement ("": the rest)."""
    return {sql: cur for held in store._hot._idle for sql, cur in held.conn._hot.items()}


def test_one_threads_statements_stay_on_one_connection(make_store: Any) -> None:
    """The pool hands its idle connections out in turn (first in, first out): with several
    opened by threads at once, each statement of a workflow went to another backend, through
    the pool's bookkeeping every time."""
    store = make_store(8)
    barrier = threading.Barrier(6)

    def busy() -> None:
        barrier.wait()
        store._all_raw("SELECT pg_sleep(0.2)", {})

    threads = [threading.Thread(target=busy) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store._pool.get_stats()["pool_size"] >= 6  # several connections were opened
    backends = {_backend(store) for _ in range(10)}
    assert len(backends) == 1, backends


def test_a_connection_broken_while_it_waited_is_replaced(make_store: Any) -> None:
    store = make_store(4)
    wf = start(store, "hot-1")
    before = _backend(store)
    with psycopg.connect(pg_url("postgres"), autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (before,))
    assert store.record_step(step("hot-1", 1, wf.owner_xid)).accepted  # retried, on another
    assert store.complete_workflow(Completion("hot-1", wf.owner_xid, "SUCCESS", '"x"', None, 1))
    assert _backend(store) != before


def test_a_caller_waiting_in_the_pool_gets_the_connection_given_back(make_store: Any) -> None:
    """One connection in all, and two threads writing (each outcome also has a wake-up sent
    by the notifier thread, a third user): a caller that found no idle connection waits in
    the pool, and the connection given back meanwhile must go to it, not sit idle outside
    the pool until the wait times out (2 s, then a retry: counted as a failure here)."""
    store = make_store(1)
    errors: list[BaseException] = []
    failures: list[str] = []

    class Listener:
        def retried(self, what: str) -> None:
            failures.append(what)

        def recovered(self, outage_seconds: float) -> None:
            pass

    store.retry.listeners.append(Listener())

    def writer(k: int) -> None:
        try:
            for i in range(40):
                wid = f"hot-{k}-{i}"
                wf = start(store, wid)
                assert store.record_step(step(wid, 1, wf.owner_xid)).accepted
                done = Completion(wid, wf.owner_xid, "SUCCESS", '"x"', None, 1)
                assert store.complete_workflow(done)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert not failures, failures


def test_a_kept_cursor_lets_go_of_what_it_ran(make_store: Any) -> None:
    """A connection waits on the stack with its cursors; each held its last statement's
    result (every row of a listing) and parameters (a step's output, as sent) until its next
    statement, which on an idle connection may never come. Once read, they are let go."""
    store = make_store(4)
    rows = store._all_raw("SELECT g, repeat('x', 1000) FROM generate_series(1, 2000) g", {})
    assert len(rows) == 2000 and rows[-1] == (2000, "x" * 1000)
    wf = start(store, "hot-big")
    big = '"' + "y" * 100_000 + '"'
    assert store.record_step(step("hot-big", 1, wf.owner_xid, output=big)).accepted
    assert store.load_steps("hot-big")[1].output == big
    kept = _kept_cursors(store)
    assert store._sql_record in kept and "" in kept
    for text, cur in kept.items():
        assert cur.pgresult is None, text
        assert cur._query is None, text  # psycopg's statement and its dumped parameters


def test_each_hot_statement_keeps_its_cursor(make_store: Any) -> None:
    """A workflow's start, checkpoint and outcome alternate on one connection; psycopg keeps
    a cursor's adapter context only while it runs the same statement again, so each has a
    cursor of its own, whose context (its dumpers and loaders, looked up once) stays."""
    store = make_store(4)
    contexts: list[dict[str, Any]] = []
    for i in range(3):
        wid = f"hot-ctx-{i}"
        wf = start(store, wid)
        assert store.record_step(step(wid, 1, wf.owner_xid)).accepted
        assert store.complete_workflow(Completion(wid, wf.owner_xid, "SUCCESS", '"x"', None, 1))
        kept = _kept_cursors(store)
        contexts.append({sql: kept[sql]._tx for sql in (store._sql_record, store._sql_complete)})
    assert contexts[0] == contexts[1] == contexts[2]


def test_a_statement_is_made_positional_only_as_its_values_are_listed() -> None:
    """The hot statements are written with named parameters and run with positional ones,
    given in the order their names are listed: a list that does not match the statement (a
    parameter added, dropped or moved) fails when the store is built, not in a write."""
    named = "SELECT f(%(a)s, %(b)s::bigint, %(c)s)"
    assert positional(named, ("a", "b", "c")) == "SELECT f(%s, %s::bigint, %s)"
    for names in (("a", "c", "b"), ("a", "b"), ("a", "b", "c", "d")):
        with pytest.raises(ValueError):
            positional(named, names)
