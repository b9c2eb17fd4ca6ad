"""The chaos campaign's PostgreSQL: a primary and a synchronous standby, each behind its own
proxy, and the small disks their WAL lives on.

Topology (why): workers w1, w2 and the producers connect with a multi-host URL through one
proxy per server slot (``host=proxy0,proxy1 target_session_attrs=read-write``), so a
failover is found by libpq as in production and the network faults (cut, latency, black
hole) still sit between every process and every server: they are applied to all proxies at
once. pgbouncer (worker w3) cannot choose a read-write host, so it forwards to a third proxy,
the "virtual IP", which the campaign points at whichever server is the primary.

``failover()`` stops the primary hard (immediate, a crash), promotes the synchronous standby
(which holds every acknowledged commit), lets it commit alone, and points the virtual IP at
it; ``rebuild_standby()`` then makes a new standby of the new primary (``pg_basebackup``) in
the dead server's slot, behind the same proxy, and makes replication synchronous again, so
the next failover is safe too. The campaign calls the two one after the other and never
injects another fault in between.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Optional

from tests.private_pg import PrivatePostgres, start_on_free_port
from tests.proxy import TcpProxy

CONF = {
    "max_connections": "200",
    "max_wal_size": "64MB",
    "min_wal_size": "32MB",
    "restart_after_crash": "on",
    "wal_keep_size": "64MB",
}
DATABASE = "chaos"


def can_mount() -> bool:
    if os.geteuid() != 0:
        return False
    probe = Path(tempfile.mkdtemp(prefix="waypoint-chaos-probe-"))
    try:
        ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(probe)],
                            capture_output=True).returncode == 0  # fmt: skip
        if ok:
            subprocess.run(["umount", str(probe)], capture_output=True)
        return ok
    finally:
        probe.rmdir()


class Tmpfs:
    """A small tmpfs (a disk that fills up): ``fill`` writes a filler file to the brim."""

    def __init__(self, path: Path, size_mb: int, owner: Optional[int] = None) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0777", "tmpfs",
                        str(path)], check=True, capture_output=True)  # fmt: skip
        if owner is not None:
            os.chown(path, owner, owner)
        self.filler = path / "filler"

    def fill(self) -> None:
        try:
            fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError:
            return  # already full
        try:
            for size in (1 << 20, 4096, 512):
                chunk = b"\0" * size
                try:
                    while True:
                        os.write(fd, chunk)
                except OSError:
                    continue
        finally:
            os.close(fd)

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)

    def close(self) -> None:
        subprocess.run(["umount", "-l", str(self.path)], capture_output=True)


def poll(what: str, predicate: Callable[[], object], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


class Slot:
    """One server's place: its proxy (a fixed port in the URL), its WAL disk, its server."""

    def __init__(self, stack: ExitStack, waldisk: Optional[Path]) -> None:
        self.proxy = TcpProxy("127.0.0.1", 1)  # pointed at the server once it runs
        stack.callback(self.proxy.close)
        self.disk: Optional[Tmpfs] = None
        self.waldisk = waldisk
        if waldisk is not None:
            uid = pwd.getpwnam("postgres").pw_uid
            self.disk = Tmpfs(waldisk, 192, uid)
            stack.callback(lambda: shutil.rmtree(waldisk, ignore_errors=True))
            stack.callback(self.disk.close)
        self.server: Optional[PrivatePostgres] = None

    def waldir(self) -> Optional[Path]:
        """A fresh WAL directory on this slot's disk (the last server's WAL removed)."""
        if self.waldisk is None:
            return None
        wal = self.waldisk / "wal"
        shutil.rmtree(wal, ignore_errors=True)
        if self.disk is not None:
            self.disk.free()
        return wal

    def seat(self, server: PrivatePostgres) -> None:
        self.server = server
        self.proxy.target = ("127.0.0.1", server.port)


class Cluster:
    def __init__(self, stack: ExitStack, mount: bool) -> None:
        self.stack = stack
        base = None
        if mount:
            base = Path(tempfile.mkdtemp(prefix="waypoint-chaos-wal-", dir="/tmp"))
            os.chmod(base, 0o755)
            stack.callback(lambda: shutil.rmtree(base, ignore_errors=True))
        self.slots = [Slot(stack, None if base is None else base / f"slot{i}") for i in (0, 1)]
        self.vip = TcpProxy("127.0.0.1", 1)
        stack.callback(self.vip.close)
        self.primary_slot = 0
        self.failovers = 0
        stack.callback(self._destroy_servers)
        first = PrivatePostgres(conf=CONF)
        first.initdb(self.slots[0].waldir())
        start_on_free_port(first)
        self.slots[0].seat(first)
        self.vip.target = ("127.0.0.1", first.port)
        first.create_database(DATABASE)
        self.rebuild_standby()

    def _destroy_servers(self) -> None:
        for slot in self.slots:
            if slot.server is not None:
                slot.server.destroy()

    # -- where things are ------------------------------------------------------------------------
    @property
    def primary(self) -> PrivatePostgres:
        server = self.slots[self.primary_slot].server
        assert server is not None
        return server

    @property
    def disk(self) -> Optional[Tmpfs]:
        """The disk the primary's WAL is on."""
        return self.slots[self.primary_slot].disk

    def url(self) -> str:
        """Multi-host, through the slot proxies: libpq finds the read-write server."""
        hosts = ",".join(f"127.0.0.1:{s.proxy.port}" for s in self.slots)
        return f"postgresql://postgres@{hosts}/{DATABASE}?target_session_attrs=read-write"

    def direct_url(self) -> str:
        """The primary itself, past every proxy (the campaign's own queries and faults)."""
        return self.primary.url(DATABASE)

    def proxies(self) -> list[TcpProxy]:
        return [s.proxy for s in self.slots] + [self.vip]

    # -- failover --------------------------------------------------------------------------------
    def failover(self, delay: float) -> None:
        """Crash the primary, ``delay`` s later promote the synchronous standby, let it
        commit alone (there is no standby until ``rebuild_standby``), move the virtual IP."""
        old = self.slots[self.primary_slot]
        new = self.slots[1 - self.primary_slot]
        assert old.server is not None and new.server is not None
        # A failover manager promotes only a standby that is synchronous and caught up: after
        # a crash-restart of the primary (pg_restart) the standby is briefly behind, and the
        # commits the primary replayed on its own are visible (readable) there before they
        # are on the standby.
        primary = old.server
        lsn = primary.sql("SELECT pg_current_wal_flush_lsn()::text")[0][0]
        poll("the standby to be synchronous and caught up", lambda: primary.sql(
            "SELECT 1 FROM pg_stat_replication WHERE sync_state = 'sync' "
            f"AND flush_lsn >= '{lsn}'::pg_lsn"
        ))  # fmt: skip
        primary.stop("immediate")
        time.sleep(delay)
        new.server.promote()
        new.server.sql("ALTER SYSTEM RESET synchronous_standby_names")
        new.server.sql("SELECT pg_reload_conf()")
        self.primary_slot = 1 - self.primary_slot
        self.vip.target = ("127.0.0.1", new.server.port)
        self.failovers += 1

    def rebuild_standby(self) -> None:
        """A new standby of the primary in the other slot, streaming synchronously."""
        primary = self.primary
        slot = self.slots[1 - self.primary_slot]
        if slot.server is not None:
            slot.server.destroy()
            slot.server = None
        standby = PrivatePostgres.standby_of(primary, waldir=slot.waldir())
        try:
            start_on_free_port(standby)
        except BaseException:
            standby.destroy()
            raise
        slot.seat(standby)
        poll("the standby to stream", lambda: primary.sql(
            "SELECT 1 FROM pg_stat_replication WHERE application_name = 'standby' "
            "AND state = 'streaming'"
        ))  # fmt: skip
        primary.sql("ALTER SYSTEM SET synchronous_standby_names = 'standby'")
        primary.sql("SELECT pg_reload_conf()")
        poll("the standby to be synchronous", lambda: primary.sql(
            "SELECT 1 FROM pg_stat_replication WHERE sync_state = 'sync'"
        ))  # fmt: skip
