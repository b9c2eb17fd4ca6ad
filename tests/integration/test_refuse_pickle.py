"""``refuse_pickle``: a process that never unpickles a row (both backends).

Unpickling runs whatever code the row's writer chose, so where the system database is shared
with writers one does not trust, the switch makes Waypoint read and write portable JSON only.
The hostile rows here are written by an ordinary (pickling) process, then read by a refusing
one: the refusing one must say why it cannot read them, never run them, and change nothing.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any

import pytest

from waypoint import (
    DBOS,
    DBOSClient,
    DBOSPortableJSONSerializer,
    Queue,
    Serializer,
    SetWorkflowID,
    WorkflowSerializationFormat,
)
from waypoint.core.runtime import get_runtime
from waypoint.error import DBOSInitializationError, WaypointPayloadError


class Hostile:
    """Pickles as a call that creates ``marker`` when the pickle is loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


def relaunch(config: dict[str, Any], **extra: Any) -> None:
    DBOS.destroy(destroy_registry=True)
    DBOS(config={**config, **extra})  # type: ignore[arg-type]


def test_hostile_rows_are_refused_and_never_run(
    dbos: type[DBOS], config: dict[str, Any], tmp_path: Path
) -> None:
    marker = tmp_path / "ran"

    @DBOS.workflow()
    def writer() -> Any:
        DBOS.set_event("evil", Hostile(marker))
        return Hostile(marker)

    @DBOS.workflow()
    def failing() -> None:
        raise ValueError("stored as a pickle")

    DBOS.launch()
    with SetWorkflowID("hostile"):
        writer()
    with SetWorkflowID("failed"):
        with pytest.raises(ValueError):
            failing()
    assert not marker.exists()
    before = get_runtime().store.get_workflow("hostile")

    relaunch(config, refuse_pickle=True)
    DBOS.launch()
    handle = DBOS.retrieve_workflow("hostile")
    with pytest.raises(WaypointPayloadError, match="refuse_pickle"):
        handle.get_result()
    with pytest.raises(WaypointPayloadError, match="refuse_pickle"):
        DBOS.get_event("hostile", "evil", timeout_seconds=0)
    # Listing and status still work: the pickled values are shown raw, not decoded.
    status = DBOS.get_workflow_status("hostile")
    assert status is not None and status.status == "SUCCESS"
    assert isinstance(status.output, str)
    listed = {w.workflow_id: w for w in DBOS.list_workflows()}
    assert isinstance(listed["hostile"].output, str)
    # A pickled error is still a failure, with its text withheld rather than unpickled.
    with pytest.raises(Exception, match="not decoded"):
        DBOS.retrieve_workflow("failed").get_result()
    assert not marker.exists()
    after = get_runtime().store.get_workflow("hostile")
    assert after is not None and before is not None
    assert (after.output, after.serialization, after.status) == (
        before.output,
        before.serialization,
        before.status,
    )


def test_a_refusing_process_writes_portable_json(dbos: type[DBOS], config: dict[str, Any]) -> None:
    relaunch(config, refuse_pickle=True)

    @DBOS.workflow()
    def greet(name: str, when: dt.date) -> dict[str, Any]:
        DBOS.set_event("seen", {"name": name})
        return {"hello": name, "on": when.isoformat()}

    @DBOS.workflow()
    def waiter() -> Any:
        return DBOS.recv("topic", timeout_seconds=30)

    @DBOS.workflow(serialization_type=WorkflowSerializationFormat.NATIVE)
    def native() -> int:
        return 1

    DBOS.launch()
    with SetWorkflowID("greet"):
        assert greet("ada", dt.date(2026, 12, 1)) == {"hello": "ada", "on": "2026-12-01"}
    row = get_runtime().store.get_workflow("greet")
    assert row is not None and row.serialization == "portable_json"
    assert DBOS.get_event("greet", "seen") == {"name": "ada"}

    handle = DBOS.start_workflow(waiter)
    DBOS.send(handle.workflow_id, [1, "two"], "topic")
    assert handle.get_result() == [1, "two"]

    with pytest.raises(WaypointPayloadError, match="refuse_pickle"):
        native()


def test_a_refusing_client(
    dbos: type[DBOS], config: dict[str, Any], db_url: str, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"

    @DBOS.workflow()
    def hostile() -> Any:
        return Hostile(marker)

    @DBOS.workflow()
    def echo(x: Any) -> Any:
        return x

    DBOS.launch()
    with SetWorkflowID("h"):
        hostile()
    client = DBOSClient(system_database_url=db_url, refuse_pickle=True)
    try:
        with pytest.raises(WaypointPayloadError, match="refuse_pickle"):
            client.retrieve_workflow("h").get_result()
        assert not marker.exists()
        # What the refusing client enqueues, it writes as portable JSON.
        handle = client.enqueue({"queue_name": "refusing", "workflow_name": echo.__qualname__}, 7)
        row = get_runtime().store.get_workflow(handle.workflow_id)
        assert row is not None and row.serialization == "portable_json"
    finally:
        client.destroy()


def test_a_queued_pickled_workflow_is_left_for_a_pickling_process(
    dbos: type[DBOS], config: dict[str, Any], db_url: str, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    relaunch(config, refuse_pickle=True)
    ran: list[Any] = []

    @DBOS.workflow()
    def consume(arg: Any) -> str:
        ran.append(arg)
        return "ran"

    Queue("mixed")
    DBOS.launch()
    pickling = DBOSClient(system_database_url=db_url)  # an ordinary writer: pickles
    try:
        handle = pickling.enqueue(
            {"queue_name": "mixed", "workflow_name": consume.__qualname__}, Hostile(marker)
        )
    finally:
        pickling.destroy()
    deadline = time.monotonic() + 60
    while DBOS.get_workflow_status(handle.workflow_id).status == "ENQUEUED":  # type: ignore[union-attr]
        assert time.monotonic() < deadline, "the refusing process never dequeued the workflow"
        time.sleep(0.05)
    time.sleep(0.5)  # give a wrong implementation the time to run or fail it
    status = DBOS.get_workflow_status(handle.workflow_id)
    assert status is not None and status.status == "PENDING"  # not run, not failed
    assert ran == [] and not marker.exists()


def test_schedule_contexts_are_read_with_the_serializer_that_wrote_them(
    dbos: type[DBOS], config: dict[str, Any]
) -> None:
    relaunch(config, refuse_pickle=True)

    @DBOS.workflow()
    def job(scheduled: dt.datetime, context: Any) -> Any:
        return context

    DBOS.launch()
    DBOS.create_schedule(
        schedule_name="ctx", workflow_fn=job, schedule="0 0 1 1 *", context={"k": [1, 2]}
    )
    got = DBOS.get_schedule("ctx")
    assert got is not None and got["context"] == {"k": [1, 2]}
    handle = DBOS.trigger_schedule("ctx")
    assert handle.get_result() == {"k": [1, 2]}


def test_bad_settings(config: dict[str, Any]) -> None:
    DBOS.destroy(destroy_registry=True)
    with pytest.raises(DBOSInitializationError, match="refuse_pickle must be a bool"):
        DBOS(config={**config, "refuse_pickle": "yes"})  # type: ignore[typeddict-item]
    DBOS.destroy(destroy_registry=True)

    class Pickles(Serializer):
        def serialize(self, data: Any) -> str:
            return ""

        def deserialize(self, serialized_data: str) -> Any:
            return None

        def name(self) -> str:
            return "py_pickle"

    with pytest.raises(DBOSInitializationError, match="refuse_pickle"):
        DBOS(config={**config, "refuse_pickle": True, "serializer": Pickles()})  # type: ignore[typeddict-item]
    DBOS.destroy(destroy_registry=True)
    # A custom serializer is the operator's own code: it may stand beside the switch.
    DBOS(config={**config, "refuse_pickle": True, "serializer": DBOSPortableJSONSerializer()})  # type: ignore[typeddict-item]
    DBOS.destroy(destroy_registry=True)
