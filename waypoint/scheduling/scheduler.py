"""Cron schedules: ``@DBOS.scheduled`` functions and schedules stored in the database.

One thread computes every schedule's next firing time and sleeps until the earliest. A firing
enqueues the workflow with the ID ``sched-<name>-<ISO time>``: every process of the
application may fire the same slot, and the workflow ID makes exactly one of them count.
Stored schedules are re-read every ``scheduler_polling_interval_sec`` (and at once when this
process changes one: the ``S:`` wake-up). A deactivated executor fires nothing, nor does one
that is not of the latest application version; firings are unversioned rows, which executors
of the latest version run.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional

from waypoint.core.effects import drive_sync
from waypoint.core.registrations import REGISTRY
from waypoint.core.runtime import Runtime
from waypoint.core.storage_errors import StoreClosed
from waypoint.error import DBOSException
from waypoint.scheduling.cron import MAX_BACKFILL, next_time, slot_workflow_id, zone
from waypoint.scheduling.firing import enqueue_decorated, fire_flow
from waypoint.storage.protocol import SCHEDULE_KEY_PREFIX, ScheduleFilter

logger = logging.getLogger("waypoint")


@dataclass
class Scheduled:
    """One schedule as the thread sees it."""

    name: str  # the schedule's name: part of every firing's workflow ID
    cron: str
    tz: dt.tzinfo
    fire: Callable[[dt.datetime], None]
    next_at: dt.datetime
    backfill_from: Optional[dt.datetime] = None


class Scheduler:
    name = "scheduler"

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self._cond = threading.Condition()
        self._stop = False
        self._dirty = True
        self._thread: Optional[threading.Thread] = None
        self._decorated: list[tuple[str, str, Callable[..., Any]]] = []
        self._active: dict[str, Scheduled] = {}
        self._last_db_read = 0.0
        self.polling_interval = float(rt.config.raw.get("scheduler_polling_interval_sec") or 30.0)

    def add_decorated(self, name: str, cron: str, workflow: Callable[..., Any]) -> None:
        """Fire ``workflow`` on ``cron`` (also after start: the set is re-read at once)."""
        with self._cond:
            self._decorated.append((name, cron, workflow))
        self.refresh()

    def refresh(self, key: str = "") -> None:
        with self._cond:
            self._dirty = True
            self._cond.notify()

    def start(self) -> None:
        self.rt.wakeups.add_hook(SCHEDULE_KEY_PREFIX, self.refresh)
        self._thread = threading.Thread(target=self._loop, name="waypoint-scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.rt.wakeups.remove_hooks([self.refresh])
        with self._cond:
            self._stop = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(5)

    # -- building the set of schedules ------------------------------------------------------
    def _load(self) -> None:
        now = dt.datetime.now(dt.timezone.utc)
        wanted: dict[str, Scheduled] = {}
        for name, cron, workflow in list(self._decorated):
            wanted[name] = Scheduled(
                name, cron, dt.timezone.utc, self._legacy_fire(name, workflow), now
            )
        for row in self.rt.store.list_schedules(ScheduleFilter(self.rt.app_name, "ACTIVE")):
            info = REGISTRY.workflows.get(row.workflow_name)
            if info is None:
                continue  # another application version defines it
            try:
                tz = zone(row.cron_timezone)
            except DBOSException as exc:
                logger.error("schedule %s: %s", row.schedule_name, exc)
                continue
            last = (
                dt.datetime.fromisoformat(row.last_fired_at)
                if row.automatic_backfill and row.last_fired_at
                else None
            )
            wanted[row.schedule_name] = Scheduled(
                row.schedule_name,
                row.schedule,
                tz,
                self._dynamic_fire(row.schedule_name),
                now,
                backfill_from=last,
            )
        for name, sched in wanted.items():
            current = self._active.get(name)
            if current is not None and current.cron == sched.cron and current.tz == sched.tz:
                sched.next_at = current.next_at
                sched.backfill_from = None
            else:
                start = sched.backfill_from or now
                sched.next_at = next_time(sched.cron, start.astimezone(sched.tz))
        self._active = wanted

    def _legacy_fire(
        self, name: str, workflow: Callable[..., Any]
    ) -> Callable[[dt.datetime], None]:
        def fire(when: dt.datetime) -> None:
            args = (when, dt.datetime.now(dt.timezone.utc))
            drive_sync(enqueue_decorated(self.rt, workflow, slot_workflow_id(name, when), args))

        return fire

    def _dynamic_fire(self, name: str) -> Callable[[dt.datetime], None]:
        def fire(when: dt.datetime) -> None:
            row = self.rt.store.get_schedule(name)
            if row is not None:
                drive_sync(fire_flow(self.rt, row, when, slot_workflow_id(name, when)))

        return fire

    # -- the loop -------------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._cond:
                if self._stop:
                    return
                dirty, self._dirty = self._dirty, False
            try:
                if dirty or time.monotonic() - self._last_db_read >= self.polling_interval:
                    self._last_db_read = time.monotonic()
                    self._load()
                wait = self._fire_due()
            except StoreClosed:
                return
            except Exception:
                logger.exception("scheduler pass failed; retrying")
                wait = 1.0
            with self._cond:
                if self._stop:
                    return
                if not self._dirty:
                    self._cond.wait(max(0.0, min(wait, self.polling_interval)))

    def _fire_due(self) -> float:
        now = dt.datetime.now(dt.timezone.utc)
        wait = self.polling_interval
        # Only executors of the latest version fire (firings run there): during a rolling
        # deploy the old version stops at once, and a schedule the new code dropped stops.
        latest: Optional[bool] = None
        for sched in list(self._active.values()):
            due: list[dt.datetime] = []
            while sched.next_at <= now and len(due) < MAX_BACKFILL:
                due.append(sched.next_at)
                sched.next_at = next_time(sched.cron, sched.next_at.astimezone(sched.tz))
            if due and sched.backfill_from is None:
                # Slots missed while the host slept (or the process was down) are not
                # replayed unless the schedule asked for backfill: fire the latest only.
                due = due[-1:]
            sched.backfill_from = None
            if due and latest is None:
                latest = self.rt.is_latest_version()
            for when in due:
                if self.rt.deactivated or not latest:
                    break
                try:
                    sched.fire(when)
                except DBOSException as exc:
                    logger.error("schedule %s could not fire: %s", sched.name, exc)
            wait = min(wait, (sched.next_at - now).total_seconds())
        return wait
