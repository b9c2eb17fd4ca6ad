"""How the PostgreSQL store reads a failure: transient (retry), a full disk, or fatal; and,
at launch, which failures are waited out: the server is there but not ready, or (for a
launching process) it does not answer at all, as opposed to a configuration error."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable

import psycopg
import psycopg.errors as pgerr
from psycopg_pool import PoolClosed, PoolTimeout

from waypoint.storage.errors import StorageConfigError
from waypoint.storage.retry import Fault

logger = logging.getLogger("waypoint")

# How long a launch waits for a system database that is down, restarting, failing over or not
# yet promoted (a transient failure) before it gives up: long enough to ride through a
# restart or a failover, short enough that a wrong host or port is reported.
LAUNCH_WAIT_SEC = 30.0

_TRANSIENT_SQLSTATES = {"57P01", "57P02", "57P03", "53300", "25006", "40001", "40P01", "55P03"}


def classify(exc: BaseException) -> Fault:
    if isinstance(exc, PoolClosed):
        return Fault.FATAL
    if isinstance(exc, (PoolTimeout, psycopg.InterfaceError)):
        return Fault.TRANSIENT
    if isinstance(exc, pgerr.DiskFull):
        return Fault.FULL
    if isinstance(exc, psycopg.Error):
        state = exc.sqlstate or ""
        if state in _TRANSIENT_SQLSTATES or state.startswith("08"):
            return Fault.TRANSIENT
        if isinstance(exc, psycopg.OperationalError) and not state:
            return Fault.TRANSIENT  # connection-level failure: no SQLSTATE at all
        if isinstance(exc, pgerr.QueryCanceled):
            return Fault.TRANSIENT
        if isinstance(exc, psycopg.InternalError) and not state:
            # The client library, not the server, lost track of the protocol: e.g. behind
            # pgbouncer, the first command after the server's backend was terminated gets the
            # forwarded error and a second result ("received 2 results from command 'BEGIN'").
            # The connection is dropped and the call, safe to repeat, goes again.
            return Fault.TRANSIENT
    return Fault.FATAL


# What PostgreSQL (and pgbouncer) say at connection time when the server is there but not
# ready: such a failure reaches the launch as a configuration error whose cause has no SQLSTATE.
_NOT_READY = (
    "the database system is starting up",
    "the database system is shutting down",
    "the database system is in recovery mode",
    "the database system is not yet accepting connections",
    "sorry, too many clients already",
    "server login has been failing",
    "session is read-only",  # a multi-host URL's read-write server is not promoted yet
    "server closed the connection unexpectedly",  # it crashed or restarted as we connected
)


# What the client library says when no server answers at the address (stopped, crashed,
# restarting, its host rebooting or cut off): for a launching process, an outage to wait out.
# A host name that does not resolve at all, a bad URL, a wrong password or a missing database
# or role are configuration errors and are not in this list.
_DOWN = re.compile(
    "|".join(
        (
            "Connection refused",
            'on socket "[^"]*" failed: No such file or directory',  # the server is not running
            "Connection reset by peer",
            "Connection timed out",
            "No route to host",
            "Network is unreachable",
            "Temporary failure in name resolution",  # the resolver, not the name, is failing
        )
    )
)


def _not_ready(exc: BaseException, down: bool = False) -> bool:
    """A launch-time failure worth waiting out: a transient SQLSTATE (read-only standby,
    pgbouncer's failing server login, a server starting up, too many connections), or one
    of the not-ready messages; with ``down``, also a server that does not answer (refused,
    timed out). Without it a refused connection fails at once (the CLI, which reports a
    wrong address rather than wait on it)."""
    cause = exc.__cause__ if isinstance(exc, StorageConfigError) else exc
    if cause is None:
        return False
    if isinstance(cause, psycopg.Error) and cause.sqlstate:
        return classify(cause) is Fault.TRANSIENT
    if any(m in str(cause) for m in _NOT_READY):
        return True
    if not down or not isinstance(cause, psycopg.OperationalError):
        return False
    return isinstance(cause, pgerr.ConnectionTimeout) or _DOWN.search(str(cause)) is not None


def when_reachable(call: Callable[[], None], what: str, where: str, down: bool = False) -> None:
    """``call`` (idempotent: a migration attempt cut short is finished by the next one, see
    ``migrator``), tried again while it fails for a transient reason (with ``down``, also
    while the server does not answer), up to ``LAUNCH_WAIT_SEC``: a process started during
    an outage, a restart or a failover launches when the database is back instead of
    exiting. Every step of a launch that connects outside the store's pool goes through it
    (the schema check or migration, the notification listener, a sharded store's catalog);
    the pool's own calls wait through ``RetryPolicy``."""
    deadline = time.monotonic() + LAUNCH_WAIT_SEC  # read at each call (tests change it)
    delay = 0.1
    warned = 0.0
    while True:
        try:
            call()
            return
        except Exception as exc:
            now = time.monotonic()
            if not _not_ready(exc, down):
                raise
            if now >= deadline:
                logger.warning(
                    "system database %s still unavailable after waiting %.0f s to %s; giving up",
                    where,
                    LAUNCH_WAIT_SEC,
                    what,
                )
                raise
            if now - warned >= 5.0:
                warned = now
                logger.warning(
                    "system database %s unavailable at launch (%s: %s); trying again to %s "
                    "for up to %.0f s more",
                    where,
                    type(exc).__name__,
                    str(exc).strip().splitlines()[0] if str(exc).strip() else "",
                    what,
                    deadline - now,
                )
            time.sleep(min(delay, deadline - now))
            delay = min(2.0, delay * 2)
