"""The admin HTTP server (DBOS's endpoints on port 3001 by default), safe by default.

It serves a ``RouteTable``: the DBOS endpoints (``admin.routes``) and whatever else is added
to the table before it starts.

Differences from DBOS's admin server, all on purpose: it binds 127.0.0.1 unless told
otherwise; with a token configured every endpoint but the health check needs
``Authorization: Bearer <token>``; bodies are capped and must declare their length; every
request body is validated, and every failure is a JSON ``{"error": {"code", "message"}}`` with
a 4xx status, never a traceback; ``/deactivate`` really stops this executor from dequeueing.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional

from waypoint.admin.routing import ApiError, Response, RouteTable
from waypoint.error import DBOSException

logger = logging.getLogger("waypoint")

MAX_BODY_BYTES = 1024 * 1024
MAX_PATH_LENGTH = 2048


class AdminServer:
    name = "admin"

    def __init__(self, table: RouteTable, host: str, port: int, token: Optional[str]) -> None:
        self.table = table
        self.token = token
        server = self

        class Handler(_Handler):
            admin = server

        self._httpd = _Server((host, port), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="waypoint-admin", daemon=True
        )

    def start(self) -> None:
        self._thread.start()
        logger.info("admin API listening on %s:%d", *self._httpd.server_address[:2])

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # bursts of connections queue instead of being reset


class _Handler(BaseHTTPRequestHandler):
    admin: AdminServer
    server_version = "waypoint-admin"
    sys_version = ""
    timeout = 10  # a slow client cannot hold a thread forever

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("admin %s - %s", self.address_string(), format % args)

    # -- plumbing -------------------------------------------------------------------------------
    def _respond(self, response: Response) -> None:
        payload = response.payload()
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(payload)))
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        if payload and self.command != "HEAD":
            try:
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True  # the client left without reading the answer

    def _error(
        self, status: int, code: str, message: str, headers: Optional[dict[str, str]] = None
    ) -> None:
        error = {"error": {"code": code, "message": message}}
        self._respond(Response(status, error, headers=dict(headers or {})))

    def send_error(
        self, code: int, message: Optional[str] = None, explain: Optional[str] = None
    ) -> None:
        """Errors found while parsing HTTP itself get the same JSON body as the rest."""
        self.close_connection = True
        self._error(code, "bad_request" if code < 500 else "unsupported", message or explain or "")

    def _authorized(self, path: str) -> bool:
        token = self.admin.token
        if token is None or path == "/dbos-healthz":
            return True
        header = self.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode("utf-8", "surrogateescape"), token.encode("utf-8")
        )

    def _body(self) -> Any:
        if self.headers.get("Transfer-Encoding"):
            raise ApiError(411, "length_required", "chunked bodies are not accepted")
        lengths = self.headers.get_all("Content-Length") or []
        if not lengths:
            return None  # neither length nor chunked: the request has no body (RFC 9112 6.3)
        if len(set(lengths)) > 1:
            raise ApiError(400, "bad_length", "conflicting Content-Length headers")
        raw_length = lengths[0].strip()
        if not raw_length.isascii() or not raw_length.isdigit():
            raise ApiError(400, "bad_length", "Content-Length must be a non-negative integer")
        length = int(raw_length)
        if length > MAX_BODY_BYTES:
            raise ApiError(413, "too_large", f"bodies are limited to {MAX_BODY_BYTES} bytes")
        try:
            data = self.rfile.read(length) if length else b""
        except TimeoutError:
            raise ApiError(408, "timeout", "the body did not arrive in time") from None
        if len(data) < length:
            raise ApiError(400, "short_body", "the body is shorter than its Content-Length")
        if not data.strip():
            return None
        try:
            return json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise ApiError(400, "invalid_json", "the body is not valid UTF-8 JSON") from None

    def _handle(self, method: str) -> None:
        raw_path, _, raw_query = self.path.partition("?")
        if len(raw_path) > MAX_PATH_LENGTH:
            self._error(414, "uri_too_long", "the path is too long")
            return
        if not self._authorized(raw_path):
            self._error(401, "unauthorized", "missing or wrong bearer token")
            return
        try:
            body = self._body() if method == "POST" else None
            route, request = self.admin.table.resolve(method, raw_path, raw_query)
            request.body = body
            response = route.handler(request)
        except ApiError as exc:
            self._error(exc.status, exc.code, exc.message, exc.headers)
            return
        except DBOSException as exc:
            code = type(exc).__name__
            status = 404 if "does not exist" in exc.message else 400
            self._error(status, code, exc.message)
            return
        except Exception:
            logger.exception("admin request %s %s failed", method, raw_path)
            self._error(500, "internal", "the request failed; see the server log")
            return
        self._respond(response)

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_HEAD(self) -> None:
        self._handle("GET")

    def do_PUT(self) -> None:
        self._error(405, "method_not_allowed", "use GET or POST", {"Allow": "GET, POST, HEAD"})

    do_DELETE = do_PUT
    do_PATCH = do_PUT
    do_OPTIONS = do_PUT
    do_TRACE = do_PUT
    do_CONNECT = do_PUT
