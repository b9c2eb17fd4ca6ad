"""A private PostgreSQL server for the tests that stop, kill or reconfigure one.

House rule: a test that stops, kills or reconfigures a database server starts its own
private server; it never does that to the machine's shared cluster on 5432, which every
other test (and anything else on the machine) is using at the same time.

The ``private_pg`` fixture ``initdb``s a fresh cluster in a temporary directory (trust
authentication, listening on 127.0.0.1 on a free port, its socket in that directory), starts
it with ``pg_ctl -w``, and at teardown stops it (immediate) and removes the directory. The
test stops and starts that same server again, on the same port, with ``stop()`` and
``start()``. PostgreSQL refuses to run as root: as root the server programs run as the
``postgres`` OS user (``runuser``), in a directory that user owns; as anyone else, as
themselves. The binaries are the newest under /usr/lib/postgresql/*/bin (Debian's
``postgresql`` package), else those on PATH, unless the caller names a ``bindir`` (the
version matrix, ``tests/pg_matrix.py``, runs other majors that way); without them the test is
skipped. ``standby_of()`` makes a streaming standby of a running server (``pg_basebackup
-R``), and ``promote()`` turns it into a primary: the failover tests use them.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import socket
import stat
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import psycopg
import pytest
from psycopg import sql

OS_USER = "postgres"  # the server's OS user when the suite runs as root


def _bindir() -> Optional[Path]:
    """The newest PostgreSQL server binaries: /usr/lib/postgresql/<version>/bin, else PATH."""

    def usable(d: Path) -> bool:
        return all(os.access(d / p, os.X_OK) for p in ("initdb", "pg_ctl", "postgres"))

    root = Path("/usr/lib/postgresql")
    versions = [d for d in root.glob("*/bin") if d.parent.name.isdigit() and usable(d)]
    if versions:
        return max(versions, key=lambda d: int(d.parent.name))
    on_path = shutil.which("pg_ctl")
    if on_path and usable(Path(on_path).parent):
        return Path(on_path).parent
    return None


def _run_as() -> tuple[list[str], Optional[pwd.struct_passwd]]:
    """The command prefix that runs a server program as a user PostgreSQL accepts."""
    if os.geteuid() != 0:
        return [], None
    try:
        user = pwd.getpwnam(OS_USER)
    except KeyError:
        pytest.skip(f"running as root and there is no {OS_USER!r} OS user to run PostgreSQL as")
    runuser = shutil.which("runuser")
    if runuser is None:
        pytest.skip("running as root and runuser is missing: cannot run PostgreSQL as postgres")
    return [runuser, "-u", OS_USER, "--"], user


def _tempdir_base() -> str:
    """A temporary directory whose ancestors the server's OS user can traverse."""
    base = Path(tempfile.gettempdir())
    traversable = all(p.stat().st_mode & stat.S_IXOTH for p in [base, *base.parents])
    return str(base) if traversable or os.geteuid() != 0 else "/tmp"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivatePostgres:
    """One throwaway PostgreSQL server. Create it with ``private_postgres()`` or the
    ``private_pg`` fixture; ``url()`` connects as the superuser ``postgres``."""

    def __init__(
        self,
        bindir: Optional[Path] = None,
        conf: Mapping[str, str] = {},
        directory: Optional[Path] = None,
        port: Optional[int] = None,
        detached: bool = False,
    ) -> None:
        """``directory`` and ``port`` fix where the server lives (a long-lived server such as
        a shard of ``tests/shard_servers.py``; default: a fresh temporary directory and a
        free port); ``detached`` starts it in its own session, so that a Ctrl-C in the
        terminal that started it does not reach it."""
        bindir = bindir or _bindir()
        if bindir is None:
            pytest.skip(
                "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found under "
                "/usr/lib/postgresql/*/bin or on PATH: install the postgresql package"
            )
        self.bindir = bindir
        self._prefix, user = _run_as()
        if directory is None:
            self.dir = Path(tempfile.mkdtemp(prefix="waypoint-pg-", dir=_tempdir_base()))
        else:
            directory.mkdir(parents=True, exist_ok=True)
            self.dir = directory
        if user is not None:
            os.chown(self.dir, user.pw_uid, user.pw_gid)
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        self.port = _free_port() if port is None else port
        self.detached = detached
        self.conf = dict(conf)  # extra postgresql.conf settings
        # Our own environment for the server programs: no PGDATA/PGPORT/... of the caller's.
        self._env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}

    def initdb(self, waldir: Optional[Path] = None) -> None:
        """Create the cluster: trust authentication, 127.0.0.1 only, socket in our directory;
        its WAL in ``waldir`` when given (a small disk that can fill up)."""
        # --no-sync only skips flushing initdb's files to disk; the server keeps fsync=on.
        extra = [] if waldir is None else ["--waldir", str(waldir)]
        self._run(
            "initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8",
            "--locale=C", "--no-sync", *extra,
        )  # fmt: skip
        self._configure()

    def _configure(self) -> None:
        """Our settings, appended to postgresql.conf (later lines win)."""
        settings = {
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": str(self.dir),
            **self.conf,
        }
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write("\n# waypoint tests: a private server\n")
            conf.writelines(f"{k} = '{v}'\n" for k, v in settings.items())

    def major(self) -> int:
        """The server's major version (14, 15, ...), from ``postgres --version``."""
        out = self._run("postgres", "--version").stdout
        found = re.search(r"\(PostgreSQL\) (\d+)", out)
        if found is None:
            raise RuntimeError(f"cannot read the version from {out!r}")
        return int(found.group(1))

    def base_url(self) -> str:
        """The URL without a database, as ``WAYPOINT_TEST_PG`` takes it."""
        return f"postgresql://postgres@127.0.0.1:{self.port}"

    @classmethod
    def standby_of(
        cls, primary: PrivatePostgres, conf: Mapping[str, str] = {}, waldir: Optional[Path] = None
    ) -> PrivatePostgres:
        """A streaming standby of the running ``primary``, not yet started: a base backup
        that follows the primary's WAL (``pg_basebackup -R`` writes ``standby.signal`` and
        ``primary_conninfo``). ``application_name`` in its conninfo is ``standby``, the name
        ``synchronous_standby_names`` can list. ``waldir``: its WAL there (a small disk)."""
        standby = cls(primary.bindir, {**primary.conf, **conf})
        extra = [] if waldir is None else ["--waldir", str(waldir)]
        standby._run(
            "pg_basebackup", "-D", str(standby.data), "-h", "127.0.0.1", "-p", str(primary.port),
            "-U", "postgres", "-X", "stream", "-R", "-c", "fast", *extra,
            "-d", f"application_name=standby host=127.0.0.1 port={primary.port} user=postgres",
        )  # fmt: skip
        standby._configure()  # its own socket directory and settings
        return standby

    def promote(self) -> None:
        """End recovery: the standby becomes a primary that accepts writes."""
        self._run("pg_ctl", "promote", "-D", str(self.data), "-w", "-t", "60")

    def sql(self, query: str, database: str = "postgres") -> list[tuple[object, ...]]:
        """Run one statement (autocommit) and return its rows."""
        with psycopg.connect(self.url(database), autocommit=True, connect_timeout=5) as conn:
            cur = conn.execute(query)
            return cur.fetchall() if cur.description is not None else []

    def _run(
        self, program: str, *args: str, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [*self._prefix, str(self.bindir / program), *args],
            capture_output=True,
            text=True,
            timeout=90,
            cwd=self.dir,
            env=self._env,
            stdin=subprocess.DEVNULL,
            start_new_session=self.detached,
        )
        if check and done.returncode != 0:
            raise RuntimeError(
                f"{program} {' '.join(args)} failed ({done.returncode}):\n{done.stdout}"
                f"{done.stderr}\n--- server log ---\n{self.log_tail()}"
            )
        return done

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return "<no server log>"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create a database on this server and return its URL."""
        with psycopg.connect(self.url(), autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def start(self) -> None:
        """Start the server (on the same port every time) and wait until it accepts
        connections; after an immediate stop this replays the WAL first."""
        self._run(
            "pg_ctl", "start", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
            "-o", f"-p {self.port}",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: ``fast`` (clean shutdown) or ``immediate`` (no shutdown
        checkpoint: like a crash, recovered from the WAL at the next start)."""
        assert mode in ("smart", "fast", "immediate"), mode
        self._run("pg_ctl", "stop", "-D", str(self.data), "-m", mode, "-w", "-t", "60")

    def running(self) -> bool:
        return self._run("pg_ctl", "status", "-D", str(self.data), check=False).returncode == 0

    def destroy(self) -> None:
        try:
            if self.data.exists() and self.running():
                self.stop("immediate")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


def accepts_connections(url: str) -> bool:
    """Whether a server answers at ``url`` now (a stopped one refuses at once)."""
    try:
        with psycopg.connect(url, connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except psycopg.OperationalError:
        return False
    return True


def start_on_free_port(server: PrivatePostgres) -> None:
    """Start ``server``; if its free port was taken between choosing it and binding it,
    another one."""
    for attempt in range(3):
        try:
            server.start()
            return
        except RuntimeError:
            if attempt == 2 or "already in use" not in server.log_tail():
                raise
            server.port = _free_port()


@contextmanager
def private_postgres(
    bindir: Optional[Path] = None, conf: Mapping[str, str] = {}
) -> Iterator[PrivatePostgres]:
    """A private server, started; stopped (immediate) and removed on exit."""
    server = PrivatePostgres(bindir, conf)
    try:
        server.initdb()
        start_on_free_port(server)
        yield server
    finally:
        server.destroy()


@pytest.fixture
def private_pg() -> Iterator[PrivatePostgres]:
    """A private PostgreSQL server for a test that stops or crashes it (see the module doc)."""
    with private_postgres() as server:
        yield server
