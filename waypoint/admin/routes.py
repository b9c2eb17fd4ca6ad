"""The DBOS admin endpoints, each a thin handler over the operations layer, with its body
validated field by field."""

from __future__ import annotations

from typing import Any, Optional

from waypoint._api import metrics as prometheus
from waypoint._api.ops import fleet, queues, workflows
from waypoint._api.ops.base import Ops
from waypoint._api.public_types import WorkflowStatus, WorkflowStatusString
from waypoint.admin.routing import ApiError, Request, Response, RouteTable, clean
from waypoint.error import DBOSException

_STATUSES = {s.value for s in WorkflowStatusString}
MAX_INT = 2**53  # larger numbers are never meaningful here and overflow the databases
MAX_LIST = 10_000


def _obj(body: Any, allowed: set[str]) -> dict[str, Any]:
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_body", "the body must be a JSON object")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise ApiError(400, "unknown_field", f"unknown field(s): {', '.join(unknown)}")
    return body


def _int(body: dict[str, Any], key: str, *, minimum: int = 0) -> Optional[int]:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= MAX_INT:
        raise ApiError(
            400, "invalid_field", f"{key} must be an integer from {minimum} to {MAX_INT}"
        )
    return value


def _str(body: dict[str, Any], key: str) -> Optional[str]:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ApiError(400, "invalid_field", f"{key} must be a non-empty string")
    return clean(value, key)


def _strs(body: dict[str, Any], key: str) -> Optional[list[str]]:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ApiError(400, "invalid_field", f"{key} must be a string or a list of strings")
    return [clean(v, key) for v in value]


def _bool(body: dict[str, Any], key: str, default: bool) -> bool:
    value = body.get(key, default)
    if not isinstance(value, bool):
        raise ApiError(400, "invalid_field", f"{key} must be true or false")
    return value


def workflow_output(status: WorkflowStatus) -> dict[str, Any]:
    """DBOS's WorkflowsOutput shape: PascalCase keys, values as strings."""

    def s(v: Any) -> Optional[str]:
        return None if v is None else str(v)

    return {
        "WorkflowUUID": status.workflow_id,
        "Status": status.status,
        "WorkflowName": status.name,
        "WorkflowClassName": status.class_name,
        "WorkflowConfigName": status.config_name,
        "AuthenticatedUser": status.authenticated_user,
        "AssumedRole": status.assumed_role,
        "AuthenticatedRoles": s(status.authenticated_roles),
        "Input": s(status.input),
        "Output": s(status.output),
        "Error": s(status.error),
        "CreatedAt": s(status.created_at),
        "UpdatedAt": s(status.updated_at),
        "QueueName": status.queue_name,
        "ApplicationVersion": status.app_version,
        "ExecutorID": status.executor_id,
        "WorkflowTimeoutMS": s(status.workflow_timeout_ms),
        "WorkflowDeadlineEpochMS": s(status.workflow_deadline_epoch_ms),
        "DeduplicationID": status.deduplication_id,
        "Priority": s(status.priority),
        "QueuePartitionKey": status.queue_partition_key,
        "ForkedFrom": status.forked_from,
        "WasForkedFrom": status.was_forked_from,
        "ParentWorkflowID": status.parent_workflow_id,
        "DequeuedAt": s(status.dequeued_at),
        "DelayUntilEpochMS": s(status.delay_until_epoch_ms),
        "CompletedAt": s(status.completed_at),
        "Attributes": status.attributes,
        "ScheduleName": status.schedule_name,
        "ApplicationName": status.application_name,
    }


_LIST_FIELDS = {
    "workflow_uuids",
    "workflow_ids",
    "authenticated_user",
    "start_time",
    "end_time",
    "status",
    "application_version",
    "forked_from",
    "parent_workflow_id",
    "workflow_name",
    "limit",
    "offset",
    "sort_desc",
    "workflow_id_prefix",
    "load_input",
    "load_output",
    "queue_name",
    "executor_id",
}


def _list_filters(body: Any, queued: bool) -> dict[str, Any]:
    b = _obj(body, _LIST_FIELDS)
    status = _strs(b, "status")
    if status is not None:
        bad = [x for x in status if x not in _STATUSES]
        if bad:
            raise ApiError(400, "invalid_field", f"unknown status {bad[0]!r}")
    limit = _int(b, "limit")
    if limit is not None and limit > MAX_LIST:
        raise ApiError(400, "invalid_field", f"limit can be at most {MAX_LIST}")
    return {
        "workflow_ids": _strs(b, "workflow_uuids") or _strs(b, "workflow_ids"),
        "user": _strs(b, "authenticated_user"),
        "start_time": _str(b, "start_time"),
        "end_time": _str(b, "end_time"),
        "status": status,
        "app_version": _strs(b, "application_version"),
        "forked_from": _strs(b, "forked_from"),
        "parent_workflow_id": _strs(b, "parent_workflow_id"),
        "name": _strs(b, "workflow_name"),
        "queue_name": _strs(b, "queue_name"),
        "executor_id": _strs(b, "executor_id"),
        "workflow_id_prefix": _strs(b, "workflow_id_prefix"),
        "limit": limit if limit is not None else 1000,
        "offset": _int(b, "offset"),
        "sort_desc": _bool(b, "sort_desc", False),
        "load_input": _bool(b, "load_input", False),
        "load_output": _bool(b, "load_output", False),
    }


def routes(ops: Ops) -> RouteTable:
    """DBOS's admin endpoints over ``ops`` (the launched runtime's operations)."""
    table = RouteTable()

    def health(req: Request) -> Response:
        problem = ops.run(fleet.health(ops))
        if problem is not None:
            return Response(503, {"status": "unhealthy", "error": problem})
        return Response(200, "healthy", content_type="text/plain")  # DBOS's plain text

    def deactivate(req: Request) -> Response:
        ops.run(fleet.deactivate(ops))
        return Response(200, "deactivated", content_type="text/plain")

    def queues_metadata(req: Request) -> Response:
        return Response(200, ops.run(queues.queues_metadata(ops)))

    def executors(req: Request) -> Response:
        return Response(200, ops.run(fleet.list_executors(ops)))

    def recovery(req: Request) -> Response:
        body = req.body
        if not isinstance(body, list) or not all(isinstance(e, str) and e for e in body):
            raise ApiError(400, "invalid_body", "the body must be a JSON list of executor IDs")
        return Response(200, ops.run(fleet.recover_executors(ops, list(body))))

    def metrics(req: Request) -> Response:
        rt = ops.runtime()
        found = prometheus.runtime_metrics(rt) if rt is not None else None
        if found is None:
            raise ApiError(503, "no_metrics", "no launched runtime to report on")
        return Response(200, found.exposition(), content_type=prometheus.CONTENT_TYPE)

    def listing(queued: bool) -> Any:
        lister = workflows.list_queued_workflows if queued else workflows.list_workflows

        def handler(req: Request) -> Response:
            filters = _list_filters(req.body, queued)
            try:
                found = ops.run(lister(ops, **filters))
            except DBOSException as exc:
                raise ApiError(400, "invalid_field", exc.message) from exc
            return Response(200, [workflow_output(s) for s in found])

        return handler

    def garbage_collect(req: Request) -> Response:
        b = _obj(req.body, {"cutoff_epoch_timestamp_ms", "rows_threshold"})
        cutoff, rows = _int(b, "cutoff_epoch_timestamp_ms"), _int(b, "rows_threshold", minimum=1)
        if cutoff is None and rows is None:
            raise ApiError(400, "invalid_body", "give cutoff_epoch_timestamp_ms or rows_threshold")
        ops.run(fleet.garbage_collect(ops, cutoff_epoch_timestamp_ms=cutoff, rows_threshold=rows))
        return Response(204)

    def global_timeout(req: Request) -> Response:
        b = _obj(req.body, {"cutoff_epoch_timestamp_ms"})
        cutoff = _int(b, "cutoff_epoch_timestamp_ms")
        if cutoff is None:
            raise ApiError(400, "invalid_body", "cutoff_epoch_timestamp_ms is required")
        ops.run(fleet.global_timeout(ops, cutoff))
        return Response(204)

    def existing(req: Request) -> str:
        wfid = req.params["workflow_id"]
        if ops.run(workflows.get_workflow_status(ops, wfid)) is None:
            raise ApiError(404, "not_found", f"workflow {wfid} does not exist")
        return wfid

    def get_workflow(req: Request) -> Response:
        wfid = req.params["workflow_id"]
        status = ops.run(workflows.get_workflow_status(ops, wfid))
        if status is None:
            raise ApiError(404, "not_found", f"workflow {wfid} does not exist")
        return Response(200, workflow_output(status))

    def steps(req: Request) -> Response:
        wfid = existing(req)
        found = ops.run(
            workflows.list_workflow_steps(
                ops, wfid, limit=req.query_int("limit"), offset=req.query_int("offset")
            )
        )
        return Response(
            200, [{k: (None if v is None else str(v)) for k, v in s.items()} for s in found]
        )

    def cancel(req: Request) -> Response:
        ops.run(workflows.cancel_workflow(ops, existing(req)))
        return Response(204)

    def resume(req: Request) -> Response:
        ops.run(workflows.resume_workflow(ops, existing(req)))
        return Response(204)

    def restart(req: Request) -> Response:
        return Response(
            200, {"workflow_id": ops.run(workflows.fork_workflow(ops, existing(req), 1))}
        )

    def fork(req: Request) -> Response:
        wfid = existing(req)
        b = _obj(req.body, {"start_step", "new_workflow_id", "application_version"})
        start = _int(b, "start_step")
        new_id = ops.run(
            workflows.fork_workflow(
                ops,
                wfid,
                start if start is not None else 1,
                application_version=_str(b, "application_version"),
                forked_workflow_id=_str(b, "new_workflow_id"),
            )
        )
        return Response(200, {"workflow_id": new_id})

    table.add("GET", "/dbos-healthz", health)
    table.add("GET", "/deactivate", deactivate)
    table.add("GET", "/dbos-workflow-queues-metadata", queues_metadata)
    table.add("GET", "/executors", executors)
    table.add("GET", "/metrics", metrics)
    table.add("POST", "/dbos-workflow-recovery", recovery)
    table.add("POST", "/workflows", listing(queued=False))
    table.add("POST", "/queues", listing(queued=True))
    table.add("POST", "/dbos-garbage-collect", garbage_collect)
    table.add("POST", "/dbos-global-timeout", global_timeout)
    table.add("GET", "/workflows/{workflow_id}", get_workflow)
    table.add("GET", "/workflows/{workflow_id}/steps", steps, query=("limit", "offset"))
    table.add("POST", "/workflows/{workflow_id}/cancel", cancel)
    table.add("POST", "/workflows/{workflow_id}/resume", resume)
    table.add("POST", "/workflows/{workflow_id}/restart", restart)
    table.add("POST", "/workflows/{workflow_id}/fork", fork)
    return table


# Endpoints that act on the application process itself; the standalone console has none.
NEEDS_APPLICATION = {"/deactivate", "/dbos-workflow-recovery", "/metrics"}


def standalone_routes(ops: Ops) -> RouteTable:
    """DBOS's admin endpoints for ``waypoint console``, which runs beside no application: the
    ones that read and manage the database work as in an application; the ones that act on an
    application process (deactivate it, recover work into it, its metrics) answer 503."""
    table = routes(ops)

    def no_application(req: Request) -> Response:
        raise ApiError(
            503,
            "no_application",
            f"{req.path} acts on an application process; this server (waypoint console) "
            "runs beside none: call the application's own admin server",
        )

    for route in table.routes:
        if route.pattern in NEEDS_APPLICATION:
            route.handler = no_application
    return table
