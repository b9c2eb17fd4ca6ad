"""The console's server side over real HTTP: login, cookies, CSRF, roles, the action log, the
live event stream and its one reader, and the standalone ``waypoint console`` command."""

from __future__ import annotations

import logging
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.admin_http import destroy_quickly
from tests.conftest import BACKENDS
from tests.console_http import SseReader, interruptible, login, session, stop_console
from waypoint import DBOS, DBOSClient, Queue, SetWorkflowID
from waypoint.core.runtime import get_runtime
from waypoint.error import DBOSInitializationError

ADMIN = "admin-t0ken"
READER = "read-0nly-t0ken"
WAYPOINT = str(Path(sys.executable).with_name("waypoint"))
one_backend = pytest.mark.parametrize("backend", BACKENDS[:1])


@pytest.fixture
def config(db_url: str) -> dict[str, Any]:
    return {
        "name": "waypoint-test",
        "system_database_url": db_url,
        "run_admin_server": True,
        "admin_port": 0,
        "admin_token": ADMIN,
        "admin_read_only_token": READER,
    }


@pytest.fixture
def dbos(config: dict[str, Any]) -> Iterator[type[DBOS]]:
    DBOS.destroy(destroy_registry=True)
    DBOS(config=config)  # type: ignore[arg-type]
    yield DBOS
    destroy_quickly()


def base_url() -> str:
    return f"http://127.0.0.1:{get_runtime().service('admin').port}"


def wait_for(what: str, predicate: Callable[[], Any], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def console_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "waypoint.console"]


# -- login, cookies, roles -----------------------------------------------------------------------


@one_backend
def test_login_exchanges_the_token_for_a_session_cookie(
    dbos: type[DBOS], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "waypoint.console")
    DBOS.launch()
    base = base_url()
    with httpx.Client(base_url=base, timeout=30) as anonymous:
        # Not logged in: pages redirect to the login page, everything else is a 401.
        page = anonymous.get("/console/workflows", headers={"Accept": "text/html"})
        assert page.status_code == 303
        assert page.headers["location"].startswith("/console/login?next=%2Fconsole%2Fworkflows")
        assert anonymous.get("/console/events").status_code == 401
        assert anonymous.get("/console/session").status_code == 401
        assert anonymous.post("/console/workflows/bulk", data={"id": "x"}).status_code == 401

        # The login form carries a nonce that must come back with the token.
        form = anonymous.get("/console/login")
        assert form.status_code == 200 and "text/html" in form.headers["content-type"]
        nonce = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
        assert nonce is not None
        forged = httpx.post(f"{base}/console/login", data={"token": ADMIN, "csrf_token": "x"})
        assert forged.status_code == 403 and "waypoint_console" not in forged.headers.get(
            "set-cookie", ""
        )
        wrong = anonymous.post(
            "/console/login", data={"token": "nope", "csrf_token": nonce.group(1)}
        )
        assert wrong.status_code == 401 and "Wrong token" in wrong.text

    client = login(base, ADMIN)
    cookies = [
        c for c in client.get("/console/session").headers.get_list("set-cookie")
    ]  # none: the session exists already
    assert cookies == []
    assert session(client)["role"] == "admin"
    assert session(client)["user"].startswith("admin-token session ")

    # The cookie's attributes, as sent.
    fresh = httpx.Client(base_url=base, timeout=30)
    page = fresh.get("/console/login")
    nonce2 = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert nonce2 is not None
    reply = fresh.post(
        "/console/login",
        data={"csrf_token": nonce2.group(1), "token": ADMIN, "next": "/console/queues"},
    )
    assert reply.status_code == 303 and reply.headers["location"] == "/console/queues"
    set_cookie = [c for c in reply.headers.get_list("set-cookie") if "waypoint_console=" in c]
    assert len(set_cookie) == 1, reply.headers
    attrs = [a.strip() for a in set_cookie[0].split(";")]
    sid = attrs[0].split("=", 1)[1]
    assert len(sid) >= 40  # random, server-side: nothing but an ID in the cookie
    assert "HttpOnly" in attrs and "SameSite=Strict" in attrs and "Path=/console" in attrs
    assert ADMIN not in set_cookie[0]
    # An open redirect is not possible through ``next``.
    page = fresh.get("/console/login")
    nonce3 = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert nonce3 is not None
    away = fresh.post(
        "/console/login",
        data={"csrf_token": nonce3.group(1), "token": ADMIN, "next": "https://evil.example/"},
    )
    assert away.headers["location"] == "/console/"
    fresh.close()

    # The API keeps its bearer token: a console session does not open it.
    assert client.get("/workflows/x").status_code == 401
    assert client.get("/workflows/x", headers={"Authorization": f"Bearer {ADMIN}"}).status_code
    assert httpx.get(f"{base}/dbos-healthz").status_code == 200

    # Logging out ends the session on the server.
    csrf = session(client)["csrf_token"]
    out = client.post("/console/logout", data={"csrf_token": csrf})
    assert out.status_code == 303
    assert client.get("/console/session").status_code == 401
    client.close()

    lines = console_lines(caplog)
    assert any("failed login" in line for line in lines), lines
    assert any("admin-token session" in line and "logged in" in line for line in lines), lines
    assert any("logged out" in line for line in lines), lines


@one_backend
def test_csrf_and_roles_guard_every_state_changing_request(
    dbos: type[DBOS], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "waypoint.console")
    release = threading.Event()

    @DBOS.workflow()
    def blocked() -> None:
        release.wait(60)

    DBOS.launch()
    base = base_url()
    admin = login(base, ADMIN)
    csrf = session(admin)["csrf_token"]
    target = "/console/workflow/action"
    with SetWorkflowID("wf-x"):
        handle = DBOS.start_workflow(blocked)
    form = {"id": "wf-x", "action": "cancel"}

    # A forged POST (what another site's form would send: the cookie, no token) is refused.
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        reply = admin.request(method, target, data=form if method != "DELETE" else None)
        assert reply.status_code == 403, (method, reply.status_code)
    assert admin.post(target, data={**form, "csrf_token": "wrong"}).status_code == 403
    assert admin.post(target, data=form, headers={"X-CSRF-Token": "wrong"}).status_code == 403
    cross = admin.post(
        target, data={**form, "csrf_token": csrf}, headers={"Origin": "https://evil.example"}
    )
    assert cross.status_code == 403
    # Another session's token does not work either.
    other = login(base, ADMIN)
    assert (
        admin.post(target, data={**form, "csrf_token": session(other)["csrf_token"]}).status_code
        == 403
    )

    assert handle.get_status().status == "PENDING"

    # With the token (form field or header) the request reaches the pages.
    passed = admin.post(target, data={**form, "csrf_token": csrf})
    assert passed.status_code != 403, passed.text
    header = admin.post(target, data=form, headers={"X-CSRF-Token": csrf})
    assert header.status_code != 403, header.text

    # None of the refused requests acted; the accepted ones cancelled the workflow.
    assert handle.get_status().status == "CANCELLED"
    release.set()

    # A read-only session sees the pages and may change nothing, even with its token.
    reader = login(base, READER)
    about = session(reader)
    assert about["role"] == "read-only" and about["user"].startswith("read-only-token session")
    refused = reader.post(
        target, data={"id": "wf-x", "action": "resume", "csrf_token": about["csrf_token"]}
    )
    assert refused.status_code == 403 and "read-only" in refused.text
    assert handle.get_status().status == "CANCELLED"
    assert (
        reader.post("/console/logout", data={"csrf_token": about["csrf_token"]}).status_code == 303
    )

    lines = console_lines(caplog)
    acted = [line for line in lines if line.startswith("console action: POST /console/workflow")]
    assert len(acted) == 2, lines
    assert all("admin-token session" in line and "'id': 'wf-x'" in line for line in acted)
    assert all("'action': 'cancel'" in line and line.endswith("-> 303") for line in acted)
    assert all("csrf_token" not in line for line in acted)
    refusals = [line for line in lines if line.startswith("console: refused")]
    assert any("missing or wrong CSRF token" in line for line in refusals), refusals
    assert any("cross-origin" in line for line in refusals), refusals
    assert any("read-only-token session" in line and "read-only" in line for line in refusals)
    for c in (admin, other, reader):
        c.close()


@one_backend
def test_open_console_still_needs_csrf_and_answers_localhost_only(
    config: dict[str, Any],
) -> None:
    DBOS.destroy(destroy_registry=True)
    DBOS(config={**{k: v for k, v in config.items() if "token" not in k}})  # type: ignore[arg-type]
    try:
        DBOS.launch()
        base = base_url()
        with httpx.Client(base_url=base, timeout=30) as client:
            about = client.get("/console/session")
            assert about.status_code == 200 and about.json()["role"] == "admin"
            assert about.json()["user"].startswith("open session")
            assert "SameSite=Strict" in about.headers["set-cookie"]
            assert client.post("/console/workflow/action", data={"id": "x"}).status_code == 403
            ok = client.post(
                "/console/workflow/action",
                data={"id": "x", "csrf_token": about.json()["csrf_token"]},
            )
            assert ok.status_code != 403
            # A page of another site resolving its name to 127.0.0.1 (DNS rebinding).
            rebound = client.get("/console/session", headers={"Host": "evil.example:3001"})
            assert rebound.status_code == 421
            assert client.get("/console/login").status_code == 303  # nothing to log in to
    finally:
        destroy_quickly()


def test_read_only_token_is_checked_at_configuration(db_url: str) -> None:
    DBOS.destroy(destroy_registry=True)
    base = {"name": "waypoint-test", "system_database_url": db_url}
    with pytest.raises(DBOSInitializationError, match="needs admin_token"):
        DBOS(config={**base, "admin_read_only_token": "x"})  # type: ignore[arg-type]
    DBOS.destroy(destroy_registry=True)
    with pytest.raises(DBOSInitializationError, match="must differ"):
        DBOS(config={**base, "admin_token": "x", "admin_read_only_token": "x"})  # type: ignore[arg-type]
    DBOS.destroy(destroy_registry=True)


# -- live events ----------------------------------------------------------------------------------


def listen_connections(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND query ILIKE '%%pg_listening_channels()%%'"
        ).fetchone()
    return int(row[0]) if row else 0


def test_twenty_streams_share_one_reader(dbos: type[DBOS], backend: str, db_url: str) -> None:
    queue = Queue("console-live")
    release = threading.Event()

    @DBOS.workflow()
    def slow_one(x: int) -> int:
        release.wait(60)
        return x

    DBOS.launch()
    base = base_url()
    console = get_runtime().service("admin").console
    feed = console.feed
    client = login(base, READER)  # read-only sessions see the stream too
    readers = [SseReader(base, client.cookies) for _ in range(20)]
    try:
        for r in readers:
            r.start()
        for r in readers:
            assert r.connected.wait(60)
        assert all(r.status == 200 for r in readers), [r.status for r in readers]
        assert all(r.content_type.startswith("text/event-stream") for r in readers)
        wait_for("20 subscribers", lambda: feed.subscribers == 20)
        feeds = [t for t in threading.enumerate() if t.name == "waypoint-console-feed"]
        assert len(feeds) == 1
        if backend == "postgres":
            assert listen_connections(db_url) == 1  # the engine's own listener, nothing more

        reads_before, wakeups_before, started = feed.reads, feed.wakeups, time.monotonic()
        with SetWorkflowID("live-1"):
            handle = queue.enqueue(slow_one, 7)
        wait_for(
            "the ENQUEUED or PENDING event",
            lambda: all(r.saw("live-1", "PENDING") or r.saw("live-1", "ENQUEUED") for r in readers),
        )
        release.set()
        assert handle.get_result() == 7
        wait_for(
            "every stream to see SUCCESS", lambda: all(r.saw("live-1", "SUCCESS") for r in readers)
        )
        elapsed = time.monotonic() - started

        event = next(e for e in readers[0].events if e["status"] == "SUCCESS")
        assert event["workflow_id"] == "live-1" and event["queue"] == "console-live"
        assert event["name"].endswith("slow_one")
        # One reader for all: at most four reads per wake-up, wake-ups spaced by the feed's
        # minimum gap, whatever the number of streams (20 polling tabs would make 20 reads
        # per round).
        reads, wakeups = feed.reads - reads_before, feed.wakeups - wakeups_before
        assert reads <= 4 * wakeups
        assert wakeups <= elapsed / 0.5 + 2
        assert len([t for t in threading.enumerate() if t.name == "waypoint-console-feed"]) == 1
        if backend == "postgres":
            assert listen_connections(db_url) == 1
    finally:
        release.set()
        for r in readers:
            r.close()
        client.close()
    wait_for("the streams to end", lambda: feed.subscribers == 0)


# -- the standalone command ----------------------------------------------------------------------


def start_console(url: str, *args: str) -> tuple[subprocess.Popen[str], str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DBOS__ADMIN_TOKEN",)}
    proc = subprocess.Popen(
        [WAYPOINT, "console", "-s", url, "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
        preexec_fn=interruptible,  # stop_console sends Ctrl-C
    )
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        found = re.search(r"on (http://127\.0\.0\.1:\d+)/console/", line)
        if found:
            return proc, found.group(1)
    proc.wait(30)
    raise AssertionError(f"waypoint console did not start: {''.join(lines)}")


def test_standalone_console(db_url: str) -> None:
    # An application made the database and left.
    DBOS.destroy(destroy_registry=True)
    DBOS(config={"name": "waypoint-test", "system_database_url": db_url})  # type: ignore[arg-type]

    @DBOS.workflow()
    def made(x: int) -> int:
        return x

    DBOS.launch()
    with SetWorkflowID("standalone-1"):
        made(1)
    DBOS.destroy(destroy_registry=True)

    proc, base = start_console(db_url, "--admin-token", ADMIN)
    client = DBOSClient(system_database_url=db_url)
    try:
        bearer = {"Authorization": f"Bearer {ADMIN}"}
        listed = httpx.post(f"{base}/workflows", json={}, headers=bearer, timeout=30)
        assert listed.status_code == 200
        assert [w["WorkflowUUID"] for w in listed.json()] == ["standalone-1"]
        assert httpx.get(f"{base}/workflows/standalone-1", headers=bearer).json()["Status"] == (
            "SUCCESS"
        )
        assert httpx.get(f"{base}/dbos-healthz").text == "healthy"
        gone = httpx.get(f"{base}/deactivate", headers=bearer)
        assert gone.status_code == 503 and gone.json()["error"]["code"] == "no_application"

        console = login(base, ADMIN)
        assert session(console)["role"] == "admin"
        reader = SseReader(base, console.cookies)
        reader.start()
        assert reader.connected.wait(60) and reader.status == 200
        # Another process's write reaches the stream (LISTEN/NOTIFY or polling).
        client.enqueue(
            {"queue_name": "elsewhere", "workflow_name": "remote", "workflow_id": "standalone-2"}
        )
        wait_for("the enqueued workflow's event", lambda: reader.saw("standalone-2", "ENQUEUED"))
        client.cancel_workflow("standalone-2")
        wait_for("the cancellation's event", lambda: reader.saw("standalone-2", "CANCELLED"))
        reader.close()
        console.close()
    finally:
        client.destroy()
        rest = stop_console(proc)
    assert proc.returncode == 0, rest


def test_standalone_console_refuses_bad_options(db_url: str, tmp_path: Path) -> None:
    DBOS.destroy(destroy_registry=True)
    DBOS(config={"name": "waypoint-test", "system_database_url": db_url})  # type: ignore[arg-type]
    DBOS.launch()
    DBOS.destroy(destroy_registry=True)
    done = subprocess.run(
        [WAYPOINT, "console", "-s", db_url, "--read-only-token", "r"],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if k != "DBOS__ADMIN_TOKEN"},
    )
    assert (
        done.returncode != 0
        and "--read-only-token needs --admin-token" in done.stderr + done.stdout
    )


@one_backend
def test_a_request_that_never_finishes_its_headers_is_dropped(
    dbos: type[DBOS], monkeypatch: pytest.MonkeyPatch
) -> None:
    from waypoint.admin import api

    monkeypatch.setattr(api.RequestLimits, "timeout", 0.5)
    DBOS.launch()
    port = get_runtime().service("admin").port
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(b"GET /dbos-healthz HTTP/1.1\r\nHost: x\r\nX-Slow")
        received = b""
        while chunk := s.recv(65536):
            received += chunk
    assert received.startswith(b"HTTP/1.1 408 ") and b'"code": "timeout"' in received
    # A client that finishes in time is served as before.
    assert httpx.get(f"http://127.0.0.1:{port}/dbos-healthz").text == "healthy"
