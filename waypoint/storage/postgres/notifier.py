"""Wake-ups sent after the write that causes them, not inside it.

PostgreSQL serialises the commits of every transaction that has called NOTIFY, in the whole
cluster: ``PreCommit_Notify`` takes one lock and holds it until the commit has been flushed
to disk. A write that notifies therefore commits alone, one flush at a time, whatever the
number of connections (measured: 16 threads of one-row INSERTs commit ~5,000/s without a
NOTIFY, ~300/s with one). Enqueues and completions are the hot writes that wake other
processes, so on these the store commits first and hands the keys here; one thread sends
whatever has gathered as one ``SELECT pg_notify(...)`` statement, a transaction that writes
nothing and so holds that lock only for a moment, without a flush.

Under load that one statement still went out per completion or enqueue: with 4 threads
enqueueing and 32 running one-step workflows it was 0.8 statements per workflow, each also
received and handled by this process's own listener. After a send the thread therefore
pauses ``LINGER`` before the next, so what is posted meanwhile goes out together (at most
~200 sends a second); a key posted when no send happened for that long still goes at once.
Other processes learn of a busy process's enqueues and outcomes up to ``LINGER`` later,
nothing in this process waits for it (it wakes its own waiters directly).

A key is sent only after its write committed (a woken process reads it), and at most once
per batch. A key lost (the process dies between the commit and the send, or the send
fails) delays the other processes only until their next poll, the safety net that a
dropped listener connection relies on too.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Optional

logger = logging.getLogger("waypoint")

LINGER = 0.005  # seconds between two sends


class Notifier:
    def __init__(
        self,
        send: Callable[[list[str]], None],
        pause: Callable[[float], None] = time.sleep,
    ) -> None:
        self._send = send
        self._pause = pause
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
            self._pause(LINGER)
