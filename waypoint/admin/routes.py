"""What each admin endpoint does, with its body validated field by field."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional
from urllib.parse import unquote

from waypoint.core import management
from waypoint.core.listing import build_filter
from waypoint.core.outcomes import to_status
from waypoint.core.types import WorkflowStatus, WorkflowStatusString
from waypoint.error import DBOSException
from waypoint.queues.model import QUEUES

if TYPE_CHECKING:
    from waypoint.core.runtime import Runtime


class ApiError(Exception):
    def __init__(
        self, status: int, code: str, message: str, headers: Optional[dict[str, str]] = None
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers
        super().__init__(message)


_STATUSES = {s.value for s in WorkflowStatusString}
_ACTIONS = {"steps", "cancel", "resume", "restart", "fork"}
_FIXED = {
    "/dbos-healthz": "GET",
    "/deactivate": "GET",
    "/dbos-workflow-queues-metadata": "GET",
    "/executors": "GET",
    "/dbos-workflow-recovery": "POST",
    "/workflows": "POST",
    "/queues": "POST",
    "/dbos-garbage-collect": "POST",
    "/dbos-global-timeout": "POST",
}
MAX_INT = 2**53  # larger numbers are never meaningful here and overflow the databases


def _clean(value: str, what: str, code: str = "invalid_field") -> str:
    """Reject strings no database column can hold (NUL, lone surrogates)."""
    if "\x00" in value:
        raise ApiError(400, code, f"{what} contains a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ApiError(400, code, f"{what} is not valid Unicode text") from None
    return value


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
    return _clean(value, key)


def _strs(body: dict[str, Any], key: str) -> Optional[list[str]]:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ApiError(400, "invalid_field", f"{key} must be a string or a list of strings")
    return [_clean(v, key) for v in value]


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


def _list(rt: Runtime, body: Any, queued: bool) -> list[dict[str, Any]]:
    b = _obj(body, _LIST_FIELDS)
    status = _strs(b, "status")
    if status is not None:
        bad = [x for x in status if x not in _STATUSES]
        if bad:
            raise ApiError(400, "invalid_field", f"unknown status {bad[0]!r}")
    limit = _int(b, "limit")
    if limit is not None and limit > 10_000:
        raise ApiError(400, "invalid_field", "limit can be at most 10000")
    if queued and status is None:
        status = ["ENQUEUED", "PENDING", "DELAYED"]
    try:
        flt = build_filter(
            workflow_ids=_strs(b, "workflow_uuids") or _strs(b, "workflow_ids"),
            user=_strs(b, "authenticated_user"),
            start_time=_str(b, "start_time"),
            end_time=_str(b, "end_time"),
            status=status,
            app_version=_strs(b, "application_version"),
            forked_from=_strs(b, "forked_from"),
            parent_workflow_id=_strs(b, "parent_workflow_id"),
            name=_strs(b, "workflow_name"),
            queue_name=_strs(b, "queue_name"),
            executor_id=_strs(b, "executor_id"),
            workflow_id_prefix=_strs(b, "workflow_id_prefix"),
            limit=limit if limit is not None else 1000,
            offset=_int(b, "offset"),
            sort_desc=_bool(b, "sort_desc", False),
            load_input=_bool(b, "load_input", False),
            load_output=_bool(b, "load_output", False),
            queues_only=queued,
            application_name=rt.app_name,
        )
    except DBOSException as exc:
        raise ApiError(400, "invalid_field", exc.message) from exc
    return [workflow_output(to_status(rt, row)) for row in rt.store.list_workflows(flt)]


def _queues_metadata(rt: Runtime) -> list[dict[str, Any]]:
    from waypoint.queues.dispatcher import config_from_row

    configs = {r.name: config_from_row(r) for r in rt.store.list_queues(rt.app_name)}
    for cfg in QUEUES.all():
        configs[cfg.name] = cfg
    out = []
    for name, cfg in sorted(configs.items()):
        item: dict[str, Any] = {"name": name}
        if cfg.global_concurrency is not None:
            item["concurrency"] = cfg.global_concurrency
        if cfg.worker_concurrency is not None:
            item["workerConcurrency"] = cfg.worker_concurrency
        if cfg.limiter is not None:
            item["rateLimit"] = cfg.limiter.as_dict()
        out.append(item)
    return out


def _health(rt: Runtime) -> tuple[int, Any]:
    try:
        rt.store.ping_once()
    except Exception as exc:
        return 503, {"status": "unhealthy", "error": str(exc).splitlines()[0] if str(exc) else ""}
    return 200, {"status": "healthy"}


def route(rt: Runtime, method: str, path: str, body: Any) -> tuple[int, Any]:
    """Dispatch on the raw (still percent-encoded) path: a workflow ID may contain "/"."""
    allowed = _FIXED.get(path)
    if allowed is not None and method != allowed:
        raise ApiError(405, "method_not_allowed", f"{path} takes {allowed}", {"Allow": allowed})
    if method == "GET" and path == "/dbos-healthz":
        return _health(rt)
    if method == "GET" and path == "/deactivate":
        rt.deactivate()
        return 200, "deactivated"
    if method == "GET" and path == "/dbos-workflow-queues-metadata":
        return 200, _queues_metadata(rt)
    if method == "GET" and path == "/executors":
        return 200, rt.executors()
    if method == "POST" and path == "/dbos-workflow-recovery":
        if not isinstance(body, list) or not all(isinstance(e, str) and e for e in body):
            raise ApiError(400, "invalid_body", "the body must be a JSON list of executor IDs")
        return 200, rt.recover(list(body))
    if method == "POST" and path == "/workflows":
        return 200, _list(rt, body, queued=False)
    if method == "POST" and path == "/queues":
        return 200, _list(rt, body, queued=True)
    if method == "POST" and path == "/dbos-garbage-collect":
        b = _obj(body, {"cutoff_epoch_timestamp_ms", "rows_threshold"})
        cutoff, rows = _int(b, "cutoff_epoch_timestamp_ms"), _int(b, "rows_threshold", minimum=1)
        if cutoff is None and rows is None:
            raise ApiError(400, "invalid_body", "give cutoff_epoch_timestamp_ms or rows_threshold")
        rt.store.garbage_collect(cutoff, rows, rt.app_name)
        return 204, None
    if method == "POST" and path == "/dbos-global-timeout":
        b = _obj(body, {"cutoff_epoch_timestamp_ms"})
        cutoff = _int(b, "cutoff_epoch_timestamp_ms")
        if cutoff is None:
            raise ApiError(400, "invalid_body", "cutoff_epoch_timestamp_ms is required")
        management.global_timeout(rt, cutoff)
        return 204, None
    parts = path.split("/")
    if len(parts) not in (3, 4) or parts[1] != "workflows" or not parts[2]:
        raise ApiError(404, "not_found", f"no endpoint {method} {path}")
    action = parts[3] if len(parts) == 4 else None
    if action is not None and action not in _ACTIONS:
        raise ApiError(404, "not_found", f"no endpoint {method} {path}")
    try:
        wfid = _clean(unquote(parts[2], errors="strict"), "the workflow ID", "bad_path")
    except UnicodeDecodeError:
        raise ApiError(400, "bad_path", "the workflow ID is not valid UTF-8") from None
    if method == "GET" and action is None:
        row = rt.store.get_workflow(wfid)
        if row is None:
            raise ApiError(404, "not_found", f"workflow {wfid} does not exist")
        return 200, workflow_output(to_status(rt, row))
    if method == "GET" and action == "steps":
        if rt.store.get_workflow(wfid) is None:
            raise ApiError(404, "not_found", f"workflow {wfid} does not exist")
        return 200, [
            {k: (None if v is None else str(v)) for k, v in step.items()}
            for step in management.steps(rt, wfid)
        ]
    if method != "POST" or action in (None, "steps"):
        raise ApiError(405, "method_not_allowed", f"{method} is not allowed on {path}")
    if rt.store.get_workflow(wfid) is None:
        raise ApiError(404, "not_found", f"workflow {wfid} does not exist")
    if action == "cancel":
        management.cancel(rt, [wfid], cancel_children=False)
        return 204, None
    if action == "resume":
        management.resume(rt, [wfid], None)
        return 204, None
    if action == "restart":
        return 200, {"workflow_id": management.fork(rt, wfid, 0)}
    b = _obj(body, {"start_step", "new_workflow_id", "application_version"})
    start = _int(b, "start_step")
    new_id = management.fork(
        rt,
        wfid,
        start if start is not None else 0,
        application_version=_str(b, "application_version"),
        new_workflow_id=_str(b, "new_workflow_id"),
    )
    return 200, {"workflow_id": new_id}
