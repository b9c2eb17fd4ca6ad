"""Fixtures of the storage conformance suite: one opened, migrated, empty store per test, on
every backend in ``WAYPOINT_TEST_BACKENDS``.

The store is obtained only through ``waypoint.storage.registry.open_url`` and is handed to the
tests behind ``Conforming``, which lets them use the ``Store`` protocol and nothing else, and
fails any test in which a storage call lets a public ``waypoint.error`` class escape.
"""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from typing import Any, cast

import psycopg
import pytest
from psycopg import sql

from tests.conftest import BACKENDS, pg_url, shard_member_urls
from waypoint.storage.protocol import SchemaAdmin, Store, SystemStore
from waypoint.storage.registry import open_url

# A schema of its own: a statement that forgets to qualify a table name fails here.
SCHEMA = "wp_conformance"

PROTOCOL = frozenset(
    name
    for cls in (SystemStore, SchemaAdmin)
    for name in (*vars(cls), *getattr(cls, "__annotations__", {}))
    if not name.startswith("_")
)


def is_public_error(exc: BaseException) -> bool:
    """Raised by a layer above storage (``waypoint.error`` and friends)."""
    return any(
        cls.__module__.startswith("waypoint") and not cls.__module__.startswith("waypoint.storage")
        for cls in type(exc).__mro__
    )


class Conforming:
    """The store as a conformance test may use it: protocol members only, and every failure a
    storage error or a driver error, never a public one."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        if name not in PROTOCOL:
            raise AttributeError(f"{name!r} is not part of the storage protocol")
        attr = getattr(self._store, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return attr(*args, **kwargs)
            except BaseException as exc:
                if is_public_error(exc):
                    pytest.fail(f"store.{name} raised the public error {exc!r}")
                raise

        return call


def open_store(url: str, *, schema: str = SCHEMA) -> Store:
    """A store on ``url`` behind the protocol check, migrated and open, not emptied."""
    store = open_url(url, schema=schema, pool_size=4, application_name="wp-conformance")
    store.migrate()
    store.open()
    return cast(Store, Conforming(store))  # a Store by delegation


# The contract runs against the sharded store too, by default wherever PostgreSQL is tested:
# it takes seconds (the whole integration suite in the shards mode is the slow, opt-in one).
STORE_BACKENDS = BACKENDS + (
    ["shards"]
    if "postgres" in BACKENDS
    and "shards" not in BACKENDS
    and os.environ.get("WAYPOINT_TEST_SHARDED_CONTRACT", "1") != "0"
    else []
)


@pytest.fixture(params=STORE_BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/conformance.sqlite"
    if request.param == "shards":
        return str(request.getfixturevalue("shard_databases"))
    return str(request.getfixturevalue("pg_database"))


@pytest.fixture
def connect(store_url: str) -> Iterator[Callable[[], Store]]:
    """Opens more stores on the same database (another process, as far as storage knows)."""
    opened: list[Store] = []

    def make() -> Store:
        opened.append(open_store(store_url))
        return opened[-1]

    yield make
    for s in opened:
        s.close()


@pytest.fixture
def store(connect: Callable[[], Store]) -> Store:
    s = connect()
    s.truncate_all()
    return s


@pytest.fixture
def driver_connection(store_url: str) -> Iterator[Any]:
    """A connection of the backend's own driver, as an application holds one (for the
    enqueue-inside-your-transaction call)."""
    if store_url.startswith("shards://"):
        pytest.skip(
            "not with system_database_shards: a caller's own connection reaches one shard, "
            "so enqueueing or sending inside the caller's transaction is refused"
        )
    if store_url.startswith("sqlite:///"):
        conn: Any = sqlite3.connect(store_url.removeprefix("sqlite:///"))
    else:
        conn = psycopg.connect(store_url)
    yield conn
    conn.close()


@pytest.fixture
def scratch_url(store_url: str, tmp_path: Any) -> Iterator[str]:
    """A database that does not exist yet, on the same server as ``store_url``."""
    if store_url.startswith("sqlite:///"):
        yield f"sqlite:///{tmp_path}/scratch.sqlite"
        return
    if store_url.startswith("shards://"):
        from waypoint.storage.sharded.url import shards_url

        urls = shard_member_urls(f"scratch_{os.getpid()}_{uuid.uuid4().hex[:6]}")
        yield shards_url(urls)
        for u in urls:
            base, _, name = u.rpartition("/")
            with psycopg.connect(f"{base}/postgres", autocommit=True) as admin:
                admin.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )
        return
    name = f"wp_scratch_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    yield pg_url(name)
    with psycopg.connect(pg_url("postgres"), autocommit=True) as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture
def one_database_url(scratch_url: str) -> str:
    """``scratch_url`` for a test that writes to the database with its own driver, as one
    database (adopting a DBOS schema): each shard is such a database, tested in the other
    modes."""
    if scratch_url.startswith("shards://"):
        pytest.skip("not with system_database_shards: adoption is per database (each shard)")
    return scratch_url


@pytest.fixture
def known_bug(request: pytest.FixtureRequest, store: Store) -> Callable[[str, str], None]:
    """``known_bug(dialect, reason)``: this test is expected to fail on that backend."""

    def mark(dialect: str, reason: str) -> None:
        if store.dialect == dialect:
            request.applymarker(pytest.mark.xfail(strict=True, reason=reason))

    return mark


PG_STORE_APPLICATION = "wp-pg-store"


@pytest.fixture
def pg_store(pg_database: str) -> Iterator[Any]:
    """The PostgreSQL store itself, not behind ``Conforming``: for the tests of what only it
    does (its batch writers, its statements); its connections are named
    ``PG_STORE_APPLICATION``."""
    store = open_url(pg_database, schema=SCHEMA, pool_size=4, application_name=PG_STORE_APPLICATION)
    store.migrate()
    store.open()
    store.truncate_all()
    yield store
    store.close()
