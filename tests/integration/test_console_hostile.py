"""Hostile values at the console's doors (both backends, real uvicorn, real database):
Hypothesis feeds every page's URL parameters and every form's fields huge strings, NUL,
unpaired surrogates, Unicode digits, SQL wildcards and quotes, markup and huge numbers. Each
request gets a page (200, a redirect after an action, or 400/404 naming what is wrong), never
a server error, and a request that was refused leaves every stored row as it was."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import quote, urlencode

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.admin_http import checksum
from tests.console_browser import serve_console
from tests.integration.test_hostile_input import SETTINGS  # the same budget as every door
from waypoint import DBOS, SetWorkflowID
from waypoint.console.views import TEXT_FILTERS

HOSTILE = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.sampled_from(["%", "_", "\\", "'", '"', "<", ">", "&", ";", "\x00"])),
    st.sampled_from(
        ["²", "٣", "-1", "0", "9" * 30, "1e9", " 20 ", "\ud800", "x" * 5000, "[]", "{}"]
    ),
    st.integers().map(str),
)
LIST_KEYS = [*TEXT_FILTERS, "status", "start", "end", "attributes", "sort", "limit",
             "after_at", "after_id"]  # fmt: skip


@pytest.fixture
def console(dbos: type[DBOS]) -> Iterator[str]:
    @DBOS.workflow()
    def work(n: int) -> int:
        return n

    DBOS.launch()
    for n in range(3):
        with SetWorkflowID(f"hostile-{n}"):
            work(n)
    with serve_console(**{"waypoint.csrf": "tok"}) as url:
        yield url


def query(pairs: list[tuple[str, str]]) -> str:
    # Lone surrogates cannot be UTF-8: send them as a browser would (percent-encoded bytes).
    return urlencode([(k, v.encode("utf-8", "surrogatepass")) for k, v in pairs])


def answered(reply: httpx.Response) -> None:
    assert reply.status_code in (200, 303, 400, 404), (reply.status_code, reply.text[:300])
    if reply.status_code == 400:
        assert reply.text.strip()


def test_list_and_page_parameters(console: str) -> None:
    @SETTINGS
    @given(params=st.lists(st.tuples(st.sampled_from(LIST_KEYS), HOSTILE), max_size=4))
    def prop(params: list[tuple[str, str]]) -> None:
        answered(httpx.get(f"{console}/workflows?{query(params)}", timeout=60))

    prop()


def test_pages_by_id(console: str) -> None:
    @SETTINGS
    @given(
        path=st.sampled_from(["/workflow", "/live", "/queues", "/executors", "/schedules", "/"]),
        value=HOSTILE,
        key=st.sampled_from(["id", "decode", "done", "n"]),
    )
    def prop(path: str, value: str, key: str) -> None:
        answered(httpx.get(f"{console}{path}?{query([(key, value)])}", timeout=60))

    prop()


def test_forms_refused_or_done_without_touching_other_rows(console: str) -> None:
    before = checksum()

    @SETTINGS
    @given(
        form=st.sampled_from(
            [
                ("/workflow/action", "id", {"action": "cancel"}),
                ("/workflow/action", "id", {"action": "resume"}),
                ("/workflow/action", "start_step", {"action": "fork", "id": "hostile-0"}),
                ("/workflow/action", "action", {"id": "hostile-0"}),
                ("/workflows/bulk", "id", {"action": "cancel", "confirmed": "yes"}),
                ("/workflows/bulk", "action", {"id": "hostile-1"}),
                ("/executors/recover", "executor_id", {}),
                ("/schedules/action", "name", {"action": "pause"}),
                ("/retention/gc", "older_than_days", {}),
                ("/retention/gc", "keep_rows", {}),
            ]
        ),
        value=HOSTILE,
    )
    def prop(form: tuple[str, str, dict[str, str]], value: str) -> None:
        path, field, rest = form
        if field == "keep_rows" and value.strip().isdecimal():
            return  # a real number of rows to keep is a real garbage collection
        if field == "start_step" and value.strip().isdecimal():
            return  # a real step number is a real fork
        body = query([*rest.items(), ("csrf_token", "tok"), (field, value)])
        reply = httpx.post(
            console + path,
            content=body,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            timeout=60,
        )
        answered(reply)
        if reply.status_code == 400:
            assert checksum() == before, (path, field, value)

    prop()
    # The seeded workflows are all still there and finished (only hostile IDs were acted on).
    assert {w.workflow_id for w in DBOS.list_workflows()} >= {f"hostile-{n}" for n in range(3)}


def test_a_hostile_id_is_escaped_on_the_page(console: str) -> None:
    reply = httpx.get(f"{console}/workflow?id={quote('<script>x</script>')}")
    answered(reply)
    assert "<script>x</script>" not in reply.text


@pytest.mark.parametrize(
    ("method", "path", "fields"),
    [
        ("GET", "/workflows", {"limit": "²"}),
        ("GET", "/workflows", {"after_at": "²", "after_id": "x"}),
        ("GET", "/workflows", {"after_at": "9" * 30, "after_id": "x"}),
        ("GET", "/workflow", {"id": "\x00"}),
        ("POST", "/workflow/action", {"action": "fork", "id": "hostile-0", "start_step": "²"}),
        ("POST", "/workflow/action", {"action": "fork", "id": "hostile-0", "start_step": "9" * 30}),
        ("POST", "/retention/gc", {"older_than_days": "²"}),
        ("POST", "/retention/gc", {"keep_rows": "9" * 30}),
        ("POST", "/retention/gc", {"older_than_days": "9" * 30}),
        ("POST", "/retention/gc", {"older_than_days": "9" * 18}),
    ],
)
def test_numbers_that_python_reads_but_the_console_must_not(
    console: str, method: str, path: str, fields: dict[str, str]
) -> None:
    """Unicode digits pass ``str.isdigit`` but not ``int``; 30 digits pass ``int`` but not a
    BIGINT column: each is named on a 400 page, and nothing changes."""
    before = checksum()
    if method == "GET":
        reply = httpx.get(f"{console}{path}?{query(list(fields.items()))}")
    else:
        reply = httpx.post(
            console + path,
            content=query([("csrf_token", "tok"), *fields.items()]),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
    assert reply.status_code == 400, (reply.status_code, reply.text[:300])
    assert checksum() == before
