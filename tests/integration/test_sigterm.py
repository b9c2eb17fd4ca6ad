"""The opt-in SIGTERM handler (config ``shutdown_grace_sec``), in a real child process: SIGTERM
drains (a workflow that finishes within the grace period finishes; one that does not is
handed back), then the signal takes its previous course: the application's own handler runs,
or the process ends by SIGTERM (both backends)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from waypoint.storage.registry import open_url

CHILD = textwrap.dedent(
    """
    import os, signal, sys, time
    from waypoint import DBOS, SetWorkflowID

    url, mode, marks = sys.argv[1], sys.argv[2], sys.argv[3]

    def mark(what):
        with open(marks, "a") as f:
            f.write(what + "\\n")

    if mode == "chain":
        def previous(signum, frame):
            mark("previous handler")
            sys.exit(0)
        signal.signal(signal.SIGTERM, previous)

    @DBOS.step()
    def slow(seconds):
        time.sleep(seconds)
        mark(f"slept {seconds}")
        return seconds

    @DBOS.workflow()
    def job(seconds):
        return slow(seconds)

    DBOS(config={"name": "sigterm-app", "system_database_url": url, "executor_id": "pod-x",
                 "application_version": "v1", "shutdown_grace_sec": 4})
    DBOS.launch()
    with SetWorkflowID("quick"):
        DBOS.start_workflow(job, 1.5)
    with SetWorkflowID("long"):
        DBOS.start_workflow(job, 600)
    mark("ready")
    while True:
        time.sleep(0.2)
    """
)


def run_child(db_url: str, mode: str, tmp_path: Path) -> tuple[int, list[str]]:
    marks = tmp_path / f"marks-{mode}.txt"
    marks.touch()
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DBOS__")}
    proc = subprocess.Popen(
        [sys.executable, str(script), db_url, mode, str(marks)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        deadline = time.monotonic() + 60
        while "ready" not in marks.read_text() and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()[0].decode()[-3000:]
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert b"Traceback" not in out, out.decode()[-3000:]
    return proc.returncode, marks.read_text().splitlines()


@pytest.mark.parametrize("mode", ["default", "chain"])
def test_sigterm_drains_hands_back_then_passes_the_signal_on(
    db_url: str, mode: str, tmp_path: Path
) -> None:
    rc, marks = run_child(db_url, mode, tmp_path)
    if mode == "chain":
        assert (rc, marks[-1]) == (0, "previous handler")  # the application's own handler ran
    else:
        assert rc == -signal.SIGTERM  # the default action, after the drain
    assert "slept 1.5" in marks  # finished within the grace period

    store = open_url(db_url)
    store.open()
    try:
        quick, long = store.get_workflow("quick"), store.get_workflow("long")
        assert quick is not None and long is not None
        assert quick.status == "SUCCESS"
        # Handed back: on the internal queue for a peer of version v1, fenced.
        assert (long.status, long.executor_id, long.owner_xid) == ("ENQUEUED", None, None)
        assert [(e.executor_id, e.state) for e in store.list_executors("sigterm-app")] == [
            ("pod-x", "gone")
        ]
    finally:
        store.close()
