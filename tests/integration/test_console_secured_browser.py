"""The console as the admin server serves it, in headless Chromium: log in with the token,
act with the session's CSRF token, fail a forged POST without it, and watch a status change
arrive over the server-sent events stream (not polling); and the same pages under the
standalone ``waypoint console`` command, with no application process."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.console_browser import browser_missing, eventually, start_browser
from tests.console_http import stop_console
from waypoint import DBOS, DBOSClient, SetWorkflowID

pytestmark = [
    pytest.mark.skipif(bool(browser_missing()), reason=browser_missing() or "browser ready"),
    pytest.mark.xdist_group("console-browser"),
]
TOKEN = "console-t0ken"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    driver = start_browser()
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def secured(config: dict[str, Any]) -> Iterator[None]:
    """DBOS with the admin server (and so the console) on a free port, behind a token."""
    DBOS.destroy(destroy_registry=True)
    settings = {**config, "run_admin_server": True, "admin_port": 0, "admin_token": TOKEN}
    DBOS(config=settings)  # type: ignore[arg-type]
    yield
    DBOS.destroy(destroy_registry=True)


def launch_waiter() -> tuple[str, str]:
    """Launch, start a workflow that waits for a message; the console's URL and its ID."""
    from waypoint.core.runtime import get_runtime

    @DBOS.workflow()
    def waiter() -> str:
        return str(DBOS.recv("go", timeout_seconds=600))

    DBOS.launch()
    port = int(get_runtime().service("admin").port)
    wfid = DBOS.start_workflow(waiter).workflow_id
    eventually(lambda: DBOS.get_workflow_status(wfid).status == "PENDING", "the PENDING run")  # type: ignore[union-attr]
    return f"http://127.0.0.1:{port}/console", wfid


def by(browser: Any, css: str) -> Any:
    from selenium.webdriver.common.by import By

    return browser.find_element(By.CSS_SELECTOR, css)


def forged_post(browser: Any, url: str, fields: dict[str, str]) -> int:
    """POST a form from the page's own origin with the session cookie, as a script would."""
    return int(
        browser.execute_async_script(
            """const [url, fields, done] = arguments;
            fetch(url, {method: "POST", body: new URLSearchParams(fields),
                        credentials: "same-origin", redirect: "manual"})
              .then(r => done(r.status), () => done(-1));""",
            url,
            fields,
        )
    )


def test_log_in_act_and_a_forged_post_fails(secured: None, browser: Any, backend: str) -> None:
    url, wfid = launch_waiter()
    browser.delete_all_cookies()
    browser.get(f"{url}/workflows")
    eventually(lambda: "/console/login" in browser.current_url, "the login page")
    by(browser, "#token").send_keys("wrong")
    by(browser, "button[type=submit]").click()
    eventually(lambda: "Wrong token" in by(browser, "body").text, "the refusal")
    by(browser, "#token").send_keys(TOKEN)
    by(browser, "button[type=submit]").click()
    eventually(lambda: by(browser, "h1").text == "Workflows", "the workflows page")
    assert wfid in by(browser, "#workflows").text

    # Without the session's CSRF token a POST is refused and nothing changes.
    action = f"{url}/workflow/action"
    assert forged_post(browser, action, {"id": wfid, "action": "cancel"}) == 403
    assert DBOS.get_workflow_status(wfid).status == "PENDING"  # type: ignore[union-attr]
    wrong = {"id": wfid, "action": "cancel", "csrf_token": "guessed"}
    assert forged_post(browser, action, wrong) == 403
    assert DBOS.get_workflow_status(wfid).status == "PENDING"  # type: ignore[union-attr]

    # The page's own form carries the token, and the action goes through.
    browser.get(f"{url}/workflow?id={wfid}")
    by(browser, "#cancel").click()
    eventually(lambda: by(browser, "#status").text == "CANCELLED", "the cancelled status")
    assert DBOS.get_workflow_status(wfid).status == "CANCELLED"  # type: ignore[union-attr]


def test_a_status_change_arrives_over_the_event_stream(
    secured: None, browser: Any, backend: str
) -> None:
    url, wfid = launch_waiter()
    browser.delete_all_cookies()
    browser.get(f"{url}/login")
    by(browser, "#token").send_keys(TOKEN)
    by(browser, "button[type=submit]").click()
    eventually(lambda: by(browser, "h1").text == "Workflows", "the workflows page")
    eventually(
        lambda: browser.execute_script("return document.body.dataset.live") == "events",
        "the event stream to open",
    )
    cell = f'tr[data-id="{wfid}"] [data-status]'
    browser.execute_script("window.__sameDocument = true;")
    DBOS.send(wfid, "now", "go")
    eventually(lambda: by(browser, cell).text == "SUCCESS", "the row to turn SUCCESS")
    assert browser.execute_script("return window.__sameDocument === true;")
    assert browser.execute_script("return document.body.dataset.live") == "events"


def test_the_pages_under_the_standalone_command(db_url: str, browser: Any, backend: str) -> None:
    from tests.integration.test_console_server import start_console

    # An application made the database, left one workflow finished and one waiting, and left.
    DBOS.destroy(destroy_registry=True)
    DBOS(config={"name": "waypoint-test", "system_database_url": db_url})  # type: ignore[arg-type]

    @DBOS.step()
    def double(x: int) -> int:
        return 2 * x

    @DBOS.workflow()
    def made(x: int) -> int:
        return double(x)

    @DBOS.workflow()
    def stuck() -> None:
        DBOS.recv("never", timeout_seconds=600)

    DBOS.launch()
    with SetWorkflowID("standalone-1"):
        made(1)
    with SetWorkflowID("standalone-stuck"):
        DBOS.start_workflow(stuck)
    eventually(
        lambda: DBOS.get_workflow_status("standalone-stuck").status == "PENDING",  # type: ignore[union-attr]
        "the waiting run",
    )
    DBOS.destroy(destroy_registry=True)

    proc, base = start_console(db_url)
    try:
        browser.delete_all_cookies()
        browser.get(f"{base}/console/workflows")
        eventually(lambda: "standalone-1" in by(browser, "#workflows").text, "the list")
        browser.get(f"{base}/console/workflow?id=standalone-1")
        eventually(lambda: "double" in by(browser, "#timeline").text, "the timeline")
        browser.get(f"{base}/console/workflow?id=standalone-stuck")
        by(browser, "#cancel").click()
        eventually(lambda: by(browser, "#status").text == "CANCELLED", "the cancellation")
        browser.get(f"{base}/console/executors")
        assert "go back on their queues" in by(browser, "main").text
    finally:
        stop_console(proc)
    client = DBOSClient(system_database_url=db_url)
    try:
        assert client.get_workflow_status("standalone-stuck").status == "CANCELLED"  # type: ignore[union-attr]
    finally:
        client.destroy()
