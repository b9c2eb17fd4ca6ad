"""Backends by URL scheme: a new backend is one folder and one line in ``BACKENDS``."""

from __future__ import annotations

from waypoint.storage.backend import Backend, StoreOptions
from waypoint.storage.errors import StorageConfigError
from waypoint.storage.postgres.backend import POSTGRES
from waypoint.storage.protocol import Store
from waypoint.storage.sharded.backend import SHARDS
from waypoint.storage.sharded.url import shards_url
from waypoint.storage.sqlite.backend import SQLITE
from waypoint.storage.url import DatabaseTarget, split_scheme

BACKENDS: tuple[Backend, ...] = (
    POSTGRES,
    SQLITE,
    SHARDS,
)


def backend_for(url: str) -> tuple[Backend, DatabaseTarget]:
    scheme, rest = split_scheme(url)
    for backend in BACKENDS:
        if scheme in backend.schemes:
            return backend, backend.target(rest)
    known = ", ".join(f"{s}://" for b in BACKENDS for s in b.schemes)
    raise StorageConfigError(
        f"unsupported database URL scheme {scheme!r} in system_database_url; use one of {known}"
    )


def sharded_url(urls: list[str]) -> str:
    """The one URL naming a system database sharded over these PostgreSQL URLs."""
    return shards_url(urls)


def parse_url(url: str) -> DatabaseTarget:
    return backend_for(url)[1]


def open_url(
    url: str,
    *,
    schema: str = "dbos",
    pool_size: int = 20,
    application_name: str = "waypoint",
    retry_connection_errors: bool = True,
    wait_for_server: bool = False,
) -> Store:
    """A closed store for ``url``: call ``migrate``/``verify_schema`` and ``open`` next.
    ``wait_for_server``: those wait for a server that does not answer yet (a launch)."""
    backend, target = backend_for(url)
    options = StoreOptions(
        schema, pool_size, application_name, retry_connection_errors, wait_for_server
    )
    return backend.open(target, options)


def system_url_for(app_database_url: str, app_name: str) -> str:
    """DBOS's rule: the system database lives beside the application database."""
    backend, target = backend_for(app_database_url)
    return backend.system_url_for(target, app_name)


def default_sqlite_url(app_name: str) -> str:
    name = app_name.replace("-", "_")
    if name[:1].isdigit():
        name = "_" + name
    return f"sqlite:///{name}.sqlite"


def reset_database(url: str, schema: str = "dbos", *, truncate: bool = False) -> None:
    """Drop the system database (or, with ``truncate``, delete every row but the schema)."""
    store = open_url(url, schema=schema, pool_size=1)
    try:
        if truncate:
            store.migrate()
            store.open()
            store.truncate_all()
        else:
            store.drop()
    finally:
        store.close()
