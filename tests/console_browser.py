"""Headless Chromium for the console's browser tests: the system's browser (Debian's
``chromium`` and ``chromium-driver``, which scripts/test.sh installs) driven by Selenium,
pointed at both binaries so nothing downloads a browser. Tests skip when either is missing.

Screenshots go to ``WAYPOINT_CONSOLE_SCREENSHOTS`` when set (the docs' images are refreshed
with ``WAYPOINT_CONSOLE_SCREENSHOTS=docs/images/console``), else to the session's artifacts
directory under pytest's temporary root.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from tests.web_servers import serve_asgi
from waypoint.console import build_console

CHROMIUM = os.environ.get("WAYPOINT_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("WAYPOINT_CHROMEDRIVER", "/usr/bin/chromedriver")
T = TypeVar("T")


def browser_missing() -> str:
    """Why the browser tests cannot run here ("" when they can)."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            return f"{path} is not installed (apt-get install chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (the dev extra has it)"
    return ""


def start_browser() -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",  # tests run as root in containers
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1400,1000",
        "--disable-extensions",
        "--no-first-run",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    return driver


def eventually(check: Callable[[], T], what: str, timeout: float = 60.0) -> T:
    """Poll ``check`` until it returns something truthy (a guard against hanging, not a
    timed assertion: the limit is generous for a loaded machine)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            found = check()
            if found:
                return found
        except Exception as exc:  # the page may be between loads
            last = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what} (last error: {last!r})")
        time.sleep(0.2)


def shots_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = os.environ.get("WAYPOINT_CONSOLE_SCREENSHOTS")
    path = Path(target) if target else tmp_path_factory.getbasetemp() / "console-screenshots"
    path.mkdir(parents=True, exist_ok=True)
    return path


class ScopeValues:
    """ASGI middleware standing in for the mounting server: puts a role and a CSRF token in
    the scope, as the server that owns authentication does."""

    def __init__(self, app: Any, values: dict[str, str]) -> None:
        self.app = app
        self.values = values

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            scope = {**scope, **self.values}
        await self.app(scope, receive, send)


@contextlib.contextmanager
def serve_console(ops: Any = None, **scope: str) -> Iterator[str]:
    """Serve the console at ``/console`` on a real uvicorn; yields the console's URL."""
    app = Starlette(routes=[Mount("/console", build_console(ops))])
    with serve_asgi(ScopeValues(app, scope) if scope else app) as url:
        yield f"{url}/console"
