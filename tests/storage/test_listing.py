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
