"""The dequeue loop: claims ENQUEUED workflows for this executor and starts them.

One thread serves every queue this process listens to. It claims no more than it can start
at once (free worker threads, the queue's per-process limits), so a busy executor leaves
queued work to idle ones. It is woken at once by local enqueues, by the worker pool when a
thread frees up, and on PostgreSQL by NOTIFY from other processes; without notifications it
polls each queue at the queue's interval. With a healthy listener the polls are only a slow
safety net, so an idle process costs the database next to nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Optional

from waypoint.core.claimed import dispatch_claimed, load_histories
from waypoint.core.engine import SAFETY_INTERVAL
from waypoint.core.ids import random_hex
from waypoint.core.run import RunEntry
from waypoint.core.runtime import Runtime
from waypoint.core.storage_errors import StoreClosed
from waypoint.core.types import INTERNAL_QUEUE_NAME
from waypoint.queues.model import INTERNAL_QUEUE, QUEUES, QueueConfig, config_from_row
from waypoint.storage.protocol import ClaimRequest, WorkflowRow

logger = logging.getLogger("waypoint")
# The most ``pause`` waits for a claiming pass (one stuck in a database outage is given up on).
PAUSE_WAIT = 10.0

MAX_CLAIM = 256
QUEUE_REFRESH = 5.0  # how often database-backed queue definitions are re-read


class Dispatcher:
    """The runtime's ``Dispatch`` service."""

    name = "dispatcher"

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self._cond = threading.Condition()
        self._woken: set[str] = set()
        self._all_woken = True
        self._stop = False
        self._thread: Optional[threading.Thread] = None
        self._next_poll: dict[str, float] = {}
        self._db_queues: dict[str, QueueConfig] = {}
        self._db_queues_at = 0.0
        self._next_delay_ms: Optional[int] = None
        self._delay_checked_at = 0.0
        self._hungry = False
        self._timers_dirty = False  # a delayed workflow appeared: re-read the next due time
        self.paused = False  # deactivated: claim nothing more
        # Held by a pass while it claims and hands what it claimed to the workers: ``pause``
        # waits for it, so nothing is claimed after a draining executor withdrew its work.
        self._claiming = threading.Lock()
        self.running: Counter[str] = Counter()
        self.partition_running: Counter[tuple[str, str]] = Counter()
        self._count_lock = threading.Lock()
        rt.pool.on_slot_free = self._slot_freed
        self._hooks = [self._queue_woken, self._timer_woken, self._config_woken, self._woken_all]
        rt.wakeups.add_hook("q:", self._queue_woken)
        rt.wakeups.add_hook("t:", self._timer_woken)
        rt.wakeups.add_hook("Q:", self._config_woken)
        # Unversioned work waits for the latest version; after a change it may now be ours.
        rt.wakeups.add_hook("V:", self._woken_all)

    # -- wake-ups -------------------------------------------------------------------------------
    def wake(self, queue_name: Optional[str] = None) -> None:
        with self._cond:
            if queue_name is None:
                self._all_woken = True
            else:
                self._woken.add(queue_name)
            self._cond.notify()

    def _queue_woken(self, key: str) -> None:
        name = key[2:] if key else None
        if name and name not in self._db_queues and QUEUES.get(name) is None:
            with self._cond:
                self._db_queues_at = 0.0  # work for a queue we have not seen: re-read them
        elif name and self._full_here(name):
            return
        self.wake(name)

    def _full_here(self, name: str) -> bool:
        """Whether ``name`` runs as many workflows here as its ``worker_concurrency`` allows.
        A pass would claim nothing from it, and the end of each of those runs wakes the loop
        for the queue (``_ended``), so an enqueue onto it, or another process's wake-up, need
        not: a producer filling a backlog used to wake this thread once per enqueue, a thread
        switch and a pass each time, ~0.06 ms of the enqueue's CPU (issue 11). A run is
        counted only once admitted, so the count never runs ahead of what runs here."""
        cfg = QUEUES.get(name) or self._db_queues.get(name)
        if cfg is None:
            return False
        cap = cfg.effective().worker_concurrency
        if cap is None:
            return False
        with self._count_lock:
            return self.running[name] >= cap

    def _timer_woken(self, key: str) -> None:
        with self._cond:
            self._timers_dirty = True
            self._cond.notify()

    def _config_woken(self, key: str) -> None:
        with self._cond:
            self._db_queues_at = 0.0
            self._all_woken = True
            self._cond.notify()

    def _woken_all(self, key: str) -> None:
        self.wake()

    def pause(self) -> None:
        """Claim nothing more; returns once a pass that was claiming has handed its claims to
        the workers (a drain then withdraws them: without the wait, a claim committed just
        after the drain looked left its rows PENDING here with no thread to run them)."""
        self.paused = True
        if threading.current_thread() is not self._thread and self._claiming.acquire(
            timeout=PAUSE_WAIT
        ):
            self._claiming.release()

    def _slot_freed(self) -> None:
        if self._hungry:
            self._hungry = False
            self.wake()

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="waypoint-dispatcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.rt.wakeups.remove_hooks(self._hooks)
        with self._cond:
            self._stop = True
            self._cond.notify()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(10)

    # -- accounting of what runs here ---------------------------------------------------------
    def _admitted(self, row: WorkflowRow) -> Callable[[RunEntry], None]:
        queue, partition = row.queue_name, row.queue_partition_key

        def admitted(entry: RunEntry) -> None:
            if queue is None:
                return
            with self._count_lock:
                self.running[queue] += 1
                if partition is not None:
                    self.partition_running[(queue, partition)] += 1
            entry.on_end = lambda: self._ended(queue, partition)

        return admitted

    def _ended(self, queue: str, partition: Optional[str]) -> None:
        with self._count_lock:
            self.running[queue] -= 1
            if partition is not None:
                self.partition_running[(queue, partition)] -= 1
        self.wake(queue)

    # -- the loop -------------------------------------------------------------------------------
    def queues(self) -> list[QueueConfig]:
        now = time.monotonic()
        refresh = QUEUE_REFRESH if not self.rt.notifications else SAFETY_INTERVAL
        if now - self._db_queues_at >= refresh:
            self._db_queues_at = now
            try:
                rows = self.rt.store.list_queues(self.rt.app_name)
            except StoreClosed:
                raise
            except Exception:
                logger.exception("could not read database-backed queues")
                rows = None
            if rows is not None:
                self._db_queues = {r.name: config_from_row(r) for r in rows}
        configs: dict[str, QueueConfig] = dict(self._db_queues)
        for cfg in QUEUES.all():
            configs[cfg.name] = cfg  # declared in code wins over the database
        listen = QUEUES.listen
        chosen = [
            cfg.effective()
            for name, cfg in sorted(configs.items())
            if name != INTERNAL_QUEUE_NAME and (listen is None or name in listen)
        ]
        return [INTERNAL_QUEUE, *chosen]

    def _interval(self, cfg: QueueConfig) -> float:
        if self.rt.notifications:
            return max(cfg.polling_interval_sec, SAFETY_INTERVAL)
        return cfg.polling_interval_sec

    def _loop(self) -> None:
        while True:
            with self._cond:
                if self._stop:
                    return
                woken, self._woken = self._woken, set()
                all_woken, self._all_woken = self._all_woken, False
                timers, self._timers_dirty = self._timers_dirty, False
            try:
                wait = self._pass(woken, all_woken, timers)
            except StoreClosed:
                return
            except Exception:
                logger.exception("dequeue failed; retrying shortly")
                wait = 1.0
            with self._cond:
                if self._stop:
                    return
                if not (self._woken or self._all_woken or self._timers_dirty) and wait > 0:
                    self._cond.wait(wait)

    def _pass(self, woken: set[str], all_woken: bool, timers: bool) -> float:
        """One round over the queues; returns how long the loop may sleep."""
        rt = self.rt
        now = time.monotonic()
        wall_ms = rt.now_ms()
        if (
            timers
            or (self._next_delay_ms is not None and wall_ms >= self._next_delay_ms)
            or now - self._delay_checked_at >= self.rt.wait_interval()
        ):
            for queue in rt.store.promote_delayed(wall_ms):
                woken.add(queue)
            self._next_delay_ms = rt.store.next_delayed()
            self._delay_checked_at = now
        with self._claiming:
            return self._claim_pass(woken, all_woken, now)

    def _claim_pass(self, woken: set[str], all_woken: bool, now: float) -> float:
        rt = self.rt
        if self.paused:
            return self.rt.wait_interval()
        self._hungry = False
        sleep = self.rt.wait_interval()
        for cfg in self.queues():
            if self.paused:
                break
            due = all_woken or cfg.name in woken or now >= self._next_poll.get(cfg.name, 0.0)
            if due:
                more, retry_in_ms = self._poll(cfg)
                if self._hungry:
                    break
                next_poll = now if more else now + self._interval(cfg)
                if retry_in_ms is not None:  # a rate limit window reopens then
                    next_poll = min(next_poll, now + retry_in_ms / 1000)
                self._next_poll[cfg.name] = next_poll
            sleep = min(sleep, self._next_poll.get(cfg.name, now) - now)
        if self._next_delay_ms is not None:
            sleep = min(sleep, max(0.0, (self._next_delay_ms - rt.now_ms()) / 1000))
        return max(0.0, sleep)

    def _poll(self, cfg: QueueConfig) -> tuple[bool, Optional[int]]:
        """Claim from one queue; returns (it may hold more we could take now, in how many
        milliseconds a rate limit that held work back reopens)."""
        rt = self.rt
        free = rt.pool.free_slots()
        if free <= 0:
            self._hungry = True
            return False, None
        limit = min(free, MAX_CLAIM)
        if cfg.worker_concurrency is not None:
            with self._count_lock:
                limit = min(limit, cfg.worker_concurrency - self.running[cfg.name])
        if limit <= 0:
            return False, None
        with self._count_lock:
            local_parts = {
                key: n for (queue, key), n in self.partition_running.items() if queue == cfg.name
            }
        req = ClaimRequest(
            queue_name=cfg.name,
            limit=limit,
            executor_id=rt.executor_id,
            application_version=rt.app_version,
            application_name=rt.app_name,
            claim_token=random_hex(),
            global_concurrency=cfg.global_concurrency,
            rate_limit=(cfg.limiter.limit, cfg.limiter.period_sec) if cfg.limiter else None,
            partitioned=cfg.partitioned,
            partition_concurrency=cfg.partition_concurrency,
            partition_rate_limit=(cfg.partition_limiter.limit, cfg.partition_limiter.period_sec)
            if cfg.partition_limiter
            else None,
            partition_worker_concurrency=cfg.partition_worker_concurrency,
            local_partition_running=local_parts,
            compatible=rt.compatible_versions,
        )
        rows = rt.store.claim(req, rt.now_ms())
        if rows and rt.observers:
            rt.observers.claimed(cfg.name, [r.workflow_id for r in rows])
            now_ms = rt.now_ms()
            # Waiting counts from when a row could run: its enqueueing, or its delay's end.
            ready = [max(r.created_at or now_ms, r.delay_until_epoch_ms or 0) for r in rows]
            waited = [max(0, now_ms - t) / 1000 for t in ready]
            rt.observers.dequeued(cfg.name, waited)
        self._start(rows, req.stepless)
        return len(rows) == limit, req.retry_in_ms

    def _start(self, rows: list[WorkflowRow], stepless: set[str]) -> None:
        # Rows the claim saw without checkpoints start with an empty history, unread.
        histories = load_histories(self.rt, [r for r in rows if r.workflow_id not in stepless])
        for row in rows:
            try:
                dispatch_claimed(self.rt, row, admitted=self._admitted(row), histories=histories)
            except Exception:
                logger.exception("could not start claimed workflow %s", row.workflow_id)
