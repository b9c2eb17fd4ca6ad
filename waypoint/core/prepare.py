"""Turning a call into the workflow row to write: its ID (given, derived from the parent's
step position, or fresh), options from the enclosing blocks, serialized inputs and, for
enqueues, where and how it waits. Nothing here writes; ``check_init`` then judges what the
database held for that ID.
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional

from waypoint.core.context import (
    TRACE_CARRIER_ATTRIBUTE,
    UNSET,
    auth_in_scope,
    current_request,
    current_run,
    current_step,
    start_options,
    take_workflow_id,
)
from waypoint.core.engine import Engine
from waypoint.core.ids import new_uuid, random_hex
from waypoint.core.registrations import WorkflowInfo, same_workflow
from waypoint.core.run import WorkflowRun
from waypoint.core.serialization import Serializer, positional_names
from waypoint.core.types import Auth, RequestInfo
from waypoint.error import (
    DBOSConflictingWorkflowError,
    DBOSException,
    DBOSUnexpectedStepError,
    WaypointPayloadError,
)
from waypoint.storage.protocol import ChildLink, InitOutcome, NewWorkflow

MAX_WORKFLOW_ID_LENGTH = 1024


def check_storable(text: str, what: str) -> str:
    """``text`` if every backend can store it as text: PostgreSQL refuses NUL, and no
    encoding holds an unpaired surrogate (``"\\ud800"``), which would otherwise fail deep in
    the driver with a message that names neither the value nor where it came from."""
    if "\x00" in text:
        raise ValueError(f"{what} cannot contain a NUL character")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"{what} is not valid Unicode text (an unpaired surrogate at position {exc.start})"
        ) from None
    return text


def validate_workflow_id(workflow_id: Any) -> str:
    if not isinstance(workflow_id, str):
        raise TypeError(f"a workflow ID must be a string, got {type(workflow_id).__name__}")
    if not workflow_id.strip():
        raise ValueError("a workflow ID cannot be empty or only whitespace")
    check_storable(workflow_id, "a workflow ID")
    if len(workflow_id) > MAX_WORKFLOW_ID_LENGTH:
        raise ValueError(
            f"a workflow ID can be at most {MAX_WORKFLOW_ID_LENGTH} characters, got "
            f"{len(workflow_id)}"
        )
    return workflow_id


@dataclass
class EnqueueSpec:
    """Where and how a workflow is enqueued instead of started."""

    queue_name: str
    deduplication_id: Optional[str] = None
    priority: Optional[int] = None
    partition_key: Optional[str] = None
    delay_seconds: Optional[float] = None
    app_version: Optional[str] = None
    duplication_policy: Optional[str] = None
    # False for enqueue-by-name and clients: the row gets no version unless one is given, so
    # it runs on whichever executor runs the latest version.
    versioned: bool = True
    config_name: Optional[str] = None
    timeout_sec: Optional[float] = None


@dataclass
class Start:
    info: WorkflowInfo
    workflow_id: str
    call_args: tuple[Any, ...]  # what the function is called with (self/cls included)
    kwargs: dict[str, Any]
    new: NewWorkflow
    link: Optional[ChildLink]
    parent: Optional[WorkflowRun]
    parent_fid: Optional[int]
    serializer: Serializer
    auth: Optional[Auth]
    request: Optional[RequestInfo] = None
    replayed_child: bool = False
    duplication_policy: Optional[str] = None


@functools.lru_cache(maxsize=1024)
def _takes_self(func: Callable[..., Any]) -> bool:
    try:
        params = list(inspect.signature(func).parameters)
    except (TypeError, ValueError):
        return False
    return bool(params) and params[0] == "self"


def split_bound(info: WorkflowInfo, args: tuple[Any, ...]) -> tuple[Any, tuple[Any, ...]]:
    """Separate ``self``/``cls`` (never stored) from the stored arguments. A method whose
    class is not a ``@DBOS.dbos_class`` could not be found again by recovery: refused here,
    before anything is written (DBOS's checks and wording)."""
    if info.kind in ("instance", "class") and args:
        if info.kind == "instance" and not hasattr(args[0], "config_name"):
            raise DBOSException(
                "Function target appears to be a class instance, but does not have "
                "`config_name` set"
            )
        return args[0], args[1:]
    if info.kind == "function" and args:
        if isinstance(args[0], type):
            raise DBOSException(
                "Function target appears to be a class, but is not properly registered"
            )
        if _takes_self(info.func):
            raise DBOSException(
                "Function target appears to be a class instance, but is not properly registered"
            )
    return None, args


def prepare(
    rt: Engine,
    info: WorkflowInfo,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    enqueue: Optional[EnqueueSpec] = None,
    workflow_id: Optional[str] = None,
) -> Start:
    """The row to write for this call; ``workflow_id`` (else ``SetWorkflowID``'s, else a
    fresh one) names it."""
    bound, stored_args = split_bound(info, args)
    if info.validate_args is not None:
        stored_args, kwargs = info.validate_args(stored_args, kwargs)
        stored_args = tuple(stored_args)
    parent = current_run.get() if current_step.get() is None else None
    explicit = workflow_id if workflow_id is not None else take_workflow_id()
    link: Optional[ChildLink] = None
    parent_fid: Optional[int] = None
    replayed_child = False
    if parent is not None:
        parent_fid = parent.next_function_id()
        rec = parent.replay.get(parent_fid)
        if rec is not None:
            if rec.child_workflow_id is None or not same_workflow(rec.function_name, info.name):
                raise DBOSUnexpectedStepError(
                    parent.workflow_id, parent_fid, info.name, rec.function_name
                )
            workflow_id = rec.child_workflow_id
            replayed_child = True
        else:
            workflow_id = explicit if explicit is not None else f"{parent.workflow_id}-{parent_fid}"
            link = ChildLink(
                parent_workflow_id=parent.workflow_id,
                function_id=parent_fid,
                function_name=info.name,
                parent_owner_xid=parent.owner_xid,
                started_at_epoch_ms=rt.now_ms(),
            )
    else:
        workflow_id = explicit if explicit is not None else new_uuid()
    validate_workflow_id(workflow_id)

    now = rt.now_ms()
    opts = start_options.get()
    timeout_ms: Optional[int] = None
    deadline: Optional[int] = None
    timeout_sec = opts.timeout_sec
    if enqueue is not None and enqueue.timeout_sec is not None:
        timeout_sec = enqueue.timeout_sec
    if timeout_sec is not UNSET:
        if timeout_sec is not None:
            timeout_ms = int(timeout_sec * 1000)
            deadline = None if enqueue is not None else now + timeout_ms
    elif parent is not None and parent.deadline_ms is not None:
        deadline = parent.deadline_ms

    auth = auth_in_scope() or (parent.auth if parent is not None else None)
    serializer = rt.codec.for_format(info.serialization)
    names = positional_names(info.func, skip_first=info.kind in ("instance", "class"))
    what = f"workflow {info.name!r}"
    inputs = rt.codec.encode_inputs(stored_args, kwargs, serializer, names=names, what=what)
    attributes: Optional[str] = None
    wanted = opts.attributes if opts.attributes is not UNSET else None
    if opts.trace_carrier:
        wanted = {**(wanted or {}), TRACE_CARRIER_ATTRIBUTE: opts.trace_carrier}
    if wanted is not None:
        try:
            attributes = json.dumps(wanted)
        except (TypeError, ValueError) as exc:
            raise WaypointPayloadError(f"workflow attributes must be JSON: {exc}") from exc

    class_name = info.class_name
    config_name = getattr(bound, "config_name", None) if info.kind == "instance" else None
    if enqueue is not None and enqueue.config_name is not None:
        config_name = enqueue.config_name
    new = NewWorkflow(
        workflow_id=workflow_id,
        status="PENDING",
        name=info.name,
        class_name=class_name,
        config_name=config_name,
        inputs=inputs,
        serialization=serializer.name(),
        owner_xid=random_hex(),
        executor_id=rt.executor_id,
        application_version=rt.app_version,
        application_id=rt.app_id,
        application_name=rt.app_name,
        created_at=now,
        authenticated_user=auth.user if auth else None,
        assumed_role=auth.assumed_role if auth else None,
        authenticated_roles=json.dumps(auth.roles) if auth and auth.roles else None,
        workflow_timeout_ms=timeout_ms,
        workflow_deadline_epoch_ms=deadline,
        parent_workflow_id=parent.workflow_id if parent is not None else None,
        attributes=attributes,
    )
    if enqueue is None and opts.enqueue_options_set and opts.app_version is not None:
        # SetEnqueueOptions(app_version=) pins a started workflow's version too (it decides
        # which executors may recover it), as in DBOS.
        new.application_version = opts.app_version
    if enqueue is not None:
        new.queue_name = enqueue.queue_name
        new.deduplication_id = enqueue.deduplication_id
        new.priority = enqueue.priority or 0
        new.queue_partition_key = enqueue.partition_key
        new.recovery_attempts = 0
        if enqueue.app_version is not None:
            new.application_version = enqueue.app_version
        elif not enqueue.versioned:
            new.application_version = None
        if enqueue.delay_seconds is not None and enqueue.delay_seconds > 0:
            new.status = "DELAYED"
            new.delay_until_epoch_ms = now + int(enqueue.delay_seconds * 1000)
        else:
            new.status = "ENQUEUED"
    call_args = (bound, *stored_args) if info.kind in ("instance", "class") else stored_args
    return Start(
        info=info,
        workflow_id=workflow_id,
        call_args=call_args,
        kwargs=kwargs,
        new=new,
        link=link,
        parent=parent,
        parent_fid=parent_fid,
        serializer=serializer,
        auth=auth,
        request=current_request.get() or (parent.request if parent is not None else None),
        replayed_child=replayed_child,
        duplication_policy=enqueue.duplication_policy if enqueue is not None else None,
    )


def check_init(st: Start, init: InitOutcome) -> None:
    if init.linked_child_id is not None and st.parent is not None:
        raise DBOSUnexpectedStepError(
            st.parent.workflow_id,
            st.parent_fid if st.parent_fid is not None else -1,
            st.info.name,
            f"{init.linked_function_name} (child {init.linked_child_id})",
        )
    if init.status == "MISSING":
        return
    if init.name is not None and not same_workflow(init.name, st.info.name):
        raise DBOSConflictingWorkflowError(
            st.workflow_id,
            f"Workflow already exists with a different function name: {init.name}, but the "
            f"provided function name is: {st.info.name}",
        )
    for what, had, given in (
        ("class", init.class_name, st.new.class_name),
        ("config", init.config_name, st.new.config_name),
    ):
        if (had or None) != (given or None):
            raise DBOSConflictingWorkflowError(
                st.workflow_id,
                f"Workflow already exists with a different {what} name: {had}, but the "
                f"provided {what} name is: {given}",
            )
