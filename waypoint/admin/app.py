"""The one ASGI application behind the admin port: the DBOS admin endpoints and the console.

The console is mounted at ``/console/``; everything else goes to the admin API, which resolves
the raw path through its ``RouteTable`` (so ``404``/``405`` and path parameters keep DBOS's
rules, including encoded slashes inside workflow IDs).
"""

from __future__ import annotations

from typing import Optional

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp

from waypoint.admin.api import AdminApi
from waypoint.admin.routing import RouteTable


def build_app(table: RouteTable, token: Optional[str], console: Optional[ASGIApp]) -> Starlette:
    routes: list[BaseRoute] = []
    if console is not None:

        async def to_console(request: Request) -> RedirectResponse:
            return RedirectResponse(request.scope.get("root_path", "") + "/console/", 308)

        routes += [
            Route("/console", to_console, methods=["GET", "HEAD"]),
            Mount("/console", console),
        ]
    routes.append(Mount("", AdminApi(table, token)))
    return Starlette(routes=routes)
