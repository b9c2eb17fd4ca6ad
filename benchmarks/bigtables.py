"""Cost as the tables grow: the hot and the periodic statements of the system database,
timed with 10,000 and with 1,000,000 finished workflows, with their EXPLAIN plans.

    .venv/bin/python benchmarks/bigtables.py [--sizes 10000,1000000] [--reps 15] [--rounds 1]
        [--out benchmarks/results/bigtables.md] [--no-build] [--analyze] [--only claim,...]

Each size gets its own database (``bench_big_<size>``), migrated by Waypoint, then filled
with ``generate_series`` (no workflow is run): ``size`` finished workflows (SUCCESS, 5 %
ERROR, spread over 30 days, a tenth of them on queues, names/users/executors/versions in
small sets, 1 % forked from, one in 10,000 stamped dequeued and completed a second before
its creation: a worker's clock behind the enqueuer's), 5 step rows each, and a backlog of
``size / 10`` ENQUEUED workflows in the queue ``backlog``. Each operation then runs
``--reps`` times through the store (the SQL Waypoint issues, without the Python above it)
and its median is reported; the statements it issued are captured and EXPLAINed (plans of
the largest size; with ``--analyze``, EXPLAIN (ANALYZE, BUFFERS) at every size). Prints a
markdown table. Databases are named ``bench_big_<size>`` plus ``BENCH_DB_SUFFIX``.
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from waypoint.storage.protocol import (
    ClaimRequest,
    ListFilter,
    NewWorkflow,
    RecoveryRequest,
    RetentionRequest,
    StepRecord,
)
from waypoint.storage.registry import open_url

PG_BASE = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432")
SUFFIX = os.environ.get("BENCH_DB_SUFFIX", "")
DAY_MS = 86_400_000
T_END = 1_780_000_000_000  # the newest finished workflow's created_at
EXECUTOR = "bench-exec"
QUEUED = ["ENQUEUED", "PENDING", "DELAYED"]  # list_queued_workflows' default

FILL = """
INSERT INTO dbos.workflow_status (workflow_uuid, status, name, authenticated_user,
    output, error, executor_id, created_at, updated_at, application_version,
    application_id, class_name, config_name, recovery_attempts, queue_name,
    workflow_timeout_ms, workflow_deadline_epoch_ms, started_at_epoch_ms,
    deduplication_id, inputs, priority, queue_partition_key, forked_from, owner_xid,
    parent_workflow_id, serialization, completed_at, application_name, schedule_name,
    attributes, was_forked_from)
SELECT 'wf-' || lpad(i::text, 8, '0'),
    CASE WHEN i %% 20 = 0 THEN 'ERROR' ELSE 'SUCCESS' END,
    'bench.fn_' || (i %% 50), 'user-' || (i %% 20),
    CASE WHEN i %% 20 = 0 THEN NULL ELSE '{"v": ' || i || '}' END,
    CASE WHEN i %% 20 = 0 THEN '{"error": "boom"}' END,
    'exec-' || (i %% 8), %(t0)s + i * %(gap)s, %(t0)s + i * %(gap)s + 10,
    'v' || (i %% 4), 'app', NULL, NULL, 1,
    CASE WHEN i %% 10 = 0 THEN 'q' || (i %% 7) END, NULL, NULL,
    %(t0)s + i * %(gap)s + CASE WHEN i %% 10000 = 5 THEN -1000 ELSE 1 END, NULL,
    '{"args": [' || i || '], "kwargs": {}}', 0, NULL,
    CASE WHEN i %% 100 = 0 THEN 'wf-' || lpad((i - 1)::text, 8, '0') END,
    md5(i::text), CASE WHEN i %% 100 = 1 THEN 'wf-' || lpad((i - 1)::text, 8, '0') END,
    'json', %(t0)s + i * %(gap)s + CASE WHEN i %% 10000 = 5 THEN -990 ELSE 10 END, 'bench',
    CASE WHEN i %% 25 = 3 THEN 'sched-' || (i %% 3) END,
    CASE WHEN i %% 10 = 7 THEN ('{"tenant": "t' || (i %% 7) || '"}')::jsonb END,
    i %% 100 = 99
FROM generate_series(%(lo)s::bigint, %(n)s) AS i
ON CONFLICT DO NOTHING
"""
FILL_STEPS = """
INSERT INTO dbos.operation_outputs (workflow_uuid, function_id, function_name, output,
    started_at_epoch_ms, completed_at_epoch_ms, serialization, owner_xid, application_name)
SELECT 'wf-' || lpad(i::text, 8, '0'), f, 'bench.step_' || f, '"' || f || '"',
    %(t0)s + i * %(gap)s + f, %(t0)s + i * %(gap)s + f + 1, 'json', md5(i::text), 'bench'
FROM generate_series(%(lo)s::bigint, %(n)s) AS i, generate_series(1, 5) AS f
ON CONFLICT DO NOTHING
"""
FILL_BACKLOG = """
INSERT INTO dbos.workflow_status (workflow_uuid, status, name, created_at, updated_at,
    application_version, recovery_attempts, queue_name, inputs, priority, owner_xid,
    serialization, application_name)
SELECT 'bk-' || lpad(i::text, 8, '0'), 'ENQUEUED', 'bench.fn_q', %(t1)s + i, %(t1)s + i,
    'v-bench', 0, 'backlog', '{"args": [], "kwargs": {}}', 0, md5(i::text), 'json', 'bench'
FROM generate_series(1::bigint, %(n)s) AS i
"""
# The backlog of a partitioned queue: row i in partition i mod ``parts``, so each partition's
# rows are spread through the queue's order, as many tenants enqueueing side by side do.
FILL_PARTS = """
INSERT INTO dbos.workflow_status (workflow_uuid, status, name, created_at, updated_at,
    application_version, recovery_attempts, queue_name, inputs, priority, owner_xid,
    serialization, application_name, queue_partition_key)
SELECT 'pk' || %(parts)s || '-' || lpad(i::text, 8, '0'), 'ENQUEUED', 'bench.fn_q',
    %(t1)s + i, %(t1)s + i, 'v-bench', 0, 'parts' || %(parts)s, '{"args": [], "kwargs": {}}',
    0, md5(i::text), 'json', 'bench', 'tenant-' || lpad((i %% %(parts)s)::text, 4, '0')
FROM generate_series(1::bigint, %(n)s) AS i
"""
PARTITIONS = (1000, 10)
# What a partitioned claim's repetition undoes (untimed): its rows back in the backlog.
UNCLAIM = (
    "UPDATE {t} SET status = 'ENQUEUED', executor_id = NULL, started_at_epoch_ms = NULL, "
    "rate_limited = {false} WHERE queue_name = {q} AND status = 'PENDING'"
)
UNCLAIM_PG = UNCLAIM.format(t="dbos.workflow_status", false="false", q="%(q)s")


def refill(conn: psycopg.Connection[Any], lo: int, hi: int, size: int) -> None:
    """(Re)create finished workflows ``lo``..``hi`` of a database of ``size`` and their
    steps (those that exist are left alone)."""
    t0 = T_END - 30 * DAY_MS
    gap = 30 * DAY_MS // size
    conn.execute(FILL, {"lo": lo, "n": hi, "t0": t0, "gap": gap})
    conn.execute(FILL_STEPS, {"lo": lo, "n": hi, "t0": t0, "gap": gap})


def db_url(name: str) -> str:
    return f"{PG_BASE}/{name}"


def db_name(size: int) -> str:
    return f"bench_big_{size}{SUFFIX}"


def build(size: int, name: str | None = None) -> str:
    """A fresh database of ``size`` finished workflows (and the rest); returns its name
    (``bench_big_<size>`` plus ``BENCH_DB_SUFFIX`` unless given)."""
    name = name or db_name(size)
    with psycopg.connect(db_url("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    store = open_url(db_url(name), application_name="bench-build")
    store.migrate()
    store.close()
    began = time.time()
    with psycopg.connect(db_url(name), autocommit=True) as conn:
        conn.execute("SET synchronous_commit = off")
        conn.execute("SET maintenance_work_mem = '256MB'")
        refill(conn, 1, size, size)
        conn.execute(FILL_BACKLOG, {"n": size // 10, "t1": T_END + DAY_MS})
        for parts in PARTITIONS:
            conn.execute(FILL_PARTS, {"n": size // 10, "t1": T_END + DAY_MS, "parts": parts})
        conn.execute("VACUUM ANALYZE")
    print(f"[bigtables] built {name} in {time.time() - began:.0f} s", file=sys.stderr)
    return name


class Capture:
    """Records every statement psycopg executes while ``on``."""

    def __init__(self) -> None:
        self.on = False
        self.seen: list[tuple[str, Any]] = []
        original = psycopg.Cursor.execute
        capture = self

        def execute(cur: Any, query: Any, params: Any = None, **kw: Any) -> Any:
            if capture.on:
                capture.seen.append((str(query), params))
            return original(cur, query, params, **kw)

        psycopg.Cursor.execute = execute  # type: ignore[method-assign,assignment]


def new_workflow(status: str, queue: str | None = None) -> NewWorkflow:
    wid = f"new-{uuid.uuid4()}"
    now = int(time.time() * 1000)
    return NewWorkflow(
        workflow_id=wid,
        status=status,
        name="bench.fn_new",
        class_name=None,
        config_name=None,
        inputs='{"args": [], "kwargs": {}}',
        serialization="json",
        owner_xid=uuid.uuid4().hex,
        executor_id=EXECUTOR if status == "PENDING" else None,
        application_version="v-bench",
        application_id=None,
        application_name="bench",
        created_at=now,
        queue_name=queue,
        recovery_attempts=0 if queue else 1,
    )


Op = Callable[[int], Any]


def operations(
    store: Any,
    size: int,
    refill_rows: Callable[[int, int], None] | None = None,
    unclaim: Callable[[str], None] | None = None,
) -> dict[str, Op | tuple[Op, Callable[[], None]]]:
    """Each operation, given its repetition number; or (operation, what undoes it untimed),
    for one that would otherwise eat the table it measures. ``refill_rows(lo, hi)`` puts
    finished workflows lo..hi back, ``unclaim(queue)`` a queue's claimed rows (default: this
    module's PostgreSQL database of ``size``; bigtables_sqlite.py passes SQLite's)."""
    t0 = T_END - 30 * DAY_MS
    gap = 30 * DAY_MS // size
    mine = new_workflow("PENDING")
    store.init_workflow(mine, None)
    if refill_rows is None:
        restore = psycopg.connect(db_url(db_name(size)), autocommit=True)
        refill_rows = functools.partial(refill, restore, size=size)
    if unclaim is None:
        back = psycopg.connect(db_url(db_name(size)), autocommit=True)
        unclaim = lambda q: back.execute(UNCLAIM_PG, {"q": q})  # noqa: E731
    refill_rows(1, 1000)  # what earlier runs collected

    def page(**kw: Any) -> Callable[[int], Any]:
        # As DBOS.list_workflows asks: this application's rows (and those of none).
        flt = ListFilter(limit=100, load_input=False, application_name="bench", **kw)
        return lambda r: store.list_workflows(flt)

    def gc(r: int) -> Any:  # one batch: the 200 oldest (put back, untimed, by gc_undo)
        return store.garbage_collect(RetentionRequest(t0 + 201 * gap, None, None, batch_size=200))

    def gc_undo() -> None:
        refill_rows(1, 200)

    def claim(queue: str, limit: int) -> Callable[[int], Any]:
        return lambda r: store.claim(
            ClaimRequest(queue, limit, EXECUTOR, "v-bench", "bench", uuid.uuid4().hex),
            int(time.time() * 1000),
        )

    def claim_parts(parts: int, **limits: Any) -> tuple[Op, Callable[[], None]]:
        """16 rows of a partitioned queue, one a partition; put back untimed."""
        queue = f"parts{parts}"
        req = functools.partial(
            ClaimRequest, queue, 16, EXECUTOR, "v-bench", "bench", partitioned=True, **limits
        )
        op = lambda r: store.claim(req(uuid.uuid4().hex), int(time.time() * 1000))  # noqa: E731
        return op, lambda: unclaim(queue)

    def busy(parts: int) -> dict[str, int]:
        return {f"tenant-{i:04d}": 1 for i in range(parts)}

    mid = f"wf-{size // 2:08d}"
    return {
        "enqueue": lambda r: store.init_workflow(new_workflow("ENQUEUED", "backlog"), None),
        "claim (backlog queue, 1 row)": claim("backlog", 1),
        "claim (partitioned, 1,000 partitions, 16 rows)": claim_parts(
            1000, partition_concurrency=1
        ),
        "claim (partitioned, 10 partitions, 16 rows)": claim_parts(10, partition_concurrency=1),
        "claim (partitioned, 1,000 partitions, rate limit)": claim_parts(
            1000, partition_concurrency=1, partition_rate_limit=(5, 60.0)
        ),
        # Nothing to take: every partition at this process's limit (the claim finds out).
        "claim (partitioned, 1,000 partitions, all at their limit)": claim_parts(
            1000, partition_worker_concurrency=1, local_partition_running=busy(1000)
        ),
        "claim (partitioned, 10 partitions, all at their limit)": claim_parts(
            10, partition_worker_concurrency=1, local_partition_running=busy(10)
        ),
        "step checkpoint": lambda r: store.record_step(
            StepRecord(
                mine.workflow_id,
                r + 1,
                "bench.step",
                '"x"',
                None,
                "json",
                mine.owner_xid,
                1,
                2,
                application_name="bench",
            )
        ),
        "get_workflow_status": lambda r: store.get_workflow(f"wf-{(r * 7919) % size + 1:08d}"),
        "list_workflows (no filter, oldest first)": page(),
        "list_workflows (no filter, newest first)": page(sort_desc=True),
        "list_workflows status=ERROR": page(status=["ERROR"], sort_desc=True),
        "list_workflows status=PENDING": page(status=["PENDING"], sort_desc=True),
        "list_workflows status=SUCCESS": page(status=["SUCCESS"], sort_desc=True),
        "list_workflows status=ENQUEUED": page(status=["ENQUEUED"], sort_desc=True),
        "list_workflows status=ERROR or CANCELLED": page(
            status=["ERROR", "CANCELLED"], sort_desc=True
        ),
        "list_workflows name": page(name=["bench.fn_7"], sort_desc=True),
        "list_workflows app_version": page(app_version=["v2"], sort_desc=True),
        "list_workflows user": page(user=["user-3"], sort_desc=True),
        "list_workflows queue_name": page(queue_name=["q3"], sort_desc=True),
        "list_workflows executor_id": page(executor_id=["exec-5"], sort_desc=True),
        "list_workflows time window": page(
            start_time_ms=t0 + (size // 2) * gap, end_time_ms=t0 + (size // 2 + 500) * gap
        ),
        "list_workflows workflow_ids": page(workflow_ids=[mid, "wf-00000042"]),
        "list_workflows id prefix": page(workflow_id_prefix=[mid[:-2]]),
        "list_workflows parent": page(parent_workflow_id=[f"wf-{size // 2 + 100:08d}"]),
        "list_workflows forked_from": page(forked_from=[f"wf-{size // 2 - 1:08d}"]),
        "list_workflows completed_after": page(completed_after=T_END - DAY_MS, sort_desc=True),
        "list_workflows completed_before": page(completed_before=T_END - DAY_MS, sort_desc=True),
        "list_workflows dequeued_after": page(dequeued_after=T_END - DAY_MS, sort_desc=True),
        "list_workflows dequeued_before": page(dequeued_before=T_END - DAY_MS, sort_desc=True),
        # Oldest first (DBOS's default order): the mirror image of newest first "before".
        "list_workflows completed_after, oldest first": page(completed_after=T_END - DAY_MS),
        "list_workflows dequeued_after, oldest first": page(dequeued_after=T_END - DAY_MS),
        "list_workflows schedule_name": page(schedule_name=["sched-1"], sort_desc=True),
        "list_workflows has_parent": page(has_parent=True, sort_desc=True),
        "list_workflows was_forked_from": page(was_forked_from=True, sort_desc=True),
        "list_workflows attributes": page(attributes='{"tenant": "t3"}', sort_desc=True),
        "list_workflows queues_only": page(queues_only=True, sort_desc=True),
        "list_queued_workflows": page(queues_only=True, status=QUEUED),
        "list_queued_workflows (one queue)": page(
            queues_only=True, queue_name=["backlog"], status=QUEUED
        ),
        "recovery scan at launch": lambda r: store.recover_pending(
            RecoveryRequest(
                ["exec-3", EXECUTOR + "-gone"],
                "v-bench",
                "bench",
                "_dbos_internal_queue",
                int(time.time() * 1000),
            )
        ),
        "GC batch (200 oldest)": (gc, gc_undo),
        "idle: claim from an empty queue": claim("idle-queue", 16),
        "idle: promote due delayed": lambda r: store.promote_delayed(int(time.time() * 1000)),
        "idle: next delayed": lambda r: store.next_delayed(),
        "idle: list database queues": lambda r: store.list_queues("bench"),
    }


def timed_op(op: Op | tuple[Op, Callable[[], None]], r: int) -> float:
    """Milliseconds of one repetition (its undo, if any, runs after the clock stops)."""
    fn, undo = op if isinstance(op, tuple) else (op, None)
    t = time.perf_counter()
    fn(r)
    ms = (time.perf_counter() - t) * 1000
    if undo is not None:
        undo()
    return ms


def measure(
    sizes: list[int],
    reps: int,
    cap: Capture,
    rounds: int = 1,
    analyze: bool = False,
    only: list[str] | None = None,
) -> tuple[dict[int, dict[str, float]], dict[int, dict[str, Explained]]]:
    """Each operation at every size in turn, repetition by repetition, so a change in the
    machine's load (it is shared) hits every size alike; ``rounds`` passes over the whole
    list spread each operation's samples over time (a burst of load hits one pass); medians
    per size, and the plans of the statements at the largest size (with ``analyze``, at
    every size, as ``EXPLAIN (ANALYZE, BUFFERS)`` gives them)."""
    stores = {size: open_url(db_url(db_name(size)), application_name="bench-big") for size in sizes}
    try:
        for store in stores.values():
            store.open()
        ops = {size: operations(store, size) for size, store in stores.items()}
        labels = [label for label in ops[sizes[0]] if only is None or any(o in label for o in only)]
        samples: dict[str, dict[int, list[float]]] = {
            label: {size: [] for size in sizes} for label in labels
        }
        plans: dict[int, dict[str, Explained]] = {size: {} for size in sizes}
        for rnd in range(rounds):
            for label in labels:
                if rnd == 0:
                    for size in sizes:
                        timed_op(ops[size][label], 0)  # warm-up (and the plan cache)
                for i in range(1, reps + 1):
                    r = rnd * reps + i
                    for size in sizes:
                        cap.on, cap.seen = (analyze or size == sizes[-1]) and r == 1, []
                        samples[label][size].append(timed_op(ops[size][label], r))
                        if cap.on:
                            cap.on = False
                            plans[size][label] = explain(db_name(size), cap.seen, analyze)
        times = {
            size: {label: statistics.median(samples[label][size]) for label in labels}
            for size in sizes
        }
        return times, plans
    finally:
        for store in stores.values():
            store.close()


class Explained(NamedTuple):
    plans: list[str]
    server_ms: float  # planning and execution, as EXPLAIN ANALYZE reports them
    buffers: int  # shared buffers the execution touched (hit or read): the work, load-free


def explain(name: str, statements: list[tuple[str, Any]], analyze: bool = False) -> Explained:
    """The plans of ``statements``; with ``analyze``, as run (in a transaction rolled back
    at the end, so a write's effects are undone), with the server's milliseconds and the
    buffers of the run of median time out of ``SERVER_RUNS``, on a connection kept open (so
    its catalog caches are warm, as a store's are): on a loaded machine the client's clock
    counts every wait for a CPU; the buffers do not depend on the load at all."""
    runs = [_explain(name, statements, analyze) for _ in range(SERVER_RUNS if analyze else 1)]
    runs.sort(key=lambda e: e.server_ms)
    return runs[len(runs) // 2]


SERVER_RUNS = 5
_explainers: dict[str, psycopg.Connection[Any]] = {}


def _explain(name: str, statements: list[tuple[str, Any]], analyze: bool) -> Explained:
    how = "(ANALYZE, BUFFERS, COSTS OFF)" if analyze else "(COSTS OFF)"
    out: list[str] = []
    server_ms = 0.0
    buffers = 0
    conn = _explainers.get(name)
    if conn is None:
        conn = _explainers[name] = psycopg.connect(db_url(name))
    # One transaction, rolled back: SET LOCAL holds for the statements after it.
    for sql, params in statements:
        head = sql.lstrip().split(None, 1)[0].upper()
        if head == "SET":
            conn.execute(sql, params)
            out.append(sql)
            continue
        if head not in ("SELECT", "INSERT", "UPDATE", "DELETE", "WITH"):
            continue
        if "pg_advisory_xact_lock" in sql or sql.strip() in ("SELECT 1", UNCLAIM_PG):
            continue
        try:
            with conn.transaction(savepoint_name="plan"):
                rows = conn.execute(f"EXPLAIN {how} " + sql, params).fetchall()
        except psycopg.Error as exc:
            out.append(f"(no plan: {exc})")
            continue
        lines = [r[0] for r in rows]
        out.append("\n".join(lines))
        for line in lines:
            if line.startswith(("Planning Time:", "Execution Time:")):
                server_ms += float(line.split()[2])
        top = next((ln for ln in lines if ln.lstrip().startswith("Buffers:")), "")
        buffers += sum(int(n) for n in re.findall(r"(?:hit|read)=(\d+)", top))
    conn.rollback()
    return Explained(out, server_ms, buffers)


def ratio(big: float, small: float) -> str:
    return f"{big / small:.2f}" if small else "-"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", default="10000,1000000")
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--rounds", type=int, default=1, help="passes over all operations")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "bigtables.md"))
    ap.add_argument("--no-build", action="store_true", help="reuse the databases")
    ap.add_argument("--only", help="only the operations whose label contains one of these (,)")
    ap.add_argument(
        "--analyze", action="store_true", help="EXPLAIN (ANALYZE, BUFFERS) at every size"
    )
    a = ap.parse_args()
    sizes = [int(s) for s in a.sizes.split(",")]
    cap = Capture()
    if not a.no_build:
        for size in sizes:
            build(size)
    load0 = os.getloadavg()
    only = a.only.split(",") if a.only else None
    results, plans = measure(sizes, a.reps, cap, a.rounds, a.analyze, only)
    load1 = os.getloadavg()
    small, big = sizes[0], sizes[-1]
    lines = [
        f"{a.rounds} round(s) x {a.reps} repetitions; load average (1/5/15 min) "
        f"{load0[0]:.1f}/{load0[1]:.1f}/{load0[2]:.1f} before, "
        f"{load1[0]:.1f}/{load1[1]:.1f}/{load1[2]:.1f} after\n",
        f"| operation | {small:,} rows (ms) | {big:,} rows (ms) | ratio |"
        + (" server ms | server ratio | buffers | buffers ratio |" if a.analyze else ""),
        "| --- | --- | --- | --- |" + (" --- | --- | --- | --- |" if a.analyze else ""),
    ]
    for label in results[small]:
        s, b = results[small][label], results[big][label]
        row = f"| {label} | {s:.2f} | {b:.2f} | {b / s:.2f} |"
        if a.analyze:
            es, eb = plans[small][label], plans[big][label]
            row += (
                f" {es.server_ms:.3f} / {eb.server_ms:.3f} | {ratio(eb.server_ms, es.server_ms)} |"
                f" {es.buffers} / {eb.buffers} | {ratio(eb.buffers, es.buffers)} |"
            )
        lines.append(row)
    lines.append("")
    for size in sizes:
        if not plans[size]:
            continue
        lines.append(f"Plans at {size:,} rows:\n")
        for label, e in plans[size].items():
            lines.append(f"**{label}**\n\n```")
            lines.extend(e.plans or ["(no statement)"])
            lines.append("```\n")
    text = "\n".join(lines)
    Path(a.out).parent.mkdir(exist_ok=True)
    Path(a.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
