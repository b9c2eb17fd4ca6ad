"""Workflows move between DBOS 2.31.1 and Waypoint mid-flight, on SQLite and PostgreSQL.

One side runs ``three_steps`` (a step, an event, a message, a step, a durable sleep, a step, an
event) and is SIGKILLed inside step 2; the other side, launched with the same executor ID and
application version, recovers it. The side-effect ledger proves that no completed step ran
again, and the checkpoints, events and the consumed message are the ones the first side wrote.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.crash import ledger
from tests.interop.conftest import IMPLS, Interop

DIRECTIONS = [("dbos", "waypoint"), ("waypoint", "dbos")]
HANDOVERS = ["dbos-to-waypoint", "waypoint-to-dbos"]
EXPECTED = "s3(s2(s1(seed)+hello))"


# What ``operations`` saw before step 2: an inline child, a started child retrieved, its status
# and listing, its fork and its resumption, a stream value read at an offset, a debounced
# call, a step started as a workflow, and the error of a step out of retries.
OPERATIONS_SEEN = json.dumps(
    [
        "child(s1(seed))", "child(started)", "SUCCESS", ["SUCCESS"], "child(started)",
        "child(started)", "child(s1(seed))", "child(debounced)", "temp",
        "DBOSMaxStepRetriesExceeded",
    ]
)  # fmt: skip

WORKFLOWS = {
    # workflow: (result, the "stage" event at the end, step 2's input)
    "three_steps": (EXPECTED, "done", "s1(seed)+hello"),
    "composite": ("s3(s2(child(s1(seed))+s1(seed)))", None, "child(s1(seed))+s1(seed)"),
    "operations": (f"s3(s2({OPERATIONS_SEEN}))", None, OPERATIONS_SEEN),
    "async_operations": (
        "s3(s2(s1(seed)+DBOSStepTimeoutError))",
        None,
        "s1(seed)+DBOSStepTimeoutError",
    ),
}
# Steps that fail before step 2, and how many attempts each makes (all in the killed process).
FAILING = {"operations": ("exhausted", 2), "async_operations": ("too_slow", 1)}


@pytest.mark.parametrize("workflow", list(WORKFLOWS))
@pytest.mark.parametrize(
    ("first", "second"), DIRECTIONS, ids=["dbos-to-waypoint", "waypoint-to-dbos"]
)
def test_killed_inside_a_step_the_other_side_finishes_it(
    interop: Interop, first: str, second: str, workflow: str
) -> None:
    h, wf = interop, "handover-1"
    result, stage, step_two_input = WORKFLOWS[workflow]
    doomed = h.spawn_as(first, "start", wf, workflow, block_step=2)
    h.wait_until(
        "step 2 to start",
        lambda: h.ledger_rows(wf, step=2, phase="start"),
        timeout=60,
        watch=[doomed],
    )
    h.kill(doomed)
    before = h.steps(wf)
    stored_before = _stored(h, wf)
    workflows_before = set(h.workflows())
    assert [name for _, name, _ in before][:1] == ["step_one"]
    assert ("step_two" not in {name for _, name, _ in before}) and h.status(wf) == "PENDING"

    heir = h.spawn_as(second, "wait", wf)
    out = heir.wait_exit(timeout=90)
    assert out["results"][wf] == {"ok": result}, h.diagnostics()
    assert out["events"][wf] == {"stage": stage}
    assert h.status(wf) == "SUCCESS"

    # The ledger: step 1 ran once (in the first process), step 2 was entered by both and
    # finished by the heir, step 3 ran once in the heir.
    ends = {i: [r.pid for r in h.ledger_rows(wf, step=i, phase="end")] for i in (1, 2, 3)}
    assert ends == {1: [doomed.pid], 2: [heir.pid], 3: [heir.pid]}
    starts = [r.pid for r in h.ledger_rows(wf, step=2, phase="start")]
    assert starts == [doomed.pid, heir.pid]
    # The first side's checkpoints were replayed, not rewritten, and what they recorded (the
    # message, the child's result, its event) reached step 2.
    after = h.steps(wf)
    assert _stored(h, wf)[: len(stored_before)] == stored_before
    names = [name for _, name, _ in after]
    assert names.count("step_one") == names.count("step_two") == names.count("step_three") == 1
    assert [fid for fid, _, _ in after] == list(range(1, len(after) + 1))
    outputs = {name: output for _, name, output in after}
    assert outputs["step_two"] == f"s2({step_two_input})"
    if workflow in FAILING:  # the failed step's attempts ran once, in the first process
        failing, tries = FAILING[workflow]
        events = ledger.events(h.ledger_path)
        attempts = [pid for pid, event, _ in events if event.startswith(f"{failing}:{wf}:")]
        assert attempts == [doomed.pid] * tries
    # Replaying started no workflow again (children, the fork, the debounced call, the step
    # started as a workflow were all checkpointed by the first side).
    assert set(h.workflows()) == workflows_before


def _stored(h: Interop, workflow_id: str) -> list[tuple[Any, ...]]:
    """A workflow's checkpoints as stored (a recorded status is compared as its pickle)."""
    return h._query(
        "SELECT function_id, function_name, output, error, child_workflow_id "
        "FROM {operation_outputs} WHERE workflow_uuid = %s ORDER BY function_id",
        (workflow_id,),
    )


UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _records(h: Interop, workflow_id: str) -> list[tuple[Any, ...]]:
    table = "operation_outputs" if h.backend == "sqlite" else "dbos.operation_outputs"
    return [
        (
            r[0].replace(workflow_id, "<wf>"),
            r[1],
            r[2],
            r[3] and UUID.sub("<uuid>", r[3].replace(workflow_id, "<wf>")),
        )
        for r in h._query(
            f"SELECT workflow_uuid, function_id, function_name, child_workflow_id FROM {table} "
            "WHERE workflow_uuid LIKE %s ORDER BY workflow_uuid, function_id",
            (f"{workflow_id}%",),
        )
    ]


def test_both_sides_record_a_child_alike(interop: Interop) -> None:
    """What each side checkpoints for a workflow with a child: positions, operation names,
    child links (rows of the workflow and of its child). A hand-over replays the other side's
    rows by position and name, so they must agree (plain steps, events, messages and sleeps are
    compared by the test below)."""
    for impl in IMPLS:
        interop.spawn_as(impl, "start", f"{impl}-rec", "composite").wait_exit(timeout=90)
    dbos_rows, waypoint_rows = (_records(interop, f"{impl}-rec") for impl in IMPLS)
    assert waypoint_rows == dbos_rows


def test_both_sides_record_the_other_operations_alike(interop: Interop) -> None:
    """The same for ``operations`` (an inline child, retrieve/status/list/fork/resume inside a
    workflow, a stream read at an offset, a debounce, a step started as a workflow, a step out
    of retries): the rows of the workflow only (its fork's and debouncer's IDs are random)."""
    rows = {}
    for impl in IMPLS:
        wf = f"{impl}-ops"
        interop.spawn_as(impl, "start", wf, "operations").wait_exit(timeout=90)
        rows[impl] = [r for r in _records(interop, wf) if r[0] == "<wf>"]
    assert rows["waypoint"] == rows["dbos"]
    assert [r[2] for r in rows["dbos"]][:4] == ["step_one", "child", "DBOS.getResult", "child"]


@pytest.mark.parametrize(("first", "second"), DIRECTIONS, ids=["dbos-first", "waypoint-first"])
def test_each_side_runs_every_feature_on_the_others_database(
    interop: Interop, first: str, second: str
) -> None:
    """The database is created by ``first``; then ``second`` launches on it (DBOS on a
    Waypoint-migrated database, Waypoint adopting a DBOS one) and uses every kind of record;
    then ``first`` launches again on the shared database and does the same."""
    records: dict[str, list[tuple[Any, ...]]] = {}
    for impl, prefix in ((first, "p1"), (second, "p2"), (first, "p3")):
        out = interop.spawn_as(impl, "features", prefix).wait_exit(timeout=120)
        seen = out["results"]["features"]["ok"]
        assert seen == {
            "steps": f"s3(s2(s1({prefix})+hello))",
            "stage": "done",
            "ready": prefix,
            "queued": f"{prefix}:pong",
            "stream": [0, 1, 2],
            "schedule": f"tick:{prefix}",
            "steps_listed": seen["steps_listed"],
        }, f"{impl} on a database {first} created"
        assert seen["steps_listed"][:2] == ["step_one", "DBOS.setEvent"]
        records[impl] = _records(interop, f"{prefix}-steps")
    # Both sides checkpoint three_steps at the same positions under the same names.
    assert records["dbos"] == records["waypoint"]
