"""What the indexes of one schema version (``--version``: 11, the listing indexes, by
default) cost the write path: enqueue, claim, step checkpoint and completion, one workflow at
a time, and a bulk enqueue, on a database with them and on one without (the same schema with
that version's indexes dropped), alternating operation by operation so the machine's load
hits both alike.

    .venv/bin/python benchmarks/index_cost.py [--version 11] [--n 300] [--bulk 10000] [--runs 3]

Prints the median milliseconds per operation on each database and their ratio.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import time
import uuid
from functools import partial
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bigtables import EXECUTOR, new_workflow

from waypoint.storage import migrations
from waypoint.storage.protocol import ClaimRequest, Completion, StepRecord
from waypoint.storage.registry import open_url

PG_BASE = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432")


def version_indexes(version: int) -> list[str]:
    """The indexes migration ``version`` creates (built CONCURRENTLY or not)."""
    sql = next(m.sql for m in migrations.load("postgresql") if m.version == version)
    return re.findall(r"CREATE INDEX (?:CONCURRENTLY )?IF NOT EXISTS (\w+)", sql)


def fresh(name: str, drop: list[str]) -> None:
    with psycopg.connect(f"{PG_BASE}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    store = open_url(f"{PG_BASE}/{name}", application_name="bench-build")
    store.migrate()
    store.close()
    with psycopg.connect(f"{PG_BASE}/{name}", autocommit=True) as conn:
        for index in drop:
            conn.execute(f"DROP INDEX dbos.{index}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--version", type=int, default=11, help="whose indexes to compare")
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--bulk", type=int, default=10000)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    dbs = {"without": "bench_idx_without", "with": "bench_idx_with"}
    dropped = version_indexes(a.version)
    assert dropped, f"migration {a.version} creates no index"
    fresh(dbs["without"], dropped)
    fresh(dbs["with"], [])
    stores = {k: open_url(f"{PG_BASE}/{v}", application_name="bench") for k, v in dbs.items()}
    for s in stores.values():
        s.open()
    times: dict[str, dict[str, list[float]]] = {k: {} for k in stores}

    def timed(kind: str, label: str, fn: object) -> object:
        t = time.perf_counter()
        out = fn()  # type: ignore[operator]
        times[kind].setdefault(label, []).append((time.perf_counter() - t) * 1000)
        return out

    for run in range(a.runs):
        order = list(stores.items())
        for kind, store in order[:: 1 if run % 2 == 0 else -1]:  # a bulk enqueue first, each
            # database first in turn (the second writes while the first's WAL is flushed)
            batch = [new_workflow("ENQUEUED", "backlog") for _ in range(a.bulk)]
            timed(kind, f"bulk enqueue of {a.bulk:,}", partial(store.init_workflows, batch))
        for _ in range(a.n):
            for kind, store in stores.items():
                wf = new_workflow("ENQUEUED", "work")
                timed(kind, "enqueue", partial(store.init_workflow, wf, None))
                token = uuid.uuid4().hex
                req = ClaimRequest("work", 1, EXECUTOR, "v-bench", "bench", token)
                rows = timed(kind, "claim", partial(store.claim, req, int(time.time() * 1000)))
                row = rows[0]  # type: ignore[index]
                now = int(time.time() * 1000)
                rec = StepRecord(
                    row.workflow_id, 1, "s", '"x"', None, "json", row.owner_xid, now, now
                )
                timed(kind, "step checkpoint", partial(store.record_step, rec))
                done = Completion(row.workflow_id, row.owner_xid, "SUCCESS", '"ok"', None, now)
                timed(kind, "complete", partial(store.complete_workflow, done))
    for s in stores.values():
        s.close()
    load = os.getloadavg()
    print(f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}; n={a.n} x {a.runs} runs")
    print(f"| operation | without v{a.version} indexes (ms) | with (ms) | with / without |")
    print("| --- | --- | --- | --- |")
    for label in times["with"]:
        w = statistics.median(times["with"][label])
        wo = statistics.median(times["without"][label])
        print(f"| {label} | {wo:.2f} | {w:.2f} | {w / wo:.2f} |")


if __name__ == "__main__":
    main()
