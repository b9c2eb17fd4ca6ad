"""Failover of the system database: a primary and a streaming standby on loopback, private
servers started by the test (tests/private_pg.py, Debian's PostgreSQL 15 binaries when
installed), the workers connected with a multi-host URL
``postgresql://postgres@127.0.0.1:P1,127.0.0.1:P2/db?target_session_attrs=read-write``.

Under a running workload (tests/crash/failover_app.py in two processes: direct workflows
with steps, durable sleeps and events, queued workflows, messages across the processes), the
primary is stopped hard (``pg_ctl stop -m immediate``) and the standby promoted.

- Synchronous replication: nothing is lost. Every workflow completes, no step body runs
  twice, every acknowledged start, enqueue, send and set_event is there, no waiter hangs,
  no process restarts, and the LISTEN connections move to the new primary (the workers run
  with no safety re-reads, so a message from the other process arrives only by NOTIFY).
- Asynchronous replication: commits acknowledged by the primary but not yet streamed are
  lost (the tests make that window wide by stopping the primary's WAL sender with SIGSTOP).
  What is lost is counted, and Waypoint fails safe: after the workers restart, a step whose
  checkpoint was lost runs again, and every workflow that completes ran every one of its
  steps; workers that survive the failover finish their work without a restart (a lost
  completion is written again, a lost workflow is reported to its handle, no waiter hangs).

The pause (from the kill to the first step that starts after the promotion) and the
failover itself are measured and printed, never asserted: speed lives in benchmarks/.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, TypeVar

import psycopg
import pytest

from tests.conftest import requires_postgres
from tests.crash import ledger as ledgerlib
from tests.crash.harness import APP_VERSION, Proc
from tests.private_pg import PrivatePostgres, private_postgres, start_on_free_port

APP = Path(__file__).with_name("failover_app.py")
DEBIAN_15 = Path("/usr/lib/postgresql/15/bin")
CHAIN_STEPS = 6
T = TypeVar("T")

pytestmark = [requires_postgres, pytest.mark.crash, pytest.mark.timeout(900)]


@dataclass
class Pair:
    primary: PrivatePostgres
    standby: PrivatePostgres

    def url(self, database: str) -> str:
        return (
            f"postgresql://postgres@127.0.0.1:{self.primary.port},127.0.0.1:{self.standby.port}"
            f"/{database}?target_session_attrs=read-write"
        )


@contextmanager
def replicated_pair(synchronous: bool) -> Iterator[Pair]:
    """A primary and a streaming standby named ``standby``; with ``synchronous`` the primary
    waits for the standby to flush every commit before acknowledging it."""
    bindir = DEBIAN_15 if (DEBIAN_15 / "pg_ctl").exists() else None
    with private_postgres(bindir) as primary:
        standby = PrivatePostgres.standby_of(primary)
        try:
            start_on_free_port(standby)
            poll("the standby to stream", lambda: primary.sql(
                "SELECT 1 FROM pg_stat_replication WHERE application_name = 'standby' "
                "AND state = 'streaming'"
            ))  # fmt: skip
            if synchronous:
                primary.sql("ALTER SYSTEM SET synchronous_standby_names = 'standby'")
                primary.sql("SELECT pg_reload_conf()")
                poll("the standby to be synchronous", lambda: primary.sql(
                    "SELECT 1 FROM pg_stat_replication WHERE sync_state = 'sync'"
                ))  # fmt: skip
            yield Pair(primary, standby)
        finally:
            standby.destroy()


def poll(what: str, predicate: Callable[[], Optional[T]], timeout: float = 120) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


class Workload:
    """Two worker processes (tests/crash/failover_app.py), each the other's message peer,
    and their side-effect ledger."""

    def __init__(self, url: str, workdir: Path) -> None:
        self.url = url
        self.workdir = workdir
        self.ledger_path = str(workdir / "ledger.sqlite")
        self.stop_file = workdir / "stop"
        ledgerlib.create(self.ledger_path)
        self.procs: dict[str, Proc] = {}

    def spawn(self, name: str, peer: str) -> Proc:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DBOS__")}
        env.update(DBOS__APPVERSION=APP_VERSION, PYTHONUNBUFFERED="1")
        env["FAILOVER_NO_SAFETY_POLL"] = "1"
        run = len([p for p in self.procs if p.startswith(name)])
        out = self.workdir / f"{name}-{run}.stdout"
        err = self.workdir / f"{name}-{run}.stderr"
        with open(out, "wb") as fo, open(err, "wb") as fe:
            popen = subprocess.Popen(
                [sys.executable, str(APP), self.url, self.ledger_path, name, peer,
                 str(self.stop_file)],
                stdout=fo, stderr=fe, stdin=subprocess.DEVNULL, env=env, cwd=str(self.workdir),
            )  # fmt: skip
        proc = Proc(f"{name}-{run}", popen, out, err, time.time())
        self.procs[proc.name] = proc
        return proc

    def start(self) -> tuple[Proc, Proc]:
        a = self.spawn("wa", "wb")
        self.wait("wa to launch (it migrates the schema)", lambda: self.event_times("launched"))
        b = self.spawn("wb", "wa")
        self.wait("wb to launch", lambda: [e for _, e, _ in self.events()].count("launched") == 2)
        return a, b

    def wait(self, what: str, predicate: Callable[[], Any], timeout: float = 180) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            for p in self.procs.values():
                if not p.alive() and p.popen.returncode not in (0, -signal.SIGKILL):
                    raise AssertionError(f"{p.name} died waiting for {what}:\n{p.diagnostics()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}\n{self.diagnostics()}")
            time.sleep(0.05)

    def diagnostics(self) -> str:
        return "\n".join(p.diagnostics() for p in self.procs.values())

    def cleanup(self) -> None:
        for p in self.procs.values():
            p.reap()

    # -- the ledger -------------------------------------------------------------------------------
    def steps(self) -> list[ledgerlib.Row]:
        return ledgerlib.read(self.ledger_path)

    def events(self) -> list[tuple[int, str, float]]:
        return ledgerlib.events(self.ledger_path)

    def event_times(self, prefix: str) -> dict[str, float]:
        """The ledger events starting with ``prefix``: the rest of the text -> first time."""
        out: dict[str, float] = {}
        for _, text, t in self.events():
            if text.startswith(prefix):
                out.setdefault(text[len(prefix) :], t)
        return out

    def step_starts_after(self, t: float) -> list[ledgerlib.Row]:
        return [r for r in self.steps() if r.phase == "start" and r.t > t]


def system_rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
        return list(conn.execute(sql.replace("{s}", "dbos")).fetchall())


def listening_sessions(server: PrivatePostgres, database: str) -> int:
    """Sessions on ``server`` whose last statement was the listener's LISTEN check."""
    rows = server.sql(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = "
        f"'{database}' AND query = 'SELECT pg_listening_channels()'"
    )
    return int(str(rows[0][0]))


def report(label: str, figures: dict[str, Any]) -> None:
    """Print the measured figures (run pytest with -s to see them) and keep them beside the
    test's files."""
    line = f"FAILOVER {label}: " + json.dumps(figures)
    print(line)
    sys.stderr.write(line + "\n")


def test_failover_to_a_synchronous_standby_loses_nothing(tmp_path: Path) -> None:
    with replicated_pair(synchronous=True) as pair:
        pair.primary.create_database("failover")
        w = Workload(pair.url("failover"), tmp_path)
        try:
            a, b = w.start()
            # The workload runs: steps checkpoint, messages cross between the processes.
            w.wait("work before the failover", lambda: len(w.step_starts_after(0)) >= 40
                   and len(w.event_times("recv:")) >= 4)  # fmt: skip
            assert listening_sessions(pair.primary, "failover") == 2

            t_kill = time.time()
            pair.primary.stop("immediate")
            pair.standby.promote()
            t_promoted = time.time()

            # Work resumes on the new primary, and messages sent after the failover by one
            # process reach the other: only a notification can deliver them (no safety polls).
            w.wait("steps after the failover", lambda: len(w.step_starts_after(t_promoted)) >= 40)
            sent_after = lambda: {  # noqa: E731
                m for m, t in w.event_times("ack:send:").items() if t > t_promoted
            }
            w.wait("messages sent after the failover to arrive",
                   lambda: len(sent_after() & set(w.event_times("recv:"))) >= 6)  # fmt: skip
            w.wait("both listeners on the new primary",
                   lambda: listening_sessions(pair.standby, "failover") == 2)  # fmt: skip

            w.stop_file.touch()
            outputs = [a.wait_exit(300), b.wait_exit(300)]
            # No process restarted: the two original workers finished the work themselves.
            assert {o["pid"] for o in outputs} == {a.pid, b.pid}

            url = pair.url("failover")
            statuses = dict(
                system_rows(url, "SELECT workflow_uuid, status FROM {s}.workflow_status")
            )
            acked = set(w.event_times("ack:start:")) | set(w.event_times("ack:enqueue:"))
            assert acked, "the workload started nothing"
            # Every acknowledged start and enqueue exists and completed with its result.
            assert {wid: statuses.get(wid) for wid in acked} == {wid: "SUCCESS" for wid in acked}
            results: dict[str, Any] = {}
            for o in outputs:
                results.update(o["results"])
            expected = sum(k * 10 for k in range(CHAIN_STEPS))
            assert set(results) == acked and set(results.values()) == {expected}

            # No step body ran twice, and every step of every workflow is checkpointed.
            starts = Counter((r.workflow_id, r.step_index) for r in w.steps() if r.phase == "start")
            assert {k: n for k, n in starts.items() if n != 1} == {}
            assert set(starts) == {(wid, k) for wid in acked for k in range(CHAIN_STEPS)}
            checkpoints = system_rows(url, "SELECT workflow_uuid, count(*) FROM "
                                      "{s}.operation_outputs WHERE function_name = 'work' "
                                      "GROUP BY workflow_uuid")  # fmt: skip
            assert dict(checkpoints) == {wid: CHAIN_STEPS for wid in acked}

            # Every acknowledged set_event is stored.
            events = {f"{wf}:{key}" for wf, key in system_rows(
                url, "SELECT workflow_uuid, key FROM {s}.workflow_events")}  # fmt: skip
            acked_events = set(w.event_times("ack:event:"))
            assert acked_events and acked_events <= events

            # Every acknowledged message arrived exactly once, in the peer's collector.
            received = [m for o in outputs for m in o["received"]]
            acked_sends = set(w.event_times("ack:send:"))
            assert Counter(received) == Counter(acked_sends)

            # Measured, not asserted: the failover (kill to promoted) and the pause (kill to
            # the first step started after the promotion), and how long the messages sent
            # after the failover took to arrive in the other process.
            sends, recvs = w.event_times("ack:send:"), w.event_times("recv:")
            latencies = [recvs[m] - sends[m] for m in sent_after() if m in recvs]
            resumed = min(r.t for r in w.step_starts_after(t_promoted))
            report("synchronous", {
                "failover_s": round(t_promoted - t_kill, 2),
                "pause_s": round(resumed - t_kill, 2),
                "max_wakeup_after_failover_s": round(max(latencies), 3),
                "workflows": len(acked),
                "messages": len(acked_sends),
            })  # fmt: skip
        finally:
            w.cleanup()


def _state(server: PrivatePostgres) -> tuple[set[tuple[str, int]], dict[str, str]]:
    """(the step checkpoints, each workflow's status) on ``server``'s failover database."""
    url = server.url("failover")
    checkpoints = system_rows(
        url, "SELECT workflow_uuid, function_id FROM {s}.operation_outputs "
        "WHERE function_name = 'work'",
    )  # fmt: skip
    statuses = system_rows(url, "SELECT workflow_uuid, status FROM {s}.workflow_status")
    return {(str(w), int(f)) for w, f in checkpoints}, {str(w): str(s) for w, s in statuses}


def fail_over_losing_a_window(pair: Pair, w: Workload) -> tuple[float, dict[str, str]]:
    """Fail over to the asynchronous standby with acknowledged commits it never received:
    the primary's WAL sender stops (SIGSTOP) while the primary goes on acknowledging commits,
    then the primary is killed (its postmaster SIGKILLs the stopped sender after 5 s, so
    what it held is never sent) and the standby promoted. Returns the time just before the
    kill and the workflows' statuses on the primary then."""
    w.wait("work before the failover", lambda: len(w.step_starts_after(0)) >= 40)
    sender = int(str(pair.primary.sql("SELECT pid FROM pg_stat_replication")[0][0]))
    os.kill(sender, signal.SIGSTOP)
    base = len(_state(pair.primary)[0])
    w.wait("commits the standby has not received",
           lambda: len(_state(pair.primary)[0]) >= base + 30)  # fmt: skip
    statuses = _state(pair.primary)[1]
    t_cut = time.time()
    pair.primary.stop("immediate")
    pair.standby.promote()
    return t_cut, statuses


def test_failover_to_an_asynchronous_standby_fails_safe(tmp_path: Path) -> None:
    with replicated_pair(synchronous=False) as pair:
        pair.primary.create_database("failover")
        w = Workload(pair.url("failover"), tmp_path)
        try:
            a, b = w.start()
            t_cut, _ = fail_over_losing_a_window(pair, w)
            t_promoted = time.time()
            kept, statuses_after = _state(pair.standby)
            # A checkpoint was acknowledged once its workflow went on to the next step.
            acknowledged = {(r.workflow_id, r.step_index - 1) for r in w.steps()
                            if r.phase == "start" and r.step_index > 0 and r.t < t_cut}  # fmt: skip
            lost = acknowledged - kept
            acked_workflows = {wf for prefix in ("ack:start:", "ack:enqueue:")
                               for wf, t in w.event_times(prefix).items() if t < t_cut}  # fmt: skip
            lost_workflows = acked_workflows - set(statuses_after)
            # What asynchronous replication loses: commits the primary acknowledged.
            assert lost, "no acknowledged checkpoint was lost: the window did not open"

            # The workers go on against the new primary; then they crash and start again, so
            # everything left unfinished is recovered from what the new primary holds.
            w.wait("steps after the failover", lambda: len(w.step_starts_after(t_promoted)) >= 20)
            for p in (a, b):
                p.sigkill()
            w.stop_file.touch()
            a2, b2 = w.spawn("wa", "wb"), w.spawn("wb", "wa")
            outputs = [a2.wait_exit(300), b2.wait_exit(300)]

            kept_final, statuses_final = _state(pair.standby)
            chains = {wf for wf in statuses_final if not wf.startswith("collector-")}
            expected = sum(k * 10 for k in range(CHAIN_STEPS))
            # Every workflow the new primary knows completes.
            assert {wf: statuses_final[wf] for wf in chains} == {wf: "SUCCESS" for wf in chains}
            results = dict(system_rows(pair.url("failover"),
                "SELECT workflow_uuid, output FROM {s}.workflow_status "
                "WHERE workflow_uuid NOT LIKE 'collector-%'"))  # fmt: skip
            assert len(results) == len(chains)
            # Never a silently skipped step: every step of every completed workflow ran.
            starts = Counter((r.workflow_id, r.step_index) for r in w.steps() if r.phase == "start")
            assert all(starts[(wf, k)] >= 1 for wf in chains for k in range(CHAIN_STEPS))
            # A step whose acknowledged checkpoint was lost and is checkpointed again ran
            # again (it was not taken as done); those not checkpointed again belong to
            # workflows that the surviving process finished past the hole, or that were lost
            # whole.
            rerun = {key for key in lost if key in kept_final}
            assert all(starts[key] >= 2 for key in rerun)
            holes = {key for key in lost if key not in kept_final and key[0] in chains}
            report("asynchronous", {
                "lost_checkpoints": len(lost),
                "lost_workflows": len(lost_workflows),
                "rerun_steps": len(rerun),
                "holes_in_finished_workflows": len(holes),
                "workflows": len(chains),
                "expected_result": expected,
                "outputs": [len(o["results"]) for o in outputs],
            })  # fmt: skip
        finally:
            w.cleanup()


def test_processes_surviving_a_failover_to_an_asynchronous_standby_finish_their_work(
    tmp_path: Path,
) -> None:
    """The same lost window, but the workers go on to the end without a restart: no waiter
    hangs (a workflow whose row was lost is reported as such to its handle), and every
    workflow on the new primary completes. A completion the standby never received is
    written again: the process sees the new timeline when its listener reconnects."""
    with replicated_pair(synchronous=False) as pair:
        pair.primary.create_database("failover")
        w = Workload(pair.url("failover"), tmp_path)
        try:
            a, b = w.start()
            _, statuses_before = fail_over_losing_a_window(pair, w)
            finished_before = {wf for wf, st in statuses_before.items() if st == "SUCCESS"}
            t_promoted = time.time()
            _, statuses_after = _state(pair.standby)
            lost_completions = {wf for wf in finished_before if statuses_after.get(wf) == "PENDING"}
            w.wait("steps after the failover", lambda: len(w.step_starts_after(t_promoted)) >= 20)
            w.stop_file.touch()
            outputs = [a.wait_exit(300), b.wait_exit(300)]  # no waiter hangs

            _, statuses_final = _state(pair.standby)
            chains = {wf for wf in statuses_final if not wf.startswith("collector-")}
            assert {wf: statuses_final[wf] for wf in chains} == {wf: "SUCCESS" for wf in chains}
            lost = {wf for o in outputs for wf in o["lost"]}
            assert not lost & set(statuses_final), "a workflow reported lost exists"
            expected = sum(k * 10 for k in range(CHAIN_STEPS))
            assert {v for o in outputs for v in o["results"].values()} <= {expected}
            report("asynchronous, processes surviving", {
                "completions_lost_then_rewritten": len(lost_completions),
                "workflows_reported_lost": len(lost),
                "workflows": len(chains),
            })  # fmt: skip
        finally:
            w.cleanup()


def test_a_launch_waits_for_a_standby_to_be_promoted(monkeypatch: pytest.MonkeyPatch) -> None:
    """A process started while its database is a standby not yet promoted (or restarting, or
    behind a pgbouncer whose server login fails) gets a transient error from the first write:
    it waits for the database, up to a bound, instead of failing its launch at once. A
    database that stays unwritable past the bound is reported, with the server's reason."""
    import threading

    from waypoint import DBOS
    from waypoint.error import DBOSInitializationError
    from waypoint.storage.postgres import faults as pgstore

    with replicated_pair(synchronous=False) as pair:
        pair.primary.create_database("launchwait")
        poll("the database on the standby", lambda: pair.standby.sql(
            "SELECT 1 FROM pg_database WHERE datname = 'launchwait'"
        ))  # fmt: skip
        standby_url = pair.standby.url("launchwait")
        monkeypatch.setattr(pgstore, "LAUNCH_WAIT_SEC", 1.0)
        DBOS.destroy(destroy_registry=True)
        DBOS(config={"name": "launch-wait", "system_database_url": standby_url})
        try:
            with pytest.raises(DBOSInitializationError, match="read-only transaction"):
                DBOS.launch()
        finally:
            DBOS.destroy(destroy_registry=True)

        monkeypatch.setattr(pgstore, "LAUNCH_WAIT_SEC", 120.0)
        pair.primary.stop("immediate")
        DBOS(config={"name": "launch-wait", "system_database_url": standby_url})
        try:

            @DBOS.workflow()
            def hello() -> str:
                return "hello"

            promoter = threading.Timer(1.0, pair.standby.promote)
            promoter.start()
            try:
                DBOS.launch()  # waits through the read-only errors until the promotion
            finally:
                promoter.join()
            assert hello() == "hello"
        finally:
            DBOS.destroy(destroy_registry=True)
