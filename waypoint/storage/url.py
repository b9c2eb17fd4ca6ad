"""Database URLs: which backend, and how to reach it.

Accepts SQLAlchemy-style URLs as DBOS does: ``postgresql://``, ``postgresql+psycopg://``,
``postgres://`` and ``sqlite:///relative.db`` / ``sqlite:////absolute.db``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional
from urllib.parse import unquote, urlsplit

from waypoint.error import DBOSInitializationError

_SCHEMA_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


@dataclass(frozen=True)
class DatabaseTarget:
    dialect: str  # "postgresql" or "sqlite"
    url: str  # libpq URL (postgresql) or file path (sqlite)
    database: Optional[str] = None

    def with_database(self, name: str) -> DatabaseTarget:
        parts = urlsplit(self.url)
        return DatabaseTarget(self.dialect, parts._replace(path="/" + name).geturl(), database=name)


def parse_url(url: str) -> DatabaseTarget:
    if not isinstance(url, str) or not url.strip():
        raise DBOSInitializationError("system_database_url must be a non-empty string")
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise DBOSInitializationError(
            f"system_database_url {redact(url)!r} is not a URL "
            "(expected postgresql://... or sqlite:///...)"
        )
    base = scheme.split("+", 1)[0].lower()
    if base in ("postgresql", "postgres"):
        libpq = "postgresql://" + rest
        db = unquote(urlsplit(libpq).path.lstrip("/")) or None
        return DatabaseTarget("postgresql", libpq, database=db)
    if base == "sqlite":
        # sqlite:///relative/path or sqlite:////absolute/path
        path = rest[1:] if rest.startswith("/") else rest
        path = path.split("?", 1)[0]
        if not path or path == ":memory:":
            raise DBOSInitializationError(
                "an in-memory SQLite database cannot hold durable workflows; give a file path "
                "(sqlite:///app.sqlite)"
            )
        return DatabaseTarget("sqlite", path, database=path)
    raise DBOSInitializationError(
        f"unsupported database URL scheme {scheme!r} in system_database_url; use postgresql:// "
        "or sqlite:///"
    )


def default_sqlite_url(app_name: str) -> str:
    name = app_name.replace("-", "_")
    if name[:1].isdigit():
        name = "_" + name
    return f"sqlite:///{name}.sqlite"


def check_schema_name(schema: str) -> str:
    if not isinstance(schema, str) or not _SCHEMA_RE.match(schema):
        raise DBOSInitializationError(
            f"invalid system schema name {schema!r}: use letters, digits and underscores, "
            "starting with a letter or underscore (at most 63 characters)"
        )
    return schema


def redact(url: str) -> str:
    """The URL with any password replaced, for error messages and logs."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)
