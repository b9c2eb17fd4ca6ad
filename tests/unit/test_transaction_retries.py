"""Which database errors run a transaction again (as DBOS's retriable_postgres_exception and
serialization checks decide), and which fail it."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import errors
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

from waypoint._api.appdb import is_retriable


@pytest.mark.parametrize(
    "orig",
    [
        errors.SerializationFailure(),  # 40001
        errors.DeadlockDetected(),  # 40P01
        errors.AdminShutdown(),  # 57P01
        errors.TooManyConnections(),  # 53300
        psycopg.OperationalError("connection failed: connection refused"),  # no SQLSTATE
        psycopg.OperationalError("server closed the connection unexpectedly"),
        psycopg.errors.ConnectionTimeout("timeout expired"),
    ],
    ids=lambda e: type(e).__name__ + ":" + str(e)[:20],
)
def test_retried(orig: Exception) -> None:
    assert is_retriable(OperationalError("stmt", {}, orig))


def test_sqlite_lock_is_retried() -> None:
    import sqlite3

    assert is_retriable(
        OperationalError("stmt", {}, sqlite3.OperationalError("database is locked"))
    )


@pytest.mark.parametrize(
    "exc",
    [
        ProgrammingError("stmt", {}, errors.SyntaxError()),
        IntegrityError("stmt", {}, errors.UniqueViolation()),
        OperationalError("stmt", {}, psycopg.OperationalError("something else")),
        ValueError("not a database error"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_not_retried(exc: Exception) -> None:
    assert not is_retriable(exc)
