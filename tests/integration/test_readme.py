"""The README's first Python block runs as pasted, and does what the text under it says: it
prints the charge and the receipt; a second run returns the recorded receipt without charging
again; a run killed (SIGKILL) during the durable sleep is finished by the next one, which does
not charge twice. SQLite in a temporary directory, as a new user would run it.
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def first_python_block() -> str:
    text = (ROOT / "README.md").read_text()
    m = re.search(r"^```python\n(.*?)^```", text, re.MULTILINE | re.DOTALL)
    assert m, "README.md has no python block"
    return m.group(1)


def run(directory: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "shop.py"],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def wait_for_the_sleep(database: Path) -> None:
    """Until the charge is checkpointed and the sleep has begun (its wake-up time recorded)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with closing(sqlite3.connect(database)) as conn:
            (recorded,) = conn.execute(
                "SELECT count(*) FROM operation_outputs WHERE workflow_uuid = 'order-42'"
            ).fetchone()
        if recorded >= 2:
            return
        time.sleep(0.02)
    raise AssertionError("the workflow never reached its sleep")


def test_the_first_block_runs_and_a_second_run_returns_the_recorded_result(
    tmp_path: Path,
) -> None:
    (tmp_path / "shop.py").write_text(first_python_block())
    first = run(tmp_path)
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines() == ["charging order 42", "receipt-42"]
    assert (tmp_path / "shop.sqlite").exists()
    second = run(tmp_path)
    assert second.returncode == 0, second.stderr
    assert second.stdout.splitlines() == ["receipt-42"]


def test_a_run_killed_in_the_sleep_is_finished_by_the_next_without_charging_again(
    tmp_path: Path,
) -> None:
    (tmp_path / "shop.py").write_text(first_python_block())
    with subprocess.Popen(
        [sys.executable, "shop.py"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    ) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "charging order 42\n"
        wait_for_the_sleep(tmp_path / "shop.sqlite")
        proc.send_signal(signal.SIGKILL)
    second = run(tmp_path)
    assert second.returncode == 0, second.stderr
    assert second.stdout.splitlines() == ["receipt-42"]


def test_no_install_line_names_the_unrelated_waypoint_package() -> None:
    """``pip install waypoint`` installs someone else's project: the README and the docs
    install from the checkout, whose distribution is waypoint-workflows."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    for page in pages:
        for line in page.read_text().splitlines():
            for m in re.finditer(r"pip install ([^\s`]+)", line):
                if re.search(r"\bnot\b", line[: m.start()], re.IGNORECASE):
                    continue  # the warning against it
                target = m.group(1).strip("\"'")
                assert target.split("[")[0] in (".", "-e", "waypoint-workflows"), (page, line)
