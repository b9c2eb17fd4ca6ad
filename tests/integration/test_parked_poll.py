"""Without notifications, parked waits are polled together (core/parking.py), both backends.

SQLite has no notifications (and PostgreSQL here has LISTEN turned off), so a write made by
another process reaches a waiting workflow only when something re-reads the database. A
parked run re-read on its own is re-run from its checkpoints: with thousands parked, that
was thousands of re-runs every polling interval. Instead the runtime reads the wake-up keys
of every parked run in one statement per interval and wakes only the runs whose keys are
ready. The writes here go to the store directly, as another process's would: nothing in
this process is told of them.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from waypoint import DBOS, SetWorkflowID
from waypoint.core.runtime import Runtime, get_runtime
from waypoint.storage.protocol import EventWrite, NewMessage

POOL = 2
MANY = 12
INTERVAL = 0.05


@pytest.fixture
def config(db_url: str) -> dict[str, Any]:
    return {
        "name": "waypoint-test",
        "system_database_url": db_url,
        "max_executor_threads": POOL,
        "use_listen_notify": False,
        "notification_listener_polling_interval_sec": INTERVAL,
    }


def wait_for(what: str, predicate: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


class Counted:
    """Counts the calls of some store methods (the arguments of ``ready_keys`` too)."""

    def __init__(self, rt: Runtime, names: list[str]) -> None:
        self.lock = threading.Lock()
        self.calls: dict[str, int] = dict.fromkeys(names, 0)
        self.polled: list[list[str]] = []
        for name in names:
            setattr(rt.store, name, self._wrap(name, getattr(rt.store, name)))

    def _wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            with self.lock:
                self.calls[name] += 1
                if name == "ready_keys":
                    self.polled.append(list(args[0]))
            return fn(*args, **kwargs)

        return call

    def __getitem__(self, name: str) -> int:
        with self.lock:
            return self.calls[name]


@pytest.fixture
def parked(dbos: type[DBOS]) -> Iterator[tuple[Runtime, Counted]]:
    @DBOS.workflow()
    def receiver() -> Any:
        return DBOS.recv("t", timeout_seconds=3600)

    @DBOS.workflow()
    def listener() -> Any:
        return DBOS.get_event("setter", "k", timeout_seconds=3600)

    @DBOS.workflow()
    def setter() -> None:
        DBOS.sleep(3600)

    DBOS.launch()
    rt = get_runtime()
    rt.config.wait_suspend_after_sec = 0
    with SetWorkflowID("setter"):
        DBOS.start_workflow(setter)
    for i in range(MANY):
        with SetWorkflowID(f"r-{i}"):
            DBOS.start_workflow(receiver)
        with SetWorkflowID(f"l-{i}"):
            DBOS.start_workflow(listener)
    wait_for("every workflow to be parked", lambda: len(rt.lot) == 2 * MANY + 1)
    wait_for("the pool's threads to be free", lambda: rt.pool.free_slots() == POOL)
    yield rt, Counted(rt, ["ready_keys", "resume_state", "consume_message", "get_event"])


def test_parked_waits_are_polled_in_one_read_per_interval(
    parked: tuple[Runtime, Counted],
) -> None:
    rt, counted = parked
    assert not rt.notifications
    wait_for("ten polls", lambda: counted["ready_keys"] >= 10)
    # No parked run was re-run to look for itself: each interval is one read of all keys.
    assert counted["resume_state"] == 0
    assert counted["consume_message"] == 0
    assert counted["get_event"] == 0
    with counted.lock:
        last = counted.polled[-1]
    assert {f"m:r-{i}::t" for i in range(MANY)} <= set(last)
    assert {"e:setter::k", "c:setter"} <= set(last)

    # Another process's writes: a message to half the receivers, the event, a cancellation.
    ser = rt.codec.default
    rt.store.send_messages(
        [
            NewMessage(uuid.uuid4().hex, f"r-{i}", "t", ser.serialize(f"to-{i}"), ser.name())
            for i in range(MANY // 2)
        ],
        None,
    )
    rt.store.set_event(EventWrite("setter", "k", ser.serialize("set"), ser.name(), 1), None)
    rt.store.cancel_workflows(["r-11"], rt.now_ms())
    for i in range(MANY // 2):
        assert DBOS.retrieve_workflow(f"r-{i}").get_result() == f"to-{i}"
        assert DBOS.retrieve_workflow(f"l-{i}").get_result() == "set"
    wait_for("the cancelled receiver to leave the lot", lambda: "r-11" not in rt.lot)
    assert DBOS.get_workflow_status("r-11").status == "CANCELLED"
    # The others still wait, parked, and were not re-run meanwhile.
    for i in range(MANY // 2, MANY - 1):
        assert f"r-{i}" in rt.lot
    assert counted["consume_message"] == MANY // 2
