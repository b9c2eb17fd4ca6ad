"""PostgreSQL's SQL dialect (how the shared SQL is spelled there), the cursor that can COPY and
the pool's connections: what the PostgreSQL store and its mixins write their statements with."""

from __future__ import annotations

import hashlib
import re
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
    """The store's pooled connection: it keeps cursors, which its single statements use
    (``postgres/hot.py``), so that a statement does not make a cursor, and with it an adapter
    context (psycopg's ``Transformer``) that looks every parameter's dumper and every
    column's loader up again, each time (~0.02 ms of a 33-parameter insert's CPU).

    A cursor keeps its context only while it runs the same statement again, so the hot
    statements (``hot_cursor(sql)``), which alternate on a connection (a workflow's start,
    checkpoints and outcome), each have a cursor of their own; every other statement shares
    one (``hot_cursor()``). The hot statements are the store's own few, fixed texts; past
    ``KEPT`` of them, any other shares that cursor too."""

    KEPT = 16
    _hot: Optional[dict[str, psycopg.Cursor[Any]]] = None

    def hot_cursor(self, sql: str = "") -> psycopg.Cursor[Any]:
        kept = self._hot
        if kept is None:
            kept = self._hot = {}
        cur = kept.get(sql)
        if cur is None or cur.closed:
            if sql and sql not in kept and len(kept) > self.KEPT:
                return self.hot_cursor()
            cur = kept[sql] = self.cursor()
        return cur


def release(cur: psycopg.Cursor[Any]) -> None:
    """Let a kept cursor drop what it holds of its last statement once that has been read:
    its result (every row of it) and its parameters as they were sent, which would otherwise
    stay in memory until the cursor's next statement, on a connection that may then sit idle.
    The adapter context stays. psycopg has no public call for this (``close`` would drop the
    context too): should its internals change, nothing is let go, as before, rather than
    every statement failing; tests/storage/test_pg_hot.py checks that nothing is left."""
    try:
        cur._reset()
        cur._tx.set_pgresult(None, set_loaders=False)
    except (AttributeError, TypeError):  # pragma: no cover - another psycopg
        pass


_NAMED = re.compile(r"%\((\w+)\)s")


def positional(sql: str, names: Sequence[str]) -> str:
    """``sql`` with its named parameters (``%(name)s``) made positional (``%s``), to be given
    their values in a tuple in the order of ``names``, which must be the order in which they
    appear, each once. psycopg turns a mapping into a sequence on every execution; a
    statement the store runs per step or per workflow is written with names, and run as
    this."""
    found = tuple(_NAMED.findall(sql))
    if found != tuple(names):
        raise ValueError(f"parameters {found} are not {tuple(names)}")
    return _NAMED.sub("%s", sql)
