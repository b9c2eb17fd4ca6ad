"""The wait of a loop that re-reads the database, suspended once it outlasts its grace.

Message, event and result waits subscribe to a wake-up, read the database and, if what they
wait for is not there yet, wait on the subscription before reading again. Run by a body that
can suspend (``core.suspend``), the wait holds the thread only until its grace is used up;
then the run is suspended and resumes when the subscription fires, a ``signals`` is set, or
at the next safety re-read (the wait's ``timeout``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Optional

from waypoint.core.effects import Flow, Wait
from waypoint.core.run import WorkflowRun
from waypoint.core.signals import Signal
from waypoint.core.suspend import suspend
from waypoint.core.wakeups import Wakeups


def wait_or_suspend(
    run: Optional[WorkflowRun],
    hold: Optional[float],
    wakeups: Wakeups,
    keys: Sequence[str],
    signal: Signal,
    timeout: float,
    signals: Sequence[Signal] = (),
    *,
    suspended_for: Optional[float] = None,
) -> Flow[bool]:
    """Wait on ``signal`` (subscribed to ``keys``) for at most ``timeout`` seconds; True if
    it fired (or may have). With ``hold`` (``suspend.hold_until``), past that moment the run is
    suspended instead (``Suspended`` is raised), to be resumed at the latest after
    ``suspended_for`` seconds (default ``timeout``: the wait's deadline or next re-read)."""
    if run is None or hold is None:
        fired: bool = yield Wait(signal, timeout)
        return fired
    left = hold - time.monotonic()
    if timeout <= left:
        fired = yield Wait(signal, timeout)
        return fired
    if left > 0 and (yield Wait(signal, left)):
        return True
    resume_in = timeout - max(0.0, left) if suspended_for is None else suspended_for
    suspend(run, wakeups, keys, time.time() + resume_in, signals=signals, watched=signal)
    return True  # the subscription fired meanwhile: read again
