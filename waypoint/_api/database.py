"""Reaching a system database from outside an application (the CLI, tools): operations on it,
its schema, and URLs safe to print."""

from __future__ import annotations

from typing import Optional

from waypoint._api.ops.base import ClientOps
from waypoint.core.engine import Engine
from waypoint.core.storage_errors import translated
from waypoint.storage.registry import open_url, reset_database
from waypoint.storage.registry import sharded_url as _sharded_url
from waypoint.storage.url import redact as _redact


def open_ops(url: str, *, schema: str = "dbos", pool_size: int = 2) -> ClientOps:
    """Operations on the database at ``url``; fails at once, with advice, if it cannot be
    reached or has no current schema (never waits for it, never migrates)."""
    with translated():
        store = open_url(url, schema=schema, pool_size=pool_size)
        try:
            store.verify_schema()
        except BaseException:
            store.close()
            raise
    engine = Engine(store, app_name=None, executor_id="cli", app_version=None)
    engine.store.open()
    return ClientOps(engine)


def migrate(url: str, *, schema: str = "dbos", app_role: Optional[str] = None) -> None:
    """Create or upgrade the system schema; optionally grant an application role access."""
    with translated():
        store = open_url(url, schema=schema, pool_size=1)
        try:
            store.migrate()
            if app_role is not None:
                store.grant(app_role)
        finally:
            store.close()


def drop(url: str, *, schema: str = "dbos") -> None:
    """Drop the system database (every workflow is lost)."""
    with translated():
        reset_database(url, schema)


def redact(url: str) -> str:
    """The URL with any password hidden."""
    return _redact(url)


def sharded_url(urls: list[str]) -> str:
    """The one URL naming a system database sharded over these PostgreSQL URLs."""
    with translated():
        return _sharded_url(urls)


def shards(
    url: str, *, schema: str = "dbos", add: Optional[str] = None, activate: Optional[str] = None
) -> list[dict[str, object]]:
    """The shards of a sharded system database (after adding or activating one)."""
    from dataclasses import asdict

    from waypoint.storage.sharded import admin

    with translated():
        store = admin.sharded(open_url(url, schema=schema, pool_size=2))
        try:
            store.open()
            if add is not None:
                admin.add_shard(store, add)
            if activate is not None:
                admin.activate_shard(store, activate)
            return [asdict(i) for i in admin.list_shards(store)]
        finally:
            store.close()
