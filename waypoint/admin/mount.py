"""The console as mounted at ``/console/``: the pages (``waypoint.console``, when installed),
the live event stream, and the gate in front of both.

The pages are another package's (``build_console(ops)`` → a Starlette app); this module only
joins them to the server. If they cannot be imported, a placeholder page says so and the
event stream still works.
"""

from __future__ import annotations

import logging
from typing import Optional

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Mount, Route
from starlette.types import ASGIApp

from waypoint._api.ops.base import Ops
from waypoint.admin.feed import StatusFeed, event_stream
from waypoint.admin.gate import ConsoleGate

logger = logging.getLogger("waypoint.console")

PLACEHOLDER = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>Waypoint console</title></head><body><h1>Waypoint console</h1>
<p>The console's pages are not available in this installation ({reason}).</p></body></html>
"""


def pages(ops: Ops) -> ASGIApp:
    """The console's pages over ``ops``, or a placeholder naming why there are none."""
    try:
        from waypoint.console import build_console  # type: ignore[import-not-found, unused-ignore]
    except ImportError as exc:
        reason = f"cannot import waypoint.console: {exc}"
        logger.debug("console pages unavailable: %s", reason)

        async def placeholder(request: Request) -> Response:
            return HTMLResponse(PLACEHOLDER.format(reason=reason.replace("<", "&lt;")), 503)

        return Starlette(routes=[Route("/{path:path}", placeholder)])
    app: ASGIApp = build_console(ops)
    return app


class Console:
    """The mounted console: ``app`` (the gated ASGI app) and the ``feed`` behind its stream."""

    def __init__(
        self,
        ops: Ops,
        *,
        admin_token: Optional[str],
        read_only_token: Optional[str],
        bound_host: str,
    ) -> None:
        self.feed = StatusFeed(ops)

        async def events(request: Request) -> Response:
            return await event_stream(self.feed, request)

        inner = Starlette(routes=[Route("/events", events), Mount("", pages(ops))])
        self.gate = ConsoleGate(inner, admin_token, read_only_token, bound_host=bound_host)
        self.app: ASGIApp = self.gate

    def close(self) -> None:
        self.feed.close()
