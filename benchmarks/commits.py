"""Commits, round trips and WAL per Waypoint operation: the inputs of docs/scaling.md.

Usage:  .venv/bin/python benchmarks/commits.py [--n 200] [--url BASE] [--floor-seconds 5]
        [--no-floor] [--json] [--statements]

Each measurement runs a known number of operations in one Waypoint process and reads the
server's counters before and after:

- ``xacts``: ``pg_stat_database.xact_commit`` of the benchmark database (every committed
  transaction, read-only ones included: the load a server's commit path sees);
- ``writes``: transaction IDs assigned (``pg_snapshot_xmax(pg_current_snapshot())``), i.e.
  transactions that wrote something: the durable commits, each one a WAL flush unless
  PostgreSQL's own group commit merges several into one;
- ``stmts``: statements executed in the benchmark database (``pg_stat_statements`` calls,
  BEGIN and COMMIT included): the client's round trips;
- ``wal_kb``: WAL written (``pg_current_wal_lsn`` delta), and ``fsyncs``: WAL flushes
  (``pg_stat_wal.wal_sync``).

Per-operation figures are (delta - idle rate x elapsed) / operations, the idle rate measured
first with the process launched and doing nothing (heartbeats, pollers). Operations that
only exist inside a workflow (a step, recv, set_event, sleep) are measured as a workflow
that does that one thing, minus a workflow that does nothing; a dequeue is a queued
workflow minus a direct one minus what an enqueue costs over a start. Workflows with 0 and
10 steps are measured both one at a time (one thread) and with 32 threads, where Waypoint's
group commit puts several threads' starts, step checkpoints and outcomes in one commit.

By default the script starts its own PostgreSQL server (``tests/private_pg.py``, the same
binaries as the shared one, ``pg_stat_statements`` preloaded): WAL position, transaction IDs
and WAL flushes are cluster-wide counters, and on the shared server they would include
everyone else's work. ``--url`` measures an existing server instead (``stmts`` is then
``n/a`` unless it preloads ``pg_stat_statements``; the cluster-wide columns are only as
clean as that server is quiet).

The write floor (``--floor-seconds`` per thread count, ``--no-floor`` to skip) is plain
psycopg: 1, 4 and 16 threads, each with its own connection, doing autocommit single-row
INSERTs: how many durable commits per second this server sustains on this machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.private_pg, when run as benchmarks/commits.py

DBNAME = "bench_commits"
COUNTERS = ("xacts", "writes", "stmts", "wal_kb", "fsyncs")
# An idle backend reports its xact_commit and WAL flushes within PGSTAT_IDLE_INTERVAL (10 s).
SETTLE_SEC = 11.0
IDLE_SEC = 30.0


@dataclass
class Window:
    name: str
    ops: int
    delta: dict[str, float]
    seconds: float
    statements: dict[str, float]  # statement text -> calls in the window

    def per_op(self) -> dict[str, float]:
        return {k: v / self.ops for k, v in self.delta.items()}


class Counters:
    """Reads the server's counters from the ``postgres`` database (so not counting itself)."""

    def __init__(self, base: str) -> None:
        self.conn = psycopg.connect(f"{base}/postgres", autocommit=True)
        try:
            self.conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            self.conn.execute("SELECT 1 FROM pg_stat_statements LIMIT 1")
            self.has_pgss = True
        except psycopg.Error:
            self.has_pgss = False

    def reset_statements(self) -> None:
        if self.has_pgss:
            self.conn.execute("SELECT pg_stat_statements_reset()")

    def statements(self) -> dict[str, float]:
        """Calls so far of each statement run in the benchmark database."""
        if not self.has_pgss:
            return {}
        rows = self.conn.execute(
            "SELECT s.query, sum(s.calls) FROM pg_stat_statements s"
            " JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = %s GROUP BY s.query",
            (DBNAME,),
        ).fetchall()
        return {str(q): float(c) for q, c in rows}

    def read(self) -> dict[str, float]:
        self.conn.execute("SELECT pg_stat_clear_snapshot()")
        row = self.conn.execute(
            "SELECT d.xact_commit, pg_snapshot_xmax(pg_current_snapshot())::text::bigint,"
            " pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0'), w.wal_sync"
            " FROM pg_stat_database d, pg_stat_wal w WHERE d.datname = %s",
            (DBNAME,),
        ).fetchone()
        assert row is not None, f"no database {DBNAME}"
        stmts = float("nan")
        if self.has_pgss:
            got = self.conn.execute(
                "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements s"
                " JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = %s",
                (DBNAME,),
            ).fetchone()
            stmts = float(got[0]) if got else 0.0
        return {
            "xacts": float(row[0]),
            "writes": float(row[1]),
            "stmts": stmts,
            "wal_kb": float(row[2]) / 1024,
            "fsyncs": float(row[3]),
        }


class Meter:
    def __init__(self, counters: Counters) -> None:
        self.counters = counters
        self.idle_rate = dict.fromkeys(COUNTERS, 0.0)
        self.windows: dict[str, Window] = {}

    def measure_idle(self, seconds: float) -> None:
        time.sleep(SETTLE_SEC)
        before, t0 = self.counters.read(), time.monotonic()
        time.sleep(seconds)
        after, elapsed = self.counters.read(), time.monotonic() - t0
        self.idle_rate = {k: (after[k] - before[k]) / elapsed for k in COUNTERS}
        rates = ", ".join(f"{k} {v:.2f}/s" for k, v in self.idle_rate.items())
        print(f"  idle: {rates}", file=sys.stderr, flush=True)

    def print_statements(self) -> None:
        """Each window's statements, per operation (those run at least once per 20)."""
        for w in self.windows.values():
            print(f"\n{w.name} ({w.ops} operations):")
            for query, calls in sorted(w.statements.items(), key=lambda qc: -qc[1]):
                if calls / w.ops >= 0.05:
                    text = " ".join(query.split())
                    print(f"  {calls / w.ops:6.2f}  {text[:150]}")

    def window(self, name: str, ops: int, run: Callable[[], None]) -> Window:
        """Run ``ops`` operations; the counters are read after the previous window settled."""
        before, t0 = self.counters.read(), time.monotonic()
        calls = self.counters.statements()
        run()
        busy = time.monotonic() - t0
        time.sleep(SETTLE_SEC)
        after, elapsed = self.counters.read(), time.monotonic() - t0
        delta = {k: after[k] - before[k] - self.idle_rate[k] * elapsed for k in COUNTERS}
        now = self.counters.statements()
        statements = {q: c - calls.get(q, 0.0) for q, c in now.items() if c > calls.get(q, 0.0)}
        w = Window(name, ops, delta, busy, statements)
        self.windows[name] = w
        print(f"  {name}: {ops} ops in {busy:.1f}s", file=sys.stderr, flush=True)
        return w


def repeat(n: int, operation: Callable[[], object]) -> Callable[[], None]:
    """A window's body: ``operation`` ``n`` times, one after the other."""

    def run() -> None:
        for _ in range(n):
            operation()

    return run


def minus(a: dict[str, float], *bs: dict[str, float]) -> dict[str, float]:
    return {k: a[k] - sum(b[k] for b in bs) for k in a}


def measure(base: str, n: int, show_statements: bool = False) -> dict[str, dict[str, float]]:
    """Run every window against ``base``; per-operation figures by operation
    (``show_statements``: also print each window's statements, to stdout)."""
    from waypoint import DBOS, Queue, SetWorkflowID

    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DBNAME} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {DBNAME}")
    counters = Counters(base)
    meter = Meter(counters)
    gate = threading.Event()
    entered = threading.Semaphore(0)

    @DBOS.step()
    def step(i: int) -> int:
        return i + 1

    @DBOS.workflow()
    def steps_wf(k: int) -> int:
        return sum(step(i) for i in range(k))

    @DBOS.workflow()
    def gated_wf() -> None:
        entered.release()
        gate.wait(600)

    @DBOS.workflow()
    def recv_wf() -> Any:
        return DBOS.recv("t", timeout_seconds=60)

    @DBOS.workflow()
    def send_wf(destination: str) -> None:
        DBOS.send(destination, "m", "sink")

    @DBOS.workflow()
    def event_wf() -> None:
        DBOS.set_event("k", "v")

    @DBOS.workflow()
    def sleep_wf() -> None:
        DBOS.sleep(0.001)

    queue = Queue("commits", worker_concurrency=16)
    parked = Queue("parked")  # not listened to: what is enqueued there stays ENQUEUED
    DBOS(config={"name": "commits", "system_database_url": f"{base}/{DBNAME}"})
    DBOS.listen_queues([queue])
    DBOS.launch()
    try:
        for _ in range(20):  # warm up: pools, prepared plans, first-touch pages
            steps_wf(2)
            queue.enqueue(steps_wf, 0).get_result()
        sink = DBOS.start_workflow(steps_wf, 0)
        sink.get_result()
        counters.reset_statements()
        print("measuring (idle first)", file=sys.stderr, flush=True)
        meter.measure_idle(IDLE_SEC)

        def direct(k: int) -> Callable[[], None]:
            return repeat(n, lambda: steps_wf(k))

        wf0 = meter.window("workflow, 0 steps", n, direct(0)).per_op()
        wf1 = meter.window("workflow, 1 step", n, direct(1)).per_op()
        wf10 = meter.window("workflow, 10 steps", n, direct(10)).per_op()

        def concurrent(k: int) -> Callable[[], None]:
            def run() -> None:
                threads = [
                    threading.Thread(target=repeat(max(1, n // 32), lambda: steps_wf(k)))
                    for _ in range(32)
                ]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()

            return run

        each = 32 * max(1, n // 32)
        wf0c = meter.window("workflow, 0 steps, 32 threads", each, concurrent(0)).per_op()
        wf10c = meter.window("workflow, 10 steps, 32 threads", each, concurrent(10)).per_op()

        handles: list[Any] = []

        def start_gated() -> None:
            for _ in range(n):
                handles.append(DBOS.start_workflow(gated_wf))
            for _ in range(n):
                entered.acquire(timeout=600)

        def finish_gated() -> None:
            gate.set()
            for h in handles:
                h.get_result()

        started = meter.window("start (to the first line of the body)", n, start_gated).per_op()
        completed = meter.window("completion", n, finish_gated).per_op()

        enq = meter.window("enqueue", n, repeat(n, lambda: parked.enqueue(steps_wf, 0))).per_op()

        def queued_burst() -> None:
            hs = [queue.enqueue(steps_wf, 0) for _ in range(n)]
            for h in hs:
                h.get_result()

        burst = meter.window("queued workflow, 0 steps, burst", n, queued_burst).per_op()
        single = meter.window(
            "queued workflow, 0 steps, one at a time",
            n,
            repeat(n, lambda: queue.enqueue(steps_wf, 0).get_result()),
        ).per_op()

        send_out = meter.window(
            "send (outside a workflow)",
            n,
            repeat(n, lambda: DBOS.send(sink.workflow_id, "m", "sink")),
        ).per_op()
        send_in = meter.window(
            "workflow that sends", n, repeat(n, lambda: send_wf(sink.workflow_id))
        ).per_op()

        def recv_pairs() -> None:
            for i in range(n):
                with SetWorkflowID(f"recv-{i}"):
                    h = DBOS.start_workflow(recv_wf)
                DBOS.send(h.workflow_id, i, "t")
                h.get_result()

        pair = meter.window("workflow that receives (+ the send)", n, recv_pairs).per_op()
        event = meter.window("workflow that sets an event", n, repeat(n, event_wf)).per_op()
        slept = meter.window("workflow that sleeps", n, repeat(n, sleep_wf)).per_op()
    finally:
        DBOS.destroy()
        counters.conn.close()
    if show_statements:
        meter.print_statements()

    return {
        "workflow, 0 steps": wf0,
        "workflow, 1 step": wf1,
        "workflow, 10 steps": wf10,
        "step (1 thread)": {k: v / 10 for k, v in minus(wf10, wf0).items()},
        "workflow, 0 steps, 32 threads": wf0c,
        "workflow, 10 steps, 32 threads": wf10c,
        "step (32 threads)": {k: v / 10 for k, v in minus(wf10c, wf0c).items()},
        "start": started,
        "completion": minus(wf0, started),
        f"completion, {n} at once": completed,
        "enqueue": enq,
        "dequeue": minus(single, wf0, minus(enq, started)),
        "queued workflow, 0 steps": single,
        f"queued workflow, 0 steps, {n} at once": burst,
        "send (outside a workflow)": send_out,
        "send (in a workflow)": minus(send_in, wf0),
        "recv": minus(pair, wf0, send_out),
        "set_event": minus(event, wf0),
        "sleep": minus(slept, wf0),
    }


def floor(base: str, seconds: float) -> dict[int, dict[str, float]]:
    """Plain psycopg autocommit INSERTs with 1, 4 and 16 threads: commits/s and WAL flushes/s."""
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS bench_floor WITH (FORCE)")
        conn.execute("CREATE DATABASE bench_floor")
    with psycopg.connect(f"{base}/bench_floor", autocommit=True) as conn:
        conn.execute("CREATE TABLE t (id bigserial PRIMARY KEY, v int, at timestamptz)")
    out: dict[int, dict[str, float]] = {}
    for threads in (1, 4, 16):
        stop = threading.Event()
        counts = [0] * threads

        with wal_syncs(base) as syncs:
            workers = [
                threading.Thread(target=insert_loop, args=(base, i, stop, counts))
                for i in range(threads)
            ]
            t0 = time.monotonic()
            for w in workers:
                w.start()
            time.sleep(seconds)
            stop.set()
            for w in workers:
                w.join()
            elapsed = time.monotonic() - t0
        out[threads] = {
            "commits_per_s": sum(counts) / elapsed,
            "fsyncs_per_s": syncs[0] / elapsed,
        }
        print(f"  floor, {threads} threads: {out[threads]}", file=sys.stderr, flush=True)
    return out


def insert_loop(base: str, i: int, stop: threading.Event, counts: list[int]) -> None:
    """One floor thread: autocommit single-row INSERTs on its own connection until ``stop``."""
    with psycopg.connect(f"{base}/bench_floor", autocommit=True) as c:
        while not stop.is_set():
            c.execute("INSERT INTO t (v, at) VALUES (%s, now())", (i,))
            counts[i] += 1


@contextmanager
def wal_syncs(base: str) -> Iterator[list[float]]:
    """The WAL flushes (cluster-wide) during the block, in the yielded list once it ends."""
    box = [0.0]
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:

        def read() -> float:
            conn.execute("SELECT pg_stat_clear_snapshot()")
            row = conn.execute("SELECT wal_sync FROM pg_stat_wal").fetchone()
            return float(row[0]) if row else 0.0

        before = read()
        yield box
        time.sleep(SETTLE_SEC)
        box[0] = read() - before


def table(results: dict[str, dict[str, float]]) -> str:
    lines = [
        "| operation | writes (commits) | transactions | statements | WAL kB | WAL flushes |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, r in results.items():
        cells = [f"{r[k]:.2f}" if r[k] == r[k] else "n/a" for k in COUNTERS]
        lines.append(f"| {name} | {cells[1]} | {cells[0]} | {cells[2]} | {cells[3]} | {cells[4]} |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="operations per window")
    parser.add_argument("--url", help="an existing server's base URL (default: a private one)")
    parser.add_argument("--floor-seconds", type=float, default=5.0)
    parser.add_argument("--no-floor", action="store_true")
    parser.add_argument("--floor-runs", type=int, default=1, help="floor runs (median shown)")
    parser.add_argument("--no-ops", action="store_true", help="only the floor")
    parser.add_argument("--json", action="store_true", help="one JSON object instead of tables")
    parser.add_argument(
        "--statements", action="store_true", help="also list each window's statements per op"
    )
    args = parser.parse_args(argv)
    if args.n < 32:
        parser.error("--n must be at least 32 (the concurrent window runs 32 threads)")

    def run(base: str, version: str) -> int:
        results = {} if args.no_ops else measure(base, args.n, args.statements)
        floors: dict[int, dict[str, float]] = {}
        if not args.no_floor:
            runs = [floor(base, args.floor_seconds) for _ in range(args.floor_runs)]
            floors = {
                t: {k: statistics.median(r[t][k] for r in runs) for k in runs[0][t]}
                for t in runs[0]
            }
        if args.json:
            print(json.dumps({"server": version, "per_op": results, "floor": floors}))
            return 0
        print(f"PostgreSQL {version}, {args.n} operations per window\n")
        if results:
            print(table(results))
        if floors:
            print("\n| threads | autocommit INSERTs/s | WAL flushes/s |\n| ---: | ---: | ---: |")
            for threads, f in floors.items():
                print(f"| {threads} | {f['commits_per_s']:.0f} | {f['fsyncs_per_s']:.0f} |")
        return 0

    if args.url:
        with psycopg.connect(f"{args.url}/postgres") as conn:
            version = str(conn.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
        return run(args.url.rstrip("/"), version)
    from tests.private_pg import private_postgres

    conf = {"shared_preload_libraries": "pg_stat_statements", "max_connections": "300"}
    with private_postgres(conf=conf) as server:
        return run(server.base_url(), str(server.sql("SHOW server_version")[0][0]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
