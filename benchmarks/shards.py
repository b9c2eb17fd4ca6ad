"""Steps/s and queued workflows/s on a system database sharded over 1, 2 and 3 servers.

Usage:  .venv/bin/python benchmarks/shards.py [--shards 0,1,2,3] [--runs 3]
        [--workloads steps,queued] [--servers URL,URL,URL] [--seconds 10] [--n 3000]

The servers are the sharded test mode's three (``tests/shard_servers.py``: the shared one on
5432 and the two on 5433/5434; ``python -m tests.shard_servers start`` first), or
``--servers``. A run with k shards configures ``system_database_shards`` with the first k
servers' ``bench_shards`` database (dropped and recreated on every server before each run),
in a fresh process; 0 shards is the first server's database as a plain
``system_database_url``, the baseline for what the sharded store itself costs. Workloads:

- ``steps``: 32 threads each call a 10-step workflow directly, in a loop, for ``--seconds``.
  ``steps_per_s`` counts completed workflows x 10 over the wall time.
- ``queued``: ``QUEUES`` in-code queues (worker_concurrency 16 each; a queue lives on one
  shard, its home, so one queue alone would not spread); 4 producer threads enqueue ``--n``
  one-step workflows round-robin over them; ``wf_per_s`` = n / (last completion - first
  enqueue).

Each result also says where the time went: ``client_cpu`` is the benchmark process's CPU
time over the wall time (1.0 = one core busy; Python runs one thread at a time, so a value
near 1 means the client is the limit), ``db_cpu`` the CPU time of the server backends serving
the benchmark database, summed over the shards (from /proc, so the servers must be local),
and ``load`` the machine's 1-minute load average at the end. The machine has 2 cores shared
by the client, every shard and whatever else runs: past 2.0 in client_cpu + db_cpu, adding
shards cannot help.

The table prints the median of ``--runs`` runs of each (shard count, workload), with the
ratio to the first shard count listed. If ``system_database_shards`` is not supported by the
installed Waypoint, the script stops with that message before measuring anything.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.append(str(ROOT))  # tests.shard_servers, when run as benchmarks/shards.py

DBNAME = "bench_shards"
QUEUES = 6
THREADS = 32
PRODUCERS = 4
STEPS = 10
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ----------------------------------------------------------------- the child ----
def backend_cpu(bases: list[str]) -> float:
    """CPU seconds used so far by the backends connected to the benchmark database."""
    total = 0.0
    for base in bases:
        with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
            pids = [
                int(r[0])
                for r in conn.execute(
                    "SELECT pid FROM pg_stat_activity WHERE datname = %s", (DBNAME,)
                ).fetchall()
            ]
        for pid in pids:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # ended, or not on this machine
            total += (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime
    return total


def client_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def child(bases: list[str], workload: str, seconds: float, n: int, plain: bool) -> dict[str, Any]:
    from waypoint import DBOS, Queue
    from waypoint.error import DBOSInitializationError

    @DBOS.step()
    def step(i: int) -> int:
        return i + 1

    @DBOS.workflow()
    def steps_wf(k: int) -> int:
        return sum(step(i) for i in range(k))

    queues = [Queue(f"bench{i}", worker_concurrency=16) for i in range(QUEUES)]
    config: dict[str, Any] = {"name": "bench-shards"}
    if plain:  # not sharded: the baseline that the sharded store's own cost is measured against
        config["system_database_url"] = f"{bases[0]}/{DBNAME}"
    else:
        config["system_database_shards"] = [f"{b}/{DBNAME}" for b in bases]
    try:
        DBOS(config=config)  # type: ignore[arg-type]
        DBOS.launch()
    except DBOSInitializationError as e:
        if "system_database_shards" in str(e):
            raise SystemExit(
                "this Waypoint does not support system_database_shards yet (sharding has not "
                f"landed): {e}"
            ) from e
        raise
    try:
        for _ in range(20):  # warm up
            steps_wf(STEPS)
            for q in queues:
                q.enqueue(steps_wf, 1).get_result()
        cpu0, db0, t0 = client_cpu(), backend_cpu(bases), time.monotonic()
        if workload == "steps":
            done = [0] * THREADS
            stop = threading.Event()

            def caller(i: int) -> None:
                while not stop.is_set():
                    steps_wf(STEPS)
                    done[i] += 1

            threads = [threading.Thread(target=caller, args=(i,)) for i in range(THREADS)]
            for t in threads:
                t.start()
            time.sleep(seconds)
            stop.set()
            for t in threads:
                t.join()
            wall = time.monotonic() - t0
            metrics = {"steps_per_s": sum(done) * STEPS / wall, "wf_per_s": sum(done) / wall}
        else:
            handles: list[list[Any]] = [[] for _ in range(PRODUCERS)]

            def producer(p: int) -> None:
                for i in range(p, n, PRODUCERS):
                    handles[p].append(queues[i % QUEUES].enqueue(steps_wf, 1))

            producers = [threading.Thread(target=producer, args=(p,)) for p in range(PRODUCERS)]
            for t in producers:
                t.start()
            for t in producers:
                t.join()
            enqueued = time.monotonic() - t0
            for hs in handles:
                for h in hs:
                    h.get_result()
            wall = time.monotonic() - t0
            metrics = {"wf_per_s": n / wall, "enqueue_per_s": n / enqueued}
        metrics["client_cpu"] = (client_cpu() - cpu0) / wall
        metrics["db_cpu"] = (backend_cpu(bases) - db0) / wall
        metrics["load"] = os.getloadavg()[0]
        return metrics
    finally:
        DBOS.destroy()


# ---------------------------------------------------------------- the parent ----
def reset(bases: list[str]) -> None:
    for base in bases:
        with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {DBNAME} WITH (FORCE)")
            conn.execute(f"CREATE DATABASE {DBNAME}")


def run_one(shards: int, bases: list[str], workload: str, seconds: float, n: int) -> dict[str, Any]:
    """One run in a fresh process; ``shards`` 0 is the first server, not sharded."""
    bases = bases[: max(1, shards)]
    reset(bases)
    cmd = [
        sys.executable, __file__, "--child", workload, "--servers", ",".join(bases),
        "--seconds", str(seconds), "--n", str(n), *(["--plain"] if shards == 0 else []),
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=1800)
    if done.returncode != 0:
        raise SystemExit(f"{workload} on {shards} shard(s) failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--shards", default="1,2,3", help="shard counts, 0 = not sharded (default %(default)s)"
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workloads", default="steps,queued")
    parser.add_argument("--servers", help="comma list of server base URLs (default: the three)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of a steps run")
    parser.add_argument("--n", type=int, default=3000, help="workflows of a queued run")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--plain", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.servers:
        bases = [u.rstrip("/") for u in args.servers.split(",") if u]
    else:
        from tests import shard_servers

        bases = shard_servers.urls(shard_servers.ports_from_env())
    if args.child:
        print(json.dumps(child(bases, args.child, args.seconds, args.n, args.plain)), flush=True)
        return 0
    counts = [int(k) for k in args.shards.split(",")]
    if max(counts) > len(bases):
        parser.error(f"{max(counts)} shards asked for, {len(bases)} servers given")
    workloads = [w for w in args.workloads.split(",") if w]
    for w in workloads:
        if w not in ("steps", "queued"):
            parser.error(f"unknown workload {w!r} (steps, queued)")
    results: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for run in range(args.runs):  # interleaved, so drift in the machine's load hits all alike
        for k in counts:
            for w in workloads:
                r = run_one(k, bases, w, args.seconds, args.n)
                results.setdefault((k, w), []).append(r)
                print(json.dumps({"run": run, "shards": k, "workload": w, **r}), flush=True)
    head = "| workload | shards | per second (median) | vs {} | client CPU | DB CPU | load |"
    print("\n" + head.format(counts[0]))
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for w in workloads:
        metric = "steps_per_s" if w == "steps" else "wf_per_s"
        one = None
        for k in counts:
            rs = results[(k, w)]
            med = statistics.median(r[metric] for r in rs)
            one = med if one is None else one
            cells = [statistics.median(r[c] for r in rs) for c in ("client_cpu", "db_cpu", "load")]
            print(
                f"| {w} ({metric}) | {k} | {med:.0f} | {med / one:.2f} | {cells[0]:.2f} "
                f"| {cells[1]:.2f} | {cells[2]:.1f} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
