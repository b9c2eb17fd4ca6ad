"""This executor's place in the fleet: heartbeats, taking over dead executors, retention.

Every incarnation (one launch of one process) records a heartbeat by the database's clock.
With ``dead_executor_recovery_sec`` set, a live executor of the same application version
re-enqueues the PENDING workflows of executor IDs none of whose incarnations has been heard
from for that long; the claim (ENQUEUED→PENDING) stays the single admission point, and every
checkpoint is fenced on the claiming run's token, so an executor that was only paused (a
"zombie") cannot record anything for work that was taken from it.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from typing import TYPE_CHECKING, Optional

from waypoint.storage.protocol import ExecutorRow
from waypoint.storage.retry import StoreClosedError

if TYPE_CHECKING:
    from waypoint.core.runtime import Runtime

logger = logging.getLogger("waypoint")

HEARTBEAT_SEC = 10.0


class Fleet:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.incarnation = uuid.uuid4().hex
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        cfg = rt.config
        self.dead_after = cfg.dead_executor_recovery_sec
        self.retention_age = cfg.retention_max_age_sec
        self.retention_rows = cfg.retention_max_rows
        self.retention_every = cfg.retention_interval_sec
        self.interval = HEARTBEAT_SEC
        if self.dead_after is not None:
            self.interval = min(self.interval, max(0.2, self.dead_after / 3))
        if self.retention_age is not None or self.retention_rows is not None:
            self.interval = min(self.interval, max(0.2, self.retention_every))
        self._last_gc = -float("inf")  # the first tick applies the retention policy

    def _row(self) -> ExecutorRow:
        return ExecutorRow(
            executor_id=self.rt.executor_id,
            incarnation=self.incarnation,
            application_name=self.rt.app_name,
            application_version=self.rt.app_version,
            hostname=socket.gethostname(),
            pid=os.getpid(),
            heartbeat_ms=int(self.interval * 1000),
        )

    def start(self) -> None:
        self.rt.store.heartbeat(self._row())
        self._thread = threading.Thread(target=self._loop, name="waypoint-fleet", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        try:
            self.rt.store.retire(self.rt.executor_id, self.incarnation)
        except Exception as exc:  # best effort: a stale row only ages out
            logger.debug("could not retire executor row: %s", exc)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.tick()
            except StoreClosedError:
                return
            except Exception:
                logger.exception("executor heartbeat failed; retrying")

    def tick(self) -> None:
        rt = self.rt
        rt.store.heartbeat(self._row())
        if self.dead_after is not None and not rt.deactivated:
            dead = rt.store.claim_dead_executors(
                rt.app_name, rt.app_version, int(self.dead_after * 1000)
            )
            dead = [d for d in dead if d != rt.executor_id]
            if dead:
                ids = rt.recover(dead)
                logger.warning(
                    "executor(s) %s silent for over %ss: took over %d pending workflow(s)",
                    dead,
                    self.dead_after,
                    len(ids),
                )
        if (self.retention_age is not None or self.retention_rows is not None) and (
            time.monotonic() - self._last_gc >= self.retention_every
        ):
            self._last_gc = time.monotonic()
            cutoff = (
                rt.now_ms() - int(self.retention_age * 1000)
                if self.retention_age is not None
                else None
            )
            deleted = rt.store.garbage_collect(cutoff, self.retention_rows, rt.app_name)
            if deleted:
                logger.info("retention policy deleted %d finished workflow(s)", deleted)
