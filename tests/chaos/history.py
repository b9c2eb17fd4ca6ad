"""The operation history, kept OUTSIDE the system database (as Jepsen keeps its histories).

Every process of a chaos campaign (worker incarnations, producers, the nemesis) appends JSON
lines to its own file, ``<dir>/<process>-<pid>.jsonl``, opened with ``O_APPEND``: each record
is one ``write(2)`` of one line, which the kernel appends whole, and which survives the
writer being SIGKILLed (the page cache is not lost; the OS is not crashed in these runs).

A record (all keys short, one line):

    t     time.monotonic() of the writer: CLOCK_MONOTONIC is machine-wide, so records of
          different processes compare; libfaketime is told not to fake it
          (FAKETIME_DONT_FAKE_MONOTONIC=1), so a clock-jumped worker still orders correctly
    proc  the process's name (w1, w2, p1, nemesis, ...), pid its PID (one per incarnation)
    type  invoke | ok | fail | info (Jepsen's: info = indeterminate, e.g. a lost connection)
    f     what: step, ack, wf, start, enqueue, send, recv, get_event, set_event, read_stream,
          get_result, cancel, fork, sleep, fault, heal, ...
    op    pairs an invoke with its completion (unique per process)
    ...   the operation's own fields (wf, idx, token, value, queue, ...)

This module is imported by the worker program and by the checker; standard library only.
"""

from __future__ import annotations

import itertools
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

Record = dict[str, Any]


class History:
    """Appender for one process; thread-safe (one write(2) per record)."""

    def __init__(self, directory: str, proc: str) -> None:
        self.proc = proc
        self.pid = os.getpid()
        path = os.path.join(directory, f"{proc}-{self.pid}.jsonl")
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._ops = itertools.count(1)
        self._lock = threading.Lock()

    def write(self, type_: str, f: str, **fields: Any) -> None:
        rec = {"t": time.monotonic(), "proc": self.proc, "pid": self.pid, "type": type_, "f": f}
        rec.update(fields)
        os.write(self._fd, (json.dumps(rec, default=repr) + "\n").encode())

    def invoke(self, f: str, **fields: Any) -> int:
        with self._lock:
            op = next(self._ops)
        self.write("invoke", f, op=op, **fields)
        return op

    def complete(self, type_: str, f: str, op: int, **fields: Any) -> None:
        assert type_ in ("ok", "fail", "info"), type_
        self.write(type_, f, op=op, **fields)


def read(directory: str | Path) -> list[Record]:
    """Every record of every process, in time order (ties keep each file's order)."""
    out: list[Record] = []
    for path in sorted(Path(directory).glob("*.jsonl")):
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                line = line.strip()
                if not line:
                    continue
                try:
                    out.append(json.loads(line))
                except ValueError:
                    continue  # a torn last line cannot happen with O_APPEND, but be lenient
    out.sort(key=lambda r: float(r["t"]))
    return out


def completions(records: list[Record]) -> Iterator[tuple[Record, Optional[Record]]]:
    """Each invoke with its completion (None: the process never completed it)."""
    done: dict[tuple[int, int], Record] = {}
    for r in records:
        if r["type"] != "invoke" and "op" in r:
            done[(r["pid"], r["op"])] = r
    for r in records:
        if r["type"] == "invoke":
            yield r, done.get((r["pid"], r["op"]))
