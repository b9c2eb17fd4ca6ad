"""The hand-over of a suspended wait to its resumption (core/suspend.py): whatever fires
first resumes the run, exactly once, and never before the body has unwound (``arm``)."""

from __future__ import annotations

import threading
import time

from waypoint.core.signals import Signal
from waypoint.core.suspend import ParkedWait
from waypoint.core.timers import TimerService
from waypoint.core.wakeups import Wakeups


def test_a_key_fired_before_arming_resumes_at_arm_once() -> None:
    wakeups, timers, resumed = Wakeups(), TimerService(), []
    try:
        parked = ParkedWait(wakeups, ["m:w::t"], time.time() + 0.05)
        wakeups.fire("m:w::t")  # the message came while the body was still unwinding
        assert resumed == []
        parked.arm(timers, lambda: resumed.append("run"))
        assert resumed == ["run"]
        wakeups.fire("m:w::t")
        time.sleep(0.2)  # the timer's moment passes too: nothing more
        assert resumed == ["run"]
    finally:
        timers.stop()


def test_the_first_of_key_signal_and_timer_wins() -> None:
    wakeups, timers, resumed = Wakeups(), TimerService(), []
    done = Signal()
    try:
        parked = ParkedWait(wakeups, ["d:child"], time.time() + 3600, signals=[done])
        parked.arm(timers, lambda: resumed.append("run"))
        assert resumed == []
        threads = [
            threading.Thread(target=done.set),
            threading.Thread(target=wakeups.fire, args=("d:child",)),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert resumed == ["run"]
    finally:
        timers.stop()


def test_the_timer_resumes_a_wait_nothing_else_ends() -> None:
    wakeups, timers = Wakeups(), TimerService()
    resumed = threading.Event()
    try:
        parked = ParkedWait(wakeups, ["c:w"], time.time() + 0.05)
        parked.arm(timers, resumed.set)
        assert resumed.wait(30)
        wakeups.fire("c:w")  # unsubscribed once resumed: no one is left on the key
        assert wakeups._subs == {}
    finally:
        timers.stop()


def test_a_dropped_wait_never_resumes() -> None:
    wakeups = Wakeups()
    done = Signal()
    parked = ParkedWait(wakeups, ["e:w::k"], None, signals=[done])
    parked.drop()
    wakeups.fire("e:w::k")
    done.set()
    assert wakeups._subs == {}
