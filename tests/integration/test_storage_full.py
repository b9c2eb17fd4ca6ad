"""A full system database under running workflows (found by the chaos campaign, issue 13).

Recording a workflow's outcome (its SUCCESS with the output, or the ERROR of a step whose
checkpoint found no space) needs space. It used to give up at once: the row stayed PENDING
in a live process (only a restart recovered it) and a ``get_result`` in that process waited
forever. The outcome write now waits for space like the store waits out an outage.

The disk is filled for real, for SQLite's own connections: ``PRAGMA max_page_count`` at the
file's current size (it is per connection, so every connection of Waypoint's store gets it,
and any opened meanwhile too), as SQLite's ``tkt2920.test`` does.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from waypoint import DBOS, SetWorkflowID, SetWorkflowTimeout
from waypoint.core.runtime import get_runtime
from waypoint.error import WaypointStorageFullError

pytestmark = pytest.mark.skipif(
    "sqlite" not in __import__("tests.conftest").conftest.BACKENDS, reason="SQLite not selected"
)


class Disk:
    """Waypoint's SQLite store with its growth switched off and on."""

    def __init__(self) -> None:
        self.store: Any = get_runtime().store._store  # the SQLite store behind the guard
        self._connect = self.store._connect
        self.full = False

    def _limit(self, conn: sqlite3.Connection) -> None:
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages if self.full else 1 << 30}")

    def _connect_limited(self) -> sqlite3.Connection:
        conn = self._connect()
        self._limit(conn)
        return conn

    def set_full(self, full: bool) -> None:
        self.full = full
        self.store._connect = self._connect_limited if full else self._connect
        with self.store._lock:
            conns = list(self.store._all_conns)
        for conn in conns:
            self._limit(conn)


class Retrying(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if "was not recorded, the system database is full" in record.getMessage():
            self.seen.set()


@pytest.fixture
def sqlite_config(tmp_path: Any) -> Iterator[dict[str, Any]]:
    DBOS.destroy(destroy_registry=True)
    yield {"name": "storage-full", "system_database_url": f"sqlite:///{tmp_path}/full.sqlite"}
    DBOS.destroy(destroy_registry=True)


def test_an_outcome_waits_for_space_instead_of_leaving_the_workflow_pending(
    sqlite_config: dict[str, Any],
) -> None:
    disk: list[Disk] = []

    @DBOS.step()
    def small() -> str:
        return "ok"

    @DBOS.workflow()
    def fills_the_disk() -> str:
        small()
        disk[0].set_full(True)  # the work is done; its outcome finds no space
        return "x" * 500_000

    DBOS(config=sqlite_config)  # type: ignore[arg-type]
    DBOS.launch()
    disk.append(Disk())
    retrying = Retrying()
    logging.getLogger("waypoint").addHandler(retrying)
    outcome: list[Any] = []

    def wait() -> None:
        outcome.append(handle.get_result())

    try:
        with SetWorkflowID("full-1"):
            handle = DBOS.start_workflow(fills_the_disk)
        # The outcome could not be written: it is retried, not dropped.
        assert retrying.seen.wait(60), "the failed outcome write was not retried"
        waiter = threading.Thread(target=wait, daemon=True)
        waiter.start()
        disk[0].set_full(False)  # space again
        waiter.join(60)
        assert not waiter.is_alive(), "get_result never returned"
    finally:
        logging.getLogger("waypoint").removeHandler(retrying)
        disk[0].set_full(False)
    assert outcome == ["x" * 500_000]
    status = DBOS.get_workflow_status("full-1")
    assert status is not None and status.status == "SUCCESS"


def _mount_tmpfs(path: Path, size: str) -> bool:
    if os.geteuid() != 0:
        return False
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    return done.returncode == 0


def _fill(path: Path) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        for size in (1 << 20, 4096, 512):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                continue
    finally:
        os.close(fd)


def test_a_timeout_that_finds_the_disk_full_still_cancels_its_workflow(tmp_path: Path) -> None:
    """The deadline's cancellation used to be dropped when its write failed on a full disk:
    the workflow then slept out its hour. It is retried until it is written. (A real full
    filesystem: an in-place UPDATE needs no new page, so max_page_count cannot stop it.)"""
    disk = tmp_path / "disk"
    disk.mkdir()
    if not _mount_tmpfs(disk, "8m"):
        pytest.skip("needs root to mount a small tmpfs (a disk that fills up)")
    DBOS.destroy(destroy_registry=True)
    retrying = threading.Event()

    class Retry(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "deadline passed but the system database is full" in record.getMessage():
                retrying.set()

    handler = Retry()
    logging.getLogger("waypoint").addHandler(handler)
    filler = disk / "filler"
    try:

        @DBOS.workflow()
        def naps() -> None:
            DBOS.sleep(3600)

        url = f"sqlite:///{disk}/full.sqlite"
        DBOS(config={"name": "timeout-full", "system_database_url": url})
        DBOS.launch()
        with SetWorkflowID("nap-1"), SetWorkflowTimeout(2.0):
            DBOS.start_workflow(naps)
        _fill(filler)  # before the deadline (nothing else writes meanwhile)
        assert retrying.wait(60), "the deadline's cancellation was not retried"
        filler.unlink()

        def cancelled() -> bool:
            status = DBOS.get_workflow_status("nap-1")
            return status is not None and status.status == "CANCELLED"

        deadline = time.monotonic() + 60
        while not cancelled() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert cancelled()
    finally:
        logging.getLogger("waypoint").removeHandler(handler)
        DBOS.destroy(destroy_registry=True)
        filler.unlink(missing_ok=True)
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def test_a_worker_launched_on_a_full_disk_is_told_the_disk_is_full(tmp_path: Path) -> None:
    """Found by the chaos campaign (SQLite, ``disk_full``): a worker restarted while the disk
    was full exited at launch with "cannot create the SQLite system database ...: disk I/O
    error", a configuration error for a file that exists. SQLite reports the -shm index it
    cannot allocate on a full disk as SQLITE_IOERR_SHMSIZE, not SQLITE_FULL; it is now the
    storage-full error (nothing written, a clear cause), and the launch works once there is
    space again."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if not _mount_tmpfs(disk, "8m"):
        pytest.skip("needs root to mount a small tmpfs (a disk that fills up)")
    config: Any = {"name": "launch-full", "system_database_url": f"sqlite:///{disk}/db.sqlite"}
    filler = disk / "filler"
    try:
        DBOS.destroy(destroy_registry=True)
        DBOS(config=config)
        DBOS.launch()
        DBOS.destroy(destroy_registry=True)  # the last connection: SQLite drops the -shm
        assert not (disk / "db.sqlite-shm").exists()
        _fill(filler)
        DBOS(config=config)
        with pytest.raises(WaypointStorageFullError, match="the system database is full"):
            DBOS.launch()
        DBOS.destroy(destroy_registry=True)
        filler.unlink()
        DBOS(config=config)
        DBOS.launch()
    finally:
        DBOS.destroy(destroy_registry=True)
        filler.unlink(missing_ok=True)
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)
