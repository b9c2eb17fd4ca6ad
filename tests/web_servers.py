"""Real HTTP servers for the integration tests: uvicorn for ASGI (FastAPI) and werkzeug's
threaded server for WSGI (Flask), each on a free port of 127.0.0.1 in a thread; and an
observer that notes the request each workflow run was started for."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any, Optional

import uvicorn
from werkzeug.serving import make_server

from waypoint.core.observe import ObservedRun, Observer, Watch


def _wait(ready: Any, thread: threading.Thread, what: str) -> None:
    deadline = time.monotonic() + 30  # a guard against a hang, not a timed assertion
    while not ready():
        if not thread.is_alive():
            raise AssertionError(f"{what} stopped before it was ready")
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not become ready")
        time.sleep(0.01)


@contextlib.contextmanager
def serve_asgi(app: Any) -> Iterator[str]:
    """Serve ``app`` with uvicorn (lifespan on) and yield its base URL; on exit the server
    shuts down (running the lifespan's shutdown) and its thread is joined."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, lifespan="on", log_level="warning", access_log=False)
    )

    def run() -> None:
        try:
            server.run(sockets=[sock])
        except SystemExit:
            pass  # uvicorn exits when the application's startup fails: not ready, as below

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        _wait(lambda: server.started, thread, "uvicorn")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
    assert not thread.is_alive(), "uvicorn did not shut down"


@contextlib.contextmanager
def serve_wsgi(app: Any) -> Iterator[str]:
    """Serve ``app`` with werkzeug's threaded server and yield its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(30)
        server.server_close()


class RequestLog(Observer):
    def __init__(self) -> None:
        self.seen: dict[str, Any] = {}

    def workflow(self, run: ObservedRun) -> Optional[Watch]:
        self.seen[run.workflow_id] = run.request
        return None
