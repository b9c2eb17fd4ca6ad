"""Retrying storage calls through outages.

A database that is down, restarting or momentarily locked must not lose work: a call that
fails for a transient reason is retried with jittered exponential backoff until it succeeds
or the store is closed. Every store operation is written to be safe to repeat (see
``protocol``), so "the commit went through but the reply was lost" is harmless.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from enum import Enum
from typing import Protocol, TypeVar

from waypoint.storage.errors import StorageFullError, StoreClosedError, UnavailableError

logger = logging.getLogger("waypoint")

T = TypeVar("T")


class Fault(Enum):
    TRANSIENT = "transient"  # retry: connection lost, server restarting, lock busy
    FULL = "full"  # out of disk: surface as StorageFullError
    FATAL = "fatal"  # a bug or a constraint: surface as is


class RetryListener(Protocol):
    """Told about outages (metrics): called on the failing thread, must be quick."""

    def retried(self, what: str) -> None:
        """A call failed for a transient reason and will be tried again."""

    def recovered(self, outage_seconds: float) -> None:
        """The database answered again after an outage of this many seconds (from the first
        transient failure of any call to the next success of any call)."""


class RetryPolicy:
    def __init__(
        self,
        classify: Callable[[BaseException], Fault],
        *,
        initial_delay: float = 0.05,
        max_delay: float = 5.0,
        closed: threading.Event | None = None,
        on_transient: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.classify = classify
        self.on_transient = on_transient
        self.initial_delay = initial_delay
        self.max_delay = max_delay
        self.closed = closed or threading.Event()
        self.retry_transient = True  # False: a transient failure is raised at once
        self._last_log = 0.0
        self.listeners: list[RetryListener] = []
        self._down_since: float | None = None  # monotonic time of the outage's first failure
        self._outage_lock = threading.Lock()

    def run(self, op: Callable[[], T], what: str) -> T:
        delay = self.initial_delay
        failures = 0
        while True:
            if self.closed.is_set():
                raise StoreClosedError()
            try:
                result = op()
            except BaseException as exc:
                fault = self.classify(exc)
                if fault is Fault.FULL:
                    raise StorageFullError(
                        f"the system database is full; {what} was not written: {exc}"
                    ) from exc
                if fault is not Fault.TRANSIENT:
                    raise
                if not self.retry_transient:
                    raise UnavailableError(
                        f"the system database is unavailable ({what}): {type(exc).__name__}: {exc}"
                    ) from exc
                failures += 1
                self._log(what, exc, failures, delay)
                if self.on_transient is not None:
                    self.on_transient(exc)
                self._failed(what)
            else:
                if self._down_since is not None:
                    self._back()
                return result
            # Full jitter keeps a fleet of processes from reconnecting in lockstep.
            if self.closed.wait(random.uniform(delay / 2, delay)):
                raise StoreClosedError()
            delay = min(delay * 2, self.max_delay)

    def _failed(self, what: str) -> None:
        with self._outage_lock:
            if self._down_since is None:
                self._down_since = time.monotonic()
        for listener in self.listeners:
            listener.retried(what)

    def _back(self) -> None:
        with self._outage_lock:
            since, self._down_since = self._down_since, None
        if since is None:
            return  # another thread ended this outage first
        for listener in self.listeners:
            listener.recovered(time.monotonic() - since)

    def _log(self, what: str, exc: BaseException, failures: int, delay: float) -> None:
        now = time.monotonic()
        if failures == 1 or now - self._last_log > 10:
            self._last_log = now
            logger.warning(
                "system database unavailable during %s (%s: %s); retrying (attempt %d, next in "
                "%.2fs)",
                what,
                type(exc).__name__,
                str(exc).strip().splitlines()[0] if str(exc).strip() else "",
                failures,
                delay,
            )
