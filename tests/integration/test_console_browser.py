"""The console's pages driven in headless Chromium on both backends, served by a real
uvicorn over a launched application: filter the list, open a workflow and read its timeline,
fork from a step and watch the new run finish, cancel and resume, bulk actions with their
confirmation, live updates without a reload, and ``<script>`` payloads that never run.
Each page is saved as a screenshot (see tests/console_browser.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.console_browser import (
    browser_missing,
    eventually,
    serve_console,
    shots_dir,
    start_browser,
)
from waypoint import DBOS, Queue, SetEnqueueOptions, SetWorkflowID
from waypoint.core.types import WorkflowSerializationFormat

pytestmark = [
    pytest.mark.skipif(bool(browser_missing()), reason=browser_missing() or "browser ready"),
    pytest.mark.xdist_group("console-browser"),  # one Chromium per worker is plenty
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    driver = start_browser()
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shots_dir(tmp_path_factory)


def define(dbos: type[DBOS]) -> SimpleNamespace:
    """An application with the kinds of thing the console shows, launched."""
    queue = Queue("orders", concurrency=4)
    tenants = Queue("tenants", partition_concurrency=1)

    @DBOS.step()
    def reserve(n: int) -> int:
        return n * 10

    @DBOS.step()
    def charge(n: int) -> str:
        return f"charged {n}"

    @DBOS.workflow()
    def ship(n: int) -> str:
        DBOS.write_stream("progress", {"shipped": n})
        return f"shipped {n}"

    @DBOS.workflow()
    def order(n: int) -> str:
        reserve(n)
        DBOS.sleep(0.05)
        DBOS.set_event("stage", "charged")
        charge(n)
        child = DBOS.start_workflow(ship, n)
        return child.get_result()

    @DBOS.workflow()
    def waiter() -> str:
        got = DBOS.recv("go", timeout_seconds=600)
        return f"got {got}"

    @DBOS.workflow()
    def nightly(when: Any, context: Any) -> None:
        pass

    DBOS.launch()
    return SimpleNamespace(
        queue=queue, tenants=tenants, order=order, waiter=waiter, ship=ship, nightly=nightly
    )


def status_of(wfid: str) -> str:
    found = DBOS.get_workflow_status(wfid)
    assert found is not None
    return found.status


def wait_status(wfid: str, *statuses: str) -> None:
    eventually(lambda: status_of(wfid) in statuses, f"{wfid} to be {statuses}")


def text(browser: Any, css: str) -> str:
    from selenium.webdriver.common.by import By

    return str(browser.find_element(By.CSS_SELECTOR, css).text)


def by(browser: Any, css: str) -> Any:
    from selenium.webdriver.common.by import By

    return browser.find_element(By.CSS_SELECTOR, css)


def all_of(browser: Any, css: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return list(browser.find_elements(By.CSS_SELECTOR, css))


def opened_id(browser: Any, marker: str) -> str:
    """The workflow ID in the address of a page reached by an action ("" before it)."""
    url = str(browser.current_url)
    return parse_qs(urlsplit(url).query).get("id", [""])[0] if marker in url else ""


def listed_ids(browser: Any) -> list[str]:
    return [a.text for a in all_of(browser, "#workflows a.wfid")]


def loaded(browser: Any, css: str) -> Any:
    return eventually(lambda: all_of(browser, css), f"{css} on the page")


def test_filter_open_timeline_fork_and_see_it_finish(
    dbos: type[DBOS], browser: Any, shots: Path, backend: str
) -> None:
    app = define(dbos)
    ids = []
    for n in range(3):
        with SetWorkflowID(f"order-{n}"):
            ids.append(app.queue.enqueue(app.order, n).workflow_id)
    for wfid in ids:
        DBOS.retrieve_workflow(wfid).get_result()
    blocked = DBOS.start_workflow(app.waiter).workflow_id

    with serve_console() as url:
        browser.get(f"{url}/workflows")
        loaded(browser, "#workflows a.wfid")
        everything = listed_ids(browser)
        assert {"order-0", "order-1", "order-2", blocked} <= set(everything)
        assert everything.index("order-2") < everything.index("order-0")  # newest first
        assert text(browser, '[data-count="PENDING"]') == "1"
        browser.save_screenshot(str(shots / "workflows.png"))

        # Filter by name and status.
        by(browser, 'input[name="name"]').send_keys(app.order.__qualname__)
        by(browser, 'input[name="status"][value="SUCCESS"]').click()
        by(browser, "#apply").click()
        eventually(lambda: "name=" in browser.current_url, "the filtered list")
        assert sorted(listed_ids(browser)) == ["order-0", "order-1", "order-2"]

        # Oldest first.
        by(browser, "#sort").click()
        eventually(lambda: "sort=asc" in browser.current_url, "the sorted list")
        assert listed_ids(browser) == [*ids, *[i for i in listed_ids(browser) if i not in ids]]

        # Open one: its timeline shows every step, the child nested and linked.
        by(browser, 'a.wfid[href$="order-1"]').click()
        loaded(browser, "#timeline")
        assert text(browser, "#wfid") == "order-1"
        assert text(browser, "#status") == "SUCCESS"
        labels = [e.text for e in all_of(browser, "#timeline .bar-label")]

        def at(part: str) -> int:
            return next(i for i, label in enumerate(labels) if part in label)

        assert at("reserve") < at("DBOS.sleep") < at("DBOS.setEvent") < at("charge")
        child_links = all_of(browser, "#timeline .depth-1 a")
        assert child_links and app.ship.__qualname__ in child_links[0].text
        assert len(all_of(browser, "#timeline .bar.k-sleep")) == 1
        assert "stage py_pickle value of type str" in text(browser, "#events")
        browser.save_screenshot(str(shots / "workflow.png"))

        # Fork from the "charge" step onto the latest version; the new run's page opens and
        # updates itself until the run finishes.
        charge_step = next(
            o.get_attribute("value")
            for o in all_of(browser, "#start-step option")
            if "charge" in o.text
        )
        by(browser, f'#start-step option[value="{charge_step}"]').click()
        by(browser, "#fork-version option:nth-child(2)").click()
        by(browser, "#fork").click()
        # (read from the address: the page reloads itself as the new run moves on)
        forked = eventually(lambda: opened_id(browser, "done=fork"), "the forked workflow's page")
        assert forked != "order-1"
        eventually(lambda: text(browser, "#status") == "SUCCESS", "the fork to finish on the page")
        eventually(lambda: "order-1" in text(browser, "#lineage"), "the lineage")
        assert DBOS.retrieve_workflow(forked).get_result() == "shipped 1"
        steps = DBOS.list_workflow_steps(forked)
        assert steps[0]["output"] == 10  # copied from before the fork point

        DBOS.send(blocked, "go", "go")
        wait_status(blocked, "SUCCESS")


def one_waiting(dbos: type[DBOS]) -> str:
    """Launch the application and start one workflow that waits for a message."""
    app = define(dbos)
    wfid: str = DBOS.start_workflow(app.waiter).workflow_id
    wait_status(wfid, "PENDING")
    return wfid


def test_cancel_and_resume_from_the_workflow_page(
    dbos: type[DBOS], browser: Any, backend: str
) -> None:
    wfid = one_waiting(dbos)
    with serve_console() as url:
        browser.get(f"{url}/workflow?id={wfid}")
        loaded(browser, "#cancel")[0].click()
        eventually(lambda: text(browser, "#status") == "CANCELLED", "the cancelled status")
        assert "Cancelled" in text(browser, "#notice")
        assert status_of(wfid) == "CANCELLED"
        assert not all_of(browser, "#cancel")

        by(browser, "#resume").click()
        eventually(lambda: "done=resume" in browser.current_url, "the resumed page")
        wait_status(wfid, "PENDING", "ENQUEUED")
        DBOS.send(wfid, "again", "go")
        # The page follows the run by itself (live updates reload it when the status moves).
        eventually(lambda: text(browser, "#status") == "SUCCESS", "the resumed run to finish")
        assert DBOS.retrieve_workflow(wfid).get_result() == "got again"


def test_bulk_cancel_says_how_many_then_acts(dbos: type[DBOS], browser: Any, backend: str) -> None:
    app = define(dbos)
    waiting = [DBOS.start_workflow(app.waiter).workflow_id for _ in range(3)]
    other = DBOS.start_workflow(app.waiter).workflow_id
    for wfid in [*waiting, other]:
        wait_status(wfid, "PENDING")
    with serve_console() as url:
        browser.get(f"{url}/workflows?status=PENDING")
        loaded(browser, "input.pick")
        for wfid in waiting:
            by(browser, f'tr[data-id="{wfid}"] input.pick').click()
        assert text(browser, "#selected") == "3 selected"
        cancel = by(browser, 'button.bulk-action[value="cancel"]')
        assert cancel.text == "Cancel (3)"
        cancel.click()
        eventually(lambda: "Cancel 3 workflows?" in text(browser, "h1"), "the confirmation")
        assert sorted(e.text for e in all_of(browser, "ul.ids code")) == sorted(waiting)
        assert all(status_of(w) == "PENDING" for w in waiting)  # nothing happened yet
        by(browser, "#confirm").click()
        eventually(lambda: "Cancelled 3 workflow(s)." in text(browser, "#notice"), "the notice")
        assert "status=PENDING" in browser.current_url  # back to the same filtered list
        assert [status_of(w) for w in waiting] == ["CANCELLED"] * 3
        assert status_of(other) == "PENDING"
        DBOS.send(other, "x", "go")
        wait_status(other, "SUCCESS")


def test_the_list_updates_live_without_a_reload(
    dbos: type[DBOS], browser: Any, backend: str
) -> None:
    wfid = one_waiting(dbos)
    with serve_console() as url:
        browser.get(f"{url}/workflows")
        cell = f'tr[data-id="{wfid}"] [data-status]'
        eventually(lambda: text(browser, cell) == "PENDING", "the PENDING row")
        browser.execute_script("window.__sameDocument = true;")
        before = text(browser, '[data-count="SUCCESS"]')
        DBOS.send(wfid, "now", "go")
        eventually(lambda: text(browser, cell) == "SUCCESS", "the row to turn SUCCESS")
        assert browser.execute_script("return window.__sameDocument === true;")
        eventually(
            lambda: text(browser, '[data-count="SUCCESS"]') == str(int(before) + 1),
            "the SUCCESS count to go up",
        )


XSS = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">'


def test_script_payloads_render_as_text_and_never_run(
    dbos: type[DBOS], browser: Any, backend: str
) -> None:
    @DBOS.workflow(name=f"name{XSS}", serialization_type=WorkflowSerializationFormat.PORTABLE)
    def hostile(arg: str) -> None:
        DBOS.set_event(f"key{XSS}", f"value{XSS}")
        DBOS.write_stream(f"stream{XSS}", f"chunk{XSS}")
        raise ValueError(f"error{XSS}")

    @DBOS.workflow(name=f"pickled{XSS}")
    def hostile_pickled(arg: str) -> None:
        raise ValueError(f"error{XSS}")

    DBOS.launch()
    wfid = f"id{XSS}"
    with SetWorkflowID(wfid):
        handle = DBOS.start_workflow(hostile, f"input{XSS}")
    with pytest.raises(Exception):
        handle.get_result()
    DBOS.update_workflow_attributes(wfid, {f"attr{XSS}": f"val{XSS}"})
    with SetWorkflowID(f"p{XSS}"):
        pickled = DBOS.start_workflow(hostile_pickled, "x")
    with pytest.raises(ValueError):
        pickled.get_result()

    def clean() -> None:
        assert browser.execute_script("return window.__pwned === undefined;")
        assert len(all_of(browser, "script")) == 1  # console.js only
        assert not all_of(browser, "main img")

    with serve_console() as url:
        browser.get(f"{url}/workflows")
        loaded(browser, "#workflows a.wfid")
        assert wfid in listed_ids(browser)
        assert f"name{XSS}" in text(browser, "#workflows")
        clean()
        next(a for a in all_of(browser, "a.wfid") if a.text == wfid).click()
        loaded(browser, "#timeline")
        page = text(browser, "main")
        head = XSS.split('"')[0]  # JSON values show the payload's quotes escaped
        for shown in (
            wfid,
            f"key{XSS}",
            *(f"{w}{head}" for w in ("input", "value", "chunk", "error")),
        ):
            assert shown in page, shown
        assert f"attr{head}" in text(browser, "#attributes")
        clean()
        # A pickled value, decoded on request, is shown as text too.
        browser.get(f"{url}/workflows?workflow_id_prefix=p")
        by(browser, "a.wfid").click()
        loaded(browser, "#wferror")
        assert "py_pickle value of type" in text(browser, "#wferror")
        by(browser, "#wferror a.decode").click()
        eventually(lambda: f"error{XSS}" in text(browser, "#wferror"), "the decoded error")
        clean()


def test_every_page_renders(dbos: type[DBOS], browser: Any, shots: Path, backend: str) -> None:
    app = define(dbos)
    DBOS.register_queue("billing", concurrency=2, limiter={"limit": 10, "period": 60})
    DBOS.create_schedule(
        schedule_name="nightly-report", schedule="0 3 * * *", workflow_fn=app.nightly
    )
    for n in range(4):
        app.queue.enqueue(app.order, n).get_result()
    blocked = [app.queue.enqueue(app.waiter).workflow_id for _ in range(2)]
    with SetEnqueueOptions(queue_partition_key="acme"):  # one runs, one waits its turn
        parted = [app.tenants.enqueue(app.waiter).workflow_id for _ in range(2)]
    for wfid in blocked:
        wait_status(wfid, "PENDING")
    # Which of the two runs first is the queue's order: on PostgreSQL two enqueued within one
    # millisecond are in any order (tests/storage/test_claims.py has the ties).
    eventually(lambda: "PENDING" in map(status_of, parted), "one of acme's two to run")
    with serve_console() as url:
        browser.get(f"{url}/queues")
        loaded(browser, '#queues tr[data-queue="orders"]')
        acme = [td.text for td in all_of(browser, '#queues tr[data-queue="tenants"] td')]
        assert acme[:4] == ["tenants", "acme", "1", "1"]  # queue, partition, depth, in flight
        assert "declared in code" in text(browser, '#queues tr[data-queue="orders"]')
        assert text(browser, '#queues tr[data-queue="orders"] td:nth-child(4)') == "2"
        assert "concurrency 2" in text(browser, '#queues tr[data-queue="billing"]')
        # The four orders finished within the last minutes: the throughput column counts them.
        assert text(browser, '#queues tr[data-queue="orders"] td:nth-child(6)') == "4"
        browser.save_screenshot(str(shots / "queues.png"))

        browser.get(f"{url}/executors")
        loaded(browser, "#executors tr[data-executor]")
        assert "this process" in text(browser, "#executors")
        assert "latest" in text(browser, "#versions")
        browser.save_screenshot(str(shots / "executors.png"))

        browser.get(f"{url}/schedules")
        loaded(browser, '#schedules tr[data-schedule="nightly-report"]')
        row = text(browser, '#schedules tr[data-schedule="nightly-report"]')
        assert "03:00:00" in row and "ACTIVE" in row
        by(browser, '#schedules button[value="pause"]').click()
        eventually(lambda: "PAUSED" in text(browser, "#schedules"), "the paused schedule")
        browser.save_screenshot(str(shots / "schedules.png"))
        by(browser, '#schedules button[value="unpause"]').click()
        eventually(lambda: "ACTIVE" in text(browser, "#schedules"), "the resumed schedule")
        by(browser, '#schedules button[value="trigger"]').click()
        eventually(lambda: "Triggered" in text(browser, "#notice"), "the trigger notice")
        eventually(lambda: DBOS.list_workflows(schedule_name="nightly-report"), "the triggered run")

        browser.get(f"{url}/retention")
        loaded(browser, "#ages")
        assert "SUCCESS" in text(browser, "#ages")
        browser.save_screenshot(str(shots / "retention.png"))

        for wfid in [*blocked, *parted]:
            DBOS.send(wfid, "done", "go")
            wait_status(wfid, "SUCCESS")
