"""Connections kept out of the pool between the store's statements, each with its cursor.

A workflow of n steps is n + 2 single statements on autocommit connections, one after the
other. Borrowing each from ``psycopg_pool`` and giving it back (the pool's locks, its
checks, its log calls, the connection's context exit) and making a new cursor for it was
about a third of the client's CPU per statement outside psycopg's own execution (issue 11,
seq0/seq1 profiles). Here a few idle connections wait on a stack, each with its kept cursors
(``PgConnection.hot_cursor``): a statement pops one, runs, and pushes it back, two list
operations under a lock.

A caller that finds the stack empty waits in the pool; while one does, a connection given
back goes to the pool, where it is handed to that caller, and not onto the stack (whose
idle connections a caller already waiting in the pool would never see).

Only a connection that is idle and healthy comes back to the stack: one that failed, is in
a transaction or is closed goes back to the pool, which rolls it back or replaces it as
before. One held longer than ``HOLD`` seconds goes back to the pool too, so the pool's
lifetime and idle rules still apply. Every path of the store takes its connection here
first, so an idle connection on the stack is never out of reach of a caller waiting for
one (the pool's own idle connections are used when the stack is empty). ``flush`` hands
them all back: after a lost connection, so the pool tests them, and at close.
"""

from __future__ import annotations

import threading
import time

from psycopg.pq import TransactionStatus
from psycopg_pool import ConnectionPool

from waypoint.storage.postgres.dialect import PgConnection

HOLD = 30.0  # seconds a connection stays out of the pool at most


class Held:
    """A connection taken from the pool, and when it was taken."""

    __slots__ = ("conn", "since")

    def __init__(self, conn: PgConnection) -> None:
        self.conn = conn
        self.since = time.monotonic()


class HotConnections:
    def __init__(self, pool: ConnectionPool[PgConnection], keep: int) -> None:
        self._pool = pool
        self._keep = max(1, keep)
        self._idle: list[Held] = []
        self._lock = threading.Lock()
        self._closed = False
        self._waiting = 0  # callers in the pool's getconn

    def take(self, timeout: float | None = None) -> Held:
        with self._lock:
            if self._idle:
                return self._idle.pop()
            self._waiting += 1
        try:
            return Held(self._pool.getconn(timeout))
        finally:
            with self._lock:
                self._waiting -= 1

    def give(self, held: Held) -> None:
        """Back after a statement that succeeded: onto the stack if it can serve the next."""
        conn = held.conn
        if (
            conn.pgconn.transaction_status == TransactionStatus.IDLE
            and time.monotonic() - held.since < HOLD
        ):
            with self._lock:
                if not self._closed and not self._waiting and len(self._idle) < self._keep:
                    self._idle.append(held)
                    return
        self._pool.putconn(conn)

    def drop(self, held: Held) -> None:
        """Back after a failure: to the pool, which rolls it back or replaces it."""
        self._pool.putconn(held.conn)

    def flush(self, closing: bool = False) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
            self._closed = self._closed or closing
        for held in idle:
            self._pool.putconn(held.conn)

    def idle_count(self) -> int:
        return len(self._idle)
