"""The console through the real admin server in headless Chromium: log in with the token,
get live updates over the event stream, and fail forged POSTs (cross-site and same-site
without the CSRF token); a read-only login sees and cannot act."""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.admin_http import destroy_quickly
from tests.conftest import BACKENDS
from tests.console_browser import browser_missing, eventually, shots_dir, start_browser
from waypoint import DBOS
from waypoint.core.runtime import get_runtime

ADMIN = "browser-admin-t0ken"
READER = "browser-reader-t0ken"

pytestmark = [
    pytest.mark.skipif(bool(browser_missing()), reason=browser_missing() or "browser ready"),
    pytest.mark.xdist_group("console-browser"),
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    driver = start_browser()
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def dbos(db_url: str) -> Iterator[type[DBOS]]:
    DBOS.destroy(destroy_registry=True)
    DBOS(
        config={  # type: ignore[arg-type]
            "name": "waypoint-test",
            "system_database_url": db_url,
            "run_admin_server": True,
            "admin_port": 0,
            "admin_token": ADMIN,
            "admin_read_only_token": READER,
        }
    )
    yield DBOS
    destroy_quickly()


def by(browser: Any, css: str) -> Any:
    from selenium.webdriver.common.by import By

    return browser.find_element(By.CSS_SELECTOR, css)


def text(browser: Any, css: str) -> str:
    return str(by(browser, css).text)


def log_in(browser: Any, base: str, token: str, page: str, shot: Path | None = None) -> None:
    browser.delete_all_cookies()
    browser.get(f"{base}{page}")
    eventually(lambda: "/console/login" in browser.current_url, "the login page")
    if shot is not None:
        browser.save_screenshot(str(shot))
    by(browser, "#token").send_keys(token)
    by(browser, "button[type=submit]").click()
    eventually(lambda: browser.current_url.endswith(page), f"{page} after logging in")


def status_of(wfid: str) -> str:
    found = DBOS.get_workflow_status(wfid)
    assert found is not None
    return found.status


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shots_dir(tmp_path_factory)


@pytest.mark.timeout(600)  # a browser on a loaded machine; every wait inside is bounded
@pytest.mark.parametrize("backend", BACKENDS)
def test_login_live_events_and_forged_posts(
    dbos: type[DBOS], browser: Any, shots: Path, backend: str
) -> None:
    @DBOS.workflow()
    def waiter() -> str:
        return f"got {DBOS.recv('go', timeout_seconds=600)}"

    DBOS.launch()
    base = f"http://127.0.0.1:{get_runtime().service('admin').port}"
    wfid = DBOS.start_workflow(waiter).workflow_id
    eventually(lambda: status_of(wfid) == "PENDING", "the PENDING workflow")

    log_in(browser, base, ADMIN, "/console/workflows", shots / "login.png")
    cookie = next(c for c in browser.get_cookies() if c["name"] == "waypoint_console")
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"
    assert browser.execute_script("return document.cookie;") == ""  # HttpOnly: not readable

    # Live: the page takes the event stream, and the row turns SUCCESS without a reload.
    cell = f'tr[data-id="{wfid}"] [data-status]'
    eventually(lambda: text(browser, cell) == "PENDING", "the PENDING row")
    eventually(
        lambda: browser.execute_script("return document.body.dataset.live;") == "events",
        "the page to use the event stream",
    )
    browser.execute_script("window.__sameDocument = true;")

    # A same-site script without the CSRF token is refused...
    forged = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "fetch('/console/workflow/action', {method: 'POST', credentials: 'same-origin',"
        " headers: {'Content-Type': 'application/x-www-form-urlencoded'},"
        f" body: 'action=cancel&id={wfid}'}}).then(r => done(r.status));"
    )
    assert forged == 403
    # ...and so is another site's auto-submitting form (the SameSite=Strict cookie stays home).
    attack = (
        f'<form method="post" action="{base}/console/workflow/action">'
        f'<input name="id" value="{wfid}"><input name="action" value="cancel"></form>'
        "<script>document.forms[0].submit()</script>"
    )
    browser.get("data:text/html," + urllib.parse.quote(attack))
    eventually(lambda: "log in" in browser.page_source.lower(), "the refused forged form")
    assert status_of(wfid) == "PENDING"

    browser.get(f"{base}/console/workflows")
    eventually(lambda: text(browser, cell) == "PENDING", "the PENDING row again")
    eventually(
        lambda: browser.execute_script("return document.body.dataset.live;") == "events",
        "the event stream again",
    )
    browser.execute_script("window.__sameDocument = true;")
    DBOS.send(wfid, "now", "go")
    eventually(lambda: text(browser, cell) == "SUCCESS", "the row to turn SUCCESS live")
    assert browser.execute_script("return window.__sameDocument === true;")

    # A read-only login sees the list and its actions are refused even with its token.
    log_in(browser, base, READER, "/console/workflows")
    eventually(lambda: text(browser, cell) == "SUCCESS", "the row for the read-only login")
    refused = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "fetch('/console/session').then(r => r.json()).then(s =>"
        " fetch('/console/workflow/action', {method: 'POST', credentials: 'same-origin',"
        "  headers: {'Content-Type': 'application/x-www-form-urlencoded',"
        "            'X-CSRF-Token': s.csrf_token},"
        f"  body: 'action=resume&id={wfid}'}})).then(r => done(r.status));"
    )
    assert refused == 403
