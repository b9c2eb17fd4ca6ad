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


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def db_url(backend: str, tmp_path: Any, request: pytest.FixtureRequest) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path}/waypoint-{uuid.uuid4().hex[:8]}.sqlite"
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
