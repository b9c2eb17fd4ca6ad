"""The PostgreSQL backend's entry in the registry: ``postgresql://`` and ``postgres://``."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

from waypoint.storage.backend import Backend, StoreOptions
from waypoint.storage.postgres.store import PostgresStore
from waypoint.storage.protocol import Store
from waypoint.storage.url import DatabaseTarget


def _target(rest: str) -> DatabaseTarget:
    libpq = "postgresql://" + rest
    db = unquote(urlsplit(libpq).path.lstrip("/")) or None
    return DatabaseTarget("postgresql", libpq, database=db)


def _open(target: DatabaseTarget, options: StoreOptions) -> Store:
    store = PostgresStore(
        target,
        schema=options.schema,
        pool_size=options.pool_size,
        application_name=options.application_name,
        wait_for_server=options.wait_for_server,
    )
    store.retry.retry_transient = options.retry_connection_errors
    return store


def _system_url_for(target: DatabaseTarget, app_name: str) -> str:
    return target.with_database(f"{target.database or app_name}_dbos_sys").url


POSTGRES = Backend("postgresql", ("postgresql", "postgres"), _target, _open, _system_url_for)
