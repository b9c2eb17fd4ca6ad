"""The hand-over of a suspended wait to the parking lot, and the lot's wake-ups
(core/suspend.py, core/parking.py): whatever fires first resumes the run, exactly once, never
before the body has unwound (``hand_over``), and the lot keeps the run as plain data."""

from __future__ import annotations

import gc
import threading
import time
from typing import Any, Optional, cast

from waypoint.core.engine import Engine
from waypoint.core.parking import ParkingLot, Record
from waypoint.core.run import RunEntry
from waypoint.core.signals import Signal
from waypoint.core.suspend import ParkedWait
from waypoint.core.timers import TimerService
from waypoint.core.wakeups import Wakeups


class Lot:
    """A parking lot on its own wake-ups and timers; records what it resumes."""

    def __init__(self) -> None:
        self.wakeups, self.timers = Wakeups(), TimerService()
        self.active: dict[str, RunEntry] = {}
        # No engine: every run parked here keeps its entry, so none is rebuilt.
        self.lot = ParkingLot(cast(Engine, None), self.timers, self.active, threading.Lock())
        self.resumed: list[str] = []
        self.any_resumed = threading.Event()
        self.lot.on_wake = self._woken
        self.wakeups.add_hook("", self.lot.key_fired)

    def _woken(self, entry: RunEntry, rec: Record) -> None:
        self.resumed.append(entry.workflow_id)
        self.any_resumed.set()

    def park(
        self, wid: str, keys: list[str], wake_at: Optional[float], signals: Any = ()
    ) -> ParkedWait:
        """A wait set up, its body unwound, then handed over (as ``execution._park``)."""
        parked = ParkedWait(self.wakeups, keys, wake_at, signals)
        entry = self.active[wid] = RunEntry(wid)
        rec: Record = (None,) * 13 + (tuple(keys), None, None)
        if parked.hand_over(
            lambda: self.lot.park(entry, rec, wake_at, parked.hooked, keep_entry=True)
        ):
            self.lot.wake(wid)
        return parked


def test_a_key_fired_before_the_hand_over_resumes_at_once_and_once() -> None:
    t = Lot()
    try:
        parked = ParkedWait(t.wakeups, ["m:w::t"], time.time() + 0.05)
        t.wakeups.fire("m:w::t")  # the message came while the body was still unwinding
        entry = t.active["w"] = RunEntry("w")
        rec: Record = (None,) * 13 + (("m:w::t",), None, None)
        early = parked.hand_over(lambda: t.lot.park(entry, rec, parked.wake_at, keep_entry=True))
        assert early and t.resumed == []
        t.lot.wake("w")
        assert t.resumed == ["w"]
        t.wakeups.fire("m:w::t")
        time.sleep(0.2)  # the timer's moment passes too: nothing more
        assert t.resumed == ["w"]
        assert "w" not in t.lot and t.wakeups._subs == {}
    finally:
        t.timers.stop()


def test_the_first_of_its_keys_and_its_timer_wins() -> None:
    t = Lot()
    try:
        for round_ in range(50):
            wid = f"w{round_}"
            t.park(wid, [f"d:child{round_}", f"c:{wid}"], time.time())
            threads = [
                threading.Thread(target=t.wakeups.fire, args=(f"d:child{round_}",)),
                threading.Thread(target=t.wakeups.fire, args=(f"c:{wid}",)),
                threading.Thread(target=t.wakeups.fire_all),
            ]
            for th in threads:
                th.start()
            for th in threads:
                th.join()
        deadline = time.monotonic() + 30
        while len(t.lot) and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.1)
        assert sorted(t.resumed) == sorted(f"w{i}" for i in range(50))
        assert t.lot._by_key == {}
    finally:
        t.timers.stop()


def test_the_timer_resumes_a_wait_nothing_else_ends() -> None:
    t = Lot()
    try:
        t.park("late", ["c:late"], time.time() + 3600)
        t.park("soon", ["c:soon"], time.time() + 0.05)
        assert t.any_resumed.wait(30)
        assert t.resumed == ["soon"] and "late" in t.lot
        t.wakeups.fire("c:soon")  # gone from the lot once resumed: nothing more
        assert t.resumed == ["soon"]
    finally:
        t.timers.stop()


def test_a_signal_set_before_it_parks_resumes_it() -> None:
    t = Lot()
    try:
        done = Signal()
        done.set()
        t.park("parent", ["d:child"], None, signals=[done])
        assert t.resumed == ["parent"]
        # A parked run hooks no signal: it would keep the signal's run alive (the key of the
        # end it signals wakes it instead).
        later = Signal()
        t.park("other", ["d:other-child"], None, signals=[later])
        assert later._callbacks in (None, [])
        t.wakeups.fire("d:other-child")
        assert t.resumed == ["parent", "other"]
    finally:
        t.timers.stop()


def test_what_the_lot_keeps_is_untracked_plain_data() -> None:
    t = Lot()
    try:
        for i in range(20):
            t.park(f"w{i}", [f"m:w{i}::t", f"c:w{i}"], time.time() + 3600)
        gc.collect()
        gc.collect()  # a tuple in a tuple may be untracked one collection after it
        assert not any(gc.is_tracked(rec) for rec in t.lot._records.values())
        assert not any(gc.is_tracked(item) for item in t.lot._heap)
        assert not gc.is_tracked(t.lot._by_key)
    finally:
        t.timers.stop()


def test_a_dropped_wait_never_resumes() -> None:
    wakeups = Wakeups()
    done = Signal()
    parked = ParkedWait(wakeups, ["e:w::k"], None, signals=[done])
    parked.drop()
    wakeups.fire("e:w::k")
    done.set()
    assert wakeups._subs == {}
