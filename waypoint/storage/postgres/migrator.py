"""Running the PostgreSQL migrations, one migrator at a time, without blocking the writers.

A migration that builds indexes on a table in use (``Migration.transactional`` is False)
runs outside any transaction: ``CREATE INDEX CONCURRENTLY`` takes a lock that lets INSERT,
UPDATE and DELETE go on, where a plain ``CREATE INDEX`` would hold up every write to
``workflow_status`` until the migration commits (12-45 s at a million rows: an upgrade
would stall every running workflow). Everything else runs in transactions as before.

What the runner keeps:

- One migrator at a time, across processes: a *session* advisory lock (a transaction-scoped
  one ends with the first transaction). A process that finds it taken polls for it rather
  than waiting in ``pg_advisory_lock``: a waiting statement holds a snapshot, and ``CREATE
  INDEX CONCURRENTLY`` waits for every older snapshot to go, so the holder would wait for
  the waiter that waits for it (PostgreSQL's deadlock detector would kill one of them).
- The version recorded only once the migration is complete: after the last index is built,
  each one is checked valid (``pg_index.indisvalid``), and only then is the version inserted.
- A restart after a crash: an interrupted ``CONCURRENTLY`` build (killed backend, cancelled
  statement, lost connection) leaves its index behind, INVALID, and the version unrecorded;
  ``IF NOT EXISTS`` would skip it forever, so the next run drops it (``DROP INDEX
  CONCURRENTLY``, which does not block writes either) and builds it again.

A new database (no version, no ``workflow_status`` yet: nobody writes to it) gets every
migration in one transaction, as before, so its creation stays all or nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql as pgsql

from waypoint.storage import migrations
from waypoint.storage.errors import StorageError

logger = logging.getLogger("waypoint")

MIGRATION_LOCK_KEY = 7_321_004_281  # advisory lock serialising concurrent migrators
LOCK_POLL_S = 0.2  # how often a waiting migrator asks for the lock again

Conn = psycopg.Connection[Any]


@contextmanager
def migration_lock(conn: Conn, where: str) -> Iterator[None]:
    """Hold the migration lock on ``conn``'s session (an autocommit connection) while inside.

    Polled with ``pg_try_advisory_lock``: between two tries the waiter holds no snapshot, so
    the holder's ``CREATE INDEX CONCURRENTLY`` never waits for it."""

    def taken() -> bool:
        row = conn.execute("SELECT pg_try_advisory_lock(%s)", (MIGRATION_LOCK_KEY,)).fetchone()
        return bool(row and row[0])

    if not taken():
        logger.info("another process is migrating the system schema of %s; waiting for it", where)
        while not taken():
            time.sleep(LOCK_POLL_S)
    try:
        yield
    finally:
        if not conn.closed:
            try:
                conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
            except psycopg.Error:  # the session is gone, and its lock with it
                logger.debug("could not release the migration lock", exc_info=True)


def index_validity(conn: Conn, schema: str, name: str) -> bool | None:
    """Whether index ``schema.name`` is valid; None when there is no such index."""
    row = conn.execute(
        "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s",
        (schema, name),
    ).fetchone()
    return None if row is None else bool(row[0])


class Migrator:
    """Applies the pending migrations of one schema, on an autocommit connection that holds
    the migration lock."""

    def __init__(self, conn: Conn, schema: str) -> None:
        self.conn = conn
        self.schema = schema
        self._record = pgsql.SQL(
            "INSERT INTO {}.waypoint_migrations (version, name) VALUES (%s, %s)"
        ).format(pgsql.Identifier(schema))

    def is_new(self, current: int) -> bool:
        """A database no one can be writing to yet: no version, no workflow table."""
        if current:
            return False
        row = self.conn.execute(
            "SELECT 1 FROM pg_tables WHERE schemaname = %s AND tablename = 'workflow_status'",
            (self.schema,),
        ).fetchone()
        return row is None

    def run(self, current: int) -> None:
        pending = migrations.pending("postgresql", current)
        if self.is_new(current):
            self._in_one_transaction(pending)
            return
        batch: list[migrations.Migration] = []
        for mig in pending:
            if mig.transactional:
                batch.append(mig)
                continue
            self._in_one_transaction(batch)
            batch = []
            self._build_indexes(mig)
        self._in_one_transaction(batch)

    def _in_one_transaction(self, batch: list[migrations.Migration]) -> None:
        """Apply ``batch`` and record its versions atomically (an index-building migration
        in it, on a new database, builds with plain ``CREATE INDEX``)."""
        if not batch:
            return
        with self.conn.transaction():
            for mig in batch:
                self.conn.execute(mig.in_transaction().replace("{schema}", self.schema))
                self.conn.execute(self._record, (mig.version, mig.name))
        for mig in batch:
            migrations.applied(mig)

    def _build_indexes(self, mig: migrations.Migration) -> None:
        """Build ``mig``'s indexes outside any transaction, then record its version if, and
        only if, every one of them is valid."""
        builds = mig.concurrent_indexes
        for name, statement in builds:
            valid = index_validity(self.conn, self.schema, name)
            if valid:
                continue
            if valid is False:
                logger.warning(
                    "index %s.%s was left invalid by an interrupted build; building it again",
                    self.schema,
                    name,
                )
                self.conn.execute(
                    pgsql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(
                        pgsql.Identifier(self.schema, name)
                    )
                )
            self.conn.execute(statement.replace("{schema}", self.schema))
        with self.conn.transaction():
            broken = [n for n, _ in builds if not index_validity(self.conn, self.schema, n)]
            if broken:
                raise StorageError(
                    f"migration {mig.version:04d}_{mig.name} left indexes missing or invalid in "
                    f"schema {self.schema!r}: {', '.join(broken)}; it was not recorded (run "
                    "the migration again to rebuild them)"
                )
            self.conn.execute(self._record, (mig.version, mig.name))
        migrations.applied(mig)
