"""What the engine knows of the services that run beside it.

The launched runtime does not build its dispatcher, scheduler, heartbeat or admin server: the
assembly (``waypoint._api.launch``) creates them and registers them here. The engine only
starts and stops them in order, and reaches the queue dispatcher through ``Dispatch``: the
one thing recovery and draining need from it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Optional, Protocol

logger = logging.getLogger("waypoint")


class Service(Protocol):
    """Something that runs beside the engine from launch until destroy."""

    name: str

    def start(self) -> None: ...
    def stop(self) -> None: ...


class Dispatch(Protocol):
    """The queue dispatcher, as the engine sees it."""

    def wake(self, queue_name: Optional[str] = None) -> None:
        """Look for work now (on one queue, or on all of them)."""
        ...

    def pause(self) -> None:
        """Claim nothing more (a draining executor)."""
        ...


class NoDispatch:
    """Until a dispatcher is registered: nothing to wake."""

    def wake(self, queue_name: Optional[str] = None) -> None:
        return None

    def pause(self) -> None:
        return None


class Periodic:
    """A daemon thread that calls ``tick`` every ``interval`` seconds until stopped; a
    service built on it stays small. ``tick`` raising ``stop_on`` ends the loop quietly."""

    def __init__(
        self,
        name: str,
        interval: float,
        tick: Callable[[], None],
        *,
        stop_on: tuple[type[BaseException], ...] = (),
        first_after: Optional[float] = None,
    ) -> None:
        self.name = name
        self.interval = interval
        self._tick = tick
        self._stop_on = stop_on
        self._first_after = interval if first_after is None else first_after
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._loop, name=f"waypoint-{self.name}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)

    def _loop(self) -> None:
        wait = self._first_after
        while not self._stop.wait(wait):
            wait = self.interval
            try:
                self._tick()
            except self._stop_on:
                return
            except Exception:
                logger.exception("%s failed; retrying in %.1fs", self.name, self.interval)
