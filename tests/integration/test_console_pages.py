"""The console's pages over HTTP on both backends (real uvicorn, real database): keyset
pages, bad input named, the read-only role, the token carried in every form, bulk fork and
delete, garbage collection, backfill, and a console over a client instead of the runtime."""

from __future__ import annotations

import base64
import datetime as dt
import pickle
import re
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx
import pytest

from tests.console_browser import serve_console
from tests.storage.build import workflow
from waypoint import DBOS, DBOSClient, Queue, SetWorkflowID
from waypoint._api.ops.observe import _pickled_type
from waypoint.storage.protocol import ExecutorRow


def define(dbos: type[DBOS]) -> Any:
    @DBOS.step()
    def flaky(n: int) -> int:
        if n < 0:
            raise ValueError("negative")
        return n

    @DBOS.workflow()
    def work(n: int) -> int:
        return flaky(n)

    @DBOS.workflow()
    def nightly(when: Any, context: Any) -> None:
        pass

    DBOS.launch()
    return work, nightly


def post_pairs(url: str, pairs: list[tuple[str, str]]) -> httpx.Response:
    """POST a form with repeated fields, as a browser sends ticked checkboxes."""
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    return httpx.post(url, content=urlencode(pairs), headers=headers)


def ids_on(page: str) -> list[str]:
    return re.findall(r'<tr data-id="([^"]+)"', page)


def test_keyset_pages_walk_the_list(dbos: type[DBOS], backend: str) -> None:
    work, _ = define(dbos)
    made = []
    for n in range(45):
        with SetWorkflowID(f"w-{n:02d}"):
            made.append(DBOS.start_workflow(work, n).workflow_id)
    for wfid in made:
        DBOS.retrieve_workflow(wfid).get_result()
    with serve_console() as url:
        seen: list[str] = []
        query = "limit=20&sort=asc"
        while True:
            page = httpx.get(f"{url}/workflows?{query}").text
            seen += ids_on(page)
            found = re.search(r'<a href="[^"]*/workflows\?([^"]+)" id="next">', page)
            if found is None:
                break
            query = found.group(1).replace("&amp;", "&")
        assert seen == made
        assert 'data-count="SUCCESS">45<' in page


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("status=DONE", "unknown status 'DONE'"),
        ("sort=sideways", "sort must be"),
        ("limit=7", "limit must be one of"),
        ("start=yesterday", "start must be a date"),
        ("attributes=[1]", "attributes must be a JSON object"),
        ("after_at=12", "after_at (epoch ms) and after_id go together"),
    ],
)
def test_bad_filters_are_named(dbos: type[DBOS], query: str, named: str) -> None:
    define(dbos)
    with serve_console() as url:
        reply = httpx.get(f"{url}/workflows?{query}")
        assert reply.status_code == 400
        assert named in reply.text.replace("&#39;", "'")


def test_read_only_sees_everything_and_changes_nothing(dbos: type[DBOS], backend: str) -> None:
    work, _ = define(dbos)
    wfid = DBOS.start_workflow(work, 1).workflow_id
    DBOS.retrieve_workflow(wfid).get_result()
    with serve_console(**{"waypoint.role": "read-only", "waypoint.csrf": "tok"}) as url:
        for path in ("/workflows", f"/workflow?id={wfid}", "/schedules", "/retention"):
            page = httpx.get(url + path).text
            assert "<button" not in page.replace('<button type="submit" id="apply">', ""), path
        assert "decode (runs code)" not in httpx.get(f"{url}/workflow?id={wfid}").text
        assert "py_pickle value" in httpx.get(f"{url}/workflow?id={wfid}&decode=1").text
        for path, form in (
            ("/workflow/action", {"id": wfid, "action": "fork", "start_step": "1"}),
            ("/workflows/bulk", {"id": wfid, "action": "delete", "confirmed": "yes"}),
            ("/retention/gc", {"keep_rows": "1"}),
        ):
            reply = httpx.post(url + path, data=form)
            assert reply.status_code == 403, path
            assert "read-only" in reply.text
    assert len(DBOS.list_workflows()) == 1


def test_every_form_carries_the_token(dbos: type[DBOS], backend: str) -> None:
    work, nightly = define(dbos)
    DBOS.create_schedule(schedule_name="s", schedule="* * * * *", workflow_fn=nightly)
    wfid = DBOS.start_workflow(work, 1).workflow_id
    DBOS.retrieve_workflow(wfid).get_result()
    with serve_console(**{"waypoint.csrf": "t<o>k"}) as url:
        for path in ("/workflows", f"/workflow?id={wfid}", "/schedules", "/retention"):
            page = httpx.get(url + path).text
            posts = page.count('method="post"')
            assert posts and page.count('name="csrf_token" value="t&lt;o&gt;k"') == posts, path
            assert 'data-csrf="t&lt;o&gt;k"' in page


def test_bulk_fork_from_failure_and_delete(dbos: type[DBOS], backend: str) -> None:
    work, _ = define(dbos)
    failed = []
    for n in (-1, -2):
        handle = DBOS.start_workflow(work, n)
        with pytest.raises(ValueError):
            handle.get_result()
        failed.append(handle.workflow_id)
    with serve_console() as url:
        form = [("action", "fork"), ("back", "/workflows?status=ERROR")]
        form += [("id", w) for w in failed]
        confirm = post_pairs(f"{url}/workflows/bulk", form)
        assert "Fork from failure 2 workflows?" in confirm.text
        reply = post_pairs(f"{url}/workflows/bulk", [*form, ("confirmed", "yes")])
        assert reply.status_code == 303
        assert reply.headers["location"].endswith("/workflows?status=ERROR&done=fork&n=2")
        forks = DBOS.list_workflows(forked_from=failed)
        assert len(forks) == 2
        for f in forks:  # re-ran the failed step (step 1), so they fail again
            with pytest.raises(ValueError):
                DBOS.retrieve_workflow(f.workflow_id).get_result()
        reply = post_pairs(
            f"{url}/workflows/bulk",
            [("action", "delete"), ("confirmed", "yes"), *[("id", w) for w in failed]],
        )
        assert reply.status_code == 303
        assert {w.workflow_id for w in DBOS.list_workflows()} == {f.workflow_id for f in forks}
        # A redirect target outside the workflows list is not followed.
        reply = post_pairs(
            f"{url}/workflows/bulk",
            [("action", "cancel"), ("confirmed", "yes"), ("id", "x"), ("back", "//evil")],
        )
        assert reply.headers["location"].startswith("/console/workflows?done=cancel")
        assert httpx.post(f"{url}/workflows/bulk", data={"action": "explode"}).status_code == 400
        assert (
            "select at least one"
            in httpx.post(f"{url}/workflows/bulk", data={"action": "cancel"}).text
        )


def test_garbage_collect_and_backfill(dbos: type[DBOS], backend: str) -> None:
    work, nightly = define(dbos)
    for n in range(3):
        DBOS.start_workflow(work, n).get_result()
    DBOS.create_schedule(schedule_name="hourly", schedule="0 * * * *", workflow_fn=nightly)
    with serve_console() as url:
        assert "give an age in days" in httpx.post(f"{url}/retention/gc", data={}).text
        assert (
            "must be a whole number"
            in httpx.post(f"{url}/retention/gc", data={"keep_rows": "x"}).text
        )
        reply = httpx.post(f"{url}/retention/gc", data={"keep_rows": "1"})
        assert reply.headers["location"].endswith("/retention?done=gc&n=2")
        assert len(DBOS.list_workflows()) == 1

        form = {"name": "hourly", "action": "backfill", "start": "2026-01-01T00:30"}
        reply = httpx.post(f"{url}/schedules/action", data={**form, "end": "2026-01-01T03:30"})
        assert reply.headers["location"].endswith("/schedules?done=backfill&n=3")
        bad = httpx.post(f"{url}/schedules/action", data={**form, "end": "2025-01-01T00:00"})
        assert "end must be after its start" in bad.text
        assert (
            "unknown schedule action"
            in httpx.post(
                f"{url}/schedules/action", data={"name": "hourly", "action": "explode"}
            ).text
        )


def test_a_console_over_a_client(dbos: type[DBOS], db_url: str, backend: str) -> None:
    work, _ = define(dbos)
    wfid = DBOS.start_workflow(work, 1).workflow_id
    DBOS.retrieve_workflow(wfid).get_result()
    client = DBOSClient(system_database_url=db_url)
    try:
        with serve_console(client.engine) as url:
            assert wfid in ids_on(httpx.get(f"{url}/workflows").text)
            executors = httpx.get(f"{url}/executors").text
            assert "go back on their queues" in executors
            assert "without an application process" in httpx.get(f"{url}/retention").text
            assert httpx.get(f"{url}/workflow?id=ghost").status_code == 404
    finally:
        client.destroy()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("text", "str"),
        (3, "int"),
        ({"a": 1}, "dict"),
        ((1, 2), "tuple"),
        (ValueError("x"), "builtins.ValueError"),
        (None, "NoneType"),
    ],
)
def test_a_pickles_type_is_read_without_running_it(value: Any, expected: str) -> None:
    text = base64.b64encode(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)).decode()
    assert _pickled_type(text) == expected


def test_a_pickle_that_would_run_code_is_only_named() -> None:
    class Boom:
        def __reduce__(self) -> Any:
            return (exec, ("raise SystemExit('ran')",))

    text = base64.b64encode(pickle.dumps(Boom())).decode()
    assert _pickled_type(text) == "builtins.exec"
    assert _pickled_type("%%%") == "unknown"


def test_recover_a_silent_executor_from_a_client_console(db_url: str, backend: str) -> None:
    client = DBOSClient(system_database_url=db_url)
    store = client.engine.store
    try:
        store.migrate()  # (no application launched here: the client never migrates)
        # An executor that reported once, every millisecond, then fell silent holding a
        # PENDING workflow.
        store.heartbeat(ExecutorRow("ghost", "inc-1", None, "v1", "h", 1, heartbeat_ms=1))
        assert store.init_workflow(workflow("held", executor_id="ghost"), None).created
        with serve_console(client.engine) as url:
            page = httpx.get(f"{url}/executors").text
            assert 'data-executor="ghost"' in page and "Requeue its PENDING workflows" in page
            reply = httpx.post(f"{url}/executors/recover", data={"executor_id": "ghost"})
            assert reply.headers["location"].endswith("/executors?done=recover&n=1")
        held = store.get_workflow("held")
        assert held is not None and held.status == "ENQUEUED"
    finally:
        client.destroy()


def test_each_filter_narrows_the_list(dbos: type[DBOS], backend: str) -> None:
    queue = Queue("lane")

    @DBOS.workflow()
    def kid(n: int) -> int:
        return n

    @DBOS.workflow()
    def parent() -> int:
        return DBOS.start_workflow(kid, 7).get_result()

    work, _ = define(dbos)
    with SetWorkflowID("plain"):
        work(1)
    with SetWorkflowID("queued"):
        queue.enqueue(work, 2).get_result()
    with SetWorkflowID("par"):
        parent()
    child = next(w.workflow_id for w in DBOS.list_workflows(parent_workflow_id="par"))
    DBOS.update_workflow_attributes("plain", {"tenant": "acme", "tier": 2})
    forked = DBOS.fork_workflow("plain", 1).workflow_id
    DBOS.retrieve_workflow(forked).get_result()
    created = {w.workflow_id: w.created_at for w in DBOS.list_workflows()}
    version = DBOS.list_workflows(workflow_ids=["plain"])[0].app_version

    def iso(ms: int) -> str:
        moment = dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc)
        return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")

    cases = {
        "queue_name=lane": {"queued"},
        "parent_workflow_id=par": {child},
        "forked_from=plain": {forked},
        "workflow_id_prefix=pl": {"plain"},
        "attributes=" + '{"tenant": "acme"}': {"plain", forked},  # a fork keeps them
        f"name={parent.__qualname__}": {"par"},
        f"app_version={version}&workflow_id_prefix=q": {"queued"},
        "executor_id=nobody": set(),
        f"start={iso(created['par'])}&end={iso(created['par'])}": {"par"},
    }
    with serve_console() as url:
        if backend == "sqlite":  # the store says it cannot, and the page says so
            del cases["attributes=" + '{"tenant": "acme"}']
            page = httpx.get(f"{url}/workflows?" + urlencode({"attributes": '{"a": 1}'}))
            assert page.status_code == 400 and "not supported on SQLite" in page.text
        for query, expected in cases.items():
            page = httpx.get(f"{url}/workflows?" + urlencode(parse_qsl(query)))
            assert page.status_code == 200, (query, re.findall(r'id="error">(.*)<', page.text))
            assert set(ids_on(page.text)) == expected, query


def test_a_step_whose_retries_ran_out_says_so(dbos: type[DBOS], backend: str) -> None:
    @DBOS.step(retries_allowed=True, max_attempts=2, interval_seconds=0.01)
    def always_fails() -> None:
        raise RuntimeError("no")

    @DBOS.workflow()
    def tries() -> None:
        always_fails()

    define(dbos)
    handle = DBOS.start_workflow(tries)
    with pytest.raises(Exception, match="max"):
        handle.get_result()
    with serve_console() as url:
        page = httpx.get(f"{url}/workflow", params={"id": handle.workflow_id}).text
        assert "always_fails (retries exhausted)" in page


def test_a_console_that_refuses_pickle_never_decodes(
    dbos: type[DBOS], db_url: str, backend: str
) -> None:
    work, _ = define(dbos)
    wfid = DBOS.start_workflow(work, 1).workflow_id
    DBOS.retrieve_workflow(wfid).get_result()
    client = DBOSClient(system_database_url=db_url, refuse_pickle=True)
    try:
        with serve_console(client.engine) as url:
            for query in ({"id": wfid}, {"id": wfid, "decode": "1"}):
                page = httpx.get(f"{url}/workflow", params=query).text
                assert "py_pickle value of type <code>int</code>" in page
                assert "refuses to unpickle" in page and "decode (runs code)" not in page
    finally:
        client.destroy()
