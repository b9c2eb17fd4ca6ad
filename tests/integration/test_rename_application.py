"""``DBOSClient.rename_application`` and ``waypoint rename-application`` (both backends): after
an application is renamed, its queues, schedules, versions, workflows and steps belong to the
new name, so the renamed application launches onto its own history; unclaimed rows are adopted
on request; bad requests are refused in DBOS's words before anything moves.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest

from tests.integration import test_client
from tests.integration.test_cli import ok, wp
from waypoint import DBOS, DBOSClient, Queue, SetWorkflowID
from waypoint.error import DBOSException

make_client = test_client.make_client  # the fixture, shared

OLD = "waypoint-test"  # the name the ``config`` fixture gives the application
NEW = "renamed-app"


def owned_by(client: DBOSClient, name: str) -> set[str]:
    """The workflows whose row names ``name`` as their owner (a list filtered by application
    also shows the rows nobody owns)."""
    return {w.workflow_id for w in client.list_workflows() if w.application_name == name}


def make_history(dbos: type[DBOS]) -> list[str]:
    """Two finished workflows with two steps each, a stored queue, a schedule and the
    registered version, all owned by ``OLD``; then the application stops (its workflows stay
    registered and ``rename-q`` declared, for a relaunch)."""

    @DBOS.step()
    def add(x: int) -> int:
        return x + 1

    @DBOS.workflow(name="counted")
    def counted(x: int) -> int:
        return add(add(x))

    @DBOS.workflow(name="scheduled_one")
    def scheduled_one(when: Any, context: Any) -> None:
        return None

    Queue("rename-q")
    DBOS.launch()
    DBOS.register_queue("rename-stored")
    DBOS.create_schedule(
        schedule_name="rename-nightly", workflow_fn=scheduled_one, schedule="0 3 * * *"
    )
    ids = []
    for i in range(2):
        with SetWorkflowID(f"rename-done-{i}"):
            assert counted(i) == i + 2
        ids.append(f"rename-done-{i}")
    DBOS.destroy()
    return ids


def test_client_renames_an_application_which_then_runs_its_queued_work(
    dbos: type[DBOS], config: dict[str, Any], make_client: Callable[..., DBOSClient]
) -> None:
    done = make_history(dbos)
    as_old = make_client(application_name=OLD)
    waiting = {
        "workflow_name": "counted",
        "queue_name": "rename-q",
        "workflow_id": "rename-waiting",
    }
    as_old.enqueue(waiting, 40)  # queued while the application is down
    client = make_client()
    assert owned_by(client, OLD) == {*done, "rename-waiting"}

    moved = client.rename_application(OLD, NEW, batch_size=1)
    assert moved == {"queues": 1, "schedules": 1, "versions": 1, "workflows": 3, "steps": 4}
    assert owned_by(client, OLD) == set()
    assert owned_by(client, NEW) == {*done, "rename-waiting"}
    assert [q.name for q in client.list_queues(application_name=NEW)] == ["rename-stored"]
    schedules = client.list_schedules(application_name=NEW)
    assert [s["schedule_name"] for s in schedules] == ["rename-nightly"]
    assert len(client.list_workflow_steps("rename-done-0")) == 2
    # Moving again finds nothing; the async twin says so too.
    again = asyncio.run(client.rename_application_async(OLD, NEW))
    assert again == {"queues": 0, "schedules": 0, "versions": 0, "workflows": 0, "steps": 0}

    DBOS(config={**config, "name": NEW})  # type: ignore[typeddict-item]
    DBOS.launch()  # the renamed application claims the work that was queued under its old name
    assert DBOS.retrieve_workflow("rename-waiting").get_result() == 42


def test_unclaimed_rows_are_adopted_only_on_request(
    dbos: type[DBOS], make_client: Callable[..., DBOSClient]
) -> None:
    @DBOS.workflow(name="orphan")
    def orphan() -> str:
        return "ok"

    DBOS.launch()
    DBOS.destroy()
    client = make_client()  # a client with no application name writes unowned rows
    client.enqueue({"workflow_name": "orphan", "queue_name": "q", "workflow_id": "rename-orphan"})
    assert owned_by(client, NEW) == set()
    assert client.rename_application(None, NEW, adopt_unclaimed_rows=True)["workflows"] == 1
    assert "rename-orphan" in owned_by(client, NEW)


@pytest.mark.parametrize(
    ("args", "kwargs", "refusal"),
    [
        (("", NEW), {}, "The application's previous name cannot be empty."),
        ((None, NEW), {}, "Nothing to re-own"),
        ((OLD, "Not A Name"), {}, "Invalid application name 'Not A Name'"),
        ((NEW, NEW), {}, f"Application '{NEW}' already holds that name"),
    ],
)
def test_bad_requests_are_refused(
    db_url: str,
    make_client: Callable[..., DBOSClient],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    refusal: str,
) -> None:
    DBOS.reset_system_database(system_database_url=db_url, truncate=True)
    client = make_client()
    with pytest.raises(DBOSException, match=refusal.replace("(", r"\(").replace(")", r"\)")):
        client.rename_application(*args, **kwargs)
    with pytest.raises(ValueError, match="batch_size"):
        client.rename_application(OLD, NEW, batch_size=0)


def test_the_command_renames_and_says_how_many_rows_moved(dbos: type[DBOS], db_url: str) -> None:
    make_history(dbos)
    s = ["-s", db_url]
    refused = wp("rename-application", "--to", NEW, "-y", *s)
    assert refused.returncode == 1 and "nothing to re-own" in refused.stderr
    assert wp("rename-application", "--from", OLD, "--to", NEW, *s).returncode == 1  # asks first
    moved = json.loads(ok(wp("rename-application", "-f", OLD, "-t", NEW, "-y", "--json", *s)))
    assert moved == {"queues": 1, "schedules": 1, "versions": 1, "workflows": 2, "steps": 4}
    table = ok(wp("rename-application", "-f", OLD, "-t", NEW, "-y", *s))
    assert "workflows" in table and "steps" in table
