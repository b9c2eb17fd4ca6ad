"""Prometheus metrics: what this process ran, and what the whole system database holds.

Process-local numbers come from a ``MetricsObserver`` on the engine's observation seam
(``core.observe``) and from the store's retry policy (outages); each runtime has its own
``CollectorRegistry``, so a destroy and relaunch (or a test) starts from zero and never
collides with another runtime's series. Labels are bounded by the code, never by the data:
workflow, step and queue names, final status; never a workflow ID.

Database-wide gauges (queue backlogs, PENDING by executor, executors alive and silent) are
counted by one process at a time, so ten executors do not report ten copies nor run ten
counting queries: the exporter is the oldest live incarnation in the ``executors`` table (by
``started_at``, then executor ID and incarnation), which every process can tell from the
heartbeats without a lock or lease to hold. The others export only their own numbers. The
exporter counts at most every ``every`` seconds, however often it is scraped; a process that
is not the exporter reads only the small executors table, as often. During a hand-over (the
exporter stopped, its heartbeat not yet stale) nobody may export for a few heartbeats, and
two may for one window when clocks disagree; dashboards aggregate with ``max by``.

``generate_latest`` writes the Prometheus text format (``GET /metrics`` on the admin server;
``waypoint metrics`` prints the database-wide gauges alone).
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from typing import Any, Optional

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric

from waypoint.core.engine import Engine
from waypoint.core.observe import ObservedRun, Observer, Watch
from waypoint.core.runtime import Runtime
from waypoint.storage.records import DatabaseGauges, ExecutorRow
from waypoint.storage.retry import RetryPolicy

logger = logging.getLogger("waypoint")

GAUGES_EVERY_SEC = 10.0  # the database-wide gauges are counted at most this often
FINAL_STATUSES = ("SUCCESS", "ERROR", "CANCELLED", "ABANDONED")  # how a watch may end
SILENT_AFTER_HEARTBEATS = 3  # an incarnation not heard from for this many periods is silent
SCRAPE_WAIT_SEC = 5.0  # how long a scrape waits for a due reading before serving the last one
MAX_PARTITIONS = 50  # per queue; the smaller partitions are summed under partition="_other"
LONG_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 14400)
SHORT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class ProcessMetrics:
    """The series of one runtime, in its own registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.started = Counter(
            "waypoint_workflows_started",
            "Workflow bodies started in this process (first runs, dequeues and recoveries).",
            ["workflow"],
            registry=r,
        )
        self.finished = Counter(
            "waypoint_workflows",
            "Workflow runs of this process by how they ended: SUCCESS, ERROR, CANCELLED, or "
            "ABANDONED (this process stopped running it; another execution finishes it).",
            ["workflow", "status"],
            registry=r,
        )
        self.running = Gauge(
            "waypoint_workflows_running",
            "Workflow bodies running in this process now.",
            ["workflow"],
            registry=r,
        )
        self.duration = Histogram(
            "waypoint_workflow_duration_seconds",
            "Time a workflow body ran in this process, from its start here to its end.",
            ["workflow"],
            buckets=LONG_BUCKETS,
            registry=r,
        )
        self.step_attempts = Counter(
            "waypoint_step_attempts",
            "Step (and transaction) attempts run, retries included; replays are not.",
            ["step"],
            registry=r,
        )
        self.step_retries = Counter(
            "waypoint_step_retries",
            "Step attempts that failed and were retried.",
            ["step"],
            registry=r,
        )
        self.step_failures = Counter(
            "waypoint_step_failures",
            "Steps that failed for good (retries exhausted, or an error not retried).",
            ["step"],
            registry=r,
        )
        self.step_duration = Histogram(
            "waypoint_step_duration_seconds",
            "Time a step took, all its attempts and retry delays included.",
            ["step"],
            buckets=LONG_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            "waypoint_queue_wait_seconds",
            "Time from a workflow's enqueueing to its claim by this executor.",
            ["queue"],
            buckets=LONG_BUCKETS,
            registry=r,
        )
        self.checkpoint = Histogram(
            "waypoint_checkpoint_seconds",
            "Time to write one step checkpoint to the system database (commit included).",
            buckets=SHORT_BUCKETS,
            registry=r,
        )
        self.recovered = Counter(
            "waypoint_recovered_workflows",
            "Workflows this executor took back (its own after a restart, or a dead executor's).",
            registry=r,
        )
        self.fenced = Counter(
            "waypoint_fenced_writes",
            "Writes refused because another execution owns the workflow now (zombie writes).",
            registry=r,
        )
        self.db_retries = Counter(
            "waypoint_database_retries",
            "System database calls that failed for a transient reason and were retried.",
            registry=r,
        )
        self.db_outages = Counter(
            "waypoint_database_outages",
            "System database outages this process lived through.",
            registry=r,
        )
        self.db_unavailable = Gauge(
            "waypoint_database_unavailable",
            "1 while this process finds the system database unavailable (an outage going on).",
            registry=r,
        )
        self.db_outage_seconds = Counter(
            "waypoint_database_outage_seconds",
            "Time the system database was unavailable to this process (ended outages).",
            registry=r,
        )


class _WorkflowSeries:
    """The series of one workflow name (label lookups done once, not per run)."""

    __slots__ = ("duration", "finished", "running", "started")

    def __init__(self, m: ProcessMetrics, name: str) -> None:
        self.started = m.started.labels(name)
        self.running = m.running.labels(name)
        self.duration = m.duration.labels(name)
        self.finished = {s: m.finished.labels(name, s) for s in FINAL_STATUSES}


class _StepSeries:
    __slots__ = ("attempts", "duration", "failures", "retries")

    def __init__(self, m: ProcessMetrics, name: str) -> None:
        self.attempts = m.step_attempts.labels(name)
        self.retries = m.step_retries.labels(name)
        self.failures = m.step_failures.labels(name)
        self.duration = m.step_duration.labels(name)


class _WorkflowWatch(Watch):
    __slots__ = ("began", "fenced", "series")

    def __init__(self, series: _WorkflowSeries, fenced: Counter) -> None:
        self.series, self.fenced, self.began = series, fenced, time.perf_counter()
        series.started.inc()
        series.running.inc()

    def event(self, name: str, attributes: dict[str, Any]) -> None:
        if name == "fenced":
            self.fenced.inc()

    def end(self, status: str, error: Optional[BaseException]) -> None:
        series = self.series
        series.running.dec()
        series.finished[status].inc()
        series.duration.observe(time.perf_counter() - self.began)


class _StepWatch(Watch):
    __slots__ = ("began", "series")

    def __init__(self, series: _StepSeries) -> None:
        self.series, self.began = series, time.perf_counter()
        series.attempts.inc()

    def event(self, name: str, attributes: dict[str, Any]) -> None:
        if name == "retry":
            self.series.retries.inc()
            self.series.attempts.inc()

    def end(self, status: str, error: Optional[BaseException]) -> None:
        if status == "ERROR":
            self.series.failures.inc()
        self.series.duration.observe(time.perf_counter() - self.began)


class MetricsObserver(Observer):
    """Feeds ``ProcessMetrics`` from the engine's observation seam."""

    def __init__(self, m: ProcessMetrics) -> None:
        self.m = m
        self._workflows: dict[str, _WorkflowSeries] = {}
        self._steps: dict[str, _StepSeries] = {}

    def workflow(self, run: ObservedRun) -> Optional[Watch]:
        series = self._workflows.get(run.name)
        if series is None:  # (two threads may both make it: same children, no harm)
            series = self._workflows[run.name] = _WorkflowSeries(self.m, run.name)
        return _WorkflowWatch(series, self.m.fenced)

    def step(self, run: ObservedRun, name: str, function_id: int) -> Optional[Watch]:
        series = self._steps.get(name)
        if series is None:
            series = self._steps[name] = _StepSeries(self.m, name)
        return _StepWatch(series)

    def recovered(self, executor_ids: Sequence[str], workflow_ids: Sequence[str]) -> None:
        self.m.recovered.inc(len(workflow_ids))

    def dequeued(self, queue_name: str, waited_seconds: Sequence[float]) -> None:
        child = self.m.queue_wait.labels(queue_name)
        for seconds in waited_seconds:
            child.observe(seconds)

    def checkpointed(self, seconds: float) -> None:
        self.m.checkpoint.observe(seconds)


class _RetryListener:
    """The store's retry policy tells it about outages (``storage.retry.RetryListener``)."""

    def __init__(self, m: ProcessMetrics) -> None:
        self.m = m

    def retried(self, what: str) -> None:
        self.m.db_retries.inc()
        self.m.db_unavailable.set(1)

    def recovered(self, outage_seconds: float) -> None:
        self.m.db_unavailable.set(0)
        self.m.db_outages.inc()
        self.m.db_outage_seconds.inc(outage_seconds)


# -- database-wide gauges ---------------------------------------------------------------------


def _alive(e: ExecutorRow) -> bool:
    """Heard from lately, and not shut down (a 'gone' incarnation handed its work back)."""
    now = e.db_now or 0
    recent = (e.last_seen or 0) >= now - SILENT_AFTER_HEARTBEATS * e.heartbeat_ms
    return recent and e.state != "gone"


def gauge_families(g: DatabaseGauges, known_queues: Sequence[str] = ()) -> list[Metric]:
    """The database-wide gauges of one reading, as metric families; ``known_queues`` (seen in
    earlier readings) read 0 when they have no workflow in flight, instead of vanishing."""
    depth = GaugeMetricFamily(
        "waypoint_queue_workflows",
        "Workflows of a queue (and partition) waiting (ENQUEUED) or running (PENDING).",
        labels=["queue", "partition", "status"],
    )
    oldest = GaugeMetricFamily(
        "waypoint_queue_oldest_enqueued_age_seconds",
        "Age of the oldest ENQUEUED workflow of a queue (and partition).",
        labels=["queue", "partition"],
    )
    by_queue: dict[str, list[Any]] = {q: [] for q in known_queues}
    for q in g.queues:
        by_queue.setdefault(q.queue_name, []).append(q)
    for queue, rows in sorted(by_queue.items()):
        totals: dict[str, int] = {}
        for q in rows:
            totals[q.partition_key or ""] = totals.get(q.partition_key or "", 0) + q.count
        kept = set(sorted(totals, key=lambda k: -totals[k])[:MAX_PARTITIONS])
        counts: dict[tuple[str, str], float] = {}
        ages: dict[str, float] = {}
        for q in rows:
            part = (q.partition_key or "") if (q.partition_key or "") in kept else "_other"
            counts[(part, q.status)] = counts.get((part, q.status), 0) + q.count
            if q.status == "ENQUEUED" and q.oldest_created_ms is not None:
                age = max(0.0, (g.db_now_ms - q.oldest_created_ms) / 1000)
                ages[part] = max(ages.get(part, 0.0), age)
        for status in ("ENQUEUED", "PENDING"):
            counts.setdefault(("", status), 0)  # a drained queue reads 0, not absent
        for (part, status), n in sorted(counts.items()):
            depth.add_metric([queue, part, status], n)
        for part, age in sorted(ages.items()):
            oldest.add_metric([queue, part], age)
    pending = GaugeMetricFamily(
        "waypoint_pending_workflows",
        "PENDING workflows by the executor that owns them.",
        labels=["executor"],
    )
    for executor, n in sorted(g.pending_by_executor.items()):
        pending.add_metric([executor], n)
    executors = GaugeMetricFamily(
        "waypoint_executors",
        "Executor IDs by state: alive (an incarnation heard from within "
        f"{SILENT_AFTER_HEARTBEATS} heartbeat periods) or silent.",
        labels=["state"],
    )
    silence = GaugeMetricFamily(
        "waypoint_executor_silent_seconds",
        "Time since an executor ID was last heard from (its most recent incarnation).",
        labels=["executor"],
    )
    last: dict[str, ExecutorRow] = {}
    for e in g.executors:
        if e.executor_id not in last or (e.last_seen or 0) > (last[e.executor_id].last_seen or 0):
            last[e.executor_id] = e
    alive = sum(1 for e in last.values() if _alive(e))
    executors.add_metric(["alive"], alive)
    executors.add_metric(["silent"], len(last) - alive)
    for executor, e in sorted(last.items()):
        silence.add_metric([executor], max(0.0, ((e.db_now or 0) - (e.last_seen or 0)) / 1000))
    return [depth, oldest, pending, executors, silence]


def is_exporter(executors: list[ExecutorRow], executor_id: str, incarnation: str) -> bool:
    """Whether this incarnation is the oldest live one, the one that exports the gauges."""
    live = [e for e in executors if _alive(e)]
    if not live:
        return False
    first = min(live, key=lambda e: (e.started_at or 0, e.executor_id, e.incarnation))
    return (first.executor_id, first.incarnation) == (executor_id, incarnation)


class DatabaseGaugesCollector:
    """Counts the database-wide gauges at most every ``every`` seconds, for the scrapes in
    between; with ``incarnation`` given, only while that incarnation is the exporter."""

    def __init__(
        self,
        engine: Engine,
        *,
        executor_id: Optional[str] = None,
        incarnation: Optional[str] = None,
        every: float = GAUGES_EVERY_SEC,
        wait: Optional[float] = SCRAPE_WAIT_SEC,
    ) -> None:
        self.engine = engine
        self.executor_id = executor_id
        self.incarnation = incarnation
        self.every = every
        self.wait = wait
        self._lock = threading.Lock()
        self._read_at = -float("inf")
        self._reading: Optional[threading.Thread] = None
        self._families: list[Metric] = []
        self._queues: set[str] = set()  # every queue seen with work, so a drained one reads 0

    def collect(self) -> Iterator[Metric]:
        """The last reading; a new one first when it is due, waited for ``wait`` seconds at
        most (the database may be down: the process's own numbers are served meanwhile)."""
        with self._lock:
            if self._reading is None and time.monotonic() - self._read_at >= self.every:
                self._reading = threading.Thread(
                    target=self._refresh, name="waypoint-metrics-gauges", daemon=True
                )
                self._reading.start()
            reading = self._reading
        if reading is not None:
            reading.join(self.wait)
        with self._lock:
            families = self._families
        yield from families

    def _refresh(self) -> None:
        try:
            families = self._read()
        except Exception as exc:
            logger.warning("could not read the database-wide gauges: %s", exc)
            families = self._families
        with self._lock:
            self._families = families
            self._read_at = time.monotonic()
            self._reading = None

    def _read(self) -> list[Metric]:
        store = self.engine.store
        exporter = GaugeMetricFamily(
            "waypoint_database_gauges_exporter",
            "1 in the one process that exports the database-wide gauges, else 0.",
        )
        if (
            self.incarnation is not None
            and self.executor_id is not None
            and not is_exporter(store.list_executors(None), self.executor_id, self.incarnation)
        ):
            exporter.add_metric([], 0)
            return [exporter]
        exporter.add_metric([], 1)
        reading = store.database_gauges()
        families = gauge_families(reading, sorted(self._queues))
        self._queues.update(q.queue_name for q in reading.queues)
        return [exporter, *families]


# -- per runtime ------------------------------------------------------------------------------


class RuntimeMetrics:
    """A runtime's registry, its observer and its database gauges."""

    def __init__(self, rt: Runtime) -> None:
        self.registry = CollectorRegistry()
        self.process = ProcessMetrics(self.registry)
        self.observer = MetricsObserver(self.process)
        self.gauges = DatabaseGaugesCollector(
            rt, executor_id=rt.executor_id, incarnation=rt.incarnation
        )
        self.registry.register(self.gauges)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


_BY_RUNTIME: weakref.WeakKeyDictionary[Runtime, RuntimeMetrics] = weakref.WeakKeyDictionary()
CONTENT_TYPE = CONTENT_TYPE_LATEST


def install(rt: Runtime) -> RuntimeMetrics:
    """Give a runtime being built its metrics (before it recovers anything, so recoveries
    count)."""
    found = RuntimeMetrics(rt)
    rt.observers.add(found.observer)
    policy = getattr(rt.store, "retry", None)
    if isinstance(policy, RetryPolicy):
        policy.listeners.append(_RetryListener(found.process))
    _BY_RUNTIME[rt] = found
    return found


def runtime_metrics(rt: Runtime) -> Optional[RuntimeMetrics]:
    """The metrics of a launched runtime (None if it was built without them)."""
    return _BY_RUNTIME.get(rt)


def database_exposition(engine: Engine) -> bytes:
    """The database-wide gauges alone, counted now (``waypoint metrics``)."""
    registry = CollectorRegistry()
    registry.register(DatabaseGaugesCollector(engine, every=0, wait=None))
    return generate_latest(registry)
