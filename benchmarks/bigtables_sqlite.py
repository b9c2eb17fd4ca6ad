"""Cost as the tables grow, on SQLite: bigtables.py's operations on a SQLite system database
of 10,000 and of 1,000,000 finished workflows, with SQLite's query plans.

    .venv/bin/python benchmarks/bigtables_sqlite.py [--sizes 10000,1000000] [--reps 15]
        [--rounds 1] [--dir /tmp/waypoint-bigtables] [--no-build] [--only label,...]

Each size gets its own file (``<dir>/big_<size>.db``), migrated by Waypoint, then filled with
a recursive CTE in one transaction (no workflow is run), in the shape bigtables.py gives
PostgreSQL: finished workflows spread over 30 days (5 % ERROR, a tenth on queues, 1 %
forked, one in 10,000 stamped before its creation), 5 step rows each, a backlog of
``size / 10`` ENQUEUED workflows, and as deep a one in each of two partitioned queues (1,000
partitions and 10). No ANALYZE: an application's own file has no statistics,
and the plans SQLite picks without them are the ones that matter. Operations run alternately
at every size, repetition by repetition; medians per size, and at the largest size the
``EXPLAIN QUERY PLAN`` of every listing's statement and of the partitioned claims' statements.
Operations SQLite refuses (the attributes filter) are left out.
"""

from __future__ import annotations

import argparse
import functools
import os
import sqlite3
import statistics
import sys
import time
from contextlib import closing
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bigtables import DAY_MS, PARTITIONS, T_END, UNCLAIM, Op, operations, timed_op
from waypoint.storage.errors import UnsupportedError
from waypoint.storage.protocol import ListFilter
from waypoint.storage.registry import open_url

FILL = """
WITH RECURSIVE g(i) AS (SELECT :lo UNION ALL SELECT i + 1 FROM g WHERE i < :hi)
INSERT OR IGNORE INTO workflow_status (workflow_uuid, status, name, authenticated_user,
    output, error, executor_id, created_at, updated_at, application_version,
    recovery_attempts, queue_name, started_at_epoch_ms, inputs, priority, forked_from,
    owner_xid, parent_workflow_id, serialization, completed_at, application_name,
    schedule_name, attributes, was_forked_from)
SELECT printf('wf-%08d', i),
    CASE WHEN i % 20 = 0 THEN 'ERROR' ELSE 'SUCCESS' END,
    'bench.fn_' || (i % 50), 'user-' || (i % 20),
    CASE WHEN i % 20 = 0 THEN NULL ELSE '{"v": ' || i || '}' END,
    CASE WHEN i % 20 = 0 THEN '{"error": "boom"}' END,
    'exec-' || (i % 8), :t0 + i * :gap, :t0 + i * :gap + 10, 'v' || (i % 4), 1,
    CASE WHEN i % 10 = 0 THEN 'q' || (i % 7) END,
    :t0 + i * :gap + CASE WHEN i % 10000 = 5 THEN -1000 ELSE 1 END,
    '{"args": [' || i || '], "kwargs": {}}', 0,
    CASE WHEN i % 100 = 0 THEN printf('wf-%08d', i - 1) END, printf('%032x', i),
    CASE WHEN i % 100 = 1 THEN printf('wf-%08d', i - 1) END, 'json',
    :t0 + i * :gap + CASE WHEN i % 10000 = 5 THEN -990 ELSE 10 END, 'bench',
    CASE WHEN i % 25 = 3 THEN 'sched-' || (i % 3) END,
    CASE WHEN i % 10 = 7 THEN '{"tenant": "t' || (i % 7) || '"}' END, i % 100 = 99
FROM g
"""
FILL_STEPS = """
WITH RECURSIVE g(i) AS (SELECT :lo UNION ALL SELECT i + 1 FROM g WHERE i < :hi),
    f(f) AS (VALUES (1), (2), (3), (4), (5))
INSERT OR IGNORE INTO operation_outputs (workflow_uuid, function_id, function_name, output,
    started_at_epoch_ms, completed_at_epoch_ms, serialization, owner_xid, application_name)
SELECT printf('wf-%08d', i), f, 'bench.step_' || f, '"' || f || '"',
    :t0 + i * :gap + f, :t0 + i * :gap + f + 1, 'json', printf('%032x', i), 'bench'
FROM g, f
"""
FILL_BACKLOG = """
WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < :n)
INSERT INTO workflow_status (workflow_uuid, status, name, created_at, updated_at,
    application_version, recovery_attempts, queue_name, inputs, priority, owner_xid,
    serialization, application_name)
SELECT printf('bk-%08d', i), 'ENQUEUED', 'bench.fn_q', :t1 + i, :t1 + i, 'v-bench', 0,
    'backlog', '{"args": [], "kwargs": {}}', 0, printf('%032x', i), 'json', 'bench'
FROM g
"""
FILL_PARTS = """
WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < :n)
INSERT INTO workflow_status (workflow_uuid, status, name, created_at, updated_at,
    application_version, recovery_attempts, queue_name, inputs, priority, owner_xid,
    serialization, application_name, queue_partition_key)
SELECT printf('pk%d-%08d', :parts, i), 'ENQUEUED', 'bench.fn_q', :t1 + i, :t1 + i, 'v-bench',
    0, 'parts' || :parts, '{"args": [], "kwargs": {}}', 0, printf('%032x', i), 'json', 'bench',
    printf('tenant-%04d', i % :parts)
FROM g
"""


def path_of(folder: Path, size: int) -> Path:
    return folder / f"big_{size}.db"


def refill(path: Path, lo: int, hi: int, size: int) -> None:
    """(Re)create finished workflows ``lo``..``hi`` of a database of ``size`` and their steps
    (those that exist are left alone)."""
    params = {"lo": lo, "hi": hi, "t0": T_END - 30 * DAY_MS, "gap": 30 * DAY_MS // size}
    with closing(sqlite3.connect(path)) as conn:
        conn.execute(FILL, params)
        conn.execute(FILL_STEPS, params)
        conn.commit()


def build(folder: Path, size: int) -> None:
    path = path_of(folder, size)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    store = open_url(f"sqlite:///{path}", application_name="bench-build")
    store.migrate()
    store.close()
    began = time.time()
    refill(path, 1, size, size)
    with closing(sqlite3.connect(path)) as conn:
        conn.execute(FILL_BACKLOG, {"n": size // 10, "t1": T_END + DAY_MS})
        for parts in PARTITIONS:
            conn.execute(FILL_PARTS, {"n": size // 10, "t1": T_END + DAY_MS, "parts": parts})
        conn.commit()  # no ANALYZE: an application's file has no statistics either
    print(f"[bigtables_sqlite] built {path} in {time.time() - began:.0f} s", file=sys.stderr)


class Seen:
    """Keeps the filter of the store's last listing (to EXPLAIN the operation's statement)."""

    def __init__(self, store: Any) -> None:
        self.last: ListFilter | None = None
        real = store.list_workflows

        def listing(flt: ListFilter) -> Any:
            self.last = flt
            return real(flt)

        store.list_workflows = listing


def unclaim(path: Path, queue: str) -> None:
    with closing(sqlite3.connect(path)) as conn:
        conn.execute(UNCLAIM.format(t="workflow_status", false="0", q=":q"), {"q": queue})
        conn.commit()


class Claims:
    """Keeps the partitioned claims' statements (to EXPLAIN them): a trace of the store's
    connections while ``on``."""

    def __init__(self, store: Any) -> None:
        self.on = False
        self.seen: list[str] = []
        connect = store._connect

        def traced() -> sqlite3.Connection:
            conn: sqlite3.Connection = connect()
            conn.set_trace_callback(lambda s: self.seen.append(s) if self.on else None)
            return conn

        store._connect = traced

    def plans(self, path: Path) -> list[str]:
        out: list[str] = []
        with closing(sqlite3.connect(path)) as conn:
            for statement in self.seen:
                if statement.lstrip().upper().startswith(("SELECT", "WITH")):
                    out.append(statement.strip())
                    rows = conn.execute("EXPLAIN QUERY PLAN " + statement).fetchall()
                    out.extend("  " * int(r[1] != 0) + str(r[3]) for r in rows)
        return out


def plan_of(store: Any, path: Path, flt: ListFilter) -> list[str]:
    statement, params, _ = store.listing_statement(flt)
    with closing(sqlite3.connect(path)) as conn:
        rows = conn.execute("EXPLAIN QUERY PLAN " + store.d.render(statement), params)
        return [r[3] for r in rows]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", default="10000,1000000")
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--rounds", type=int, default=1, help="passes over all operations")
    ap.add_argument("--dir", default="/tmp/waypoint-bigtables")
    ap.add_argument("--no-build", action="store_true", help="reuse the files")
    ap.add_argument("--only", help="only the operations whose label contains one of these (,)")
    a = ap.parse_args()
    sizes = [int(s) for s in a.sizes.split(",")]
    folder = Path(a.dir)
    folder.mkdir(parents=True, exist_ok=True)
    if not a.no_build:
        for size in sizes:
            build(folder, size)
    load0 = os.getloadavg()
    stores = {
        size: open_url(f"sqlite:///{path_of(folder, size)}", application_name="bench-big")
        for size in sizes
    }
    claims = {size: Claims(store) for size, store in stores.items()}
    for store in stores.values():
        store.open()
    # The listing filter each operation pages with, kept for its plan.
    filters: dict[str, ListFilter] = {}
    ops: dict[int, dict[str, Op | tuple[Op, Any]]] = {}
    for size, store in stores.items():
        seen = Seen(store)
        ops[size] = operations(
            store,
            size,
            functools.partial(refill, path_of(folder, size), size=size),
            functools.partial(unclaim, path_of(folder, size)),
        )
        for label, op in list(ops[size].items()):
            seen.last = None
            try:
                timed_op(op, 0)  # warm-up; drops what SQLite refuses
            except UnsupportedError:
                del ops[size][label]
                continue
            if seen.last is not None and size == sizes[-1]:
                filters[label] = seen.last
    only = a.only.split(",") if a.only else None
    labels = [label for label in ops[sizes[-1]] if only is None or any(o in label for o in only)]
    samples: dict[str, dict[int, list[float]]] = {
        label: {size: [] for size in sizes} for label in labels
    }
    small, big = sizes[0], sizes[-1]
    claim_plans: dict[str, list[str]] = {}
    for rnd in range(a.rounds):
        for label in labels:
            for i in range(1, a.reps + 1):
                for size in sizes:
                    traced = claims[size]
                    traced.on, traced.seen = "partitioned" in label and size == big and i == 1, []
                    samples[label][size].append(timed_op(ops[size][label], rnd * a.reps + i))
                    if traced.on:
                        traced.on = False
                        claim_plans[label] = traced.plans(path_of(folder, size))
    load1 = os.getloadavg()
    lines = [
        f"SQLite, {a.rounds} round(s) x {a.reps} repetitions; load average (1/5/15 min) "
        f"{load0[0]:.1f}/{load0[1]:.1f}/{load0[2]:.1f} before, "
        f"{load1[0]:.1f}/{load1[1]:.1f}/{load1[2]:.1f} after\n",
        f"| operation | {small:,} rows (ms) | {big:,} rows (ms) | ratio |",
        "| --- | --- | --- | --- |",
    ]
    for label in labels:
        s = statistics.median(samples[label][small])
        b = statistics.median(samples[label][big])
        lines.append(f"| {label} | {s:.2f} | {b:.2f} | {b / s:.2f} |")
    lines.append(f"\nPlans of the listings at {big:,} rows:\n")
    for label in labels:
        if label in filters:
            lines.append(f"**{label}**\n\n```")
            lines.extend(plan_of(stores[big], path_of(folder, big), filters[label]))
            lines.append("```\n")
    for label, plan in claim_plans.items():
        lines.append(f"**{label}** (statements and plans at {big:,} rows)\n\n```")
        lines.extend(plan)
        lines.append("```\n")
    for store in stores.values():
        store.close()
    print("\n".join(lines))


if __name__ == "__main__":
    main()
