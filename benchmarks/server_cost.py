"""What one thread's workflows and enqueues cost the PostgreSQL server, and the process (issue
11): seq0, seq1 and seq10 called back to back, one-thread ``Queue.enqueue`` (on a queue
whose 16 slots are held by gated workflows, as in ``workloads.py``'s ``enqueue``), and
``sendrecv``: ``workloads.py``'s round trip (start a workflow that waits in ``DBOS.recv``, then
``DBOS.send`` it a message and wait for its result), whose costs include the receiver's start
and whose ``p50_ms`` is the send-to-result latency alone.

    .venv/bin/python benchmarks/server_cost.py [--n 300] [--runs 3]
        [--workloads seq0,seq1,seq10,enqueue,sendrecv] [--tree PATH ...]

Per workflow (per enqueue): the wall-clock rate, the process's CPU (``os.times``) and the
server's: the CPU time of every backend of the benchmark database, from
``/proc/<pid>/schedstat`` (the server must run on this machine). On a shared, loaded machine
the rates swing with the load; the CPU per operation holds much better, which is what makes
two versions comparable there.

Each ``--tree`` is a checkout whose ``waypoint`` a fresh subprocess imports (default: this
one); the trees alternate within each run, each workload on a new database ``bench_cost``.
Prints one JSON line per measurement and a table of medians.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PG = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432").rstrip("/")
DB = os.environ.get("BENCH_DB", "bench_cost")


def child(workload: str, n: int) -> dict[str, Any]:
    """Run ``workload`` in this process (``waypoint`` from PYTHONPATH) and measure it."""
    import psycopg

    from waypoint import DBOS, Queue, SetWorkflowID

    with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {DB}")
    DBOS(config={"name": "bench-cost", "system_database_url": f"{PG}/{DB}"})
    gate = threading.Event()

    @DBOS.step()
    def step(i: int, x: int) -> int:
        return i + x

    @DBOS.workflow()
    def seq(x: int, nsteps: int) -> int:
        return sum(step(i, x) for i in range(nsteps))

    @DBOS.workflow()
    def gated(i: int) -> int:
        gate.wait(600)
        return step(i, 1)

    ready = threading.Event()
    latencies: list[float] = []

    @DBOS.workflow()
    def receiver() -> Any:
        ready.set()
        return DBOS.recv("t", timeout_seconds=60)

    queue = Queue("bench", worker_concurrency=16)
    DBOS.launch()
    if workload == "sendrecv":

        def op(i: int) -> Any:
            ready.clear()
            with SetWorkflowID(f"recv-{i}"):
                handle = DBOS.start_workflow(receiver)
            ready.wait(30)
            time.sleep(0.005)  # let it block in recv()
            began = time.perf_counter()
            DBOS.send(f"recv-{i}", i, "t")
            assert handle.get_result() == i
            latencies.append((time.perf_counter() - began) * 1000)
    elif workload == "enqueue":

        def op(i: int) -> Any:
            return queue.enqueue(gated, i)
    else:
        nsteps = int(workload[3:])

        def op(i: int) -> Any:
            return seq(i, nsteps)

    admin = psycopg.connect(f"{PG}/postgres", autocommit=True)

    def server_cpu() -> tuple[float, set[int]]:
        pids = {
            r[0]
            for r in admin.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", (DB,))
        }
        total = 0
        for pid in pids:
            try:
                total += int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])
            except OSError:
                pass
        return total / 1e9, pids

    warm = max(50, n // 20)
    for i in range(warm):
        op(i)
    latencies.clear()
    time.sleep(0.3)
    s0, pids0 = server_cpu()
    c0, t0 = os.times(), time.perf_counter()
    for i in range(warm, warm + n):
        op(i)
    elapsed = time.perf_counter() - t0
    c1, (s1, pids1) = os.times(), server_cpu()
    gate.set()
    DBOS.destroy()
    admin.close()
    return {
        "per_s": n / elapsed,
        "process_cpu_ms": (c1.user + c1.system - c0.user - c0.system) * 1000 / n,
        "server_cpu_ms": (s1 - s0) * 1000 / n,
        "backends_stable": pids0 == pids1,
        "load": os.getloadavg()[0],
        **({"p50_ms": statistics.median(latencies)} if latencies else {}),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workloads", default="seq0,seq1,seq10,enqueue")
    ap.add_argument("--tree", action="append", help="a checkout to import waypoint from")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(a.child, a.n)))
        return
    trees = [str(Path(t).resolve()) for t in (a.tree or [str(REPO)])]
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for run in range(a.runs):
        for workload in a.workloads.split(","):
            order = trees if run % 2 == 0 else trees[::-1]
            for tree in order:
                env = dict(os.environ, PYTHONPATH=tree)
                cmd = [sys.executable, __file__, "--child", workload, "--n", str(a.n)]
                out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
                rec = json.loads(out.stdout.strip().splitlines()[-1])
                print(json.dumps({"tree": tree, "workload": workload, **rec}), flush=True)
                results.setdefault((workload, tree), []).append(rec)
    print(f"\nmedians of {a.runs} runs, n={a.n}")
    print("| workload | tree | per s | process CPU ms | server CPU ms | p50 ms | load |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for (workload, tree), recs in results.items():
        med = {k: statistics.median(r[k] for r in recs) for k in recs[0] if k != "backends_stable"}
        p50 = f"{med['p50_ms']:.2f}" if "p50_ms" in med else ""
        print(
            f"| {workload} | {Path(tree).name} | {med['per_s']:.0f} | "
            f"{med['process_cpu_ms']:.2f} | {med['server_cpu_ms']:.2f} | {p50} | "
            f"{med['load']:.1f} |"
        )


if __name__ == "__main__":
    main()
