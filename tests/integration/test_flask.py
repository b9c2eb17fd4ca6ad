"""``DBOS(flask=app)`` over real HTTP (werkzeug's threaded server, httpx as the client): the
``dbos-idempotency-key`` header as the ID of the handler's first workflow, ``x-request-id``
carried to the workflows a request starts, and authentication set by a request hook."""

from __future__ import annotations

import threading
from typing import Any, Optional

import httpx
import pytest
from flask import Flask, request

from tests.web_servers import RequestLog, serve_wsgi
from waypoint import DBOS
from waypoint.core.runtime import get_runtime
from waypoint.error import DBOSException


def test_idempotency_key_and_request_id(dbos: type[DBOS], config: dict[str, Any]) -> None:
    shipped: list[str] = []
    lock = threading.Lock()

    @DBOS.step()
    def ship(item: str) -> int:
        with lock:
            shipped.append(item)
            return len(shipped)

    @DBOS.workflow()
    def order(item: str) -> dict[str, Any]:
        return {"parcel": ship(item), "workflow_id": DBOS.workflow_id}

    @DBOS.workflow()
    def note() -> Optional[str]:
        return DBOS.workflow_id

    app = Flask(__name__)

    @app.post("/order/<item>")
    def order_endpoint(item: str) -> dict[str, Any]:
        result = order(item)
        return {**result, "note": DBOS.start_workflow(note).get_result()}

    DBOS(config=config, flask=app)  # type: ignore[arg-type]
    DBOS(config=config, flask=app)  # type: ignore[arg-type]  # installs once
    DBOS.launch()
    log = RequestLog()
    get_runtime().observers.add(log)
    with serve_wsgi(app) as url, httpx.Client(base_url=url) as http:
        headers = {"dbos-idempotency-key": "order-1", "x-request-id": "req-7"}
        first = http.post("/order/book", headers=headers)
        again = http.post("/order/book", headers=headers)
        assert first.status_code == again.status_code == 200
        assert first.json()["workflow_id"] == "order-1"
        assert again.json()["parcel"] == first.json()["parcel"] == 1
        assert shipped == ["book"], "a retried request with the same key ran again"
        assert first.json()["note"] != "order-1"  # only the first workflow takes the key
        for wfid in ("order-1", first.json()["note"]):
            info = log.seen[wfid]
            assert info is not None and info.request_id == "req-7"
            assert (info.method, info.path) == ("POST", "/order/book")
            assert info.url == f"{url}/order/book"
            assert info.client_ip == "127.0.0.1"
        # Without the headers every request runs, under an ID and a request ID of its own.
        one = http.post("/order/pen").json()
        two = http.post("/order/pen").json()
        assert (one["parcel"], two["parcel"]) == (2, 3)
        assert one["workflow_id"] != two["workflow_id"]
        ids = {log.seen[one["workflow_id"]].request_id, log.seen[two["workflow_id"]].request_id}
        assert len(ids) == 2 and "req-7" not in ids


def test_authentication_from_a_request_hook(dbos: type[DBOS], config: dict[str, Any]) -> None:
    @DBOS.workflow()
    @DBOS.required_roles(["editor"])
    def publish(title: str) -> dict[str, Any]:
        return {"workflow_id": DBOS.workflow_id, "by": DBOS.authenticated_user}

    app = Flask(__name__)

    @app.before_request
    def authenticate() -> None:
        user = request.headers.get("x-user")
        if user is not None:
            DBOS.set_authentication(user, request.headers.get("x-roles", "").split(","))

    @app.post("/publish/<title>")
    def publish_endpoint(title: str) -> Any:
        try:
            return publish(title)
        except DBOSException as exc:
            return {"error": type(exc).__name__}, exc.status_code

    DBOS(config=config, flask=app)  # type: ignore[arg-type]
    DBOS.launch()
    with serve_wsgi(app) as url, httpx.Client(base_url=url) as http:
        ok = http.post("/publish/news", headers={"x-user": "eve", "x-roles": "reader,editor"})
        assert ok.status_code == 200 and ok.json()["by"] == "eve"
        status = DBOS.get_workflow_status(ok.json()["workflow_id"])
        assert (status.authenticated_user, status.assumed_role) == ("eve", "editor")
        assert status.authenticated_roles == ["reader", "editor"]
        denied = http.post("/publish/news", headers={"x-user": "rob", "x-roles": "reader"})
        assert (denied.status_code, denied.json()) == (403, {"error": "DBOSNotAuthorizedError"})
        assert http.post("/publish/news").status_code == 403  # nothing left from before


def test_flask_needs_a_flask_application(dbos: type[DBOS], config: dict[str, Any]) -> None:
    with pytest.raises(DBOSException, match="Flask application"):
        DBOS(config=config, flask="app")  # type: ignore[arg-type]
