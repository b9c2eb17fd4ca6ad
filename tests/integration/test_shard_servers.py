"""The sharded mode's three servers (tests/shard_servers.py): distinct, and started idempotently."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests import shard_servers
from tests.private_pg import _free_port, _tempdir_base


def _identity(base_url: str) -> tuple[int, object]:
    """(system_identifier, postmaster start time): which cluster answers, and which run of it."""
    with psycopg.connect(base_url + "/postgres", connect_timeout=5) as conn:
        row = conn.execute(
            "SELECT system_identifier, pg_postmaster_start_time() FROM pg_control_system()"
        ).fetchone()
    assert row is not None
    return int(row[0]), row[1]


def test_the_three_shard_servers_answer_and_are_distinct() -> None:
    raw = os.environ.get("WAYPOINT_TEST_SHARDS")
    if not raw:
        pytest.skip("WAYPOINT_TEST_SHARDS is not set (scripts/test.sh sets it)")
    urls = [u for u in raw.split(",") if u]
    assert len(urls) == 3, urls
    identifiers = {_identity(url)[0] for url in urls}
    assert len(identifiers) == 3, f"the shard URLs {urls} do not reach three distinct clusters"


@pytest.fixture
def shard_dir() -> Iterator[Path]:
    """A directory for a throwaway 'long-lived' server; its server stopped at the end."""
    data = Path(tempfile.mkdtemp(prefix="waypoint-shards-", dir=_tempdir_base()))
    data.chmod(0o755)  # as .pg-shards/ in the repository: the server's OS user traverses it
    try:
        yield data
    finally:
        for port_dir in data.iterdir():
            pg = shard_servers.server(int(port_dir.name), data)
            if pg.running():
                pg.stop("immediate")
        shutil.rmtree(data, ignore_errors=True)


def test_ensure_creates_then_reuses_then_restarts_the_same_cluster(shard_dir: Path) -> None:
    port = _free_port()
    url = shard_servers.base_url(port)
    assert shard_servers.ensure(port, shard_dir) == "created"
    cluster, first_run = _identity(url)
    with psycopg.connect(url + "/postgres", autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (x int)")
        max_connections = conn.execute("SHOW max_connections").fetchone()
    assert max_connections == ("300",)

    assert shard_servers.ensure(port, shard_dir) == "reused"
    assert _identity(url) == (cluster, first_run)  # the same server, not restarted

    assert shard_servers.stop(port, shard_dir) is True
    assert shard_servers.stop(port, shard_dir) is False  # already stopped
    assert shard_servers.ensure(port, shard_dir) == "started"
    again, second_run = _identity(url)
    assert again == cluster and second_run != first_run  # the same cluster, run again
    with psycopg.connect(url + "/postgres") as conn:
        conn.execute("SELECT count(*) FROM kept")  # its data survived


def test_start_all_reports_why_a_port_cannot_be_served(shard_dir: Path) -> None:
    # A port something else listens on (here: a plain socket) is not a server we can start.
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        failure = shard_servers.start_all((port,), shard_dir)
    assert failure is not None and f"port {port}" in failure


def test_bad_port_list_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WAYPOINT_SHARD_PORTS", "5433,x")
    with pytest.raises(SystemExit, match=r"WAYPOINT_SHARD_PORTS.*'5433,x'"):
        shard_servers.ports_from_env()
    monkeypatch.setenv("WAYPOINT_SHARD_PORTS", "6001, 6002")
    assert shard_servers.ports_from_env() == (6001, 6002)
    assert shard_servers.urls((6001,)) == [
        shard_servers.SHARED,
        "postgresql://postgres@127.0.0.1:6001",
    ]
