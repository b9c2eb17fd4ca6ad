"""SQLAlchemy is an optional extra: plain Waypoint, and decorating transactions, never
import it; only an application database or a datasource does."""

from __future__ import annotations

import subprocess
import sys

PROGRAM = """
import sys
from waypoint import DBOS

@DBOS.transaction()
def txn() -> int:
    return 1

print("sqlalchemy" in sys.modules)
"""


def test_importing_and_decorating_does_not_import_sqlalchemy() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROGRAM], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "False", out.stderr
