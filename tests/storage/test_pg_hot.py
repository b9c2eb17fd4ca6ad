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
