"""What is in scope for the code running now: options for the next start, the workflow run,
the step, the authenticated user and the HTTP request being handled.

Each lives in its own ``ContextVar`` so threads and asyncio tasks see their own values;
``asyncio`` copies the context into new tasks, which is how ``gather`` of steps inside an async
workflow shares that workflow's run.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

from waypoint.core.types import Auth, RequestInfo

if TYPE_CHECKING:
    from waypoint.core.run import WorkflowRun


class _Unset:
    __repr__ = lambda self: "UNSET"  # noqa: E731


UNSET: Any = _Unset()


@dataclass
class NextWorkflowID:
    """The ID ``SetWorkflowID`` assigns; the first workflow started in the block takes it."""

    workflow_id: Optional[str]


@dataclass
class StartOptions:
    """Options set by context managers for workflows started in their block."""

    next_id: Optional[NextWorkflowID] = None
    timeout_sec: Any = UNSET  # float, None (explicitly cleared) or UNSET (inherit)
    deduplication_id: Optional[str] = None
    priority: Optional[int] = None
    app_version: Optional[str] = None
    queue_partition_key: Optional[str] = None
    delay_seconds: Optional[float] = None
    duplication_policy: Optional[str] = None
    attributes: Any = UNSET
    enqueue_options_set: bool = False
    # A W3C trace carrier (PropagateOtelContext) stored with the workflow under
    # TRACE_CARRIER_ATTRIBUTE, beside the attributes rather than in them, so the two blocks
    # nest in either order.
    trace_carrier: Optional[dict[str, str]] = None


# The workflow attribute holding the trace carrier, as DBOS names it: a workflow enqueued by
# DBOS continues its trace here, and the other way round.
TRACE_CARRIER_ATTRIBUTE = "dbos.otelContext"


@dataclass
class StepState:
    step_id: int
    name: str
    current_attempt: Optional[int] = None
    max_attempts: Optional[int] = None
    extra: dict[str, Any] = field(default_factory=dict)


_NO_OPTIONS = StartOptions()  # never mutated: blocks install modified copies
start_options: contextvars.ContextVar[StartOptions] = contextvars.ContextVar(
    "waypoint_start_options",
    default=_NO_OPTIONS,
)
current_run: contextvars.ContextVar[Optional[WorkflowRun]] = contextvars.ContextVar(
    "waypoint_current_run", default=None
)
current_step: contextvars.ContextVar[Optional[StepState]] = contextvars.ContextVar(
    "waypoint_current_step", default=None
)
current_auth: contextvars.ContextVar[Optional[Auth]] = contextvars.ContextVar(
    "waypoint_current_auth", default=None
)
current_request: contextvars.ContextVar[Optional[RequestInfo]] = contextvars.ContextVar(
    "waypoint_current_request", default=None
)


@dataclass
class HandlerAuth:
    """The authentication set while handling one HTTP request, shared by every copy of the
    request's context: FastAPI runs sync dependencies on threads with copies of it, and what
    one of them sets (``set_authentication``) must reach the handler, as in DBOS."""

    auth: Optional[Auth] = None


handler_auth: contextvars.ContextVar[Optional[HandlerAuth]] = contextvars.ContextVar(
    "waypoint_handler_auth", default=None
)


def auth_in_scope() -> Optional[Auth]:
    """The authentication in force here: set in this context, else set for the request."""
    auth = current_auth.get()
    if auth is None:
        cell = handler_auth.get()
        if cell is not None:
            return cell.auth
    return auth


def take_workflow_id() -> Optional[str]:
    """Consume the ID set by ``SetWorkflowID`` for this start, if any."""
    holder = start_options.get().next_id
    if holder is None or holder.workflow_id is None:
        return None
    wfid, holder.workflow_id = holder.workflow_id, None
    return wfid
