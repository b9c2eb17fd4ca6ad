"""Building the indexes of migrations 10 on (10, 11, 13, 14) on a big workflow_status while an
application writes.

    .venv/bin/python benchmarks/migration_build.py [--size 1000000] [--rounds 2] [--no-build]

The database (``bench_migrate_<size>``) is filled like ``benchmarks/bigtables.py``'s (``size``
finished workflows, 5 steps each, a backlog of ``size / 10``). Each round takes it back to
schema version 9 (drops the indexes every later version builds concurrently and forgets those
versions), then migrates it to the latest version two ways, alternating which goes first:

- **before**: as the runner did until now, every pending migration in one transaction with
  plain ``CREATE INDEX``;
- **after**: ``store.migrate()``, which builds them ``CONCURRENTLY`` outside a transaction.

Meanwhile a writer enqueues one workflow and finishes another, in a loop, on its own
connection, and a monitor asks every 20 ms whether the writer's backend is waiting for the
migrating one (``pg_blocking_pids`` against the holder of the migration lock). Reported per
variant (medians over rounds): the migration's time, the writes begun and finished during it,
the longest write that overlapped it, and the share of samples in which the writer was
waiting for the migrating backend.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
from bigtables import T_END, build, db_url  # type: ignore[import-not-found]
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from waypoint.storage import migrations
from waypoint.storage.registry import open_url

SCHEMA = "dbos"
# Whether a backend waits for the one holding the migration lock (advisory key 7321004281:
# classid 1, objid 3026036985), rather than for anything else on a shared server (another
# session's NOTIFY at commit, say).
WAITS_FOR_MIGRATOR = (
    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted "
    "AND classid = 1 AND objid = 3026036985 AND pid = ANY(pg_blocking_pids(%s)))"
)


def back_to_9(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for mig in migrations.pending("postgresql", 9):
            for index, _ in mig.concurrent_indexes:
                conn.execute(
                    sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier(SCHEMA, index))
                )
        conn.execute(f"DELETE FROM {SCHEMA}.waypoint_migrations WHERE version > 9")
        conn.execute(f"VACUUM ANALYZE {SCHEMA}.workflow_status")


def migrate_before(url: str) -> None:
    """The runner until now: one transaction, plain CREATE INDEX."""
    with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(7321004281)")
        for mig in migrations.pending("postgresql", 9):
            conn.execute(mig.in_transaction().replace("{schema}", SCHEMA))
            conn.execute(
                f"INSERT INTO {SCHEMA}.waypoint_migrations (version, name) VALUES (%s, %s)",
                (mig.version, mig.name),
            )


def migrate_after(url: str) -> None:
    store = open_url(url, pool_size=1)
    store.migrate()
    store.close()


class Writer(threading.Thread):
    def __init__(self, url: str, tag: str) -> None:
        super().__init__(daemon=True)
        self.url, self.tag = url, tag
        self.stop = threading.Event()
        self.pid = 0
        self.writes: list[tuple[float, float]] = []  # (start, end)
        self.ready = threading.Event()

    def run(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            self.pid = conn.info.backend_pid
            self.ready.set()
            i = 0
            while not self.stop.is_set():
                i += 1
                t = time.perf_counter()
                with conn.transaction():
                    conn.execute(
                        f"INSERT INTO {SCHEMA}.workflow_status (workflow_uuid, status, name, "
                        "queue_name, created_at, updated_at) VALUES (%s, 'ENQUEUED', 'w', 'q', "
                        "%s, %s)",
                        (f"mig-{self.tag}-{i}", T_END + i, T_END + i),
                    )
                    conn.execute(
                        f"UPDATE {SCHEMA}.workflow_status SET status = 'SUCCESS', "
                        "completed_at = updated_at WHERE workflow_uuid = %s",
                        (f"mig-{self.tag}-{i}",),
                    )
                self.writes.append((t, time.perf_counter()))


def one(url: str, variant: str, tag: str) -> dict[str, float]:
    back_to_9(url)
    writer = Writer(url, tag)
    writer.start()
    writer.ready.wait()
    samples = waited = 0
    done = threading.Event()

    def monitor() -> None:
        nonlocal samples, waited
        with psycopg.connect(url, autocommit=True) as conn:
            while not done.is_set():
                row = conn.execute(WAITS_FOR_MIGRATOR, (writer.pid,)).fetchone()
                samples += 1
                waited += bool(row and row[0])
                time.sleep(0.02)

    mon = threading.Thread(target=monitor, daemon=True)
    mon.start()
    time.sleep(0.5)
    t = time.perf_counter()
    (migrate_before if variant == "before" else migrate_after)(url)
    end = time.perf_counter()
    time.sleep(0.5)  # the write in flight at the end completes
    done.set()
    writer.stop.set()
    writer.join()
    mon.join()
    # Writes that overlapped the migration: the longest shows how long one was held up.
    during = [b - a for a, b in writer.writes if a < end and b > t]
    writes = sum(1 for a, b in writer.writes if a >= t and b <= end)
    took = end - t
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DELETE FROM {SCHEMA}.workflow_status WHERE workflow_uuid LIKE 'mig-%%'")
        bad = conn.execute(
            "SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s "
            "AND NOT i.indisvalid",
            (SCHEMA,),
        ).fetchone()
    assert bad is not None and bad[0] == 0
    return {
        "seconds": took,
        "writes": writes,
        "max_write_ms": 1000 * max(during, default=0.0),
        "waited_pct": 100.0 * waited / max(samples, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--no-build", action="store_true", help="reuse the database")
    a = ap.parse_args()
    name = f"bench_migrate_{a.size}"
    if not a.no_build:
        build(a.size, name)
    url = db_url(name)
    load0 = os.getloadavg()
    runs: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
    for r in range(a.rounds):
        order = ["before", "after"] if r % 2 == 0 else ["after", "before"]
        for variant in order:
            got = one(url, variant, f"{r}{variant}")
            runs[variant].append(got)
            print(f"[migration_build] round {r} {variant}: {got}", file=sys.stderr)
    load1 = os.getloadavg()
    lines = [
        f"{a.size:,} finished workflows (+{a.size // 10:,} backlog), {a.rounds} rounds, "
        f"load average {load0[0]:.1f}/{load0[1]:.1f}/{load0[2]:.1f} before, "
        f"{load1[0]:.1f}/{load1[1]:.1f}/{load1[2]:.1f} after\n",
        f"| variant | migration 9 → {migrations.latest_version('postgresql')} (s) "
        "| writes during it | longest write (ms) "
        "| samples with the writer waiting for the migration (%) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for variant, got in runs.items():

        def med(key: str, got: list[dict[str, Any]] = got) -> float:
            return float(statistics.median(g[key] for g in got))

        lines.append(
            f"| {variant} | {med('seconds'):.1f} | {med('writes'):.0f} | "
            f"{med('max_write_ms'):.0f} | {med('waited_pct'):.0f} |"
        )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
