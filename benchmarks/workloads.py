"""Benchmark workloads, runnable against DBOS Transact or Waypoint.

Usage:  BENCH_LIB=dbos|waypoint python workloads.py WORKLOAD [--n N] [--quick]
        (or pass --lib dbos|waypoint instead of the env var)

The library is chosen at run time (``importlib.import_module(BENCH_LIB)``) and only
the public API shared by both libraries is used. Each run prints exactly one JSON line
(``{"workload": ..., "lib": ..., "metrics": {...}, "params": {...}}``) to stdout; any
library logging goes to stderr. Every workload starts from a freshly (re)created
PostgreSQL database named ``bench_<lib>``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from types import ModuleType, SimpleNamespace
from typing import Any

import psycopg

PG_BASE = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432")
# Appended to the benchmark databases' names, so runs from several checkouts do not collide.
DB_SUFFIX = os.environ.get("BENCH_DB_SUFFIX", "")
WORKLOADS = (
    "floor",
    "seq0",
    "seq1",
    "seq10",
    "threads32",
    "queue2000",
    "enqueue",
    "bulk_enqueue",
    "queue4p",
    "async32",
    "sendrecv",
    "sendrecv_wf",
    "recovery2000",
    "idle",
)
# Default sizes (full, quick). Full sizes target roughly 3-10 s per run for dbos 3.4.
DEFAULT_N: dict[str, tuple[float, float]] = {
    "floor": (5.0, 2.0),  # seconds per variant
    "seq0": (3000, 300),  # workflows
    "seq1": (2000, 200),
    "seq10": (300, 50),
    "threads32": (10.0, 3.0),  # seconds
    "queue2000": (2000, 200),  # workflows
    "enqueue": (3000, 300),  # workflows, one thread
    "bulk_enqueue": (20000, 2000),  # workflows, in batches of BULK_BATCH
    "queue4p": (20000, 2000),  # workflows, 4 producer threads (dbos: QUEUE4P_DBOS_N)
    "async32": (10.0, 3.0),  # seconds
    "sendrecv": (200, 40),  # round trips
    "sendrecv_wf": (200, 40),  # round trips, the send from a workflow
    "recovery2000": (2000, 200),
    "idle": (20.0, 5.0),  # seconds of observation
}
BULK_BATCH = 1000
# dbos 3.4 dequeues once per polling interval (1 s), so 20,000 queued workflows would take
# it many minutes: it runs a tenth of the size (throughput is what is compared).
QUEUE4P_DBOS_N = 2000
RECOVERY_ENV = {"DBOS__VMID": "bench-recovery-executor", "DBOS__APPVERSION": "bench-v1"}


# ---------------------------------------------------------------- helpers ----
def db_url(name: str) -> str:
    return f"{PG_BASE}/{name}"


def reset_database(name: str) -> None:
    with psycopg.connect(db_url("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100)."""
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * len(s) + 0.5) - 1))]


def emit(workload: str, lib: str, metrics: dict[str, float], **params: Any) -> None:
    rounded = {k: round(v, 3) for k, v in metrics.items()}
    print(
        json.dumps({"workload": workload, "lib": lib, "metrics": rounded, "params": params}),
        flush=True,
    )


class Bench:
    """Library handle plus the workflows every workload uses (defined before launch)."""

    def __init__(self, lib_name: str, dbname: str) -> None:
        self.lib_name = lib_name
        self.lib: ModuleType = importlib.import_module(lib_name)
        self.DBOS: Any = self.lib.DBOS
        self.dbname = dbname
        self.phase = os.environ.get("BENCH_PHASE", "run")  # recovery: "seed" | "run"
        self.counter = 0
        self.counter_lock = threading.Lock()
        self.counter_done = threading.Event()
        self.counter_target = -1
        self.recv_ready = threading.Event()
        self.sent_at = 0.0  # when send_wf called DBOS.send
        self.queue: Any = None
        self.queue_api = ""
        self.finished: list[tuple[float, int]] = []  # (finish time, i) in recovery
        self.gate = threading.Event()  # gated workflows wait for it before their step
        self.queue_concurrency = 16
        self.wf = self._define()

    def tick(self) -> None:
        with self.counter_lock:
            self.counter += 1
            if self.counter == self.counter_target:
                self.counter_done.set()

    def _define(self) -> SimpleNamespace:
        DBOS, bench = self.DBOS, self

        @DBOS.step()
        def step(i: int, x: int) -> int:
            return i + x

        @DBOS.workflow()
        def seq_wf(x: int, nsteps: int) -> int:
            total = 0
            for i in range(nsteps):
                total += step(i, x)
            return total

        @DBOS.workflow()
        def queued_wf(enqueued_at: float) -> list[float]:
            started = time.time()
            step(0, 1)
            return [started - enqueued_at, time.time()]

        @DBOS.workflow()
        def gated_wf(i: int) -> int:
            bench.gate.wait(600)
            return step(i, 1)

        @DBOS.step()
        async def astep(i: int, x: int) -> int:
            return i + x

        @DBOS.workflow()
        async def aseq_wf(x: int, nsteps: int) -> int:
            total = 0
            for i in range(nsteps):
                total += await astep(i, x)
            return total

        @DBOS.workflow()
        def recv_wf() -> Any:
            bench.recv_ready.set()
            return DBOS.recv("t", timeout_seconds=60)

        @DBOS.workflow()
        def send_wf(dest: str, i: int) -> None:
            bench.sent_at = time.perf_counter()
            DBOS.send(dest, i, "t")

        @DBOS.step()
        def recovery_step(i: int) -> int:
            if bench.phase == "seed":
                bench.tick()  # the workflow is PENDING in the database by now
                threading.Event().wait()  # block forever; the process exits hard
            return i

        @DBOS.workflow()
        def recovery_wf(i: int) -> int:
            r = recovery_step(i)
            with bench.counter_lock:
                bench.finished.append((time.time(), i))
            bench.tick()
            return int(r)

        return SimpleNamespace(
            seq=seq_wf,
            queued=queued_wf,
            gated=gated_wf,
            aseq=aseq_wf,
            recv=recv_wf,
            send=send_wf,
            recovery=recovery_wf,
        )

    def declare_queue(self) -> None:
        """Declare the ``bench`` queue before launch with ``Queue(...)``. dbos 3.4 forbids
        that (queues are database-backed and declared after launch with
        ``DBOS.register_queue``), so fall back to that; ``queue_api`` records which."""
        try:
            self.queue = self.lib.Queue("bench", worker_concurrency=self.queue_concurrency)
            self.queue_api = "Queue()"
        except Exception:
            self.queue = None
            self.queue_api = "DBOS.register_queue()"

    def launch(self) -> None:
        self.DBOS(config={"name": "bench", "system_database_url": db_url(self.dbname)})
        self.DBOS.launch()
        if self.queue_api == "DBOS.register_queue()":
            self.queue = self.DBOS.register_queue(
                "bench", worker_concurrency=self.queue_concurrency
            )

    def destroy(self) -> None:
        self.DBOS.destroy()


# -------------------------------------------------------------- workloads ----
def run_floor(n: float) -> dict[str, float]:
    """Plain psycopg, one connection: the cost of one durable write per transaction."""
    reset_database(f"bench_floor{DB_SUFFIX}")
    with psycopg.connect(db_url(f"bench_floor{DB_SUFFIX}"), autocommit=True) as conn:
        conn.execute("CREATE TABLE t (id bigserial PRIMARY KEY, k int NOT NULL, v text)")

        def loop(body: Callable[[int], None]) -> float:
            for i in range(200):  # warm-up
                body(i)
            count, t0 = 0, time.perf_counter()
            deadline = t0 + n
            while time.perf_counter() < deadline:
                body(count)
                count += 1
            return count / (time.perf_counter() - t0)

        def txn(i: int) -> None:
            conn.execute("BEGIN")
            conn.execute("INSERT INTO t (k, v) VALUES (%s, %s)", (i, "x"))
            conn.execute("COMMIT")

        def auto(i: int) -> None:
            conn.execute("INSERT INTO t (k, v) VALUES (%s, %s)", (i, "x"))

        return {"txn_per_s": loop(txn), "autocommit_per_s": loop(auto)}


def run_seq(b: Bench, nsteps: int, n: int) -> dict[str, float]:
    b.launch()
    for i in range(max(10, n // 20)):  # warm-up
        b.wf.seq(i, nsteps)
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(n):
        b.wf.seq(i, nsteps)
    el, cpu = time.perf_counter() - t0, time.process_time() - c0
    b.destroy()
    return (
        {"wf_per_s": n / el}
        | ({"steps_per_s": n * nsteps / el} if nsteps else {})
        | {"cpu_ms_per_wf": cpu * 1000 / n}
    )


def run_threads32(b: Bench, seconds: float) -> dict[str, float]:
    b.launch()
    for i in range(5):  # warm-up
        b.wf.seq(i, 10)
    counts = [0] * 32
    start = threading.Barrier(33)
    deadline = 0.0

    def worker(k: int) -> None:
        start.wait()
        while time.perf_counter() < deadline:
            b.wf.seq(k, 10)
            counts[k] += 1

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(32)]
    for t in threads:
        t.start()
    t0, c0 = time.perf_counter(), time.process_time()
    deadline = t0 + seconds
    start.wait()
    for t in threads:
        t.join()
    el, cpu = time.perf_counter() - t0, time.process_time() - c0
    b.destroy()
    done = sum(counts)
    return {
        "wf_per_s": done / el,
        "steps_per_s": done * 10 / el,
        "cpu_ms_per_wf": cpu * 1000 / done,
    }


def run_queue(b: Bench, n: int) -> dict[str, float]:
    b.declare_queue()
    b.launch()
    t0 = time.time()
    handles = [b.queue.enqueue(b.wf.queued, time.time()) for _ in range(n)]
    t_enq = time.time()
    results = [h.get_result() for h in handles]
    t_wall = time.time()
    b.destroy()
    delays = [r[0] * 1000 for r in results]
    last_finish = max(r[1] for r in results)
    return {
        "wf_per_s": n / (last_finish - t0),
        "wall_wf_per_s": n / (t_wall - t0),
        "enqueue_per_s": n / (t_enq - t0),
        "start_delay_p50_ms": pct(delays, 50),
        "start_delay_p99_ms": pct(delays, 99),
    }


def run_enqueue(b: Bench, n: int) -> dict[str, float]:
    """One thread enqueues n workflows; the queue's 16 slots are taken by gated workflows
    until the clock stops, so the enqueues do not compete with running them."""
    b.declare_queue()
    b.launch()
    for i in range(50):  # warm-up; at most 16 of these start, and wait at the gate
        b.queue.enqueue(b.wf.gated, i)
    t0 = time.perf_counter()
    for i in range(n):
        b.queue.enqueue(b.wf.gated, i)
    el = time.perf_counter() - t0
    b.gate.set()
    b.destroy()
    return {"enqueue_per_s": n / el}


def run_bulk_enqueue(b: Bench, n: int) -> dict[str, float]:
    """``Queue.enqueue_many`` in batches of BULK_BATCH (gated as in ``enqueue``); dbos has no
    batch API, so it enqueues one by one."""
    b.declare_queue()
    b.launch()
    many = getattr(b.queue, "enqueue_many", None)

    def batch(start: int) -> None:
        if many is not None:
            many(b.wf.gated, [(i,) for i in range(start, start + BULK_BATCH)])
        else:
            for i in range(start, start + BULK_BATCH):
                b.queue.enqueue(b.wf.gated, i)

    batch(-BULK_BATCH)  # warm-up
    t0 = time.perf_counter()
    for start in range(0, n, BULK_BATCH):
        batch(start)
    el = time.perf_counter() - t0
    b.gate.set()
    b.destroy()
    return {"stored_per_s": (n // BULK_BATCH * BULK_BATCH) / el}


def run_queue4p(b: Bench, n: int) -> dict[str, float]:
    """4 producer threads enqueue n one-step workflows in all (n/4 each) on a queue with
    32 slots; throughput = n / (last in-workflow finish - first enqueue)."""
    b.queue_concurrency = 32
    b.declare_queue()
    b.launch()
    per = n // 4
    handles: list[list[Any]] = [[] for _ in range(4)]
    start = threading.Barrier(5)

    def producer(k: int) -> None:
        start.wait()
        handles[k] = [b.queue.enqueue(b.wf.queued, time.time()) for _ in range(per)]

    threads = [threading.Thread(target=producer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    t0 = time.time()
    start.wait()
    for t in threads:
        t.join()
    t_enq = time.time()
    results = [h.get_result() for hs in handles for h in hs]
    b.destroy()
    last_finish = max(r[1] for r in results)
    delays = [r[0] * 1000 for r in results]
    return {
        "wf_per_s": len(results) / (last_finish - t0),
        "enqueue_per_s": len(results) / (t_enq - t0),
        "start_delay_p50_ms": pct(delays, 50),
    }


def run_async32(b: Bench, seconds: float) -> dict[str, float]:
    """32 coroutines on one event loop each run the 10-step async workflow in a loop."""
    import asyncio

    b.launch()

    async def main() -> tuple[int, float]:
        for i in range(5):  # warm-up
            await b.wf.aseq(i, 10)
        counts = [0] * 32
        t0 = time.perf_counter()
        deadline = t0 + seconds

        async def worker(k: int) -> None:
            while time.perf_counter() < deadline:
                await b.wf.aseq(k, 10)
                counts[k] += 1

        await asyncio.gather(*(worker(k) for k in range(32)))
        return sum(counts), time.perf_counter() - t0

    done, el = asyncio.run(main())
    b.destroy()
    return {"wf_per_s": done / el, "steps_per_s": done * 10 / el}


def _waiting_receiver(b: Bench, i: int) -> Any:
    """Start the receiver ``recv-<i>`` and return its handle once it is about to block in
    ``recv()``."""
    b.recv_ready.clear()
    with b.lib.SetWorkflowID(f"recv-{i}"):
        handle = b.DBOS.start_workflow(b.wf.recv)
    if not b.recv_ready.wait(30):
        raise RuntimeError("receiver workflow did not start")
    time.sleep(0.005)  # let it block in recv()
    return handle


def run_sendrecv(b: Bench, n: int) -> dict[str, float]:
    b.launch()
    lat: list[float] = []
    c0 = 0.0
    for i in range(n + 10):  # first 10 are warm-up
        if i == 10:
            c0 = time.process_time()
        handle = _waiting_receiver(b, i)
        t0 = time.perf_counter()
        b.DBOS.send(f"recv-{i}", i, "t")
        if handle.get_result() != i:
            raise RuntimeError("wrong message received")
        if i >= 10:
            lat.append((time.perf_counter() - t0) * 1000)
    cpu = time.process_time() - c0
    b.destroy()
    return {
        "p50_ms": pct(lat, 50),
        "p99_ms": pct(lat, 99),
        "mean_ms": statistics.mean(lat),
        "cpu_ms_per_trip": cpu * 1000 / n,
    }


def run_sendrecv_wf(b: Bench, n: int) -> dict[str, float]:
    """``sendrecv`` with the send made by a workflow (a step of it, checkpointed): timed from
    the sender's call of ``DBOS.send`` until the receiver's ``get_result`` returns."""
    b.launch()
    lat: list[float] = []
    for i in range(n + 10):  # first 10 are warm-up
        handle = _waiting_receiver(b, i)
        with b.lib.SetWorkflowID(f"send-{i}"):
            sender = b.DBOS.start_workflow(b.wf.send, f"recv-{i}", i)
        if handle.get_result() != i:
            raise RuntimeError("wrong message received")
        done = time.perf_counter()
        sender.get_result()
        if i >= 10:
            lat.append((done - b.sent_at) * 1000)
    b.destroy()
    return {"p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99), "mean_ms": statistics.mean(lat)}


def run_recovery(b: Bench, n: int, quick: bool) -> dict[str, float]:
    # Phase 1 (child process): n workflows, each blocked inside its first step, then
    # os._exit() so they stay PENDING. Same executor id / app version as this process.
    env = {**os.environ, **RECOVERY_ENV, "BENCH_PHASE": "seed", "BENCH_LIB": b.lib_name}
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "recovery2000",
        "--n",
        str(n),
        "--no-reset",
    ] + (["--quick"] if quick else [])
    subprocess.run(cmd, env=env, check=True, timeout=600, stdout=subprocess.DEVNULL)

    # Phase 2 (this process): launch and time until all n are SUCCESS.
    b.counter_target = n
    b.DBOS(config={"name": "bench", "system_database_url": db_url(b.dbname)})
    t0 = time.time()
    b.DBOS.launch()
    if not b.counter_done.wait(600):
        raise RuntimeError(f"only {b.counter} of {n} workflows recovered")
    # Clock stops once the 50 workflows that finished last are SUCCESS in the database;
    # all n are verified afterwards, off the clock.
    ids = [f"rec-{i}" for _, i in sorted(b.finished)]
    _wait_success(b, ids[-50:])
    seconds = time.time() - t0
    _wait_success(b, ids)
    b.destroy()
    return {"seconds": seconds, "wf_per_s": n / seconds}


def _wait_success(b: Bench, ids: list[str]) -> None:
    for wid in ids:
        deadline = time.time() + 120
        while b.DBOS.retrieve_workflow(wid).get_status().status != "SUCCESS":
            if time.time() > deadline:
                raise RuntimeError(f"workflow {wid} not SUCCESS")
            time.sleep(0.01)


def seed_recovery(b: Bench, n: int) -> None:
    b.counter_target = n
    b.launch()
    threading.stack_size(512 * 1024)

    def start(i: int) -> None:
        with b.lib.SetWorkflowID(f"rec-{i}"):
            b.wf.recovery(i)

    for i in range(n):
        threading.Thread(target=start, args=(i,), daemon=True).start()
    ok = b.counter_done.wait(300)
    sys.stdout.flush()
    os._exit(0 if ok else 1)


def run_idle(b: Bench, seconds: float, quick: bool) -> tuple[dict[str, float], str]:
    b.declare_queue()  # a typical app declares a queue
    b.launch()
    for i in range(3):
        b.wf.seq(i, 1)
    time.sleep(3.0 if quick else 12.0)  # settle; PG stats may lag up to ~10 s
    with psycopg.connect(db_url("postgres"), autocommit=True) as mon:
        pss = mon.execute(
            "SELECT count(*) FROM pg_settings WHERE name = 'shared_preload_libraries' "
            "AND setting LIKE '%pg_stat_statements%'"
        ).fetchone()
        if pss and pss[0]:
            with psycopg.connect(db_url(b.dbname), autocommit=True) as c:
                c.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            sql = (
                "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements s "
                "JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = %s"
            )
            method = "pg_stat_statements: sum(calls) for the benchmark database"
        else:
            sql = "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s"
            method = (
                "pg_stat_database: xact_commit+xact_rollback delta "
                "(transactions, not statements; pg_stat_statements not preloaded)"
            )

        def sample() -> float:
            row = mon.execute(sql, (b.dbname,)).fetchone()
            return float(row[0]) if row else 0.0

        c0, t0 = sample(), time.time()
        time.sleep(seconds)
        c1, t1 = sample(), time.time()
    b.destroy()
    return {"queries_per_s": (c1 - c0) / (t1 - t0)}, method


# ------------------------------------------------------------------- main ----
def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("workload", choices=WORKLOADS)
    ap.add_argument("--lib", default=os.environ.get("BENCH_LIB"))
    ap.add_argument("--n", type=float, help="size (workflows, round trips or seconds)")
    ap.add_argument("--quick", action="store_true", help="use small default sizes")
    ap.add_argument("--no-reset", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    w = a.workload
    n = a.n if a.n is not None else DEFAULT_N[w][1 if a.quick else 0]

    if w == "floor":
        emit(w, "floor", run_floor(n), seconds_per_variant=n)
        return
    if a.lib not in ("dbos", "waypoint"):
        ap.error("set BENCH_LIB (or --lib) to dbos or waypoint")
    if w == "recovery2000":
        os.environ.update(RECOVERY_ENV)  # before the library reads them
    dbname = f"bench_{a.lib}{DB_SUFFIX}"
    if not a.no_reset:
        reset_database(dbname)
    b = Bench(a.lib, dbname)

    if w.startswith("seq"):
        emit(w, a.lib, run_seq(b, int(w[3:]), int(n)), n=int(n))
    elif w == "threads32":
        emit(w, a.lib, run_threads32(b, n), seconds=n, threads=32)
    elif w == "queue2000":
        emit(w, a.lib, run_queue(b, int(n)), n=int(n), worker_concurrency=16, queue_api=b.queue_api)
    elif w == "enqueue":
        emit(w, a.lib, run_enqueue(b, int(n)), n=int(n), queue_api=b.queue_api)
    elif w == "bulk_enqueue":
        api = "enqueue_many" if a.lib == "waypoint" else "enqueue (no batch API)"
        emit(w, a.lib, run_bulk_enqueue(b, int(n)), n=int(n), batch=BULK_BATCH, api=api)
    elif w == "queue4p":
        if a.lib == "dbos" and a.n is None and not a.quick:
            n = QUEUE4P_DBOS_N
        emit(w, a.lib, run_queue4p(b, int(n)), n=int(n), producers=4, worker_concurrency=32)
    elif w == "async32":
        emit(w, a.lib, run_async32(b, n), seconds=n, coroutines=32)
    elif w == "sendrecv":
        emit(w, a.lib, run_sendrecv(b, int(n)), round_trips=int(n))
    elif w == "sendrecv_wf":
        emit(w, a.lib, run_sendrecv_wf(b, int(n)), round_trips=int(n))
    elif w == "recovery2000":
        if b.phase == "seed":
            seed_recovery(b, int(n))
        emit(w, a.lib, run_recovery(b, int(n), a.quick), n=int(n))
    elif w == "idle":
        metrics, method = run_idle(b, n, a.quick)
        emit(w, a.lib, metrics, seconds=n, method=method, queue_api=b.queue_api)


if __name__ == "__main__":
    main()
