"""How fast one thread can enqueue at all with DBOS's table (issue 11): the one-connection
autocommit INSERT loop of ``workloads.py``'s ``floor``, but writing the row an enqueue writes
into ``workflow_status``, with the indexes it really has.

    .venv/bin/python benchmarks/enqueue_floor.py [--seconds 5] [--runs 3] [--no-enqueue]
        [--flush]

Variants, alternating within each run, each on its own database (``bench_efloor_<variant>``
plus ``BENCH_DB_SUFFIX``), one connection, autocommit, one durable commit per row:

- ``plain``: the floor of ``workloads.py`` (``t``: a bigserial key and two columns).
- ``ws_pkey``: an enqueue's row (its 13 non-null columns, a plain INSERT) into
  ``workflow_status`` with its primary key only.
- ``ws_dbos``: the same with DBOS's own 15 indexes (Waypoint's listing indexes dropped).
- ``ws_all``: the same with every index of Waypoint's schema (the table as it is).
- ``ws_store``: the same table and row through the store's statement exactly: every column
  a parameter, ``ON CONFLICT (workflow_uuid) DO NOTHING``, planned per execution as in the
  store's sessions (``plan_cache_mode = force_custom_plan``).
- ``enqueue``: ``Queue.enqueue`` of Waypoint in this process, the queue's 16 slots held by
  gated workflows (``workloads.py``'s ``enqueue``).
- with ``--flush`` also ``plain_nowait`` and ``ws_all_nowait``: ``plain`` and ``ws_all`` with
  ``synchronous_commit = off`` in their sessions, which shows what waiting for the WAL flush
  costs. Not durable: a measurement only, never a floor.

Per variant: rows per second, the median over the runs as a share of ``plain``, and the
client's and the server's CPU per row (the server's from ``/proc/<pid>/schedstat`` of the
database's backends; the server must run on this machine, else it is left out).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from waypoint.storage.postgres.store import PostgresStore
from waypoint.storage.sql_base import INIT_COLUMNS
from waypoint.storage.url import DatabaseTarget

PG = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432").rstrip("/")
SUFFIX = os.environ.get("BENCH_DB_SUFFIX", "")
WS = "dbos.workflow_status"

# The indexes DBOS itself creates on workflow_status (dbos 2.x/3.x); the rest are Waypoint's
# listing indexes (schema versions 10, 11, 13, 14).
DBOS_INDEXES = {
    "workflow_status_pkey",
    "workflow_status_created_at_index",
    "idx_workflow_status_pending",
    "idx_workflow_status_failed",
    "idx_workflow_status_in_flight",
    "idx_workflow_status_partition_dequeue_v2",
    "idx_workflow_status_rate_limited",
    "idx_workflow_status_delayed",
    "idx_workflow_status_completed_at",
    "idx_workflow_status_started_at",
    "idx_workflow_status_forked_from",
    "idx_workflow_status_parent_workflow_id",
    "idx_workflow_status_schedule_name",
    "idx_workflow_status_attributes",
    "uq_workflow_status_dedup_id",
}
VARIANTS = ("plain", "ws_pkey", "ws_dbos", "ws_all", "ws_store", "enqueue")
NOWAIT = ("plain_nowait", "ws_all_nowait")
INPUTS = "gAWVGwAAAAAAAAB9lCiMBGFyZ3OUSwCFlIwGa3dhcmdzlH2UdS4="  # an enqueue's pickled (i,)


def db_name(variant: str) -> str:
    return f"bench_efloor_{variant.removesuffix('_nowait')}{SUFFIX}"


def fresh(name: str) -> str:
    with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{PG}/{name}"


def build(variant: str) -> str:
    """The variant's database: Waypoint's schema, with the indexes the variant keeps."""
    name = db_name(variant)
    url = fresh(name)
    if variant == "plain":
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE t (id bigserial PRIMARY KEY, k int NOT NULL, v text)")
        return url
    PostgresStore(DatabaseTarget("postgresql", url, name)).migrate()
    keep = {"ws_pkey": {"workflow_status_pkey"}, "ws_dbos": DBOS_INDEXES}.get(variant)
    if keep is not None:
        with psycopg.connect(url, autocommit=True) as conn:
            names = conn.execute(
                "SELECT indexname FROM pg_indexes WHERE schemaname = 'dbos' "
                "AND tablename = 'workflow_status'"
            ).fetchall()
            for (index,) in names:
                if index not in keep:
                    conn.execute(f"DROP INDEX dbos.{index}")
    return url


def enqueue_row() -> dict[str, Any]:
    """The non-null columns of the row ``Queue.enqueue`` writes for ``gated(i)``."""
    now = int(time.time() * 1000)
    return {
        "workflow_uuid": uuid.uuid4().hex,
        "status": "ENQUEUED",
        "name": "gated",
        "inputs": INPUTS,
        "serialization": "py_pickle",
        "owner_xid": uuid.uuid4().hex,
        "executor_id": "local",
        "application_version": "e5369b06aa889189395fc8438fef9fbe",
        "application_name": "bench",
        "created_at": now,
        "updated_at": now,
        "queue_name": "bench",
        "priority": 0,
        "recovery_attempts": 0,
    }


ROW_COLUMNS = tuple(enqueue_row())
PLAIN_INSERT = (
    f"INSERT INTO {WS} ({', '.join(ROW_COLUMNS)}) VALUES ({', '.join(['%s'] * len(ROW_COLUMNS))})"
)
STORE_INSERT = (
    f"INSERT INTO {WS} ({', '.join(INIT_COLUMNS)}) VALUES "
    f"({', '.join('%s::jsonb' if c == 'attributes' else '%s' for c in INIT_COLUMNS)}) "
    "ON CONFLICT (workflow_uuid) DO NOTHING"
)


def server_cpu(admin: psycopg.Connection[Any], db: str) -> Optional[float]:
    total = 0
    for (pid,) in admin.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", (db,)):
        try:
            total += int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])
        except OSError:
            return None
    return total / 1e9


def timed(
    body: Callable[[int], None], seconds: float, admin: psycopg.Connection[Any], db: str
) -> dict[str, Optional[float]]:
    for i in range(200):  # warm-up (psycopg prepares from the fifth execution)
        body(i)
    s0, c0 = server_cpu(admin, db), time.process_time()
    count, t0 = 0, time.perf_counter()
    deadline = t0 + seconds
    while time.perf_counter() < deadline:
        body(count)
        count += 1
    elapsed = time.perf_counter() - t0
    c1, s1 = time.process_time(), server_cpu(admin, db)
    return {
        "per_s": count / elapsed,
        "client_ms": (c1 - c0) * 1000 / count,
        "server_ms": None if s0 is None or s1 is None else (s1 - s0) * 1000 / count,
    }


class Enqueuer:
    """Waypoint launched in this process on ``bench_efloor_enqueue``, as workloads.py's
    ``enqueue`` runs it."""

    def __init__(self) -> None:
        from waypoint import DBOS, Queue

        url = fresh(db_name("enqueue"))
        self.DBOS = DBOS
        DBOS(config={"name": "bench-efloor", "system_database_url": url})
        self.gate = threading.Event()
        gate = self.gate

        @DBOS.step()
        def step(i: int) -> int:
            return i

        @DBOS.workflow()
        def gated(i: int) -> int:
            gate.wait(600)
            return step(i)

        self.gated = gated
        self.queue = Queue("bench", worker_concurrency=16)
        DBOS.launch()

    def body(self, i: int) -> None:
        self.queue.enqueue(self.gated, i)

    def close(self) -> None:
        self.gate.set()
        self.DBOS.destroy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=5.0, help="per variant and run")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--no-enqueue", action="store_true", help="leave Queue.enqueue out")
    ap.add_argument("--flush", action="store_true", help="also without waiting for the flush")
    a = ap.parse_args()
    variants = [v for v in VARIANTS if not (a.no_enqueue and v == "enqueue")]
    variants += list(NOWAIT) if a.flush else []
    conns: dict[str, psycopg.Connection[Any]] = {}
    urls: dict[str, str] = {}
    for v in variants:
        if v == "enqueue":
            continue
        base = v.removesuffix("_nowait")  # the same database as its durable twin
        if base not in urls:
            urls[base] = build(base)
        conns[v] = psycopg.connect(urls[base], autocommit=True)
        if v.endswith("_nowait"):
            conns[v].execute("SET synchronous_commit = off")
        if not v.startswith("plain"):
            # Waypoint's wake-up triggers skip Waypoint's sessions (schema version 7): without
            # this, each row would NOTIFY in its own commit, as another writer's does.
            conns[v].execute("SET waypoint.session = 'on'")
    # The store's statement, in a session set up as the store's are.
    conns["ws_store"].execute("SET plan_cache_mode = force_custom_plan")
    enqueuer = Enqueuer() if "enqueue" in variants else None
    admin = psycopg.connect(f"{PG}/postgres", autocommit=True)

    def body_of(v: str) -> Callable[[int], None]:
        if v == "enqueue":
            assert enqueuer is not None
            return enqueuer.body
        cur = conns[v].cursor()

        def plain(i: int) -> None:
            cur.execute("INSERT INTO t (k, v) VALUES (%s, %s)", (i, "x"))

        def store(i: int) -> None:
            row = dict.fromkeys(INIT_COLUMNS) | enqueue_row()
            row["is_debounced"] = False
            cur.execute(STORE_INSERT, [row[c] for c in INIT_COLUMNS])

        def row(i: int) -> None:
            cur.execute(PLAIN_INSERT, tuple(enqueue_row().values()))

        return {"plain": plain, "plain_nowait": plain, "ws_store": store}.get(v, row)

    results: dict[str, list[dict[str, Optional[float]]]] = {v: [] for v in variants}
    loads: list[float] = []
    for run in range(a.runs):
        order = variants if run % 2 == 0 else variants[::-1]
        for v in order:
            rec = timed(body_of(v), a.seconds, admin, db_name(v))
            results[v].append(rec)
            loads.append(os.getloadavg()[0])
            shown = {k: round(x, 3) for k, x in rec.items() if x is not None}
            print(f"run {run + 1} {v:9s} {shown} load {loads[-1]:.1f}", flush=True)
    if enqueuer is not None:
        enqueuer.close()

    def med(v: str, key: str) -> Optional[float]:
        vals = [r[key] for r in results[v] if r[key] is not None]
        return statistics.median(vals) if vals else None

    plain = med("plain", "per_s") or 1.0
    print(
        f"\nmedians of {a.runs} runs of {a.seconds:g} s, load average {min(loads):.1f}-"
        f"{max(loads):.1f} (1 min)"
    )
    print("| variant | rows/s | % of plain | client CPU ms/row | server CPU ms/row |")
    print("| --- | --- | --- | --- | --- |")
    for v in variants:
        rate = med(v, "per_s") or 0.0
        server = med(v, "server_ms")
        print(
            f"| {v} | {rate:,.0f} | {100 * rate / plain:.0f} % | {med(v, 'client_ms'):.3f} | "
            f"{'n/a' if server is None else f'{server:.3f}'} |"
        )
    for conn in conns.values():
        conn.close()
    admin.close()


if __name__ == "__main__":
    main()
