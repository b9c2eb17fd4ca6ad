"""The dequeue loop: claims ENQUEUED workflows for this executor and starts them.

One thread serves every queue this process listens to. It claims no more work than the
worker pool can start right away, so a busy executor leaves queued work to idle ones. It is
woken at once by local enqueues and recovery; otherwise it polls, slowing down while idle so
an idle process costs the database almost nothing.
"""

from __future__ import annotations

import logging
import threading
import uuid
from typing import TYPE_CHECKING, Optional

from waypoint.core.types import INTERNAL_QUEUE_NAME
from waypoint.storage.protocol import ClaimRequest
from waypoint.storage.retry import StoreClosedError

if TYPE_CHECKING:
    from waypoint.core.runtime import Runtime

logger = logging.getLogger("waypoint")

MAX_CLAIM = 256
IDLE_BACKOFF = 1.5
MAX_IDLE_INTERVAL = 5.0


class Dispatcher:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.interval = rt.config.polling_interval_sec
        self.paused = False  # set by deactivation: claim nothing more
        self._hungry = False  # the pool was full at the last poll: wake when a slot frees
        rt.pool.on_slot_free = self._slot_freed

    def _slot_freed(self) -> None:
        if self._hungry:
            self._hungry = False
            self._wake.set()

    def queue_names(self) -> list[str]:
        return [INTERNAL_QUEUE_NAME]

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="waypoint-dispatcher", daemon=True)
        self._thread.start()

    def wake(self, queue_name: Optional[str] = None) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(10)

    def _loop(self) -> None:
        interval = self.interval
        while not self._stop.is_set():
            self._wake.clear()
            try:
                claimed, saturated = self.poll_once()
            except StoreClosedError:
                return
            except Exception:
                logger.exception("dequeue failed; retrying after the polling interval")
                claimed, saturated = 0, False
            if saturated and not self._hungry:
                continue
            if claimed or self._hungry:
                interval = self.interval
            else:
                interval = min(interval * IDLE_BACKOFF, MAX_IDLE_INTERVAL)
            self._wake.wait(interval)

    def poll_once(self) -> tuple[int, bool]:
        """Claim and start what fits; returns (claimed, whether more may be waiting)."""
        if self.paused:
            return 0, False
        rt = self.rt
        total = 0
        saturated = False
        self._hungry = False
        for queue in self.queue_names():
            free = rt.pool.free_slots()
            if free <= 0:
                self._hungry = True
                break
            limit = min(free, MAX_CLAIM)
            rows = rt.store.claim(
                ClaimRequest(
                    queue_name=queue,
                    limit=limit,
                    executor_id=rt.executor_id,
                    application_version=rt.app_version,
                    application_name=rt.app_name,
                    claim_token=uuid.uuid4().hex,
                ),
                rt.now_ms(),
            )
            from waypoint.core.workflows import dispatch_claimed

            for row in rows:
                try:
                    dispatch_claimed(rt, row)
                except Exception:
                    logger.exception("could not start claimed workflow %s", row.workflow_id)
            total += len(rows)
            saturated = saturated or len(rows) == limit
        return total, saturated
