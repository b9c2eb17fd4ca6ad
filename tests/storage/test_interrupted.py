"""An interrupt (Ctrl-C, SystemExit) that lands inside a storage transaction leaves nothing
behind: no transaction held open on a pooled connection (on SQLite, that would keep the file's
write lock from every other process) and no half-read statement to fail the next COMMIT.

The interrupt is injected where a signal handler would raise it: inside a transaction's body,
after a write, and in the middle of reading rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.storage.build import start, status, workflow
from waypoint.storage.registry import open_url
from waypoint.storage.sql_base import Cursor


@pytest.fixture
def raw_store(store_url: str) -> Iterator[Any]:
    """The backend's own store object (the protocol check hides the transaction helper)."""
    if store_url.startswith("shards://"):
        pytest.skip("a sharded store's transactions are its shards' (the postgres mode's)")
    store = open_url(store_url, pool_size=2, application_name="wp-interrupt")
    store.migrate()
    store.open()
    store.truncate_all()
    yield store
    store.close()


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, SystemExit])
def test_an_interrupt_after_a_write_rolls_back_and_frees_the_connection(
    raw_store: Any, store_url: str, interrupt: type[BaseException]
) -> None:
    start(raw_store, "before")

    def body(cur: Cursor) -> None:
        table = raw_store.d.t("workflow_status")
        cur.exec(
            f"UPDATE {table} SET status = 'ERROR' WHERE workflow_uuid = %(id)s", {"id": "before"}
        )
        raise interrupt()

    for _ in range(3):  # every pooled connection takes one
        with pytest.raises(interrupt):
            raw_store._tx(body, "interrupted write")
    assert status(raw_store, "before") == "PENDING"  # the write went with the interrupt
    # Another process (another store on the same database) can write at once, and so can this
    # store, on the connections it kept.
    other = open_url(store_url, pool_size=1, application_name="wp-interrupt-other")
    other.open()
    try:
        other.init_workflow(workflow("from-another"), None)
    finally:
        other.close()
    for i in range(3):
        start(raw_store, f"after-{i}")
    assert status(raw_store, "from-another") == "PENDING"


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, SystemExit])
def test_a_sqlite_connection_interrupted_mid_transaction_is_not_reused(
    raw_store: Any, store_url: str, interrupt: type[BaseException]
) -> None:
    """Where the interrupt lands between BEGIN and the body's own error handling (or inside
    that handling), the pool's guard is all that stands between the open transaction, which
    holds the file's write lock, and every other writer."""
    if raw_store.dialect != "sqlite":
        pytest.skip("psycopg_pool rolls back or discards a connection returned mid-transaction")

    def op(conn: Any) -> None:
        conn.execute("BEGIN IMMEDIATE")  # the write lock is taken here
        raise interrupt()

    with pytest.raises(interrupt):
        raw_store._with_conn(op)
    other = open_url(store_url, pool_size=1, application_name="wp-interrupt-other")
    other.open()
    try:
        other.init_workflow(workflow("from-another"), None)  # not "database is locked"
    finally:
        other.close()
    start(raw_store, "after")  # not "cannot start a transaction within a transaction"
    assert status(raw_store, "from-another") == status(raw_store, "after") == "PENDING"


def test_a_sqlite_connection_interrupted_mid_read_is_not_reused(raw_store: Any) -> None:
    if raw_store.dialect != "sqlite":
        pytest.skip("psycopg_pool discards a connection returned with a query in progress")
    for i in range(20):
        start(raw_store, f"wf-{i}")
    table = raw_store.d.t("workflow_status")
    kept: list[Any] = []

    def op(conn: Any) -> None:
        conn.execute("BEGIN IMMEDIATE")
        cur = conn.execute(f"SELECT workflow_uuid FROM {table} ORDER BY workflow_uuid")
        cur.fetchone()  # half read; the traceback keeps the cursor alive
        kept.append(cur)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        raw_store._with_conn(op)
    start(raw_store, "after")  # its COMMIT: not "SQL statements in progress"
    assert status(raw_store, "after") == "PENDING"


def test_an_interrupt_while_reading_rows_leaves_no_statement_behind(raw_store: Any) -> None:
    for i in range(20):
        start(raw_store, f"wf-{i}")

    def body(cur: Cursor) -> None:
        raw = cur._raw
        table = raw_store.d.t("workflow_status")
        raw.execute(cur._render(f"SELECT workflow_uuid FROM {table} ORDER BY workflow_uuid"))
        raw.fetchone()  # half read
        raise KeyboardInterrupt

    for _ in range(3):
        with pytest.raises(KeyboardInterrupt):
            raw_store._tx(body, "interrupted read")
    for i in range(3):
        start(raw_store, f"after-{i}")
    assert status(raw_store, "after-2") == "PENDING"
