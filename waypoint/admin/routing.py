"""A route table for the admin server: method + path pattern → handler.

Patterns are matched segment by segment on the raw, still percent-encoded path, so a workflow
ID that contains ``/`` (sent as ``%2F``) stays one segment; ``{name}`` captures a segment,
decoded as strict UTF-8. A path that matches a pattern under other methods only is a 405 with
``Allow``; one that matches nothing is a 404. Handlers receive the request (path parameters,
query string, parsed JSON body) and return a ``Response`` of any content type.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Optional
from urllib.parse import parse_qs, unquote


class ApiError(Exception):
    """A request the API refuses: ``status``, a stable ``code`` and a message, sent as
    ``{"error": {"code", "message"}}``."""

    def __init__(
        self, status: int, code: str, message: str, headers: Optional[dict[str, str]] = None
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers
        super().__init__(message)


def clean(value: str, what: str, code: str = "invalid_field") -> str:
    """Reject strings no database column can hold (NUL, lone surrogates)."""
    if "\x00" in value:
        raise ApiError(400, code, f"{what} contains a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ApiError(400, code, f"{what} is not valid Unicode text") from None
    return value


@dataclass
class Request:
    method: str
    path: str  # raw, percent-encoded, without the query string
    params: dict[str, str] = field(default_factory=dict)
    query: dict[str, list[str]] = field(default_factory=dict)
    body: Any = None

    def query_int(self, name: str, *, minimum: int = 0, maximum: int = 2**53) -> Optional[int]:
        values = self.query.get(name)
        if not values:
            return None
        text = values[-1]
        if not text.isascii() or not text.isdigit() or not minimum <= int(text) <= maximum:
            raise ApiError(
                400, "invalid_query", f"{name} must be an integer from {minimum} to {maximum}"
            )
        return int(text)

    def query_bool(self, name: str, default: bool) -> bool:
        values = self.query.get(name)
        if not values:
            return default
        text = values[-1].lower()
        if text not in ("true", "false", "1", "0"):
            raise ApiError(400, "invalid_query", f"{name} must be true or false")
        return text in ("true", "1")


@dataclass
class Response:
    status: int = 200
    body: Any = None
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)

    def payload(self) -> bytes:
        if self.body is None:
            return b""
        if isinstance(self.body, bytes):
            return self.body
        if isinstance(self.body, str) and not self.content_type.startswith("application/json"):
            return self.body.encode("utf-8")
        return json.dumps(self.body, default=str).encode()


def json_response(body: Any, status: int = 200) -> Response:
    return Response(status, body)


Handler = Callable[[Request], Response]


@dataclass
class Route:
    method: str
    pattern: str
    handler: Handler
    query: frozenset[str] = frozenset()  # query parameters the handler reads

    def match(self, segments: list[str]) -> Optional[dict[str, str]]:
        parts = _segments(self.pattern)
        if len(parts) != len(segments):
            return None
        params: dict[str, str] = {}
        for part, segment in zip(parts, segments, strict=True):
            if part.startswith("{") and part.endswith("}"):
                if not segment:
                    return None
                params[part[1:-1]] = segment
            elif part != segment:
                return None
        return params


class RouteTable:
    def __init__(self) -> None:
        self.routes: list[Route] = []

    def add(
        self, method: str, pattern: str, handler: Handler, *, query: tuple[str, ...] = ()
    ) -> None:
        self.routes.append(Route(method.upper(), pattern, handler, frozenset(query)))

    def resolve(self, method: str, raw_path: str, raw_query: str = "") -> tuple[Route, Request]:
        """The route for a request (HEAD is served as GET), or the ApiError to send."""
        segments = _segments(raw_path)
        wanted = "GET" if method == "HEAD" else method
        allowed: list[str] = []
        for route in self.routes:
            params = route.match(segments)
            if params is None:
                continue
            if route.method != wanted:
                allowed.append(route.method)
                continue
            return route, Request(method, raw_path, _decode(params), _query(raw_query, route.query))
        if allowed:
            allow = ", ".join(sorted(set(allowed)))
            raise ApiError(405, "method_not_allowed", f"{raw_path} takes {allow}", {"Allow": allow})
        raise ApiError(404, "not_found", f"no endpoint {method} {raw_path}")


def _segments(path: str) -> list[str]:
    return (path[1:] if path.startswith("/") else path).split("/")


def _decode(params: Mapping[str, str]) -> dict[str, str]:
    out = {}
    for name, raw in params.items():
        try:
            value = unquote(raw, errors="strict")
        except UnicodeDecodeError:
            raise ApiError(400, "bad_path", f"the {name} in the path is not valid UTF-8") from None
        out[name] = clean(value, f"the {name} in the path", "bad_path")
    return out


def _query(raw: str, known: frozenset[str]) -> dict[str, list[str]]:
    try:
        query = parse_qs(raw, keep_blank_values=True, strict_parsing=False, errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise ApiError(400, "invalid_query", "the query string is not valid UTF-8") from None
    unknown = sorted(set(query) - known)
    if unknown:
        raise ApiError(400, "invalid_query", f"unknown query parameter(s): {', '.join(unknown)}")
    return {k: [clean(v, k, "invalid_query") for v in vs] for k, vs in query.items()}
