"""SQLAlchemy is an optional extra: plain Waypoint, and decorating transactions, never
import it; only an application database or a datasource does."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PROGRAM = """
import sys
from pathlib import Path
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


WITHOUT_SQLALCHEMY = """
import sys
from pathlib import Path
sys.modules["sqlalchemy"] = None  # as if the sql extra were not installed
from waypoint import DBOS
from waypoint.error import DBOSInitializationError

DBOS(config={"name": "no-sql", "system_database_url": sys.argv[1],
             "application_database_url": sys.argv[1]})
try:
    DBOS.launch()
except DBOSInitializationError as exc:
    print(exc)
"""


def test_an_application_database_without_sqlalchemy_says_what_to_install(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/x.sqlite"
    out = subprocess.run(
        [sys.executable, "-c", WITHOUT_SQLALCHEMY, url],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert "waypoint-workflows[sql]" in out.stdout, out.stderr
