"""The shard catalog: which servers are shards, in which order, in which state.

The catalog is the ``waypoint_shards`` table of the shard with ordinal 0 (the first URL when
the cluster was founded). Every other shard holds its own row there too (``is_self``), so a
process maps each configured URL to its ordinal by asking that URL, whatever order its
configuration lists them in, and every process agrees on the order.

States: ``active`` shards take new placements; a ``joining`` shard (just added) is migrated
and known to lookups but takes no new work until activated. ``holds_markers``: the founding
shards; placement markers and queue homes hash over them only, so adding a shard never moves
where an existing ID's marker or an existing queue's home is.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql as pgsql

from waypoint.storage.errors import StorageConfigError
from waypoint.storage.url import redact

ACTIVE = "active"
JOINING = "joining"
_COLUMNS = "ordinal, shard_id, url, state, holds_markers, is_self, added_at"
# Founding and adding serialize on this advisory lock of the catalog database.
_LOCK_KEY = 0x57505348415244  # "WPSHARD"


@dataclass(frozen=True)
class ShardRow:
    ordinal: int
    shard_id: str
    url: str  # as the operator gave it, without a password
    state: str
    holds_markers: bool
    is_self: bool
    added_at: int


def strip_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = (parts.username or "") + "@" if parts.username else ""
    return urlunsplit(parts._replace(netloc=user + netloc[-1]))


def with_password_of(url: str, donor: str) -> str:
    """``url`` with ``donor``'s password when it has none (the catalog stores no passwords:
    a process reaches a shard added online with its catalog URL's credentials)."""
    parts, given = urlsplit(url), urlsplit(donor)
    if parts.password is not None or given.password is None:
        return url
    user = parts.username or given.username or ""
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{user}:{given.password}@{host}"))


def _connect(url: str) -> psycopg.Connection[Any]:
    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=10)
    except psycopg.OperationalError as exc:
        raise StorageConfigError(f"cannot connect to shard {redact(url)}: {exc}") from exc


def _table(schema: str) -> pgsql.Composed:
    return pgsql.SQL("{}.waypoint_shards").format(pgsql.Identifier(schema))


def read_rows(url: str, schema: str) -> list[ShardRow]:
    """Every row of a member's ``waypoint_shards`` (the catalog's: all shards)."""
    with _connect(url) as conn:
        rows = conn.execute(
            pgsql.SQL(f"SELECT {_COLUMNS} FROM {{}} ORDER BY ordinal").format(_table(schema))
        ).fetchall()
    return [ShardRow(*r) for r in rows]


def self_row(rows: Sequence[ShardRow]) -> Optional[ShardRow]:
    return next((r for r in rows if r.is_self), None)


def _insert(conn: psycopg.Connection[Any], schema: str, row: ShardRow) -> None:
    conn.execute(
        pgsql.SQL(
            f"INSERT INTO {{}} ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT DO NOTHING"
        ).format(_table(schema)),
        vars_of(row),
    )


def found(urls: Sequence[str], schema: str) -> None:
    """Register ``urls`` as a new cluster, in this order, unless the first one already holds
    a catalog; then give every configured shard its own row if it lacks it (a founding that
    stopped half-way). Serialized on an advisory lock of the first URL, so processes that
    migrate at the same moment found one cluster. Refuses a server the catalog does not list."""
    with _connect(urls[0]) as lock:
        lock.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            rows = read_rows(urls[0], schema)
            if not rows:
                _found_catalog(urls, schema)
                rows = read_rows(urls[0], schema)
            catalog_self = self_row(rows)
            if catalog_self is None or catalog_self.ordinal != 0:
                return  # the first URL is another shard: the catalog is elsewhere (load checks)
            by_url = {r.url: r for r in rows}
            for u in urls[1:]:
                if self_row(read_rows(u, schema)) is not None:
                    continue
                row = by_url.get(strip_password(u))
                if row is None:
                    raise StorageConfigError(
                        f"system_database_shards lists {redact(u)}, which is not a shard of this "
                        "cluster yet: add it with `waypoint shards add URL` (online)"
                    )
                with _connect(u) as conn:
                    _insert(conn, schema, _as_self(row))
        finally:
            lock.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))


def _found_catalog(urls: Sequence[str], schema: str) -> None:
    strangers = [redact(u) for u in urls[1:] if self_row(read_rows(u, schema)) is not None]
    if strangers:
        raise StorageConfigError(
            f"system_database_shards: {', '.join(strangers)} already belong to a cluster whose "
            f"catalog is not {redact(urls[0])}; list the catalog shard (ordinal 0) first"
        )
    now = int(time.time() * 1000)
    with _connect(urls[0]) as conn, conn.transaction():
        for i, u in enumerate(urls):
            row = ShardRow(i, uuid.uuid4().hex, strip_password(u), ACTIVE, True, False, now)
            _insert(conn, schema, _as_self(row) if i == 0 else row)


def _as_self(row: ShardRow) -> ShardRow:
    return ShardRow(
        row.ordinal,
        row.shard_id,
        row.url,
        row.state,
        row.holds_markers,
        True,
        row.added_at,
    )


def add(catalog_url: str, new_url: str, schema: str) -> ShardRow:
    """Register a migrated server as the next shard, ``joining``: lookups will find work on
    it, no new work goes to it until ``activate``. Idempotent for the same server."""
    existing = self_row(read_rows(new_url, schema))
    if existing is not None:
        if any(r.shard_id == existing.shard_id for r in read_rows(catalog_url, schema)):
            return existing
        with _connect(catalog_url) as conn:  # an earlier add stopped half-way: finish it
            _insert(conn, schema, ShardRow(*[*vars_of(existing)[:5], False, existing.added_at]))
        return existing
    with _connect(catalog_url) as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))  # vs. founding, adding
        top = conn.execute(
            pgsql.SQL("SELECT COALESCE(MAX(ordinal), -1) FROM {}").format(_table(schema))
        ).fetchone()
        ordinal = int(top[0] if top else -1) + 1
        row = ShardRow(
            ordinal,
            uuid.uuid4().hex,
            strip_password(new_url),
            JOINING,
            False,
            False,
            int(time.time() * 1000),
        )
        # The new shard learns its place first: a crash in between leaves a server that
        # knows its ordinal but is not in the catalog, and a retried add repairs it.
        with _connect(new_url) as member:
            _insert(member, schema, _as_self(row))
        _insert(conn, schema, row)
    return row


def set_state(catalog_url: str, ordinal: int, state: str, schema: str) -> bool:
    with _connect(catalog_url) as conn:
        cur = conn.execute(
            pgsql.SQL("UPDATE {} SET state = %s WHERE ordinal = %s").format(_table(schema)),
            (state, ordinal),
        )
        return cur.rowcount > 0


def vars_of(row: ShardRow) -> list[Any]:
    return [
        row.ordinal,
        row.shard_id,
        row.url,
        row.state,
        row.holds_markers,
        row.is_self,
        row.added_at,
    ]
