"""Helpers for the crash tests: spawn the worker, SIGKILL it, poll the ledger and the system DB."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, TypeVar

import psycopg

from tests.conftest import database_urls
from tests.crash import ledger as ledgerlib
from tests.crash.ledger import Row
from waypoint.core.serialization import DefaultSerializer

APP = Path(__file__).with_name("app.py")
REPO = APP.parents[2]
APP_VERSION = "crash-test-v1"  # identical in every process, so recovery matches the version

T = TypeVar("T")


def decode(text: Optional[str], serialization: Optional[str]) -> Any:
    """A stored value, decoded the way Waypoint (and DBOS) writes it."""
    if text is None:
        return None
    if serialization in (None, "py_pickle"):  # DBOS's classes (a history DBOS wrote) read too
        return DefaultSerializer().deserialize(text)
    if serialization == "portable_json":
        return json.loads(text)
    raise AssertionError(f"unexpected serialization {serialization!r}")


class WorkerHang(AssertionError):
    """A worker that should have exited on its own is still running."""


# -- processes ----------------------------------------------------------------------------------


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path
    spawned_at: float

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def sigkill(self) -> None:
        """SIGKILL the worker (no cleanup of any kind runs in it) and reap it."""
        assert self.alive(), f"{self.name} already exited:\n{self.diagnostics()}"
        os.kill(self.popen.pid, signal.SIGKILL)
        rc = self.popen.wait(10)
        assert rc == -signal.SIGKILL, f"{self.name} exited with {rc}, not by SIGKILL"

    def reap(self) -> None:
        if self.alive():
            os.kill(self.popen.pid, signal.SIGKILL)
        self.popen.wait(10)

    def wait_exit(self, timeout: float = 20) -> dict[str, Any]:
        """Wait for a normal exit and return the JSON the worker printed."""
        try:
            rc = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise WorkerHang(
                f"{self.name} did not exit within {timeout}s:\n{self.diagnostics()}"
            ) from None
        assert rc == 0, f"{self.name} exited with {rc}:\n{self.diagnostics()}"
        lines = self.stdout_path.read_text().strip().splitlines()
        assert lines, f"{self.name} printed nothing:\n{self.diagnostics()}"
        out: dict[str, Any] = json.loads(lines[-1])
        return out

    def diagnostics(self) -> str:
        def tail(p: Path) -> str:
            try:
                return p.read_text()[-4000:]
            except OSError:
                return "<missing>"

        return (
            f"--- {self.name} (pid {self.pid}) stdout ---\n{tail(self.stdout_path)}\n"
            f"--- {self.name} stderr ---\n{tail(self.stderr_path)}"
        )


@dataclass
class Harness:
    """One crash scenario: a fresh system database, a ledger, and the workers spawned on it."""

    backend: str
    db_url: str
    workdir: Path
    procs: list[Proc] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.ledger_path = str(self.workdir / "ledger.sqlite")
        ledgerlib.create(self.ledger_path)

    # -- workers ---------------------------------------------------------------------------------
    def spawn(
        self,
        mode: str,
        *args: str,
        block_step: Optional[int] = None,
        executor_id: Optional[str] = "crash-executor",
        vmid: Optional[str] = None,
        step_delay: Optional[str] = None,
        post_delay: Optional[str] = None,
        gap_delay: Optional[str] = None,
        gate_file: Optional[Path] = None,
        linger: Optional[float] = None,
    ) -> Proc:
        name = f"p{len(self.procs) + 1}-{mode}"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DBOS__", "CRASH_"))}
        env["DBOS__APPVERSION"] = APP_VERSION
        env["PYTHONUNBUFFERED"] = "1"
        if executor_id is not None:
            env["CRASH_EXECUTOR_ID"] = executor_id
        if vmid is not None:
            env["DBOS__VMID"] = vmid
        if block_step is not None:
            env["CRASH_BLOCK_STEP"] = str(block_step)
        if step_delay is not None:
            env["CRASH_STEP_DELAY"] = step_delay
        if post_delay is not None:
            env["CRASH_POST_DELAY"] = post_delay
        if gap_delay is not None:
            env["CRASH_GAP_DELAY"] = gap_delay
        if gate_file is not None:
            env["CRASH_GATE_FILE"] = str(gate_file)
        if linger is not None:
            env["CRASH_LINGER"] = str(linger)
        return self.start_process(name, [str(APP), self.db_url, self.ledger_path, mode, *args], env)

    def start_process(self, name: str, argv: list[str], env: dict[str, str]) -> Proc:
        """Run ``python argv...`` in the work directory, its output in ``name``.stdout/.stderr;
        the harness reaps it (every crash test's worker starts here)."""
        out = self.workdir / f"{name}.stdout"
        err = self.workdir / f"{name}.stderr"
        with open(out, "wb") as fo, open(err, "wb") as fe:
            popen = subprocess.Popen(
                [sys.executable, *argv],
                stdout=fo,
                stderr=fe,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=str(self.workdir),
            )
        proc = Proc(name, popen, out, err, time.time())
        self.procs.append(proc)
        return proc

    def launched(self, proc: Proc, timeout: float = 60) -> None:
        """Wait until ``proc`` has logged its launch (the worker apps' "launched" event)."""
        self.wait_until(
            f"{proc.name} to launch",
            lambda: "launched" in self.process_events(proc.pid),
            timeout,
            watch=[proc],
        )

    def kill(self, *procs: Proc) -> None:
        """SIGKILL workers, then wait until the database has let go of them.

        A client killed right after sending COMMIT may still have that commit in flight on
        the PostgreSQL server; once its backends are gone, the database state is final."""
        for p in procs:
            p.sigkill()
        if self.backend in ("postgres", "shards") and not any(p.alive() for p in self.procs):

            def no_backends() -> bool:
                rows = self._query(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
                return all(r[0] == 0 for r in rows)  # on every shard, when sharded

            self.wait_until("the killed workers' database sessions to end", no_backends, 10)

    def cleanup(self) -> None:
        for p in self.procs:
            p.reap()

    def diagnostics(self) -> str:
        return "\n".join(p.diagnostics() for p in self.procs)

    # -- polling ---------------------------------------------------------------------------------
    def wait_until(
        self,
        what: str,
        predicate: Callable[[], Optional[T]],
        timeout: float = 20,
        interval: float = 0.02,
        watch: Optional[list[Proc]] = None,
    ) -> T:
        """Poll ``predicate`` until it returns a truthy value; fail with diagnostics otherwise.

        Fails early if a watched worker exits (it would never make the condition true)."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            for p in watch or []:
                if not p.alive():
                    raise AssertionError(
                        f"{p.name} exited ({p.popen.returncode}) while waiting for {what}:\n"
                        f"{p.diagnostics()}"
                    )
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout}s waiting for {what}\n"
                    f"ledger: {self.ledger()}\n{self.diagnostics()}"
                )
            time.sleep(interval)

    # -- the ledger ------------------------------------------------------------------------------
    def ledger(self, workflow_id: Optional[str] = None) -> list[Row]:
        return ledgerlib.read(self.ledger_path, workflow_id)

    def ledger_rows(
        self,
        workflow_id: Optional[str] = None,
        *,
        step: Optional[int] = None,
        phase: Optional[str] = None,
        pid: Optional[int] = None,
    ) -> list[Row]:
        return [
            r
            for r in self.ledger(workflow_id)
            if (step is None or r.step_index == step)
            and (phase is None or r.phase == phase)
            and (pid is None or r.pid == pid)
        ]

    def process_events(self, pid: int) -> dict[str, float]:
        """What a worker reported outside of steps ('launched', 'gate:<wfid>', ...)."""
        return {e: t for _, e, t in ledgerlib.events(self.ledger_path, pid)}

    # -- the system database ---------------------------------------------------------------------
    def workflows(self, ids: Optional[list[str]] = None) -> dict[str, dict[str, Any]]:
        """workflow_status rows, read directly from the tables."""
        rows = self._query(
            "SELECT workflow_uuid, status, recovery_attempts, executor_id, "
            "application_version, updated_at, completed_at FROM {workflow_status}"
        )
        out = {
            r[0]: {
                "status": r[1],
                "recovery_attempts": r[2],
                "executor_id": r[3],
                "application_version": r[4],
                "updated_at": r[5],
                "completed_at": r[6],
            }
            for r in rows
        }
        if ids is not None:
            out = {k: v for k, v in out.items() if k in ids}
        return out

    def status(self, workflow_id: str) -> Optional[str]:
        row = self.workflows([workflow_id]).get(workflow_id)
        return None if row is None else str(row["status"])

    def steps(self, workflow_id: str) -> list[tuple[int, str, Any]]:
        """(function_id, function_name, decoded output) checkpoints of a workflow."""
        rows = self._query(
            "SELECT function_id, function_name, output, serialization FROM {operation_outputs} "
            "WHERE workflow_uuid = %s ORDER BY function_id",
            (workflow_id,),
        )
        return [(int(r[0]), str(r[1]), decode(r[2], r[3])) for r in rows]

    def wait_status(
        self,
        ids: list[str],
        statuses: set[str],
        timeout: float = 20,
        watch: Optional[list[Proc]] = None,
    ) -> dict[str, dict[str, Any]]:
        def check() -> Optional[dict[str, dict[str, Any]]]:
            rows = self.workflows(ids)
            if len(rows) == len(ids) and all(r["status"] in statuses for r in rows.values()):
                return rows
            return None

        return self.wait_until(f"{ids} to reach {statuses}", check, timeout, 0.05, watch)

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if self.backend == "sqlite":
            path = self.db_url.split("sqlite:///", 1)[1]
            if not os.path.exists(path):
                return []
            q = sql.format(workflow_status="workflow_status", operation_outputs="operation_outputs")
            q = q.replace("%s", "?")
            with closing(sqlite3.connect(path, timeout=30)) as conn:
                try:
                    return list(conn.execute(q, params).fetchall())
                except sqlite3.OperationalError as exc:
                    if "no such table" in str(exc):
                        return []
                    raise
        q = sql.format(
            workflow_status="dbos.workflow_status", operation_outputs="dbos.operation_outputs"
        )
        found: list[tuple[Any, ...]] = []
        for url in database_urls(self.db_url):  # every shard's rows, when sharded
            with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
                try:
                    found.extend(conn.execute(q, params).fetchall())
                except psycopg.errors.UndefinedTable:
                    pass
        return found
