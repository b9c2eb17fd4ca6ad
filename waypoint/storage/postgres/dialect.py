"""PostgreSQL's SQL dialect (how the shared SQL is spelled there), the cursor that can COPY and
the pool's connections: what the PostgreSQL store and its mixins write their statements with."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Any, Optional

import psycopg

from waypoint.storage.protocol import NOTIFY_CHANNEL
from waypoint.storage.sql_base import Cursor, Dialect, Params, _like_prefix
from waypoint.storage.url import check_schema_name


class PgDialect(Dialect):
    name = "postgresql"
    true = "TRUE"
    false = "FALSE"

    def __init__(self, schema: str) -> None:
        self.schema = check_schema_name(schema)

    def t(self, table: str) -> str:
        return f'"{self.schema}".{table}'

    def any(self, column: str, param: str) -> str:
        return f"{column} = ANY(%({param})s)"

    def list_param(self, values: Sequence[Any]) -> Any:
        return list(values)

    def render(self, sql: str) -> str:
        return sql

    now_ms = "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::bigint"

    def notify(self, key_expr: str) -> str:
        return f"pg_notify('{NOTIFY_CHANNEL}', {key_expr})"

    def notify_in(self, cur: Cursor, key_expr: str, params: Params, dbos_channel: str = "") -> None:
        also = f", pg_notify('{dbos_channel}', %(wf)s || '::' || %(key)s)" if dbos_channel else ""
        cur.exec(f"SELECT {self.notify(key_expr)}{also}", params)

    def starts_with(self, column: str, param: str) -> str:
        return f"{column} LIKE %({param})s ESCAPE '\\'"

    def prefix_params(self, param: str, prefix: str) -> dict[str, Any]:
        return {param: _like_prefix(prefix)}

    def likely(self, term: str) -> str:
        return term

    def unindexed(self, column: str) -> str:
        return column

    def in_subquery(self, column: str, subquery: str) -> str:
        return f"{column} = ANY(ARRAY({subquery}))"

    def running_at(self, stamp: str, param: str) -> str:
        # The expression of schema version 14's GiST indexes: the span (created, stamp] holds
        # the time. LEAST: a stamp before its creation (another clock) makes an empty span,
        # not an error.
        return (
            f"{stamp} IS NOT NULL AND int8range(LEAST(created_at, {stamp}), {stamp}, '(]') "
            f"@> %({param})s::bigint"
        )

    least = "LEAST"
    greatest = "GREATEST"

    def json_contains(self, column: str, param: str) -> str:
        return f"{column} @> %({param})s::jsonb"

    def json_value(self, param: str) -> str:
        return f"%({param})s::jsonb"

    no_limit = ""
    # The planner prices a walk of created_at backwards, filtering, as finding matches at the
    # average rate; with a deep backlog the newest rows are all ENQUEUED and a filter on
    # finished workflows reads past every one of them (measured 10-20x at a million rows).
    # Without incremental sort, only an index that holds the filter's rows in the listing's
    # full order avoids sorting every match, so that index is the plan.
    ordered_listing = "SET LOCAL enable_incremental_sort = off"

    lock_shared = " FOR SHARE"
    lock_exclusive = " FOR UPDATE"
    insertion_order = "seq"
    queue_order = "priority, created_at"

    def first_of_each(self, keys: str, table: str, columns: str, where: str, limit: str) -> str:
        return (
            f"{keys} CROSS JOIN LATERAL (SELECT {columns} FROM {table} WHERE {where} "
            f"ORDER BY {self.queue_order} LIMIT {limit}) AS c"
        )

    # NO KEY UPDATE: rows share-locked by foreign-key checks (a message or checkpoint being
    # written for that workflow) are still claimable; only other claimers are skipped.
    skip_locked = " FOR NO KEY UPDATE SKIP LOCKED"

    def lock_queue(self, cur: Cursor, queue_name: str) -> None:
        digest = hashlib.blake2b(f"waypoint-queue:{queue_name}".encode(), digest_size=8).digest()
        cur.exec(
            "SELECT pg_advisory_xact_lock(%(key)s)",
            {"key": int.from_bytes(digest, "big", signed=True)},
        )


class PgCursor(Cursor):
    """A transaction's cursor that can also COPY rows in."""

    def copy_rows(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        with self._raw.copy(sql) as copy:
            for row in rows:
                copy.write_row(row)


class PgConnection(psycopg.Connection[Any]):
    """The store's pooled connection: it keeps one cursor, which its single statements use
    (``postgres/hot.py``), so that a statement does not make a cursor, and with it an adapter
    context that looks every parameter's dumper up again, each time (~0.02 ms of a
    33-parameter insert's CPU)."""

    _hot: Optional[psycopg.Cursor[Any]] = None

    def hot_cursor(self) -> psycopg.Cursor[Any]:
        cur = self._hot
        if cur is None or cur.closed:
            cur = self._hot = self.cursor()
        return cur
