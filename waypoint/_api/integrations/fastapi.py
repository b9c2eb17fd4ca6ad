"""``DBOS(fastapi=app)``: launch with the application, a request scope per request, and
``DBOSException`` answered as JSON.

One ASGI middleware does the first two. On the lifespan protocol it lets the application's
own lifespan (whatever the user gave FastAPI) run untouched and acts on the messages it
sends to the server: when startup completes it launches (unless the application launched
already), when shutdown completes it destroys. On HTTP requests it enters ``handling``
around the rest of the application, in the same task, so the handler (and the threads
FastAPI runs sync handlers on, which copy the context) sees the request's scope.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.datastructures import URL, Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from waypoint._api.integrations import handling
from waypoint.error import DBOSException

_INSTALLED = "__waypoint_installed__"


class WaypointMiddleware:
    """Lifespan launch/destroy and the per-request scope."""

    def __init__(self, app: ASGIApp, start: Callable[[], None], stop: Callable[[], None]) -> None:
        self.app = app
        self.start = start
        self.stop = stop

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, self._lifespan_send(send))
        elif scope["type"] == "http":
            headers = Headers(scope=scope)
            client = scope.get("client")
            with handling(
                headers.get,
                method=str(scope.get("method", "")),
                url=str(URL(scope=scope)),
                path=str(scope.get("path", "")),
                client_ip=client[0] if client else None,
            ) as respond:

                async def sending(message: MutableMapping[str, Any]) -> None:
                    if message["type"] == "http.response.start":
                        respond(int(message["status"]))
                    await send(message)

                await self.app(scope, receive, sending)
        else:
            await self.app(scope, receive, send)

    def _lifespan_send(self, send: Send) -> Callable[[MutableMapping[str, Any]], Awaitable[None]]:
        async def lifespan_send(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "lifespan.startup.complete":
                self.start()  # after the user's lifespan started: it may have launched itself
            elif message["type"] == "lifespan.shutdown.complete":
                self.stop()
            await send(message)

        return lifespan_send


async def dbos_error_response(request: Request, exc: Exception) -> JSONResponse:
    """A ``DBOSException`` escaping a handler, as DBOS answers it."""
    assert isinstance(exc, DBOSException)
    status = getattr(exc, "status_code", None) or 500
    return JSONResponse(
        status_code=status,
        content={
            "message": str(exc.message),
            "dbos_error_code": str(exc.dbos_error_code),
            "dbos_error": type(exc).__name__,
        },
    )


def install_fastapi(app: Any, start: Callable[[], None], stop: Callable[[], None]) -> None:
    if not isinstance(app, FastAPI):
        raise DBOSException(f"DBOS(fastapi=...) takes a FastAPI application, got {app!r}")
    if getattr(app.state, _INSTALLED, False):
        return  # DBOS constructed again with the same application
    setattr(app.state, _INSTALLED, True)
    app.add_middleware(WaypointMiddleware, start=start, stop=stop)
    app.add_exception_handler(DBOSException, dbos_error_response)
