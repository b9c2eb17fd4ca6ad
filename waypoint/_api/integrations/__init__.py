"""Web framework integrations: ``DBOS(fastapi=app)`` and ``DBOS(flask=app)``.

What both do for every request is here (``handling``): the request becomes the one in scope
(``core.context.current_request``) and a ``dbos-idempotency-key`` header becomes the ID of the
first workflow the handler starts, so a retried request with the same key gets the recorded
result instead of running again. The framework modules (``fastapi``, ``flask``) are imported
only when an application is passed, so neither framework is a dependency of Waypoint (they
are the optional extra ``web``).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from typing import Any, Optional

from waypoint._api.context_managers import SetWorkflowID
from waypoint._api.telemetry import handler_span
from waypoint.core.context import HandlerAuth, current_request, handler_auth
from waypoint.core.types import RequestInfo
from waypoint.error import DBOSException

IDEMPOTENCY_HEADER = "dbos-idempotency-key"
REQUEST_ID_HEADER = "x-request-id"


@contextlib.contextmanager
def handling(
    header: Callable[[str], Optional[str]],
    *,
    method: str,
    url: str,
    path: str,
    client_ip: Optional[str],
) -> Iterator[Callable[[int], None]]:
    """The scope of one request; ``header`` reads a request header by lower-case name.
    Yields the function to call with the response's status code (for the request's span)."""
    info = RequestInfo(
        request_id=header(REQUEST_ID_HEADER) or str(uuid.uuid4()),
        method=method,
        url=url,
        path=path,
        client_ip=client_ip,
    )
    token = current_request.set(info)
    auth_token = handler_auth.set(HandlerAuth())
    try:
        key = header(IDEMPOTENCY_HEADER)
        with handler_span(info) as respond, SetWorkflowID(key) if key else contextlib.nullcontext():
            yield respond
    finally:
        handler_auth.reset(auth_token)
        current_request.reset(token)


def install(
    *,
    fastapi: Any,
    flask: Any,
    start: Callable[[], None],
    stop: Callable[[], None],
) -> None:
    """Install the middleware on the applications given (``None``: not given). ``start``
    launches (unless launched) and ``stop`` destroys, for FastAPI's lifespan."""
    if fastapi is not None:
        try:
            from waypoint._api.integrations.fastapi import install_fastapi
        except ImportError as exc:
            raise DBOSException(
                f"DBOS(fastapi=...) needs FastAPI installed (pip install waypoint-workflows[web]): "
                f"{exc}"
            ) from exc
        install_fastapi(fastapi, start, stop)
    if flask is not None:
        try:
            from waypoint._api.integrations.flask import install_flask
        except ImportError as exc:
            raise DBOSException(
                f"DBOS(flask=...) needs Flask installed (pip install waypoint-workflows[web]): "
                f"{exc}"
            ) from exc
        install_flask(flask)
