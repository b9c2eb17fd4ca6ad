"""Helpers for the console server tests: a logged-in httpx client, SSE readers, stopping a
``waypoint console`` process."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import threading
from typing import Any, Optional

import httpx


def login(base: str, token: str, *, follow: bool = False) -> httpx.Client:
    """A client holding a console session opened with ``token`` (asserts it worked)."""
    client = httpx.Client(base_url=base, timeout=30, follow_redirects=follow)
    page = client.get("/console/login")
    assert page.status_code == 200, page.text
    nonce = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert nonce is not None, page.text
    reply = client.post("/console/login", data={"csrf_token": nonce.group(1), "token": token})
    assert reply.status_code == 303, (reply.status_code, reply.text)
    return client


def session(client: httpx.Client) -> dict[str, Any]:
    reply = client.get("/console/session")
    assert reply.status_code == 200, (reply.status_code, reply.text)
    return dict(reply.json())


class SseReader(threading.Thread):
    """Reads ``/console/events`` on its own connection and keeps every event's data."""

    def __init__(self, base: str, cookies: Optional[httpx.Cookies] = None) -> None:
        super().__init__(daemon=True)
        self.base = base
        self.events: list[dict[str, Any]] = []
        self.connected = threading.Event()
        self.status: Optional[int] = None
        self.content_type = ""
        self.error: Optional[BaseException] = None
        self._client = httpx.Client(
            base_url=base, cookies=cookies, timeout=httpx.Timeout(30, read=120)
        )

    def run(self) -> None:
        try:
            with self._client.stream("GET", "/console/events") as reply:
                self.status = reply.status_code
                self.content_type = reply.headers.get("content-type", "")
                for line in reply.iter_lines():
                    if line.startswith(": connected"):
                        self.connected.set()
                    elif line.startswith("data: "):
                        self.events.append(json.loads(line[6:]))
        except BaseException as exc:  # closed by the test or the server
            self.error = exc
        finally:
            self.connected.set()

    def saw(self, workflow_id: str, status: str) -> bool:
        return any(
            e["workflow_id"] == workflow_id and e["status"] == status for e in list(self.events)
        )

    def close(self) -> None:
        self._client.close()


def interruptible() -> None:
    """``preexec_fn`` for a child the test will Ctrl-C: SIGINT back to its default. A shell
    that runs the suite in the background (``bash scripts/test.sh &``) ignores SIGINT, every
    process it starts inherits that, and a Python started with SIGINT ignored installs no
    KeyboardInterrupt handler: the child would never see the test's Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def stop_console(proc: subprocess.Popen[str]) -> str:
    """Interrupt a ``waypoint console`` process (killed if it does not stop); its output."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        rest = proc.stdout.read() if proc.stdout else ""
        if proc.stdout:
            proc.stdout.close()
    return rest
