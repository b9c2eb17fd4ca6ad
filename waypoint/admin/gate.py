"""Who may use the console, and what they may do: sessions, the login page, CSRF, roles, and
the log of every action.

The admin API keeps its bearer token; the console is for browsers, so it trades a token for a
session once, at ``/console/login``, and from then on a cookie (``HttpOnly``,
``SameSite=Strict``, ``Path=/console``, ``Secure`` over HTTPS) names a random server-side
session. Nothing about the token or the role is in the cookie: the session table lives in this
process, so a restart logs everyone out.

Roles: the ``admin_token`` gives ``"admin"``; ``admin_read_only_token`` (a Waypoint
extension) gives ``"read-only"``, which sees every page and changes nothing. Without an
``admin_token`` the console is open (to what can reach the port: 127.0.0.1 by default) and
every visitor gets an ``"admin"`` session on the first request, so CSRF checks still apply.

What the gate gives the pages, in the ASGI scope:

- ``scope["waypoint.role"]``: ``"admin"`` or ``"read-only"``;
- ``scope["waypoint.csrf"]``: the session's CSRF token, a string the pages put in a hidden
  form field named ``csrf_token`` and in an ``X-CSRF-Token`` header for ``fetch``;
- ``scope["waypoint.user"]``: who, for logs (``"admin-token session 1a2b3c4d"``).

``GET /console/session`` answers the same as JSON (``role``, ``user``, ``csrf_token``) for
scripts of the pages; ``POST /console/logout`` (with the CSRF token) ends the session.

What it enforces: every POST/PUT/PATCH/DELETE under ``/console/`` needs a valid CSRF token
(form field or header) and, when an ``Origin`` header is sent, the same origin, else 403; a
read-only session gets 403 for all of them (logout excepted); and each one is logged (who,
method, path, form fields, outcome) on the ``waypoint.console`` logger. While the server is
bound to a loopback address only ``localhost``-style ``Host`` headers are served, which stops a
DNS-rebinding page from reaching an open console through the browser.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import json
import logging
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Optional
from urllib.parse import parse_qsl, urlencode, urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger("waypoint.console")

COOKIE = "waypoint_console"
LOGIN_COOKIE = "waypoint_login"
SESSION_IDLE_S = 8 * 3600
SESSION_MAX_S = 24 * 3600
MAX_SESSIONS = 1000
MAX_FORM_BYTES = 1024 * 1024
UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}
PUBLIC = {"/login"}  # paths (inside the console) served without a session
LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "[::1]", "::1"}
ROLES = ("admin", "read-only")


@dataclass
class Session:
    role: str
    kind: str  # which credential opened it: admin-token, read-only-token, open
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    created: float = field(default_factory=time.monotonic)
    seen: float = field(default_factory=time.monotonic)
    tag: str = ""  # a short name for logs; never the session ID itself

    @property
    def user(self) -> str:
        return f"{self.kind} session {self.tag}"


class Sessions:
    """Random server-side sessions, expiring after ``SESSION_IDLE_S`` idle or
    ``SESSION_MAX_S`` in all, at most ``MAX_SESSIONS`` (the oldest goes first)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_id: OrderedDict[str, Session] = OrderedDict()

    def open(self, role: str, kind: str) -> tuple[str, Session]:
        sid = secrets.token_urlsafe(32)
        session = Session(role, kind, tag=hashlib.sha256(sid.encode()).hexdigest()[:8])
        with self._lock:
            self._by_id[sid] = session
            while len(self._by_id) > MAX_SESSIONS:
                self._by_id.popitem(last=False)
        return sid, session

    def get(self, sid: Optional[str]) -> Optional[Session]:
        if not sid:
            return None
        now = time.monotonic()
        with self._lock:
            session = self._by_id.get(sid)
            if session is None:
                return None
            if now - session.seen > SESSION_IDLE_S or now - session.created > SESSION_MAX_S:
                del self._by_id[sid]
                return None
            session.seen = now
            return session

    def close(self, sid: Optional[str]) -> None:
        with self._lock:
            self._by_id.pop(sid or "", None)


def _cookies(scope: Scope) -> dict[str, str]:
    found: dict[str, str] = {}
    for name, value in scope["headers"]:
        if name == b"cookie":
            for part in value.decode("latin-1").split(";"):
                key, _, val = part.strip().partition("=")
                found.setdefault(key, val)
    return found


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return ""


def _same(a: str, b: str) -> bool:
    return bool(a) and hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


def _cookie(scope: Scope, name: str, value: str, path: str, max_age: Optional[int]) -> bytes:
    parts = [f"{name}={value}", f"Path={path or '/'}", "HttpOnly", "SameSite=Strict"]
    if max_age is not None:
        parts.append(f"Max-Age={max_age}")
    if scope.get("scheme") == "https":
        parts.append("Secure")
    return "; ".join(parts).encode("latin-1")


async def _read_body(receive: Receive) -> bytes:
    body: bytes = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return body
        body += bytes(message.get("body", b""))
        if len(body) > MAX_FORM_BYTES:
            raise ValueError("form too large")
        if not message.get("more_body", False):
            return body


def _replay(body: bytes) -> Receive:
    """A ``receive`` that hands the already-read body to the app behind the gate."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    return receive


async def _reply(
    send: Send,
    status: int,
    text: str,
    *,
    content_type: str = "text/plain; charset=utf-8",
    headers: Optional[list[tuple[bytes, bytes]]] = None,
) -> None:
    body = text.encode("utf-8")
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type.encode()),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


LOGIN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Waypoint console: log in</title>
<style>body{{font:15px system-ui,sans-serif;max-width:24rem;margin:4rem auto}}
input,button{{font:inherit;padding:.4rem;width:100%;box-sizing:border-box;margin:.3rem 0}}
.error{{color:#a00}}</style></head>
<body><h1>Waypoint console</h1>{message}
<form method="post" action="{action}">
<input type="hidden" name="csrf_token" value="{nonce}">
<input type="hidden" name="next" value="{next}">
<label for="token">Admin or read-only token</label>
<input id="token" name="token" type="password" autocomplete="current-password" autofocus>
<button type="submit">Log in</button></form></body></html>
"""


class ConsoleGate:
    """ASGI middleware in front of the console app (mounted at ``/console``)."""

    def __init__(
        self,
        app: ASGIApp,
        admin_token: Optional[str],
        read_only_token: Optional[str],
        *,
        bound_host: str = "127.0.0.1",
    ) -> None:
        if read_only_token is not None and admin_token is None:
            raise ValueError("admin_read_only_token needs admin_token to be set as well")
        if read_only_token is not None and read_only_token == admin_token:
            raise ValueError("admin_read_only_token must differ from admin_token")
        self.app = app
        self.admin_token = admin_token
        self.read_only_token = read_only_token
        self.sessions = Sessions()
        self.loopback_only = bound_host in LOOPBACK_HOSTS or bound_host.startswith("127.")
        if admin_token is None and not self.loopback_only:
            logger.warning(
                "the console on %s has no admin_token: anyone who reaches the port can act",
                bound_host,
            )

    # -- the request path ------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        root = str(scope.get("root_path", ""))
        path = str(scope["path"])[len(root) :] if str(scope["path"]).startswith(root) else "/"
        method = str(scope["method"])
        if self.loopback_only and not self._loopback_host(scope):
            await _reply(send, 421, "this console answers to localhost only\n")
            return
        if path == "/login":
            await self._login(scope, receive, send, root)
            return
        sid = _cookies(scope).get(COOKIE)
        session = self.sessions.get(sid)
        new_cookie: Optional[bytes] = None
        if session is None:
            if self.admin_token is not None:
                await self._unauthenticated(scope, send, root, method, path)
                return
            sid, session = self.sessions.open("admin", "open")
            new_cookie = _cookie(scope, COOKIE, sid, root, None)
        scope["waypoint.role"] = session.role
        scope["waypoint.csrf"] = session.csrf
        scope["waypoint.user"] = session.user
        if path == "/session" and method in ("GET", "HEAD"):
            about = {"role": session.role, "user": session.user, "csrf_token": session.csrf}
            await _reply(
                _with_cookie(send, new_cookie),
                200,
                json.dumps(about),
                content_type="application/json",
            )
            return
        if method in UNSAFE:
            await self._unsafe(scope, receive, send, session, sid, root, path)
            return
        await self.app(scope, receive, _with_cookie(send, new_cookie))

    def _loopback_host(self, scope: Scope) -> bool:
        host = _header(scope, b"host")
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        return not host or name.lower() in LOOPBACK_HOSTS

    async def _unauthenticated(
        self, scope: Scope, send: Send, root: str, method: str, path: str
    ) -> None:
        wants_page = method in ("GET", "HEAD") and "text/html" in _header(scope, b"accept")
        if wants_page:
            query = urlencode({"next": root + path})
            location = f"{root}/login?{query}".encode("latin-1", "replace")
            await _reply(send, 303, "log in first\n", headers=[(b"location", location)])
            return
        if method in UNSAFE:
            logger.warning("console: refused %s %s%s: not logged in", method, root, path)
        await _reply(send, 401, "log in at /console/login first\n")

    async def _unsafe(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        session: Session,
        sid: Optional[str],
        root: str,
        path: str,
    ) -> None:
        method = str(scope["method"])
        what = f"{method} {root}{path}"
        try:
            body = await _read_body(receive)
        except ValueError:
            await _reply(send, 413, "the form is too large\n")
            return
        form = _form(scope, body)
        given = _header(scope, b"x-csrf-token") or form.get("csrf_token", "")
        origin = _header(scope, b"origin")
        refused = ""
        if origin and origin != "null" and urlsplit(origin).netloc != _header(scope, b"host"):
            refused = f"cross-origin request from {origin}"
        elif not _same(given, session.csrf):
            refused = "missing or wrong CSRF token"
        elif session.role != "admin" and path != "/logout":
            refused = "read-only session"
        if refused:
            logger.warning("console: refused %s by %s: %s", what, session.user, refused)
            await _reply(send, 403, f"forbidden: {refused}\n")
            return
        if path == "/logout":
            self.sessions.close(sid)
            logger.info("console: %s logged out", session.user)
            gone = _cookie(scope, COOKIE, "", root, 0)
            headers = [(b"location", f"{root}/login".encode("latin-1")), (b"set-cookie", gone)]
            await _reply(send, 303, "logged out\n", headers=headers)
            return
        shown = {k: v[:200] for k, v in form.items() if k not in ("csrf_token", "token")}
        status: list[int] = []

        async def watched(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(int(message["status"]))
            await send(message)

        try:
            await self.app(scope, _replay(body), watched)
        finally:
            logger.info(
                "console action: %s by %s %s -> %s",
                what,
                session.user,
                shown,
                status[0] if status else "no answer",
            )

    # -- login ------------------------------------------------------------------------------------
    async def _login(self, scope: Scope, receive: Receive, send: Send, root: str) -> None:
        method = str(scope["method"])
        if self.admin_token is None:
            headers = [(b"location", f"{root}/".encode("latin-1"))]
            await _reply(send, 303, "no token is needed here\n", headers=headers)
            return
        if method in ("GET", "HEAD"):
            query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
            await self._login_page(scope, send, root, query.get("next", ""), "", 200)
            return
        if method != "POST":
            await _reply(send, 405, "use GET or POST\n", headers=[(b"allow", b"GET, POST")])
            return
        try:
            form = _form(scope, await _read_body(receive))
        except ValueError:
            await _reply(send, 413, "the form is too large\n")
            return
        nonce = _cookies(scope).get(LOGIN_COOKIE, "")
        if not _same(form.get("csrf_token", ""), nonce):
            logger.warning("console: refused a login without the login form's token")
            await self._login_page(scope, send, root, form.get("next", ""), "Try again.", 403)
            return
        token = form.get("token", "")
        if _same(token, self.admin_token):
            role, kind = "admin", "admin-token"
        elif self.read_only_token is not None and _same(token, self.read_only_token):
            role, kind = "read-only", "read-only-token"
        else:
            logger.warning("console: failed login from %s", _client(scope))
            await self._login_page(scope, send, root, form.get("next", ""), "Wrong token.", 401)
            return
        sid, session = self.sessions.open(role, kind)
        logger.info("console: %s logged in from %s", session.user, _client(scope))
        target = form.get("next", "")
        if not (target.startswith(root + "/") and not target.startswith("//")):
            target = root + "/"
        headers = [
            (b"location", target.encode("latin-1", "replace")),
            (b"set-cookie", _cookie(scope, COOKIE, sid, root, None)),
            (b"set-cookie", _cookie(scope, LOGIN_COOKIE, "", root, 0)),
        ]
        await _reply(send, 303, "logged in\n", headers=headers)

    async def _login_page(
        self, scope: Scope, send: Send, root: str, target: str, message: str, status: int
    ) -> None:
        nonce = secrets.token_urlsafe(24)
        page = LOGIN_PAGE.format(
            message=f'<p class="error">{html.escape(message)}</p>' if message else "",
            action=html.escape(f"{root}/login"),
            nonce=nonce,
            next=html.escape(target),
        )
        await _reply(
            send,
            status,
            page,
            content_type="text/html; charset=utf-8",
            headers=[(b"set-cookie", _cookie(scope, LOGIN_COOKIE, nonce, root, 600))],
        )


def _form(scope: Scope, body: bytes) -> dict[str, str]:
    """The URL-encoded form fields (the first of each name); other bodies give none."""
    if not _header(scope, b"content-type").startswith("application/x-www-form-urlencoded"):
        return {}
    found: dict[str, str] = {}
    for key, value in parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True):
        found.setdefault(key, value)
    return found


def _client(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "?"


def _with_cookie(send: Send, cookie: Optional[bytes]) -> Send:
    if cookie is None:
        return send

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), (b"set-cookie", cookie)]}
        await send(message)

    return sending
