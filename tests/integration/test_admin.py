"""The admin HTTP API (spec §7) on both backends: every endpoint, safe defaults (loopback,
bearer token), and fuzzing with malformed requests (reliability scenarios 12 and 14).

Each test launches its own runtime with ``admin_port=0`` and reads the port the server got.
Tests named test_bug_* pin bugs found (and fixed) while writing them.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Optional

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.admin_http import (
    Reply,
    admin_port,
    assert_error,
    call,
    checksum,
    destroy_quickly,
    post_raw,
    raw,
)
from tests.conftest import BACKENDS, requires_postgres
from tests.proxy import TcpProxy
from waypoint import DBOS, Queue, SetWorkflowID
from waypoint.core.runtime import get_runtime

TOKEN = "s3cr3t-t0ken"

# Tests of the HTTP layer alone (parsing, routing, auth) run on one backend: the code under
# test does not touch the database.
one_backend = pytest.mark.parametrize("backend", BACKENDS[:1])

WORKFLOW_OUTPUT_KEYS = {
    "WorkflowUUID",
    "Status",
    "WorkflowName",
    "WorkflowClassName",
    "WorkflowConfigName",
    "AuthenticatedUser",
    "AssumedRole",
    "AuthenticatedRoles",
    "Input",
    "Output",
    "Error",
    "CreatedAt",
    "UpdatedAt",
    "QueueName",
    "ApplicationVersion",
    "ExecutorID",
    "WorkflowTimeoutMS",
    "WorkflowDeadlineEpochMS",
    "DeduplicationID",
    "Priority",
    "QueuePartitionKey",
    "ForkedFrom",
    "WasForkedFrom",
    "ParentWorkflowID",
    "DequeuedAt",
    "DelayUntilEpochMS",
    "CompletedAt",
    "Attributes",
    "ScheduleName",
    "ApplicationName",
}
STEP_KEYS = {
    "function_id",
    "function_name",
    "output",
    "error",
    "child_workflow_id",
    "started_at_epoch_ms",
    "completed_at_epoch_ms",
}


@pytest.fixture
def config(db_url: str) -> dict[str, Any]:
    """The conftest config plus an admin server on a free port."""
    return {
        "name": "waypoint-test",
        "system_database_url": db_url,
        "run_admin_server": True,
        "admin_port": 0,
    }


@pytest.fixture
def dbos(config: dict[str, Any]) -> Iterator[type[DBOS]]:
    """The conftest fixture, with a teardown that does not wait for the admin server's poll."""
    DBOS.destroy(destroy_registry=True)
    DBOS(config=config)  # type: ignore[arg-type]
    yield DBOS
    destroy_quickly()


# -- helpers -------------------------------------------------------------------------------------


def wait_for(what: str, predicate: Callable[[], Any], timeout: float = 10) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def status_of(workflow_id: str) -> Optional[str]:
    st_ = DBOS.get_workflow_status(workflow_id)
    return st_.status if st_ is not None else None


def wait_status(workflow_id: str, wanted: str, timeout: float = 10) -> None:
    wait_for(f"{workflow_id} to be {wanted}", lambda: status_of(workflow_id) == wanted, timeout)


def ids(reply: Reply) -> list[str]:
    assert reply.status == 200, (reply.status, reply.body[:300])
    return [w["WorkflowUUID"] for w in reply.json()]


def now_ms() -> int:
    return int(time.time() * 1000)


def relaunch(config: dict[str, Any], define: Callable[[], None] = lambda: None) -> None:
    destroy_quickly()
    DBOS(config=config)  # type: ignore[arg-type]
    define()
    DBOS.launch()


# -- every endpoint --------------------------------------------------------------------------


def test_health_routing_and_queue_metadata(dbos: type[DBOS]) -> None:
    Queue("meta-a", concurrency=3, worker_concurrency=2, limiter={"limit": 5, "period": 2.0})
    Queue("meta-b")
    DBOS.launch()
    admin = get_runtime().service("admin")
    assert admin is not None
    assert admin.server_address[0] == "127.0.0.1"  # loopback unless told otherwise

    health = call("GET", "/dbos-healthz")
    assert health.status == 200
    assert health.headers["content-type"] == "text/plain"
    assert health.body == b"healthy"  # DBOS's plain-text answer
    head = call("HEAD", "/dbos-healthz")
    assert head.status == 200 and head.body == b""

    for path in ("/", "/nope", "/dbos-healthz/extra", "/workflows/", "/conductorx"):
        assert_error(call("GET", path), 404, "not_found")
    assert_error(call("POST", "/nope", {}), 404)
    for method in ("PUT", "DELETE", "PATCH"):
        for path in ("/workflows", "/dbos-healthz", "/workflows/x/cancel"):
            assert_error(call(method, path, b"{}"), 405, "method_not_allowed")
    assert_error(call("POST", "/workflows/some-id", {}), 405)  # GET only
    assert_error(call("POST", "/workflows/some-id/steps", {}), 405)
    for action in ("cancel", "resume", "restart", "fork"):  # POST only
        assert_error(call("GET", f"/workflows/some-id/{action}"), 405)

    reply = call("GET", "/dbos-workflow-queues-metadata")
    assert reply.status == 200
    by_name = {q["name"]: q for q in reply.json()}
    assert by_name["meta-a"] == {
        "name": "meta-a",
        "concurrency": 3,
        "workerConcurrency": 2,
        "rateLimit": {"limit": 5, "period": 2.0},
    }
    assert by_name["meta-b"] == {"name": "meta-b"}  # None keys are omitted


def test_workflow_get_steps_and_listing(dbos: type[DBOS]) -> None:
    gate = threading.Event()
    q = Queue("adm-list-q", worker_concurrency=1)

    @DBOS.step()
    def double(x: int) -> int:
        return 2 * x

    @DBOS.workflow()
    def calc(x: int) -> int:
        return double(x) + double(x + 1)

    @DBOS.workflow()
    def boom() -> None:
        raise ValueError("kaboom")

    @DBOS.workflow()
    def gated(tag: str) -> str:
        gate.wait(20)
        return tag

    DBOS.launch()
    for i in range(3):
        with SetWorkflowID(f"adm-calc-{i}"):
            assert calc(i) == 4 * i + 2
        time.sleep(0.003)  # distinct created_at
    with SetWorkflowID("adm-boom"), pytest.raises(ValueError):
        boom()
    with SetWorkflowID("adm-q-1"):
        q.enqueue(gated, "one")
    wait_status("adm-q-1", "PENDING")
    with SetWorkflowID("adm-q-2"):
        q.enqueue(gated, "two")
    try:
        # GET /workflows/{id}
        got = call("GET", "/workflows/adm-calc-1")
        assert got.status == 200 and got.headers["content-type"] == "application/json"
        wf = got.json()
        assert set(wf) == WORKFLOW_OUTPUT_KEYS
        assert wf["WorkflowUUID"] == "adm-calc-1"
        assert wf["Status"] == "SUCCESS" and wf["WorkflowName"].endswith("calc")
        assert wf["Output"] == "6" and wf["Error"] is None
        assert wf["ExecutorID"] == "local" and wf["QueueName"] is None
        assert int(wf["CreatedAt"]) <= int(wf["UpdatedAt"])
        err = call("GET", "/workflows/adm-boom").json()
        assert err["Status"] == "ERROR" and "kaboom" in err["Error"]
        queued = call("GET", "/workflows/adm-q-2").json()
        assert queued["Status"] == "ENQUEUED" and queued["QueueName"] == "adm-list-q"
        assert_error(call("GET", "/workflows/adm-missing"), 404, "not_found")

        # GET /workflows/{id}/steps
        steps = call("GET", "/workflows/adm-calc-2/steps")
        assert steps.status == 200
        rows = steps.json()
        assert [set(r) for r in rows] == [STEP_KEYS, STEP_KEYS]
        assert [(r["function_id"], r["output"]) for r in rows] == [("1", "4"), ("2", "6")]
        assert all(r["function_name"].endswith("double") for r in rows)
        assert call("GET", "/workflows/adm-boom/steps").json() == []
        assert_error(call("GET", "/workflows/adm-missing/steps"), 404)

        # POST /workflows with filters
        everything = ["adm-calc-0", "adm-calc-1", "adm-calc-2", "adm-boom", "adm-q-1", "adm-q-2"]
        assert ids(call("POST", "/workflows", {})) == everything
        assert ids(call("POST", "/workflows", b"")) == everything  # an empty body is no filter
        assert ids(call("POST", "/workflows", {"sort_desc": True})) == everything[::-1]
        assert ids(call("POST", "/workflows", {"limit": 2, "offset": 1})) == everything[1:3]
        assert ids(call("POST", "/workflows", {"status": "ERROR"})) == ["adm-boom"]
        assert ids(call("POST", "/workflows", {"status": ["ERROR", "ENQUEUED"]})) == [
            "adm-boom",
            "adm-q-2",
        ]
        names = {w["WorkflowUUID"]: w["WorkflowName"] for w in call("POST", "/workflows").json()}
        assert (
            ids(call("POST", "/workflows", {"workflow_name": names["adm-calc-0"]}))
            == (everything[:3])
        )
        assert ids(
            call("POST", "/workflows", {"workflow_uuids": ["adm-calc-2", "adm-boom", "nope"]})
        ) == ["adm-calc-2", "adm-boom"]
        assert ids(call("POST", "/workflows", {"workflow_id_prefix": "adm-q"})) == everything[4:]
        assert ids(call("POST", "/workflows", {"queue_name": "adm-list-q"})) == everything[4:]
        assert ids(call("POST", "/workflows", {"executor_id": "local"})) == everything
        future = "2999-01-01T00:00:00Z"
        assert ids(call("POST", "/workflows", {"start_time": future})) == []
        assert ids(call("POST", "/workflows", {"end_time": future})) == everything
        plain = call("POST", "/workflows", {"workflow_uuids": ["adm-calc-1"]}).json()[0]
        assert plain["Input"] is None and plain["Output"] is None  # not loaded by default
        loaded = call(
            "POST",
            "/workflows",
            {"workflow_uuids": ["adm-calc-1"], "load_input": True, "load_output": True},
        ).json()[0]
        assert loaded["Output"] == "6" and "1" in loaded["Input"]

        # POST /queues: only workflows still on a queue
        assert ids(call("POST", "/queues", {})) == ["adm-q-1", "adm-q-2"]
        assert ids(call("POST", "/queues", {"status": "ENQUEUED"})) == ["adm-q-2"]
        assert ids(call("POST", "/queues", {"queue_name": "other"})) == []
        assert ids(call("POST", "/queues", {"sort_desc": True, "limit": 1})) == ["adm-q-2"]
    finally:
        gate.set()
    wait_status("adm-q-2", "SUCCESS")
    assert ids(call("POST", "/queues", {})) == []


def test_cancel_resume_restart_fork(dbos: type[DBOS]) -> None:
    calls: list[int] = []

    @DBOS.step()
    def inc(x: int) -> int:
        calls.append(x)
        return x + 1

    @DBOS.workflow()
    def two_steps(x: int) -> int:
        return inc(inc(x))

    @DBOS.workflow()
    def waiter(tag: str) -> str:
        inc(0)
        got = DBOS.recv("go", timeout_seconds=20)
        return f"{tag}:{got}"

    DBOS.launch()
    # cancel + resume
    with SetWorkflowID("adm-wait"):
        handle = DBOS.start_workflow(waiter, "w")
    wait_for("the first step", lambda: calls == [0])
    reply = call("POST", "/workflows/adm-wait/cancel")
    assert reply.status == 204 and reply.body == b""
    wait_status("adm-wait", "CANCELLED")
    assert call("POST", "/workflows/adm-wait/resume", {"anything": "goes"}).status == 204
    wait_for("the resumed run", lambda: status_of("adm-wait") in ("ENQUEUED", "PENDING"))
    DBOS.send("adm-wait", "ok", "go")
    assert handle.get_result(polling_interval_sec=0.05) == "w:ok"
    assert calls == [0]  # the checkpointed step was not run again

    # restart: a fresh copy that runs every step again
    calls.clear()
    with SetWorkflowID("adm-src"):
        assert two_steps(10) == 12
    assert calls == [10, 11]
    restarted = call("POST", "/workflows/adm-src/restart")
    assert restarted.status == 200
    new_id = restarted.json()["workflow_id"]
    assert new_id != "adm-src"
    assert DBOS.retrieve_workflow(new_id).get_result(polling_interval_sec=0.05) == 12
    assert calls == [10, 11, 10, 11]

    # fork from step 2 under a chosen ID: step 1 is copied, step 2 runs again
    forked = call("POST", "/workflows/adm-src/fork", {"start_step": 2, "new_workflow_id": "adm-f"})
    assert forked.status == 200 and forked.json() == {"workflow_id": "adm-f"}
    assert DBOS.retrieve_workflow("adm-f").get_result(polling_interval_sec=0.05) == 12
    assert calls == [10, 11, 10, 11, 11]
    fork_row = call("GET", "/workflows/adm-f").json()
    assert fork_row["ForkedFrom"] == "adm-src"
    other = call(
        "POST",
        "/workflows/adm-src/fork",
        {"new_workflow_id": "adm-f-v", "application_version": "some-other-version"},
    )
    assert other.status == 200
    assert call("GET", "/workflows/adm-f-v").json()["ApplicationVersion"] == "some-other-version"

    # bad requests and missing workflows
    for body in ({"start_step": -1}, {"start_step": "1"}, {"new_workflow_id": ""}, {"x": 1}, []):
        assert_error(call("POST", "/workflows/adm-src/fork", body), 400)
    for action in ("cancel", "resume", "restart", "fork"):
        assert_error(call("POST", f"/workflows/adm-missing/{action}", {}), 404)


def test_garbage_collect_and_global_timeout(dbos: type[DBOS]) -> None:
    @DBOS.workflow()
    def quick(i: int) -> int:
        return i

    @DBOS.workflow()
    def waiting() -> Any:
        return DBOS.recv("never", timeout_seconds=20)

    DBOS.launch()
    for i in range(4):
        with SetWorkflowID(f"adm-gc-{i}"):
            quick(i)
        time.sleep(0.005)
    with SetWorkflowID("adm-live"):
        live = DBOS.start_workflow(waiting)
    wait_status("adm-live", "PENDING")

    # global timeout: in-flight workflows created at/before the cutoff are cancelled
    assert call("POST", "/dbos-global-timeout", {"cutoff_epoch_timestamp_ms": now_ms()}).status == (
        204
    )
    wait_status("adm-live", "CANCELLED")
    with SetWorkflowID("adm-live-2"):
        DBOS.start_workflow(waiting)
    wait_status("adm-live-2", "PENDING")

    # garbage collection never deletes PENDING work
    assert call("POST", "/dbos-garbage-collect", {"rows_threshold": 3}).status == 204
    remaining = ids(call("POST", "/workflows", {}))
    assert remaining == ["adm-gc-3", "adm-live", "adm-live-2"]
    cutoff = now_ms() + 60_000
    reply = call("POST", "/dbos-garbage-collect", {"cutoff_epoch_timestamp_ms": cutoff})
    assert reply.status == 204 and reply.body == b""
    assert ids(call("POST", "/workflows", {})) == ["adm-live-2"]
    assert status_of("adm-live") is None  # deleted, being finished (CANCELLED)
    assert live.workflow_id == "adm-live"

    for body in ({}, {"rows_threshold": 0}, {"cutoff_epoch_timestamp_ms": "now"}, {"x": 1}):
        assert_error(call("POST", "/dbos-garbage-collect", body), 400)
    for body in ({}, {"cutoff_epoch_timestamp_ms": -1}, [], {"cutoff_epoch_timestamp_ms": 1.5}):
        assert_error(call("POST", "/dbos-global-timeout", body), 400)
    DBOS.cancel_workflow("adm-live-2")


def test_deactivate_stops_dequeueing(dbos: type[DBOS], config: dict[str, Any]) -> None:
    def define() -> None:
        q = Queue("deact-q")

        @DBOS.workflow()
        def job(x: int) -> int:
            return x * 3

        define.q = q  # type: ignore[attr-defined]
        define.job = job  # type: ignore[attr-defined]

    define()
    DBOS.launch()
    q, job = define.q, define.job  # type: ignore[attr-defined]
    with SetWorkflowID("deact-before"):
        assert q.enqueue(job, 1).get_result(polling_interval_sec=0.05) == 3

    reply = call("GET", "/deactivate")
    assert reply.status == 200 and reply.body == b"deactivated"
    assert call("GET", "/deactivate").status == 200  # idempotent
    with SetWorkflowID("deact-after"):
        q.enqueue(job, 2)
    time.sleep(1.2)  # longer than the queue's polling interval
    assert status_of("deact-after") == "ENQUEUED"
    assert call("GET", "/dbos-healthz").status == 200  # still serves its API

    # Another runtime (here: the next incarnation of this process) takes the work.
    relaunch(config, define)
    assert DBOS.retrieve_workflow("deact-after").get_result(polling_interval_sec=0.05) == 6


def test_workflow_recovery_endpoint(dbos: type[DBOS], config: dict[str, Any]) -> None:
    entered = threading.Event()
    block = threading.Event()
    runs: list[str] = []

    def define() -> None:
        @DBOS.step()
        def slow() -> str:
            runs.append("slow")
            entered.set()
            if not block.is_set():
                time.sleep(30)  # the abandoned execution never gets past here
            return "done"

        @DBOS.workflow()
        def wf() -> str:
            return slow()

        define.wf = wf  # type: ignore[attr-defined]

    base = {**config, "application_version": "v1"}
    relaunch({**base, "executor_id": "exec-a", "run_admin_server": False}, define)
    with SetWorkflowID("adm-rec-1"):
        DBOS.start_workflow(define.wf)  # type: ignore[attr-defined]
    assert entered.wait(10)
    block.set()
    relaunch({**base, "executor_id": "exec-b"}, define)  # abandons exec-a's run
    time.sleep(0.2)
    row = DBOS.get_workflow_status("adm-rec-1")
    assert row is not None and row.status == "PENDING" and row.executor_id == "exec-a"

    assert call("POST", "/dbos-workflow-recovery", ["nobody"]).json() == []
    reply = call("POST", "/dbos-workflow-recovery", ["exec-a", "exec-z"])
    assert reply.status == 200 and reply.json() == ["adm-rec-1"]
    handle = DBOS.retrieve_workflow("adm-rec-1")
    assert handle.get_result(polling_interval_sec=0.05) == "done"
    assert runs == ["slow", "slow"]
    assert call("POST", "/dbos-workflow-recovery", ["exec-a"]).json() == []

    for body in ({}, "exec-a", [1], [""], [None], {"executors": ["exec-a"]}):
        assert_error(call("POST", "/dbos-workflow-recovery", body), 400, "invalid_body")


@pytest.fixture
def proxied(pg_database: str) -> Iterator[tuple[TcpProxy, str]]:
    DBOS.reset_system_database(system_database_url=pg_database, truncate=True)
    base = psycopg.conninfo.conninfo_to_dict(pg_database)
    proxy = TcpProxy(str(base.get("host", "127.0.0.1")), int(base.get("port", 5432)))
    url = f"postgresql://postgres@127.0.0.1:{proxy.port}/{base['dbname']}"
    yield proxy, url
    destroy_quickly()
    proxy.close()


@requires_postgres
def test_health_is_503_while_database_is_unreachable(proxied: tuple[TcpProxy, str]) -> None:
    proxy, url = proxied
    relaunch(
        {
            "name": "admin-outage",
            "system_database_url": url,
            "run_admin_server": True,
            "admin_port": 0,
        }
    )
    assert call("GET", "/dbos-healthz").status == 200
    proxy.cut()
    reply = call("GET", "/dbos-healthz")
    assert reply.status == 503, reply.body
    assert reply.headers["content-type"] == "application/json"
    body = reply.json()
    assert body["status"] == "unhealthy" and isinstance(body["error"], str)
    assert reply.elapsed < 5
    proxy.restore()
    wait_for("health to recover", lambda: call("GET", "/dbos-healthz").status == 200, 20)


# -- security ----------------------------------------------------------------------------------

PROTECTED: list[tuple[str, str, Any]] = [
    ("GET", "/deactivate", None),
    ("GET", "/dbos-workflow-queues-metadata", None),
    ("GET", "/executors", None),
    ("GET", "/workflows/sec-1", None),
    ("GET", "/workflows/sec-1/steps", None),
    ("POST", "/workflows", {}),
    ("POST", "/queues", {}),
    ("POST", "/dbos-workflow-recovery", ["exec-x"]),
    ("POST", "/dbos-garbage-collect", {"cutoff_epoch_timestamp_ms": 1}),
    ("POST", "/dbos-global-timeout", {"cutoff_epoch_timestamp_ms": 1}),
    ("POST", "/workflows/sec-1/cancel", {}),
    ("POST", "/workflows/sec-1/resume", {}),
    ("POST", "/workflows/sec-1/restart", {}),
    ("POST", "/workflows/sec-1/fork", {}),
    ("GET", "/no-such-endpoint", None),  # no 404 leaks which paths exist
    ("POST", "/workflows", b"not json"),  # nor is the body looked at
]


def _check_token_enforced(token: str) -> None:
    @DBOS.workflow()
    def sec() -> int:
        return 1

    DBOS.launch()
    with SetWorkflowID("sec-1"):
        sec()
    before = checksum()
    bad_headers: list[dict[str, str]] = [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Bearer {token}x"},
        {"Authorization": f"Basic {token}"},
        {"Authorization": token},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer "},
        {"X-Admin-Token": token},
    ]
    for method, path, body in PROTECTED:
        for headers in bad_headers:
            assert_error(call(method, path, body, headers=headers), 401, "unauthorized")
    assert checksum() == before  # nothing was deactivated, cancelled, forked or deleted
    assert not get_runtime().deactivated

    health = call("GET", "/dbos-healthz")  # the health check stays open
    assert health.status == 200
    assert call("GET", "/dbos-healthz", headers={"Authorization": "Bearer wrong"}).status == 200

    ok = call("GET", "/workflows/sec-1", token=token)
    assert ok.status == 200 and ok.json()["Status"] == "SUCCESS"
    assert ids(call("POST", "/workflows", {}, token=token)) == ["sec-1"]
    lower = call("GET", "/workflows/sec-1", headers={"Authorization": f"bearer {token}"})
    assert lower.status == 200  # the scheme is case-insensitive
    assert_error(call("GET", "/no-such-endpoint", token=token), 404)


def test_admin_token_is_enforced(dbos: type[DBOS], config: dict[str, Any]) -> None:
    destroy_quickly()
    DBOS(config={**config, "admin_token": TOKEN})  # type: ignore[arg-type]
    _check_token_enforced(TOKEN)


@one_backend
def test_admin_token_from_environment(
    dbos: type[DBOS], config: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DBOS__ADMIN_TOKEN", "from-the-env")
    DBOS.destroy(destroy_registry=True)
    DBOS(config=config)  # type: ignore[arg-type]
    _check_token_enforced("from-the-env")


# -- fuzzing (reliability scenario 12) ----------------------------------------------------------

LIST_BODY_CASES: list[Any] = [
    b"not json",
    b"{'single': 'quotes'}",
    b'{"limit": 1',
    b"\xff\xfe\x00\x01",
    b'{"workflow_name": "\xe9"}',  # Latin-1, not UTF-8
    b'{"limit": NaN}',
    b'{"limit": Infinity}',
    b'{"limit": 1, "limit": "x"}',
    [],
    ["status", "SUCCESS"],
    "SUCCESS",
    42,
    True,
    {"limit": "10; DROP TABLE x"},
    {"limit": "1"},
    {"limit": -1},
    {"limit": 1.5},
    {"limit": True},
    {"limit": 10**9},
    {"offset": -1},
    {"offset": "0 OR 1=1"},
    {"status": "FOO"},
    {"status": ["SUCCESS", "FOO"]},
    {"status": ["SUCCESS", 1]},
    {"status": "success"},
    {"status": "SUCCESS' OR '1'='1"},
    {"status": {"$ne": None}},
    {"sort_desc": "yes"},
    {"sort_desc": 1},
    {"load_input": "true"},
    {"load_output": None, "x": 1},
    {"start_time": "yesterday"},
    {"start_time": 0},
    {"start_time": "2024-13-45T99:00:00"},
    {"end_time": ["2024-01-01"]},
    {"workflow_uuids": 5},
    {"workflow_uuids": [1, 2]},
    {"workflow_uuids": [["nested"]]},
    {"workflow_name": {"$ne": 1}},
    {"workflow_id_prefix": 7},
    {"queue_name": [None]},
    {"unknown": 1},
    {"order_by": "created_at; DROP TABLE workflow_status"},
    {"sort_by": "name"},
    {"limit": 5, "__proto__": {}},
]

POST_BODY_CASES: list[tuple[str, Any]] = [
    ("/dbos-workflow-recovery", {}),
    ("/dbos-workflow-recovery", "exec"),
    ("/dbos-workflow-recovery", [1, 2]),
    ("/dbos-workflow-recovery", [""]),
    ("/dbos-workflow-recovery", [["local"]]),
    ("/dbos-workflow-recovery", b"not json"),
    ("/dbos-garbage-collect", {}),
    ("/dbos-garbage-collect", []),
    ("/dbos-garbage-collect", {"rows_threshold": 0}),
    ("/dbos-garbage-collect", {"rows_threshold": -5}),
    ("/dbos-garbage-collect", {"rows_threshold": "1; DELETE"}),
    ("/dbos-garbage-collect", {"cutoff_epoch_timestamp_ms": -1}),
    ("/dbos-garbage-collect", {"cutoff_epoch_timestamp_ms": "now"}),
    ("/dbos-garbage-collect", {"cutoff_epoch_timestamp_ms": 1, "extra": 1}),
    ("/dbos-global-timeout", {}),
    ("/dbos-global-timeout", {"cutoff_epoch_timestamp_ms": "now"}),
    ("/dbos-global-timeout", {"cutoff_epoch_timestamp_ms": -1}),
    ("/dbos-global-timeout", {"cutoff_epoch_timestamp_ms": None}),
    ("/dbos-global-timeout", [1]),
    ("/workflows/fz-1/fork", {"start_step": -1}),
    ("/workflows/fz-1/fork", {"start_step": "0"}),
    ("/workflows/fz-1/fork", {"start_step": 0.5}),
    ("/workflows/fz-1/fork", {"new_workflow_id": ""}),
    ("/workflows/fz-1/fork", {"new_workflow_id": 5}),
    ("/workflows/fz-1/fork", {"application_version": []}),
    ("/workflows/fz-1/fork", {"bogus": True}),
    ("/workflows/fz-1/fork", "0"),
    ("/workflows/fz-1/fork", b"\x00\x01"),
    ("/workflows/fz-missing/cancel", {}),
    ("/workflows/fz-missing/resume", {}),
    ("/workflows/fz-missing/restart", {}),
    ("/workflows/fz-missing/fork", {}),
]

LONG = "a" * 8192

PATH_CASES: list[tuple[str, str]] = [
    ("GET", "/workflows/fz%2F1"),
    ("GET", "/workflows/fz-1%2Fsteps%2Fx"),
    ("GET", "/workflows/.."),
    ("GET", "/workflows/%2E%2E"),
    ("GET", "/workflows/../dbos-healthz/x"),
    ("GET", "/workflows/..%2F..%2Fetc%2Fpasswd"),
    ("GET", "/workflows/fz%001"),
    ("GET", "/workflows/fz-1%00/steps"),
    ("POST", "/workflows/fz-1%00/cancel"),
    ("GET", "/%00"),
    ("GET", f"/workflows/{LONG}"),
    ("GET", f"/workflows/{LONG}/steps"),
    ("POST", f"/workflows/{LONG}/cancel"),
    ("GET", f"/{LONG}"),
    ("GET", "/workflows/fz-1/steps/extra"),
    ("GET", "/workflows/fz-1/" + "%" * 10),
    ("GET", "/workflows/%ZZ"),
    ("GET", "/workflows/%C3%28"),  # an invalid UTF-8 sequence, percent-encoded
    ("GET", "/workflows/' OR 1=1 --".replace(" ", "%20")),
    ("GET", "/workflows"),
    ("POST", "/dbos-healthz"),
    ("PUT", "/workflows/fz-1"),
    ("DELETE", "/workflows/fz-1"),
    ("PATCH", "/dbos-garbage-collect"),
    ("POST", "/workflows/fz-1"),
    ("GET", "/workflows/fz-1/fork"),
]


def raw_cases() -> list[tuple[str, bytes, Optional[int]]]:
    """(name, request bytes, expected status or None for any 4xx)."""
    huge = str(10**12)
    return [
        ("negative length", post_raw("/workflows", b"{}", length="-1"), 400),
        ("non-numeric length", post_raw("/workflows", b"{}", length="abc"), 400),
        ("hex length", post_raw("/workflows", b"{}", length="0x2"), 400),
        ("empty length", post_raw("/workflows", b"{}", length=""), 400),
        ("huge length", post_raw("/workflows", b"", length=huge), 413),
        ("cap + 1", post_raw("/workflows", b"{" * 1000, length=str(1024 * 1024 + 1)), 413),
        (
            "chunked",
            post_raw(
                "/workflows",
                b"2\r\n{}\r\n0\r\n\r\n",
                "Transfer-Encoding: chunked\r\n",
                length=None,
            ),
            411,
        ),
        (
            "chunked with length",
            post_raw("/workflows", b"2\r\n{}\r\n0\r\n\r\n", "Transfer-Encoding: chunked\r\n"),
            411,
        ),
        ("NUL byte in the path", b"GET /workflows/fz\x001 HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        ("8 KB path", f"GET /workflows/{LONG} HTTP/1.1\r\nHost: x\r\n\r\n".encode(), 414),
        (
            "8 KB query",
            f"GET /dbos-healthzx?{LONG} HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
            404,
        ),
        ("HTTP/1.0", b"GET /workflows/fz-missing HTTP/1.0\r\n\r\n", 404),
        (
            "90 headers",
            b"GET /nope HTTP/1.1\r\nHost: x\r\n"
            + b"".join(b"X-H%d: v\r\n" % i for i in range(90))
            + b"\r\n",
            404,
        ),
        (
            "8 KB header value",
            b"GET /nope HTTP/1.1\r\nHost: x\r\nX-Junk: " + b"j" * 8192 + b"\r\n\r\n",
            404,
        ),
        (
            "JSON content type lies",
            post_raw("/workflows", b"<xml/>", "Content-Type: application/json\r\n"),
            400,
        ),
    ]


def _fuzz_requests() -> list[tuple[str, Callable[[], Reply], Optional[int]]]:
    cases: list[tuple[str, Callable[[], Reply], Optional[int]]] = []
    for i, body in enumerate(LIST_BODY_CASES):
        for path in ("/workflows", "/queues"):
            cases.append((f"{path} body #{i}", lambda p=path, b=body: call("POST", p, b), 400))
    for path, body in POST_BODY_CASES:
        expected = 404 if "fz-missing" in path else 400
        cases.append((f"{path} {body!r}", lambda p=path, b=body: call("POST", p, b), expected))
    for method, path in PATH_CASES:
        body = b"{}" if method != "GET" else None
        cases.append(
            (f"{method} {path[:60]}", lambda m=method, p=path, b=body: call(m, p, b), None)
        )
    for name, data, expected in raw_cases():
        cases.append((name, lambda d=data: raw(d), expected))
    return cases


def _seed_fuzz_rows() -> None:
    @DBOS.step()
    def st(x: int) -> int:
        return x

    @DBOS.workflow()
    def fz(x: int) -> int:
        return st(x)

    DBOS.launch()
    for i in range(3):
        with SetWorkflowID(f"fz-{i}"):
            fz(i)


def _healthy() -> bool:
    """The server still answers, each call within the client's own timeout (a server that
    the requests above had wedged would not: held connections, a stuck handler). Not a
    latency bound: speed is measured in benchmarks/admin_latency.py, not asserted here."""
    return all(call("GET", "/dbos-healthz").status == 200 for _ in range(3))


def test_malformed_requests_get_json_4xx_and_change_nothing(dbos: type[DBOS]) -> None:
    _seed_fuzz_rows()
    before = checksum()
    failures = []
    for name, send, expected in _fuzz_requests():
        try:
            reply = send()
            assert_error(reply, expected)
        except (AssertionError, ValueError) as exc:
            failures.append(f"{name}: {exc!r}"[:300])
    assert failures == []
    assert checksum() == before
    assert not get_runtime().deactivated
    assert _healthy()
    assert [s["function_id"] for s in DBOS.list_workflow_steps("fz-1")] == [1]

    # The error codes clients can rely on ("a stable error code").
    assert assert_error(call("POST", "/workflows", b"{")) == "invalid_json"
    assert assert_error(call("POST", "/workflows", [])) == "invalid_body"
    assert assert_error(call("POST", "/workflows", {"x": 1})) == "unknown_field"
    assert assert_error(call("POST", "/workflows", {"limit": "1"})) == "invalid_field"
    chunked = post_raw("/workflows", b"0\r\n\r\n", "Transfer-Encoding: chunked\r\n", length=None)
    assert assert_error(raw(chunked)) == "length_required"
    # A POST with neither a length nor chunks has no body (as DBOS's clients send it).
    assert raw(post_raw("/workflows", b"", length=None)).status == 200
    assert assert_error(raw(post_raw("/workflows", b"", length="-1"))) == "bad_length"
    assert assert_error(raw(post_raw("/workflows", b"", length=str(10**9)))) == "too_large"
    assert assert_error(call("GET", "/workflows/a%00")) == "bad_path"
    assert assert_error(call("GET", "/workflows/" + LONG)) == "uri_too_long"
    assert assert_error(call("GET", "/nope")) == "not_found"
    assert assert_error(call("PUT", "/nope", b"")) == "method_not_allowed"

    # A body over the cap is refused before it is read: the answer comes while the client
    # has sent none of its 50 MB.
    with socket.create_connection(("127.0.0.1", admin_port()), timeout=10) as s:
        s.sendall(post_raw("/workflows", b"", length=str(50 * 1024 * 1024)))
        start = time.monotonic()
        s.settimeout(5)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        assert time.monotonic() - start < 3
    assert data.startswith(b"HTTP/1.1 413") and b'"too_large"' in data
    assert call("GET", "/dbos-healthz").status == 200


def test_slow_and_many_clients(dbos: type[DBOS]) -> None:
    """200 connections (8 at a time) of malformed requests, plus idle half-sent requests."""
    _seed_fuzz_rows()
    before = checksum()
    bodies = [b"{", b"[]", b'{"limit": -1}', b'{"status": "FOO"}', b'{"x": 1}']

    def one(i: int) -> tuple[int, str]:
        if i % 3 == 0:
            reply = raw(post_raw("/workflows", b"{}", length="-1"))
        elif i % 3 == 1:
            reply = call("POST", "/queues", bodies[i % len(bodies)])
        else:
            reply = call("GET", f"/workflows/fz-missing-{i}")
        return reply.status, assert_error(reply)

    slow: list[socket.socket] = []
    try:
        for _ in range(20):  # slowloris: requests that never finish their headers
            s = socket.create_connection(("127.0.0.1", admin_port()), timeout=5)
            s.sendall(b"POST /workflows HTTP/1.1\r\nHost: x\r\nContent-Le")
            slow.append(s)
            time.sleep(0.005)
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(one, range(200)))
        assert {status for status, _ in results} == {400, 404}
        assert _healthy()
    finally:
        for s in slow:
            s.close()
    assert checksum() == before


# -- workflow_id_prefix and filters (reliability scenario 14) ------------------------------------

PREFIX_IDS = [
    "abc",
    "abd",
    "ab",
    "%x",
    "%%",
    "a%b",
    "a%",
    "_y",
    "a_b",
    "axb",
    "\\z",
    "a\\b",
    "a\\\\b",
    "a\\%",
    "' OR 1=1 --x",
    '"q"',
    "é1",
    "x*y",
    "[ab]",
]
PREFIXES = [
    "a",
    "ab",
    "%",
    "%%",
    "_",
    "a%",
    "a_",
    "\\",
    "a\\",
    "a\\\\",
    "a\\%",
    "' OR 1=1 --",
    "'",
    '"',
    "é",
    "*",
    "[",
    "[a",
    "zz",
]


def _seed_prefix_rows(extra: tuple[str, ...] = ()) -> None:
    @DBOS.workflow()
    def pfx() -> int:
        return 1

    DBOS.launch()
    for wid in (*PREFIX_IDS, *extra):
        with SetWorkflowID(wid):
            pfx()
        time.sleep(0.002)


def test_workflow_id_prefix_is_literal(dbos: type[DBOS]) -> None:
    _seed_prefix_rows()
    everything = ids(call("POST", "/workflows", {"limit": 10_000}))
    assert sorted(everything) == sorted(PREFIX_IDS)
    before = checksum()
    for prefix in PREFIXES:
        expected = [w for w in everything if w.startswith(prefix)]
        assert ids(call("POST", "/workflows", {"workflow_id_prefix": prefix})) == expected, prefix
        api = [s.workflow_id for s in DBOS.list_workflows(workflow_id_prefix=prefix)]
        assert api == expected, prefix
    several = ["%", "a_", "'"]
    expected = [w for w in everything if any(w.startswith(p) for p in several)]
    assert ids(call("POST", "/workflows", {"workflow_id_prefix": several})) == expected
    assert checksum() == before  # and the tables are intact


_JSON_LEAF = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(
        alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
        max_size=12,
    ),
)
_JSON = st.recursive(
    _JSON_LEAF,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=6,
)
_FIELDS = [
    "workflow_uuids",
    "status",
    "workflow_name",
    "limit",
    "offset",
    "sort_desc",
    "workflow_id_prefix",
    "start_time",
    "end_time",
    "load_input",
    "queue_name",
    "order_by",
    "__class__",
]


@settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=st.dictionaries(st.sampled_from(_FIELDS), _JSON, max_size=4) | _JSON)
def test_property_any_filter_body_is_200_or_json_400(dbos: type[DBOS], body: Any) -> None:
    if get_runtime_or_none() is None:
        _seed_fuzz_rows()
    reply = call("POST", "/workflows", body)
    if reply.status == 200:
        assert isinstance(reply.json(), list)
        assert isinstance(body, dict) or body is None
    else:
        assert_error(reply, 400)


_STATUSES = ["SUCCESS", "ERROR", "PENDING", "ENQUEUED", "CANCELLED"]
_PREFIX_ALPHABET = ["a", "b", "%", "_", "\\", "'", "x"]


@settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    status=st.none() | st.lists(st.sampled_from(_STATUSES), min_size=1, max_size=3),
    prefix=st.none()
    | st.lists(
        st.lists(st.sampled_from(_PREFIX_ALPHABET), max_size=3).map("".join),
        min_size=1,
        max_size=2,
    ),
    uuids=st.none() | st.lists(st.sampled_from([*PREFIX_IDS, "nope"]), min_size=1, max_size=4),
    limit=st.none() | st.integers(min_value=0, max_value=25),
    offset=st.none() | st.integers(min_value=0, max_value=25),
    sort_desc=st.booleans(),
)
def test_property_filters_match_a_python_reference(
    dbos: type[DBOS],
    status: Optional[list[str]],
    prefix: Optional[list[str]],
    uuids: Optional[list[str]],
    limit: Optional[int],
    offset: Optional[int],
    sort_desc: bool,
) -> None:
    if get_runtime_or_none() is None:
        _seed_prefix_rows()
    rows = call("POST", "/workflows", {"limit": 10_000}).json()
    created = [int(r["CreatedAt"]) for r in rows]
    assert created == sorted(created) and len(set(created)) == len(created)
    body: dict[str, Any] = {"sort_desc": sort_desc}
    expected = rows[::-1] if sort_desc else rows
    if status is not None:
        body["status"] = status
        expected = [r for r in expected if r["Status"] in status]
    if prefix is not None:
        body["workflow_id_prefix"] = prefix
        expected = [r for r in expected if any(r["WorkflowUUID"].startswith(p) for p in prefix)]
    if uuids is not None:
        body["workflow_uuids"] = uuids
        expected = [r for r in expected if r["WorkflowUUID"] in uuids]
    if offset is not None:
        body["offset"] = offset
        expected = expected[offset:]
    if limit is not None:
        body["limit"] = limit
        expected = expected[:limit]
    assert ids(call("POST", "/workflows", body)) == [r["WorkflowUUID"] for r in expected], body


def get_runtime_or_none() -> Any:
    try:
        return get_runtime()
    except Exception:
        return None


# -- known bugs ----------------------------------------------------------------------------------


def test_prefix_is_case_sensitive(
    dbos: type[DBOS], backend: str, request: pytest.FixtureRequest
) -> None:
    _seed_prefix_rows(extra=("ABC", "Abe"))
    assert ids(call("POST", "/workflows", {"workflow_id_prefix": "A"})) == ["ABC", "Abe"]
    assert "ABC" not in ids(call("POST", "/workflows", {"workflow_id_prefix": "a"}))
    api = [w.workflow_id for w in DBOS.list_workflows(workflow_id_prefix="A")]
    assert api == ["ABC", "Abe"]


def test_bug_huge_integers_are_a_400(dbos: type[DBOS]) -> None:
    _seed_fuzz_rows()
    failures = []
    for path, body in [
        ("/workflows/fz-1/fork", {"start_step": 10**30}),
        ("/workflows", {"offset": 10**30}),
        ("/workflows", {"limit": 5, "offset": 2**63}),
        ("/dbos-global-timeout", {"cutoff_epoch_timestamp_ms": 10**30}),
        ("/dbos-garbage-collect", {"cutoff_epoch_timestamp_ms": 10**30}),
    ]:
        reply = call("POST", path, body)
        if reply.status >= 500:  # a 400, or a 2xx for "the far future", would both be fine
            failures.append((path, body, reply.status))
    assert failures == []


@one_backend
def test_bug_deeply_nested_json_is_a_400(dbos: type[DBOS]) -> None:
    DBOS.launch()
    assert_error(call("POST", "/workflows", b"[" * 100_000), 400)


@requires_postgres
@pytest.mark.parametrize("backend", ["postgres"])
def test_bug_unstorable_strings_in_filters_are_a_400(dbos: type[DBOS]) -> None:
    DBOS.launch()  # (SQLite answers these with 200 [])
    for body in (
        b'{"workflow_id_prefix": "a\\u0000"}',
        b'{"workflow_name": "\\u0000"}',
        b'{"workflow_uuids": ["\\ud800"]}',
    ):
        reply = call("POST", "/workflows", body)
        assert reply.status in (200, 400), (body, reply.status)


@one_backend
def test_bug_workflow_ids_with_slashes(dbos: type[DBOS]) -> None:
    @DBOS.workflow()
    def slashy() -> int:
        return 1

    DBOS.launch()
    for wid in ("x", "a/b", "x/steps"):
        with SetWorkflowID(wid):
            slashy()
    # GET /workflows/x%2Fsteps answers with the steps of "x", not the workflow "x/steps"
    got = call("GET", "/workflows/x%2Fsteps").json()
    assert isinstance(got, dict) and got["WorkflowUUID"] == "x/steps", got
    got = call("GET", "/workflows/a%2Fb").json()  # 404 "no endpoint GET /workflows/a/b"
    assert got.get("WorkflowUUID") == "a/b", got


@one_backend
def test_bug_non_ascii_token_is_a_401(dbos: type[DBOS], config: dict[str, Any]) -> None:
    DBOS.destroy(destroy_registry=True)
    DBOS(config={**config, "admin_token": TOKEN})  # type: ignore[arg-type]
    DBOS.launch()
    reply = raw(b"GET /workflows/x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xe9\r\n\r\n")
    assert_error(reply, 401)


@one_backend
def test_bug_200_simultaneous_connections(dbos: type[DBOS]) -> None:
    DBOS.launch()
    start = threading.Barrier(200, timeout=20)
    errors: list[str] = []

    def one(i: int) -> None:
        start.wait()
        try:
            assert_error(call("POST", "/workflows", {"limit": f"x{i}"}), 400)
        except Exception as exc:
            errors.append(repr(exc)[:100])

    for _ in range(3):  # a burst that happens to fit is possible, three in a row are not
        threads = [threading.Thread(target=one, args=(i,)) for i in range(200)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        start.reset()
        if errors:
            break
    assert errors == []


@one_backend
def test_bug_short_body_is_a_4xx(dbos: type[DBOS], monkeypatch: pytest.MonkeyPatch) -> None:
    from waypoint.admin import server

    monkeypatch.setattr(server._Handler, "timeout", 0.5)  # the same path, without the wait
    DBOS.launch()
    reply = raw(post_raw("/workflows", b"{}", length="100"))
    assert_error(reply)


@one_backend
def test_bug_protocol_errors_are_json(dbos: type[DBOS]) -> None:
    DBOS.launch()
    flood = b"GET /dbos-healthz HTTP/1.1\r\n" + b"".join(
        b"X-Flood-%d: y\r\n" % i for i in range(150)
    )
    problems = []
    for name, data in [
        ("header flood", flood + b"\r\n"),
        ("OPTIONS", b"OPTIONS /workflows HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("TRACE", b"TRACE /workflows HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("70 KB path", b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n"),
    ]:
        reply = raw(data)
        try:
            assert_error(reply)
        except (AssertionError, ValueError):
            problems.append((name, reply.status, reply.headers.get("content-type")))
    assert problems == []


@one_backend
def test_bug_content_length_is_strict(dbos: type[DBOS], monkeypatch: pytest.MonkeyPatch) -> None:
    from waypoint.admin import server

    monkeypatch.setattr(server._Handler, "timeout", 1)  # no 10 s wait if a length is believed
    DBOS.launch()
    problems = []
    for name, data in [
        ("underscore", post_raw("/workflows", b"{}" + b" " * 8, length="1_0")),
        ("plus sign", post_raw("/workflows", b"{}", length="+2")),
        (
            "two lengths",
            post_raw("/workflows", b"{}", "Content-Length: 2\r\n", length="500"),
        ),
    ]:
        reply = raw(data)
        if reply.status != 400:
            problems.append((name, reply.status))
    assert problems == []


@one_backend
def test_bug_wrong_method_is_405_with_allow(dbos: type[DBOS]) -> None:
    DBOS.launch()
    problems = []
    for method, path in [
        ("GET", "/workflows"),
        ("GET", "/queues"),
        ("GET", "/dbos-workflow-recovery"),
        ("POST", "/dbos-healthz"),
        ("POST", "/deactivate"),
        ("PUT", "/workflows"),
    ]:
        reply = call(method, path, b"{}" if method != "GET" else None)
        if reply.status != 405 or "allow" not in reply.headers:
            problems.append((method, path, reply.status, reply.headers.get("allow")))
    assert problems == []


@one_backend
def test_route_table_query_strings_and_other_content_types(dbos: type[DBOS]) -> None:
    from waypoint.admin.routing import Response

    @DBOS.step()
    def part(i: int) -> int:
        return i

    @DBOS.workflow()
    def three() -> int:
        return part(1) + part(2) + part(3)

    DBOS.launch()
    with SetWorkflowID("adm-q-steps"):
        three()
    rows = call("GET", "/workflows/adm-q-steps/steps?limit=2&offset=1").json()
    assert [r["function_id"] for r in rows] == ["2", "3"]
    assert_error(call("GET", "/workflows/adm-q-steps/steps?limit=x"), 400, "invalid_query")
    assert_error(call("GET", "/workflows/adm-q-steps/steps?bogus=1"), 400, "invalid_query")
    assert_error(call("GET", "/dbos-healthz?x=1"), 400, "invalid_query")

    # Whatever is added to the table is served, in its own content type.
    admin = get_runtime().service("admin")
    admin.table.add(
        "GET", "/extra/{name}", lambda r: Response(200, f"hi {r.params['name']}\n", "text/plain")
    )
    reply = call("GET", "/extra/b%C3%A9a")
    assert reply.status == 200 and reply.headers["content-type"] == "text/plain"
    assert reply.body == "hi béa\n".encode()
    assert call("HEAD", "/extra/x").body == b""
