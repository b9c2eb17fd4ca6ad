"""Sending and receiving on PostgreSQL: one statement each (no transaction around several),
and a message marked consumed only together with the checkpoint that records it."""

from __future__ import annotations

import threading
from typing import Any

import psycopg
import pytest

from tests.conftest import requires_postgres
from tests.storage.build import start, step
from tests.storage.conftest import PG_STORE_APPLICATION, SCHEMA
from waypoint.storage.protocol import NewMessage


class Statements:
    """The statements and explicit transactions psycopg runs while counting."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sql: list[str] = []
        self.transactions = 0
        execute, transaction = psycopg.Cursor.execute, psycopg.Connection.transaction

        def counted_execute(cur: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
            if not str(query).startswith("SET "):  # a new pooled connection's set-up
                self.sql.append(str(query))
            return execute(cur, query, *args, **kwargs)

        def counted_transaction(conn: Any, *args: Any, **kwargs: Any) -> Any:
            self.transactions += 1
            return transaction(conn, *args, **kwargs)

        monkeypatch.setattr(psycopg.Cursor, "execute", counted_execute)
        monkeypatch.setattr(psycopg.Connection, "transaction", counted_transaction)

    def take(self) -> tuple[int, int]:
        counts = (len(self.sql), self.transactions)
        self.sql.clear()
        self.transactions = 0
        return counts


@requires_postgres
def test_send_and_receive_are_one_statement_each(
    pg_store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    start(pg_store, "dest")
    start(pg_store, "sender")
    counted = Statements(monkeypatch)
    pg_store.send_messages([NewMessage("m1", "dest", "t", '"1"', "json")], None)
    assert counted.take() == (1, 0)
    # From a workflow, with its checkpoint; a retry of it writes nothing twice.
    for _ in range(2):
        sent = pg_store.send_messages(
            [NewMessage("sender::1::0", "dest", "t", '"2"', "portable")],
            step("sender", 1, "run-sender"),
        )
        assert sent is not None and sent.accepted and sent.workflow_status == "PENDING"
        assert counted.take() == (1, 0)
    got = pg_store.consume_message("dest", "t", step("dest", 1, "run-dest", output=None))
    assert (got.found, got.accepted, got.output, got.serialization) == (True, True, '"1"', "json")
    assert counted.take() == (1, 0)
    assert pg_store.load_steps("dest")[1].output == '"1"'
    second = pg_store.consume_message("dest", "t", step("dest", 2, "run-dest"))
    assert (second.output, second.serialization) == ('"2"', "portable")
    counted.take()
    nothing = pg_store.consume_message("dest", "t", step("dest", 3, "run-dest", output=None))
    assert (nothing.found, nothing.accepted) == (False, True)
    assert counted.take() == (1, 0)


def _waiting_on_a_lock(url: str, application_name: str) -> bool:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s "
            "AND wait_event_type = 'Lock'",
            (application_name,),
        ).fetchone()
    return bool(row and row[0])


@requires_postgres
def test_a_message_is_not_consumed_when_its_checkpoint_loses_a_race(
    pg_store: Any, pg_database: str
) -> None:
    """A checkpoint at the receive's position commits while the receive runs (after its
    snapshot was taken): the receive answers with that checkpoint's value and leaves the
    message it had picked for the next receive, instead of consuming it unrecorded."""
    start(pg_store, "dest")
    pg_store.send_messages([NewMessage("m1", "dest", "t", '"1"', "json")], None)
    oo = f'"{SCHEMA}".operation_outputs'
    with psycopg.connect(pg_database) as rival:  # a transaction, held open
        rival.execute(
            f"INSERT INTO {oo} (workflow_uuid, function_id, function_name, output, "
            "serialization, owner_xid) VALUES ('dest', 1, 'DBOS.recv', '\"0\"', 'json', "
            "'run-dest')"
        )
        answers: list[Any] = []
        receive = threading.Thread(
            target=lambda: answers.append(
                pg_store.consume_message("dest", "t", step("dest", 1, "run-dest", output=None))
            )
        )
        receive.start()
        while not _waiting_on_a_lock(pg_database, PG_STORE_APPLICATION):
            threading.Event().wait(0.01)
        rival.commit()
    receive.join(10)
    got = answers[0]
    assert (got.found, got.accepted, got.output) == (True, True, '"0"')
    later = pg_store.consume_message("dest", "t", step("dest", 2, "run-dest", output=None))
    assert (later.found, later.output) == (True, '"1"')


@requires_postgres
def test_a_receive_that_finds_nothing_writes_nothing(pg_store: Any, pg_database: str) -> None:
    """Only a receive that found a message locks the workflow row (the fence of its
    checkpoint): one that finds nothing, as every wait's first read does, leaves the row as
    it was, so it needs no transaction ID, commit record or WAL flush."""
    start(pg_store, "dest")
    ws = f'"{SCHEMA}".workflow_status'

    def row_lock() -> Any:  # the last locker (or updater) of the workflow row
        with psycopg.connect(pg_database, autocommit=True) as conn:
            row = conn.execute(
                f"SELECT xmax::text FROM {ws} WHERE workflow_uuid = 'dest'"
            ).fetchone()
        return row[0] if row else None

    before = row_lock()
    nothing = pg_store.consume_message("dest", "t", step("dest", 1, "run-dest", output=None))
    assert (nothing.found, nothing.accepted) == (False, True)
    assert row_lock() == before
    stale = pg_store.consume_message("dest", "t", step("dest", 1, "run-stale", output=None))
    assert (stale.found, stale.accepted) == (True, False)
    pg_store.send_messages([NewMessage("m1", "dest", "t", '"1"', "json")], None)
    sent = row_lock()  # key-share-locked by the message's foreign key check
    got = pg_store.consume_message("dest", "t", step("dest", 1, "run-dest", output=None))
    assert (got.found, got.accepted, got.output) == (True, True, '"1"')
    assert row_lock() != sent  # share-locked while its checkpoint was written


@requires_postgres
def test_a_delivered_message_wakes_nobody(pg_store: Any, pg_database: str) -> None:
    """A message its send delivered to a waiting receive (inserted consumed) sends no
    notification: that receive has it, and no one else may take it. A message only sent
    still notifies Waypoint's and DBOS's receivers."""
    start(pg_store, "dest")
    with psycopg.connect(pg_database, autocommit=True) as listener:
        listener.execute("LISTEN dbos_notifications_channel")
        receipt = step("dest", 1, "run-dest", function_name="DBOS.recv", output='"1"')
        assert pg_store.deliver_message(NewMessage("m1", "dest", "a", '"1"', "json"), receipt)
        pg_store.send_messages([NewMessage("m2", "dest", "b", '"2"', "json")], None)
        heard = [n.payload for n in listener.notifies(timeout=10, stop_after=1)]
    assert heard == ["dest::b"]
