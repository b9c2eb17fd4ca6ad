"""Small HTTP helpers for the admin API tests: http.client for well-formed requests, raw
sockets for malformed ones, and a checksum of the system tables."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Optional

from waypoint import DBOS
from waypoint.core.runtime import get_runtime
from waypoint.storage.protocol import NewWorkflow

JSON_TYPE = "application/json"


@dataclass
class Reply:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    elapsed: float = 0.0

    def json(self) -> Any:
        return json.loads(self.body)


class Dropped(AssertionError):
    """The server closed or reset the connection without an HTTP response."""


def admin_port() -> int:
    admin = get_runtime().service("admin")
    assert admin is not None, "the admin server is not running"
    return int(admin.port)


def call(
    method: str,
    path: str,
    body: Any = None,
    *,
    token: Optional[str] = None,
    headers: Optional[dict[str, str]] = None,
    port: Optional[int] = None,
    timeout: float = 15,
) -> Reply:
    """One request on its own connection; ``body`` bytes go as they are, anything else
    (None excepted) is sent as JSON."""
    if body is not None and not isinstance(body, bytes):
        body = json.dumps(body).encode()
    hdrs = dict(headers or {})
    if token is not None:
        hdrs["Authorization"] = f"Bearer {token}"
    start = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port or admin_port(), timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=hdrs)
        resp = conn.getresponse()
        payload = resp.read()
    except (ConnectionError, http.client.RemoteDisconnected) as exc:
        raise Dropped(f"{method} {path[:80]}: {exc!r}") from exc
    finally:
        conn.close()
    return Reply(
        resp.status,
        {k.lower(): v for k, v in resp.getheaders()},
        payload,
        time.monotonic() - start,
    )


def raw(data: bytes, *, port: Optional[int] = None, timeout: float = 15) -> Reply:
    """Send bytes as they are and parse whatever HTTP response comes back."""
    start = time.monotonic()
    received = b""
    with socket.create_connection(("127.0.0.1", port or admin_port()), timeout=timeout) as s:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may answer (and close) before reading everything we send
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                received += chunk
        except ConnectionResetError as exc:
            if not received:
                raise Dropped(f"{data[:60]!r}: {exc!r}") from exc
    elapsed = time.monotonic() - start
    if not received:
        raise Dropped(f"{data[:60]!r}: connection closed without a response")
    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    if "content-length" in headers:
        body = body[: int(headers["content-length"])]
    return Reply(status, headers, body, elapsed)


def post_raw(path: str, body: bytes, headers: str = "", *, length: Optional[str] = "auto") -> bytes:
    """A raw POST request; ``length`` "auto" sends the real Content-Length, None none."""
    lines = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}"
    if length == "auto":
        lines += f"Content-Length: {len(body)}\r\n"
    elif length is not None:
        lines += f"Content-Length: {length}\r\n"
    return lines.encode("latin-1") + b"\r\n" + body


def assert_error(reply: Reply, status: Optional[int] = None, code: Optional[str] = None) -> str:
    """A 4xx with a JSON ``{"error": {"code", "message"}}`` body; returns the code."""
    assert 400 <= reply.status < 500, (reply.status, reply.body[:300])
    if status is not None:
        assert reply.status == status, (reply.status, reply.body[:300])
    assert reply.headers.get("content-type", "").startswith(JSON_TYPE), reply.headers
    err = json.loads(reply.body)["error"]
    assert isinstance(err["code"], str) and err["code"], err
    assert isinstance(err["message"], str), err
    if code is not None:
        assert err["code"] == code, err
    return str(err["code"])


def checksum() -> tuple[Any, ...]:
    """Every workflow row's identity, status and update time, plus row counts of the tables
    a request could write (executor heartbeats are left out: they tick on their own); on
    every shard when sharded."""
    from tests.conftest import system_stores

    return tuple(_checksum(store) for store in system_stores())


def _checksum(store: Any) -> tuple[Any, ...]:
    ws = store.d.t("workflow_status")
    rows = store._all(
        f"SELECT workflow_uuid, status, updated_at, recovery_attempts FROM {ws} "
        "ORDER BY workflow_uuid",
        {},
        "checksum",
    )
    agg = store._all(f"SELECT count(*), max(updated_at) FROM {ws}", {}, "checksum")
    counts = []
    for table in (
        "operation_outputs",
        "notifications",
        "workflow_events",
        "queues",
        "workflow_schedules",
    ):
        counts.append(store._all(f"SELECT count(*) FROM {store.d.t(table)}", {}, "count")[0][0])
    return (tuple(tuple(r) for r in rows), tuple(agg[0]), tuple(counts))


def destroy_quickly() -> None:
    """``DBOS.destroy``, without waiting out the admin server's 0.5 s shutdown poll.

    ``ThreadingHTTPServer.shutdown`` waits until ``serve_forever`` next wakes up, which it
    does every 0.5 s or on a new connection; the teardown of every admin test would pay that
    half second, so connections are made until the server has stopped."""
    try:
        admin = get_runtime().service("admin")
    except Exception:
        admin = None
    stop = threading.Event()
    if admin is not None:
        port = int(admin.port)

        def poke() -> None:
            while not stop.is_set():
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                except OSError:
                    return
                stop.wait(0.02)

        threading.Thread(target=poke, daemon=True, name="admin-poke").start()
    try:
        DBOS.destroy(destroy_registry=True)
    finally:
        stop.set()


def orphan(workflow_name: str, prefix: str) -> str:
    """A PENDING workflow of a gone executor (``gone-executor``), left for recovery to take."""
    rt = get_runtime()
    wfid = f"{prefix}-{uuid.uuid4().hex[:6]}"
    rt.store.init_workflow(
        NewWorkflow(
            workflow_id=wfid,
            status="PENDING",
            name=workflow_name,
            class_name=None,
            config_name=None,
            inputs=rt.codec.encode_inputs((), {}, rt.codec.default),
            serialization=rt.codec.default.name(),
            owner_xid="someone-else",
            executor_id="gone-executor",
            application_version=rt.app_version,
            application_id=None,
            application_name=rt.app_name,
            created_at=rt.now_ms(),
        ),
        None,
    )
    return wfid
