"""A workload for the metrics tests: successes, a failed workflow, a retried step, a step that
fails for good, and a queue backlog held in place by a blocked workflow; plus a reader of the
Prometheus text format."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Optional

from prometheus_client.parser import text_string_to_metric_families

from tests.admin_http import call
from waypoint import DBOS, Queue, SetWorkflowID
from waypoint._api.metrics import runtime_metrics
from waypoint.core.runtime import get_runtime

BACKLOG = 4  # workflows enqueued on a queue of concurrency 1: one runs, the rest wait


@dataclass
class Workload:
    release: threading.Event = field(default_factory=threading.Event)
    blocker_started: threading.Event = field(default_factory=threading.Event)
    handles: list[object] = field(default_factory=list)


def define_and_run(prefix: str = "m") -> Workload:
    """Define the workflows, launch, run the finished part and leave the backlog waiting."""
    w = Workload()
    queue = Queue(f"{prefix}-backlog", concurrency=1)
    attempts = {"flaky": 0}

    @DBOS.step(retries_allowed=True, interval_seconds=0.01, max_attempts=3)
    def flaky() -> int:
        attempts["flaky"] += 1
        if attempts["flaky"] < 3:
            raise RuntimeError("flaky attempt fails")
        return attempts["flaky"]

    @DBOS.step(retries_allowed=True, interval_seconds=0.01, max_attempts=2)
    def doomed() -> None:
        raise RuntimeError("always fails")

    @DBOS.step()
    def plain(x: int) -> int:
        return x * 2

    @DBOS.workflow()
    def good(x: int) -> int:
        return plain(x) + plain(x)

    @DBOS.workflow()
    def retried() -> int:
        return flaky()

    @DBOS.workflow()
    def failing() -> None:
        doomed()

    @DBOS.workflow()
    def blocker() -> str:
        w.blocker_started.set()
        w.release.wait(30)
        return "unblocked"

    DBOS.launch()
    metrics = runtime_metrics(get_runtime())
    assert metrics is not None
    metrics.gauges.every = 0  # count at every scrape: the test reads right after its workload
    for i in range(3):
        assert good(i) == 4 * i
    assert retried() == 3
    for i in range(2):
        with SetWorkflowID(f"{prefix}-failing-{i}"):
            try:
                failing()
            except Exception:
                pass
            else:
                raise AssertionError("failing() did not fail")
    w.handles = [queue.enqueue(blocker) for _ in range(BACKLOG)]
    assert w.blocker_started.wait(30)
    return w


def finish(w: Workload) -> None:
    w.release.set()
    for h in w.handles:
        assert h.get_result() == "unblocked"  # type: ignore[attr-defined]


@dataclass
class Samples:
    """The samples of one exposition, by name and labels."""

    text: str
    values: dict[tuple[str, frozenset[tuple[str, str]]], float]

    def get(self, name: str, **labels: str) -> Optional[float]:
        return self.values.get((name, frozenset(labels.items())))

    def sum(self, name: str, **labels: str) -> float:
        want = set(labels.items())
        return sum(v for (n, ls), v in self.values.items() if n == name and want <= ls)

    def label_values(self) -> set[str]:
        return {v for (_, ls) in self.values for (_, v) in ls}


def parse(text: str) -> Samples:
    values = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            values[(s.name, frozenset(s.labels.items()))] = s.value
    return Samples(text, values)


def scrape(port: Optional[int] = None) -> Samples:
    reply = call("GET", "/metrics", port=port)
    assert reply.status == 200, reply.body
    assert reply.headers["content-type"].startswith("text/plain")
    return parse(reply.body.decode())


def wait_for(predicate: object, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
