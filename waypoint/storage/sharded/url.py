"""The URL that names a sharded system database: ``shards://?u=<url>&u=<url>...``.

Configuration names shards as a list (``system_database_shards``, ``-s`` repeated); inside,
the list travels as one URL so that everything that opens, migrates or resets a system
database by URL (``storage.registry``) handles a sharded one too.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import parse_qsl, quote

from waypoint.storage.errors import StorageConfigError
from waypoint.storage.url import redact, split_scheme

SCHEME = "shards"


def shards_url(urls: Sequence[str]) -> str:
    """One URL for these member URLs (in the order given)."""
    members = list(urls)
    if isinstance(urls, str) or not members:
        raise StorageConfigError(
            "system_database_shards must be a non-empty list of PostgreSQL URLs"
        )
    for u in members:
        scheme, _ = split_scheme(u)
        if scheme not in ("postgresql", "postgres"):
            raise StorageConfigError(
                f"system_database_shards: {redact(u)!r} is not a PostgreSQL URL; shards are "
                "PostgreSQL servers (SQLite is one file on one machine: sharding it gains nothing)"
            )
    if len(set(members)) != len(members):
        raise StorageConfigError("system_database_shards lists the same URL twice")
    return f"{SCHEME}://?" + "&".join("u=" + quote(u, safe="") for u in members)


def member_urls(rest: str) -> list[str]:
    """The member URLs of a ``shards://`` URL (the part after ``://``)."""
    query = rest[1:] if rest.startswith("?") else rest.partition("?")[2]
    urls = [v for k, v in parse_qsl(query, keep_blank_values=True) if k == "u"]
    if not urls:
        raise StorageConfigError("a shards:// URL must name its shards as ?u=<url>&u=<url>")
    shards_url(urls)  # the same checks as configuration
    return urls


def is_sharded(url: str) -> bool:
    return isinstance(url, str) and url.lower().startswith(f"{SCHEME}://")
