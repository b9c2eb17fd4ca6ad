"""Versioned schema migrations, one numbered ``.sql`` file per version and dialect.

Waypoint records its own versions in ``waypoint_migrations``; ``dbos_migrations`` is kept at the
DBOS schema level the tables are equivalent to, so DBOS tooling sees a current schema.

A PostgreSQL migration made of ``CREATE INDEX CONCURRENTLY IF NOT EXISTS`` statements only is
*non-transactional*: on a database in use the runner builds its indexes outside any
transaction, so writes to the table go on while they build (a plain ``CREATE INDEX`` holds a
lock that blocks every write to the table until the migration commits: 12-45 s at a million
rows, benchmarks/migration_build.py). ``Migration.concurrent_indexes`` lists what it
builds, so the runner can check each index is valid before recording the version.
"""

from __future__ import annotations

import logging
import re
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources

from waypoint.storage.errors import StorageConfigError

logger = logging.getLogger("waypoint")

_FILE_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_CONCURRENTLY_RE = re.compile(r"^(\s*CREATE\s+(?:UNIQUE\s+)?INDEX)\s+CONCURRENTLY\b", re.I | re.M)
_CONCURRENT_INDEX_RE = re.compile(
    r"^CREATE\s+(?:UNIQUE\s+)?INDEX\s+CONCURRENTLY\s+IF\s+NOT\s+EXISTS\s+(\w+)\s+ON\s", re.I
)


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def transactional(self) -> bool:
        """False for a migration that builds indexes ``CONCURRENTLY`` (outside a transaction)."""
        return _CONCURRENTLY_RE.search(self.sql) is None

    @property
    def concurrent_indexes(self) -> list[tuple[str, str]]:
        """(index name, statement) of each index a non-transactional migration builds."""
        if self.transactional:
            return []
        found: list[tuple[str, str]] = []
        for statement in split_statements(self.sql):
            m = _CONCURRENT_INDEX_RE.match(statement)
            if m is None:
                raise RuntimeError(
                    f"migration {self.version:04d}_{self.name} builds indexes CONCURRENTLY, so "
                    "it may hold nothing but CREATE INDEX CONCURRENTLY IF NOT EXISTS name ON "
                    f"...; found: {statement[:80]}"
                )
            found.append((m.group(1), statement))
        return found

    def in_transaction(self) -> str:
        """The script with plain ``CREATE INDEX``: what runs inside a transaction (a new
        database, where no one writes yet and an atomic migration is worth more)."""
        return _CONCURRENTLY_RE.sub(r"\1", self.sql)


def load(dialect: str) -> list[Migration]:
    folder = resources.files(__package__).joinpath(dialect)
    found: list[Migration] = []
    for entry in folder.iterdir():
        m = _FILE_RE.match(entry.name)
        if m:
            found.append(Migration(int(m.group(1)), m.group(2), entry.read_text("utf-8")))
    found.sort(key=lambda mig: mig.version)
    for expected, mig in enumerate(found, start=1):
        if mig.version != expected:
            raise RuntimeError(f"{dialect} migrations are not contiguous at {mig.version}")
        _ = mig.concurrent_indexes  # refuses a non-transactional one that is not all indexes
    return found


# The DBOS migration level Waypoint's schema is equivalent to (DBOS 2.31's last migration, the
# same number in both dialects). A database at a lower level was last migrated by an older DBOS.
DBOS_SCHEMA_VERSION = 108


def check_adoptable(current: int, dbos_version: int | None, where: str) -> None:
    """Refuse to adopt (``current`` == 0) a DBOS database below ``DBOS_SCHEMA_VERSION``.

    Waypoint's version 1 creates only the tables that are missing, so an older DBOS's tables
    would stay without the columns both sides need; DBOS itself upgrades them in place."""
    if current == 0 and dbos_version and dbos_version < DBOS_SCHEMA_VERSION:
        raise StorageConfigError(
            f"the system database {where} was last migrated by an older DBOS (its schema is at "
            f"DBOS migration {dbos_version}; Waypoint needs {DBOS_SCHEMA_VERSION}, DBOS 2.31): "
            "launch DBOS 2.31 or later on it once to upgrade it, then Waypoint"
        )


def latest_version(dialect: str) -> int:
    migrations = load(dialect)
    return migrations[-1].version if migrations else 0


def pending(dialect: str, current: int) -> list[Migration]:
    """The migrations of ``dialect`` after version ``current``, in order."""
    return [mig for mig in load(dialect) if mig.version > current]


def applied(mig: Migration) -> None:
    logger.info("applied system schema migration %04d_%s", mig.version, mig.name)


def apply(dialect: str, current: int, run: Callable[[Migration], None]) -> None:
    """Apply every migration of ``dialect`` after version ``current``, in order: ``run``
    executes one and records its version, inside the caller's transaction."""
    for mig in pending(dialect, current):
        run(mig)
        applied(mig)


def require_current(dialect: str, current: int, advice: str) -> None:
    """Raise StorageConfigError when a schema at version ``current`` is behind this code."""
    latest = latest_version(dialect)
    if current < latest:
        raise StorageConfigError(
            f"the system schema is at version {current} but this Waypoint needs {latest}; " + advice
        )


_ADD_COLUMN_RE = re.compile(r'^ALTER\s+TABLE\s+"?(\w+)"?\s+ADD\s+COLUMN\s+"?(\w+)"?', re.IGNORECASE)


def added_column(statement: str) -> tuple[str, str] | None:
    """The (table, column) an ``ALTER TABLE ... ADD COLUMN`` statement adds, else None.

    SQLite has no ``ADD COLUMN IF NOT EXISTS``; its runner asks this to skip a column that is
    already there, as when Waypoint adopts a database DBOS created (same tables, without
    Waypoint's additions)."""
    m = _ADD_COLUMN_RE.match(statement.strip())
    return (m.group(1), m.group(2)) if m else None


def split_statements(sql: str) -> list[str]:
    """Split a script into complete statements (SQLite's parser decides where they end)."""
    statements: list[str] = []
    current: list[str] = []
    for line in sql.splitlines(keepends=True):
        if not current and (not line.strip() or line.lstrip().startswith("--")):
            continue
        current.append(line)
        text = "".join(current)
        if sqlite3.complete_statement(text):
            statements.append(text.strip())
            current = []
    if "".join(current).strip():
        raise ValueError("migration script ends with an incomplete statement")
    return statements
