"""The retention policy: finished workflows older than ``retention_max_age_sec`` or beyond the
newest ``retention_max_rows`` are deleted every ``retention_interval_sec`` (never PENDING,
ENQUEUED or DELAYED ones)."""

from __future__ import annotations

import logging
from typing import Optional

from waypoint.core.runtime import Runtime
from waypoint.core.services import Periodic
from waypoint.core.storage_errors import StoreClosed
from waypoint.storage.protocol import RetentionRequest

logger = logging.getLogger("waypoint")

FIRST_RUN_SEC = 10.0  # the first pass comes soon after launch, not a whole interval later


class Retention:
    name = "retention"

    def __init__(self, rt: Runtime) -> None:
        cfg = rt.config
        self.rt = rt
        self.max_age: Optional[float] = cfg.retention_max_age_sec
        self.max_rows: Optional[int] = cfg.retention_max_rows
        every = cfg.retention_interval_sec
        self._ticker = Periodic(
            self.name,
            every,
            self.tick,
            stop_on=(StoreClosed,),
            first_after=min(FIRST_RUN_SEC, max(0.2, every)),
        )

    @staticmethod
    def wanted(rt: Runtime) -> bool:
        return (
            rt.config.retention_max_age_sec is not None or rt.config.retention_max_rows is not None
        )

    def start(self) -> None:
        self._ticker.start()

    def stop(self) -> None:
        self._ticker.stop()

    def tick(self) -> None:
        rt = self.rt
        cutoff = rt.now_ms() - int(self.max_age * 1000) if self.max_age is not None else None
        deleted = rt.store.garbage_collect(RetentionRequest(cutoff, self.max_rows, rt.app_name))
        if deleted:
            logger.info("retention policy deleted %d finished workflow(s)", deleted)
