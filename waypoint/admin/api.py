"""The admin API as an ASGI endpoint: every request is resolved through the ``RouteTable``.

This is the request handling the http.server handler did, over ASGI: the path length cap, the
bearer token (the health check excepted), the strict body rules (declared length, no chunks,
a 1 MiB cap checked before anything is read, a deadline for the rest to arrive), JSON
``{"error": {"code", "message"}}`` for every refusal, and a handler run on a worker thread
(handlers call the database synchronously). Every answer closes its connection, as the
HTTP/1.0 server before it did: clients of the admin API open one connection per request, and a
refusal sent before the body was read leaves nothing sane to read the next request from.
"""

from __future__ import annotations

import hmac
import json
import logging
from typing import Any, Optional

import anyio
from starlette.concurrency import run_in_threadpool
from starlette.types import Message, Receive, Scope, Send

from waypoint.admin.routing import ApiError, Response, RouteTable
from waypoint.error import DBOSException

logger = logging.getLogger("waypoint")

MAX_BODY_BYTES = 1024 * 1024
MAX_PATH_LENGTH = 2048
MAX_HEADERS = 100  # what http.client allowed; more is a flood, not a request
ALLOW_ALL = "GET, POST, HEAD"
SERVER_HEADER = b"waypoint-admin"


class RequestLimits:
    """Per-request limits, read at each request (tests shorten them)."""

    timeout: float = 10.0  # seconds a client may take to send the body it announced


def header(scope: Scope, name: bytes) -> list[bytes]:
    return [v for k, v in scope["headers"] if k == name]


def bearer_ok(scope: Scope, token: str) -> bool:
    """Whether the request carries ``Authorization: Bearer <token>`` (constant-time)."""
    values = header(scope, b"authorization")
    scheme, _, given = (values[0] if values else b"").partition(b" ")
    return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), token.encode("utf-8"))


async def send_response(send: Send, response: Response, *, head: bool = False) -> None:
    payload = response.payload()
    headers = [
        (b"content-type", response.content_type.encode("latin-1")),
        (b"content-length", str(len(payload)).encode()),
        (b"server", SERVER_HEADER),
        (b"connection", b"close"),
    ]
    headers += [
        (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in response.headers.items()
    ]
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else payload})


def error_response(exc: ApiError) -> Response:
    body = {"error": {"code": exc.code, "message": exc.message}}
    return Response(exc.status, body, headers=dict(exc.headers or {}))


class AdminApi:
    """The ASGI endpoint serving ``table`` (read at each request: routes added later are
    served too), guarded by ``token`` when one is set."""

    def __init__(self, table: RouteTable, token: Optional[str]) -> None:
        self.table = table
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        method = scope["method"]
        try:
            response = await self._handle(scope, receive, method)
        except ApiError as exc:
            response = error_response(exc)
        await send_response(send, response, head=method == "HEAD")

    async def _handle(self, scope: Scope, receive: Receive, method: str) -> Response:
        raw_path = scope.get("raw_path") or scope["path"].encode("utf-8")
        path = raw_path.decode("latin-1")
        if len(scope["headers"]) > MAX_HEADERS:
            raise ApiError(431, "too_many_headers", f"at most {MAX_HEADERS} headers")
        if method not in ("GET", "POST", "HEAD"):
            raise ApiError(405, "method_not_allowed", "use GET or POST", {"Allow": ALLOW_ALL})
        if len(path) > MAX_PATH_LENGTH:
            raise ApiError(414, "uri_too_long", "the path is too long")
        if self.token is not None and path != "/dbos-healthz" and not bearer_ok(scope, self.token):
            raise ApiError(401, "unauthorized", "missing or wrong bearer token")
        body = await read_json_body(scope, receive) if method == "POST" else None
        query = scope.get("query_string", b"").decode("latin-1")
        route, request = self.table.resolve("GET" if method == "HEAD" else method, path, query)
        request.body = body
        try:
            return await run_in_threadpool(route.handler, request)
        except ApiError:
            raise
        except DBOSException as exc:
            status = 404 if "does not exist" in exc.message else 400
            raise ApiError(status, type(exc).__name__, exc.message) from exc
        except Exception:
            logger.exception("admin request %s %s failed", method, path)
            raise ApiError(500, "internal", "the request failed; see the server log") from None


async def read_json_body(scope: Scope, receive: Receive) -> Any:
    """The request's JSON body (None when it has none), under the admin API's rules."""
    if header(scope, b"transfer-encoding"):
        raise ApiError(411, "length_required", "chunked bodies are not accepted")
    lengths = header(scope, b"content-length")
    if not lengths:
        return None  # neither length nor chunked: the request has no body (RFC 9112 6.3)
    raw_length = lengths[0].strip()
    if len(set(lengths)) > 1 or not raw_length.isdigit():
        raise ApiError(400, "bad_length", "Content-Length must be one non-negative integer")
    length = int(raw_length)
    if length > MAX_BODY_BYTES:
        raise ApiError(413, "too_large", f"bodies are limited to {MAX_BODY_BYTES} bytes")
    data = b""
    with anyio.move_on_after(RequestLimits.timeout) as deadline:
        while len(data) < length:
            message: Message = await receive()
            if message["type"] == "http.disconnect":
                raise ApiError(400, "short_body", "the client left before sending its body")
            data += message.get("body", b"")
            if not message.get("more_body", False):
                break
    if deadline.cancelled_caught:
        raise ApiError(408, "timeout", "the body did not arrive in time")
    if len(data) < length:
        raise ApiError(400, "short_body", "the body is shorter than its Content-Length")
    if not data.strip():
        return None
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ApiError(400, "invalid_json", "the body is not valid UTF-8 JSON") from None
