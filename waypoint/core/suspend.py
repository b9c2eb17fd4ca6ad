"""Waits that give their thread back: suspending a workflow parked in a long wait.

A sync workflow body runs on a worker thread of a bounded pool. A body that waits a long time
(``DBOS.sleep``, ``DBOS.recv``, ``DBOS.get_event``, a handle's ``get_result``) would hold that
thread for the whole wait; thousands of them would hold every thread and starve the rest.
Instead, once a wait is expected to outlast the run's *grace* (``wait_suspend_after_sec``, or
50 ms while every thread is busy), the wait raises ``Suspended``: it unwinds the body back to
the run (``execution.run_body``), the thread goes back to the pool, and a ``ParkedWait`` holds
what can end the wait — wake-up keys (a message, an event, a completion, a cancellation),
signals of runs in this process, and a wake-up time (the wait's deadline, or the next safety
re-read) — until the runtime's parking lot (core/parking.py) takes it over as plain data.
The first of them to fire submits the run again: the body is re-run from the top
with the checkpoints loaded from the database, every completed operation returning its
recorded value, until it reaches the wait again, which now finds what it waited for.

This relies on the rule recovery already relies on (and DBOS states): workflow code outside
steps is deterministic. The wait itself is a recorded operation (a sleep's wake-up time, a
recv's or get_event's timeout are checkpointed before the wait starts), so the re-run waits
for the same thing until the same deadline.

Only a run that started in the background (started, dequeued or recovered, on a worker
thread or an asyncio task of its own) can suspend, and only in a wait its body makes on that
thread or task: a workflow called directly runs on its caller's thread, which is waiting for
it anyway. An async workflow holds no thread while it waits, but its suspended coroutine
holds its frames, which every full collection of the garbage collector walks: it suspends
the same way, after its grace, and is re-run from its checkpoints as a new task on the loop
it ran on. A run one of whose operations ran on another task or thread (``asyncio.gather``
of steps, say) never suspends: that operation may still be going on, and the re-run would
start it again.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Optional, Protocol

from waypoint.core.signals import Signal
from waypoint.core.suspended import Suspended
from waypoint.error import DBOSWorkflowCancelledError
from waypoint.storage.protocol import cancel_key

if TYPE_CHECKING:
    from waypoint.core.wakeups import Wakeups

__all__ = ["ParkedWait", "Suspendable", "Suspended", "Suspender", "suspend", "wait_grace"]

logger = logging.getLogger("waypoint")

BUSY_GRACE = 0.05  # how long a wait may hold a thread while no thread of the pool is free


def _not_busy() -> bool:
    return False


class Suspender:
    """What lets one run suspend its waits: the thread or task its body runs on (made on it),
    and the policy."""

    __slots__ = ("after", "busy", "shared", "task", "thread")

    def __init__(self, after: float, busy: Callable[[], bool] = _not_busy) -> None:
        self.after = after
        self.busy = busy  # True while no worker thread is free
        self.thread = threading.get_ident()
        try:
            self.task: Optional[asyncio.Task[Any]] = asyncio.current_task()
        except RuntimeError:  # no event loop runs on this thread
            self.task = None
        # An operation of the run was made on another thread or task: it never suspends.
        self.shared = False

    def here(self) -> bool:
        """Whether the caller runs on the body's own thread (and task)."""
        if self.thread != threading.get_ident():
            return False
        return self.task is None or _current_task() is self.task

    def grace(self) -> float:
        """How long a wait may hold the thread before it is suspended."""
        return min(self.after, BUSY_GRACE) if self.busy() else self.after


def _current_task() -> Optional[asyncio.Task[Any]]:
    try:
        return asyncio.current_task()
    except RuntimeError:
        return None


class _Entry(Protocol):
    @property
    def cancel(self) -> Signal: ...


class Suspendable(Protocol):
    """What suspension needs of a run (``core.run.WorkflowRun`` is one)."""

    workflow_id: str
    suspender: Optional[Suspender]
    parked: Optional[ParkedWait]

    @property
    def entry(self) -> _Entry: ...


def wait_grace(run: Optional[Suspendable]) -> Optional[float]:
    """The grace of a wait ``run``'s body makes here, or None if it cannot be suspended (no
    run, not started in the background, not on the thread or task its body runs on, or one
    of its operations ran elsewhere)."""
    if run is None:
        return None
    suspender = run.suspender
    if suspender is None or suspender.shared or not suspender.here():
        return None
    return suspender.grace()


class ParkedWait:
    """What a suspending wait waits for, until the body has unwound and the runtime's parking
    lot (core/parking.py) takes it over (``hand_over``).

    It is set up (keys subscribed, signals hooked) *before* the body unwinds, while the wait
    still holds its own subscription, so nothing that fires in between is lost; a wake-up
    meanwhile is only remembered, and resumes the run once it has unwound and let go of the
    thread, so the run never executes twice at once."""

    __slots__ = ("_lock", "_state", "hooked", "keys", "signal", "wake_at", "wakeups")

    def __init__(
        self,
        wakeups: Wakeups,
        keys: Sequence[str],
        wake_at: Optional[float],
        signals: Sequence[Signal] = (),
    ) -> None:
        self.wakeups = wakeups
        self.keys = tuple(keys)
        self.wake_at = wake_at
        self._lock = threading.Lock()
        self._state = "setting-up"  # -> "fired-early" -> "handed-over"
        self.signal = wakeups.subscribe(*self.keys) if self.keys else Signal()
        self.signal.on_set(self.fire)
        self.hooked = tuple(signals)
        for sig in self.hooked:
            sig.on_set(self.fire)

    def fire(self) -> None:
        """Something the run waits for happened (or may have) while its body unwinds."""
        with self._lock:
            if self._state == "setting-up":
                self._state = "fired-early"

    def hand_over(self, park: Callable[[], None]) -> bool:
        """The body has unwound: ``park`` takes the wait over (as plain data, core/parking.py),
        and this lets go of its own subscriptions. Called with this wait's lock held, so a
        wake-up comes either before (True is returned: resume at once) or to what ``park``
        set up; never to neither."""
        with self._lock:
            early = self._state == "fired-early"
            park()
            self._state = "handed-over"
        self._release()
        return early

    def drop(self) -> None:
        """The wait was not suspended after all: let go of the subscriptions."""
        with self._lock:
            self._state = "handed-over"
        self._release()

    def _release(self) -> None:
        if self.keys:
            self.wakeups.unsubscribe(self.signal, *self.keys)
        for sig in self.hooked:
            sig.remove_callback(self.fire)


def suspend(
    run: Suspendable,
    wakeups: Wakeups,
    keys: Sequence[str] = (),
    wake_at: Optional[float] = None,
    *,
    signals: Sequence[Signal] = (),
    watched: Optional[Signal] = None,
) -> None:
    """Suspend ``run``'s wait, to be resumed when one of ``keys``
    fires, one of ``signals`` is set or at ``wake_at`` (epoch seconds); a cancellation of the
    run always resumes it. ``watched`` is the wait's own subscription: if it fired since the
    wait last looked, nothing is suspended and this returns (look again). Otherwise raises
    ``Suspended`` (or the cancellation, if the run was cancelled meanwhile)."""
    all_keys = (*keys, cancel_key(run.workflow_id))
    parked = ParkedWait(wakeups, all_keys, wake_at, signals)
    # Looked at once subscribed: a cancellation sets the flag before it fires the key.
    if run.entry.cancel.is_set():
        parked.drop()
        raise DBOSWorkflowCancelledError(f"workflow {run.workflow_id} was cancelled")
    if watched is not None and watched.is_set():
        parked.drop()
        return
    run.parked = parked
    raise Suspended()


def hold_until(run: Optional[Suspendable]) -> Optional[float]:
    """Until when (``time.monotonic``) a wait starting now may hold its thread, or None if it
    cannot be suspended."""
    grace = wait_grace(run)
    return None if grace is None else time.monotonic() + grace


def abort_parked(run: Suspendable) -> None:
    """Drop the suspension of a run that ended otherwise (it stopped, or lost ownership)."""
    parked, run.parked = run.parked, None
    if parked is not None:
        parked.drop()
