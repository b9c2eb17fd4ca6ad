"""Database URLs: the parts every backend shares.

Which backend a URL names is decided by its scheme (``storage.registry``); each backend parses
the rest. URLs follow SQLAlchemy's style, as DBOS's do: ``postgresql://``,
``postgresql+psycopg://``, ``postgres://``, ``sqlite:///relative.db``, ``sqlite:////absolute.db``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional
from urllib.parse import urlsplit

from waypoint.storage.errors import StorageConfigError

_SCHEMA_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


@dataclass(frozen=True)
class DatabaseTarget:
    dialect: str  # the backend's name: "postgresql", "sqlite", ...
    url: str  # what the backend's driver connects to (a libpq URL, a file path)
    database: Optional[str] = None

    def with_database(self, name: str) -> DatabaseTarget:
        parts = urlsplit(self.url)
        return DatabaseTarget(self.dialect, parts._replace(path="/" + name).geturl(), database=name)


def split_scheme(url: str) -> tuple[str, str]:
    """``(base scheme in lower case, the rest after "://")``; the driver suffix is dropped."""
    if not isinstance(url, str) or not url.strip():
        raise StorageConfigError("system_database_url must be a non-empty string")
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise StorageConfigError(
            f"system_database_url {redact(url)!r} is not a URL "
            "(expected postgresql://... or sqlite:///...)"
        )
    return scheme.split("+", 1)[0].lower(), rest


def check_schema_name(schema: str, what: str = "system schema name") -> str:
    if not isinstance(schema, str) or not _SCHEMA_RE.match(schema):
        shown = repr(schema) if len(repr(schema)) <= 70 else repr(schema)[:60] + "..."
        raise StorageConfigError(
            f"invalid {what} {shown}: use letters, digits and underscores, "
            "starting with a letter or underscore (at most 63 characters)"
        )
    return schema


def redact(url: str) -> str:
    """The URL with any password replaced, for error messages and logs."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)
