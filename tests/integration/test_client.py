"""DBOSClient against a launched application (both backends, unless PostgreSQL-only).

On PostgreSQL the in-process client connects with its URL spelled differently (an extra
connection parameter), so it does not share the application's in-process wake-ups: like a
client in another process, it is woken by NOTIFY only. (A SQLite store is named by its file
path, so there the client shares them.) One test also runs a client in a real subprocess.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Optional

import psycopg
import pytest

from tests.conftest import skip_sharded, system_count
from waypoint import DBOS, DBOSClient, EnqueueOptions, Queue, SetWorkflowID
from waypoint.error import (
    DBOSAwaitedWorkflowCancelledError,
    DBOSException,
    DBOSNonExistentWorkflowError,
)
from waypoint.queues.model import QueueConfigError

from ..conftest import requires_postgres

REPO = Path(__file__).resolve().parents[2]


# -- helpers ------------------------------------------------------------------------------------


class Gate:
    """A step body that blocks until released (at most 30 s)."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self) -> None:
        self.entered.set()
        self.release.wait(30)

    def reached(self, timeout: float = 10) -> None:
        assert self.entered.wait(timeout), "the workflow never reached its gate"


def wait_until(pred: Callable[[], Any], timeout: float = 10, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def status_of(workflow_id: str) -> Optional[str]:
    status = DBOS.get_workflow_status(workflow_id)
    return status.status if status is not None else None


def count_rows(table: str) -> int:
    return system_count(table)


def client_url(db_url: str, backend: str) -> str:
    """The same database, spelled so that the client gets wake-ups of its own."""
    return db_url + ("?connect_timeout=10" if backend == "postgres" else "")


@pytest.fixture
def make_client(db_url: str, backend: str) -> Iterator[Callable[..., DBOSClient]]:
    clients: list[DBOSClient] = []

    def make(**kwargs: Any) -> DBOSClient:
        kwargs.setdefault("use_listen_notify", backend == "postgres")
        client = DBOSClient(system_database_url=client_url(db_url, backend), **kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.destroy()


def opts(name: str, **extra: Any) -> EnqueueOptions:
    return EnqueueOptions(workflow_name=name, queue_name="q", **extra)  # type: ignore[typeddict-item]


# -- tests --------------------------------------------------------------------------------------


def test_construction(dbos: type[DBOS], db_url: str) -> None:
    DBOS.launch()
    with pytest.raises(DBOSException):
        DBOSClient()
    with pytest.raises(DBOSException):
        DBOSClient(system_database_url=db_url, lazy=True, use_listen_notify=True)
    lazy = DBOSClient(system_database_url=db_url, lazy=True)
    try:
        lazy.check_connection()
    finally:
        lazy.destroy()


def test_enqueue_by_name_result_status_and_listing(
    dbos: type[DBOS], make_client: Callable[..., DBOSClient]
) -> None:
    Queue("q")

    @DBOS.workflow(name="add")
    def add(a: int, b: int) -> int:
        return a + b

    @DBOS.workflow(name="explode")
    def explode() -> None:
        raise KeyError("boom")

    DBOS.launch()
    client = make_client()
    handle = client.enqueue(opts("add", workflow_id="c-add"), 2, b=3)
    assert handle.workflow_id == "c-add"
    assert handle.get_result(polling_interval_sec=0.05) == 5
    status = handle.get_status()
    assert status.status == "SUCCESS" and status.queue_name == "q" and status.output == 5
    assert client.retrieve_workflow("c-add").get_result() == 5
    with pytest.raises(DBOSNonExistentWorkflowError):
        client.retrieve_workflow("no-such-workflow")

    failing = client.enqueue(opts("explode", workflow_id="c-explode"))
    with pytest.raises(KeyError):
        failing.get_result(polling_interval_sec=0.05)
    assert [s.workflow_id for s in client.list_workflows(status="SUCCESS")] == ["c-add"]
    assert [s.workflow_id for s in client.list_workflows(status=["ERROR"])] == ["c-explode"]
    assert client.list_workflows(status="PENDING") == []
    with pytest.raises(DBOSException):
        client.list_workflows(status="NOT-A-STATUS")


def test_messages_events_and_streams(
    dbos: type[DBOS], make_client: Callable[..., DBOSClient]
) -> None:
    Queue("q")

    @DBOS.workflow(name="chat")
    def chat() -> str:
        DBOS.set_event("ready", True)
        msg = DBOS.recv("in", timeout_seconds=10)
        extra = DBOS.recv("in", timeout_seconds=0.3)
        DBOS.write_stream("out", msg)
        DBOS.write_stream("out", msg * 2)
        DBOS.close_stream("out")
        return f"{msg}/{extra}"

    DBOS.launch()
    client = make_client()
    handle = client.enqueue(opts("chat", workflow_id="c-chat"))
    assert client.get_event("c-chat", "ready", timeout_seconds=10) is True
    client.send("c-chat", "hi", "in", "key-1")  # idempotency_key is positional here
    client.send("c-chat", "hi", "in", "key-1")
    assert list(client.read_stream("c-chat", "out", timeout_seconds=10)) == ["hi", "hihi"]
    assert client.read_stream_offset("c-chat", "out", 1) == "hihi"
    assert handle.get_result(polling_interval_sec=0.05) == "hi/None"
    assert count_rows("notifications") == 1
    assert client.get_event("c-chat", "missing", timeout_seconds=0.1) is None
    with pytest.raises(DBOSNonExistentWorkflowError):
        client.send("no-such-workflow", "hi")


def test_wait_first_and_cancel(dbos: type[DBOS], make_client: Callable[..., DBOSClient]) -> None:
    Queue("q")
    gates = {"a": Gate(), "b": Gate()}

    @DBOS.step()
    def gate_step(name: str) -> None:
        gates[name]()

    @DBOS.workflow(name="blocked")
    def blocked(name: str) -> str:
        gate_step(name)
        return name

    DBOS.launch()
    client = make_client()
    ha = client.enqueue(opts("blocked", workflow_id="c-a"), "a")
    hb = client.enqueue(opts("blocked", workflow_id="c-b"), "b")
    try:
        for g in gates.values():
            g.reached()
        with pytest.raises(ValueError):
            client.wait_first([])
        gates["b"].release.set()
        assert client.wait_first([ha, hb], polling_interval_sec=0.05) is hb
        client.cancel_workflow("c-a")
        assert ha.get_status().status == "CANCELLED"
        with pytest.raises(DBOSAwaitedWorkflowCancelledError):
            ha.get_result(polling_interval_sec=0.05)
        assert [s.workflow_id for s in client.list_workflows(status="CANCELLED")] == ["c-a"]
    finally:
        for g in gates.values():
            g.release.set()
    assert hb.get_result() == "b"


def test_queue_definitions(dbos: type[DBOS], make_client: Callable[..., DBOSClient]) -> None:
    DBOS.launch()
    client = make_client()
    queue = client.register_queue("dbq", worker_concurrency=2, global_concurrency=4)
    assert queue.name == "dbq" and queue.worker_concurrency == 2
    found = client.retrieve_queue("dbq")
    assert found is not None and found.global_concurrency == 4
    assert "dbq" in [q.name for q in client.list_queues()]
    client.register_queue("dbq", worker_concurrency=1, on_conflict="never_update")
    assert client.retrieve_queue("dbq").worker_concurrency == 2  # type: ignore[union-attr]
    client.register_queue("dbq", worker_concurrency=1, global_concurrency=4)
    assert client.retrieve_queue("dbq").worker_concurrency == 1  # type: ignore[union-attr]
    with pytest.raises(DBOSException):
        client.register_queue("bad", on_conflict="sometimes")
    with pytest.raises(QueueConfigError):
        client.register_queue("bad", worker_concurrency=5, global_concurrency=2)
    assert client.retrieve_queue("bad") is None
    client.delete_queue("dbq")
    assert client.retrieve_queue("dbq") is None
    assert "dbq" not in [q.name for q in client.list_queues()]


def test_enqueue_onto_a_queue_registered_by_the_client(
    dbos: type[DBOS],
    make_client: Callable[..., DBOSClient],
    backend: str,
    request: pytest.FixtureRequest,
) -> None:

    @DBOS.workflow(name="add")
    def add(a: int, b: int) -> int:
        return a + b

    DBOS.launch()
    client = make_client()
    client.register_queue("fresh", worker_concurrency=1)
    client.enqueue(EnqueueOptions(workflow_name="add", queue_name="fresh", workflow_id="f"), 1, 2)
    wait_until(lambda: status_of("f") == "SUCCESS", 3, "the workflow to run")


def test_bad_enqueue_options_raise_before_writing(
    dbos: type[DBOS], make_client: Callable[..., DBOSClient]
) -> None:
    Queue("q")

    @DBOS.workflow(name="add")
    def add(a: int, b: int) -> int:
        return a + b

    DBOS.launch()
    client = make_client()
    bad: list[dict[str, Any]] = [
        {"workflow_name": "add", "queue_name": "q", "bogus": 1},
        {"workflow_name": "", "queue_name": "q"},
        {"workflow_name": "add", "queue_name": ""},
        {"queue_name": "q"},
        {"workflow_name": "add", "queue_name": "q", "priority": 0},
        {"workflow_name": "add", "queue_name": "q", "delay_seconds": -1},
        {"workflow_name": "add", "queue_name": "q", "workflow_timeout": 0},
        {"workflow_name": "add", "queue_name": "q", "duplication_policy": "maybe"},
        {"workflow_name": "add", "queue_name": "q", "workflow_id": "   "},
        {"workflow_name": "add", "queue_name": "q", "workflow_id": "a\x00b"},
    ]
    for options in bad:
        with pytest.raises((DBOSException, ValueError)):
            client.enqueue(options, 1, 2)  # type: ignore[arg-type]
    assert count_rows("workflow_status") == 0


def test_empty_workflow_id_in_enqueue_options_is_rejected(
    dbos: type[DBOS], make_client: Callable[..., DBOSClient]
) -> None:
    Queue("q")

    @DBOS.workflow(name="add")
    def add(a: int, b: int) -> int:
        return a + b

    DBOS.launch()
    client = make_client()
    try:
        with pytest.raises(ValueError):
            client.enqueue(opts("add", workflow_id=""), 1, 2)
    finally:
        # (whatever was enqueued must not outlive the test's runtime unfinished)
        for status in client.list_workflows():
            client.retrieve_workflow(status.workflow_id).get_result(polling_interval_sec=0.05)
    assert count_rows("workflow_status") == 0


def test_enqueue_in_transaction(
    dbos: type[DBOS],
    make_client: Callable[..., DBOSClient],
    db_url: str,
    backend: str,
    request: pytest.FixtureRequest,
) -> None:
    skip_sharded(backend, "a caller's own connection reaches one shard (test_sharding.py)")
    Queue("q")
    ran: list[str] = []

    @DBOS.workflow(name="record")
    def record(tag: str) -> str:
        ran.append(tag)
        return tag

    DBOS.launch()
    client = make_client()

    def in_transaction(tag: str, commit: bool) -> None:
        options = opts("record", workflow_id=f"tx-{tag}")
        if backend == "postgres":
            with psycopg.connect(db_url) as conn:
                client.enqueue_in_transaction(conn, options, tag)
                # Inside the caller's transaction: invisible to everyone else until commit.
                assert status_of(f"tx-{tag}") is None
                conn.commit() if commit else conn.rollback()
        else:
            conn = sqlite3.connect(db_url.removeprefix("sqlite:///"))
            try:
                client.enqueue_in_transaction(conn, options, tag)
                assert conn.in_transaction
                conn.commit() if commit else conn.rollback()
            finally:
                conn.close()

    in_transaction("rolled-back", commit=False)
    with pytest.raises(DBOSNonExistentWorkflowError):
        client.retrieve_workflow("tx-rolled-back")
    in_transaction("committed", commit=True)
    assert client.retrieve_workflow("tx-committed").get_status().queue_name == "q"
    # The application finds it without help (SQLite polls every second).
    wait_until(lambda: status_of("tx-committed") == "SUCCESS", 3, "the workflow to run")
    assert ran == ["committed"]
    assert status_of("tx-rolled-back") is None
    with pytest.raises(DBOSException):
        client.enqueue_in_transaction(
            None, opts("record", duplication_policy="return-existing"), "x"
        )


SUBPROCESS_CLIENT = """
import json, sys
from waypoint import DBOSClient

client = DBOSClient(system_database_url=sys.argv[1], use_listen_notify=True)
try:
    handle = client.enqueue({"workflow_name": "add", "queue_name": "q"}, 20, 22)
    result = handle.get_result()
    ready = client.get_event("listener", "ready", timeout_seconds=10)
    client.send("listener", "from-another-process", "in")
    print(json.dumps({"id": handle.workflow_id, "result": result, "ready": ready}))
finally:
    client.destroy()
"""


@requires_postgres
@pytest.mark.parametrize("backend", ["postgres"])
def test_client_in_another_process(dbos: type[DBOS], db_url: str) -> None:
    Queue("q")

    @DBOS.workflow(name="add")
    def add(a: int, b: int) -> int:
        return a + b

    @DBOS.workflow(name="listener")
    def listener() -> Any:
        DBOS.set_event("ready", "yes")
        return DBOS.recv("in", timeout_seconds=20)

    DBOS.launch()
    with SetWorkflowID("listener"):
        handle = DBOS.start_workflow(listener)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", SUBPROCESS_CLIENT, db_url],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["result"] == 42 and report["ready"] == "yes"
    assert status_of(report["id"]) == "SUCCESS"
    started = time.monotonic()
    assert handle.get_result() == "from-another-process"
    assert time.monotonic() - started < 5


def _refused_url() -> str:
    """A PostgreSQL URL on a local port nothing listens on."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"postgresql://postgres@127.0.0.1:{port}/nothing"


@requires_postgres
def test_client_fails_fast_on_an_unreachable_database(pg_database: str) -> None:
    """An eager client checks once and raises with the server's reason, as launch() fails
    fast; a lazy one with retry_connection_errors=False raises instead of waiting."""
    with pytest.raises(DBOSException, match=r"Connection refused|connection failed"):
        DBOSClient(system_database_url=_refused_url())
    missing = pg_database.rsplit("/", 1)[0] + "/no_such_database_here"
    with pytest.raises(DBOSException, match='database "no_such_database_here" does not exist'):
        DBOSClient(system_database_url=missing)

    lazy = DBOSClient(system_database_url=_refused_url(), lazy=True, retry_connection_errors=False)
    try:
        with pytest.raises(DBOSException, match="unavailable"):
            lazy.enqueue({"queue_name": "q", "workflow_name": "w"})
        with pytest.raises(DBOSException):
            lazy.check_connection()
    finally:
        lazy.destroy()


@requires_postgres
def test_client_database_url_names_the_application_database(pg_database: str) -> None:
    """DBOSClient(database_url) is DBOS's older name for the application database: the system
    database is the one beside it (<name>_dbos_sys), not that URL itself."""
    app_url = pg_database.rsplit("/", 1)[0] + "/surface_app_never_created"
    with pytest.raises(DBOSException, match='database "surface_app_never_created_dbos_sys"'):
        DBOSClient(app_url)
    with pytest.raises(DBOSException, match='database "surface_app_never_created_dbos_sys"'):
        DBOSClient(application_database_url=app_url)
