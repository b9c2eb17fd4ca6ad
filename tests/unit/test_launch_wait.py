"""Which launch-time failures a PostgreSQL launch waits out (storage/postgres/faults.py):
the server is there but not ready, as opposed to a wrong address that must fail at once."""

from __future__ import annotations

import psycopg
import pytest

from waypoint.storage.errors import StorageConfigError
from waypoint.storage.postgres.faults import _not_ready


def at_connect(message: str) -> StorageConfigError:
    """How a connection failure reaches the launch: a configuration error with the cause."""
    try:
        raise StorageConfigError(f"cannot connect: {message}") from psycopg.OperationalError(
            f"connection failed: {message}"
        )
    except StorageConfigError as exc:
        return exc


@pytest.mark.parametrize(
    "message",
    [
        "FATAL:  the database system is starting up",
        "FATAL:  the database system is shutting down",
        "FATAL:  sorry, too many clients already",
        'connection to server at "127.0.0.1", port 5 failed: session is read-only',
        "server closed the connection unexpectedly\n\tThis probably means the server terminated",
        "ERROR:  server login has been failing, try again later (server_login_retry)",
    ],
)
def test_a_server_that_is_not_ready_is_waited_for(message: str) -> None:
    assert _not_ready(at_connect(message))


@pytest.mark.parametrize(
    "message",
    [
        'connection to server at "127.0.0.1", port 1 failed: Connection refused',
        'FATAL:  password authentication failed for user "app"',
        'FATAL:  database "nope" does not exist',
        'could not translate host name "db.example" to address',
    ],
)
def test_a_wrong_address_or_credentials_fail_at_once(message: str) -> None:
    assert not _not_ready(at_connect(message))


def test_transient_sqlstates_after_connecting_are_waited_for() -> None:
    assert _not_ready(psycopg.errors.ReadOnlySqlTransaction("read-only"))
    assert _not_ready(psycopg.errors.CannotConnectNow("starting up"))
    assert not _not_ready(psycopg.errors.InsufficientPrivilege("no"))
    assert not _not_ready(ValueError("a bug"))
