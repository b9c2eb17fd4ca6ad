"""Suspended runs kept as plain data, out of the garbage collector's sight (issue 11).

A suspended workflow, sync or async (core/suspend.py), is re-run from its checkpoints when
it resumes, so while it waits nothing of it needs to be alive but what rebuilds it. Every
full (oldest generation) collection of CPython walks every container object alive; 10,000
parked runs of ~25 objects each (run, entry, signals, locks, closures, task) made each one
take 100-600 ms, stalling every thread (a resume p99 of 0.5 s, other workflows at 0.4 of
their throughput).

So a parked run is one tuple of strings and numbers (``Record``), which the collector stops
tracking the first time it looks at it, in a dict keyed by workflow ID; the wake-up keys it
waits on map to workflow IDs (strings); its wake-up time sits in a heap of
``(time, seq, workflow ID)`` tuples under a single timer. Its ``RunEntry`` and
``WorkflowRun`` are built again when it wakes (the first key, signal or timer takes it out,
once), or earlier when something in this process needs its entry: a re-claim handed over to
it, a cancellation, a drain (``entry``). Objects that cannot be plain data (an observer's
watches, a queue's accounting callback, a method's instance, the HTTP request that started
it) ride along in ``extras`` and only such runs hold them. An async run keeps the number
of the event loop it ran on, and resumes there as a new task.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

from waypoint.core.registrations import REGISTRY, WorkflowInfo
from waypoint.core.run import RunEntry, WorkflowRun
from waypoint.core.serialization import PORTABLE_NAME, coerce_portable_args
from waypoint.core.signals import Signal
from waypoint.core.types import Auth

if TYPE_CHECKING:
    from waypoint.core.engine import Engine
    from waypoint.core.timers import TimerService

__all__ = ["ParkingLot", "Record", "StoredCall"]


@dataclass(frozen=True)
class StoredCall:
    """A workflow's registration and stored inputs: a resumed run calls its body with
    arguments decoded afresh, never with objects the first run may have changed."""

    info: WorkflowInfo
    inputs: Optional[str]
    serialization: Optional[str]
    bound: Any  # the instance or class of a method (never stored)

    def decode(self, rt: Engine) -> tuple[tuple[Any, ...], dict[str, Any]]:
        args, kwargs = rt.codec.decode_inputs(self.inputs, self.serialization)
        if self.serialization == PORTABLE_NAME:
            args, kwargs = coerce_portable_args(self.info.func, args, kwargs)
        if self.info.kind in ("instance", "class"):
            return (self.bound, *args), kwargs
        return tuple(args), kwargs


# A parked run: an exact tuple (the collector untracks only those) of these fields.
Record = tuple[Any, ...]
(
    _NAME,
    _OWNER,
    _INPUTS,
    _SERIALIZATION,
    _SERIALIZER,
    _CLASS,
    _CONFIG,
    _QUEUE,
    _DEADLINE,
    _AUTH,
    _ATTRIBUTES,
    _OWNED_AT,
    _SEQ,
    _KEYS,
    _EXTRAS,
    _LOOP,
    _WAIT_START,
) = range(17)
# _LOOP: None (sync), or the slot of the event loop an async run resumes on (ParkingLot.loop_slot)
# _WAIT_START: (function ID, epoch ms) of the wait it is suspended in (WorkflowRun.wait_start)
# _EXTRAS: None, or (info, bound, serializer, request, origins, scope, parked_scopes, on_end)
_E_INFO, _E_BOUND, _E_SERIALIZER, _E_REQUEST, _E_ORIGINS, _E_SCOPE, _E_SCOPES, _E_ON_END = range(8)


def record_of(
    rt: Engine,
    run: WorkflowRun,
    stored: StoredCall,
    keys: Sequence[str],
    loop_slot: Optional[int] = None,
) -> Record:
    """The plain data ``run`` (suspended, waiting on ``keys``) is rebuilt from."""
    ser_name = run.serializer.name()
    try:
        same_serializer = rt.codec.by_name(ser_name) is run.serializer
    except Exception:
        same_serializer = False
    info = stored.info if REGISTRY.workflow(run.name) is not stored.info else None
    entry = run.entry
    objects = (
        info,
        stored.bound,
        None if same_serializer else run.serializer,
        run.request,
        run.origins,
        run.scope,
        run.parked_scopes or None,
        entry.on_end,
    )
    extras = None if all(x is None for x in objects) else objects
    auth = run.auth
    return (
        run.name,
        run.owner_xid,
        stored.inputs,
        stored.serialization,
        ser_name,
        run.class_name,
        run.config_name,
        run.queue_name,
        run.deadline_ms,
        None
        if auth is None
        else (auth.user, None if auth.roles is None else tuple(auth.roles), auth.assumed_role),
        run.attributes,
        run.owned_at,
        0,  # set by ParkingLot.park
        tuple(dict.fromkeys(keys)),  # once each (a wait's keys may name its cancellation)
        extras,
        loop_slot,
        run.wait_start,
    )


def stored_call(rec: Record) -> StoredCall:
    extras = rec[_EXTRAS]
    info = extras[_E_INFO] if extras is not None and extras[_E_INFO] is not None else None
    if info is None:
        info = REGISTRY.workflow(rec[_NAME])
        assert info is not None, f"workflow {rec[_NAME]!r} was registered when it parked"
    bound = extras[_E_BOUND] if extras is not None else None
    return StoredCall(info, rec[_INPUTS], rec[_SERIALIZATION], bound)


def _rebuild(rt: Engine, workflow_id: str, rec: Record) -> RunEntry:
    """The entry and run of a parked workflow, as they were when it parked."""
    extras = rec[_EXTRAS]
    ex: tuple[Any, ...] = extras if extras is not None else (None,) * 8
    serializer = ex[_E_SERIALIZER] or rt.codec.by_name(rec[_SERIALIZER])
    auth = rec[_AUTH]
    entry = RunEntry(workflow_id)
    run = WorkflowRun(
        rt,
        workflow_id,
        rec[_NAME],
        rec[_OWNER],
        serializer,
        entry,
        is_async=rec[_LOOP] is not None,
        deadline_ms=rec[_DEADLINE],
        auth=None
        if auth is None
        else Auth(auth[0], None if auth[1] is None else list(auth[1]), auth[2]),
        class_name=rec[_CLASS],
        config_name=rec[_CONFIG],
        queue_name=rec[_QUEUE],
        request=ex[_E_REQUEST],
        attributes=rec[_ATTRIBUTES],
        origins=ex[_E_ORIGINS],
    )
    run.owned_at = rec[_OWNED_AT]  # what it knew of its ownership, not what the lease says now
    run.wait_start = rec[_WAIT_START]
    run.scope = ex[_E_SCOPE]
    if ex[_E_SCOPES]:
        run.parked_scopes = ex[_E_SCOPES]
    entry.run = run
    entry.on_end = ex[_E_ON_END]
    entry.parked = 1  # suspended in its wait (run.park_suspended): a drain may take it
    return entry


Wake = Callable[[RunEntry, Record], None]


class ParkingLot:
    """The suspended runs of one runtime, as plain data, and what wakes them.

    Shares the runtime's registry of entries and its lock (``active``, ``lock``): a run
    leaves the lot and enters the registry in one step, so a workflow is always in one of
    them (or both, when its entry was rebuilt before it woke) and is never started twice."""

    def __init__(
        self,
        engine: Engine,
        timers: TimerService,
        active: dict[str, RunEntry],
        lock: threading.Lock,
    ) -> None:
        self._engine = engine
        self._timers = timers
        self._active = active
        self._lock = lock
        self.on_wake: Optional[Wake] = None  # set by core.execution when a run first parks
        self._records: dict[str, Record] = {}
        self._by_key: dict[str, Any] = {}  # key -> workflow ID, or a tuple of them
        self._heap: list[tuple[float, int, str]] = []
        self._timer: Optional[int] = None
        self._timer_at: Optional[float] = None
        self._seq = itertools.count(1)
        # The event loops async runs parked from, by slot: a record holds a number, not the
        # loop (which would keep it, and the record, in the collector's sight).
        self._loops: dict[int, asyncio.AbstractEventLoop] = {}
        self._loop_slots = itertools.count(1)

    def __contains__(self, workflow_id: str) -> bool:
        return workflow_id in self._records

    def __len__(self) -> int:
        return len(self._records)

    def ids_locked(self) -> list[str]:
        """The parked workflows' IDs; call with the lock held."""
        return list(self._records)

    def unregistered_locked(self) -> int:
        """How many parked runs have no entry in the registry; call with the lock held."""
        return sum(1 for w in self._records if w not in self._active)

    def loop_slot(self, loop: Optional[asyncio.AbstractEventLoop]) -> Optional[int]:
        """The number a record keeps for ``loop`` (None for none); closed loops are dropped."""
        if loop is None:
            return None
        with self._lock:
            for slot, known in self._loops.items():
                if known is loop:
                    return slot
            for slot in [s for s, known in self._loops.items() if known.is_closed()]:
                del self._loops[slot]
            slot = next(self._loop_slots)
            self._loops[slot] = loop
            return slot

    def loop_of(self, rec: Record) -> Optional[asyncio.AbstractEventLoop]:
        """The event loop an async run parked from (None: a sync run, or the loop is gone)."""
        slot = rec[_LOOP]
        return None if slot is None else self._loops.get(slot)

    # -- parking ----------------------------------------------------------------------------
    def park(
        self,
        entry: RunEntry,
        rec: Record,
        wake_at: Optional[float],
        signals: Sequence[Signal] = (),
        *,
        keep_entry: bool = False,
    ) -> None:
        """Hold the suspended run ``rec`` until one of its keys fires or ``wake_at`` (epoch
        seconds) passes (or now, if one of ``signals`` is set already). Its entry leaves the
        registry unless ``keep_entry`` (someone here watches it) or it was rebuilt meanwhile."""
        wid = entry.workflow_id
        seq = next(self._seq)
        rec = (*rec[:_SEQ], seq, *rec[_SEQ + 1 :])
        with self._lock:
            self._records[wid] = rec
            for key in rec[_KEYS]:
                have = self._by_key.get(key)
                if have is None:
                    self._by_key[key] = wid
                elif isinstance(have, str):
                    self._by_key[key] = (have, wid)
                else:
                    self._by_key[key] = (*have, wid)
            if wake_at is not None:
                heapq.heappush(self._heap, (wake_at, seq, wid))
                self._arm_locked(wake_at)
            dropped = not keep_entry and self._active.get(wid) is entry
            if dropped:
                del self._active[wid]
        if dropped:
            # Whoever waits on it now (a handle's get_result) reads the outcome from the
            # database and waits on its keys instead; it resumes with an entry of its own.
            entry.abandon()
        # Not hooked: a hook would keep the signal's run (a child here) alive and in the
        # collector's sight. The end it signals also fires a key the wait holds (a child's
        # completion or cancellation); one that fires none (a run here that lost its
        # workflow) leaves the outcome to another execution, whose completion fires it.
        if any(sig.is_set() for sig in signals):
            self.wake(wid, seq)

    def entry(self, workflow_id: str) -> Optional[RunEntry]:
        """The entry of a parked workflow, rebuilt and registered (it stays parked); call
        with the lock held. None if it is not parked here."""
        rec = self._records.get(workflow_id)
        if rec is None:
            return None
        entry = self._active.get(workflow_id)
        if entry is None:
            entry = self._active[workflow_id] = _rebuild(self._engine, workflow_id, rec)
        return entry

    # -- waking -----------------------------------------------------------------------------
    def poll(self) -> None:
        """Without notifications (SQLite, or LISTEN turned off) nothing tells this process of
        another's writes: every polling interval (``Runtime``), the keys of every parked run
        are read in one statement (``Store.ready_keys``) and those found ready fire, waking
        their runs. Each parked run re-read on its own instead would be re-run from its
        checkpoints every interval: 10,000 parked, 10,000 re-runs a second."""
        with self._lock:
            keys = list(self._by_key)
        if not keys:
            return
        wakeups = self._engine.wakeups
        for key in self._engine.store.ready_keys(keys):
            wakeups.fire(key)  # this lot is hooked: it wakes the runs parked on it

    def key_fired(self, key: str) -> None:
        """A wake-up key fired (a ``Wakeups`` hook); ``""`` (the listener reconnected, and
        notifications may have been lost) wakes every parked run."""
        if key and key not in self._by_key:
            return
        with self._lock:
            if key:
                found = self._by_key.get(key, ())
                ids: Sequence[str] = (found,) if isinstance(found, str) else found
            else:
                ids = list(self._records)
            woken = [self._take_locked(wid) for wid in set(ids) if wid in self._records]
        self._resume(woken)

    def wake(self, workflow_id: str, seq: Optional[int] = None) -> None:
        """Wake ``workflow_id`` now if it is parked (and still in its park ``seq``)."""
        with self._lock:
            rec = self._records.get(workflow_id)
            if rec is None or (seq is not None and rec[_SEQ] != seq):
                return
            woken = [self._take_locked(workflow_id)]
        self._resume(woken)

    def _due(self) -> None:
        """The timer: wake every run whose wake-up time passed."""
        woken = []
        with self._lock:
            self._timer = self._timer_at = None
            now = time.time()
            while self._heap and self._heap[0][0] <= now:
                _, seq, wid = heapq.heappop(self._heap)
                rec = self._records.get(wid)
                if rec is not None and rec[_SEQ] == seq:
                    woken.append(self._take_locked(wid))
            if len(self._heap) > 2 * len(self._records) + 64:
                # Woken by a key long before their time: drop those stale entries.
                self._heap = [
                    (t, s, w)
                    for t, s, w in self._heap
                    if (r := self._records.get(w)) is not None and r[_SEQ] == s
                ]
                heapq.heapify(self._heap)
            if self._heap:
                self._arm_locked(self._heap[0][0])
        self._resume(woken)

    def _arm_locked(self, wake_at: float) -> None:
        if self._timer_at is not None and self._timer_at <= wake_at:
            return
        if self._timer is not None:
            self._timers.cancel(self._timer)
        self._timer = self._timers.at(wake_at, self._due)
        self._timer_at = wake_at

    def _take_locked(self, workflow_id: str) -> tuple[RunEntry, Record]:
        """Take a run out of the lot, into the registry: its one and only wake-up."""
        rec = self._records.pop(workflow_id)
        for key in rec[_KEYS]:
            have = self._by_key.get(key)
            if have == workflow_id:
                del self._by_key[key]
            elif isinstance(have, tuple):
                rest = tuple(w for w in have if w != workflow_id)
                self._by_key[key] = rest[0] if len(rest) == 1 else rest
        entry = self._active.get(workflow_id)
        if entry is None:
            entry = self._active[workflow_id] = _rebuild(self._engine, workflow_id, rec)
        return entry, rec

    def _resume(self, woken: list[tuple[RunEntry, Record]]) -> None:
        on_wake = self.on_wake
        assert on_wake is not None or not woken, "set before the first run parks"
        for entry, rec in woken:
            on_wake(entry, rec)  # type: ignore[misc]
