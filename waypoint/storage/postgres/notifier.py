"""Wake-ups sent after the write that causes them, not inside it.

PostgreSQL serialises the commits of every transaction that has called NOTIFY, in the whole
cluster: ``PreCommit_Notify`` takes one lock and holds it until the commit has been flushed
to disk. A write that notifies therefore commits alone, one flush at a time, whatever the
number of connections (measured: 16 threads of one-row INSERTs commit ~5,000/s without a
NOTIFY, ~300/s with one). Enqueues and completions are the hot writes that wake other
processes, so on these the store commits first and hands the keys here; one thread sends
whatever has gathered as one ``SELECT pg_notify(...)`` statement, a transaction that writes
nothing and so holds that lock only for a moment, without a flush.

A key is sent only after its write committed (a woken process reads it), and at most once
per batch. A key lost (the process dies between the commit and the send, or the send
fails) delays the other processes only until their next poll, the safety net that a
dropped listener connection relies on too.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Optional

logger = logging.getLogger("waypoint")


class Notifier:
    def __init__(self, send: Callable[[list[str]], None]) -> None:
        self._send = send
        self._cond = threading.Condition()
        self._keys: dict[str, None] = {}  # insertion-ordered set
        self._stop = False
        self._thread: Optional[threading.Thread] = None

    def post(self, *keys: str) -> None:
        """Send ``keys`` soon (the caller's write has committed)."""
        with self._cond:
            if self._stop:
                return
            fresh = False
            for key in keys:
                if key not in self._keys:
                    self._keys[key] = None
                    fresh = True
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name="waypoint-notifier", daemon=True
                )
                self._thread.start()
            if fresh:  # a key already pending is sent anyway: no need to wake the thread
                self._cond.notify()

    def stop(self) -> None:
        """Send what is pending, then end the thread."""
        with self._cond:
            self._stop = True
            self._cond.notify()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(5)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._keys and not self._stop:
                    self._cond.wait()
                if not self._keys:
                    return
                keys = list(self._keys)
                self._keys.clear()
            try:
                self._send(keys)
            except Exception as exc:  # the others' polls cover a lost wake-up
                logger.debug("could not send %d wake-ups: %s", len(keys), exc)
