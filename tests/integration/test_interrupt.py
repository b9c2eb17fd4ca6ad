"""Ctrl-C reaches the program while it waits on a workflow it runs itself.

A sync ``get_result`` whose workflow no worker has taken yet runs it on the caller's thread;
a KeyboardInterrupt raised there (in a step's body) must end the wait, as it ends any
blocking call, and leave the workflow PENDING for the next launch to recover.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.console_http import interruptible

SCRIPT = """
import os, sys, time
from waypoint import DBOS, SetWorkflowID
DBOS(config={"name": "interrupt-test", "system_database_url": sys.argv[1],
             "application_version": "v1"})

@DBOS.step()
def slow() -> str:
    if os.environ.get("FIRST") == "1":
        print("in step", flush=True)
        time.sleep(60)
    return "done"

@DBOS.workflow()
def wf() -> str:
    return slow()

DBOS.launch()
try:
    if os.environ.get("FIRST") == "1":
        with SetWorkflowID("ctrl-c"):
            handle = DBOS.start_workflow(wf)
        print(handle.get_result(), flush=True)
    else:
        print("recovered", DBOS.retrieve_workflow("ctrl-c").get_result(), flush=True)
except KeyboardInterrupt:
    print("interrupted", flush=True)
    sys.exit(130)
finally:
    DBOS.destroy()
"""


def test_ctrl_c_ends_a_wait_on_a_workflow_run_inline(db_url: str, tmp_path: Path) -> None:
    script = tmp_path / "app.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "FIRST": "1"}
    proc = subprocess.Popen(
        [sys.executable, str(script), db_url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=interruptible,  # even when the suite runs with SIGINT ignored
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "in step"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert out.strip() == "interrupted", (out, err)  # not "done": the step was not finished
    assert proc.returncode == 130

    env["FIRST"] = "0"
    again = subprocess.run(
        [sys.executable, str(script), db_url],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert again.stdout.strip() == "recovered done", (again.stdout, again.stderr)
