"""Live workflow status changes for the console, as server-sent events at ``/console/events``.

One ``StatusFeed`` per server reads the database for every connected browser tab: a single
thread wakes on the engine's wake-ups (``d:`` a workflow finished, ``c:`` cancelled, ``q:``
something enqueued; on PostgreSQL these arrive by LISTEN/NOTIFY from every process, through
the one listener connection the engine already has) or, failing those, every polling interval
(SQLite, or a PostgreSQL listener that is down). Each wake-up costs one read by ID (the
workflows named by ``d:``/``c:`` keys) or one scan of what was created, dequeued or completed
since the last scan (three indexed range reads); what changed is fanned out in memory to every
subscriber. Twenty tabs cost what one does; with no tab open the feed reads nothing.

The stream (``text/event-stream``) sends one unnamed event per status change, its data a JSON
object::

    {"workflow_id": "...", "status": "SUCCESS", "name": "...", "queue": "..." or null,
     "updated_at": 1733100000000}

plus a comment line every 15 s to keep proxies from closing an idle stream. A client that
falls more than ``QUEUE_LIMIT`` events behind is disconnected (EventSource reconnects).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Any, Optional

from starlette.requests import Request
from starlette.responses import StreamingResponse

from waypoint._api.ops import workflows
from waypoint._api.ops.base import Ops
from waypoint._api.public_types import WorkflowStatus

logger = logging.getLogger("waypoint.console")

KEY_PREFIXES = ("d:", "c:", "q:")
SAFETY_S = 5.0  # scan this often even when notifications arrive
MIN_GAP_S = 0.5  # between reads, however many keys fire (at most 8 reads a second)
SLACK_MS = 2000  # rows written a little before the last scan (clock skew, commit lag)
SCAN_LIMIT = 500
QUEUE_LIMIT = 1000
KEEPALIVE_S = 15.0
SEEN_LIMIT = 20_000


def event_of(status: WorkflowStatus) -> dict[str, Any]:
    return {
        "workflow_id": status.workflow_id,
        "status": status.status,
        "name": status.name,
        "queue": status.queue_name,
        "updated_at": status.updated_at,
    }


class Subscriber:
    """One connected stream: a queue on the server's event loop, fed from the feed thread."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[Optional[dict[str, Any]]] = asyncio.Queue()
        self.closed = False

    def push(self, event: Optional[dict[str, Any]]) -> None:
        def put() -> None:
            if self.closed:
                return
            if event is not None and self.queue.qsize() >= QUEUE_LIMIT:
                self.closed = True  # too slow: end its stream, EventSource reconnects
                self.queue.put_nowait(None)
                return
            self.queue.put_nowait(event)

        try:
            self.loop.call_soon_threadsafe(put)
        except RuntimeError:
            self.closed = True  # the loop is gone


class StatusFeed:
    """The one reader of status changes behind every console stream of this server."""

    def __init__(self, ops: Ops) -> None:
        self.ops = ops
        self._lock = threading.Lock()
        self._subs: set[Subscriber] = set()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._ids: set[str] = set()
        self._scan_due = True
        self._mark_ms: Optional[int] = None
        self._seen: OrderedDict[str, str] = OrderedDict()
        self._thread: Optional[threading.Thread] = None
        self._hooked = False
        # What the feed has cost, for tests and curious operators.
        self.reads = 0
        self.wakeups = 0

    # -- subscribers ----------------------------------------------------------------------------
    @property
    def subscribers(self) -> int:
        with self._lock:
            return len(self._subs)

    def subscribe(self) -> Subscriber:
        sub = Subscriber()
        with self._lock:
            self._subs.add(sub)
            if self._thread is None and not self._stop.is_set():
                self._hook()
                self._thread = threading.Thread(
                    target=self._run, name="waypoint-console-feed", daemon=True
                )
                self._thread.start()
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        sub.closed = True
        with self._lock:
            self._subs.discard(sub)

    def close(self) -> None:
        """End every stream and the feed thread (the server is stopping)."""
        self._stop.set()
        self._wake.set()
        with self._lock:
            subs, self._subs = list(self._subs), set()
        for sub in subs:
            sub.push(None)
        if self._hooked:
            self.ops.engine().wakeups.remove_hooks([self._on_key])
        if self._thread is not None:
            self._thread.join(5)

    # -- the one reader -------------------------------------------------------------------------
    def _hook(self) -> None:
        wakeups = self.ops.engine().wakeups
        for prefix in KEY_PREFIXES:
            wakeups.add_hook(prefix, self._on_key)
        wakeups.add_hook("", self._on_all)
        self._hooked = True

    def _on_key(self, key: str) -> None:
        # Called on the thread that fired the key (a listener, a worker): only take note.
        if key.startswith(("d:", "c:")):
            with self._lock:
                if len(self._ids) < SCAN_LIMIT:
                    self._ids.add(key[2:])
                else:
                    self._scan_due = True
        else:
            self._scan_due = True
        self._wake.set()

    def _on_all(self, key: str) -> None:
        if key == "":  # fire_all: the listener reconnected, anything may have happened
            self._scan_due = True
            self._wake.set()

    def _interval(self) -> float:
        try:
            engine = self.ops.engine()
        except Exception:  # the runtime is going away; the stop flag follows
            return 1.0
        return SAFETY_S if engine.notifications else float(engine.polling_interval_sec)

    def _run(self) -> None:
        while not self._stop.is_set():
            woke = self._wake.wait(self._interval())
            self._wake.clear()
            if self._stop.is_set():
                return
            if not self.subscribers:
                with self._lock:
                    self._ids.clear()
                self._mark_ms = None  # start afresh when someone subscribes again
                continue
            self.wakeups += 1
            with self._lock:
                ids, self._ids = list(self._ids), set()
            scan = self._scan_due or not woke or self._mark_ms is None
            self._scan_due = False
            try:
                changed = self._read(ids, scan)
            except Exception as exc:  # the database is away: try again on the next wake-up
                logger.warning("console feed: cannot read status changes: %s", exc)
                self._scan_due = True
                self._stop.wait(1.0)
                continue
            self._publish(changed)
            self._stop.wait(MIN_GAP_S)

    def _read(self, ids: list[str], scan: bool) -> list[WorkflowStatus]:
        ops = self.ops
        light: dict[str, Any] = {"load_input": False, "load_output": False}
        found: list[WorkflowStatus] = []
        if ids:
            self.reads += 1
            found += ops.run(workflows.list_workflows(ops, workflow_ids=ids, **light))
        if scan:
            now = int(time.time() * 1000)
            since = now - SLACK_MS if self._mark_ms is None else self._mark_ms - SLACK_MS
            self._mark_ms = now
            for key in ("start_time", "dequeued_after", "completed_after"):
                self.reads += 1
                found += ops.run(
                    workflows.list_workflows(
                        ops, **{key: since}, limit=SCAN_LIMIT, sort_desc=True, **light
                    )
                )
        return found

    def _publish(self, found: list[WorkflowStatus]) -> None:
        events = []
        for status in found:
            if self._seen.get(status.workflow_id) == status.status:
                continue
            self._seen[status.workflow_id] = status.status
            self._seen.move_to_end(status.workflow_id)
            events.append(event_of(status))
        while len(self._seen) > SEEN_LIMIT:
            self._seen.popitem(last=False)
        if not events:
            return
        with self._lock:
            subs = list(self._subs)
        for event in events:
            for sub in subs:
                sub.push(event)


async def event_stream(feed: StatusFeed, request: Request) -> StreamingResponse:
    """``GET /console/events``: the status changes, as server-sent events."""
    sub = feed.subscribe()

    async def lines() -> AsyncIterator[str]:
        try:
            yield "retry: 3000\n: connected\n\n"
            while True:
                try:
                    event = await asyncio.wait_for(sub.queue.get(), KEEPALIVE_S)
                except asyncio.TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                if event is None:
                    return
                yield f"data: {json.dumps(event, default=str)}\n\n"
        finally:
            feed.unsubscribe(sub)

    return StreamingResponse(
        lines(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
