"""A chaos campaign: workers and producers under a seeded fault schedule, then the checker.

    python -m tests.chaos.campaign --minutes 3 --seed 1 --backend postgres [--workdir DIR]

PostgreSQL runs as PRIVATE servers this campaign starts (tests/private_pg.py; never the
shared one on 5432): a primary and a synchronous standby, each with its WAL on a small tmpfs
when mounting is permitted (root), each behind its own TCP proxy (tests/proxy.py: cut,
latency, black hole); workers w1, w2 and the producers use a multi-host URL over the two
proxies (``target_session_attrs=read-write``), so a ``failover`` is found as in production
(tests/chaos/cluster.py). w3 goes through pgbouncer in session mode (when installed), behind
a third proxy that follows the primary, and runs under libfaketime (when installed) for
wall-clock jumps. SQLite: one file, on a small tmpfs when permitted (a full disk), shared by
every process. Workers take over a peer silent for ``workload.DEAD_EXECUTOR_SEC``, so a
SIGSTOPped worker's work moves while it is frozen and its late checkpoints must be fenced.

The faults are drawn from the seed up front (``schedule``): the same seed gives the same
kinds, targets, gaps and durations, so a failing run replays (the timing of the processes
themselves is not reproducible). At the end the faults stop, the producers drain (each waits
for every workflow it started), the workers finish what is left, and the checker compares
the history with the database. Exit status 1 on any violation; the report (JSON, and a
table) names the seed and the fault schedule.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack, closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import psycopg

from tests import pgbouncer
from tests.chaos import checker, workload
from tests.chaos.cluster import Cluster, Tmpfs, can_mount
from tests.chaos.history import History
from tests.chaos.history import read as read_history
from tests.crash.harness import decode

REPO = Path(__file__).resolve().parents[2]
FAKETIME_LIB = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")
WORKERS = ["w1", "w2", "w3"]
PRODUCERS = ["p1", "p2"]
CLOCK_WORKER = "w3"

PG_FAULTS = ["pg_restart", "terminate", "net_cut", "latency", "blackhole", "failover"]
COMMON_FAULTS = ["kill", "pause", "disk_full", "clock_jump"]
WEIGHTS = {
    "kill": 5, "pause": 3, "pg_restart": 2, "terminate": 3, "net_cut": 2, "latency": 2,
    "blackhole": 1, "disk_full": 1, "clock_jump": 1, "failover": 1,
}  # fmt: skip

LIMITS = checker.Limits(
    global_concurrency={workload.Q_CONC: workload.GLOBAL_CONCURRENCY},
    partition_concurrency={workload.Q_PART: workload.PARTITION_CONCURRENCY},
    worker_concurrency={workload.Q_WORKER: workload.WORKER_CONCURRENCY},
    rate={workload.Q_RATE: (workload.RATE_LIMIT, workload.RATE_PERIOD)},
)


@dataclass
class Fault:
    at: float  # seconds after the campaign started (the earliest; faults never overlap)
    kind: str
    target: int  # index into the candidates (workers, backends), taken modulo their number
    duration: float
    param: float  # kind-specific: latency, clock offset, stop mode, backends to terminate

    def describe(self) -> str:
        return f"t+{self.at:.1f}s {self.kind} target={self.target} for {self.duration:.1f}s"


def schedule(seed: int, seconds: float, kinds: list[str]) -> list[Fault]:
    """The fault schedule for a seed: gaps of 1-5 s between faults, kinds by weight."""
    rng = random.Random(seed)
    out: list[Fault] = []
    t = 6.0  # let the fleet start first
    while t < seconds:
        kind = rng.choices(kinds, [WEIGHTS[k] for k in kinds])[0]
        duration = {
            "kill": rng.uniform(0, 2), "pause": rng.uniform(1, 6),
            "pg_restart": rng.uniform(0, 3), "terminate": 0.0, "net_cut": rng.uniform(1, 5),
            "latency": rng.uniform(3, 8), "blackhole": rng.uniform(3, 10),
            "disk_full": rng.uniform(2, 6), "clock_jump": rng.uniform(3, 10),
            "failover": rng.uniform(0, 1),
        }[kind]  # fmt: skip
        param = {
            "latency": rng.uniform(0.02, 0.25),
            "clock_jump": rng.choice([-1, 1]) * rng.randint(30, 300),
            "pg_restart": rng.random(),  # < 0.7: immediate (a crash), else fast
            "terminate": rng.randint(1, 3),
        }.get(kind, 0.0)
        out.append(Fault(t, kind, rng.randrange(1 << 16), duration, float(param)))
        t += duration + rng.uniform(1, 5)
    return out


@dataclass
class Proc:
    name: str
    role: str
    popen: subprocess.Popen[bytes]
    planned_exit: bool = False


@dataclass
class Campaign:
    seed: int
    seconds: float
    backend: str
    workdir: Path
    stack: ExitStack = field(default_factory=ExitStack)
    procs: dict[str, Proc] = field(default_factory=dict)
    unplanned_exits: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.hist_dir = self.workdir / "history"
        self.hist_dir.mkdir(parents=True, exist_ok=True)
        self.history = History(str(self.hist_dir), "nemesis")
        self.lock = threading.RLock()
        self.cluster: Optional[Cluster] = None
        self.sqlite_disk: Optional[Tmpfs] = None
        self.clock_file = self.workdir / "faketime"
        self.clock_file.write_text("+0\n")
        self.faketime = FAKETIME_LIB.exists()
        self.stop_monitor = threading.Event()
        self.drain_file = self.workdir / "draining"

    # -- setup -----------------------------------------------------------------------------------
    def setup(self) -> None:
        mount = can_mount()
        if self.backend == "postgres":
            if not mount:
                self.notes.append("disk_full skipped: cannot mount a tmpfs (not root)")
            self.cluster = Cluster(self.stack, mount)
            self.url = self.cluster.url()
            self.bouncer_url = self._pgbouncer()
        else:
            base = Path(tempfile.mkdtemp(prefix="waypoint-chaos-sqlite-", dir="/tmp"))
            self.stack.callback(lambda: shutil.rmtree(base, ignore_errors=True))
            if mount:
                self.sqlite_disk = Tmpfs(base / "disk", 48)
                self.stack.callback(self.sqlite_disk.close)
                dbdir = base / "disk"
            else:
                self.notes.append("disk_full skipped: cannot mount a tmpfs (not root)")
                dbdir = base
            self.url = self.sqlite_url = f"sqlite:///{dbdir}/chaos.sqlite"
            self.bouncer_url = None

    def _pgbouncer(self) -> Optional[str]:
        """pgbouncer in session mode, itself behind the virtual-IP proxy (network faults reach
        it; a failover moves it)."""
        if not pgbouncer.installed():
            self.notes.append("pgbouncer not installed: every worker connects through the proxy")
            return None
        assert self.cluster is not None
        tmp = Path(tempfile.mkdtemp(prefix="waypoint-chaos-bouncer-", dir="/tmp"))
        self.stack.callback(lambda: shutil.rmtree(tmp, ignore_errors=True))
        try:
            proc, port = pgbouncer.start(tmp, "session", "127.0.0.1", self.cluster.vip.port, 40)
        except RuntimeError as exc:
            self.notes.append(f"pgbouncer did not start ({exc}): workers use the proxy")
            return None
        self.stack.callback(lambda: (proc.kill(), proc.wait()))
        return f"postgresql://postgres@127.0.0.1:{port}/chaos"

    # -- processes -------------------------------------------------------------------------------
    def spawn(self, name: str) -> Proc:
        role = "worker" if name.startswith("w") else "producer"
        url = self.url
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DBOS__", "FAKETIME"))}
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONPATH"] = str(REPO)
        env["CHAOS_DRAIN_FILE"] = str(self.drain_file)
        if name == CLOCK_WORKER:
            if self.bouncer_url:
                url = self.bouncer_url
            env["CHAOS_SKIP_QUEUES"] = workload.Q_RATE  # its SQLite clock would skew the limiter
            if self.faketime:
                env["LD_PRELOAD"] = str(FAKETIME_LIB)
                env["FAKETIME_TIMESTAMP_FILE"] = str(self.clock_file)
                env["FAKETIME_CACHE_DURATION"] = "1"
                env["FAKETIME_DONT_FAKE_MONOTONIC"] = "1"
                env["FAKETIME_DONT_RESET"] = "1"
        with open(self.workdir / f"{name}.log", "ab") as log:
            popen = subprocess.Popen(
                [sys.executable, "-m", "tests.chaos.workload", role, url, str(self.hist_dir),
                 name, str(self.seed)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                cwd=str(REPO), start_new_session=True,
            )  # fmt: skip
        proc = Proc(name, role, popen)
        with self.lock:
            self.procs[name] = proc
        return proc

    def monitor(self) -> None:
        """Restart a worker that exited without being told to (and note it)."""
        while not self.stop_monitor.wait(0.5):
            with self.lock:
                for name, p in list(self.procs.items()):
                    if p.role == "worker" and not p.planned_exit and p.popen.poll() is not None:
                        rc = p.popen.returncode
                        why = self.last_line(name)
                        self.unplanned_exits.append(f"{name} pid {p.popen.pid} rc {rc}: {why}")
                        self.history.write("event", "worker_exit", target=name, pid=p.popen.pid)
                        self.spawn(name)

    def last_line(self, name: str) -> str:
        """The last line a process logged (why it exited), cut short."""
        try:
            with open(self.workdir / f"{name}.log", "rb") as log:
                log.seek(0, os.SEEK_END)
                log.seek(max(0, log.tell() - 4096))
                lines = log.read().decode(errors="replace").strip().splitlines()
        except OSError:
            return "<no log>"
        return lines[-1][:300] if lines else "<no output>"

    def wait_launched(self, names: list[str], timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            recs = read_history(self.hist_dir)
            up = {r["proc"] for r in recs if r["f"] == "launched"}
            if all(n in up for n in names):
                return
            time.sleep(0.2)
        raise RuntimeError(f"{names} did not launch:\n{self.logs()}")

    def logs(self, chars: int = 3000) -> str:
        out = []
        for name in WORKERS + PRODUCERS:
            path = self.workdir / f"{name}.log"
            if path.exists():
                out.append(f"--- {name}.log ---\n{path.read_text(errors='replace')[-chars:]}")
        return "\n".join(out)

    # -- faults ----------------------------------------------------------------------------------
    def inject(self, f: Fault) -> None:
        op = self.history.invoke("fault", kind=f.kind, target=f.target, duration=f.duration)
        pids: list[int] = []
        if f.kind in ("kill", "pause", "clock_jump"):
            name = CLOCK_WORKER if f.kind == "clock_jump" else WORKERS[f.target % len(WORKERS)]
            with self.lock:
                proc = self.procs[name]
            if f.kind == "kill":
                with self.lock:
                    proc.planned_exit = True
                    os.kill(proc.popen.pid, signal.SIGKILL)
                proc.popen.wait()
                time.sleep(f.duration)
                pids = [self.spawn(name).popen.pid]
            elif f.kind == "pause":
                os.kill(proc.popen.pid, signal.SIGSTOP)
                time.sleep(f.duration)
                os.kill(proc.popen.pid, signal.SIGCONT)
                pids = [proc.popen.pid]
            else:
                offset = int(f.param)
                self.clock_file.write_text(f"{offset:+d}\n")
                time.sleep(f.duration)
                self.clock_file.write_text("+0\n")
                pids = [proc.popen.pid]
        elif f.kind == "pg_restart":
            assert self.cluster is not None
            self.cluster.primary.stop("immediate" if f.param < 0.7 else "fast")
            time.sleep(f.duration)
            self.cluster.primary.start()
        elif f.kind == "terminate":
            assert self.cluster is not None
            url = self.cluster.direct_url()
            with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
                rows = conn.execute(
                    "SELECT pid FROM pg_stat_activity WHERE datname = 'chaos' "
                    "AND pid <> pg_backend_pid() ORDER BY pid"
                ).fetchall()
                rng = random.Random(f.target)
                victims = rng.sample([r[0] for r in rows], min(len(rows), int(f.param)))
                for pid in victims:
                    conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
        elif f.kind in ("net_cut", "latency", "blackhole"):
            assert self.cluster is not None
            proxies = self.cluster.proxies()
            for proxy in proxies:
                if f.kind == "net_cut":
                    proxy.cut()
                elif f.kind == "latency":
                    proxy.latency = f.param
                else:
                    proxy.blackhole()
            time.sleep(f.duration)
            for proxy in proxies:
                proxy.restore()
        elif f.kind == "disk_full":
            disk = self.cluster.disk if self.cluster is not None else self.sqlite_disk
            assert disk is not None
            disk.fill()
            time.sleep(f.duration)
            disk.free()
            if self.cluster is not None:
                self._pg_back()
        elif f.kind == "failover":
            assert self.cluster is not None
            self.cluster.failover(f.duration)
        self.history.complete("ok", "fault", op, kind=f.kind, pids=pids)
        if f.kind == "failover":
            # Not part of the fault (the new primary already serves): a standby again, so
            # the next failover loses nothing either. No other fault runs meanwhile.
            assert self.cluster is not None
            began = time.monotonic()
            self.cluster.rebuild_standby()
            self.history.write("event", "standby_rebuilt", seconds=time.monotonic() - began)

    def _pg_back(self) -> None:
        """After a full WAL disk the server PANICs and restarts itself; if it gave up, start it."""
        assert self.cluster is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with psycopg.connect(self.cluster.direct_url(), connect_timeout=3) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError:
                if not self.cluster.primary.running():
                    self.notes.append("PostgreSQL stopped after a full WAL disk; restarted")
                    self.cluster.primary.start()
                time.sleep(0.5)

    def kinds(self) -> list[str]:
        kinds = ["kill", "pause"]
        if self.backend == "postgres":
            kinds += PG_FAULTS
        if self.sqlite_disk is not None or (self.cluster is not None and self.cluster.disk):
            kinds.append("disk_full")
        if self.faketime:
            kinds.append("clock_jump")
        else:
            self.notes.append("clock_jump skipped: libfaketime not installed (apt faketime)")
        return kinds

    # -- the run ---------------------------------------------------------------------------------
    def run(self) -> tuple[checker.Report, list[Fault]]:
        self.setup()
        faults = schedule(self.seed, self.seconds, self.kinds())
        self.spawn(WORKERS[0])
        self.wait_launched([WORKERS[0]])  # it migrates the schema; then everyone else
        for name in WORKERS[1:]:
            self.spawn(name)
        self.wait_launched(WORKERS)
        for name in PRODUCERS:
            self.spawn(name)
        self.wait_launched(PRODUCERS)
        threading.Thread(target=self.monitor, daemon=True).start()
        t0 = time.monotonic()
        self.history.write("event", "campaign", seed=self.seed, seconds=self.seconds)
        # the true wall-minus-monotonic skew (the nemesis is never faked): the checker's reference
        self.history.write("event", "clock", skew=time.time() - time.monotonic())
        for f in faults:
            delay = t0 + f.at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self.inject(f)
        rest = t0 + self.seconds - time.monotonic()
        if rest > 0:
            time.sleep(rest)
        self.history.write("event", "faults_end")
        self.drain()
        records = read_history(self.hist_dir)
        report = checker.check(records, self.snapshot(), LIMITS)
        return report, faults

    def drain(self, timeout: float = 300) -> None:
        """Producers finish (each waits for all it started), then the work left drains."""
        with self.lock:
            for name in PRODUCERS:
                os.kill(self.procs[name].popen.pid, signal.SIGTERM)
        self.drain_file.touch()  # workers: stop starting workflows of their own
        deadline = time.monotonic() + timeout
        for name in PRODUCERS:
            p = self.procs[name].popen
            try:
                p.wait(max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.notes.append(f"{name} did not finish its waiters within {timeout}s")
                p.kill()
                p.wait()
        while time.monotonic() < deadline and self.active() > 0:
            time.sleep(1)
        self.stop_monitor.set()
        with self.lock:
            for p in self.procs.values():
                p.planned_exit = True
                if p.popen.poll() is None:
                    os.kill(p.popen.pid, signal.SIGKILL)
                    p.popen.wait()

    def _query(self, sql: str) -> list[tuple[Any, ...]]:
        if self.backend == "sqlite":
            path = self.sqlite_url.split("sqlite:///", 1)[1]
            with closing(sqlite3.connect(path, timeout=60)) as conn:
                return list(conn.execute(sql).fetchall())
        assert self.cluster is not None
        url = self.cluster.direct_url()
        with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
            conn.execute("SET search_path TO dbos")
            return list(conn.execute(sql).fetchall())  # type: ignore[arg-type]

    def active(self) -> int:
        rows = self._query(
            "SELECT count(*) FROM workflow_status "
            "WHERE status IN ('PENDING', 'ENQUEUED', 'DELAYED')"
        )
        return int(rows[0][0])

    def snapshot(self) -> dict[str, checker.DbRow]:
        rows = self._query(
            "SELECT workflow_uuid, status, name, output, serialization, queue_name, "
            "started_at_epoch_ms, queue_partition_key, error FROM workflow_status"
        )
        out = {}
        for wf, status, name, output, ser, queue, started, part, error in rows:
            try:
                value = decode(output, ser)
            except Exception:
                value = None
            try:
                err = None if error is None else repr(decode(error, ser))
            except Exception:
                err = str(error)[:200]
            out[wf] = checker.DbRow(status, name, value, queue, started, part, err)
        return out

    def close(self) -> None:
        self.stop_monitor.set()
        with self.lock:
            for p in self.procs.values():
                if p.popen.poll() is None:
                    os.kill(p.popen.pid, signal.SIGKILL)
                    p.popen.wait()
        self.stack.close()


def render(report: checker.Report, faults: list[Fault], c: Campaign) -> str:
    lines = [
        f"chaos campaign: backend={c.backend} seed={c.seed} minutes={c.seconds / 60:g}",
        f"faults injected: {json.dumps(report.counts.get('faults', {}))}",
        f"operations: {json.dumps(report.counts.get('operations', {}))}",
    ]
    for key in ("workflows", "errors", "steps", "takeovers", "messages", "events",
                "queues_max_seen", "recovery_seconds", "faults_without_recovery",
                "sleeps_woken_early"):  # fmt: skip
        lines.append(f"{key}: {json.dumps(report.counts.get(key))}")
    lines.append(f"worker exits not caused by a fault: {c.unplanned_exits or 'none'}")
    lines += [f"note: {n}" for n in c.notes]
    lines.append(f"violations: {json.dumps(report.by_kind()) if report.violations else 0}")
    for kind, detail in report.violations[:50]:
        lines.append(f"  VIOLATION {kind}: {detail}")
    if report.violations:
        lines.append(f"seed {c.seed}; fault schedule:")
        lines += [f"  {f.describe()}" for f in faults]
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--minutes", type=float, default=3.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--backend", choices=["postgres", "sqlite"], default="postgres")
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="waypoint-chaos-"))
    workdir.mkdir(parents=True, exist_ok=True)
    c = Campaign(args.seed, args.minutes * 60, args.backend, workdir)
    try:
        report, faults = c.run()
    except BaseException:
        print(c.logs(), file=sys.stderr)
        raise
    finally:
        c.close()
    out = {
        "backend": c.backend, "seed": c.seed, "minutes": args.minutes, "counts": report.counts,
        "violations": report.violations, "notes": c.notes, "unplanned_exits": c.unplanned_exits,
        "schedule": [f.describe() for f in faults],
    }  # fmt: skip
    (workdir / "report.json").write_text(json.dumps(out, indent=2))
    print(render(report, faults, c))
    print(f"report: {workdir / 'report.json'}; history: {workdir / 'history'}")
    return 1 if report.violations else 0


if __name__ == "__main__":
    sys.exit(main())
