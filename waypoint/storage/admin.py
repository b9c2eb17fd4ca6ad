"""Destructive maintenance of a system database (tests and the ``reset`` CLI command)."""

from __future__ import annotations

import psycopg
from psycopg import sql as pgsql

from waypoint.storage.factory import open_url
from waypoint.storage.postgres.store import PostgresStore
from waypoint.storage.sqlite.store import SqliteStore
from waypoint.storage.url import parse_url


def reset_database(url: str, schema: str = "dbos", *, truncate: bool = False) -> None:
    """Drop the system database (or, with ``truncate``, delete every row but the schema)."""
    target = parse_url(url)
    store = open_url(url, schema=schema, pool_size=1)
    try:
        if truncate:
            store.migrate()
            store.open()
            store.truncate_all()
            return
        if isinstance(store, SqliteStore):
            store.destroy_file()
            return
        assert isinstance(store, PostgresStore)
        if not target.database:
            raise ValueError("the system database URL names no database to drop")
        admin = target.with_database("postgres")
        with psycopg.connect(admin.url, autocommit=True) as conn:
            conn.execute(
                pgsql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    pgsql.Identifier(target.database)
                )
            )
    finally:
        store.close()
