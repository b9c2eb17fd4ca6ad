"""The admin HTTP server (DBOS's endpoints on port 3001 by default), safe by default.

One ASGI application (``admin.app``: the DBOS endpoints of a ``RouteTable``, and the console
at ``/console/``) served by uvicorn on a background thread, or on the caller's thread for the
standalone ``waypoint console`` command.

Differences from DBOS's admin server, all on purpose: it binds 127.0.0.1 unless told
otherwise; with a token configured every endpoint but the health check needs
``Authorization: Bearer <token>``; bodies are capped and must declare their length; every
request body is validated, and every failure is a JSON ``{"error": {"code", "message"}}`` with
a 4xx status, never a traceback, even for requests the HTTP parser itself refuses;
``/deactivate`` really stops this executor from dequeueing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import sys
import threading
from collections.abc import Callable
from typing import Optional

import h11
import uvicorn
from starlette.types import ASGIApp
from uvicorn.protocols.http.h11_impl import H11Protocol

from waypoint.admin.api import RequestLimits
from waypoint.admin.app import build_app
from waypoint.admin.mount import Console
from waypoint.admin.routing import RouteTable

logger = logging.getLogger("waypoint")

# The http.server handler this replaced had this name; its request deadline lives on.
_Handler = RequestLimits

BACKLOG = 1024  # bursts of connections queue instead of being reset
STOP_WAIT_S = 5.0


class JsonErrorsH11(H11Protocol):
    """uvicorn's h11 protocol, answering requests the parser refuses with the admin API's JSON
    error body (and a status that says why) instead of a plain-text 400, and closing a
    connection whose first request has not finished its headers within the request deadline
    (uvicorn has no such limit: a slow client could hold connections open forever)."""

    _header_timer: Optional[asyncio.TimerHandle] = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_timer = self.loop.call_later(RequestLimits.timeout, self._headers_too_slow)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.cycle is not None and self._header_timer is not None:
            self._header_timer.cancel()  # the request line and headers are in
            self._header_timer = None

    def connection_lost(self, exc: Optional[Exception]) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        super().connection_lost(exc)

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self.cycle is not None or self.transport.is_closing():
            return
        body = json.dumps(
            {"error": {"code": "timeout", "message": "the request headers did not arrive in time"}}
        ).encode()
        head = (
            "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
        )
        self.transport.write(head.encode("latin-1") + body)
        self.transport.close()

    def send_400_response(self, msg: str) -> None:
        exc = sys.exc_info()[1]  # called from the handler of h11's RemoteProtocolError
        detail = str(exc) if isinstance(exc, h11.ProtocolError) and str(exc) else msg
        status, code = 400, "bad_request"
        if "Content-Length" in detail:
            code = "bad_length"
        elif "Transfer-Encoding" in detail:
            status, code = 411, "length_required"
        elif isinstance(exc, h11.ProtocolError) and exc.error_status_hint in (414, 431):
            status = exc.error_status_hint
        body = json.dumps({"error": {"code": code, "message": detail}}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        for event in (
            h11.Response(status_code=status, headers=headers),
            h11.Data(data=body),
            h11.EndOfMessage(),
        ):
            self.transport.write(self.conn.send(event) or b"")
        self.transport.close()


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (IPv4 or IPv6), so a busy port fails at once, in the
    caller, and port 0 is resolved before the server starts."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


class HttpServer:
    """``app`` served by uvicorn on a socket bound at construction."""

    def __init__(self, app: ASGIApp, host: str, port: int, *, thread_name: str) -> None:
        self.app = app
        self._sock = bind(host, port)
        self.host = host
        self.server_address: tuple[str, int] = self._sock.getsockname()[:2]
        self.port = self.server_address[1]
        config = uvicorn.Config(
            app,
            http=JsonErrorsH11,
            loop="asyncio",
            lifespan="off",
            log_config=None,  # the application's logging stays the application's
            log_level="warning",
            access_log=False,
            server_header=False,
            backlog=BACKLOG,
            timeout_keep_alive=5,
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name=thread_name, daemon=True)
        self.on_stop: list[Callable[[], None]] = []  # run when the server stops (the feed)

    def _run(self) -> None:
        asyncio.run(self._server.serve(sockets=[self._sock]))

    def start(self) -> None:
        self._thread.start()

    def serve_forever(self) -> None:
        """Serve on this thread until interrupted (Ctrl-C) or stopped."""
        self.start()
        try:
            while self._thread.is_alive():
                self._thread.join(0.5)
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    def stop(self) -> None:
        for callback in self.on_stop:
            callback()
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(STOP_WAIT_S)
            if self._thread.is_alive():
                self._server.force_exit = True
                self._thread.join(STOP_WAIT_S)
        self._sock.close()


class AdminServer(HttpServer):
    """The admin server of a launched application (or of ``waypoint console``): ``table``'s
    endpoints (``self.table``: routes added to it later are served too) and, when given, the
    console at ``/console/``."""

    name = "admin"

    def __init__(
        self,
        table: RouteTable,
        host: str,
        port: int,
        token: Optional[str],
        *,
        console: Optional[Console] = None,
    ) -> None:
        self.table = table
        self.token = token
        self.console = console
        app = build_app(table, token, console.app if console is not None else None)
        super().__init__(app, host, port, thread_name="waypoint-admin")
        if console is not None:
            self.on_stop.append(console.close)

    def start(self) -> None:
        super().start()
        logger.info("admin API listening on %s:%d", self.host, self.port)
