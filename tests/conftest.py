"""Shared fixtures: every integration test runs against SQLite and a real PostgreSQL."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

from tests.private_pg import private_pg  # noqa: F401  (the fixture, for every test)
from waypoint import DBOS

PG_BASE = os.environ.get("WAYPOINT_TEST_PG", "postgresql://postgres@127.0.0.1:5432")
BACKENDS = [b for b in os.environ.get("WAYPOINT_TEST_BACKENDS", "sqlite,postgres").split(",") if b]


requires_postgres = pytest.mark.skipif(
    "postgres" not in BACKENDS, reason="PostgreSQL backend not selected"
)
# The third mode, "shards": a system database sharded over three PostgreSQL servers (base URLs,
# comma-separated; scripts/test.sh starts two private servers beside the shared one). Unset:
# three databases of the shared server, which exercises every code path but one server.
SHARD_BASES = [
    b.strip()
    for b in os.environ.get("WAYPOINT_TEST_SHARDS", ",".join([PG_BASE] * 3)).split(",")
    if b.strip()
]


def pg_url(database: str) -> str:
    return f"{PG_BASE.rstrip('/')}/{database}"


def pg_url_as(role: str, database: str) -> str:
    """``pg_url`` connecting as another role (trust authentication: no password)."""
    parts = urlsplit(PG_BASE)
    netloc = f"{role}@{parts.hostname or '127.0.0.1'}:{parts.port or 5432}"
    return urlunsplit(parts._replace(netloc=netloc, path=f"/{database}"))


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """One PostgreSQL database per test session (per xdist worker), dropped at the end."""
    name = f"wp_test_{os.getpid()}"
    try:
        admin = psycopg.connect(pg_url("postgres"), autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL is not reachable at {PG_BASE} ({exc}); run the suite with "
            "scripts/test.sh, which starts it, or set WAYPOINT_TEST_BACKENDS=sqlite"
        )
    with admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield pg_url(name)
    with psycopg.connect(pg_url("postgres"), autocommit=True) as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def _recreate(base: str, name: str, drop_only: bool = False) -> None:
    with psycopg.connect(
        f"{base.rstrip('/')}/postgres", autocommit=True, connect_timeout=5
    ) as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        if not drop_only:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def shard_member_urls(tag: str) -> list[str]:
    """Three database URLs, one per shard server, named after ``tag`` (not created)."""
    return [f"{b.rstrip('/')}/wp_{tag}_s{i}" for i, b in enumerate(SHARD_BASES)]


@pytest.fixture(scope="session")
def shard_databases() -> Iterator[str]:
    """The "shards" mode's system database: three fresh databases, one per shard server, as
    one ``shards://`` URL (per test session and xdist worker), dropped at the end."""
    from waypoint.storage.sharded.url import shards_url

    urls = shard_member_urls(f"test_{os.getpid()}")
    for u in urls:
        base, _, name = u.rpartition("/")
        _recreate(base, name)
    yield shards_url(urls)
    for u in urls:
        base, _, name = u.rpartition("/")
        _recreate(base, name, drop_only=True)


requires_shards = pytest.mark.skipif("shards" not in BACKENDS, reason="shards mode not selected")


def skip_sharded(backend: str, reason: str) -> None:
    """Skip the calling test in the "shards" mode, saying why it cannot work there."""
    if backend == "shards":
        pytest.skip(f"not with system_database_shards: {reason}")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def db_url(backend: str, tmp_path: Any, request: pytest.FixtureRequest) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path}/waypoint-{uuid.uuid4().hex[:8]}.sqlite"
    if backend == "shards":
        url = request.getfixturevalue("shard_databases")
        DBOS.reset_system_database(system_database_url=url, truncate=True)
        return str(url)
    url = request.getfixturevalue("pg_database")
    DBOS.reset_system_database(system_database_url=url, truncate=True)
    return str(url)


@pytest.fixture
def config(db_url: str) -> dict[str, Any]:
    return {"name": "waypoint-test", "system_database_url": db_url}


@pytest.fixture
def dbos(config: dict[str, Any]) -> Iterator[type[DBOS]]:
    """An initialized, not yet launched DBOS: define workflows in the test, then launch."""
    DBOS.destroy(destroy_registry=True)
    DBOS(config=config)  # type: ignore[arg-type]
    yield DBOS
    DBOS.destroy(destroy_registry=True)


def database_urls(url: str) -> list[str]:
    """The databases behind a system database URL: its shards' URLs when sharded."""
    if url.startswith("shards://"):
        from waypoint.storage.sharded.url import member_urls

        return member_urls(url.partition("://")[2])
    return [url]


def system_stores() -> list[Any]:
    """The running application's store, or each shard's store when sharded (tests that read
    the system tables directly sum or concatenate over these)."""
    from waypoint.core.runtime import get_runtime

    store: Any = get_runtime().store
    topo = getattr(store, "topo", None)
    return [m.store for m in topo.all()] if topo is not None else [store]


def system_count(table: str) -> int:
    """Rows of a system table, over every shard."""
    return sum(
        int(s._all(f"SELECT count(*) FROM {s.d.t(table)}", {}, "count")[0][0])
        for s in system_stores()
    )
