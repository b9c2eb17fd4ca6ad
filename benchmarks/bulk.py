"""Bulk enqueue: workflows stored per second by ``Queue.enqueue_many``, against the floor of
plain psycopg COPYing the same rows in the same run.

    .venv/bin/python benchmarks/bulk.py [--sizes 10000,100000] [--runs 3] [--profile]

One process launches Waypoint on a fresh database (``bench_bulk``) with a queue whose
workflows wait at a gate (so nothing runs while the clock is on) and, for each size, times
one ``enqueue_many`` call of that many workflows (from the call to the returned handles)
through each batch path of the PostgreSQL store (COPY via a staging table, and the one
JSON document smaller batches use), alternating with the floor: one text ``COPY ... FROM
STDIN`` of as many rows, the same columns, into ``floor_status`` (``LIKE
dbos.workflow_status INCLUDING ALL``: the same indexes), then a commit. Medians per size;
the ratio is what counts on a shared machine. ``--profile`` runs pyinstrument around one
``enqueue_many`` of the largest size.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from waypoint import DBOS, Queue
from waypoint.storage.postgres import store as pg_store

PG_BASE = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432")
DB = "bench_bulk"
gate = threading.Event()

FLOOR_COLUMNS = (
    "workflow_uuid, status, name, queue_name, inputs, serialization, owner_xid, "
    "application_version, application_name, created_at, updated_at, recovery_attempts, "
    "priority"
)


@DBOS.workflow()
def gated(i: int) -> int:
    gate.wait(600)
    return i


def reset() -> None:
    with psycopg.connect(f"{PG_BASE}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DB}"')


def floor(conn: psycopg.Connection[Any], n: int) -> float:
    """Seconds to COPY ``n`` rows like an enqueue's into a table like workflow_status."""
    now = int(time.time() * 1000)
    t = time.perf_counter()
    with conn.cursor() as cur, cur.copy(f"COPY floor_status ({FLOOR_COLUMNS}) FROM STDIN") as cp:
        for i in range(n):
            cp.write_row(
                (
                    str(uuid.uuid4()),
                    "ENQUEUED",
                    "__main__.gated",
                    "bulk",
                    json.dumps({"args": [i], "kwargs": {}}),
                    "json",
                    uuid.uuid4().hex,
                    "v1",
                    "bench",
                    now,
                    now,
                    0,
                    0,
                )
            )
    conn.commit()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--profile", action="store_true")
    a = ap.parse_args()
    sizes = [int(s) for s in a.sizes.split(",")]
    reset()
    queue = Queue("bulk", worker_concurrency=4)
    DBOS(config={"name": "bench", "system_database_url": f"{PG_BASE}/{DB}"})
    DBOS.launch()
    conn = psycopg.connect(f"{PG_BASE}/{DB}")
    conn.execute("CREATE TABLE floor_status (LIKE dbos.workflow_status INCLUDING ALL)")
    conn.commit()
    queue.enqueue_many(gated, [(i,) for i in range(1000)])  # warm-up
    floor(conn, 1000)
    variants = {"COPY": pg_store.COPY_FROM, "JSON": 10**9}  # the batch path, by its threshold
    results: dict[int, dict[str, list[float]]] = {
        n: {name: [] for name in (*variants, "floor")} for n in sizes
    }
    for _ in range(a.runs):
        for n in sizes:
            for name, threshold in variants.items():
                pg_store.COPY_FROM = threshold
                calls = [(i,) for i in range(n)]
                t = time.perf_counter()
                handles = queue.enqueue_many(gated, calls)
                results[n][name].append(n / (time.perf_counter() - t))
                assert len(handles) == n
            results[n]["floor"].append(n / floor(conn, n))
    pg_store.COPY_FROM = variants["COPY"]
    if a.profile:
        from pyinstrument import Profiler

        n = sizes[-1]
        calls = [(i,) for i in range(n)]
        with Profiler(interval=0.001) as prof:
            queue.enqueue_many(gated, calls)
        print(prof.output_text(unicode=False, color=False, show_all=False), file=sys.stderr)
    load = os.getloadavg()
    print(f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    print(
        "| batch | enqueue_many stored/s (COPY path) | (JSON path) | plain COPY floor rows/s "
        "| COPY path % of floor | COPY path runs |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for n in sizes:
        w = statistics.median(results[n]["COPY"])
        j = statistics.median(results[n]["JSON"])
        f = statistics.median(results[n]["floor"])
        each = ", ".join(f"{x:,.0f}" for x in results[n]["COPY"])
        print(f"| {n:,} | {w:,.0f} | {j:,.0f} | {f:,.0f} | {100 * w / f:.0f} % | {each} |")
    gate.set()
    conn.close()
    DBOS.destroy()


if __name__ == "__main__":
    main()
