"""What the console reads: pages of workflows, capped counts, one workflow with everything
recorded for it, queue, fleet, schedule and retention pictures.

Payloads stay serialized here. A value written as portable JSON is parsed (JSON runs no
code); any other (pickle, a custom serializer) is described by its serializer and size, and
decoded only when the caller asks, because unpickling stored bytes runs code.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import pickletools
from dataclasses import dataclass, field
from typing import Any, Optional

from waypoint._api.ops.base import Ops
from waypoint.core.effects import Flow, Io
from waypoint.core.listing import build_filter
from waypoint.core.serialization import PICKLE_NAME, PORTABLE_NAME
from waypoint.core.types import WorkflowStatusString
from waypoint.error import DBOSException
from waypoint.scheduling.cron import next_time, zone
from waypoint.storage.protocol import (
    DatabaseGauges,
    EventHistoryRow,
    ExecutorRow,
    MessageRow,
    QueueRow,
    ScheduleFilter,
    ScheduleRow,
    StepRow,
    StreamRow,
    Throughput,
    VersionRow,
    WorkflowRow,
)

__all__ = [
    "STATUSES",
    "DatabaseGauges",
    "ExecutorRow",
    "Fleet",
    "QueuePicture",
    "Retention",
    "ScheduleView",
    "Shown",
    "StepRow",
    "VersionRow",
    "WorkflowDetail",
    "WorkflowRow",
]

STATUSES = [s.value for s in WorkflowStatusString]
COUNT_CAP = 10_000  # counts stop here: "10,000+" is as useful as an exact figure, and bounded
DETAIL_LIMIT = 500  # rows of each kind (messages, event history, stream values) on a page
AGE_BANDS_MS = [3_600_000, 86_400_000, 7 * 86_400_000, 30 * 86_400_000]
AGE_BAND_NAMES = ["< 1 hour", "< 1 day", "< 7 days", "< 30 days", "older"]


# -- values -------------------------------------------------------------------------------------


@dataclass
class Shown:
    """A stored value as the console may show it: ``kind`` is "none", "json" (``text`` is
    pretty JSON), "opaque" (only ``serializer``, ``type_name`` and ``size`` are known),
    "decoded" (``text`` is the repr of the decoded value) or "undecodable"."""

    kind: str
    text: str = ""
    serializer: str = ""
    type_name: str = ""
    size: int = 0
    decodable: bool = True  # False where this engine refuses to unpickle


SIMPLE_OPCODES = {
    "EMPTY_DICT": "dict",
    "EMPTY_LIST": "list",
    "EMPTY_TUPLE": "tuple",
    "MARK": "tuple",
    "NONE": "NoneType",
    "NEWTRUE": "bool",
    "NEWFALSE": "bool",
    "BININT": "int",
    "BININT1": "int",
    "BININT2": "int",
    "LONG1": "int",
    "BINFLOAT": "float",
    "SHORT_BINBYTES": "bytes",
    "BINBYTES": "bytes",
    "EMPTY_SET": "set",
}
UNICODE_OPCODES = ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE")
NOISE_OPCODES = ("PROTO", "FRAME", "MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT")


def _pickled_type(text: str) -> str:
    """The type a base64 pickle holds, read from its opcodes without running any of them:
    a class is named by GLOBAL, or by two strings then STACK_GLOBAL."""
    try:
        raw = base64.b64decode(text, validate=True)
        ops = [(op.name, arg) for op, arg, _ in pickletools.genops(raw)]
    except Exception:  # not base64, or not a pickle: still just bytes
        return "unknown"
    ops = [(name, arg) for name, arg in ops if name not in NOISE_OPCODES]
    if not ops:
        return "unknown"
    if len(ops) > 1 and ops[-2][0] in ("TUPLE", "TUPLE1", "TUPLE2", "TUPLE3"):
        return "tuple"  # built last, from the values before it
    name, arg = ops[0]
    if name == "GLOBAL":
        return str(arg).replace(" ", ".")
    if name in UNICODE_OPCODES:
        if len(ops) > 2 and ops[1][0] in UNICODE_OPCODES and ops[2][0] == "STACK_GLOBAL":
            return f"{arg}.{ops[1][1]}"
        return "str"
    return SIMPLE_OPCODES.get(name, "object")


def show_value(ops: Ops, text: Optional[str], serialization: Optional[str], decode: bool) -> Shown:
    """How to show a stored value; decodes a non-JSON one only when ``decode`` is set."""
    if text is None:
        return Shown("none")
    name = serialization or PICKLE_NAME
    if name == PORTABLE_NAME:
        try:
            return Shown("json", json.dumps(json.loads(text), indent=2), name, size=len(text))
        except ValueError:
            return Shown("undecodable", text, name, size=len(text))
    type_name = _pickled_type(text) if name == PICKLE_NAME else "?"
    codec = ops.engine().codec
    refused = name == PICKLE_NAME and codec.refuse_pickle  # never unpickles, asked or not
    if not decode or refused:
        return Shown("opaque", "", name, type_name, len(text), decodable=not refused)
    try:
        value = codec.decode(text, serialization)
    except DBOSException as exc:
        return Shown("undecodable", str(exc), name, type_name, len(text))
    return Shown("decoded", repr(value), name, type(value).__name__, len(text))


# -- the workflows list -------------------------------------------------------------------------


def workflow_page(
    ops: Ops, *, after: Optional[tuple[int, str]], sort_desc: bool, limit: int, **filters: Any
) -> Flow[list[WorkflowRow]]:
    """One page of workflows (no inputs or outputs loaded), continuing after ``after``."""
    flt = build_filter(**filters, limit=limit, sort_desc=sort_desc)
    flt.load_input = flt.load_output = False
    flt.after = after
    eng = ops.engine()
    if flt.application_name is None:
        flt.application_name = eng.app_name
    rows: list[WorkflowRow] = yield Io(lambda: eng.store.list_workflows(flt))
    return rows


def status_counts(ops: Ops) -> Flow[dict[str, int]]:
    """Workflows per status, each counted up to ``COUNT_CAP``."""
    eng = ops.engine()
    counts: dict[str, int] = yield Io(
        lambda: eng.store.count_capped("status", STATUSES, eng.app_name, COUNT_CAP)
    )
    return counts


# -- one workflow -------------------------------------------------------------------------------


@dataclass
class WorkflowDetail:
    row: WorkflowRow
    steps: list[StepRow]
    children: list[WorkflowRow]
    forks: list[WorkflowRow]
    events: dict[str, tuple[str, Optional[str]]]
    event_history: list[EventHistoryRow]
    messages: list[MessageRow]
    streams: list[StreamRow]


def workflow_detail(ops: Ops, workflow_id: str) -> Flow[Optional[WorkflowDetail]]:
    """Everything recorded for one workflow, payloads still serialized (None: no such one)."""
    eng = ops.engine()
    store = eng.store
    found = yield Io(lambda: store.get_workflow(workflow_id))
    if found is None:
        return None
    row: WorkflowRow = found

    def related(key: str) -> list[WorkflowRow]:
        flt = build_filter(**{key: workflow_id}, limit=DETAIL_LIMIT)
        flt.load_input = flt.load_output = False
        return store.list_workflows(flt)

    steps = yield Io(lambda: store.list_steps(workflow_id, None, None))
    children = yield Io(lambda: related("parent_workflow_id"))
    forks = yield Io(lambda: related("forked_from"))
    events = yield Io(lambda: store.get_events(workflow_id))
    history = yield Io(lambda: store.event_history(workflow_id, DETAIL_LIMIT))
    messages = yield Io(lambda: store.messages_to(workflow_id, DETAIL_LIMIT))
    streams = yield Io(lambda: store.stream_values(workflow_id, DETAIL_LIMIT))
    return WorkflowDetail(row, steps, children, forks, events, history, messages, streams)


# -- queues -------------------------------------------------------------------------------------


@dataclass
class QueuePicture:
    gauges: DatabaseGauges
    configs: dict[str, QueueRow]
    # queue name -> completions per minute over the window, oldest minute first
    throughput: dict[str, list[int]]
    minutes: int


def queue_picture(ops: Ops, minutes: int = 10) -> Flow[QueuePicture]:
    """Backlog per queue and partition, the queues' limits, completions per minute."""
    eng = ops.engine()
    store = eng.store
    gauges: DatabaseGauges = yield Io(store.database_gauges)
    rows: list[QueueRow] = yield Io(lambda: store.list_queues(eng.app_name))
    now_minute = gauges.db_now_ms // 60000
    since = (now_minute - minutes + 1) * 60000
    done: list[Throughput] = yield Io(lambda: store.completions_since(since, eng.app_name))
    throughput: dict[str, list[int]] = {}
    for t in done:
        series = throughput.setdefault(t.queue_name, [0] * minutes)
        slot = t.minute - (now_minute - minutes + 1)
        if 0 <= slot < minutes:
            series[slot] += t.completed
    return QueuePicture(gauges, {r.name: r for r in rows}, throughput, minutes)


# -- the fleet ----------------------------------------------------------------------------------


@dataclass
class Fleet:
    executors: list[ExecutorRow]
    pending_by_executor: dict[str, int]
    versions: list[VersionRow]
    workflows_by_version: dict[str, int]
    recovers_here: bool
    this_incarnation: Optional[str]


def fleet(ops: Ops) -> Flow[Fleet]:
    """Executors with their heartbeats and PENDING counts; versions with workflow counts."""
    eng = ops.engine()
    store = eng.store
    gauges: DatabaseGauges = yield Io(store.database_gauges)
    executors: list[ExecutorRow] = yield Io(lambda: store.list_executors(eng.app_name))
    versions: list[VersionRow] = yield Io(lambda: store.list_versions(eng.app_name))
    names = [v.version_name for v in versions]
    counts: dict[str, int] = yield Io(
        lambda: store.count_capped("application_version", names, eng.app_name, COUNT_CAP)
    )
    rt = ops.runtime()
    return Fleet(
        executors,
        gauges.pending_by_executor,
        versions,
        counts,
        recovers_here=rt is not None,
        this_incarnation=rt.incarnation if rt is not None else None,
    )


# -- schedules ----------------------------------------------------------------------------------


@dataclass
class ScheduleView:
    row: ScheduleRow
    next_fire: Optional[dt.datetime]
    problem: str = ""


def schedule_views(ops: Ops) -> Flow[list[ScheduleView]]:
    """The stored schedules with their next fire time (context left serialized)."""
    eng = ops.engine()
    rows: list[ScheduleRow] = yield Io(
        lambda: eng.store.list_schedules(ScheduleFilter(eng.app_name))
    )
    now = dt.datetime.now(dt.timezone.utc)
    out = []
    for row in rows:
        try:
            out.append(
                ScheduleView(row, next_time(row.schedule, now.astimezone(zone(row.cron_timezone))))
            )
        except Exception as exc:  # a bad stored expression is shown, not a failed page
            out.append(ScheduleView(row, None, str(exc)))
    return out


# -- retention ----------------------------------------------------------------------------------


@dataclass
class Retention:
    max_age_sec: Optional[float]
    max_rows: Optional[int]
    interval_sec: Optional[float]
    bands: list[str]
    # status -> counts per band (same order as ``bands``)
    by_status: dict[str, list[int]] = field(default_factory=dict)


def retention(ops: Ops) -> Flow[Retention]:
    """The retention policy this process runs (none from a client) and rows by age."""
    eng = ops.engine()
    rt = ops.runtime()
    now = eng.now_ms()
    buckets = yield Io(lambda: eng.store.age_buckets(now, AGE_BANDS_MS, eng.app_name))
    by_status: dict[str, list[int]] = {}
    for b in buckets:
        by_status.setdefault(b.status, [0] * len(AGE_BAND_NAMES))[b.band] += b.count
    cfg = rt.config if rt is not None else None
    return Retention(
        max_age_sec=cfg.retention_max_age_sec if cfg is not None else None,
        max_rows=cfg.retention_max_rows if cfg is not None else None,
        interval_sec=cfg.retention_interval_sec if cfg is not None else None,
        bands=list(AGE_BAND_NAMES),
        by_status=dict(sorted(by_status.items())),
    )
