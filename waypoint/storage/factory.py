"""Open the right store for a database URL."""

from __future__ import annotations

from typing import TYPE_CHECKING, Union

from waypoint.storage.postgres.store import PostgresStore
from waypoint.storage.sqlite.store import SqliteStore
from waypoint.storage.url import parse_url

if TYPE_CHECKING:
    from waypoint.core.config import RuntimeConfig

AnyStore = Union[PostgresStore, SqliteStore]


def open_url(
    url: str,
    *,
    schema: str = "dbos",
    pool_size: int = 20,
    application_name: str = "waypoint",
) -> AnyStore:
    target = parse_url(url)
    if target.dialect == "sqlite":
        return SqliteStore(target)
    return PostgresStore(
        target, schema=schema, pool_size=pool_size, application_name=application_name
    )


def open_store(config: RuntimeConfig) -> AnyStore:
    return open_url(
        config.system_database_url,
        schema=config.schema,
        pool_size=config.pool_size,
        application_name=f"waypoint:{config.name}"[:63],
    )
