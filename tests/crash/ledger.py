"""The side-effect ledger: a SQLite file OUTSIDE the system database.

Step bodies append one row when they are entered ('start') and one when they return ('end').
The ledger is what "really happened" in the outside world, independent of the checkpoints
Waypoint keeps, so the tests can count how many times each step body actually ran.

The file is in WAL mode with ``synchronous=FULL``: a row whose INSERT committed survives the
writer being SIGKILLed (the OS is not crashed in these tests, so committed WAL frames persist).

This module is imported both by the worker program (``app.py``, run as a script) and by the
test process; it only depends on the standard library.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from contextlib import closing
from dataclasses import dataclass
from typing import Optional

SCHEMA = """
CREATE TABLE IF NOT EXISTS ledger (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    workflow_id TEXT NOT NULL,
    step_index INTEGER NOT NULL,
    phase TEXT NOT NULL CHECK (phase IN ('start', 'end')),
    pid INTEGER NOT NULL,
    token TEXT NOT NULL,
    time REAL NOT NULL  -- epoch seconds
);
CREATE TABLE IF NOT EXISTS process_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    pid INTEGER NOT NULL,
    event TEXT NOT NULL,
    time REAL NOT NULL
);
"""


def _connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=True)
    conn.execute("PRAGMA busy_timeout = 30000")
    conn.execute("PRAGMA synchronous = FULL")
    return conn


def create(path: str) -> None:
    """Create the ledger file (done by the test, before any worker starts)."""
    with closing(_connect(path)) as conn:
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise RuntimeError(f"ledger {path} is not in WAL mode: {mode}")
        conn.executescript(SCHEMA)


# -- writing (worker side) ----------------------------------------------------------------------


class Writer:
    """Thread-safe appender: one connection per thread, one committed INSERT per row."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._local = threading.local()
        self.pid = os.getpid()

    def _conn(self) -> sqlite3.Connection:
        conn: Optional[sqlite3.Connection] = getattr(self._local, "conn", None)
        if conn is None:
            conn = _connect(self.path)
            self._local.conn = conn
        return conn

    def step(self, workflow_id: str, step_index: int, phase: str, token: str) -> None:
        # isolation_level=None: the INSERT is its own transaction, committed (and fsynced,
        # synchronous=FULL) before execute() returns.
        self._conn().execute(
            "INSERT INTO ledger (workflow_id, step_index, phase, pid, token, time) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (workflow_id, step_index, phase, self.pid, token, time.time()),
        )

    def event(self, event: str) -> None:
        self._conn().execute(
            "INSERT INTO process_events (pid, event, time) VALUES (?, ?, ?)",
            (self.pid, event, time.time()),
        )


# -- reading (test side) ------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    seq: int
    workflow_id: str
    step_index: int
    phase: str
    pid: int
    token: str
    t: float  # the 'time' column


def read(path: str, workflow_id: Optional[str] = None) -> list[Row]:
    with closing(_connect(path)) as conn:
        if workflow_id is None:
            cur = conn.execute(
                "SELECT seq, workflow_id, step_index, phase, pid, token, time FROM ledger "
                "ORDER BY seq"
            )
        else:
            cur = conn.execute(
                "SELECT seq, workflow_id, step_index, phase, pid, token, time FROM ledger "
                "WHERE workflow_id = ? ORDER BY seq",
                (workflow_id,),
            )
        return [Row(*r) for r in cur.fetchall()]


def events(path: str, pid: Optional[int] = None) -> list[tuple[int, str, float]]:
    with closing(_connect(path)) as conn:
        rows = conn.execute("SELECT pid, event, time FROM process_events ORDER BY seq").fetchall()
    return [(int(p), str(e), float(t)) for p, e, t in rows if pid is None or p == pid]
