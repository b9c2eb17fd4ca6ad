"""Context managers that shape the next workflow started in their block."""

from __future__ import annotations

import contextvars
import dataclasses
import json
from types import TracebackType
from typing import Any, Optional

from waypoint.core.context import NextWorkflowID, StartOptions, current_auth, start_options
from waypoint.core.prepare import validate_workflow_id
from waypoint.core.types import Auth
from waypoint.queues.enqueue import check_duplication_policy, check_priority


class _StartOptionsBlock:
    """Base: swap in modified start options on enter, restore them on exit."""

    _token: Optional[contextvars.Token[StartOptions]] = None

    def _changes(self) -> dict[str, Any]:
        raise NotImplementedError

    def __enter__(self) -> Any:
        self._token = start_options.set(dataclasses.replace(start_options.get(), **self._changes()))
        return self

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        if self._token is not None:
            start_options.reset(self._token)
            self._token = None


class SetWorkflowID(_StartOptionsBlock):
    """The first workflow started or enqueued in the block gets this ID."""

    def __init__(self, wfid: str) -> None:
        self.workflow_id = validate_workflow_id(wfid)

    def _changes(self) -> dict[str, Any]:
        return {"next_id": NextWorkflowID(self.workflow_id)}


class SetWorkflowTimeout(_StartOptionsBlock):
    """Start-to-close timeout for workflows started in the block (``None`` clears one)."""

    def __init__(self, workflow_timeout_sec: Optional[float]) -> None:
        if workflow_timeout_sec is not None:
            if isinstance(workflow_timeout_sec, bool) or not isinstance(
                workflow_timeout_sec, (int, float)
            ):
                raise TypeError("workflow_timeout_sec must be a number of seconds or None")
            if workflow_timeout_sec <= 0:
                raise ValueError(
                    f"workflow_timeout_sec must be positive, got {workflow_timeout_sec}"
                )
        self.workflow_timeout_sec = workflow_timeout_sec

    def _changes(self) -> dict[str, Any]:
        return {"timeout_sec": self.workflow_timeout_sec}


class SetEnqueueOptions(_StartOptionsBlock):
    """Queue options for workflows enqueued in the block."""

    def __init__(
        self,
        *,
        deduplication_id: Optional[str] = None,
        priority: Optional[int] = None,
        app_version: Optional[str] = None,
        queue_partition_key: Optional[str] = None,
        delay_seconds: Optional[float] = None,
        duplication_policy: Optional[str] = None,
    ) -> None:
        check_priority(priority)
        if delay_seconds is not None and (
            not isinstance(delay_seconds, (int, float)) or delay_seconds < 0
        ):
            raise ValueError(f"delay_seconds must be a non-negative number, got {delay_seconds!r}")
        if duplication_policy not in (None, "reject", "return-existing"):
            check_duplication_policy(duplication_policy, None, None)  # raises: no such policy
        self.options = {
            "deduplication_id": deduplication_id,
            "priority": priority,
            "app_version": app_version,
            "queue_partition_key": queue_partition_key,
            "delay_seconds": delay_seconds,
            "duplication_policy": duplication_policy,
            "enqueue_options_set": True,
        }

    def _changes(self) -> dict[str, Any]:
        return self.options


class SetWorkflowAttributes(_StartOptionsBlock):
    """JSON attributes attached to workflows created in the block (not inherited)."""

    def __init__(self, attributes: Optional[dict[str, Any]]) -> None:
        if attributes is not None:
            if not isinstance(attributes, dict):
                raise TypeError("workflow attributes must be a dict")
            try:
                json.dumps(attributes)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"workflow attributes must be JSON-serializable: {exc}") from exc
        self.attributes = attributes

    def _changes(self) -> dict[str, Any]:
        return {"attributes": self.attributes}


class DBOSContextEnsure:
    """Kept for API compatibility: Waypoint's context always exists."""

    def __enter__(self) -> DBOSContextEnsure:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


class DBOSContextSetAuth:
    """Authenticated user and roles for workflows started in the block."""

    def __init__(self, user: Optional[str], roles: Optional[list[str]]) -> None:
        self.auth = Auth(user, list(roles) if roles is not None else None)
        self._token: Optional[contextvars.Token[Optional[Auth]]] = None

    def __enter__(self) -> DBOSContextSetAuth:
        self._token = current_auth.set(self.auth)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._token is not None:
            current_auth.reset(self._token)
            self._token = None
