"""10,000 workflows waiting at once in one process (issue 11): Waypoint only.

    .venv/bin/python benchmarks/waiting.py [--n 10000] [--quick] [--freeze]

One process, the default pool of 256 threads, PostgreSQL (``BENCH_PG_URL``, default
``postgresql://postgres@127.0.0.1:5432``; the database ``bench_waiting``, or ``BENCH_DB``, is
dropped and recreated). Three kinds of waiting workflow, a third of ``--n`` each:

* sleepers: ``DBOS.sleep`` until a wake-up time passed as input, spread over ``SPREAD``
  seconds once everything is parked; latency = first step after the sleep - wake-up time;
* receivers: ``DBOS.recv``; once the sleepers are done, the main thread sends their messages
  at a steady rate over ``SPREAD`` seconds; latency = first step after the recv - send time;
* parents: start a child (which receives a message too, and counts among the waiting) and
  wait for its result; latency = parent's first step after ``get_result`` - the child's last
  step before it returned.

Measured: the most threads the process had and its peak RSS (``VmHWM``) while they all
waited and resumed; the p50/p99 resume latencies; and the throughput of "other" workflows
(``OTHERS`` one-step workflows started from 4 threads, until all results are in) with
nothing waiting, and again while all the waiting workflows are parked. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg

from waypoint import DBOS, SetWorkflowID
from waypoint.core.runtime import get_runtime

PG = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432").rstrip("/")
DB = os.environ.get("BENCH_DB", "bench_waiting")
SPREAD = 20.0  # seconds over which the sleepers wake, then over which the messages are sent
SETTLE = 20.0  # seconds between the two "others" measurements while everything is parked

stamps: dict[str, float] = {}
stamps_lock = threading.Lock()

# Time spent in full (generation 2) garbage collections, and how many: each one walks every
# object alive, so what parked runs hold shows here (issue 11).
gc_full = {"count": 0, "seconds": 0.0, "max": 0.0}
_gc_began = [0.0]


def _gc_timer(phase: str, info: dict[str, Any]) -> None:
    if info.get("generation") != 2:
        return
    if phase == "start":
        _gc_began[0] = time.perf_counter()
    else:
        took = time.perf_counter() - _gc_began[0]
        gc_full["count"] += 1
        gc_full["seconds"] += took
        gc_full["max"] = max(gc_full["max"], took)


gc.callbacks.append(_gc_timer)


@DBOS.step()
def stamp() -> float:
    now = time.time()
    with stamps_lock:
        stamps[DBOS.workflow_id or "?"] = now
    return now


@DBOS.step()
def work(x: int) -> int:
    return x + 1


@DBOS.workflow()
def other(x: int) -> int:
    return work(x)


@DBOS.workflow()
def sleeper(wake_at: float) -> float:
    DBOS.sleep(max(0.01, wake_at - time.time()))
    return stamp() - wake_at


@DBOS.workflow()
def receiver() -> Any:
    got = DBOS.recv("go", timeout_seconds=3600)
    stamp()
    return got


@DBOS.workflow()
def child() -> float:
    DBOS.recv("go", timeout_seconds=3600)
    return stamp()


@DBOS.workflow()
def parent(i: int) -> float:
    with SetWorkflowID(f"child-{i}"):
        handle = DBOS.start_workflow(child)
    ended = handle.get_result()
    return stamp() - ended


def rss_mb(field: str = "VmHWM") -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def others_throughput(n: int, tag: str) -> float:
    """``n`` one-step workflows started from 4 threads, until every result is in."""
    began = time.perf_counter()

    def produce(k: int) -> None:
        handles = []
        for i in range(k, n, 4):
            with SetWorkflowID(f"{tag}-{i}"):
                handles.append(DBOS.start_workflow(other, i))
        for h in handles:
            h.get_result()

    threads = [threading.Thread(target=produce, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return n / (time.perf_counter() - began)


def progress(**figures: Any) -> None:
    """A partial result, at once (a slow machine may not let the run finish)."""
    print(json.dumps({"progress": figures}), file=sys.stderr, flush=True)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--others", type=int, default=2000)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument(
        "--freeze",
        action="store_true",
        help="gc.freeze() once launched, as an application may after its start-up",
    )
    args = ap.parse_args()
    n = 300 if args.quick else args.n
    others = 200 if args.quick else args.others
    with psycopg.connect(f"{PG}/postgres", autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {DB}")
    logging.getLogger("waypoint").setLevel(logging.ERROR)  # pool-timeout retries on a busy box
    DBOS(config={"name": "bench-waiting", "system_database_url": f"{PG}/{DB}"})
    DBOS.launch()
    if args.freeze:
        gc.freeze()  # the application's choice (a library must not make it)
    rt = get_runtime()
    max_threads = threading.active_count()
    sampling = True

    def sample() -> None:
        nonlocal max_threads
        while sampling:
            max_threads = max(max_threads, threading.active_count())
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()

    others_throughput(others // 4, "warm")
    began = time.perf_counter()
    unloaded = others_throughput(others, "unloaded")
    took = time.perf_counter() - began
    progress(others_unloaded_wf_per_s=round(unloaded, 1), others_seconds=round(took, 1))

    n_sleep = n // 3
    n_recv = n // 3
    n_parent = (n - n_sleep - n_recv) // 2  # each parent has a waiting child
    waiting = n_sleep + n_recv + 2 * n_parent
    parked_from = time.perf_counter()
    # The sleepers wake after everything is parked and "others" measured: estimate it.
    wake_base = time.time() + 60 + n / 100
    sleepers = []
    for i in range(n_sleep):
        with SetWorkflowID(f"sleep-{i}"):
            sleepers.append(DBOS.start_workflow(sleeper, wake_base + SPREAD * i / n_sleep))
    receivers = []
    for i in range(n_recv):
        with SetWorkflowID(f"recv-{i}"):
            receivers.append(DBOS.start_workflow(receiver))
    parents = []
    for i in range(n_parent):
        with SetWorkflowID(f"parent-{i}"):
            parents.append(DBOS.start_workflow(parent, i))
    # Everything is parked when no thread is busy and every workflow is either still waiting
    # here or already done (a slow machine may wake the first sleepers before the last park).
    while not (
        rt.active_count() + len(stamps) >= waiting and rt.pool.free_slots() == rt.pool.max_workers
    ):
        time.sleep(0.1)
    park_seconds = time.perf_counter() - parked_from
    threads_parked = threading.active_count()
    rss_parked = rss_mb("VmRSS")

    progress(
        parked=waiting,
        park_seconds=round(park_seconds, 1),
        threads_parked=threads_parked,
        rss_parked_mb=round(rss_parked, 1),
        others_unloaded_wf_per_s=round(unloaded, 1),
    )
    progress(phase="others-loaded")
    loaded = others_throughput(others, "loaded")
    progress(others_loaded_wf_per_s=round(loaded, 1))
    # The same once the database has digested the burst of starts that parked them (its
    # checkpoint writes, the WAL): what "while they wait" costs, not what parking them did.
    time.sleep(SETTLE)
    progress(phase="others-settled")
    settled = others_throughput(others, "settled")
    progress(others_settled_wf_per_s=round(settled, 1))
    late = time.time() > wake_base
    # The sleepers wake over SPREAD seconds; the messages go out once they are done.
    while time.time() < wake_base + SPREAD + 1:
        time.sleep(0.05)

    # Messages at a steady rate over SPREAD seconds, receivers and children interleaved.
    sent: dict[str, float] = {}
    targets: list[str] = []
    for k in range(max(n_recv, n_parent)):
        targets += [f"recv-{k}"] if k < n_recv else []
        targets += [f"child-{k}"] if k < n_parent else []
    start = time.time()
    for k, wid in enumerate(targets):
        due = start + SPREAD * k / len(targets)
        delay = due - time.time()
        if delay > 0:
            time.sleep(delay)
        sent[wid] = time.time()
        DBOS.send(wid, k, "go")
    sleep_lat = [h.get_result() for h in sleepers]
    progress(sleep_p50_ms=round(pct(sleep_lat, 0.5), 1), sleep_p99_ms=round(pct(sleep_lat, 0.99)))
    for h in receivers:
        h.get_result()
    recv_lat = [stamps[f"recv-{i}"] - sent[f"recv-{i}"] for i in range(n_recv)]
    child_lat = [h.get_result() for h in parents]
    sampling = False
    sampler.join()
    report = {
        "waiting": waiting,
        "pool": rt.pool.max_workers,
        "park_seconds": round(park_seconds, 1),
        "threads_parked": threads_parked,
        "threads_max": max_threads,
        "rss_parked_mb": round(rss_parked, 1),
        "rss_peak_mb": round(rss_mb("VmHWM"), 1),
        "sleep_p50_ms": round(pct(sleep_lat, 0.5), 1),
        "sleep_p99_ms": round(pct(sleep_lat, 0.99), 1),
        "recv_p50_ms": round(pct(recv_lat, 0.5), 1),
        "recv_p99_ms": round(pct(recv_lat, 0.99), 1),
        "child_p50_ms": round(pct(child_lat, 0.5), 1),
        "child_p99_ms": round(pct(child_lat, 0.99), 1),
        "others_unloaded_wf_per_s": round(unloaded, 1),
        "others_loaded_wf_per_s": round(loaded, 1),
        "others_ratio": round(loaded / unloaded, 2),
        "others_settled_wf_per_s": round(settled, 1),
        "others_settled_ratio": round(settled / unloaded, 2),
        "sleepers_woke_before_parked": late,
        "gc_full_collections": gc_full["count"],
        "gc_full_seconds": round(gc_full["seconds"], 2),
        "gc_full_max_ms": round(gc_full["max"] * 1000, 1),
        "mean_all_ms": round(statistics.mean(sleep_lat + recv_lat + child_lat) * 1000, 1),
    }
    print(json.dumps(report), flush=True)
    DBOS.destroy()


if __name__ == "__main__":
    main()
