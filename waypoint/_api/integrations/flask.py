"""``DBOS(flask=app)``: a WSGI middleware giving every request its scope (``handling``).

Flask has no lifespan: the application launches with ``DBOS.launch()`` as usual. The
response is produced while the middleware's scope is entered (Flask builds it inside
``wsgi_app``); only the iteration of a streamed body happens after it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask
from werkzeug.wrappers import Request

from waypoint._api.integrations import handling
from waypoint.error import DBOSException

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class WaypointWSGIMiddleware:
    """Wraps ``app.wsgi_app``."""

    def __init__(self, app: WSGIApp) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        request = Request(environ)
        with handling(
            lambda name: request.headers.get(name),
            method=request.method,
            url=request.url,
            path=request.path,
            client_ip=request.remote_addr,
        ) as respond:

            def starting(status: str, *args: Any) -> Any:
                respond(int(status.split(" ", 1)[0]))
                return start_response(status, *args)

            return self.app(environ, starting)


def install_flask(app: Any) -> None:
    if not isinstance(app, Flask):
        raise DBOSException(f"DBOS(flask=...) takes a Flask application, got {app!r}")
    if isinstance(app.wsgi_app, WaypointWSGIMiddleware):
        return  # DBOS constructed again with the same application
    app.wsgi_app = WaypointWSGIMiddleware(app.wsgi_app)  # type: ignore[method-assign]
