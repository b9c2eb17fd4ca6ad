"""Versioned schema migrations, one numbered ``.sql`` file per version and dialect.

Waypoint records its own versions in ``waypoint_migrations``; ``dbos_migrations`` is kept at the
DBOS schema level the tables are equivalent to, so DBOS tooling sees a current schema.
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


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


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


def apply(dialect: str, current: int, run: Callable[[Migration], None]) -> None:
    """Apply every migration of ``dialect`` after version ``current``, in order: ``run``
    executes one and records its version, inside the caller's transaction."""
    for mig in load(dialect):
        if mig.version > current:
            run(mig)
            logger.info("applied system schema migration %04d_%s", mig.version, mig.name)


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
