"""The SQLite backend's entry in the registry: ``sqlite:///relative`` or ``sqlite:////absolute``."""

from __future__ import annotations

from waypoint.storage.backend import Backend, StoreOptions
from waypoint.storage.errors import StorageConfigError
from waypoint.storage.protocol import Store
from waypoint.storage.sqlite.store import SqliteStore
from waypoint.storage.url import DatabaseTarget


def _target(rest: str) -> DatabaseTarget:
    path = rest[1:] if rest.startswith("/") else rest
    path = path.split("?", 1)[0]
    if not path or path == ":memory:":
        raise StorageConfigError(
            "an in-memory SQLite database cannot hold durable workflows; give a file path "
            "(sqlite:///app.sqlite)"
        )
    return DatabaseTarget("sqlite", path, database=path)


def _open(target: DatabaseTarget, options: StoreOptions) -> Store:
    store = SqliteStore(target)
    store.retry.retry_transient = options.retry_connection_errors
    return store


def _system_url_for(target: DatabaseTarget, app_name: str) -> str:
    # One file holds the application's tables and the system tables, as in DBOS.
    return "sqlite:///" + target.url


SQLITE = Backend("sqlite", ("sqlite",), _target, _open, _system_url_for)
