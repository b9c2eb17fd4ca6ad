"""This executor's place in the fleet: heartbeats, and taking over executors that went silent.

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
import time

from waypoint.core.lease import Lease
from waypoint.core.recovery import recover
from waypoint.core.runtime import Runtime
from waypoint.core.services import Periodic
from waypoint.core.storage_errors import StoreClosed
from waypoint.storage.protocol import ExecutorRow
from waypoint.storage.records import heartbeat_signatures

logger = logging.getLogger("waypoint")

HEARTBEAT_SEC = 10.0


class Heartbeat:
    name = "heartbeat"

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.dead_after = rt.config.dead_executor_recovery_sec
        self.interval = HEARTBEAT_SEC
        if self.dead_after is not None:
            self.interval = min(self.interval, max(0.2, self.dead_after / 3))
            rt.lease = Lease(self.dead_after, self.beat)
        self._watch: dict[str, tuple[str, float]] = {}  # executor -> (heartbeats, since)
        self._ticker = Periodic(self.name, self.interval, self.tick, stop_on=(StoreClosed,))

    def _row(self) -> ExecutorRow:
        return ExecutorRow(
            executor_id=self.rt.executor_id,
            incarnation=self.rt.incarnation,
            application_name=self.rt.app_name,
            application_version=self.rt.app_version,
            hostname=socket.gethostname(),
            pid=os.getpid(),
            heartbeat_ms=int(self.interval * 1000),
        )

    def beat(self, first: bool = False) -> float:
        """Write this incarnation's heartbeat; with takeovers on, it renews the lease.
        Returns the (monotonic) time it was sent."""
        began = time.monotonic()
        existed = self.rt.store.heartbeat(self._row())
        if self.rt.lease is not None:
            if not existed and not first:
                logger.warning(
                    "executor %s was taken over by a peer while silent; its runs re-check "
                    "that they still own their workflows before going on",
                    self.rt.executor_id,
                )
                self.rt.lease.revoked(began)
            self.rt.lease.renewed(began, first)
        return began

    def standing_still(self, dead_after: float) -> dict[str, str]:
        """Peers whose heartbeats this process has watched stand still for ``dead_after`` by
        its own monotonic clock. The database's clock alone is not enough: on SQLite each
        writer stamps heartbeats with its own wall clock, and any clock can jump; a peer
        that goes on writing heartbeats is alive (and holds its lease, lease.py), whatever
        its timestamps say."""
        now = time.monotonic()
        current = heartbeat_signatures(self.rt.store.list_executors(self.rt.app_name))
        watch = self._watch
        for executor, signature in current.items():
            if watch.get(executor, ("", 0.0))[0] != signature:
                watch[executor] = (signature, now)
        for executor in [e for e in watch if e not in current]:
            del watch[executor]
        return {e: sig for e, (sig, since) in watch.items() if now - since >= dead_after}

    def start(self) -> None:
        self.beat(first=True)
        self._ticker.start()

    def stop(self) -> None:
        self._ticker.stop()
        if self.rt.handed_back:
            return  # the row stays, marked gone: a peer takes this executor over at once
        try:
            self.rt.store.retire(self.rt.executor_id, self.rt.incarnation)
        except Exception as exc:  # best effort: a stale row only ages out
            logger.debug("could not retire executor row: %s", exc)

    def tick(self) -> None:
        rt = self.rt
        self.beat()
        if rt.deactivated:
            return
        # Executors that shut down gracefully ('gone') are taken over at once; silent ones
        # only with dead_executor_recovery_sec, after that long. Of any version: recovery
        # hands back what this version may not run, still pinned to its version, so a dead
        # executor of another version no longer holds queue slots.
        silent_ms = None if self.dead_after is None else int(self.dead_after * 1000)
        unchanged = None if self.dead_after is None else self.standing_still(self.dead_after)
        dead = rt.store.claim_dead_executors(rt.app_name, None, silent_ms, unchanged)
        dead = [d for d in dead if d != rt.executor_id]
        if dead:
            ids = recover(rt, dead)
            logger.warning(
                "executor(s) %s gone or silent for over %ss: took over %d pending workflow(s)",
                dead,
                self.dead_after,
                len(ids),
            )
