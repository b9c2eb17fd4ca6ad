"""The launched engine: worker pool, timers, the runs in flight and the services beside them.

One ``Runtime`` exists per launched ``DBOS``; ``DBOS.destroy`` stops it. The assembly
(``waypoint._api.launch``) builds it, registers its services and makes it current; everything
that needs "the current engine" reaches it through ``get_runtime()``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any, Optional

from waypoint.core.engine import Engine
from waypoint.core.fingerprint import workflow_fingerprints
from waypoint.core.parking import ParkingLot
from waypoint.core.pool import WorkerPool
from waypoint.core.registrations import REGISTRY
from waypoint.core.run import RunEntry, take_parked
from waypoint.core.services import Dispatch, NoDispatch, Periodic, Service
from waypoint.core.settings import RuntimeConfig
from waypoint.core.storage_errors import StoreClosed
from waypoint.core.timers import TimerService
from waypoint.core.types import INTERNAL_QUEUE_NAME
from waypoint.error import DBOSException, WaypointStorageFullError
from waypoint.storage.protocol import Store, cancel_key, done_key
from waypoint.storage.records import Completion

logger = logging.getLogger("waypoint")
DEADLINE_RETRY_SEC = 1.0  # a timeout's cancellation that found the disk full is retried after

# How far back a failover re-applies this process's completions: beyond any replication lag
# an asynchronous standby is let run with.
REAPPLY_HORIZON_SEC = 300.0


class Runtime(Engine):
    app_version: str  # a launched runtime always knows its version

    def __init__(self, config: RuntimeConfig, app_version: str, store: Store) -> None:
        super().__init__(
            store,
            app_name=config.name,
            executor_id=config.executor_id,
            app_version=app_version,
            serializer=config.serializer,
            polling_interval_sec=config.polling_interval_sec,
            refuse_pickle=config.refuse_pickle,
        )
        self.config = config
        # Claims and recovery also take an older version's workflow of the same fingerprint.
        self.compatible_versions = config.version_compatibility == "fingerprint"
        self.incarnation = uuid.uuid4().hex  # this launch of this process
        self.pool = WorkerPool(config.max_executor_threads)
        self.timers = TimerService()
        self.dispatch: Dispatch = NoDispatch()
        self.services: list[Service] = []
        self._started: list[Service] = []
        self._active: dict[str, RunEntry] = {}
        self._active_lock = threading.Lock()
        self._deadline_timers: dict[str, int] = {}
        # Suspended runs, as plain data (core/parking.py): out of ``_active`` until they wake.
        self.lot = ParkingLot(self, self.timers, self._active, self._active_lock)
        self.wakeups.add_hook("", self.lot.key_fired)
        # Without notifications, parked waits are polled together (ParkingLot.poll).
        self._lot_poll = Periodic(
            "parked-poll", config.polling_interval_sec, self.lot.poll, stop_on=(StoreClosed,)
        )
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        # The application's own loop (running where it launched, or its web server's): async
        # workflows started from other threads (dequeued, scheduled) run there while it runs.
        self.main_loop: Optional[asyncio.AbstractEventLoop] = None
        self._loop_thread: Optional[threading.Thread] = None
        self._loop_lock = threading.Lock()
        self._tasks: set[Any] = set()
        self.stopping = threading.Event()
        self.deactivated = False
        self.draining = False
        # Set once a graceful shutdown handed this incarnation's work back: its executors
        # row then stays, marked gone, for peers to take over at their next heartbeat.
        self.handed_back = False
        # This process's recent workflow completions, re-applied after a failover: an
        # asynchronous standby may not have received them, and a workflow whose completion
        # is lost would stay PENDING, owned by a run that already returned. Kept as flat
        # tuples of strings and numbers (time, then the Completion's fields), which the
        # garbage collector stops tracking: 10,000 objects every full collection walks
        # otherwise, in any busy process (issue 11).
        self._recent_completions: deque[tuple[Any, ...]] = deque(maxlen=10_000)
        self.failover_hooks.append(self.reapply_completions)

    def service(self, name: str) -> Optional[Service]:
        return next((s for s in self.services if s.name == name), None)

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self, recover: Optional[Callable[[], object]] = None) -> None:
        """Make the database ready, then start the services in the order they were added.

        ``recover`` (launch recovery) runs just before the queue dispatcher starts: recovery
        takes back this executor's PENDING rows, and a row the dispatcher had already claimed
        in this launch would otherwise be taken back too and run a second time."""
        if self.config.run_migrations:
            self.store.migrate()
        else:
            self.store.verify_schema()
        self.store.open()
        if self.config.use_listen_notify:
            self.start_listening()
        if not self.notifications:
            self._lot_poll.start()
        self.store.register_version(self.app_version, self.app_name)
        # Recorded whatever this process checks, so the version after it can compare.
        self.store.register_fingerprints(
            self.app_version, self.app_name, workflow_fingerprints(REGISTRY)
        )
        dispatcher: object = self.dispatch
        for svc in self.services:
            if recover is not None and svc is dispatcher:
                recover()
                recover = None
            svc.start()
            self._started.append(svc)
        if recover is not None:
            recover()

    def stop(self, workflow_completion_timeout_sec: float = 0) -> None:
        """Stop everything. With a completion timeout this is a graceful shutdown (``drain``):
        what still runs when it expires is handed back to peers. Without one (DBOS's
        default) unfinished workflows stay PENDING on this executor, for its next launch,
        a peer's dead-executor takeover, or the recovery endpoint."""
        if workflow_completion_timeout_sec > 0 and not self.stopping.is_set():
            try:
                self.drain(workflow_completion_timeout_sec)
            except Exception:
                logger.exception("draining failed; unfinished workflows stay PENDING here")
        self.stopping.set()
        while self._started:
            svc = self._started.pop()
            try:
                svc.stop()
            except Exception:
                logger.exception("stopping %s failed", svc.name)
        self._lot_poll.stop()
        self.stop_listening()
        self.wakeups.remove_hooks([self.lot.key_fired])
        self.timers.stop()
        with self._active_lock:
            entries = list(self._active.values())
        for entry in entries:
            entry.abandon()
        self.store.close()
        self.pool.shutdown()
        loop = self._loop
        if loop is not None:
            loop.call_soon_threadsafe(loop.stop)
            if self._loop_thread is not None:
                self._loop_thread.join(5)

    # -- graceful shutdown -----------------------------------------------------------------------
    def drain(self, grace_sec: float) -> list[str]:
        """Stop dequeuing and firing schedules at once, hand back claimed work that has not
        started and workflows parked in a durable wait (sleep, recv, get_event), let the
        others finish for up to ``grace_sec``, then hand back the rest; returns the IDs handed
        back. The executors row says 'draining' meanwhile (its
        heartbeats go on, so nobody takes it for dead) and 'gone' at the end.

        A handed-back workflow is ENQUEUED on its queue (direct ones on the internal queue)
        with no executor and no run token: a compatible peer's dispatcher claims it as soon as
        it is told (NOTIFY) or polls, and any write the run here still attempts is refused."""
        self.deactivate()
        self.draining = True
        self._set_state("draining")
        unstarted = self._withdraw_unstarted()
        released = self.release(unstarted)
        for entry in unstarted:
            self.unregister(entry)
            entry.abandon()
        if unstarted:
            logger.info("draining: handed back %d claimed workflow(s)", len(released))
        # Workflows parked in a durable wait run no code of the user's: they go back at once
        # (and keep going back as runs park), the others get the grace period to finish.
        deadline = time.monotonic() + grace_sec
        while True:
            running = [e for e in self._entries() if not e.released]
            if not running or time.monotonic() >= deadline:
                break
            waiting = take_parked(running)
            if waiting:
                released += self.release(waiting)
            else:
                time.sleep(0.05)
        late = self.release([e for e in self._entries() if not e.released])
        if late:
            logger.warning(
                "draining: %d workflow(s) still running after %ss were handed back",
                len(late),
                grace_sec,
            )
        self._set_state("gone")
        self.handed_back = True
        return released + late

    def release(self, entries: list[RunEntry]) -> list[str]:
        """Hand these runs' workflows back to their queues (see ``drain``). Each run first
        stops starting operations, then its rows are released, then its waits (sleep, recv,
        events, results) are woken so it unwinds without writing."""
        if not entries:
            return []
        runs = [e.run for e in entries if e.run is not None and not e.done.is_set()]
        for entry in entries:
            entry.released = True
        ids = self.store.release_runs(
            [r.owner_xid for r in runs if r.owner_xid], INTERNAL_QUEUE_NAME, self.now_ms()
        )
        for entry in entries:
            entry.cancel.set()
            self.wakeups.fire(cancel_key(entry.workflow_id))
        return ids

    def _withdraw_unstarted(self) -> list[RunEntry]:
        """Runs claimed here whose worker has not started them: they will never start here."""
        return [e for e in self._entries() if e.task is not None and e.task.withdraw()]

    def _entries(self) -> list[RunEntry]:
        """Every run here, parked ones' entries rebuilt (a drain hands them back)."""
        with self._active_lock:
            for workflow_id in self.lot.ids_locked():
                self.lot.entry(workflow_id)
            return list(self._active.values())

    def _set_state(self, state: str) -> None:
        try:
            self.store.set_executor_state(self.executor_id, self.incarnation, state)
        except Exception as exc:  # the heartbeat row is advice to peers and operators
            logger.warning("could not mark executor %s %s: %s", self.executor_id, state, exc)

    # -- failover -------------------------------------------------------------------------------
    def completed(self, done: Completion) -> None:
        """Remember a completion this process wrote (see ``reapply_completions``)."""
        self._recent_completions.append(
            (
                time.monotonic(),
                done.workflow_id,
                done.owner_xid,
                done.status,
                done.output,
                done.error,
                done.now_ms,
            )
        )

    def reapply_completions(self) -> int:
        """Write again the completions of the last ``REAPPLY_HORIZON_SEC``; returns how many
        had been lost. Each is fenced on its run token and only moves a PENDING row, so one
        that survived, or a workflow another execution took over since, is left alone."""
        horizon = time.monotonic() - REAPPLY_HORIZON_SEC
        recent = [Completion(*c[1:]) for c in list(self._recent_completions) if c[0] >= horizon]
        restored = [done.workflow_id for done in recent if self.store.complete_workflow(done)]
        if restored:
            logger.warning(
                "re-applied %d workflow completion(s) lost in the failover: %s",
                len(restored),
                restored[:20],
            )
            for workflow_id in restored:
                self.wakeups.fire(done_key(workflow_id))
        return len(restored)

    # -- runs in flight -------------------------------------------------------------------------
    def register(self, workflow_id: str) -> tuple[RunEntry, bool]:
        """Track a run starting here; returns (entry, True) or (existing entry, False)."""
        with self._active_lock:
            existing = self._active.get(workflow_id)
            if existing is not None and not existing.done.is_set():
                return existing, False
            if workflow_id in self.lot:
                # Suspended here (core/parking.py): its entry, rebuilt, is the one running it.
                parked = self.lot.entry(workflow_id)
                assert parked is not None
                return parked, False
            entry = RunEntry(workflow_id)
            self._active[workflow_id] = entry
            return entry, True

    def unregister(self, entry: RunEntry) -> None:
        with self._active_lock:
            if self._active.get(entry.workflow_id) is not entry:
                return
            del self._active[entry.workflow_id]
            handle = self._deadline_timers.pop(entry.workflow_id, None)
        if handle is not None:
            self.timers.cancel(handle)
        on_end, entry.on_end = entry.on_end, None
        if on_end is not None:
            on_end()

    def active(self, workflow_id: str, parked: bool = False) -> Optional[RunEntry]:
        """The entry of the run of ``workflow_id`` here; one suspended in the parking lot has
        none (its waiters read the database and wait on its keys) unless ``parked``: then
        its entry is rebuilt (and kept until it resumes)."""
        with self._active_lock:
            entry = self._active.get(workflow_id)
            if entry is None and parked:
                entry = self.lot.entry(workflow_id)
            return entry

    def active_count(self) -> int:
        """Runs in flight here, suspended ones included."""
        with self._active_lock:
            return len(self._active) + self.lot.unregistered_locked()

    def arm_deadline(self, workflow_id: str, deadline_ms: Optional[int]) -> None:
        if deadline_ms is None:
            return
        handle = self.timers.at(deadline_ms / 1000, lambda: self._deadline_passed(workflow_id))
        with self._active_lock:
            self._deadline_timers[workflow_id] = handle

    def _deadline_passed(self, workflow_id: str) -> None:
        logger.info("workflow %s reached its deadline and is being cancelled", workflow_id)
        try:
            self.cancel([workflow_id])
        except WaypointStorageFullError as exc:
            # Not written. A timer that gave up would let the workflow outlive its timeout
            # (the storage layer waits out outages itself, but not a full disk): try again
            # while it still runs here.
            if self.active(workflow_id) is None and workflow_id not in self.lot:
                return
            logger.warning(
                "workflow %s: its deadline passed but the system database is full (%s); "
                "cancelling it again in %.0fs",
                workflow_id,
                exc,
                DEADLINE_RETRY_SEC,
            )
            self.arm_deadline(workflow_id, int((time.time() + DEADLINE_RETRY_SEC) * 1000))

    def deactivate(self) -> None:
        """Finish what runs here, but start and dequeue nothing new (a draining executor)."""
        self.deactivated = True
        self.dispatch.pause()

    def is_latest_version(self) -> bool:
        """Workflows enqueued without a version run only on executors of the latest one."""
        versions = self.store.list_versions(self.app_name)
        return not versions or versions[0].version_name == self.app_version

    # -- async plumbing -------------------------------------------------------------------------
    def background_loop(self) -> asyncio.AbstractEventLoop:
        """An event loop on its own thread, for async workflows started from sync code."""
        with self._loop_lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def run() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_forever()
                    loop.close()

                self._loop_thread = threading.Thread(target=run, name="waypoint-async", daemon=True)
                self._loop_thread.start()
                ready.wait()
                self._loop = loop
            return self._loop

    def spawn(
        self,
        coro: Coroutine[Any, Any, Any],
        home: Optional[asyncio.AbstractEventLoop] = None,
    ) -> None:
        """Run a coroutine on ``home`` while it runs (a resumed workflow goes back to the loop
        it ran on), else on the caller's loop if there is one, else on the application's main
        loop while it runs, else on the background loop."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if home is not None and home is not loop and home.is_running():
            fut = asyncio.run_coroutine_threadsafe(coro, home)
            self._tasks.add(fut)
            fut.add_done_callback(self._tasks.discard)
            return
        if loop is not None:
            task = loop.create_task(coro)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return
        main = self.main_loop
        target = main if main is not None and main.is_running() else self.background_loop()
        fut = asyncio.run_coroutine_threadsafe(coro, target)
        self._tasks.add(fut)
        fut.add_done_callback(self._tasks.discard)


_runtime: Optional[Runtime] = None


def set_runtime(rt: Optional[Runtime]) -> None:
    global _runtime
    _runtime = rt


def get_runtime() -> Runtime:
    rt = _runtime
    if rt is None:
        raise DBOSException(
            "Waypoint is not launched: construct DBOS(config=...) and call DBOS.launch() first"
        )
    return rt


def maybe_runtime() -> Optional[Runtime]:
    return _runtime
