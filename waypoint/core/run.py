"""One execution of one workflow in this process.

A run owns the workflow's row for as long as its run token (``owner_xid``) is the one stored
there; every checkpoint it writes is fenced on that token. It numbers the workflow's
operations (function IDs), holds the checkpoints recorded by earlier executions for replay,
and carries the cancellation signal.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any, Optional, TypeVar

from waypoint.core.observe import Scope
from waypoint.core.serialization import Serializer
from waypoint.core.signals import Signal
from waypoint.core.suspend import ParkedWait, Suspender
from waypoint.core.suspended import Suspended
from waypoint.core.types import Auth, RequestInfo
from waypoint.error import DBOSWorkflowConflictIDError
from waypoint.storage.protocol import StepRow

if TYPE_CHECKING:
    from waypoint.core.engine import Engine


class RunEntry:
    """What local waiters (handles, parents) see of a run: a done signal and the outcome."""

    __slots__ = (
        "cancel",
        "done",
        "error",
        "lost",
        "on_end",
        "output",
        "parked",
        "released",
        "run",
        "task",
        "workflow_id",
    )

    def __init__(self, workflow_id: str) -> None:
        self.workflow_id = workflow_id
        self.done = Signal()
        self.cancel = Signal()
        self.output: Any = None
        self.error: Optional[BaseException] = None
        # True when this process ended without an outcome of its own (ownership lost, or
        # stopped): waiters must read the recorded outcome from the database instead.
        self.lost = False
        # True once a draining executor handed the workflow back: the run starts no further
        # operation, and unwinds as if another execution owned it (one will).
        self.released = False
        self.parked = 0  # inside a durable wait (sleep, recv, get_event): no user code runs
        self.run: Optional[WorkflowRun] = None
        self.task: Any = None  # the pool task running it, so a waiter can run it inline
        self.on_end: Optional[Callable[[], None]] = None  # queue accounting, when dequeued

    def finish(self, output: Any = None, error: Optional[BaseException] = None) -> None:
        self.output = output
        self.error = error
        self.done.set()

    def abandon(self) -> None:
        self.lost = True
        self.done.set()


T = TypeVar("T")
_parking = threading.Lock()  # a run leaving a wait vs. a drain handing parked runs back


def parked(entry: RunEntry, wait: Generator[Any, Any, T]) -> Generator[Any, Any, T]:
    """Run a durable wait with the run marked parked. Nothing of the user's runs inside one,
    so a draining executor may hand the workflow back at once (``take_parked``); a run handed
    back while parked does not go on past its wait."""
    with _parking:
        entry.parked += 1
    try:
        value = yield from wait
    finally:
        with _parking:
            entry.parked -= 1
            released = entry.released
    if released:
        raise DBOSWorkflowConflictIDError(entry.workflow_id)
    return value


def park_suspended(entry: RunEntry) -> None:
    """A run suspended in its wait (core/suspend.py) is parked until it resumes: a draining
    executor hands it back at once, like a run waiting on its thread."""
    with _parking:
        entry.parked += 1


def unpark_suspended(entry: RunEntry) -> bool:
    """The suspended run is about to resume; True if it was handed back meanwhile (it must
    not: a peer runs the rest)."""
    with _parking:
        entry.parked -= 1
        return entry.released


def take_parked(entries: list[RunEntry]) -> list[RunEntry]:
    """Those of ``entries`` parked in a wait right now, marked released in the same moment,
    so none of them leaves its wait and starts another operation in between."""
    with _parking:
        taken = [e for e in entries if e.parked and not e.released]
        for entry in taken:
            entry.released = True
    return taken


class WorkflowRun:
    __slots__ = (
        "_fid_lock",
        "_next_fid",
        "attributes",
        "auth",
        "class_name",
        "config_name",
        "deadline_ms",
        "entry",
        "is_async",
        "name",
        "origins",
        "owned_at",
        "owner_xid",
        "parked",
        "parked_scopes",
        "queue_name",
        "replay",
        "request",
        "runtime",
        "scope",
        "serializer",
        "status_checked",
        "stream_reads",
        "suspender",
        "wait_start",
        "workflow_id",
    )

    def __init__(
        self,
        runtime: Engine,
        workflow_id: str,
        name: str,
        owner_xid: str,
        serializer: Serializer,
        entry: RunEntry,
        *,
        is_async: bool = False,
        replay: Optional[dict[int, StepRow]] = None,
        deadline_ms: Optional[int] = None,
        auth: Optional[Auth] = None,
        class_name: Optional[str] = None,
        config_name: Optional[str] = None,
        queue_name: Optional[str] = None,
        request: Optional[RequestInfo] = None,
        attributes: Optional[str] = None,
        origins: Optional[dict[Any, Any]] = None,
    ) -> None:
        self.runtime = runtime
        self.workflow_id = workflow_id
        self.name = name
        self.owner_xid = owner_xid
        self.serializer = serializer
        self.entry = entry
        self.is_async = is_async
        self.replay: dict[int, StepRow] = replay or {}
        self.deadline_ms = deadline_ms
        self.auth = auth
        self.class_name = class_name
        self.config_name = config_name
        self.queue_name = queue_name
        self.request = request  # the HTTP request that started it, in this process
        self.attributes = attributes  # as stored (JSON text): observers read a trace carrier
        self.origins = origins  # what observers captured where it was started (observe.py)
        self.scope: Optional[Scope] = None  # the observers watching this run
        self._next_fid = 1  # as DBOS numbers them: the first step is 1, the first child wf-1
        self._fid_lock = threading.Lock()
        self.status_checked = time.monotonic()
        # When this run last knew it owned its workflow (lease.py: a reply it acts on may
        # predate a lapse of the lease by up to a span).
        lease = runtime.lease
        self.owned_at = lease.held_since() if lease is not None else 0.0
        self.stream_reads = 0  # stream reads of the body in progress (at most one at a time)
        # Suspension (core/suspend.py): set while the body runs on a worker thread of its own;
        # the wait it is suspended in; the observers' watches of that wait, kept open.
        self.suspender: Optional[Suspender] = None
        self.parked: Optional[ParkedWait] = None
        self.parked_scopes: dict[int, Scope] = {}
        # The last wait begun: (function ID, epoch ms). A suspended run keeps it (parking.py),
        # so the wait it re-enters when it resumes is recorded as begun the first time.
        self.wait_start: Optional[tuple[int, int]] = None

    def wait_started(self, fid: int) -> int:
        """When the wait at ``fid`` began (epoch milliseconds): now, or, for the wait a resumed
        run was suspended in, when it began the first time. A record of the wait spans all of
        it, as when the run kept its thread (and as DBOS records it)."""
        begun = self.wait_start
        if begun is not None and begun[0] == fid:
            return begun[1]
        now = self.runtime.now_ms()
        self.wait_start = (fid, now)
        return now

    def next_function_id(self) -> int:
        if self.parked is not None:
            raise Suspended()  # the body swallowed its suspension: it must not go on
        suspender = self.suspender
        if suspender is not None and not suspender.shared and not suspender.here():
            # An operation on another task or thread (``asyncio.gather``): one may still be
            # going on when a wait would suspend, and the re-run would start it again.
            suspender.shared = True
        with self._fid_lock:
            fid = self._next_fid
            self._next_fid += 1
            return fid

    def peek_function_id(self) -> int:
        return self._next_fid

    def rewind(self, replay: dict[int, StepRow], status: Optional[str]) -> None:
        """Start the body over (a suspended run resumes) with the checkpoints written so far
        and the status read with them: operations are numbered from the first again and
        replay what they recorded; the first new one knows of a cancellation made meanwhile
        without reading the status again (``steps.check_cancelled``)."""
        with self._fid_lock:
            self._next_fid = 1
        self.replay = replay
        self.parked = None
        self.stream_reads = 0
        if status == "CANCELLED":
            self.entry.cancel.set()
        self.status_checked = time.monotonic()
