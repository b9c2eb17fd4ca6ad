"""Messages, events, streams and wait_first (both backends, unless PostgreSQL-only).

Replay is exercised for real: a workflow is parked in a gate step, the runtime is torn down
under it (as test_recovery.py does) and a fresh one recovers it from its checkpoints.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any, Optional

import psycopg
import pytest
from psycopg import sql as pgsql

from tests.conftest import system_stores
from waypoint import DBOS, Queue, SendMessage, SetEnqueueOptions, SetWorkflowID
from waypoint.core.runtime import get_runtime
from waypoint.error import (
    DBOSAwaitedWorkflowCancelledError,
    DBOSException,
    DBOSNonExistentWorkflowError,
    DBOSStreamTimeoutError,
    WaypointPayloadError,
)
from waypoint.storage.protocol import NOTIFY_CHANNEL, event_key, message_key

from ..conftest import pg_url, requires_postgres

# -- helpers ------------------------------------------------------------------------------------


class Gate:
    """The body of a gate step: its first execution blocks until released (at most 30 s);
    later executions (a recovery replaying the workflow) pass straight through."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self) -> None:
        with self._lock:
            self.calls += 1
            first = self.calls == 1
        self.entered.set()
        if first:
            self.release.wait(30)

    def reached(self, timeout: float = 10) -> None:
        assert self.entered.wait(timeout), "the workflow never reached its gate"


def wait_until(pred: Callable[[], Any], timeout: float = 10, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def rows(sql: str, **params: Any) -> list[Any]:
    """Run a query on the system database; ``{notifications}`` etc. name tables."""
    tables = ("notifications", "streams", "workflow_events", "operation_outputs")
    return [
        row
        for store in system_stores()
        for row in store._all(sql.format(**{t: store.d.t(t) for t in tables}), params, "test")
    ]


def count_messages(destination: str) -> int:
    found = rows(
        "SELECT count(*) FROM {notifications} WHERE destination_uuid = %(d)s", d=destination
    )
    return sum(int(r[0]) for r in found)


def step_names(workflow_id: str) -> list[str]:
    return [s["function_name"] for s in DBOS.list_workflow_steps(workflow_id)]


def launch(config: dict[str, Any], define: Callable[[], None]) -> None:
    """(Re)start the runtime with a fixed application version, abandoning running work."""
    DBOS.destroy(destroy_registry=True)
    DBOS(config={**config, "application_version": "v1"})  # type: ignore[arg-type]
    define()
    DBOS.launch()


def status_of(workflow_id: str) -> Optional[str]:
    status = DBOS.get_workflow_status(workflow_id)
    return status.status if status is not None else None


def steps_of(workflow_id: str) -> list[tuple[str, Any]]:
    return [(s["function_name"], s["output"]) for s in DBOS.list_workflow_steps(workflow_id)]


# -- send / recv --------------------------------------------------------------------------------


def test_topics_and_fifo_order(dbos: type[DBOS]) -> None:
    @DBOS.workflow()
    def receiver() -> list[Any]:
        named = [DBOS.recv("a", timeout_seconds=10) for _ in range(3)]
        return [*named, DBOS.recv(timeout_seconds=10)]

    DBOS.launch()
    with SetWorkflowID("rcv"):
        handle = DBOS.start_workflow(receiver)
    DBOS.send("rcv", "unnamed")  # the None topic is its own topic
    for i in range(3):
        DBOS.send("rcv", f"a{i}", "a")
    assert handle.get_result() == ["a0", "a1", "a2", "unnamed"]
    # recv uses two step IDs: the receive and its durable timeout.
    assert step_names("rcv") == ["DBOS.recv", "DBOS.sleep"] * 4
    assert rows("SELECT count(*) FROM {notifications} WHERE consumed = %(f)s", f=False)[0][0] == 0


def test_send_bulk_is_fifo_and_rejects_duplicate_keys(dbos: type[DBOS]) -> None:
    @DBOS.workflow()
    def receiver(n: int) -> list[Any]:
        return [DBOS.recv("b", timeout_seconds=10) for _ in range(n)]

    DBOS.launch()
    with SetWorkflowID("bulk"):
        handle = DBOS.start_workflow(receiver, 6)
    # One transaction: every row shares the same millisecond, order must still hold.
    DBOS.send_bulk([SendMessage("bulk", i, "b") for i in range(6)])
    assert handle.get_result() == list(range(6))

    with pytest.raises(DBOSException):
        DBOS.send_bulk(
            [
                SendMessage("bulk", "x", "b", idempotency_key="dup"),
                SendMessage("bulk", "y", "b", idempotency_key="dup"),
            ]
        )
    assert count_messages("bulk") == 6


def test_recv_outside_a_workflow_or_in_a_step_raises(dbos: type[DBOS]) -> None:
    @DBOS.step()
    def in_step() -> Any:
        return DBOS.recv(timeout_seconds=0.1)

    @DBOS.workflow()
    def wf() -> Any:
        return in_step()

    DBOS.launch()
    with pytest.raises(DBOSException):
        DBOS.recv(timeout_seconds=0.1)
    with pytest.raises(DBOSException):
        wf()

    async def main() -> None:
        with pytest.raises(DBOSException):
            await DBOS.recv_async(timeout_seconds=0.1)

    asyncio.run(main())


def test_send_to_missing_workflow_raises_and_writes_nothing(dbos: type[DBOS]) -> None:
    @DBOS.workflow()
    def sink() -> None:
        return None

    @DBOS.workflow()
    def sender() -> None:
        DBOS.send("nobody", "hello")

    DBOS.launch()
    with SetWorkflowID("sink"):
        sink()
    with pytest.raises(DBOSNonExistentWorkflowError):
        DBOS.send("nobody", "hello")
    # A batch is one transaction: a missing destination writes none of it.
    with pytest.raises(DBOSNonExistentWorkflowError):
        DBOS.send_bulk([SendMessage("sink", 1), SendMessage("nobody", 2)])
    with pytest.raises(DBOSNonExistentWorkflowError), SetWorkflowID("sender"):
        sender()
    assert rows("SELECT count(*) FROM {notifications}")[0][0] == 0
    status = DBOS.get_workflow_status("sender")
    assert status is not None and status.status == "ERROR"


def test_idempotency_key_delivers_once(dbos: type[DBOS]) -> None:
    @DBOS.workflow()
    def receiver() -> list[Any]:
        return [DBOS.recv("k", timeout_seconds=10), DBOS.recv("k", timeout_seconds=0.3)]

    @DBOS.workflow()
    def other() -> Any:
        return DBOS.recv("k", timeout_seconds=10)

    DBOS.launch()
    with SetWorkflowID("idem-a"):
        handle = DBOS.start_workflow(receiver)
    with SetWorkflowID("idem-b"):
        handle_b = DBOS.start_workflow(other)
    DBOS.send("idem-a", "once", "k", idempotency_key="key-1")
    DBOS.send("idem-a", "once", "k", idempotency_key="key-1")  # a client retry
    # The key is scoped to the destination: the same key elsewhere is a different message.
    DBOS.send("idem-b", "also", "k", idempotency_key="key-1")
    assert handle.get_result() == ["once", None]
    assert handle_b.get_result() == "also"
    assert count_messages("idem-a") == 1
    # After consumption a retry still does not deliver again.
    DBOS.send("idem-a", "once", "k", idempotency_key="key-1")
    assert (
        sum(
            r[0]
            for r in rows(
                "SELECT count(*) FROM {notifications} "
                "WHERE destination_uuid = %(d)s AND consumed = %(f)s",
                d="idem-a",
                f=False,
            )
        )
        == 0
    )


def test_unserializable_message_raises_and_writes_nothing(dbos: type[DBOS]) -> None:
    @DBOS.workflow()
    def sink() -> None:
        return None

    DBOS.launch()
    with SetWorkflowID("sink"):
        sink()
    with pytest.raises(WaypointPayloadError):
        DBOS.send("sink", threading.Lock())
    with pytest.raises(WaypointPayloadError):
        DBOS.send_bulk([SendMessage("sink", "fine"), SendMessage("sink", lambda: 1)])
    assert count_messages("sink") == 0


def test_send_from_a_workflow_is_a_step_not_repeated_on_replay(
    dbos: type[DBOS], config: dict[str, Any]
) -> None:
    gate = Gate()

    def define() -> None:
        @DBOS.workflow(name="sink")
        def sink() -> None:
            return None

        @DBOS.step(name="gate")
        def gate_step() -> None:
            gate()

        @DBOS.workflow(name="sender")
        def sender() -> str:
            DBOS.send("dest", "hi", "t")
            DBOS.send_bulk([SendMessage("dest", "b1"), SendMessage("dest", "b2")])
            gate_step()
            return "sent"

        define.sink = sink  # type: ignore[attr-defined]
        define.sender = sender  # type: ignore[attr-defined]

    launch(config, define)
    with SetWorkflowID("dest"):
        define.sink()  # type: ignore[attr-defined]
    with SetWorkflowID("snd"):
        DBOS.start_workflow(define.sender)  # type: ignore[attr-defined]
    gate.reached()
    launch(config, define)  # the recovered run replays the send from its checkpoint
    assert DBOS.retrieve_workflow("snd").get_result(polling_interval_sec=0.05) == "sent"
    assert gate.calls == 2
    assert step_names("snd") == ["DBOS.send", "DBOS.send_bulk", "gate"]
    assert count_messages("dest") == 3


def test_send_from_a_retried_step_delivers_once(dbos: type[DBOS]) -> None:
    attempts = {"n": 0}

    @DBOS.step(retries_allowed=True, interval_seconds=0.01, max_attempts=3)
    def notify_then_fail_once(dest: str) -> None:
        attempts["n"] += 1
        DBOS.send(dest, "from-step", "s")
        DBOS.send(dest, "second", "s")
        if attempts["n"] == 1:
            raise RuntimeError("transient failure after sending")

    @DBOS.workflow()
    def sender(dest: str) -> None:
        notify_then_fail_once(dest)

    @DBOS.workflow()
    def receiver() -> list[Any]:
        got = [DBOS.recv("s", timeout_seconds=10) for _ in range(2)]
        return [*got, DBOS.recv("s", timeout_seconds=0.3)]

    DBOS.launch()
    with SetWorkflowID("rx"):
        handle = DBOS.start_workflow(receiver)
    sender("rx")
    assert attempts["n"] == 2
    assert handle.get_result() == ["from-step", "second", None]
    assert count_messages("rx") == 2


def _count_reads(rt: Any) -> list[str]:
    """The workflow IDs of every receive's read of the database, in order, from now on."""
    reads: list[str] = []
    consume = rt.store.consume_message

    def counted(workflow_id: str, *args: Any) -> Any:
        reads.append(workflow_id)
        return consume(workflow_id, *args)

    rt.store.consume_message = counted
    return reads


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_send_delivers_to_a_recv_waiting_in_this_process(dbos: type[DBOS], mode: str) -> None:
    """The send records its message as the waiting receive's checkpoint, consumed, in its own
    transaction and hands it over: the receiver returns it without a read of its own."""

    @DBOS.workflow()
    def receiver() -> Any:
        return DBOS.recv("t", timeout_seconds=60)

    @DBOS.workflow()
    async def receiver_async() -> Any:
        return await DBOS.recv_async("t", timeout_seconds=60)

    DBOS.launch()
    rt = get_runtime()
    reads = _count_reads(rt)
    with SetWorkflowID("r"):
        handle = DBOS.start_workflow(receiver if mode == "sync" else receiver_async)
    wait_until(lambda: message_key("r", "t") in rt.wakeups._receives, what="the receive to wait")
    before = len(reads)
    if mode == "sync":
        DBOS.send("r", "hello", "t")
    else:
        asyncio.run(DBOS.send_async("r", "hello", "t"))
    assert handle.get_result() == "hello"
    assert len(reads) == before == 1  # the read that found nothing, none after the send
    assert steps_of("r")[0] == ("DBOS.recv", "hello")
    assert rows("SELECT consumed FROM {notifications} WHERE destination_uuid = 'r'") == [(True,)]


def test_a_send_from_a_workflow_delivers_to_a_recv_waiting_in_this_process(
    dbos: type[DBOS],
) -> None:
    """From a workflow too: the send's checkpoint, the message (consumed) and the receive's
    checkpoint in one transaction; the receiver makes no read after it; the sender, re-run
    from its checkpoints, neither sends nor delivers again."""

    @DBOS.workflow()
    def receiver() -> Any:
        return [DBOS.recv("t", timeout_seconds=60), DBOS.recv("t", timeout_seconds=0.2)]

    @DBOS.workflow()
    def sender(dest: str) -> str:
        DBOS.send(dest, "hello", "t")
        return "sent"

    DBOS.launch()
    rt = get_runtime()
    reads = _count_reads(rt)
    with SetWorkflowID("r"):
        handle = DBOS.start_workflow(receiver)
    wait_until(lambda: message_key("r", "t") in rt.wakeups._receives, what="the receive to wait")
    before = len(reads)
    with SetWorkflowID("s"):
        assert sender("r") == "sent"
    assert handle.get_result() == ["hello", None]
    assert reads[before:] == ["r", "r"]  # only the second receive's reads (it timed out)
    assert before == 1  # the first receive's read that found nothing
    assert steps_of("s")[0] == ("DBOS.send", None)
    assert steps_of("r")[0] == ("DBOS.recv", "hello")
    assert rows("SELECT consumed FROM {notifications} WHERE destination_uuid = 'r'") == [(True,)]
    # The sender re-run past its send (a fork after it replays the checkpoint): nothing again.
    forked = DBOS.fork_workflow("s", 2)
    assert forked.get_result() == "sent"
    assert rows("SELECT count(*) FROM {notifications} WHERE destination_uuid = 'r'") == [(1,)]


def test_timed_out_recv_is_durable_and_a_later_message_waits(
    dbos: type[DBOS], config: dict[str, Any]
) -> None:
    gate = Gate()

    def define() -> None:
        @DBOS.step(name="gate")
        def gate_step() -> None:
            gate()

        @DBOS.workflow(name="late")
        def late() -> list[Any]:
            first = DBOS.recv("t", timeout_seconds=0.1)
            gate_step()
            return [first, DBOS.recv("t", timeout_seconds=10)]

        define.wf = late  # type: ignore[attr-defined]

    launch(config, define)
    with SetWorkflowID("late"):
        DBOS.start_workflow(define.wf)  # type: ignore[attr-defined]
    gate.reached()
    assert steps_of("late")[0] == ("DBOS.recv", None)  # the timeout is checkpointed
    DBOS.send("late", "after-timeout", "t")
    # Recovery replays the first recv as None: it must not consume the new message.
    launch(config, define)
    result = DBOS.retrieve_workflow("late").get_result(polling_interval_sec=0.05)
    assert result == [None, "after-timeout"]
    names = step_names("late")
    assert names == ["DBOS.recv", "DBOS.sleep", "gate", "DBOS.recv", "DBOS.sleep"]
    assert steps_of("late")[3] == ("DBOS.recv", "after-timeout")


def test_waiting_recv_survives_a_restart(dbos: type[DBOS], config: dict[str, Any]) -> None:
    def define() -> None:
        @DBOS.workflow(name="waiter")
        def waiter() -> Any:
            return DBOS.recv("x", timeout_seconds=30)

        define.wf = waiter  # type: ignore[attr-defined]

    launch(config, define)
    with SetWorkflowID("waiter"):
        DBOS.start_workflow(define.wf)  # type: ignore[attr-defined]
    # The deadline is recorded (as a DBOS.sleep step) before the wait begins.
    wait_until(lambda: "DBOS.sleep" in step_names("waiter"), what="the durable deadline")
    deadline = dict(steps_of("waiter"))["DBOS.sleep"]
    assert deadline == pytest.approx(time.time() + 30, abs=5)

    launch(config, define)
    # Send once the recovered run holds the workflow (a send racing the claim hits CLAIM_RACE).
    wait_until(lambda: status_of("waiter") == "PENDING", what="the recovery to claim it")
    DBOS.send("waiter", "hello again", "x")
    started = time.monotonic()
    assert DBOS.retrieve_workflow("waiter").get_result(polling_interval_sec=0.05) == "hello again"
    assert time.monotonic() - started < 5
    assert steps_of("waiter") == [("DBOS.recv", "hello again"), ("DBOS.sleep", deadline)]
    assert count_messages("waiter") == 1


def test_recv_timeout_deadline_is_kept_across_a_restart(
    dbos: type[DBOS], config: dict[str, Any]
) -> None:
    def define() -> None:
        @DBOS.workflow(name="short")
        def short() -> Any:
            return DBOS.recv("x", timeout_seconds=1.5)

        define.wf = short  # type: ignore[attr-defined]

    launch(config, define)
    with SetWorkflowID("short"):
        DBOS.start_workflow(define.wf)  # type: ignore[attr-defined]
    wait_until(lambda: "DBOS.sleep" in step_names("short"), what="the durable deadline")
    deadline = float(dict(steps_of("short"))["DBOS.sleep"])
    wait_until(lambda: time.time() >= deadline - 0.8, what="most of the timeout to pass")
    launch(config, define)  # a fresh timeout would end at least 0.7 s after the recorded one
    assert DBOS.retrieve_workflow("short").get_result(polling_interval_sec=0.02) is None
    finished = time.time()
    assert deadline - 0.05 <= finished < deadline + 0.6
    assert dict(steps_of("short")) == {"DBOS.sleep": deadline, "DBOS.recv": None}


# -- events -------------------------------------------------------------------------------------


def test_events_latest_value_and_all_events(dbos: type[DBOS]) -> None:
    @DBOS.workflow()
    def publisher() -> None:
        DBOS.set_event("k", 1)
        DBOS.set_event("k", 2)
        DBOS.set_event("other", {"nested": [1, 2]})

    DBOS.launch()
    with SetWorkflowID("pub"):
        publisher()
    assert DBOS.get_event("pub", "k", timeout_seconds=1) == 2
    assert DBOS.get_all_events("pub") == {"k": 2, "other": {"nested": [1, 2]}}
    assert step_names("pub") == ["DBOS.setEvent"] * 3
    started = time.monotonic()
    assert DBOS.get_event("pub", "missing", timeout_seconds=0.2) is None
    assert 0.2 <= time.monotonic() - started < 2
    assert DBOS.get_event("no-such-workflow", "k", timeout_seconds=0.05) is None
    with pytest.raises(DBOSException):
        DBOS.set_event("k", 1)  # only from a workflow or its steps


def test_get_event_wakes_when_the_value_is_set(dbos: type[DBOS], db_url: str, backend: str) -> None:
    from waypoint import DBOSClient

    gate = Gate()

    @DBOS.step()
    def gate_step() -> None:
        gate()

    @DBOS.workflow()
    def publisher() -> None:
        gate_step()
        DBOS.set_event("ready", "yes")

    DBOS.launch()
    # On PostgreSQL a URL spelled differently gets its own wake-up registry, as another
    # process would, so only NOTIFY can wake it (a SQLite store is named by its file path).
    other = DBOSClient(
        system_database_url=db_url + ("?connect_timeout=10" if backend == "postgres" else ""),
        use_listen_notify=backend == "postgres",
    )
    got: dict[str, Any] = {}
    try:
        with SetWorkflowID("pub"):
            handle = DBOS.start_workflow(publisher)
        gate.reached()

        def wait(name: str, get: Callable[..., Any]) -> None:
            got[name] = get("pub", "ready", timeout_seconds=10)
            got[name + "_at"] = time.monotonic()

        threads = [
            threading.Thread(target=wait, args=("local", DBOS.get_event)),
            threading.Thread(target=wait, args=("remote", other.get_event)),
        ]
        for t in threads:
            t.start()
        time.sleep(0.2)  # let both waiters subscribe and find nothing
        released = time.monotonic()
        gate.release.set()
        for t in threads:
            t.join(15)
        handle.get_result()
    finally:
        gate.release.set()
        other.destroy()
    assert got["local"] == got["remote"] == "yes"
    assert got["local_at"] - released < 0.5
    assert got["remote_at"] - released < 0.5


def test_set_event_from_a_step_is_visible_but_not_checkpointed(dbos: type[DBOS]) -> None:
    attempts = {"n": 0}

    @DBOS.step(retries_allowed=True, interval_seconds=0.01, max_attempts=3)
    def progress() -> None:
        attempts["n"] += 1
        DBOS.set_event("progress", attempts["n"])
        if attempts["n"] == 1:
            raise RuntimeError("retry me")

    @DBOS.workflow()
    def wf() -> None:
        progress()

    DBOS.launch()
    with SetWorkflowID("ev-step"):
        wf()
    assert attempts["n"] == 2
    assert DBOS.get_event("ev-step", "progress", timeout_seconds=1) == 2
    assert len(step_names("ev-step")) == 1
    assert "DBOS.setEvent" not in step_names("ev-step")


def test_get_event_in_a_workflow_replays_the_recorded_value(
    dbos: type[DBOS], config: dict[str, Any]
) -> None:
    setter_gate, reader_gate = Gate(), Gate()

    def define() -> None:
        @DBOS.step(name="setter_gate")
        def s_gate() -> None:
            setter_gate()

        @DBOS.step(name="reader_gate")
        def r_gate() -> None:
            reader_gate()

        @DBOS.workflow(name="setter")
        def setter() -> None:
            DBOS.set_event("k", "first")
            s_gate()
            DBOS.set_event("k", "second")

        @DBOS.workflow(name="reader")
        def reader() -> Any:
            seen = DBOS.get_event("ev-src", "k", timeout_seconds=10)
            r_gate()
            return seen

        define.setter = setter  # type: ignore[attr-defined]
        define.reader = reader  # type: ignore[attr-defined]

    launch(config, define)
    with SetWorkflowID("ev-src"):
        src = DBOS.start_workflow(define.setter)  # type: ignore[attr-defined]
    setter_gate.reached()
    with SetWorkflowID("ev-reader"):
        DBOS.start_workflow(define.reader)  # type: ignore[attr-defined]
    reader_gate.reached()
    setter_gate.release.set()
    src.get_result()
    assert DBOS.get_event("ev-src", "k", timeout_seconds=1) == "second"
    launch(config, define)
    assert DBOS.retrieve_workflow("ev-reader").get_result(polling_interval_sec=0.05) == "first"
    assert step_names("ev-reader") == ["DBOS.getEvent", "DBOS.sleep", "reader_gate"]


# -- streams ------------------------------------------------------------------------------------


def test_stream_read_in_order_until_closed(dbos: type[DBOS]) -> None:
    @DBOS.workflow()
    def writer() -> None:
        for v in ["a", {"b": 1}, None, 3]:
            DBOS.write_stream("out", v)
        DBOS.close_stream("out")
        DBOS.write_stream("other", "x")

    DBOS.launch()
    with SetWorkflowID("w"):
        writer()
    assert list(DBOS.read_stream("w", "out")) == ["a", {"b": 1}, None, 3]
    assert list(DBOS.read_stream("w", "out", offset=2)) == [None, 3]
    assert DBOS.read_stream_offset("w", "out", 1) == {"b": 1}
    assert DBOS.read_stream_offset("w", "out", 2) is None  # a None value, not the end
    with pytest.raises(DBOSStreamTimeoutError):
        DBOS.read_stream_offset("w", "out", 4)  # the close marker: the stream has ended
    assert list(DBOS.read_stream("w", "other")) == ["x"]  # finished writer, never closed
    assert list(DBOS.read_stream("w", "missing")) == []
    assert list(DBOS.read_stream("no-such-workflow", "out")) == []


def test_stream_values_arrive_while_the_writer_runs(dbos: type[DBOS]) -> None:
    acked = [threading.Event() for _ in range(3)]

    @DBOS.step()
    def wait_for_reader(i: int) -> None:
        assert acked[i].wait(10), f"the reader never saw value {i}"

    @DBOS.workflow()
    def writer() -> None:
        for i in range(3):
            DBOS.write_stream("live", i)
            wait_for_reader(i)
        # finishes without closing: readers end after the last value

    DBOS.launch()
    with SetWorkflowID("live"):
        handle = DBOS.start_workflow(writer)
    got = []
    try:
        for value in DBOS.read_stream("live", "live"):
            got.append(value)
            acked[value].set()
    finally:
        for ev in acked:
            ev.set()
    assert got == [0, 1, 2]
    handle.get_result()


def test_stream_read_timeout(dbos: type[DBOS]) -> None:
    gate = Gate()

    @DBOS.step()
    def gate_step() -> None:
        gate()

    @DBOS.workflow()
    def writer() -> None:
        gate_step()
        DBOS.write_stream("slow", "late")

    DBOS.launch()
    with SetWorkflowID("slow"):
        handle = DBOS.start_workflow(writer)
    try:
        gate.reached()
        started = time.monotonic()
        with pytest.raises(DBOSStreamTimeoutError):
            DBOS.read_stream_offset("slow", "slow", 0, timeout_seconds=0.3)
        assert 0.3 <= time.monotonic() - started < 2
        with pytest.raises(DBOSStreamTimeoutError):
            next(DBOS.read_stream("slow", "slow", timeout_seconds=0.2))
    finally:
        gate.release.set()
    handle.get_result()
    assert list(DBOS.read_stream("slow", "slow", timeout_seconds=5)) == ["late"]


def test_stream_writes_from_a_retried_step_appear_once_per_attempt(dbos: type[DBOS]) -> None:
    """As in DBOS, each attempt of a retried step writes its own values (the stream shows
    what each attempt did); a re-run of one attempt writes nothing twice."""
    attempts = {"n": 0}

    @DBOS.step(retries_allowed=True, interval_seconds=0.01, max_attempts=3)
    def produce() -> None:
        attempts["n"] += 1
        DBOS.write_stream("s", "x")
        DBOS.write_stream("s", "y")
        if attempts["n"] == 1:
            raise RuntimeError("fail after writing")

    @DBOS.workflow()
    def wf() -> None:
        DBOS.write_stream("s", "start")
        produce()
        DBOS.write_stream("s", "end")
        DBOS.close_stream("s")

    DBOS.launch()
    with SetWorkflowID("retry-stream"):
        wf()
    assert attempts["n"] == 2
    assert list(DBOS.read_stream("retry-stream", "s")) == ["start", "x", "y", "x", "y", "end"]
    offsets = rows('SELECT "offset" FROM {streams} ORDER BY "offset"')
    assert [r[0] for r in offsets] == [0, 1, 2, 3, 4, 5, 6]  # six values and the close marker


def test_stream_read_in_a_workflow_is_checkpointed(
    dbos: type[DBOS], config: dict[str, Any]
) -> None:
    gate = Gate()

    def define() -> None:
        @DBOS.step(name="gate")
        def gate_step() -> None:
            gate()

        @DBOS.workflow(name="writer")
        def writer() -> None:
            for i in range(3):
                DBOS.write_stream("nums", i)
            DBOS.close_stream("nums")

        @DBOS.workflow(name="reader")
        def reader() -> list[Any]:
            values = list(DBOS.read_stream("src", "nums"))
            gate_step()
            return values

        define.writer = writer  # type: ignore[attr-defined]
        define.reader = reader  # type: ignore[attr-defined]

    launch(config, define)
    with SetWorkflowID("src"):
        define.writer()  # type: ignore[attr-defined]
    with SetWorkflowID("rdr"):
        DBOS.start_workflow(define.reader)  # type: ignore[attr-defined]
    gate.reached()
    # Rewrite history under the reader: replay must still see what the first run saw.
    rows("DELETE FROM {streams} WHERE workflow_uuid = %(w)s RETURNING 1", w="src")
    assert list(DBOS.read_stream("src", "nums")) == []
    launch(config, define)
    assert DBOS.retrieve_workflow("rdr").get_result(polling_interval_sec=0.05) == [0, 1, 2]
    names = step_names("rdr")
    assert names[-1] == "gate"
    assert len(names) == 5 and all(n.startswith("DBOS.readStream") for n in names[:4])


def test_stream_read_timeout_in_a_workflow_is_checkpointed(
    dbos: type[DBOS], config: dict[str, Any]
) -> None:
    writer_gate, reader_gate = Gate(), Gate()

    def define() -> None:
        @DBOS.step(name="writer_gate")
        def w_gate() -> None:
            writer_gate()

        @DBOS.step(name="reader_gate")
        def r_gate() -> None:
            reader_gate()

        @DBOS.workflow(name="writer")
        def writer() -> None:
            w_gate()
            DBOS.write_stream("k", "late")

        @DBOS.workflow(name="reader")
        def reader() -> Any:
            try:
                seen = DBOS.read_stream_offset("tw", "k", 0, timeout_seconds=0.1)
            except DBOSStreamTimeoutError:
                seen = "timed out"
            r_gate()
            return seen

        define.writer = writer  # type: ignore[attr-defined]
        define.reader = reader  # type: ignore[attr-defined]

    launch(config, define)
    with SetWorkflowID("tw"):
        src = DBOS.start_workflow(define.writer)  # type: ignore[attr-defined]
    writer_gate.reached()
    with SetWorkflowID("tr"):
        DBOS.start_workflow(define.reader)  # type: ignore[attr-defined]
    reader_gate.reached()
    writer_gate.release.set()
    src.get_result()
    launch(config, define)
    assert DBOS.retrieve_workflow("tr").get_result(polling_interval_sec=0.05) == "timed out"


# -- wait_first ---------------------------------------------------------------------------------


def test_wait_first(dbos: type[DBOS]) -> None:
    gates = {name: Gate() for name in ("a", "b", "c", "d")}

    @DBOS.step()
    def gate_step(name: str) -> None:
        gates[name]()

    @DBOS.workflow()
    def blocked(name: str) -> str:
        gate_step(name)
        if name == "d":
            raise ValueError("d failed")
        return name

    DBOS.launch()
    handles = {}
    for name in gates:
        with SetWorkflowID(f"wf-{name}"):
            handles[name] = DBOS.start_workflow(blocked, name)
    try:
        for g in gates.values():
            g.reached()
        with pytest.raises(ValueError):
            DBOS.wait_first([])
        with pytest.raises(DBOSException):
            DBOS.wait_first([handles["a"], handles["a"]])

        gates["b"].release.set()
        first = DBOS.wait_first(list(handles.values()), polling_interval_sec=0.05)
        assert first is handles["b"] and first.get_result() == "b"

        # A cancelled workflow has finished too.
        DBOS.cancel_workflow("wf-c")
        first = DBOS.wait_first([handles["a"], handles["c"]], polling_interval_sec=0.05)
        assert first.workflow_id == "wf-c"
        assert first.get_status().status == "CANCELLED"
        # (The local run notices only at its next step; until then get_result waits for it.)
        gates["c"].release.set()
        with pytest.raises(DBOSAwaitedWorkflowCancelledError):
            first.get_result()

        # So has a failed one.
        gates["d"].release.set()
        first = DBOS.wait_first([handles["a"], handles["d"]], polling_interval_sec=0.05)
        assert first.workflow_id == "wf-d"
        with pytest.raises(ValueError):
            first.get_result()
    finally:
        for g in gates.values():
            g.release.set()
    assert handles["a"].get_result() == "a"


def test_wait_first_in_a_workflow_is_checkpointed(dbos: type[DBOS], config: dict[str, Any]) -> None:
    gates = {name: Gate() for name in ("a", "b", "parent")}

    def define() -> None:
        @DBOS.step(name="gate")
        def gate_step(name: str) -> None:
            gates[name]()

        @DBOS.workflow(name="child")
        def child(name: str) -> str:
            gate_step(name)
            return name

        @DBOS.workflow(name="parent")
        def parent() -> str:
            handles = [DBOS.retrieve_workflow(w) for w in ("c-a", "c-b")]
            first = DBOS.wait_first(handles, polling_interval_sec=0.05)
            gate_step("parent")
            return first.workflow_id

        define.child = child  # type: ignore[attr-defined]
        define.parent = parent  # type: ignore[attr-defined]

    launch(config, define)
    children = {}
    for name in ("a", "b"):
        with SetWorkflowID(f"c-{name}"):
            children[name] = DBOS.start_workflow(define.child, name)  # type: ignore[attr-defined]
    with SetWorkflowID("parent"):
        DBOS.start_workflow(define.parent)  # type: ignore[attr-defined]
    gates["b"].reached()
    gates["b"].release.set()
    gates["parent"].reached()
    gates["a"].release.set()  # now both are done; a replay without a checkpoint picks c-a
    children["a"].get_result()
    launch(config, define)
    assert DBOS.retrieve_workflow("parent").get_result(polling_interval_sec=0.05) == "c-b"
    assert "DBOS.waitFirst" in step_names("parent")


# -- async twins --------------------------------------------------------------------------------


def test_async_messaging(dbos: type[DBOS]) -> None:
    @DBOS.workflow()
    async def conversation() -> str:
        await DBOS.set_event_async("state", "waiting")
        msg = await DBOS.recv_async("in", timeout_seconds=10)
        await DBOS.write_stream_async("echo", msg)
        await DBOS.write_stream_async("echo", msg + "!")
        await DBOS.close_stream_async("echo")
        await DBOS.set_event_async("state", "done")
        return str(msg)

    @DBOS.workflow()
    async def timeout_only() -> Optional[str]:
        return await DBOS.recv_async("nothing", timeout_seconds=0.1)  # type: ignore[no-any-return]

    DBOS.launch()

    async def main() -> None:
        with SetWorkflowID("conv"):
            handle = await DBOS.start_workflow_async(conversation)
        assert await DBOS.get_event_async("conv", "state", timeout_seconds=10) == "waiting"
        await DBOS.send_async("conv", "hi", "in")
        echoed = [v async for v in DBOS.read_stream_async("conv", "echo")]
        assert echoed == ["hi", "hi!"]
        assert await handle.get_result() == "hi"
        assert await DBOS.wait_first_async([handle]) is handle
        assert await DBOS.get_event_async("conv", "state", timeout_seconds=1) == "done"
        assert await DBOS.get_all_events_async("conv") == {"state": "done"}
        assert await DBOS.read_stream_offset_async("conv", "echo", 1) == "hi!"
        await DBOS.send_bulk_async([SendMessage("conv", "late", "in")])
        assert await timeout_only() is None

    asyncio.run(main())
    assert count_messages("conv") == 2
    assert DBOS.get_event("conv", "state", timeout_seconds=0) == "done"


@requires_postgres
@pytest.mark.parametrize("backend", ["postgres"])
def test_send_racing_the_dequeue_does_not_delay_the_workflow(dbos: type[DBOS], db_url: str) -> None:
    queue = Queue("q")

    @DBOS.workflow()
    def waiter() -> Any:
        return DBOS.recv("t", timeout_seconds=10)

    DBOS.launch()
    with SetWorkflowID("raced"), SetEnqueueOptions(delay_seconds=0.3):
        queue.enqueue(waiter)
    # A send in flight: until it commits, its foreign-key check holds FOR KEY SHARE on the row.
    with psycopg.connect(db_url) as conn:
        conn.execute(
            "INSERT INTO dbos.notifications (destination_uuid, topic, message, serialization) "
            "VALUES ('raced', 't', '\"m\"', 'portable_json')"
        )
        wait_until(lambda: status_of("raced") != "DELAYED", what="the delay to pass")
        time.sleep(0.2)  # the dispatcher tries to claim it meanwhile
        conn.commit()
    wait_until(lambda: status_of("raced") == "SUCCESS", 2, "the workflow to run")


# -- lost notifications (PostgreSQL) -----------------------------------------------------------


LISTENERS = (
    "SELECT pid, backend_start FROM pg_stat_activity WHERE datname = current_database() "
    "AND application_name LIKE 'waypoint:%%' AND query LIKE '%%pg_listening_channels%%' "
    "ORDER BY backend_start DESC"
)


def kill_listener_then(db_url: str, write: Callable[[psycopg.Connection[Any]], None]) -> None:
    """Terminate the runtime's LISTEN connection and write from outside the library (as another
    process would) before it can reconnect, so the write's notification is certainly lost.

    New connections to the test database are refused meanwhile (open ones keep working), so
    the listener cannot be back before the write commits."""
    with (
        psycopg.connect(db_url, autocommit=True) as conn,
        psycopg.connect(pg_url("postgres"), autocommit=True) as admin,
    ):
        db = conn.info.dbname
        assert db.startswith("wp_test_"), db  # never touch a database we did not create
        allow = "ALTER DATABASE {} ALLOW_CONNECTIONS {}"
        # The newest one: a previous test's runtime may still be closing its own.
        pid, started = conn.execute(LISTENERS).fetchall()[0]
        admin.execute(pgsql.SQL(allow.format("{}", "false")).format(pgsql.Identifier(db)))
        try:
            killed = conn.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,)).fetchone()
            assert killed == (True,)
            write(conn)
            assert not [r for r in conn.execute(LISTENERS).fetchall() if r[1] > started]
        finally:
            admin.execute(pgsql.SQL(allow.format("{}", "true")).format(pgsql.Identifier(db)))


@requires_postgres
@pytest.mark.parametrize("backend", ["postgres"])
def test_lost_message_notification_still_wakes_recv(dbos: type[DBOS], db_url: str) -> None:
    @DBOS.workflow()
    def waiter() -> Any:
        return DBOS.recv("t", timeout_seconds=25)

    DBOS.launch()
    with SetWorkflowID("lost-msg"):
        handle = DBOS.start_workflow(waiter)
    wait_until(lambda: "DBOS.sleep" in step_names("lost-msg"), what="recv to start waiting")
    time.sleep(0.05)  # past the first read: the waiter is now asleep on its signal

    def insert(conn: psycopg.Connection[Any]) -> None:
        conn.execute(
            "INSERT INTO dbos.notifications (destination_uuid, topic, message, serialization) "
            "VALUES ('lost-msg', 't', '\"ping\"', 'portable_json')"
        )

    started = time.monotonic()
    kill_listener_then(db_url, insert)
    assert handle.get_result() == "ping"
    assert time.monotonic() - started < 5


@requires_postgres
@pytest.mark.parametrize("backend", ["postgres"])
def test_lost_event_notification_still_wakes_get_event(dbos: type[DBOS], db_url: str) -> None:
    gate = Gate()

    @DBOS.step()
    def gate_step() -> None:
        gate()

    @DBOS.workflow()
    def holder() -> None:
        gate_step()

    DBOS.launch()
    with SetWorkflowID("lost-ev"):
        handle = DBOS.start_workflow(holder)
    gate.reached()
    got: dict[str, Any] = {}

    def wait() -> None:
        got["value"] = DBOS.get_event("lost-ev", "k", timeout_seconds=25)
        got["at"] = time.monotonic()

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.1)  # the waiter has read "no value" and sleeps on its signal

    def set_event(conn: psycopg.Connection[Any]) -> None:
        conn.execute(
            "INSERT INTO dbos.workflow_events (workflow_uuid, key, value, serialization) "
            "VALUES ('lost-ev', 'k', '\"v\"', 'portable_json')"
        )
        conn.execute("SELECT pg_notify(%s, %s)", (NOTIFY_CHANNEL, event_key("lost-ev", "k")))

    started = time.monotonic()
    try:
        kill_listener_then(db_url, set_event)
        waiter.join(10)
    finally:
        gate.release.set()
    assert got["value"] == "v"
    assert got["at"] - started < 5
    handle.get_result()


def test_a_waiting_stream_reader_notices_its_cancellation(dbos: type[DBOS]) -> None:
    """A workflow reading a live but silent stream is cancelled at once, not when the writer
    finishes."""
    release, entered = threading.Event(), threading.Event()

    @DBOS.workflow()
    def writer() -> None:
        DBOS.write_stream("s", "v0")
        release.wait(30)

    @DBOS.workflow()
    def reader(target: str) -> list[Any]:
        seen = []
        for value in DBOS.read_stream(target, "s"):
            seen.append(value)
            entered.set()
        return seen

    DBOS.launch()
    w = DBOS.start_workflow(writer)
    try:
        r = DBOS.start_workflow(reader, w.workflow_id)
        assert entered.wait(10)
        DBOS.cancel_workflow(r.workflow_id)
        with pytest.raises(DBOSAwaitedWorkflowCancelledError):
            r.get_result()
        assert not release.is_set()  # the writer is still running: the reader did not wait
    finally:
        release.set()
        w.get_result()


def test_many_concurrent_stream_writes_of_one_workflow(dbos: type[DBOS]) -> None:
    """Concurrent writes of one workflow queue on its row; none deadlocks another (each
    takes the row's exclusive lock before its checkpoint's shared one)."""

    @DBOS.workflow()
    async def many() -> None:
        async def one(i: int) -> None:
            await DBOS.write_stream_async("s", i)

        await asyncio.gather(*(one(i) for i in range(60)))

    DBOS.launch()
    handle = DBOS.start_workflow(many)
    handle.get_result()
    assert sorted(DBOS.read_stream(handle.workflow_id, "s")) == list(range(60))
    assert len(DBOS.list_workflow_steps(handle.workflow_id)) == 60
