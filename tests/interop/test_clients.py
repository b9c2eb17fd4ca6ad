"""Each side's DBOSClient drives workflows the other side runs, and DBOS's own CLI manages a
database Waypoint created, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import re
from typing import Any

import psycopg
import pytest

from tests.crash.harness import decode
from tests.interop.conftest import Interop


@pytest.mark.parametrize(
    ("client", "worker"),
    [("dbos", "waypoint"), ("waypoint", "dbos")],
    ids=["dbos-client-waypoint-worker", "waypoint-client-dbos-worker"],
)
def test_a_client_drives_the_other_sides_worker(interop: Interop, client: str, worker: str) -> None:
    # The client enqueues (so the other side dequeues), waits for an event, sends, reads the
    # result, lists; then cancels a second workflow, resumes it and sees it finish.
    interop.serve(worker)
    seen = interop.client(client, "drive", "c").wait_exit(timeout=120)
    assert seen == {
        "ready": "a",
        "result": "a:pong",
        "listed": [["c-a", "waiter", "SUCCESS", "interop-q"]],
        "ready_b": "b",
        "cancelled": "CANCELLED",
        "resumed": "b:again",
        "steps_b": seen["steps_b"],
    }
    assert seen["steps_b"][0] == "DBOS.setEvent" and seen["steps_b"][-1] == "echo"
    assert interop.workflows(["c-a", "c-b"]).keys() == {"c-a", "c-b"}
    assert {r["executor_id"] for r in interop.workflows(["c-a", "c-b"]).values()} == {
        "interop-executor"
    }


def _cli_json(interop: Interop, *args: str) -> Any:
    done = interop.dbos_cli(*args)
    assert done.returncode == 0, f"dbos {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return json.loads(done.stdout)


def test_the_dbos_cli_on_a_waypoint_database(interop: Interop) -> None:
    interop.spawn_as("waypoint", "features", "wp").wait_exit(timeout=120)
    interop.client("waypoint", "enqueue", "wp").wait_exit(timeout=60)
    parked = "wp-parked"

    listed = {w["workflow_id"]: w for w in _cli_json(interop, "workflow", "list", "-l", "50")}
    assert listed["wp-steps"]["status"] == "SUCCESS"
    assert listed["wp-steps"]["name"] == "three_steps"
    assert listed[parked]["status"] == "ENQUEUED"
    queued = _cli_json(interop, "workflow", "queue", "list")
    assert [w["workflow_id"] for w in queued] == [parked]
    steps = _cli_json(interop, "workflow", "steps", "wp-steps")
    assert [s["function_name"] for s in steps][:2] == ["step_one", "DBOS.setEvent"]
    assert _cli_json(interop, "workflow", "get", "wp-steps")["output"] == "s3(s2(s1(wp)+hello))"

    assert interop.dbos_cli("workflow", "cancel", parked).returncode == 0
    assert interop.status(parked) == "CANCELLED"
    assert interop.dbos_cli("workflow", "resume", parked).returncode == 0
    assert interop.status(parked) == "ENQUEUED"

    # DBOS's migrate finds the schema current and changes nothing.
    migrated = interop.dbos_cli("migrate")
    assert migrated.returncode == 0, migrated.stderr
    table = "dbos_migrations" if interop.backend == "sqlite" else "dbos.dbos_migrations"
    assert interop._query(f"SELECT version FROM {table}") == [(108,)]


@pytest.mark.parametrize("worker", ["dbos", "waypoint"])
def test_a_workflow_enqueued_from_sql_runs_on_either_side(interop: Interop, worker: str) -> None:
    """enqueue_workflow and send_message, the schema's SQL entry points for other languages,
    on a database the other side created: the worker runs the portable-JSON workflow."""
    if interop.backend != "postgres":
        pytest.skip("stored functions are PostgreSQL's")
    other = "waypoint" if worker == "dbos" else "dbos"
    interop.spawn_as(other, "wait").wait_exit(timeout=60)  # creates the database
    serving = interop.serve(worker)
    with psycopg.connect(interop.db_url, autocommit=True) as conn:
        conn.execute(
            "SELECT dbos.enqueue_workflow('waiter', 'interop-q', ARRAY['\"sql\"'::json], "
            "workflow_id => 'sql-1')"
        )
        conn.execute("SELECT dbos.send_message('sql-1', '\"hi\"'::json, 'reply')")
    interop.wait_status(["sql-1"], {"SUCCESS", "ERROR"}, timeout=60, watch=[serving])
    (row,) = interop._query(
        "SELECT status, output, serialization FROM {workflow_status} WHERE workflow_uuid = %s",
        ("sql-1",),
    )
    assert row[0] == "SUCCESS" and decode(row[1], row[2]) == "sql:hi"


def test_a_mixed_fleet_fires_each_schedule_slot_once(interop: Interop) -> None:
    """A DBOS and a Waypoint process serve one every-second schedule: both name a slot's
    workflow alike (sched-<name>-<ISO time>), so each slot runs once across the two."""
    interop.every_second = True
    # Two executors: a process launching under a live one's executor ID would recover (and run
    # again) the slot that one had just started, as DBOS's launch recovery does too.
    workers = [interop.serve(impl, executor_id=f"{impl}-executor") for impl in ("dbos", "waypoint")]

    def fired() -> list[tuple[str, str]]:
        rows = interop._query(
            "SELECT workflow_uuid, status FROM {workflow_status} WHERE name = %s",
            ("every_second",),
        )
        return [(str(r[0]), str(r[1])) for r in rows]

    interop.wait_until(
        "six slots to run", lambda: len([r for r in fired() if r[1] == "SUCCESS"]) >= 6,
        timeout=60, watch=workers,
    )  # fmt: skip
    interop.kill(*workers)
    slots = [re.sub(r"^sched-.*?-(\d{4}-)", r"\1", wfid) for wfid, _ in fired()]
    assert all(wfid.startswith("sched-") for wfid, _ in fired())
    assert len(set(slots)) == len(slots), sorted(fired())
    ran: dict[str, int] = {}
    for pid in (w.pid for w in workers):
        for event in interop.process_events(pid):
            if event.startswith("tick:"):
                ran[event] = ran.get(event, 0) + 1
    assert ran and set(ran.values()) == {1}, ran
