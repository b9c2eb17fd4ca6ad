"""Fixtures for the crash tests: a fresh system database per test, for each backend.

Self-contained on purpose (it does not use tests/conftest.py's session database): the workers
are separate processes, and a PostgreSQL database of our own per test means a stray worker
of one test can never touch another test's workflows.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from tests.crash.harness import Harness

PG_BASE = os.environ.get("WAYPOINT_TEST_PG", "postgresql://postgres@127.0.0.1:5432").rstrip("/")
BACKENDS = [b for b in os.environ.get("WAYPOINT_TEST_BACKENDS", "sqlite,postgres").split(",") if b]


def _admin() -> psycopg.Connection:
    try:
        return psycopg.connect(f"{PG_BASE}/postgres", autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is not reachable at {PG_BASE} ({exc})")


@pytest.fixture(params=BACKENDS)
def crash_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def crash_db_url(crash_backend: str, tmp_path: Path) -> Iterator[str]:
    """A brand-new, empty system database URL (SQLite file, or a new PostgreSQL database)."""
    if crash_backend == "sqlite":
        yield f"sqlite:///{tmp_path}/system-{uuid.uuid4().hex[:8]}.sqlite"
        return
    name = f"wp_crash_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with _admin() as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield f"{PG_BASE}/{name}"
    finally:
        with _admin() as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture
def harness(crash_backend: str, crash_db_url: str, tmp_path: Path) -> Iterator[Harness]:
    h = Harness(crash_backend, crash_db_url, tmp_path)
    try:
        yield h
    finally:
        h.cleanup()  # SIGKILL and reap whatever a failed test left running


@pytest.fixture
def sharded_harness(tmp_path: Path) -> Iterator[Harness]:
    """A harness on a brand-new system database sharded over three databases, one per shard
    server (``WAYPOINT_TEST_SHARDS``; three of the shared server when unset)."""
    from tests.conftest import _recreate, shard_member_urls
    from waypoint.storage.sharded.url import shards_url

    urls = shard_member_urls(f"crash_{os.getpid()}_{uuid.uuid4().hex[:6]}")
    for u in urls:
        base, _, name = u.rpartition("/")
        _recreate(base, name)
    h = Harness("shards", shards_url(urls), tmp_path)
    try:
        yield h
    finally:
        h.cleanup()
        for u in urls:
            base, _, name = u.rpartition("/")
            _recreate(base, name, drop_only=True)
