"""Which launch-time failures a PostgreSQL launch waits out (storage/postgres/faults.py):
the server is there but not ready, or (a launching process) does not answer at all, as
opposed to a configuration error that must fail at once."""

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


DOWN = [
    'connection to server at "127.0.0.1", port 1 failed: Connection refused\n\tIs the server '
    "running on that host and accepting TCP/IP connections?",
    'connection to server on socket "/run/postgresql/.s.PGSQL.5432" failed: No such file or '
    "directory\n\tIs the server running locally and accepting connections on that socket?",
    'connection to server at "10.0.0.9", port 5432 failed: No route to host',
    'connection to server at "10.0.0.9", port 5432 failed: Connection timed out',
    'connection to server at "10.0.0.9", port 5432 failed: Network is unreachable',
    "could not receive data from server: Connection reset by peer",
    "failed to resolve host 'db': [Errno -3] Temporary failure in name resolution",
]


@pytest.mark.parametrize("message", DOWN)
def test_a_server_that_does_not_answer_is_waited_for_at_launch(message: str) -> None:
    """A launching process waits (the server is down or restarting); the CLI does not, so a
    wrong host or port is reported at once there."""
    assert _not_ready(at_connect(message), down=True)
    assert not _not_ready(at_connect(message))


def test_a_connection_timeout_is_waited_for_at_launch() -> None:
    try:
        raise StorageConfigError("cannot connect") from psycopg.errors.ConnectionTimeout(
            "connection timeout expired"
        )
    except StorageConfigError as exc:
        assert _not_ready(exc, down=True)


@pytest.mark.parametrize(
    "message",
    [
        'FATAL:  password authentication failed for user "app"',
        'FATAL:  database "nope" does not exist',
        'FATAL:  role "nobody" does not exist',
        'FATAL:  no pg_hba.conf entry for host "10.0.0.1", user "app", database "app"',
        "failed to resolve host 'db.example': [Errno -2] Name or service not known",
        'invalid integer value "notaport" for connection option "port"',
        'could not read root certificate file "/nope/root.crt": No such file or directory',
    ],
)
def test_a_configuration_error_fails_at_once(message: str) -> None:
    assert not _not_ready(at_connect(message), down=True)


def test_transient_sqlstates_after_connecting_are_waited_for() -> None:
    assert _not_ready(psycopg.errors.ReadOnlySqlTransaction("read-only"))
    assert _not_ready(psycopg.errors.CannotConnectNow("starting up"))
    assert not _not_ready(psycopg.errors.InsufficientPrivilege("no"))
    assert not _not_ready(ValueError("a bug"))
    assert not _not_ready(ValueError("Connection refused"), down=True)  # not the driver's
