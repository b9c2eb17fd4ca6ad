"""``list_workflows``: every ``ListFilter`` field, paging, order and what is loaded."""

from __future__ import annotations

from typing import Any

import pytest

from tests.storage.build import T0, enqueue, fork_request, ids, start
from waypoint.storage.errors import UnsupportedError
from waypoint.storage.protocol import Completion, ListFilter, Store

# In creation order.
ALL = ["a1", "a2", "b1", "b_%x", "B1", "f1"]


def listing(store: Store) -> None:
    start(store, "a1", name="alpha", started_at_epoch_ms=T0 + 5, schedule_name="nightly")
    start(
        store,
        "a2",
        name="alpha",
        created_at=T0 + 1,
        authenticated_user="bob",
        queue_name="q",
        started_at_epoch_ms=T0 + 6,
    )
    store.complete_workflow(Completion("a2", "run-a2", "SUCCESS", '"out"', None, T0 + 20))
    enqueue(
        store,
        "b1",
        "q2",
        name="beta",
        created_at=T0 + 2,
        application_version="v2",
        parent_workflow_id="a1",
        attributes='{"team": "x", "n": 1}',
    )
    start(store, "b_%x", name="beta", created_at=T0 + 3, application_name="other")
    start(store, "B1", created_at=T0 + 4, application_name=None, executor_id="exec-2")
    store.fork_workflow(fork_request("a2", "f1", 0))
    assert ids(store.list_workflows(ListFilter())) == ALL


CASES: dict[str, tuple[dict[str, Any], list[str]]] = {
    "workflow_ids": ({"workflow_ids": ["a1", "B1", "ghost"]}, ["a1", "B1"]),
    "status": ({"status": ["SUCCESS", "ENQUEUED"]}, ["a2", "b1", "f1"]),
    "start_time_ms": ({"start_time_ms": T0 + 2}, ["b1", "b_%x", "B1", "f1"]),
    "end_time_ms": ({"end_time_ms": T0 + 1}, ["a1", "a2"]),
    "name": ({"name": ["beta", "ghost"]}, ["b1", "b_%x"]),
    "app_version": ({"app_version": ["v2"]}, ["b1"]),
    "user": ({"user": ["bob"]}, ["a2", "f1"]),  # a fork runs as the same user
    "queue_name": ({"queue_name": ["q2"]}, ["b1"]),
    "executor_id": ({"executor_id": ["exec-2"]}, ["B1"]),
    "parent_workflow_id": ({"parent_workflow_id": ["a1"]}, ["b1"]),
    "forked_from": ({"forked_from": ["a2"]}, ["f1"]),
    "prefix": ({"workflow_id_prefix": ["a", "B"]}, ["a1", "a2", "B1"]),
    "prefix_is_literal": ({"workflow_id_prefix": ["b_%"]}, ["b_%x"]),
    "prefix_matches_case": ({"workflow_id_prefix": ["b"]}, ["b1", "b_%x"]),
    "application_name": ({"application_name": "app"}, ["a1", "a2", "b1", "B1", "f1"]),
    "queues_only": ({"queues_only": True}, ["a2", "b1", "f1"]),
    "schedule_name": ({"schedule_name": ["nightly"]}, ["a1"]),
    "completed_after": ({"completed_after": T0 + 20}, ["a2"]),
    "completed_before": ({"completed_before": T0 + 19}, []),
    "dequeued_after": ({"dequeued_after": T0 + 6}, ["a2"]),
    "dequeued_before": ({"dequeued_before": T0 + 5}, ["a1"]),
    "was_forked_from": ({"was_forked_from": True}, ["a2"]),
    "was_not_forked_from": ({"was_forked_from": False}, ["a1", "b1", "b_%x", "B1", "f1"]),
    "has_parent": ({"has_parent": True}, ["b1"]),
    "has_no_parent": ({"has_parent": False}, ["a1", "a2", "b_%x", "B1", "f1"]),
    "combined": ({"name": ["alpha"], "status": ["SUCCESS"]}, ["a2"]),
    "limit": ({"limit": 2}, ["a1", "a2"]),
    "offset": ({"offset": 4}, ["B1", "f1"]),
    "limit_offset": ({"limit": 2, "offset": 1}, ["a2", "b1"]),
    "sort_desc": ({"sort_desc": True, "limit": 2}, ["f1", "B1"]),
    # Several values and a page: a page of each value, merged (sql_listing._branches).
    "values_page": ({"status": ["SUCCESS", "ENQUEUED"], "limit": 2}, ["a2", "b1"]),
    "values_page_offset": ({"status": ["ENQUEUED", "SUCCESS"], "limit": 1, "offset": 1}, ["b1"]),
    "values_page_desc": (
        {"status": ["SUCCESS", "ENQUEUED"], "limit": 2, "sort_desc": True},
        ["f1", "b1"],
    ),
    "values_repeated": ({"name": ["beta", "alpha", "beta"], "limit": 3}, ["a1", "a2", "b1"]),
    "values_and_filters": (
        {"name": ["alpha", "beta"], "user": ["bob"], "status": ["SUCCESS", "ENQUEUED"], "limit": 9},
        ["a2", "f1"],
    ),
    "values_after": (
        {"name": ["alpha", "beta"], "limit": 2, "after": (T0 + 1, "a2")},
        ["b1", "b_%x"],
    ),
    "live_values_page": (
        {"status": ["ENQUEUED", "PENDING"], "limit": 9},
        ["a1", "b1", "b_%x", "B1", "f1"],
    ),
    "many_values_page": (
        {"status": ["SUCCESS", "ENQUEUED", *(f"S{i}" for i in range(9))], "limit": 9},
        ["a2", "b1", "f1"],
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_filter(store: Store, case: str) -> None:
    listing(store)
    fields, expected = CASES[case]
    assert ids(store.list_workflows(ListFilter(**fields))) == expected


def test_filter_by_attributes(store: Store) -> None:
    listing(store)
    flt = ListFilter(attributes='{"team": "x"}')
    try:
        found = store.list_workflows(flt)
    except UnsupportedError:
        return  # a backend may not search JSON; it must say so rather than ignore the filter
    assert ids(found) == ["b1"]
    assert store.list_workflows(ListFilter(attributes='{"team": "y"}')) == []


def test_what_is_loaded(store: Store) -> None:
    listing(store)
    [full] = store.list_workflows(ListFilter(workflow_ids=["a2"]))
    assert (full.inputs, full.output) == ('{"args": [], "kwargs": {}}', '"out"')
    [bare] = store.list_workflows(
        ListFilter(workflow_ids=["a2"], load_input=False, load_output=False)
    )
    assert (bare.inputs, bare.output, bare.error) == (None, None, None)
    assert (bare.status, bare.name, bare.completed_at) == ("SUCCESS", "alpha", T0 + 20)
    branched = store.list_workflows(
        ListFilter(status=["SUCCESS", "ENQUEUED"], limit=5, load_input=False, load_output=False)
    )
    assert ids(branched) == ["a2", "b1", "f1"]
    assert {(r.inputs, r.output) for r in branched} == {(None, None)}
    assert branched[0].status == "SUCCESS" and branched[0].completed_at == T0 + 20


def stamped(store: Store) -> None:
    """Finished workflows whose completion and dequeue stamps straddle ``T0 + 20``: some
    created before it and stamped after (running at it), some created after it and stamped
    before (a worker's clock behind the creator's)."""
    for wid, created, done in (
        ("s1", 1, 10),
        ("s2", 2, 50),  # running at T0 + 20
        ("s3", 3, 12),
        ("s4", 30, 15),  # stamped before its creation
        ("s5", 31, 40),
        ("s6", 32, 18),  # stamped before its creation
        ("s7", 33, 20),  # stamped before its creation, at the bound itself
    ):
        start(store, wid, created_at=T0 + created, started_at_epoch_ms=T0 + done - 1)
        store.complete_workflow(Completion(wid, f"run-{wid}", "SUCCESS", None, None, T0 + done))
    start(store, "live", created_at=T0 + 4, started_at_epoch_ms=T0 + 60)  # dequeued after
    assert ids(store.list_workflows(ListFilter())) == ALL_STAMPED


ALL_STAMPED = ["s1", "s2", "s3", "live", "s4", "s5", "s6", "s7"]
# completed_at <= T0 + 20: s1, s3, s4, s6, s7 (in creation order).
BEFORE_CASES: dict[str, tuple[dict[str, Any], list[str]]] = {
    "all": ({}, ["s1", "s3", "s4", "s6", "s7"]),
    "page": ({"limit": 3}, ["s1", "s3", "s4"]),
    "page_desc": ({"limit": 3, "sort_desc": True}, ["s7", "s6", "s4"]),
    "offset_desc": ({"limit": 2, "offset": 2, "sort_desc": True}, ["s4", "s3"]),
    "offset_past_the_end": ({"limit": 2, "offset": 4, "sort_desc": True}, ["s1"]),
    "offset_only": ({"offset": 3}, ["s6", "s7"]),
    "after_desc": ({"limit": 9, "sort_desc": True, "after": (T0 + 30, "s4")}, ["s3", "s1"]),
    "after": ({"limit": 2, "after": (T0 + 3, "s3")}, ["s4", "s6"]),
    "and_created_before": ({"limit": 9, "end_time_ms": T0 + 31}, ["s1", "s3", "s4"]),
}


@pytest.mark.parametrize("key", ["completed_before", "dequeued_before"])
@pytest.mark.parametrize("case", BEFORE_CASES)
def test_before_bound_pages(store: Store, key: str, case: str) -> None:
    """A "before" bound's page (read in two branches, sql_listing._bound_branches) is the
    same page, order, limit and offset, as without them, however the stamps lie."""
    stamped(store)
    fields, expected = BEFORE_CASES[case]
    # dequeued stamps are a millisecond before completion: the same rows pass T0 + 19.
    bound = T0 + 20 if key == "completed_before" else T0 + 19
    assert ids(store.list_workflows(ListFilter(**{key: bound}, **fields))) == expected


@pytest.mark.parametrize("desc", [False, True])
def test_two_before_bounds(store: Store, desc: bool) -> None:
    """With both bounds the earlier one splits the listing; the other still filters."""
    stamped(store)
    both: dict[str, Any] = {"completed_before": T0 + 20, "dequeued_before": T0 + 16}
    both["sort_desc"] = desc
    # dequeued by T0 + 16: s1 (9), s3 (11), s4 (14); all completed by T0 + 20.
    expected = ["s1", "s3", "s4"]
    for limit in (1, 2, 9):
        found = ids(store.list_workflows(ListFilter(**both, limit=limit)))
        assert found == (expected[::-1] if desc else expected)[:limit]


# completed_at >= T0 + 20: s2 (running at it), s5, s7; dequeued_at >= T0 + 19: those and
# "live" (dequeued at T0 + 60, not finished). In creation order.
AFTER_ALL = {"completed_after": ["s2", "s5", "s7"], "dequeued_after": ["s2", "live", "s5", "s7"]}
PAGES: list[dict[str, Any]] = [
    {"limit": 1},
    {"limit": 2},
    {"limit": 2, "offset": 1},
    {"limit": 5, "offset": 3},
    {"limit": 9},
    {"limit": 2, "after": (T0 + 2, "s2")},
    {"limit": 2, "sort_desc": True},
]


@pytest.mark.parametrize("key", ["completed_after", "dequeued_after"])
@pytest.mark.parametrize("page", range(len(PAGES)))
def test_after_bound_pages(store: Store, key: str, page: int) -> None:
    """Oldest first, an "after" bound's page (the rows created after the bound, and those
    running at it: sql_listing._bound_branches) is the slice of the whole listing."""
    stamped(store)
    bound = {key: T0 + 20 if key == "completed_after" else T0 + 19}
    whole = ids(store.list_workflows(ListFilter(**bound)))
    assert whole == AFTER_ALL[key]
    fields = PAGES[page]
    rows = whole[::-1] if fields.get("sort_desc") else whole
    if "after" in fields:
        rows = rows[rows.index(fields["after"][1]) + 1 :]
    start = fields.get("offset", 0)
    expected = rows[start : start + fields["limit"]]
    assert ids(store.list_workflows(ListFilter(**bound, **fields))) == expected


def test_two_after_bounds(store: Store) -> None:
    """With both bounds the later one splits the listing; the other still filters."""
    stamped(store)
    both: dict[str, Any] = {"completed_after": T0 + 20, "dequeued_after": T0 + 39}
    for limit in (1, 2, 9):
        assert ids(store.list_workflows(ListFilter(**both, limit=limit))) == ["s2", "s5"][:limit]


# Spans around every octal length class's edge (SQLite files a row's span by its number of
# octal digits, schema version 16: one created_at range per class, sql_base.Dialect.running_at),
# up to the last class, which holds every longer span.
SPANS = sorted({0, 1, 2, *(8**k + d for k in range(1, 15) for d in (-1, 0, 1))})
RUNNING_T = T0 + 8**15


@pytest.mark.parametrize("key", ["completed_after", "dequeued_after"])
def test_rows_running_at_an_after_bound_whatever_their_span(store: Store, key: str) -> None:
    """Oldest first after a bound T, every row stamped at or after T is listed, whatever its
    span: created just before T - span (stamped before T: not listed), at it (stamped at T)
    and just after it, for spans on each side of every class edge."""
    stamps: dict[str, tuple[int, int]] = {}  # id -> (created, stamped)
    for n, span in enumerate(SPANS):
        for offset in (-1, 0, 1):
            wid, created = f"s{n:02d}{offset + 1}", RUNNING_T - span + offset
            stamps[wid] = (created, created + span)
            start(store, wid, created_at=created, started_at_epoch_ms=created + span)
            store.complete_workflow(
                Completion(wid, f"run-{wid}", "SUCCESS", None, None, created + span)
            )
    expected = sorted((c, w) for w, (c, s) in stamps.items() if s >= RUNNING_T)
    whole = [w for _, w in expected]
    assert ids(store.list_workflows(ListFilter(**{key: RUNNING_T}))) == whole
    for limit, offset in ((1000, 0), (7, 0), (7, 30)):
        page = ListFilter(**{key: RUNNING_T}, limit=limit, offset=offset)
        assert ids(store.list_workflows(page)) == whole[offset : offset + limit]


# Texts at the edges of code-point order: a prefix's rows are one range of the ID's index on
# SQLite (its end is the prefix with its last character not already the greatest, plus one).
EDGE_IDS = [
    "p",
    "p!",
    "pa",
    "p\uffff",
    "p\U0010ffff",
    "p\U0010ffffz",
    "q",
    "o\U0010ffff",
    "\U0010ffff",
    "\U0010ffffa",
    "\ud7ffx",
    "\ue000",
]


@pytest.mark.parametrize(
    "prefix", ["p", "p\U0010ffff", "\U0010ffff", "o", "p\uffff", "\ud7ff", "pa", "x"]
)
def test_id_prefix_at_the_edges_of_code_point_order(store: Store, prefix: str) -> None:
    for n, wid in enumerate(EDGE_IDS):
        start(store, wid, created_at=T0 + n)
    found = ids(store.list_workflows(ListFilter(workflow_id_prefix=[prefix])))
    assert found == [wid for wid in EDGE_IDS if wid.startswith(prefix)]
