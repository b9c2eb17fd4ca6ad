"""The database-wide gauges from one reading (partition cap, drained queues, alive/silent),
the choice of the exporting process, and the outage accounting of the retry policy."""

from __future__ import annotations

import threading

from waypoint._api.metrics import MAX_PARTITIONS, gauge_families, is_exporter
from waypoint.storage.records import DatabaseGauges, ExecutorRow, QueueGauge
from waypoint.storage.retry import Fault, RetryPolicy

NOW = 1_000_000


def _executor(eid: str, inc: str, started: int, last_seen: int) -> ExecutorRow:
    return ExecutorRow(eid, inc, "app", "v", "h", 1, 1000, started, last_seen, NOW)


def _samples(
    g: DatabaseGauges, known: tuple[str, ...] = ()
) -> dict[tuple[str, tuple[str, ...]], float]:
    return {
        (s.name, tuple(s.labels.values())): s.value
        for family in gauge_families(g, known)
        for s in family.samples
    }


def test_partitions_beyond_the_cap_are_summed_and_drained_queues_read_zero() -> None:
    parts = [
        QueueGauge("q", f"p{i:03}", "ENQUEUED", 1000 - i, NOW - 1000 * i)
        for i in range(MAX_PARTITIONS + 5)
    ]
    g = DatabaseGauges(NOW, parts, {"e1": 3}, [])
    got = _samples(g, known=("drained",))
    named = {k for k in got if k[0] == "waypoint_queue_workflows" and k[1][0] == "q"}
    assert len(named) == MAX_PARTITIONS + 1 + 2  # the kept, _other, and the "" zero rows
    other = sum(1000 - i for i in range(MAX_PARTITIONS, MAX_PARTITIONS + 5))
    assert got[("waypoint_queue_workflows", ("q", "_other", "ENQUEUED"))] == other
    oldest = got[("waypoint_queue_oldest_enqueued_age_seconds", ("q", "_other"))]
    assert oldest == (MAX_PARTITIONS + 4)  # seconds: the oldest of the summed partitions
    assert got[("waypoint_queue_workflows", ("drained", "", "ENQUEUED"))] == 0
    assert got[("waypoint_pending_workflows", ("e1",))] == 3


def test_executors_alive_silent_and_the_exporter() -> None:
    rows = [
        _executor("old-dead", "i0", 1, NOW - 10_000),  # silent: the oldest, but not alive
        _executor("a", "i1", 5, NOW - 500),
        _executor("a", "i0", 2, NOW - 60_000),  # an earlier incarnation of a, gone
        _executor("b", "i2", 3, NOW),
    ]
    got = _samples(DatabaseGauges(NOW, [], {}, rows))
    assert got[("waypoint_executors", ("alive",))] == 2
    assert got[("waypoint_executors", ("silent",))] == 1
    assert got[("waypoint_executor_silent_seconds", ("a",))] == 0.5
    assert is_exporter(rows, "b", "i2")
    assert not is_exporter(rows, "a", "i1")
    assert not is_exporter(rows, "old-dead", "i0")
    assert not is_exporter([], "b", "i2")


def test_an_executor_that_shut_down_gracefully_hands_the_export_on_at_once() -> None:
    gone = _executor("first", "i0", 1, NOW)
    gone.state = "gone"  # its row stays until a peer takes it over; it exports nothing
    rows = [gone, _executor("second", "i1", 2, NOW)]
    assert is_exporter(rows, "second", "i1")
    got = _samples(DatabaseGauges(NOW, [], {}, rows))
    assert got[("waypoint_executors", ("alive",))] == 1


def test_retry_policy_reports_retries_and_one_outage() -> None:
    seen: dict[str, list[object]] = {"retried": [], "recovered": []}

    class Listener:
        def retried(self, what: str) -> None:
            seen["retried"].append(what)

        def recovered(self, outage_seconds: float) -> None:
            seen["recovered"].append(outage_seconds)

    policy = RetryPolicy(lambda exc: Fault.TRANSIENT, initial_delay=0.001, closed=threading.Event())
    policy.listeners.append(Listener())
    failures = iter([True, True, False])

    def op() -> str:
        if next(failures):
            raise ConnectionError("down")
        return "ok"

    assert policy.run(op, "read") == "ok"
    assert seen["retried"] == ["read", "read"]
    assert len(seen["recovered"]) == 1 and float(seen["recovered"][0]) > 0  # type: ignore[arg-type]
    assert policy.run(lambda: "again", "read") == "again"
    assert len(seen["recovered"]) == 1  # no outage in between: nothing more to report
