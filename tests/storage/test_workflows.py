"""Workflow rows and step checkpoints: creation (direct, linked child, deduplicated), fencing
on the owner token, idempotent retries, outcomes, cancellation and step listings."""

from __future__ import annotations

import threading

import pytest

from tests.storage.build import T0, claim_request, enqueue, start, status, step, workflow
from waypoint.storage.errors import DeduplicatedError, OwnershipLostError
from waypoint.storage.protocol import ChildLink, Completion, Outcome, RecoveryRequest, Store

# -- init_workflow ------------------------------------------------------------------------------


def test_init_creates_then_reports_the_existing_row(store: Store) -> None:
    wf = workflow("w1", name="checkout", class_name="Shop", config_name="eu")
    created = store.init_workflow(wf, None)
    assert (created.created, created.status, created.name) == (True, "PENDING", "checkout")
    assert (created.class_name, created.config_name) == ("Shop", "eu")

    # A retry by the same execution (its acknowledgement was lost) is still "created".
    assert store.init_workflow(wf, None).created

    store.complete_workflow(Completion("w1", wf.owner_xid, "SUCCESS", '"done"', None, T0 + 5))
    again = store.init_workflow(workflow("w1", owner_xid="run-other"), None)
    assert not again.created
    assert (again.status, again.output, again.serialization) == ("SUCCESS", '"done"', "json")
    row = store.get_workflow("w1")
    assert row is not None and row.owner_xid == wf.owner_xid


def test_init_keeps_every_field(store: Store) -> None:
    wf = workflow(
        "full",
        authenticated_user="alice",
        assumed_role="admin",
        authenticated_roles='["admin"]',
        workflow_timeout_ms=5000,
        workflow_deadline_epoch_ms=T0 + 5000,
        parent_workflow_id="parent",
        schedule_name="nightly",
        started_at_epoch_ms=T0 + 1,
        application_id="app-id",
    )
    assert store.init_workflow(wf, None).workflow_deadline_epoch_ms == T0 + 5000
    row = store.get_workflow("full")
    assert row is not None
    assert (row.authenticated_user, row.assumed_role, row.authenticated_roles) == (
        "alice",
        "admin",
        '["admin"]',
    )
    assert (row.workflow_timeout_ms, row.workflow_deadline_epoch_ms) == (5000, T0 + 5000)
    assert (row.parent_workflow_id, row.schedule_name, row.application_id) == (
        "parent",
        "nightly",
        "app-id",
    )
    assert (row.created_at, row.updated_at, row.started_at_epoch_ms) == (T0, T0, T0 + 1)
    assert (row.inputs, row.serialization, row.recovery_attempts) == (wf.inputs, "json", 1)
    assert (row.executor_id, row.application_version, row.application_name) == (
        "exec-1",
        "v1",
        "app",
    )
    assert row.was_forked_from is False and row.forked_from is None
    assert store.get_workflow("nobody") is None


def test_init_deduplicates_on_the_queue(store: Store) -> None:
    enqueue(store, "first", deduplication_id="d")
    with pytest.raises(DeduplicatedError) as caught:
        store.init_workflow(
            workflow("second", status="ENQUEUED", queue_name="q", deduplication_id="d"), None
        )
    assert (caught.value.workflow_id, caught.value.queue_name) == ("second", "q")
    assert caught.value.deduplication_id == "d"
    assert store.get_workflow("second") is None
    # Another queue, or no deduplication ID, is no conflict.
    enqueue(store, "other-queue", queue="q2", deduplication_id="d")
    enqueue(store, "no-dedup")
    assert store.dedup_holder("q", "d") == "first"


def link(parent: str, fid: int, owner: str) -> ChildLink:
    return ChildLink(parent, fid, "child_fn", owner, T0 + 10)


def test_child_start_links_the_parent_step(store: Store) -> None:
    parent = start(store, "parent")
    child = workflow("child", parent_workflow_id="parent", owner_xid="run-child")
    first = store.init_workflow(child, link("parent", 3, parent.owner_xid))
    assert first.created and first.linked_child_id is None
    steps = store.load_steps("parent")
    assert steps[3].child_workflow_id == "child" and steps[3].function_name == "child_fn"
    # The parent's retry of the same start is harmless.
    retried = store.init_workflow(child, link("parent", 3, parent.owner_xid))
    assert retried.created and retried.linked_child_id is None
    assert store.children_of(["parent"]) == ["child"]


def test_child_start_at_a_position_naming_another_child(store: Store) -> None:
    parent = start(store, "parent")
    store.init_workflow(workflow("child-a"), link("parent", 1, parent.owner_xid))
    outcome = store.init_workflow(workflow("child-b"), link("parent", 1, parent.owner_xid))
    assert not outcome.created
    assert (outcome.linked_child_id, outcome.linked_function_name) == ("child-a", "child_fn")
    assert store.get_workflow("child-b") is None


def test_child_start_is_fenced_on_the_parent_owner(store: Store) -> None:
    start(store, "parent")
    with pytest.raises(OwnershipLostError) as caught:
        store.init_workflow(workflow("child"), link("parent", 1, "run-stale"))
    assert caught.value.workflow_id == "parent"
    assert store.get_workflow("child") is None
    assert store.load_steps("parent") == {}


def test_child_start_at_a_position_another_run_recorded(store: Store) -> None:
    start(store, "parent", owner_xid="run-old")
    assert store.record_step(step("parent", 2, "run-old")).accepted
    store.recover_pending(
        RecoveryRequest(["exec-1"], "v1", "app", "_internal", T0, ("exec-1", "run-new"))
    )
    # The new run owns the parent, but position 2 was written by the old one.
    with pytest.raises(OwnershipLostError):
        store.init_workflow(workflow("child"), link("parent", 2, "run-new"))
    assert store.get_workflow("child") is None


# -- complete_workflow and outcomes ------------------------------------------------------------


def test_complete_is_fenced_and_applies_once(store: Store) -> None:
    wf = start(store, "w")
    assert not store.complete_workflow(
        Completion("w", "run-stale", "ERROR", None, '"boom"', T0 + 1)
    )
    assert status(store, "w") == "PENDING"
    assert store.complete_workflow(Completion("w", wf.owner_xid, "SUCCESS", '"ok"', None, T0 + 2))
    # A retry after a lost acknowledgement changes nothing.
    assert not store.complete_workflow(
        Completion("w", wf.owner_xid, "ERROR", None, '"late"', T0 + 3)
    )
    assert store.get_outcome("w") == Outcome("SUCCESS", '"ok"', None, "json")
    row = store.get_workflow("w")
    assert row is not None and (row.completed_at, row.updated_at) == (T0 + 2, T0 + 2)


def test_finishing_frees_the_deduplication_id(store: Store) -> None:
    enqueue(store, "a", deduplication_id="d")
    enqueue(store, "b", deduplication_id="e")
    [claimed] = store.claim(claim_request(limit=1), T0)
    assert claimed.workflow_id == "a" and claimed.owner_xid == "claim-q"
    assert store.complete_workflow(Completion("a", "claim-q", "SUCCESS", None, None, T0))
    assert store.get_workflow("a").deduplication_id is None  # type: ignore[union-attr]
    enqueue(store, "a2", deduplication_id="d")
    store.cancel_workflows(["b"], T0)
    enqueue(store, "b2", deduplication_id="e")
    assert (store.dedup_holder("q", "d"), store.dedup_holder("q", "e")) == ("a2", "b2")


def test_get_outcomes(store: Store) -> None:
    start(store, "a")
    start(store, "b")
    store.complete_workflow(Completion("b", "run-b", "ERROR", None, '"bad"', T0))
    assert store.get_outcome("missing") is None
    assert store.get_outcomes([]) == {}
    assert store.get_outcomes(["a", "b", "missing"]) == {
        "a": Outcome("PENDING", None, None, "json"),
        "b": Outcome("ERROR", None, '"bad"', "json"),
    }


def test_cancel_and_children(store: Store) -> None:
    start(store, "p")
    start(store, "c1", parent_workflow_id="p")
    enqueue(store, "c2", parent_workflow_id="p", deduplication_id="d")
    start(store, "grandchild", parent_workflow_id="c1")
    start(store, "done")
    store.complete_workflow(Completion("done", "run-done", "SUCCESS", None, None, T0))
    assert sorted(store.children_of(["p"])) == ["c1", "c2"]
    assert sorted(store.children_of(["p", "c1"])) == ["c1", "c2", "grandchild"]
    assert store.children_of([]) == []

    assert sorted(store.cancel_workflows(["p", "c2", "done", "missing"], T0 + 7)) == ["c2", "p"]
    assert store.cancel_workflows(["p"], T0 + 8) == []  # already cancelled
    assert store.cancel_workflows([], T0) == []
    assert status(store, "done") == "SUCCESS"
    c2 = store.get_workflow("c2")
    assert c2 is not None and c2.status == "CANCELLED" and c2.completed_at == T0 + 7
    assert c2.queue_name is None and c2.deduplication_id is None
    # A cancelled run may still checkpoint; it learns of the cancellation from the outcome.
    outcome = store.record_step(step("p", 1, "run-p"))
    assert outcome.accepted and outcome.workflow_status == "CANCELLED"


# -- record_step ----------------------------------------------------------------------------------


def test_record_step_is_idempotent_and_fenced(store: Store) -> None:
    start(store, "w")
    first = store.record_step(step("w", 1, "run-w", output='"a"'))
    assert first.accepted and first.workflow_status == "PENDING"
    # The same checkpoint again (a retried write) is accepted and keeps the first value.
    assert store.record_step(step("w", 1, "run-w", output='"b"')).accepted
    assert store.load_steps("w")[1].output == '"a"'
    # Another execution's token is refused and writes nothing.
    assert not store.record_step(step("w", 2, "run-stale")).accepted
    assert set(store.load_steps("w")) == {1}
    assert not store.record_step(step("missing", 1, "run-w")).accepted


def test_a_recovered_workflow_fences_its_old_run(store: Store) -> None:
    start(store, "w")
    store.record_step(step("w", 1, "run-w"))
    found = store.recover_pending(
        RecoveryRequest(["exec-1"], "v1", "app", "_internal", T0, ("exec-2", "tok"))
    )
    assert found.workflow_ids == ["w"]
    assert not store.record_step(step("w", 2, "run-w")).accepted
    # The new owner cannot overwrite what the old one recorded, but may add to it.
    assert not store.record_step(step("w", 1, "tok")).accepted
    assert store.record_step(step("w", 2, "tok")).accepted
    assert not store.complete_workflow(Completion("w", "run-w", "SUCCESS", None, None, T0))
    assert store.complete_workflow(Completion("w", "tok", "SUCCESS", None, None, T0))


def test_concurrent_checkpoints_each_get_their_outcome(store: Store) -> None:
    for i in range(8):
        start(store, f"w{i}")
    results: dict[tuple[int, int], bool] = {}
    barrier = threading.Barrier(8)

    def run(i: int) -> None:
        barrier.wait()
        for fid in range(5):
            owner = f"run-w{i}" if (i + fid) % 3 else "run-stale"
            results[i, fid] = store.record_step(step(f"w{i}", fid, owner)).accepted

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for (i, fid), accepted in results.items():
        assert accepted == bool((i + fid) % 3)
        assert (fid in store.load_steps(f"w{i}")) == accepted


def test_load_and_list_steps(store: Store) -> None:
    start(store, "w")
    for fid in (3, 1, 2, 0):
        store.record_step(
            step("w", fid, "run-w", error='"e"' if fid == 2 else None, child_workflow_id=None)
        )
    loaded = store.load_steps("w")
    assert sorted(loaded) == [0, 1, 2, 3]
    s2 = loaded[2]
    assert (s2.function_name, s2.error, s2.serialization) == ("step2", '"e"', "json")
    assert (s2.started_at_epoch_ms, s2.completed_at_epoch_ms) == (T0, T0 + 1)

    def listed(limit: int | None, offset: int | None) -> list[int]:
        return [s.function_id for s in store.list_steps("w", limit, offset)]

    assert listed(None, None) == [0, 1, 2, 3]
    assert listed(2, None) == [0, 1]
    assert listed(2, 1) == [1, 2]
    assert listed(None, 3) == [3]
    assert listed(None, 9) == []
    assert store.list_steps("missing") == [] and store.load_steps("missing") == {}


def test_load_steps_of_many_workflows_at_once(store: Store) -> None:
    for wid in ("a", "b", "empty"):
        start(store, wid)
    store.record_step(step("a", 1, "run-a"))
    store.record_step(step("a", 2, "run-a", error='"e"'))
    store.record_step(step("b", 1, "run-b"))
    loaded = store.load_steps_many(["a", "b", "empty", "missing"])
    assert loaded == {"a": store.load_steps("a"), "b": store.load_steps("b")}
    assert sorted(loaded["a"]) == [1, 2] and loaded["a"][2].error == '"e"'
    assert store.load_steps_many([]) == {}


def test_resume_state_reads_the_status_with_the_checkpoints(store: Store) -> None:
    for wid in ("a", "empty", "cancelled"):
        start(store, wid)
    store.record_step(step("a", 1, "run-a"))
    store.record_step(step("a", 2, "run-a", error='"e"'))
    store.cancel_workflows(["cancelled"], T0)
    assert store.resume_state("a") == ("PENDING", store.load_steps("a"))
    assert store.resume_state("empty") == ("PENDING", {})
    assert store.resume_state("cancelled") == ("CANCELLED", {})
    assert store.resume_state("missing") == (None, {})
