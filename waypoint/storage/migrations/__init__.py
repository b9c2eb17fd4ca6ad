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
