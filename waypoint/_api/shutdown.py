"""The opt-in SIGTERM handler: a graceful shutdown for rolling deploys (a Waypoint extension).

With ``shutdown_grace_sec`` in the config, ``DBOS.launch()`` (on the main thread) installs a
SIGTERM handler. On SIGTERM it drains on a thread of its own — stop dequeuing and firing
schedules, let running workflows finish for up to the grace period, hand the rest back to
peers (``Runtime.drain``) — and then lets the signal take the course it had before: the
previous Python handler is called (a web server's, which then shuts itself down), or, with
the default action, the process terminates by SIGTERM as it would have at once.

The drain runs on its own thread, not in the handler: a signal handler interrupts the main
thread anywhere, possibly inside a lock the drain needs. When it is done it signals the
process again, and the handler, now on a main thread that can block, passes the signal on.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any, Optional

logger = logging.getLogger("waypoint")

Handler = Any  # what signal.getsignal returns: a callable, SIG_DFL, SIG_IGN or None


class SigtermDrain:
    """One installed handler; ``drain(grace)`` is ``DBOS.destroy`` with that timeout."""

    def __init__(self, grace_sec: float, drain: Callable[[float], None]) -> None:
        self.grace_sec = grace_sec
        self._drain = drain
        self._previous: Handler = signal.getsignal(signal.SIGTERM)
        self._state = "armed"  # then "draining", then "drained"
        self._lock = threading.Lock()
        self.thread: Optional[threading.Thread] = None

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum: int, frame: Optional[FrameType]) -> None:
        with self._lock:
            state = self._state
            if state == "armed":
                self._state = "draining"
        if state == "armed":
            logger.warning(
                "SIGTERM: draining (up to %ss), then handing unfinished workflows back",
                self.grace_sec,
            )
            self.thread = threading.Thread(target=self._run, name="waypoint-drain")
            self.thread.start()
        elif state == "draining":
            logger.info("SIGTERM again while draining: the drain goes on")
        else:
            self._pass_on(signum, frame)

    def _run(self) -> None:
        try:
            self._drain(self.grace_sec)
        except Exception:
            logger.exception("the graceful shutdown failed")
        finally:
            with self._lock:
                self._state = "drained"
            os.kill(os.getpid(), signal.SIGTERM)  # back to the handler, on the main thread

    def _pass_on(self, signum: int, frame: Optional[FrameType]) -> None:
        previous = self._previous
        if callable(previous):
            previous(signum, frame)
        elif previous != signal.SIG_IGN:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)


_installed: Optional[SigtermDrain] = None


def install_sigterm(grace_sec: float, drain: Callable[[float], None]) -> Optional[SigtermDrain]:
    """Install the handler (once per process; only the main thread can). None, with a
    warning, when called from another thread."""
    global _installed
    if threading.current_thread() is not threading.main_thread():
        logger.warning(
            "shutdown_grace_sec: DBOS.launch() ran outside the main thread, so no SIGTERM "
            "handler was installed; call DBOS.destroy(workflow_completion_timeout_sec=...) "
            "on shutdown instead"
        )
        return None
    if _installed is not None:
        _installed.grace_sec = grace_sec
        _installed._drain = drain
        with _installed._lock:
            _installed._state = "armed"
        return _installed
    _installed = SigtermDrain(grace_sec, drain)
    _installed.install()
    return _installed
