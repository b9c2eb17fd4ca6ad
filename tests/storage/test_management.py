"""Managing workflows from outside their execution: resume, fork, delete, delays, attributes,
application versions and retention."""

from __future__ import annotations

import json
import time

import pytest

from tests.storage.build import T0, enqueue, fork_request, start, status, step, with_everything
from waypoint.storage.errors import AlreadyExistsError, NotFoundError
from waypoint.storage.protocol import (
    Completion,
    EventWrite,
    ForkRequest,
    RetentionRequest,
    Store,
    StreamWrite,
)


def finished(store: Store, workflow_id: str, outcome: str = "SUCCESS", **fields: object) -> None:
    start(store, workflow_id, **fields)
    assert store.complete_workflow(
        Completion(workflow_id, f"run-{workflow_id}", outcome, None, None, T0)
    )


# -- resume -------------------------------------------------------------------------------------


def test_resume_requeues_what_did_not_finish(store: Store) -> None:
    start(store, "pending", workflow_deadline_epoch_ms=T0 + 5, recovery_attempts=3)
    enqueue(store, "queued", deduplication_id="d")
    start(store, "cancelled")
    store.cancel_workflows(["cancelled"], T0)
    finished(store, "ok")
    finished(store, "failed", "ERROR")
    moved = store.resume_workflows(
        ["pending", "queued", "cancelled", "ok", "failed", "pending"], "resumed", T0 + 9, False
    )
    assert sorted(moved) == ["cancelled", "pending", "queued"]
    row = store.get_workflow("pending")
    assert row is not None and (row.status, row.queue_name, row.updated_at) == (
        "ENQUEUED",
        "resumed",
        T0 + 9,
    )
    assert (row.recovery_attempts, row.workflow_deadline_epoch_ms, row.started_at_epoch_ms) == (
        0,
        None,
        None,
    )
    queued = store.get_workflow("queued")
    assert queued is not None and queued.deduplication_id is None
    cancelled = store.get_workflow("cancelled")
    assert cancelled is not None and cancelled.completed_at is None
    assert (status(store, "ok"), status(store, "failed")) == ("SUCCESS", "ERROR")


def test_resume_of_an_unknown_workflow_changes_nothing(store: Store) -> None:
    start(store, "cancelled")
    store.cancel_workflows(["cancelled"], T0)
    with pytest.raises(NotFoundError) as caught:
        store.resume_workflows(["cancelled", "ghost"], "q", T0)
    assert caught.value.workflow_id == "ghost"
    assert status(store, "cancelled") == "CANCELLED"


# -- fork ---------------------------------------------------------------------------------------


def forkable(store: Store) -> None:
    """A finished workflow with steps 0-3 (0 started a child), events and stream values."""
    start(
        store, "src", workflow_timeout_ms=900, attributes='{"team": "a"}', application_version="v0"
    )
    start(store, "old-child")
    store.record_step(step("src", 0, "run-src", child_workflow_id="old-child"))
    for fid in (1, 2, 3):
        store.record_step(step("src", fid, "run-src"))
    store.set_event(EventWrite("src", "k", '"at-1"', "json", 1), None)
    store.set_event(EventWrite("src", "k", '"at-3"', "json", 3), None)
    store.set_event(EventWrite("src", "late", '"x"', "json", 3), None)
    store.write_stream(StreamWrite("src", "s", '"s1"', "json", 1, "wf:1"), None)
    store.write_stream(StreamWrite("src", "s", '"s3"', "json", 3, "wf:3"), None)
    store.complete_workflow(Completion("src", "run-src", "SUCCESS", '"r"', None, T0))


def test_fork_copies_what_came_before_the_step(store: Store) -> None:
    forkable(store)
    store.fork_workflow(
        fork_request("src", "fork", 2, replacement_children={"old-child": "new-child"})
    )
    row = store.get_workflow("fork")
    assert row is not None
    assert (row.status, row.queue_name, row.forked_from, row.owner_xid) == (
        "ENQUEUED",
        "forks",
        "src",
        "fork",
    )
    assert (row.application_version, row.workflow_timeout_ms, row.created_at) == (
        "v0",
        900,
        T0 + 1000,
    )
    assert (row.recovery_attempts, row.output, row.inputs) == (
        0,
        None,
        '{"args": [], "kwargs": {}}',
    )
    src = store.get_workflow("src")
    assert src is not None and src.was_forked_from and not row.was_forked_from
    steps = store.load_steps("fork")
    assert sorted(steps) == [0, 1]
    assert steps[0].child_workflow_id == "new-child"
    assert store.get_events("fork") == {"k": ('"at-1"', "json")}
    assert store.read_stream("fork", "s", 0)[0] == ('"s1"', "json")
    assert store.read_stream("fork", "s", 1)[0] is None
    assert store.forks_of(["src"]) == ["fork"]


def test_fork_options(store: Store) -> None:
    forkable(store)
    req = ForkRequest(
        "src",
        "fork",
        0,
        "q",
        T0,
        "tok",
        application_version="v9",
        partition_key="p",
        timeout_ms=5,
        application_name="app",
    )
    store.fork_workflow(req)
    row = store.get_workflow("fork")
    assert row is not None and store.load_steps("fork") == {}
    assert (row.application_version, row.queue_partition_key, row.workflow_timeout_ms) == (
        "v9",
        "p",
        5,
    )


def test_fork_refusals_change_nothing(store: Store) -> None:
    forkable(store)
    start(store, "taken")
    with pytest.raises(NotFoundError):
        store.fork_workflow(fork_request("ghost", "fork", 1))
    with pytest.raises(AlreadyExistsError):
        store.fork_workflow(fork_request("src", "taken", 1))
    src = store.get_workflow("src")
    assert src is not None and not src.was_forked_from
    assert store.load_steps("taken") == {}
    assert store.forks_of(["src"]) == []


def test_forks_of_follows_forks_of_forks(store: Store) -> None:
    forkable(store)
    store.fork_workflow(fork_request("src", "f1", 1))
    store.fork_workflow(fork_request("f1", "f2", 1))
    store.fork_workflow(fork_request("src", "f3", 1))
    assert sorted(store.forks_of(["src"])) == ["f1", "f2", "f3"]
    assert store.forks_of(["f2"]) == [] and store.forks_of([]) == []


# -- delete, delays, attributes -----------------------------------------------------------------


def test_delete_takes_everything_of_the_workflow(store: Store) -> None:
    with_everything(store, "w")
    start(store, "keep")
    assert store.delete_workflows(["w", "ghost"]) == 1
    assert store.delete_workflows([]) == 0
    assert store.get_workflow("w") is None and store.load_steps("w") == {}
    assert store.get_events("w") == {} and store.read_stream("w", "s", 0) == (None, None)
    # Re-created, it starts from nothing (no message left behind).
    start(store, "w")
    assert not store.consume_message("w", "t", step("w", 1, "run-w")).found
    assert status(store, "keep") == "PENDING"


def test_set_delay(store: Store) -> None:
    enqueue(store, "d", status="DELAYED", delay_until_epoch_ms=T0 + 50)
    enqueue(store, "ready")
    assert store.set_delay("d", T0 + 5)
    assert store.next_delayed() == T0 + 5
    assert not store.set_delay("ready", T0)
    assert not store.set_delay("ghost", T0)


def test_set_attributes(store: Store) -> None:
    start(store, "w")
    assert store.set_attributes("w", '{"team": "b", "n": 1}')
    assert not store.set_attributes("ghost", "{}")
    row = store.get_workflow("w")
    assert row is not None and isinstance(row.attributes, str)
    assert json.loads(row.attributes) == {"team": "b", "n": 1}
    assert store.set_attributes("w", None)
    row = store.get_workflow("w")
    assert row is not None and row.attributes is None


# -- application versions ----------------------------------------------------------------------


def test_versions(store: Store) -> None:
    assert store.list_versions("app") == []
    store.register_version("v1", "app")
    time.sleep(0.003)
    store.register_version("v2", "app")
    store.register_version("v1", "app")  # again: harmless
    store.register_version("shared", None)
    store.register_version("theirs", "other")
    assert [v.version_name for v in store.list_versions("app")][:2] == ["shared", "v2"]
    assert sorted(v.version_name for v in store.list_versions("app")) == ["shared", "v1", "v2"]
    assert len(store.list_versions(None)) == 4
    time.sleep(0.003)
    assert store.set_latest_version("v1", "app")
    assert not store.set_latest_version("ghost", "app")
    latest = store.list_versions("app")[0]
    assert (latest.version_name, latest.application_name) == ("v1", "app")
    assert latest.version_timestamp >= latest.created_at


# -- retention ----------------------------------------------------------------------------------


def retention_mix(store: Store) -> None:
    for i, outcome in enumerate(("SUCCESS", "ERROR", "SUCCESS")):
        finished(store, f"old{i}", outcome, created_at=T0 + i)
    start(store, "old-cancelled", created_at=T0 + 3)
    store.cancel_workflows(["old-cancelled"], T0)
    start(store, "old-pending", created_at=T0)
    enqueue(store, "old-queued", created_at=T0)
    enqueue(store, "old-delayed", status="DELAYED", delay_until_epoch_ms=T0, created_at=T0)
    finished(store, "theirs", application_name="other", created_at=T0)
    finished(store, "new", created_at=T0 + 100)
    store.record_step(step("old0", 1, "run-old0"))


ACTIVE = ["old-delayed", "old-pending", "old-queued"]


def test_garbage_collect_by_age(store: Store) -> None:
    retention_mix(store)
    assert store.garbage_collect(RetentionRequest(None, None, None)) == 0
    assert store.garbage_collect(RetentionRequest(T0 + 50, None, "app", batch_size=2)) == 4
    assert store.get_workflow("old0") is None and store.load_steps("old0") == {}
    left = sorted(store.get_outcomes([*ACTIVE, "theirs", "new", "old1"]))
    assert left == sorted([*ACTIVE, "new", "theirs"])
    assert store.garbage_collect(RetentionRequest(T0 + 50, None, None)) == 1  # any application


def test_garbage_collect_beyond_the_newest_rows(store: Store) -> None:
    retention_mix(store)
    # The 5th newest row was created at T0: nothing is older.
    assert store.garbage_collect(RetentionRequest(None, 5, None)) == 0
    # The 3rd newest (old2) was created at T0 + 2: the finished ones before it go.
    assert store.garbage_collect(RetentionRequest(None, 3, None)) == 3
    assert [status(store, w) for w in ("old2", "old1", "old0", "theirs")] == [
        "SUCCESS",
        None,
        None,
        None,
    ]
    assert store.garbage_collect(RetentionRequest(None, 100, None)) == 0


def test_active_created_before(store: Store) -> None:
    retention_mix(store)
    start(store, "young", created_at=T0 + 100)
    assert sorted(store.active_created_before(T0 + 10)) == ACTIVE
    assert sorted(store.active_created_before(T0 + 100)) == sorted([*ACTIVE, "young"])
    assert store.active_created_before(T0 - 1) == []
