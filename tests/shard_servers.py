"""Three PostgreSQL servers for the sharded test mode: the shared one and two of our own.

The sharded backend mode of the suite (``WAYPOINT_TEST_SHARDS``: a comma list of three
server base URLs, ``postgresql://postgres@127.0.0.1:5432,...``) needs three distinct servers,
as a real deployment has. The first is the machine's shared server on 5432; this module
``initdb``s and starts the other two, long-lived, on fixed ports (5433 and 5434, or
``WAYPOINT_SHARD_PORTS``), their data under ``.pg-shards/<port>`` in the repository (ignored
by git). It reuses ``tests/private_pg.py``'s machinery (the same binaries, trust
authentication, 127.0.0.1 only, the ``postgres`` OS user when run as root); unlike a private
server they are not removed after a test: ``scripts/test.sh`` starts them before pytest and
leaves them running, and every later run reuses them.

Idempotent: a port that already answers is reused as it is (whichever checkout started it),
a stopped cluster is started again, and a missing one is created. Ordinary tests never stop
these servers; a test that stops or kills a server starts its own private one.

``python -m tests.shard_servers start`` starts them and prints the three base URLs, comma
separated, on stdout (progress and errors go to stderr; the exit status is non-zero if a
server could not be started); ``urls`` only prints the URLs; ``stop`` stops the two (fast
shutdown; the data stays, ``start`` brings them back).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from typing import Optional

from tests.private_pg import PrivatePostgres, accepts_connections

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / ".pg-shards"
SHARED = "postgresql://postgres@127.0.0.1:5432"
DEFAULT_PORTS = (5433, 5434)
# As the PostgreSQL matrix's servers: several pytest processes, each with pools and workers.
SERVER_CONF = {"max_connections": "300"}


def ports_from_env() -> tuple[int, ...]:
    """The extra servers' ports: ``WAYPOINT_SHARD_PORTS`` (comma list), else 5433,5434."""
    raw = os.environ.get("WAYPOINT_SHARD_PORTS", "")
    if not raw.strip():
        return DEFAULT_PORTS
    try:
        return tuple(int(p) for p in raw.split(",") if p.strip())
    except ValueError:
        raise SystemExit(f"WAYPOINT_SHARD_PORTS takes ports like 5433,5434, not {raw!r}")


def base_url(port: int) -> str:
    return f"postgresql://postgres@127.0.0.1:{port}"


def urls(ports: tuple[int, ...], shared: str = SHARED) -> list[str]:
    """The shard servers' base URLs, the shared server first."""
    return [shared, *(base_url(p) for p in ports)]


def server(port: int, data: Path = DATA) -> PrivatePostgres:
    """The long-lived server on ``port``, its cluster in ``data/<port>`` (not created yet)."""
    return PrivatePostgres(conf=SERVER_CONF, directory=data / str(port), port=port, detached=True)


def ensure(port: int, data: Path = DATA) -> str:
    """The server on ``port`` running: reused if it answers, else started (created first if
    it has no cluster). Returns how: ``reused``, ``started`` or ``created``."""
    if accepts_connections(base_url(port) + "/postgres"):
        return "reused"
    pg = server(port, data)
    how = "started"
    if not (pg.data / "PG_VERSION").exists():
        shutil.rmtree(pg.data, ignore_errors=True)  # what a failed initdb left, if anything
        pg.initdb()
        how = "created"
    pg.start()  # raises, with the server log, if e.g. the port is taken by something else
    return how


def stop(port: int, data: Path = DATA) -> bool:
    """Stop our cluster on ``port`` if it runs (fast shutdown); whether it was running."""
    pg = server(port, data)
    if not (pg.data / "PG_VERSION").exists() or not pg.running():
        return False
    pg.stop("fast")
    return True


def start_all(ports: tuple[int, ...], data: Path = DATA) -> Optional[str]:
    """Ensure every server runs: None, or why one could not be started."""
    if not accepts_connections(SHARED + "/postgres"):
        return f"the shared PostgreSQL does not answer at {SHARED}"
    for port in ports:
        try:
            how = ensure(port, data)
        except BaseException as e:  # pytest.skip (no binaries) raises a BaseException
            if isinstance(e, KeyboardInterrupt):
                raise
            return f"PostgreSQL on port {port}: {type(e).__name__}: {e}"
        print(f"shard server {base_url(port)}: {how}", file=sys.stderr)
    return None


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["start", "stop", "urls"])
    args = parser.parse_args(argv)
    ports = ports_from_env()
    if args.command == "stop":
        for port in ports:
            verdict = "stopped" if stop(port) else "was not running (from here)"
            print(f"shard server {base_url(port)}: {verdict}", file=sys.stderr)
        return 0
    if args.command == "start":
        failure = start_all(ports)
        if failure is not None:
            print(f"cannot start the shard servers: {failure}", file=sys.stderr)
            return 1
    print(",".join(urls(ports)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
