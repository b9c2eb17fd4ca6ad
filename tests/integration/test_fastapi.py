"""``DBOS(fastapi=app)`` over real HTTP (uvicorn in a thread, httpx as the client): launch
and destroy in the application's lifespan, the ``dbos-idempotency-key`` header as the ID of
the handler's first workflow, ``x-request-id`` carried to the workflows a request starts,
``DBOSException`` answered as JSON, and role checks on the authenticated user."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator
from typing import Any, Optional

import httpx
import pytest
from fastapi import Depends, FastAPI, Request

from tests.web_servers import RequestLog, serve_asgi
from waypoint import DBOS, DBOSContextSetAuth, Queue
from waypoint.core.runtime import get_runtime, maybe_runtime
from waypoint.error import DBOSException, DBOSNotAuthorizedError


def test_lifespan_launches_after_the_users_and_destroys_after_it(
    dbos: type[DBOS], config: dict[str, Any]
) -> None:
    seen: list[tuple[str, bool]] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, str]]:
        seen.append(("user startup", maybe_runtime() is not None))
        yield {"greeting": "hello"}  # lifespan state still reaches the handlers
        seen.append(("user shutdown", maybe_runtime() is not None))

    app = FastAPI(lifespan=lifespan)

    @DBOS.workflow()
    def where() -> Optional[str]:
        return DBOS.workflow_id

    @app.get("/where")
    def where_endpoint(request: Request) -> dict[str, Any]:
        return {"workflow_id": where(), "greeting": request.state.greeting}

    DBOS(config=config, fastapi=app)  # type: ignore[arg-type]
    assert maybe_runtime() is None, "DBOS(fastapi=app) must not launch by itself"
    with serve_asgi(app) as url:
        assert maybe_runtime() is not None
        reply = httpx.get(f"{url}/where")
        assert reply.status_code == 200
        body = reply.json()
        assert body["greeting"] == "hello"
        assert DBOS.get_workflow_status(body["workflow_id"]).status == "SUCCESS"
    # The user's lifespan ran first at startup (not launched yet) and first at shutdown
    # (still launched); then the runtime was destroyed.
    assert seen == [("user startup", False), ("user shutdown", True)]
    assert maybe_runtime() is None


def test_dequeued_async_workflows_run_on_the_servers_loop(
    dbos: type[DBOS], config: dict[str, Any]
) -> None:
    queue = Queue("web-queue")

    @DBOS.workflow()
    async def on_which_loop() -> int:
        return id(asyncio.get_running_loop())

    app = FastAPI()

    @app.get("/loops")
    async def loops() -> dict[str, int]:
        handle = await queue.enqueue_async(on_which_loop)
        return {"server": id(asyncio.get_running_loop()), "queued": await handle.get_result()}

    DBOS(config=config, fastapi=app)  # type: ignore[arg-type]
    with serve_asgi(app) as url:
        reply = httpx.get(f"{url}/loops").json()
    # As DBOS does: the loop the application runs on is where its dequeued async work runs
    # (resources made in the lifespan belong to that loop).
    assert reply["queued"] == reply["server"]


def test_a_lifespan_that_launches_itself_is_not_launched_twice(
    dbos: type[DBOS], config: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        DBOS.launch()
        yield

    app = FastAPI(lifespan=lifespan)

    @app.get("/ok")
    def ok() -> str:
        return "ok"

    DBOS(config=config, fastapi=app)  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, logger="waypoint"), serve_asgi(app) as url:
        assert httpx.get(f"{url}/ok").json() == "ok"
    assert "more than once" not in caplog.text
    assert maybe_runtime() is None


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_idempotency_key_is_the_first_workflows_id(
    dbos: type[DBOS], config: dict[str, Any], kind: str
) -> None:
    charged: list[int] = []
    lock = threading.Lock()

    @DBOS.step()
    def charge(amount: int) -> int:
        with lock:
            charged.append(amount)
            return len(charged)

    @DBOS.workflow()
    def pay(amount: int) -> dict[str, Any]:
        return {"receipt": charge(amount), "workflow_id": DBOS.workflow_id}

    @DBOS.step()
    async def charge_async(amount: int) -> int:
        with lock:
            charged.append(amount)
            return len(charged)

    @DBOS.workflow()
    async def pay_async(amount: int) -> dict[str, Any]:
        return {"receipt": await charge_async(amount), "workflow_id": DBOS.workflow_id}

    @DBOS.workflow()
    def audit() -> Optional[str]:
        return DBOS.workflow_id

    app = FastAPI()
    if kind == "sync":

        @app.post("/pay/{amount}")
        def pay_endpoint(amount: int) -> dict[str, Any]:
            result = pay(amount)
            return {**result, "audit": audit()}

    else:

        @app.post("/pay/{amount}")
        async def pay_endpoint_async(amount: int) -> dict[str, Any]:
            result = await pay_async(amount)
            handle = await DBOS.start_workflow_async(audit)
            return {**result, "audit": await handle.get_result()}

    DBOS(config=config, fastapi=app)  # type: ignore[arg-type]
    with serve_asgi(app) as url, httpx.Client(base_url=url) as http:
        key = {"dbos-idempotency-key": f"pay-{kind}-1"}
        first = http.post("/pay/10", headers=key)
        again = http.post("/pay/10", headers=key)
        assert first.status_code == again.status_code == 200
        assert first.json()["workflow_id"] == f"pay-{kind}-1"
        assert again.json()["receipt"] == first.json()["receipt"] == 1
        assert charged == [10], "a retried request with the same key ran again"
        # Only the first workflow takes the key; the next one gets an ID of its own.
        assert first.json()["audit"] not in (None, f"pay-{kind}-1")
        # Without the header (or with an empty one) every request runs.
        other = http.post("/pay/20")
        empty = http.post("/pay/30", headers={"dbos-idempotency-key": ""})
        assert other.json()["receipt"] == 2 and empty.json()["receipt"] == 3
        assert other.json()["workflow_id"] != empty.json()["workflow_id"]
        assert charged == [10, 20, 30]
        # The key does not outlive its request.
        assert http.post("/pay/40").json()["workflow_id"] != f"pay-{kind}-1"


def test_request_id_reaches_the_workflows_a_request_starts(
    dbos: type[DBOS], config: dict[str, Any]
) -> None:
    @DBOS.workflow()
    def child() -> Optional[str]:
        return DBOS.workflow_id

    @DBOS.workflow()
    def parent() -> list[Optional[str]]:
        return [DBOS.workflow_id, child()]

    app = FastAPI()

    @app.post("/run")
    def run_endpoint() -> dict[str, Any]:
        inline = parent()
        started = DBOS.start_workflow(child)  # runs on a worker thread
        return {"ids": [*inline, started.get_result()]}

    DBOS(config=config, fastapi=app)  # type: ignore[arg-type]
    with serve_asgi(app) as url, httpx.Client(base_url=url) as http:
        log = RequestLog()
        get_runtime().observers.add(log)
        ids = http.post("/run", headers={"x-request-id": "req-42"}).json()["ids"]
        assert len(set(ids)) == 3
        for wfid in ids:
            request = log.seen[wfid]
            assert request is not None, f"workflow {wfid} lost its request"
            assert request.request_id == "req-42"
            assert (request.method, request.path) == ("POST", "/run")
            assert request.url == f"{url}/run"
            assert request.client_ip == "127.0.0.1"
        # Without the header a request gets a generated ID, shared by its workflows only.
        first = http.post("/run").json()["ids"]
        second = http.post("/run").json()["ids"]
        first_ids = {log.seen[w].request_id for w in first}
        second_ids = {log.seen[w].request_id for w in second}
        assert len(first_ids) == len(second_ids) == 1
        assert first_ids != second_ids and "req-42" not in first_ids | second_ids


class Teapot(DBOSException):
    def __init__(self, message: str) -> None:
        super().__init__(message, 99)
        self.status_code = 418


def answer(reply: httpx.Response) -> tuple[int, str, str, str]:
    """Status, error class, code and message of a DBOS error answer (exactly those keys)."""
    body = reply.json()
    assert set(body) == {"message", "dbos_error_code", "dbos_error"}, body
    return reply.status_code, body["dbos_error"], body["dbos_error_code"], body["message"]


def test_dbos_exceptions_are_answered_as_json(dbos: type[DBOS], config: dict[str, Any]) -> None:
    @DBOS.step(retries_allowed=True, max_attempts=2, interval_seconds=0)
    def flaky() -> None:
        raise ValueError("down")

    @DBOS.workflow()
    def retries() -> None:
        flaky()

    app = FastAPI()

    @app.get("/plain")
    def plain() -> None:
        raise DBOSException("boom")

    @app.get("/teapot")
    async def teapot() -> None:
        raise Teapot("short and stout")

    @app.get("/retries")
    def retries_endpoint() -> None:
        retries()

    @app.get("/status")
    def status() -> None:
        DBOS.retrieve_workflow("no-such-workflow").get_status()

    @app.get("/other")
    def other() -> None:
        raise ValueError("not ours")

    DBOS(config=config, fastapi=app)  # type: ignore[arg-type]
    with serve_asgi(app) as url, httpx.Client(base_url=url) as http:
        assert answer(http.get("/plain")) == (500, "DBOSException", "None", "boom")
        assert answer(http.get("/teapot")) == (418, "Teapot", "99", "short and stout")
        status, name, code, _ = answer(http.get("/retries"))
        assert (status, name, code) == (500, "DBOSMaxStepRetriesExceeded", "7")
        status, name, code, _ = answer(http.get("/status"))
        assert (status, name, code) == (500, "DBOSNonExistentWorkflowError", "5")
        reply = http.get("/other")  # not a DBOSException: FastAPI's own answer
        assert reply.status_code == 500
        assert "dbos_error" not in reply.text


@pytest.mark.parametrize("dependency", ["async", "sync"])
def test_roles_over_http(dbos: type[DBOS], config: dict[str, Any], dependency: str) -> None:
    @DBOS.workflow()
    @DBOS.required_roles(["admin", "auditor"])
    def report() -> dict[str, Any]:
        return {
            "user": DBOS.authenticated_user,
            "roles": DBOS.authenticated_roles,
            "assumed": DBOS.assumed_role,
            "workflow_id": DBOS.workflow_id,
        }

    def authenticate(request: Request) -> None:
        user = request.headers.get("x-user")
        if user is not None:
            roles = request.headers.get("x-roles", "")
            DBOS.set_authentication(user, [r for r in roles.split(",") if r])

    async def authenticate_async(request: Request) -> None:
        authenticate(request)

    # A sync dependency runs on a worker thread with a copy of the request's context; what it
    # sets must still reach the handler, as DBOS's request context does.
    app = FastAPI(
        dependencies=[Depends(authenticate if dependency == "sync" else authenticate_async)]
    )

    @app.get("/report")
    def report_endpoint() -> dict[str, Any]:
        return report()

    @app.get("/report-async")
    async def report_endpoint_async() -> dict[str, Any]:
        handle = await DBOS.start_workflow_async(report)
        return await handle.get_result()  # type: ignore[no-any-return]

    DBOS(config=config, fastapi=app)  # type: ignore[arg-type]
    with serve_asgi(app) as url, httpx.Client(base_url=url) as http:
        for path in ("/report", "/report-async"):
            ok = http.get(path, headers={"x-user": "ann", "x-roles": "staff,auditor"})
            assert ok.status_code == 200, ok.text
            body = ok.json()
            assert body["user"] == "ann"
            assert body["roles"] == ["staff", "auditor"]
            assert body["assumed"] == "auditor"
            status = DBOS.get_workflow_status(body["workflow_id"])
            assert status.authenticated_user == "ann"
            assert status.authenticated_roles == ["staff", "auditor"]

            denied = answer(http.get(path, headers={"x-user": "bob", "x-roles": "staff"}))
            assert denied[:3] == (403, DBOSNotAuthorizedError.__name__, "8")
            assert "not authenticated for any of them" in denied[3]
            anonymous = answer(http.get(path))
            assert anonymous[:3] == (403, DBOSNotAuthorizedError.__name__, "8")
            assert "without authentication information" in anonymous[3]
        # Authentication set for one request does not leak into the next.
        assert http.get("/report").status_code == 403


def test_fastapi_needs_a_fastapi_application(dbos: type[DBOS], config: dict[str, Any]) -> None:
    with pytest.raises(DBOSException, match="FastAPI application"):
        DBOS(config=config, fastapi=object())  # type: ignore[arg-type]


def test_decorated_functions_as_endpoints_under_an_auth_middleware(
    dbos: type[DBOS], config: dict[str, Any]
) -> None:
    app = FastAPI()
    DBOS(config=config, fastapi=app)  # type: ignore[arg-type]

    @app.middleware("http")
    async def sign_in(request: Request, call_next: Any) -> Any:
        # Added after DBOS(fastapi=app), so it runs outside Waypoint's middleware.
        with DBOSContextSetAuth("dora", ["reader"]):
            return await call_next(request)

    @app.get("/read/{doc}")
    @DBOS.required_roles(["reader"])
    @DBOS.workflow()
    def read(doc: str) -> dict[str, Any]:
        return {"doc": doc, "role": DBOS.assumed_role, "workflow_id": DBOS.workflow_id}

    @app.get("/write/{doc}")
    @DBOS.required_roles(["writer"])
    @DBOS.workflow()
    async def write(doc: str) -> str:
        return doc

    @app.get("/greet/{name}")
    @DBOS.step()
    async def greet(name: str, punctuation: str = "!") -> str:
        return f"hello {name}{punctuation}"

    with serve_asgi(app) as url, httpx.Client(base_url=url) as http:
        body = http.get("/read/memo").json()
        assert (body["doc"], body["role"]) == ("memo", "reader")
        status = DBOS.get_workflow_status(body["workflow_id"])
        assert (status.authenticated_user, status.assumed_role) == ("dora", "reader")
        assert answer(http.get("/write/memo"))[:2] == (403, "DBOSNotAuthorizedError")
        # FastAPI reads the parameters through the wrappers.
        assert http.get("/greet/ann", params={"punctuation": "?"}).json() == "hello ann?"


def test_a_failed_launch_fails_the_servers_startup(monkeypatch: pytest.MonkeyPatch) -> None:
    from waypoint.storage.postgres import faults

    monkeypatch.setattr(faults, "LAUNCH_WAIT_SEC", 0.5)  # the launch waits this long for it
    DBOS.destroy(destroy_registry=True)
    app = FastAPI()

    @app.get("/ok")
    def ok() -> str:
        return "ok"

    unreachable = "postgresql://postgres@127.0.0.1:1/none"  # nothing listens on port 1
    DBOS(config={"name": "web-test", "system_database_url": unreachable}, fastapi=app)
    try:
        with pytest.raises(AssertionError, match="stopped before it was ready"):
            with serve_asgi(app):
                pass  # pragma: no cover (the server must not start)
        assert maybe_runtime() is None
    finally:
        DBOS.destroy(destroy_registry=True)
