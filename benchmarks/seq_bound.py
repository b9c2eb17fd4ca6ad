"""The structural bound of seq0 / seq1 / seq10 (issue 11): the commits a workflow cannot do
without, and nothing else.

    .venv/bin/python benchmarks/seq_bound.py [--runs 3] [--seconds 4] [--schemas waypoint,dbos]
        [--dbos] [--waypoint] [--tree PATH ...]

A workflow of n steps needs n + 2 durable commits, one after the other: its start (durable
before its first step runs), one checkpoint per step (durable before the step call returns)
and its outcome (durable before the call returns). This runs exactly those on one
connection with plain psycopg, in autocommit, each statement prepared: an ``INSERT`` into
``workflow_status``, n ``INSERT``s into ``operation_outputs`` and the outcome's ``UPDATE`` of
``workflow_status``, with rows shaped as the library writes them (the columns and values of a
real workflow's rows, read back after one ran), into tables with their real indexes:

* ``waypoint``: the schema Waypoint's migrations create (DBOS's tables and indexes plus
  Waypoint's listing indexes, functions and columns);
* ``dbos``: the schema ``dbos`` 3.4 creates at launch (needs ``benchmarks/.venv-dbos``).

A third variant, ``wpsql``, runs Waypoint's own statements the same way (plain psycopg, one
connection configured as the store configures its own): the start's ``INSERT ... ON
CONFLICT DO NOTHING RETURNING``, the fenced checkpoint and outcome functions. The gap
between ``bound waypoint`` and ``wpsql`` is what the statements' extra work (fences, the
status read back) costs; between ``wpsql`` and the library's own run, the client.

Beside it, in the same window: the autocommit floor (one-row ``INSERT`` into a table without
indexes, as ``workloads.py floor``), and with ``--dbos`` / ``--waypoint`` the libraries' own
seq0/seq1/seq10 (``workloads.py``, alternating; each ``--tree`` is a checkout, or a
directory holding a ``waypoint`` package, whose Waypoint runs as ``waypoint:<its name>``).
Each round measures every variant in turn; the table gives medians, the bound's workflows/s,
what it allows as a ratio to dbos, and the bound for seq10 as a share of the autocommit floor
(steps/s). An instrumented pass (off the clock) splits one statement's cost into the
client's CPU, the backend's CPU (from ``/proc/<pid>/schedstat``; the server must run on this
machine) and the rest of the round trip (wire, scheduling and the WAL flush the commit waits
for).

Databases: ``bench_bound_<schema>`` (+ ``BENCH_DB_SUFFIX``), recreated at the start.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import psycopg
from workloads import DB_SUFFIX as SUFFIX
from workloads import db_url
from workloads import reset_database as recreate

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DBOS_PY = HERE / ".venv-dbos" / "bin" / "python"
STEPS = (0, 1, 10)

# Builds the schema in a fresh database, runs one seq1 workflow (its rows are the template of
# the bound's rows), then stops. Run by the library's own interpreter.
_SEED = """
import sys
from {lib} import DBOS
DBOS(config={{"name": "bench-bound", "system_database_url": sys.argv[1]}})
@DBOS.step()
def step(i: int, x: int) -> int:
    return i + x
@DBOS.workflow()
def seq(x: int, nsteps: int) -> int:
    return sum(step(i, x) for i in range(nsteps))
DBOS.launch()
seq(1, 1)
DBOS.destroy()
"""


def seed(schema: str) -> str:
    """A fresh database with ``schema``'s tables, holding one finished seq1 workflow."""
    name = f"bench_bound_{schema}{SUFFIX}"
    recreate(name)
    if schema == "dbos":
        py, env = str(DBOS_PY), dict(os.environ)
    else:
        py, env = sys.executable, dict(os.environ, PYTHONPATH=str(REPO))
    code = _SEED.format(lib="dbos" if schema == "dbos" else "waypoint")
    subprocess.run([py, "-c", code, db_url(name)], env=env, check=True, capture_output=True)
    return name


class Shapes:
    """The statements, shaped after the rows one real workflow left."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        ws = self._table(conn, "workflow_status")
        oo = self._table(conn, "operation_outputs")
        cur = conn.execute(f"SELECT * FROM {ws} LIMIT 1")
        assert cur.description is not None
        row = dict(zip([c.name for c in cur.description], cur.fetchone() or (), strict=True))
        # What the start writes: every column the library filled, but the outcome's.
        outcome_cols = {"output", "error", "completed_at", "status", "updated_at"}
        self.start_row = {
            k: v for k, v in row.items() if v is not None and k not in outcome_cols | {"status"}
        }
        self.output = row.get("output")
        cols = ", ".join(["status", *self.start_row])
        vals = ", ".join(["'PENDING'", *(f"%({k})s" for k in self.start_row)])
        self.sql_start = f"INSERT INTO {ws} ({cols}) VALUES ({vals})"
        done_cols = [c for c in ("output", "updated_at", "completed_at") if c in row]
        sets = ", ".join(["status = 'SUCCESS'", *(f"{c} = %({c})s" for c in done_cols)])
        self.done_cols = done_cols
        self.sql_done = f"UPDATE {ws} SET {sets} WHERE workflow_uuid = %(workflow_uuid)s"
        cur = conn.execute(f"SELECT * FROM {oo} LIMIT 1")
        assert cur.description is not None
        step = dict(zip([c.name for c in cur.description], cur.fetchone() or (), strict=True))
        self.step_row = {k: v for k, v in step.items() if v is not None}
        cols = ", ".join(self.step_row)
        vals = ", ".join(f"%({k})s" for k in self.step_row)
        self.sql_step = f"INSERT INTO {oo} ({cols}) VALUES ({vals})"
        self.indexes = {
            t: conn.execute(
                "SELECT count(*) FROM pg_indexes WHERE tablename = %s AND schemaname = %s",
                (t, s),
            ).fetchone()
            for s, t in (tuple(x.split(".")) for x in (ws, oo))
        }

    @staticmethod
    def _table(conn: psycopg.Connection[Any], table: str) -> str:
        row = conn.execute(
            "SELECT table_schema FROM information_schema.tables WHERE table_name = %s "
            "ORDER BY table_schema = 'public' LIMIT 1",
            (table,),
        ).fetchone()
        assert row is not None, f"no table {table}"
        return f"{row[0]}.{table}"


def workflow(conn: psycopg.Connection[Any], sh: Shapes, nsteps: int, hook: Any = None) -> None:
    """One workflow's commits, one after the other (``hook`` wraps each statement)."""
    wid = str(uuid.uuid4())
    now = int(time.time() * 1000)
    start = dict(sh.start_row, workflow_uuid=wid, created_at=now)
    if "updated_at" in sh.start_row:
        start["updated_at"] = now
    run = hook or (lambda kind, sql, params: conn.execute(sql, params, prepare=True))
    run("start", sh.sql_start, start)
    for i in range(nsteps):
        row = dict(sh.step_row, workflow_uuid=wid, function_id=i + 1)
        run("step", sh.sql_step, row)
    done: dict[str, Any] = {"workflow_uuid": wid, "output": sh.output}
    done.update(updated_at=now, completed_at=now)
    run("done", sh.sql_done, {k: done[k] for k in ("workflow_uuid", *sh.done_cols)})


class WpSql:
    """Waypoint's own three statements, built by its store (never opened) and run here."""

    def __init__(self, conn: psycopg.Connection[Any], url: str) -> None:
        from waypoint.storage.postgres.store import PostgresStore, _configure
        from waypoint.storage.records import NewWorkflow, StepRecord
        from waypoint.storage.registry import backend_for
        from waypoint.storage.sql_base import init_values, record_params

        _configure(conn)
        store = PostgresStore(backend_for(url)[1])
        self.sql_init, self.sql_record = store._sql_init, store._sql_record
        self.sql_complete = store._sql_complete
        row = conn.execute(
            "SELECT name, inputs, serialization, executor_id, application_version, "
            "application_id, application_name, output FROM dbos.workflow_status LIMIT 1"
        ).fetchone()
        assert row is not None
        # The one-row start takes its values positionally, updated_at last (``_init_top``).
        self.new = lambda wid, now: (
            *init_values(
                NewWorkflow(
                    wid,
                    "PENDING",
                    row[0],
                    None,
                    None,
                    row[1],
                    row[2],
                    wid[:8],
                    row[3],
                    row[4],
                    row[5],
                    row[6],
                    now,
                )
            ),
            now,
        )
        self.rec = lambda wid, fid, now: record_params(
            StepRecord(wid, fid, "step", row[7], None, row[2], wid[:8], now, now, None, row[6])
        )
        self.done = lambda wid, now: {
            "id": wid,
            "owner": wid[:8],
            "status": "SUCCESS",
            "output": row[7],
            "error": None,
            "now": now,
        }


def wp_workflow(conn: psycopg.Connection[Any], w: WpSql, nsteps: int, hook: Any = None) -> None:
    """One workflow's commits, as Waypoint's statements."""
    wid = str(uuid.uuid4())
    now = int(time.time() * 1000)
    run = hook or (lambda kind, sql, params: conn.execute(sql, params))
    run("start", w.sql_init, w.new(wid, now))
    for i in range(nsteps):
        run("step", w.sql_record, w.rec(wid, i + 1, now))
    run("done", w.sql_complete, w.done(wid, now))


def timed(seconds: float, op: Callable[[], None]) -> float:
    """Operations per second of ``op`` for ``seconds`` (after a short warm-up)."""
    for _ in range(20):
        op()
    n, t0 = 0, time.perf_counter()
    end = t0 + seconds
    while True:
        for _ in range(10):
            op()
        n += 10
        now = time.perf_counter()
        if now >= end:
            return n / (now - t0)


def backend_cpu(pid: int) -> float:
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9


def split(
    conn: psycopg.Connection[Any], one: Callable[..., None], n: int
) -> dict[str, dict[str, float]]:
    """Per statement kind, in microseconds: wall, client CPU, backend CPU (off the clock)."""
    pid = conn.info.backend_pid
    acc: dict[str, list[float]] = {}

    def hook(kind: str, sql: str, params: dict[str, Any]) -> None:
        s0, c0, t0 = backend_cpu(pid), time.thread_time(), time.perf_counter()
        conn.execute(sql, params, prepare=True)
        t1, c1, s1 = time.perf_counter(), time.thread_time(), backend_cpu(pid)
        a = acc.setdefault(kind, [0.0, 0.0, 0.0, 0.0])
        a[0] += t1 - t0
        a[1] += c1 - c0
        a[2] += s1 - s0
        a[3] += 1

    for _ in range(n):
        one(hook=hook)
    return {
        k: {
            "wall_us": a[0] / a[3] * 1e6,
            "client_us": a[1] / a[3] * 1e6,
            "server_us": a[2] / a[3] * 1e6,
        }
        for k, a in acc.items()
    }


def floor_conn() -> psycopg.Connection[Any]:
    name = f"bench_bound_floor{SUFFIX}"
    recreate(name)
    conn = psycopg.connect(db_url(name), autocommit=True)
    conn.execute("CREATE TABLE t (id bigserial PRIMARY KEY, v int)")
    return conn


def library_run(lib: str, workload: str, tree: Path = REPO) -> float:
    """One run of ``workloads.py`` for ``lib`` (Waypoint imported from ``tree``): workflows
    per second."""
    py = str(DBOS_PY) if lib == "dbos" else sys.executable
    env = dict(os.environ, BENCH_LIB=lib, PYTHONPATH=f"{tree}{os.pathsep}{REPO}")
    out = subprocess.run(
        [py, str(HERE / "workloads.py"), workload], env=env, capture_output=True, text=True
    )
    if out.returncode != 0:
        return float("nan")
    return float(json.loads(out.stdout.strip().splitlines()[-1])["metrics"]["wf_per_s"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=4.0, help="per variant and run")
    ap.add_argument("--schemas", default="waypoint,dbos")
    ap.add_argument("--dbos", action="store_true", help="run dbos's seq0/1/10 in the window")
    ap.add_argument("--waypoint", action="store_true", help="run Waypoint's seq0/1/10 too")
    ap.add_argument("--tree", action="append", default=[], help="a Waypoint to run as well")
    a = ap.parse_args()
    schemas = [s for s in a.schemas.split(",") if s != "dbos" or DBOS_PY.exists()]
    conns, shapes = {}, {}
    for schema in schemas:
        conns[schema] = psycopg.connect(db_url(seed(schema)), autocommit=True)
        shapes[schema] = Shapes(conns[schema])
    # A workflow of k steps, by variant: the plain statements on each schema, and Waypoint's.
    variants: dict[str, Callable[..., Callable[..., None]]] = {
        schema: (lambda c, sh: lambda k: partial(workflow, c, sh, k))(conns[schema], shapes[schema])
        for schema in schemas
    }
    if "waypoint" in schemas:
        url = db_url(f"bench_bound_waypoint{SUFFIX}")
        wconn = psycopg.connect(url, autocommit=True)
        wp = WpSql(wconn, url)
        variants["wpsql"] = lambda k: partial(wp_workflow, wconn, wp, k)
        conns["wpsql"] = wconn
    floor = floor_conn()
    libs: list[tuple[str, str, Path]] = [("dbos", "dbos", REPO)] if a.dbos else []
    libs += [("waypoint", "waypoint", REPO)] if a.waypoint else []
    libs += [(f"waypoint:{Path(t).resolve().name}", "waypoint", Path(t).resolve()) for t in a.tree]
    res: dict[str, list[float]] = {}
    loads: list[float] = []

    def note(key: str, value: float) -> None:
        res.setdefault(key, []).append(value)
        print(json.dumps({"variant": key, "value": round(value, 1), "load": os.getloadavg()[0]}))

    for rnd in range(a.runs):
        loads.append(os.getloadavg()[0])
        note(
            "floor autocommit INSERT/s",
            timed(
                a.seconds,
                lambda: floor.execute("INSERT INTO t (v) VALUES (%s)", (1,), prepare=True),
            ),
        )
        for name, make in variants.items():
            for k in STEPS:
                note(f"bound {name} seq{k} wf/s", timed(a.seconds, make(k)))
        for k in STEPS:  # the libraries alternate, in turned order every other round
            for label, lib, tree in libs if rnd % 2 == 0 else libs[::-1]:
                note(f"{label} seq{k} wf/s", library_run(lib, f"seq{k}", tree))
    splits = {name: split(conns[name], make(1), 500) for name, make in variants.items()}
    floor_split: dict[str, float] = {}
    pid = floor.info.backend_pid
    w = c = s = 0.0
    for _ in range(1000):
        s0, c0, t0 = backend_cpu(pid), time.thread_time(), time.perf_counter()
        floor.execute("INSERT INTO t (v) VALUES (%s)", (1,), prepare=True)
        w += time.perf_counter() - t0
        c += time.thread_time() - c0
        s += backend_cpu(pid) - s0
    floor_split = {"wall_us": w * 1e3, "client_us": c * 1e3, "server_us": s * 1e3}

    med = {k: statistics.median(v) for k, v in res.items()}
    fl = med["floor autocommit INSERT/s"]
    print(
        f"\n{a.runs} rounds, {a.seconds:.0f} s per bound variant; load average (1 min) "
        f"{min(loads):.1f}-{max(loads):.1f}; medians"
    )
    print(
        f"floor: {fl:,.0f} autocommit INSERTs/s; indexes: "
        + "; ".join(f"{s}: {shapes[s].indexes}" for s in schemas)
    )
    print("| variant | wf/s | steps/s | steps/s % floor | (n+2)/s % floor | x dbos |")
    print("| --- | --- | --- | --- | --- | --- |")
    for key, v in med.items():
        if key.startswith("floor"):
            continue
        k = int(key.rsplit(" seq", 1)[1].split()[0])
        dbos = med.get(f"dbos seq{k} wf/s")
        ratio = f"{v / dbos:.2f}" if dbos and key.split()[0] != "dbos" else ""
        steps = f"{v * k:,.0f}" if k else ""
        share = f"{v * k / fl * 100:.0f} %" if k else ""
        print(
            f"| {key[:-5]} | {v:,.0f} | {steps} | {share} | "
            f"{v * (k + 2) / fl * 100:.0f} % | {ratio} |"
        )
    print(
        "\nper statement (instrumented pass, microseconds): wall / client CPU / backend CPU / "
        "rest (wire, scheduling, WAL flush)"
    )
    rows = [("floor", "insert", floor_split)] + [
        (s, k, v) for s in splits for k, v in splits[s].items()
    ]
    for schema, kind, d in rows:
        rest = d["wall_us"] - d["client_us"] - d["server_us"]
        print(
            f"| {schema} | {kind} | {d['wall_us']:.0f} | {d['client_us']:.0f} | "
            f"{d['server_us']:.0f} | {rest:.0f} |"
        )


if __name__ == "__main__":
    main()
