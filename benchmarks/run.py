#!/usr/bin/env python3
"""Run the Waypoint-vs-DBOS benchmarks and print a markdown table (stdlib only).

    bash benchmarks/setup.sh && python3 benchmarks/run.py [--workloads seq10,threads32]
        [--runs 5] [--libs dbos,waypoint] [--quick]

Each workload runs --runs times, alternating libraries (dbos, waypoint, dbos, ...), each
run in a fresh subprocess with that library's interpreter. The database floor (plain
psycopg inserts) runs --runs times too. Raw results go to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
PYTHON = {"dbos": BENCH / ".venv-dbos/bin/python", "waypoint": REPO / ".venv/bin/python"}
WORKLOAD_FILE = BENCH / "workloads.py"
ALL = [
    "seq0",
    "seq1",
    "seq10",
    "threads32",
    "async32",
    "queue2000",
    "enqueue",
    "bulk_enqueue",
    "queue4p",
    "sendrecv",
    "sendrecv_wf",
    "recovery2000",
    "idle",
]
TIMEOUT_S = 1800
Record = dict[str, Any]


def lower_is_better(metric: str) -> bool:
    return metric.endswith("_ms") or "_ms_per_" in metric or metric in ("seconds", "queries_per_s")


def is_throughput(metric: str) -> bool:
    return metric.endswith("_per_s") and not lower_is_better(metric)


def child_env(lib: str | None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("BENCH_PHASE", None)
    if lib:
        env["BENCH_LIB"] = lib
    if lib == "waypoint":  # importable from the source tree even if not pip-installed
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def available(lib: str) -> str | None:
    """None if the library imports with its interpreter, else the reason."""
    py = PYTHON[lib]
    if not py.exists():
        return f"{py} missing (run benchmarks/setup.sh)"
    r = subprocess.run(
        [str(py), "-c", f"import {lib}; {lib}.DBOS"],
        capture_output=True,
        text=True,
        cwd=BENCH,
        env=child_env(lib),
    )
    return None if r.returncode == 0 else (r.stderr.strip().splitlines() or ["?"])[-1]


def run_one(py: Path, workload: str, lib: str | None, quick: bool) -> Record:
    cmd = [str(py), str(WORKLOAD_FILE), workload] + (["--quick"] if quick else [])
    t0 = time.time()
    try:
        p = subprocess.run(
            cmd, env=child_env(lib), capture_output=True, text=True, timeout=TIMEOUT_S, cwd=BENCH
        )
        out, err, rc = p.stdout, p.stderr, p.returncode
    except subprocess.TimeoutExpired as e:
        out, err, rc = str(e.stdout or ""), f"timeout after {TIMEOUT_S}s", -1
    rec: Record = {
        "workload": workload,
        "lib": lib or "floor",
        "rc": rc,
        "elapsed_s": round(time.time() - t0, 2),
    }
    for line in out.splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict) and obj.get("workload") == workload:
            rec.update(obj)
    if rc != 0 or "metrics" not in rec:
        rec["error"] = "\n".join(str(err).strip().splitlines()[-15:])
    return rec


def fmt(x: float | None) -> str:
    if x is None:
        return "n/a"
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}" if abs(x) < 1 else f"{x:.1f}"


def median(records: list[Record], workload: str, lib: str, metric: str) -> float | None:
    vals = [
        r["metrics"][metric]
        for r in records
        if r["workload"] == workload and r["lib"] == lib and metric in r.get("metrics", {})
    ]
    return statistics.median(vals) if vals else None


def table(records: list[Record], workloads: list[str], libs: list[str]) -> str:
    floor = median(records, "floor", "floor", "txn_per_s")
    floor_auto = median(records, "floor", "floor", "autocommit_per_s")
    runs = sum(1 for r in records if r["workload"] == "floor" and "metrics" in r)
    intro = (
        f"Database floor (plain psycopg, one connection, median of {runs}): "
        f"BEGIN/INSERT/COMMIT {fmt(floor)}/s, autocommit INSERT {fmt(floor_auto)}/s\n\n"
        if runs
        else ""
    )
    head = [
        "workload",
        "metric",
        "better",
        "dbos",
        "waypoint",
        "waypoint/dbos",
        "waypoint % floor (txn / autocommit)",
        "dbos % floor (txn / autocommit)",
    ]
    rows = [head, ["---"] * len(head)]

    def pct_floor(v: float | None, metric: str) -> str:
        if v is None or not is_throughput(metric) or not floor or not floor_auto:
            return "" if not is_throughput(metric) else "n/a"
        return f"{100 * v / floor:.1f}% / {100 * v / floor_auto:.1f}%"

    for w in workloads:
        metrics: list[str] = []
        for r in records:
            if r["workload"] == w:
                metrics += [m for m in r.get("metrics", {}) if m not in metrics]
        for m in metrics or ["(no result)"]:
            d = median(records, w, "dbos", m) if "dbos" in libs else None
            wp = median(records, w, "waypoint", m) if "waypoint" in libs else None
            ratio = f"{wp / d:.2f}" if d and wp is not None else "n/a"
            rows.append(
                [
                    w,
                    m,
                    "lower" if lower_is_better(m) else "higher",
                    fmt(d),
                    fmt(wp),
                    ratio,
                    pct_floor(wp, m),
                    pct_floor(d, m),
                ]
            )
    return intro + "\n".join("| " + " | ".join(r) + " |" for r in rows)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--workloads", default=",".join(ALL), help="comma-separated")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--libs", default="dbos,waypoint")
    ap.add_argument("--quick", action="store_true", help="smaller sizes (smoke test)")
    ap.add_argument("--no-floor", action="store_true", help="skip the database floor")
    a = ap.parse_args()
    workloads = [w for w in a.workloads.split(",") if w and w != "floor"]
    libs = [x for x in a.libs.split(",") if x]
    for x in workloads:
        if x not in ALL:
            ap.error(f"unknown workload {x!r}; choose from {', '.join(ALL)}")
    for x in libs:
        if x not in PYTHON:
            ap.error(f"unknown lib {x!r}; choose from dbos, waypoint")

    usable = []
    for lib in libs:
        why = available(lib)
        if why:
            print(f"[bench] {lib}: not available ({why}); reporting n/a", file=sys.stderr)
        else:
            usable.append(lib)

    stamp = time.strftime("%Y%m%d-%H%M%S")
    out_dir = BENCH / "results"
    out_dir.mkdir(exist_ok=True)
    raw_path = out_dir / f"{stamp}.jsonl"
    records: list[Record] = []

    def record(rec: Record) -> None:
        records.append(rec)
        with raw_path.open("a") as f:
            f.write(json.dumps(rec) + "\n")
        status = rec["metrics"] if "metrics" in rec else f"FAILED rc={rec['rc']}"
        print(
            f"[bench] {rec['workload']:<12} {rec['lib']:<8} {rec['elapsed_s']:>7.1f}s {status}",
            file=sys.stderr,
            flush=True,
        )
        if "error" in rec:
            print("    " + rec["error"].replace("\n", "\n    "), file=sys.stderr)

    floor_py = next((PYTHON[x] for x in ("dbos", "waypoint") if PYTHON[x].exists()), None)
    if not a.no_floor and floor_py:
        for _ in range(a.runs):
            record(run_one(floor_py, "floor", None, a.quick))
    for w in workloads:
        for _ in range(a.runs):
            for lib in usable:
                record(run_one(PYTHON[lib], w, lib, a.quick))

    md = table(records, workloads, libs)
    (out_dir / f"{stamp}.md").write_text(md + "\n")
    print(md)
    print(f"\nraw results: {raw_path}", file=sys.stderr)


if __name__ == "__main__":
    main()
