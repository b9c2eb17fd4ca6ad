"""Messages and streams across a real SIGKILL (reliability scenario 11), both backends.

A consumer waits in recv and a producer's step has written two stream values and sent a
message but not yet checkpointed when the worker is killed. A client then retries one of its
sends (same idempotency key) and sends more; a new worker recovers both workflows. Every sent
message must be received exactly once, in order, and the re-run step must not duplicate its
stream values or its message.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any, Optional

import psycopg
import pytest

from tests.crash.harness import APP_VERSION, REPO, Harness, Proc
from waypoint import DBOSClient

pytestmark = pytest.mark.crash

APP = Path(__file__).with_name("messaging_app.py")


def spawn(h: Harness, mode: str, hang: bool) -> Proc:
    name = f"p{len(h.procs) + 1}-{mode}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DBOS__", "MSG_CRASH_"))}
    env.update(DBOS__APPVERSION=APP_VERSION, PYTHONUNBUFFERED="1", PYTHONPATH=str(REPO))
    if hang:
        env["MSG_CRASH_HANG"] = "1"
    out, err = h.workdir / f"{name}.stdout", h.workdir / f"{name}.stderr"
    with open(out, "wb") as fo, open(err, "wb") as fe:
        popen = subprocess.Popen(
            [sys.executable, str(APP), h.db_url, str(h.workdir), mode],
            stdout=fo,
            stderr=fe,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=str(h.workdir),
        )
    proc = Proc(name, popen, out, err, time.time())
    h.procs.append(proc)
    return proc


@contextmanager
def client(h: Harness) -> Iterator[DBOSClient]:
    c = DBOSClient(system_database_url=h.db_url)
    try:
        yield c
    finally:
        c.destroy()  # the harness waits for every session to end after a kill


def messages(h: Harness, destination: str) -> list[tuple[str, bool]]:
    """(message ID, consumed) of every message to ``destination``."""
    sql = "SELECT message_uuid, consumed FROM {t} WHERE destination_uuid = %s"
    if h.backend == "sqlite":
        path = h.db_url.split("sqlite:///", 1)[1]
        with closing(sqlite3.connect(path, timeout=30)) as conn:
            rows = conn.execute(sql.format(t="notifications").replace("%s", "?"), (destination,))
            return [(r[0], bool(r[1])) for r in rows.fetchall()]
    with psycopg.connect(h.db_url, autocommit=True) as conn:
        found = conn.execute(sql.format(t="dbos.notifications"), (destination,)).fetchall()
        return [(r[0], bool(r[1])) for r in found]


def received(h: Harness) -> list[Any]:
    """What the consumer's checkpointed recv steps hold so far."""
    return [out for _, name, out in h.steps("consumer") if name == "DBOS.recv"]


def waiting_in_recv(h: Harness, n: int) -> Optional[bool]:
    """True once the consumer checkpointed n messages and the deadline of recv number n+1."""
    steps = h.steps("consumer")
    return (len(received(h)) == n and any(fid == 2 * n + 2 for fid, _, _ in steps)) or None


def test_recv_and_step_writes_survive_sigkill(harness: Harness) -> None:
    h = harness
    first = spawn(h, "first", hang=True)
    h.wait_status(["consumer", "producer"], {"PENDING"}, watch=[first])
    h.wait_until(
        "the producer's step to emit",
        lambda: list(h.workdir.glob(f"emitted-{first.pid}")),
        watch=[first],
    )
    with client(h) as c:
        for i in range(3):
            c.send("consumer", f"m{i}", "in", f"key-{i}")
    h.wait_until("the consumer to wait in recv", lambda: waiting_in_recv(h, 4), watch=[first])
    h.kill(first)

    with client(h) as c:
        c.send("consumer", "m2", "in", "key-2")  # a client retry after an unclear outcome
        for i in (3, 4):
            c.send("consumer", f"m{i}", "in", f"key-{i}")
    second = spawn(h, "recover", hang=False)
    report = second.wait_exit(30)

    got = report["consumer"]
    assert sorted(got) == sorted(["from-step", "m0", "m1", "m2", "m3", "m4"]), got
    assert [m for m in got if m != "from-step"] == ["m0", "m1", "m2", "m3", "m4"]
    assert report["producer"] == "produced"
    # The step ran again after the kill, yet wrote its values and its message once.
    assert len(list(h.workdir.glob("emitted-*"))) == 2
    assert report["stream"] == ["v1", "v2"]
    sent = messages(h, "consumer")
    assert len(sent) == 6 and all(consumed for _, consumed in sent), sent
    recv_steps = [(fid, out) for fid, name, out in h.steps("consumer") if name == "DBOS.recv"]
    assert [fid for fid, _ in recv_steps] == [1, 3, 5, 7, 9, 11]
