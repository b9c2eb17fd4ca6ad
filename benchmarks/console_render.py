#!/usr/bin/env python3
"""Server-side render of the console's workflows page over a table of a million workflows.

    .venv/bin/python benchmarks/console_render.py [--rows 1000000] [--repeat 20]
        [--pg postgresql://postgres@127.0.0.1:5432] [--backends postgres,sqlite]

Fills ``workflow_status`` of a fresh database with ``--rows`` rows in one
``INSERT ... SELECT FROM generate_series`` (PostgreSQL; SQLite uses a recursive CTE): a mix of
statuses (mostly SUCCESS, some ERROR, CANCELLED, ENQUEUED and PENDING), names, queues and
versions, created one millisecond apart. Then renders pages in-process (Starlette's test
client: routing, the queries, the template; no network) and prints the median and worst time
of each:

- the first page (50 newest, with the capped per-status counts);
- a deep page, continuing after a row half-way through the table (the keyset cursor);
- a status filter (ERROR), a name filter, and the oldest-first order.

The target is 200 ms for each. The page reads rows through the ``created_at`` index in
either direction with the cursor bounding the scan (no OFFSET), and each per-status count
stops at 10,000 rows.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable

import psycopg
from psycopg import sql
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.testclient import TestClient

from waypoint import DBOSClient
from waypoint.console import app as console_app
from waypoint.console import build_console
from waypoint.storage.registry import open_url

STATUS_MIX = """CASE WHEN g % 100 < 90 THEN 'SUCCESS' WHEN g % 100 < 95 THEN 'ERROR'
    WHEN g % 100 < 97 THEN 'CANCELLED' WHEN g % 100 < 99 THEN 'ENQUEUED' ELSE 'PENDING' END"""
T0 = 1_750_000_000_000


def fill_pg(url: str, rows: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            f"""INSERT INTO dbos.workflow_status (workflow_uuid, status, name, queue_name,
            executor_id, application_version, created_at, updated_at, completed_at, inputs,
            output, serialization, application_name)
            SELECT 'wf-' || lpad(g::text, 8, '0'), {STATUS_MIX}, 'job_' || (g % 20),
            CASE WHEN g % 3 = 0 THEN 'q' || (g % 5) END, 'exec-' || (g % 8),
            'v' || (g / 250000), {T0} + g, {T0} + g + 50, {T0} + g + 50,
            '{{"args": [1], "kwargs": {{}}}}', '"ok"', 'portable_json', NULL
            FROM generate_series(1, {int(rows)}) AS g"""
        )
        conn.execute("VACUUM ANALYZE dbos.workflow_status")  # as autovacuum would have


def fill_sqlite(path: str, rows: int) -> None:
    import sqlite3

    conn = sqlite3.connect(path)
    status = STATUS_MIX.replace("g % 100", "(g % 100)")
    conn.execute(
        f"""WITH RECURSIVE s(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM s WHERE g < {int(rows)})
        INSERT INTO workflow_status (workflow_uuid, status, name, queue_name, executor_id,
        application_version, created_at, updated_at, completed_at, inputs, output,
        serialization)
        SELECT 'wf-' || substr('00000000' || g, -8), {status}, 'job_' || (g % 20),
        CASE WHEN g % 3 = 0 THEN 'q' || (g % 5) END, 'exec-' || (g % 8), 'v' || (g / 250000),
        {T0} + g, {T0} + g + 50, {T0} + g + 50, '{{"args": [1], "kwargs": {{}}}}', '"ok"',
        'portable_json' FROM s"""
    )
    conn.commit()
    conn.execute("ANALYZE")
    conn.close()


def migrate(url: str) -> None:
    store = open_url(url)
    store.migrate()
    store.close()


def timed(get: Callable[[], str], repeat: int) -> tuple[float, float]:
    get()  # warm: templates compiled, connections open, pages cached by the database
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        get()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), max(times)


def run(url: str, rows: int, repeat: int) -> None:
    # Every render recounts: the console reuses its counts for a second, which would hide
    # their cost in a loop of renders.
    console_app.COUNTS_TTL_SEC = 0.0
    client = DBOSClient(system_database_url=url)
    try:
        app = Starlette(routes=[Mount("/console", build_console(client.engine))])
        http = TestClient(app)
        half = rows // 2
        pages = {
            "first page": "/console/workflows",
            "deep page (keyset)": f"/console/workflows?after_at={T0 + half}&after_id=wf-{half:08d}",
            "status=ERROR": "/console/workflows?status=ERROR",
            "name=job_7": "/console/workflows?name=job_7",
            "oldest first": "/console/workflows?sort=asc",
        }
        for label, path in pages.items():

            def get(path: str = path) -> str:
                reply = http.get(path)
                assert reply.status_code == 200, (path, reply.status_code, reply.text[:500])
                assert reply.text.count("<tr data-id=") == 50, path
                return reply.text

            median, worst = timed(get, repeat)
            verdict = "ok" if median < 200 else "OVER 200 ms"
            print(f"  {label:22s} median {median:7.1f} ms   worst {worst:7.1f} ms   {verdict}")
    finally:
        client.destroy()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument(
        "--pg", default=os.environ.get("WAYPOINT_TEST_PG", "postgresql://postgres@127.0.0.1:5432")
    )
    parser.add_argument("--backends", default="postgres,sqlite")
    args = parser.parse_args()
    backends = args.backends.split(",")
    if "postgres" in backends:
        bench_postgres(args.pg, args.rows, args.repeat)
    if "sqlite" in backends:
        bench_sqlite(args.rows, args.repeat)


def bench_postgres(pg: str, rows: int, repeat: int) -> None:
    name = f"wp_console_bench_{os.getpid()}"
    with psycopg.connect(f"{pg}/postgres", autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = f"{pg}/{name}"
    try:
        migrate(url)
        start = time.perf_counter()
        fill_pg(url, rows)
        print(f"PostgreSQL: {rows:,} rows in {time.perf_counter() - start:.1f} s")
        run(url, rows, repeat)
    finally:
        with psycopg.connect(f"{pg}/postgres", autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def bench_sqlite(rows: int, repeat: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/console.sqlite"
        migrate(f"sqlite:///{path}")
        start = time.perf_counter()
        fill_sqlite(path, rows)
        print(f"SQLite: {rows:,} rows in {time.perf_counter() - start:.1f} s")
        run(f"sqlite:///{path}", rows, repeat)


if __name__ == "__main__":
    main()
