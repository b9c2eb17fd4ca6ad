"""A bounded pool of worker threads for sync workflows.

DBOS runs one OS thread per concurrently running workflow with no upper bound. Waypoint caps
the pool; to keep a full pool from deadlocking when parents wait on children still queued
behind them, a thread that waits on a task nobody has started yet runs it itself
(``Task.run_inline``).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Any, Optional

logger = logging.getLogger("waypoint")

_QUEUED, _RUNNING, _DONE = 0, 1, 2


class Task:
    __slots__ = ("_lock", "_state", "fn", "name")

    def __init__(self, fn: Callable[[], Any], name: str) -> None:
        self.fn: Optional[Callable[[], Any]] = fn
        self.name = name
        self._state = _QUEUED
        self._lock = threading.Lock()

    def _claim(self) -> bool:
        with self._lock:
            if self._state != _QUEUED:
                return False
            self._state = _RUNNING
            return True

    def _run(self, inline: bool = False) -> None:
        fn, self.fn = self.fn, None  # a suspended run keeps its task, not what the task held
        try:
            if fn is not None:
                fn()
        except BaseException as exc:
            if inline and not isinstance(exc, Exception):
                raise  # Ctrl-C (or exit) reached the caller's thread: it is the caller's
            logger.exception("workflow task %s failed outside of its own error handling", self.name)
        finally:
            self._state = _DONE

    def withdraw(self) -> bool:
        """Take the task back if no thread has started it (a draining executor hands its
        claimed work back); True if it will never run."""
        with self._lock:
            if self._state != _QUEUED:
                return False
            self._state = _DONE
            return True

    def run_inline(self) -> bool:
        """Run the task on the calling thread if no worker has taken it; True if it ran.
        A KeyboardInterrupt or SystemExit raised meanwhile propagates to the caller (the
        workflow stays PENDING, to be recovered), as it would from any blocking call."""
        if not self._claim():
            return False
        self._run(inline=True)
        return True


class WorkerPool:
    def __init__(self, max_workers: int, name: str = "waypoint-worker") -> None:
        if max_workers < 1:
            raise ValueError("max_executor_threads must be at least 1")
        self.max_workers = max_workers
        self._name = name
        self._cond = threading.Condition()
        self._tasks: deque[Task] = deque()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._busy = 0
        self._stopping = False
        # Called (outside the lock) whenever a worker finishes a task: the dispatcher uses it
        # to claim more work as soon as there is room instead of waiting for its next poll.
        self.on_slot_free: Optional[Callable[[], None]] = None

    def submit(self, fn: Callable[[], Any], name: str = "task") -> Task:
        task = Task(fn, name)
        with self._cond:
            if self._stopping:
                raise RuntimeError("the worker pool is shut down")
            self._tasks.append(task)
            # An idle thread takes one task; more queued tasks than idle threads need new
            # threads, or a burst of submissions would all wait for the same one.
            self._cond.notify()
            if len(self._tasks) > self._idle and len(self._threads) < self.max_workers:
                t = threading.Thread(
                    target=self._work, name=f"{self._name}-{len(self._threads)}", daemon=True
                )
                self._threads.append(t)
                t.start()
        return task

    def free_slots(self) -> int:
        with self._cond:
            return max(0, self.max_workers - self._busy - len(self._tasks))

    def is_busy(self) -> bool:
        """Whether every thread is taken (or work waits for one): a wait then gives its thread
        back sooner (core/suspend.py)."""
        with self._cond:
            return self._busy + len(self._tasks) >= self.max_workers

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._tasks and not self._stopping:
                    self._idle += 1
                    self._cond.wait()
                    self._idle -= 1
                if not self._tasks:
                    return
                task = self._tasks.popleft()
                if not task._claim():
                    continue  # a waiter ran it inline
                self._busy += 1
            try:
                task._run()
            finally:
                with self._cond:
                    self._busy -= 1
                callback = self.on_slot_free
                if callback is not None:
                    callback()

    def shutdown(self, timeout: float = 0.5) -> None:
        """Stop taking work; idle threads exit, busy ones are abandoned (daemon threads)."""
        import time

        with self._cond:
            self._stopping = True
            self._tasks.clear()
            self._cond.notify_all()
            threads = list(self._threads)
        deadline = time.monotonic() + timeout
        for t in threads:
            if t is not threading.current_thread():
                t.join(max(0.0, deadline - time.monotonic()))
