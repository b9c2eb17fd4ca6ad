"""``DBOS.launch()`` during a PostgreSQL outage waits for the server (up to
``faults.LAUNCH_WAIT_SEC``) at every step that connects, instead of failing; a configuration
error (wrong password, no such database or role, bad URL, wrong schema) still fails at once,
naming what is wrong. Each test stops and starts a private server (tests/private_pg.py),
never the shared one."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import pg_url, requires_postgres
from tests.private_pg import PrivatePostgres, accepts_connections
from waypoint import DBOS
from waypoint.error import DBOSInitializationError
from waypoint.storage.registry import open_url

pytestmark = [requires_postgres, pytest.mark.crash]

ROOT = Path(__file__).resolve().parents[2]
OUTAGE_SEC = 2.0  # how long the server stays down once the launch has begun

# A worker relaunched while its database is down: it launches, runs a workflow, says so.
WORKER = textwrap.dedent(
    """
    import logging, sys, time
    from waypoint import DBOS
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    DBOS(config={"name": "outage-relaunch", "system_database_url": sys.argv[1]})

    @DBOS.workflow()
    def hello(who: str) -> str:
        return "hello " + who

    began = time.monotonic()
    print("launching", flush=True)
    DBOS.launch()
    print(f"launched after {time.monotonic() - began:.1f}s", flush=True)
    print("result:", hello("again"), flush=True)
    DBOS.destroy()
    """
)


def migrated(server: PrivatePostgres, name: str) -> str:
    """A database with the current schema on ``server`` (a relaunched worker finds one)."""
    url = server.create_database(name)
    store = open_url(url)
    try:
        store.migrate()
    finally:
        store.close()
    return url


def test_a_worker_launched_while_the_server_is_down_waits_for_it(
    private_pg: PrivatePostgres,
) -> None:
    """The chaos campaign's case: a worker process relaunched while PostgreSQL is down. Its
    launch neither fails nor gives up: it launches once the server is back, and runs work."""
    url = migrated(private_pg, "relaunch")
    private_pg.stop()
    assert not accepts_connections(private_pg.url())
    assert accepts_connections(pg_url("postgres")), "the shared PostgreSQL went down"
    worker = subprocess.Popen(
        [sys.executable, "-c", WORKER, url],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Its first attempt finds the server down (however long the interpreter took to
        # start): without the wait, the launch failed there (DBOSInitializationError).
        logged = []
        assert worker.stderr is not None
        for line in worker.stderr:
            logged.append(line)
            if "unavailable at launch" in line:
                break
        assert "Connection refused" in "".join(logged), "".join(logged)
        time.sleep(OUTAGE_SEC)
        assert worker.poll() is None, "".join(logged) + worker.communicate()[1]
        private_pg.start()
        out, err = worker.communicate(timeout=60)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.communicate()
    assert worker.returncode == 0, out + "".join(logged) + err
    assert "result: hello again" in out, out + err


@contextmanager
def down_before(
    server: PrivatePostgres, owner: Any, method: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """The first call of ``owner.method`` finds the server stopped (the outage begins between
    the launch steps before it and this one); it is started again OUTAGE_SEC later."""
    original: Callable[..., Any] = getattr(owner, method)
    restart = threading.Timer(OUTAGE_SEC, server.start)

    def stopped_first(*args: Any, **kwargs: Any) -> Any:
        monkeypatch.setattr(owner, method, original)
        server.stop()
        restart.start()
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, method, stopped_first)
    try:
        yield
    finally:
        if restart.ident is not None:  # started: the server is up again before we go on
            restart.join()
    assert restart.ident is not None, f"{method} was not called at launch"


def launch_and_run(config: dict[str, Any]) -> str:
    DBOS.destroy(destroy_registry=True)
    DBOS(config={"name": "outage-launch", **config})
    try:

        @DBOS.workflow()
        def hello() -> str:
            return "hello"

        DBOS.launch()
        return hello()
    finally:
        DBOS.destroy(destroy_registry=True)


def test_the_notification_listener_waits_for_the_server(
    private_pg: PrivatePostgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The schema check passed, then the server went down: the listener's launch check (its
    own connections, outside the pool) waits as the schema check does."""
    from waypoint.storage.postgres.listener import Listener

    url = migrated(private_pg, "listener")
    with down_before(private_pg, Listener, "start", monkeypatch):
        assert launch_and_run({"system_database_url": url}) == "hello"


def test_a_sharded_launch_waits_for_the_server(
    private_pg: PrivatePostgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two shards on the private server: down at launch (each shard's migration waits), and
    down again just before the shard catalog is founded (its own connections wait too)."""
    from waypoint.storage.sharded import catalog

    shards = [private_pg.create_database(f"shard{i}") for i in range(2)]
    private_pg.stop()
    restart = threading.Timer(OUTAGE_SEC, private_pg.start)
    restart.start()
    try:
        with down_before(private_pg, catalog, "found", monkeypatch):
            # found() is reached only after the first restart: it stops the server again.
            assert launch_and_run({"system_database_shards": shards}) == "hello"
    finally:
        restart.join()


def test_a_server_that_stays_down_is_reported_after_the_bound(
    private_pg: PrivatePostgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    from waypoint.storage.postgres import faults

    url = migrated(private_pg, "staysdown")
    private_pg.stop()
    monkeypatch.setattr(faults, "LAUNCH_WAIT_SEC", 1.5)
    began = time.monotonic()
    with pytest.raises(DBOSInitializationError, match=f"port {private_pg.port} failed: Connection"):
        launch_and_run({"system_database_url": url})
    assert 1.0 <= time.monotonic() - began < 10


def with_password_auth(server: PrivatePostgres) -> str:
    """Role ``app`` (password ``right``, no CREATEDB) must log in with its password; returns
    the server's URL without a database for it."""
    server.sql("CREATE ROLE app LOGIN PASSWORD 'right'")
    hba = server.data / "pg_hba.conf"
    hba.write_text("host all app 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
    server.sql("SELECT pg_reload_conf()")
    return f"127.0.0.1:{server.port}"


def test_a_configuration_error_fails_the_launch_at_once(private_pg: PrivatePostgres) -> None:
    url = migrated(private_pg, "configured")
    private_pg.sql("GRANT ALL ON DATABASE configured TO PUBLIC")
    host = with_password_auth(private_pg)
    assert launch_and_run({"system_database_url": url}) == "hello"  # the server is up
    cases = [
        ({"system_database_url": f"postgresql://app:wrong@{host}/configured"},
         'password authentication failed for user "app"'),
        ({"system_database_url": f"postgresql://nobody@{host}/configured"},
         'role "nobody" does not exist'),
        ({"system_database_url": f"postgresql://postgres@{host}/missing", "run_migrations": False},
         'database "missing" does not exist'),
        ({"system_database_url": f"postgresql://app:right@{host}/missing"},
         "permission denied to create database"),
        ({"system_database_url": url, "run_migrations": False, "dbos_system_schema": "nope"},
         "no Waypoint schema 'nope'"),
        ({"system_database_url": "postgresql://postgres@127.0.0.1:notaport/configured"},
         'invalid integer value "notaport"'),
        ({"system_database_url": f"{url}?no_such_option=1"}, "no_such_option"),
    ]  # fmt: skip
    for config, message in cases:
        began = time.monotonic()
        with pytest.raises(DBOSInitializationError, match=message):
            launch_and_run(config)
        assert time.monotonic() - began < 5, f"{message}: not at once"
