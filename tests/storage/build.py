"""Records for the conformance tests, with defaults the tests override by keyword."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from waypoint.storage.protocol import (
    ClaimRequest,
    EventWrite,
    ForkRequest,
    NewMessage,
    NewWorkflow,
    StepRecord,
    Store,
    StreamWrite,
    WorkflowRow,
)

APP = "app"
VERSION = "v1"
EXECUTOR = "exec-1"
T0 = 1_700_000_000_000  # created_at of the first workflow; tests count from here


def workflow(workflow_id: str, **fields: Any) -> NewWorkflow:
    """A PENDING workflow owned by the run token ``run-<workflow_id>``."""
    values: dict[str, Any] = {
        "status": "PENDING",
        "name": "wf",
        "class_name": None,
        "config_name": None,
        "inputs": '{"args": [], "kwargs": {}}',
        "serialization": "json",
        "owner_xid": f"run-{workflow_id}",
        "executor_id": EXECUTOR,
        "application_version": VERSION,
        "application_id": None,
        "application_name": APP,
        "created_at": T0,
    }
    values.update(fields)
    return NewWorkflow(workflow_id=workflow_id, **values)


def queued(workflow_id: str, queue: str = "q", **fields: Any) -> NewWorkflow:
    values: dict[str, Any] = {
        "status": "ENQUEUED",
        "owner_xid": f"enqueue-{workflow_id}",
        "executor_id": None,
    }
    values.update(fields)
    return workflow(workflow_id, queue_name=queue, **values)


def start(store: Store, workflow_id: str, **fields: Any) -> NewWorkflow:
    """Create a workflow (PENDING unless ``status`` says otherwise) and check it was."""
    wf = workflow(workflow_id, **fields)
    assert store.init_workflow(wf, None).created
    return wf


def enqueue(store: Store, workflow_id: str, queue: str = "q", **fields: Any) -> NewWorkflow:
    wf = queued(workflow_id, queue, **fields)
    assert store.init_workflow(wf, None).created
    return wf


def with_everything(store: Store, workflow_id: str) -> NewWorkflow:
    """A PENDING workflow with one of each thing kept for it: a step, an event, a stream
    value and a message."""
    wf = start(store, workflow_id)
    store.record_step(step(workflow_id, 1, wf.owner_xid))
    store.set_event(EventWrite(workflow_id, "k", '"v"', "json", 1), None)
    store.write_stream(StreamWrite(workflow_id, "s", '"v"', "json", 1, "wf:1"), None)
    store.send_messages([NewMessage(f"m-{workflow_id}", workflow_id, "t", '"v"', "json")], None)
    return wf


def step(workflow_id: str, function_id: int, owner_xid: str, **fields: Any) -> StepRecord:
    values: dict[str, Any] = {
        "function_name": f"step{function_id}",
        "output": f'"out-{function_id}"',
        "error": None,
        "serialization": "json",
        "started_at_epoch_ms": T0,
        "completed_at_epoch_ms": T0 + 1,
    }
    values.update(fields)
    return StepRecord(workflow_id, function_id, owner_xid=owner_xid, **values)


def claim_request(queue: str = "q", limit: int = 10, **fields: Any) -> ClaimRequest:
    values: dict[str, Any] = {
        "executor_id": EXECUTOR,
        "application_version": VERSION,
        "application_name": APP,
        "claim_token": f"claim-{queue}",
    }
    values.update(fields)
    return ClaimRequest(queue_name=queue, limit=limit, **values)


def fork_request(source_id: str, new_id: str, start_step: int, **fields: Any) -> ForkRequest:
    values: dict[str, Any] = {"queue_name": "forks", "now_ms": T0 + 1000, "owner_xid": "fork"}
    values.update(fields)
    return ForkRequest(source_id, new_id, start_step, **values)


def ids(rows: Iterable[WorkflowRow]) -> list[str]:
    return [r.workflow_id for r in rows]


def status(store: Store, workflow_id: str) -> str | None:
    row = store.get_workflow(workflow_id)
    return row.status if row is not None else None
