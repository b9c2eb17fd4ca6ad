"""LISTEN on a dedicated connection (outside the pool) and turn notifications into wake-ups.

The connection has TCP keepalives, so a half-open socket is detected without polling
queries. On any error it reconnects with backoff; after every (re)connect it reports
``on_connect`` so the engine wakes all waiters, since notifications sent while it was down are
lost. It also checks, once, that LISTEN survives between transactions: behind a pooler in
transaction mode it does not, and notifications would silently never arrive.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql as pgsql

logger = logging.getLogger("waypoint")


AFFINITY_ROUNDS = 5  # probes of the session check at launch (three statements each)


class ListenerError(Exception):
    """LISTEN cannot work on this connection (e.g. a transaction-mode pooler)."""


class Listener:
    def __init__(
        self,
        url: str,
        conn_kwargs: dict[str, Any],
        channels: list[str],
        on_notify: Callable[[str, str], None],
        on_connect: Callable[[], None],
    ) -> None:
        self._url = url
        self._kwargs = {**conn_kwargs, "autocommit": True}
        self._channels = channels
        self._on_notify = on_notify
        self._on_connect = on_connect
        self._stop = threading.Event()
        self._conn: psycopg.Connection[Any] | None = None
        self._thread = threading.Thread(target=self._run, name="waypoint-listener", daemon=True)
        self.connected = threading.Event()

    def start(self) -> None:
        # Fail launch loudly if LISTEN cannot work here.
        self._check_session_affinity()
        self._connect()
        self._thread.start()

    def _check_session_affinity(self) -> None:
        """A transaction-mode pooler hands each transaction whichever server connection is
        free: while another client holds one in a transaction, our next statement lands on a
        different backend, and a LISTEN made on the first one would never be heard."""
        with (
            psycopg.connect(self._url, **self._kwargs) as conn,
            psycopg.connect(self._url, **{**self._kwargs, "autocommit": False}) as other,
        ):
            # One round can look like a session when the pooler hands ``other`` a different
            # idle server connection and ``conn`` its previous one again; in session mode no
            # round can show a change, so a few rounds only make a miss unlikely.
            for _ in range(AFFINITY_ROUNDS):
                before = conn.execute("SELECT pg_backend_pid()").fetchone()
                # Holds a server connection in a transaction. A pooler that reuses the most
                # recent free server connection (pgbouncer's default) hands it ``conn``'s own.
                taken = other.execute("SELECT pg_backend_pid()").fetchone()
                after = conn.execute("SELECT pg_backend_pid()").fetchone()
                other.rollback()
                if before != after or taken == before:
                    break
            else:
                return
            raise ListenerError(
                "the database connection does not keep its server session (a connection "
                "pooler in transaction mode): LISTEN/NOTIFY cannot work through it. Connect "
                "directly or through a pooler in session mode."
            )

    def stop(self) -> None:
        """Ask the thread to stop; it closes its connection within a quarter second."""
        self._stop.set()
        if not self._thread.is_alive() and self._conn is not None:
            self._conn.close()

    def _connect(self) -> None:
        conn = psycopg.connect(self._url, **self._kwargs)
        try:
            for channel in self._channels:
                conn.execute(pgsql.SQL("LISTEN {}").format(pgsql.Identifier(channel)))
            # LISTEN is session state; a transaction-mode pooler drops it after the statement.
            listening = {r[0] for r in conn.execute("SELECT pg_listening_channels()").fetchall()}
        except BaseException:
            conn.close()
            raise
        missing = set(self._channels) - listening
        if missing:
            conn.close()
            raise ListenerError(
                "LISTEN does not persist on this connection (channels "
                f"{sorted(missing)} lost): a connection pooler in transaction mode cannot "
                "deliver notifications. Connect directly or through a pooler in session mode."
            )
        self._conn = conn
        self.connected.set()

    def _run(self) -> None:
        try:
            self._listen_loop()
        finally:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _listen_loop(self) -> None:
        delay = 0.1
        fresh = True
        while not self._stop.is_set():
            if self._conn is None:
                try:
                    self._connect()
                except (psycopg.Error, ListenerError) as exc:
                    logger.warning("notification listener cannot connect: %s", exc)
                    if self._stop.wait(random.uniform(delay / 2, delay)):
                        return
                    delay = min(delay * 2, 5.0)
                    continue
                fresh = True
            delay = 0.1
            if fresh:
                fresh = False
                self._on_connect()
            conn = self._conn
            assert conn is not None
            try:
                for note in conn.notifies(timeout=0.25):
                    self._on_notify(note.channel, note.payload)
                    if self._stop.is_set():
                        return
            except psycopg.Error as exc:
                if self._stop.is_set():
                    return
                logger.warning("notification listener lost its connection: %s", exc)
                self.connected.clear()
                try:
                    conn.close()
                finally:
                    self._conn = None
