"""Turning what the operations layer returns into what templates show: times, durations,
the step timeline's geometry, and the workflows list's filters parsed from a query string."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any, Optional
from urllib.parse import urlencode

from waypoint._api.ops.observe import STATUSES, StepRow, WorkflowRow

PAGE_SIZES = (20, 50, 100, 200, 500)
TEXT_FILTERS = {
    "name": "Name",
    "queue_name": "Queue",
    "executor_id": "Executor",
    "app_version": "Version",
    "workflow_id_prefix": "ID prefix",
    "parent_workflow_id": "Parent",
    "forked_from": "Forked from",
}
TERMINAL = {"SUCCESS", "ERROR", "CANCELLED", "MAX_RECOVERY_ATTEMPTS_EXCEEDED"}


class BadInput(ValueError):
    """A query or form value the console cannot use; the message names it."""


def when(ms: Optional[int]) -> str:
    if ms is None:
        return ""
    moment = dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{moment.microsecond // 1000:03d}"


def duration(ms: Optional[float]) -> str:
    if ms is None:
        return ""
    if ms < 1000:
        return f"{ms:.0f} ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f} s"
    if ms < 3_600_000:
        return f"{ms / 60_000:.1f} min"
    return f"{ms / 3_600_000:.1f} h"


def count(n: int, cap: int) -> str:
    return f"{cap:,}+" if n >= cap else f"{n:,}"


# -- the workflows list's query -----------------------------------------------------------------


@dataclass
class ListQuery:
    """The workflows list's filters, sort and position, as read from the query string."""

    statuses: list[str] = field(default_factory=list)
    text: dict[str, str] = field(default_factory=dict)
    start: str = ""
    end: str = ""
    attributes: str = ""
    sort_desc: bool = True
    after: Optional[tuple[int, str]] = None
    limit: int = 50

    def filters(self) -> dict[str, Any]:
        """Keyword filters for ``list_workflows``."""
        out: dict[str, Any] = {k: v for k, v in self.text.items() if v}
        if self.statuses:
            out["status"] = list(self.statuses)
        if self.start:
            out["start_time"] = self.start
        if self.end:
            out["end_time"] = self.end
        if self.attributes:
            out["attributes"] = json.loads(self.attributes)
        return out

    def params(self, **change: Any) -> str:
        """This query as a query string, with some fields changed (``after`` dropped unless
        given: a new filter or sort starts from the first page)."""
        items: list[tuple[str, str]] = [("status", s) for s in self.statuses]
        items += [(k, v) for k, v in self.text.items() if v]
        for key in ("start", "end", "attributes"):
            if getattr(self, key):
                items.append((key, getattr(self, key)))
        sort_desc = change.get("sort_desc", self.sort_desc)
        items.append(("sort", "desc" if sort_desc else "asc"))
        items.append(("limit", str(self.limit)))
        after = change.get("after")
        if after is not None:
            items += [("after_at", str(after[0])), ("after_id", after[1])]
        return urlencode(items)


def whole(text: str, signed: bool = False) -> bool:
    """A whole number as a form or URL sends one: ASCII digits (``str.isdigit`` also takes
    "²", which ``int`` refuses), at most 18 of them (a BIGINT column's range)."""
    digits = text[1:] if signed and text.startswith("-") else text
    return 0 < len(digits) <= 18 and digits.isascii() and digits.isdigit()


def parse_list_query(query: Any) -> ListQuery:
    """A ``ListQuery`` from a request's query parameters; ``BadInput`` names a bad one."""
    q = ListQuery()
    q.statuses = [s for s in query.getlist("status") if s]
    bad = [s for s in q.statuses if s not in STATUSES]
    if bad:
        raise BadInput(f"unknown status {bad[0]!r}; use one of {', '.join(STATUSES)}")
    q.text = {k: query.get(k, "").strip() for k in TEXT_FILTERS}
    for key in ("start", "end"):
        value = query.get(key, "").strip()
        if value:
            try:
                dt.datetime.fromisoformat(value)
            except ValueError:
                raise BadInput(
                    f"{key} must be a date and time (YYYY-MM-DDTHH:MM), got {value!r}"
                ) from None
        setattr(q, key, value)
    q.attributes = query.get("attributes", "").strip()
    if q.attributes:
        try:
            parsed = json.loads(q.attributes)
        except ValueError:
            raise BadInput('attributes must be a JSON object, e.g. {"tenant": "a"}') from None
        if not isinstance(parsed, dict):
            raise BadInput('attributes must be a JSON object, e.g. {"tenant": "a"}')
    sort = query.get("sort", "desc")
    if sort not in ("asc", "desc"):
        raise BadInput(f"sort must be 'asc' or 'desc', got {sort!r}")
    q.sort_desc = sort == "desc"
    limit = query.get("limit", "50")
    if not whole(limit) or int(limit) not in PAGE_SIZES:
        raise BadInput(f"limit must be one of {', '.join(map(str, PAGE_SIZES))}, got {limit!r}")
    q.limit = int(limit)
    after_at, after_id = query.get("after_at"), query.get("after_id")
    if after_at is not None or after_id is not None:
        if after_at is None or after_id is None or not whole(after_at, signed=True):
            raise BadInput("after_at (epoch ms) and after_id go together")
        q.after = (int(after_at), after_id)
    return q


# -- the step timeline --------------------------------------------------------------------------


@dataclass
class Bar:
    """One row of the timeline: a step (or a child workflow under the step that started
    it), placed in percent of the workflow's span."""

    label: str
    kind: str  # step, sleep, wait, send, event, child, error
    left: float
    width: float
    took: str
    function_id: Optional[int] = None
    child_id: Optional[str] = None
    child_status: str = ""
    depth: int = 0
    started: str = ""
    error: bool = False


WAITS = ("DBOS.recv", "DBOS.getEvent", "DBOS.get_event", "DBOS.readStream", "DBOS.getResult")


def step_kind(step: StepRow) -> str:
    name = step.function_name
    if step.error is not None:
        return "error"
    if name == "DBOS.sleep":
        return "sleep"
    if name in WAITS or name.startswith("DBOS.wait"):
        return "wait"
    if name == "DBOS.send":
        return "send"
    if name in ("DBOS.setEvent", "DBOS.writeStream"):
        return "event"
    if step.child_workflow_id is not None:
        return "child"
    return "step"


def timeline(
    row: WorkflowRow,
    steps: list[StepRow],
    children: dict[str, WorkflowRow],
    now_ms: int,
    exhausted: Optional[set[int]] = None,
) -> list[Bar]:
    """The Gantt rows: each step from its start to its completion, with each child workflow
    nested under the step that started it, spanning the child's own run."""
    start = row.created_at or 0
    stamps = [start]
    for s in steps:
        stamps += [t for t in (s.started_at_epoch_ms, s.completed_at_epoch_ms) if t is not None]
    for c in children.values():
        stamps += [t for t in (c.created_at, c.updated_at) if t is not None]
    end = row.updated_at if row.status in TERMINAL and row.updated_at else now_ms
    end = max([end, *stamps])
    span = max(end - start, 1)

    def place(begin: Optional[int], finish: Optional[int]) -> tuple[float, float, str]:
        b = begin if begin is not None else finish if finish is not None else start
        f = finish if finish is not None else now_ms
        left = max(0.0, min(100.0, (b - start) * 100 / span))
        width = max(0.4, min(100.0 - left, (f - b) * 100 / span))
        return round(left, 2), round(width, 2), duration(max(f - b, 0))

    bars = []
    nested: set[str] = set()
    for s in steps:
        left, width, took = place(s.started_at_epoch_ms, s.completed_at_epoch_ms)
        retried = exhausted is not None and s.function_id in exhausted
        bars.append(
            Bar(
                s.function_name + (" (retries exhausted)" if retried else ""),
                step_kind(s),
                left,
                width,
                took,
                s.function_id,
                s.child_workflow_id,
                started=when(s.started_at_epoch_ms),
                error=s.error is not None,
            )
        )
        child = children.get(s.child_workflow_id or "")
        if child is not None and child.workflow_id not in nested:  # (getResult names it too)
            nested.add(child.workflow_id)
            finish = child.updated_at if child.status in TERMINAL else None
            c_left, c_width, c_took = place(child.created_at, finish)
            bars.append(
                Bar(
                    child.name or child.workflow_id,
                    "child",
                    c_left,
                    c_width,
                    c_took,
                    child_id=child.workflow_id,
                    child_status=child.status,
                    depth=1,
                    started=when(child.created_at),
                )
            )
    return bars


def fork_from_failure(steps: list[StepRow]) -> int:
    """The step a fork "from the failure" restarts at: the first that recorded an error, else
    the one after the last recorded (where the run stopped)."""
    for s in steps:
        if s.error is not None:
            return s.function_id
    return (steps[-1].function_id + 1) if steps else 1
