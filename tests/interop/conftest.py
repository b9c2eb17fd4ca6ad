"""Fixtures of the interop tier: DBOS 2.31.1 from PyPI in a venv of its own, and a harness that
runs tests/interop/app.py under either implementation on one fresh system database.

The venv lives in ``.interop-venv`` at the repository root and is built on first use
(``python -m venv`` + ``pip install dbos==2.31.1``), then reused while it holds that version.
``WAYPOINT_INTEROP_VENV`` points at another one; the pytest-xdist workers build it once, under
a lock. The tier runs with ``WAYPOINT_TEST_INTEROP=1``, which ``scripts/test.sh`` sets unless
given ``--no-interop``.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Optional

import pytest

from tests.crash.conftest import crash_backend, crash_db_url  # noqa: F401  (fixtures)
from tests.crash.harness import Harness as CrashHarness
from tests.crash.harness import Proc

DBOS_VERSION = "2.31.1"
REPO = Path(__file__).resolve().parents[2]
APP = Path(__file__).with_name("app.py")
CLIENT = Path(__file__).with_name("client.py")
EXECUTOR_ID = "interop-executor"  # DBOS__VMID on both sides: recovery takes the other's work
APP_VERSION = "interop-v1"  # DBOS__APPVERSION on both sides (DBOS would hash its own source)
IMPLS = ("dbos", "waypoint")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).parent == Path(__file__).parent:
            item.add_marker(pytest.mark.interop)
            if os.environ.get("WAYPOINT_TEST_INTEROP") != "1":
                item.add_marker(
                    pytest.mark.skip(reason="the interop tier runs with WAYPOINT_TEST_INTEROP=1")
                )


def _has_dbos(python: Path) -> bool:
    if not python.exists():
        return False
    probe = subprocess.run(
        [
            str(python),
            "-c",
            "import importlib.metadata as m, psycopg, opentelemetry.trace, sys; "
            f"sys.exit(m.version('dbos') != {DBOS_VERSION!r})",
        ],
        capture_output=True,
    )
    return probe.returncode == 0


@pytest.fixture(scope="session")
def dbos_venv() -> Path:
    """The bin/ directory of a venv holding dbos==2.31.1 (built once, then cached), with the
    OpenTelemetry API that DBOS's trace-carrier code imports (test_traces)."""
    venv = Path(os.environ.get("WAYPOINT_INTEROP_VENV") or REPO / ".interop-venv")
    python = venv / "bin" / "python"
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f"{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one xdist worker builds it; the others wait for it
        _build_venv(venv, python)
    return venv / "bin"


def _build_venv(venv: Path, python: Path) -> None:
    if not _has_dbos(python):
        steps = [
            [sys.executable, "-m", "venv", str(venv)],
            [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
             f"dbos=={DBOS_VERSION}", "psycopg[binary]>=3.1", "opentelemetry-api"],
        ]  # fmt: skip
        for cmd in steps:
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                pytest.fail(
                    f"could not build the DBOS {DBOS_VERSION} venv at {venv} ({' '.join(cmd)}):\n"
                    f"{done.stderr[-2000:]}"
                )


class Interop(CrashHarness):
    """The crash harness, spawning app.py under DBOS or Waypoint."""

    dbos_bin: Path

    def python(self, impl: str) -> str:
        return str(self.dbos_bin / "python") if impl == "dbos" else sys.executable

    every_second = False  # the workers schedule ``every_second``

    def env(
        self, block_step: Optional[int] = None, executor_id: str = EXECUTOR_ID
    ) -> dict[str, str]:
        env = {
            k: v for k, v in os.environ.items() if not k.startswith(("DBOS", "INTEROP_", "CRASH_"))
        }
        env.update(
            DBOS__VMID=executor_id,
            DBOS__APPVERSION=APP_VERSION,
            PYTHONUNBUFFERED="1",
            PYTHONPATH=str(REPO),
        )
        if block_step is not None:
            env["INTEROP_BLOCK_STEP"] = str(block_step)
        if self.every_second:
            env["INTEROP_EVERY_SECOND"] = "1"
        return env

    def spawn_as(
        self,
        impl: str,
        mode: str,
        *args: str,
        block_step: Optional[int] = None,
        executor_id: str = EXECUTOR_ID,
    ) -> Proc:
        cmd = [self.python(impl), str(APP), impl, self.db_url, self.ledger_path, mode, *args]
        return self._spawn(f"{impl}-{mode}", cmd, block_step, executor_id)

    def serve(self, impl: str, executor_id: str = EXECUTOR_ID) -> Proc:
        """A worker of ``impl`` serving the queues, once it has launched."""
        worker = self.spawn_as(impl, "serve", "600", executor_id=executor_id)
        self.wait_until(
            f"the {impl} worker to launch",
            lambda: "launched" in self.process_events(worker.pid),
            timeout=60,
            watch=[worker],
        )
        return worker

    def client(self, impl: str, mode: str, prefix: str) -> Proc:
        cmd = [self.python(impl), str(CLIENT), impl, self.db_url, mode, prefix]
        return self._spawn(f"{impl}-client-{mode}", cmd, None)

    def _spawn(
        self,
        what: str,
        cmd: list[str],
        block_step: Optional[int],
        executor_id: str = EXECUTOR_ID,
    ) -> Proc:
        name = f"p{len(self.procs) + 1}-{what}"
        out, err = self.workdir / f"{name}.stdout", self.workdir / f"{name}.stderr"
        with open(out, "wb") as fo, open(err, "wb") as fe:
            popen = subprocess.Popen(
                cmd,
                stdout=fo,
                stderr=fe,
                stdin=subprocess.DEVNULL,
                env=self.env(block_step, executor_id),
                cwd=str(self.workdir),
            )
        proc = Proc(name, popen, out, err, time.time())
        self.procs.append(proc)
        return proc

    def dbos_cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.dbos_bin / "dbos"), *args, "--sys-db-url", self.db_url],
            capture_output=True,
            text=True,
            env=self.env(),
            cwd=str(self.workdir),
            timeout=60,
        )


@pytest.fixture
def interop(
    dbos_venv: Path,
    crash_backend: str,  # noqa: F811
    crash_db_url: str,  # noqa: F811
    tmp_path: Path,
) -> Iterator[Interop]:
    h = Interop(crash_backend, crash_db_url, tmp_path)
    h.dbos_bin = dbos_venv
    try:
        yield h
    finally:
        h.cleanup()
