"""Start a pgbouncer in front of a PostgreSQL server, for the tests that put one in the path
(tests/integration/test_pgbouncer.py, the chaos campaign)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Optional

BINARY = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"


def installed() -> bool:
    return os.path.exists(BINARY)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(
    tmp: Path, mode: str, host: str, port: int, pool_size: int = 20
) -> tuple[subprocess.Popen[bytes], int]:
    """pgbouncer in ``tmp`` (which the postgres OS user must be able to reach: as root it
    runs as postgres, since it refuses root), forwarding every database to ``host:port``.
    Returns the process and its port; raises RuntimeError if it does not start listening."""
    listen = free_port()
    tmp.chmod(0o777)
    (tmp / "users.txt").write_text('"postgres" ""\n')
    (tmp / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"* = host={host} port={port}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {listen}\n"
        f"auth_type = trust\nauth_file = {tmp / 'users.txt'}\n"
        f"pool_mode = {mode}\nmax_client_conn = 200\ndefault_pool_size = {pool_size}\n"
        "unix_socket_dir =\n"
        f"logfile = {tmp / 'pgbouncer.log'}\npidfile = {tmp / 'pgbouncer.pid'}\n"
        "ignore_startup_parameters = extra_float_digits,options\n"
    )
    for f in tmp.iterdir():
        f.chmod(0o666)
    cmd = [BINARY, str(tmp / "pgbouncer.ini")]
    if os.geteuid() == 0:
        cmd[1:1] = ["-u", "postgres"]  # pgbouncer refuses to run as root
    with open(tmp / "stdout.log", "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.time() + 15
    problem: Optional[str] = None
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", listen), timeout=0.2):
                return proc, listen
        except OSError:
            if proc.poll() is not None:
                problem = f"pgbouncer exited: {(tmp / 'stdout.log').read_text()}"
                break
            time.sleep(0.05)
    proc.kill()
    proc.wait()
    raise RuntimeError(problem or "pgbouncer did not start listening")
