"""DBOSClient.send_in_transaction and send_bulk_in_transaction: messages written by the
caller's own SQLAlchemy transaction on the system database, delivered if and only if it
commits (both backends)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from waypoint import DBOS, DBOSClient, SendMessage
from waypoint.error import DBOSException, DBOSNonExistentWorkflowError


@pytest.fixture
def system_engine(db_url: str) -> Iterator[sa.Engine]:
    """The caller's own SQLAlchemy engine on the system database."""
    if db_url.startswith("shards://"):
        pytest.skip(
            "not with system_database_shards: a caller's own connection reaches one shard; "
            "sending in the caller's transaction is refused (tests/integration/test_sharding.py)"
        )
    url = sa.make_url(db_url)
    if url.get_backend_name() == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    yield engine
    engine.dispose()


@pytest.fixture
def client(db_url: str) -> Iterator[DBOSClient]:
    c = DBOSClient(system_database_url=db_url)
    yield c
    c.destroy()


def pending_messages(engine: sa.Engine, workflow_id: str, backend: str) -> int:
    table = "notifications" if backend == "sqlite" else "dbos.notifications"
    with engine.connect() as conn:
        return int(
            conn.execute(
                sa.text(f"SELECT count(*) FROM {table} WHERE destination_uuid = :w"),
                {"w": workflow_id},
            ).scalar_one()
        )


def test_send_in_transaction_commits_and_rolls_back_with_the_caller(
    dbos: type[DBOS], client: DBOSClient, system_engine: sa.Engine, backend: str
) -> None:
    @DBOS.workflow()
    def inbox(n: int) -> list[Any]:
        return [DBOS.recv("mail", timeout_seconds=30) for _ in range(n)]

    DBOS.launch()
    handle = DBOS.start_workflow(inbox, 3)
    wfid = handle.workflow_id

    # Rolled back: never delivered.
    with system_engine.connect() as conn:
        client.send_in_transaction(conn, wfid, "lost", "mail")
        conn.rollback()
    assert pending_messages(system_engine, wfid, backend) == 0

    # A Connection: invisible to others until the caller commits.
    with system_engine.connect() as conn:
        client.send_in_transaction(conn, wfid, "first", "mail", idempotency_key="k1")
        if backend == "postgres":  # SQLite's writer holds the database until it commits
            assert pending_messages(system_engine, wfid, backend) == 0
        conn.commit()

    # A Session, two messages at once; a repeated idempotency key is delivered once.
    with Session(system_engine) as session, session.begin():
        client.send_bulk_in_transaction(
            session,
            [
                SendMessage(wfid, "second", "mail"),
                SendMessage(wfid, "first again", "mail", idempotency_key="k1"),
            ],
        )
    with system_engine.begin() as conn:
        client.send_in_transaction(conn, wfid, "third", "mail")
    assert handle.get_result() == ["first", "second", "third"]


def test_send_in_transaction_refuses_a_missing_destination(
    dbos: type[DBOS], client: DBOSClient, system_engine: sa.Engine
) -> None:
    DBOS.launch()
    with system_engine.connect() as conn:
        with pytest.raises(DBOSNonExistentWorkflowError):
            client.send_in_transaction(conn, "no-such-workflow", "hello")
        conn.rollback()
    with pytest.raises(DBOSException, match="connection"):
        client.send_in_transaction(None, "no-such-workflow", "hello")
    with pytest.raises(DBOSException, match="idempotency key"):
        with system_engine.connect() as conn:
            client.send_bulk_in_transaction(
                conn,
                [
                    SendMessage("a", 1, idempotency_key="x"),
                    SendMessage("a", 2, idempotency_key="x"),
                ],
            )
