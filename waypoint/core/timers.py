"""One thread that fires callbacks at wall-clock deadlines (workflow timeouts).

A heap instead of a ``threading.Timer`` per workflow: thousands of workflows with deadlines
cost one thread, not thousands.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from typing import Optional

logger = logging.getLogger("waypoint")


class TimerService:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._cancelled: set[int] = set()
        self._pending: set[int] = set()  # handles still in the heap
        self._seq = itertools.count()
        self._thread: Optional[threading.Thread] = None
        self._stopping = False

    def at(self, epoch_seconds: float, callback: Callable[[], None]) -> int:
        with self._cond:
            handle = next(self._seq)
            heapq.heappush(self._heap, (epoch_seconds, handle, callback))
            self._pending.add(handle)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name="waypoint-timers", daemon=True
                )
                self._thread.start()
            self._cond.notify()
            return handle

    def cancel(self, handle: int) -> None:
        # A timer that already fired is not remembered: a suspended wait cancels its timer
        # when it resumes, most often because that very timer fired.
        with self._cond:
            if handle in self._pending:
                self._cancelled.add(handle)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._stopping:
                    if not self._heap:
                        self._cond.wait()
                        continue
                    when, handle, callback = self._heap[0]
                    delay = when - time.time()
                    if delay > 0:
                        self._cond.wait(min(delay, 60.0))
                        continue
                    heapq.heappop(self._heap)
                    self._pending.discard(handle)
                    if handle in self._cancelled:
                        self._cancelled.discard(handle)
                        continue
                    break
                else:
                    return
            try:
                callback()
            except Exception:
                logger.exception("a workflow deadline callback failed")

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._heap.clear()
            self._cancelled.clear()
            self._pending.clear()
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(5)
