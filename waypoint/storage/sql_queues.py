"""SQL for claiming queued work under shared limits, delays, deduplication and
database-backed queue definitions (both backends)."""

from __future__ import annotations

import random
import uuid
from functools import partial
from typing import Optional

from waypoint.storage.errors import QueueOwnedError
from waypoint.storage.records import (
    QUEUE_COLUMNS,
    ClaimRequest,
    DebounceUpdate,
    QueueRow,
    WorkflowRow,
)
from waypoint.storage.sql_base import (
    OWNED,
    SELECT_WORKFLOW,
    Cursor,
    Params,
    Row,
    SqlCore,
    _now_ms,
    workflow_row,
)

# The WHERE of the in-flight index (idx_workflow_status_in_flight: queue, status, priority,
# age), stated beside a single status: SQLite uses a partial index only when the query states
# its condition (a claim sorted its queue's whole backlog, 32x at a million rows; a running
# count read the queue's whole history); PostgreSQL proves it either way.
IN_FLIGHT = "status IN ('ENQUEUED', 'PENDING')"
# A partitioned claim reads the queue's first rows in order, this many (or four per row it may
# take); when the queue goes on past them (their partitions are only those of its oldest rows)
# it reads each partition's first rows. Rows without a partition key (enqueued before the
# queue was partitioned; DBOS never claims them), one more partition, are looked for only among
# those first rows: no index holds them apart from the unpartitioned queues' rows.
HEAD_ROWS = 100


def _first_of_each(rows: list[Row], per: int) -> list[Row]:
    """The first ``per`` of ``rows`` (workflow ID, partition key, ...) of each partition."""
    seen: dict[Optional[str], int] = {}
    out: list[Row] = []
    for row in rows:
        n = seen[row[1]] = seen.get(row[1], 0) + 1
        if n <= per:
            out.append(row)
    return out


def _visit_order(keys: list[Optional[str]]) -> list[Optional[str]]:
    """The order a claim visits the partitions with claimable rows in: a new random one on
    every claim, as DBOS shuffles its partitions on every dispatcher pass, so a few partitions
    holding the queue's oldest rows cannot take every freed slot."""
    random.shuffle(keys)
    return keys


class QueueSql(SqlCore):
    def _claim_where(self, req: ClaimRequest, now_ms: int, limit: int) -> tuple[str, Params]:
        """Which rows a claim may take, and every parameter of the claim's statements."""
        # Which version may run a row is decided here in the same statement, so a version
        # registered or promoted elsewhere counts at once.
        sql = (
            f"queue_name = %(queue)s AND status = 'ENQUEUED' AND {IN_FLIGHT} "
            f"AND {self._runnable(req.compatible)}"
        )
        if req.application_name is not None:
            sql += f" AND {OWNED}"
        params: Params = {
            "queue": req.queue_name,
            "ver": req.application_version,
            "app": req.application_name,
            "executor": req.executor_id,
            "now": now_ms,
            "token": req.claim_token,
            "limit": limit,
            # Starts count against rate limits only when a limit is enforced.
            "rl": req.shared_budget
            and (req.rate_limit is not None or req.partition_rate_limit is not None),
        }
        return sql, params

    def claim(self, req: ClaimRequest, now_ms: int) -> list[WorkflowRow]:
        if req.shared_budget:
            body = partial(self._claim_limited, req=req)
        else:
            where, params = self._claim_where(req, now_ms, req.limit)
            body = partial(self._claim_first, where=where, params=params)
        rows = self._claim_retrying(req.claim_token, lambda: self._tx_raw(body))
        return [workflow_row(r) for r in rows]

    def _claim_first(self, cur: Cursor, where: str, params: Params) -> list[Row]:
        """Claim the first ``limit`` claimable rows, by priority then age."""
        ids = [
            r[0]
            for r in cur.all(
                f"SELECT workflow_uuid FROM {self.d.t('workflow_status')} WHERE {where} "
                f"ORDER BY {self.d.queue_order} LIMIT %(limit)s" + self.d.skip_locked,
                params,
            )
        ]
        return self._flip(cur, ids, params)

    def _flip(self, cur: Cursor, ids: list[str], params: Params) -> list[Row]:
        if not ids:
            return []
        return cur.all(
            f"UPDATE {self.d.t('workflow_status')} SET {self._claim_set()}, "
            "rate_limited = %(rl)s "
            # Found by their keys: SQLite without statistics read the whole backlog from the
            # status index instead (a million rows: 27 ms a claim).
            f"WHERE {self.d.any('workflow_uuid', 'ids')} "
            f"AND {self.d.unindexed('status')} = 'ENQUEUED' "
            f"RETURNING {SELECT_WORKFLOW}",
            {**params, "ids": self.d.list_param(ids)},
        )

    def _claim_limited(self, cur: Cursor, req: ClaimRequest) -> list[Row]:
        """Claim under shared limits: one claimer per queue at a time (a transaction-scoped
        lock), counting from the database what every process has running and has started."""
        ws = self.d.t("workflow_status")
        self.d.lock_queue(cur, req.queue_name)
        row = cur.one(f"SELECT {self.d.now_ms}")
        now = int(row[0]) if row else 0
        q = {"queue": req.queue_name}
        budget = req.limit
        if req.global_concurrency is not None:
            running = cur.one(
                f"SELECT count(*) FROM {ws} WHERE queue_name = %(queue)s AND status = 'PENDING' "
                f"AND {IN_FLIGHT}",
                q,
            )
            budget = min(budget, req.global_concurrency - int(running[0] if running else 0))
        if req.rate_limit is not None:
            limit, period = req.rate_limit
            window = cur.one(
                f"SELECT count(*), MIN(started_at_epoch_ms) FROM {ws} WHERE queue_name = %(queue)s "
                f"AND rate_limited = {self.d.true} AND started_at_epoch_ms > %(since)s "
                "AND status NOT IN ('ENQUEUED', 'DELAYED')",
                {**q, "since": now - int(period * 1000)},
            )
            started = int(window[0]) if window else 0
            if started >= limit and window and window[1] is not None:
                # Full window: nothing can start before its oldest start ages out.
                req.retry_in_ms = max(0, int(window[1]) + int(period * 1000) + 1 - now)
            budget = min(budget, limit - started)
        if budget <= 0:
            return []
        where, params = self._claim_where(req, now, budget)
        caps = (
            req.partition_concurrency,
            req.partition_worker_concurrency,
            req.partition_rate_limit,
        )
        if not req.partitioned or all(cap is None for cap in caps):
            # Uncapped partitions change nothing: the first rows in queue order.
            return self._claim_first(cur, where, params)
        return self._flip(cur, self._pick_partitions(cur, req, where, params, budget, now), params)

    def _pick_partitions(
        self, cur: Cursor, req: ClaimRequest, where: str, params: Params, budget: int, now: int
    ) -> list[str]:
        ws = self.d.t("workflow_status")
        q = {"queue": req.queue_name}
        running: dict[Optional[str], int] = {}
        if req.partition_concurrency is not None:
            running = {
                r[0]: int(r[1])
                for r in cur.all(
                    f"SELECT queue_partition_key, count(*) FROM {ws} WHERE queue_name = %(queue)s "
                    f"AND status = 'PENDING' AND {IN_FLIGHT} GROUP BY queue_partition_key",
                    q,
                )
            }
        recent: dict[Optional[str], int] = {}
        oldest: dict[Optional[str], int] = {}
        if req.partition_rate_limit is not None:
            for key, count, first in cur.all(
                f"SELECT queue_partition_key, count(*), MIN(started_at_epoch_ms) FROM {ws} "
                "WHERE queue_name = %(queue)s "
                f"AND rate_limited = {self.d.true} AND started_at_epoch_ms > %(since)s "
                "AND status NOT IN ('ENQUEUED', 'DELAYED') GROUP BY queue_partition_key",
                {**q, "since": now - int(req.partition_rate_limit[1] * 1000)},
            ):
                recent[key] = int(count)
                oldest[key] = int(first)
        per = budget
        for cap in (
            req.partition_concurrency,
            req.partition_worker_concurrency,
            req.partition_rate_limit[0] if req.partition_rate_limit else None,
        ):
            if cap is not None:
                per = min(per, cap)
        retry: list[int] = []

        def take(candidates: list[Row]) -> list[str]:
            """Each partition's first ``per`` rows (of ``candidates``), the partitions visited
            in a random order (_visit_order), each one's rows in queue order while its limits
            allow, up to the budget: every partition gets its turn, not only those whose rows
            are the queue's oldest."""
            groups: dict[Optional[str], list[str]] = {}
            for wfid, key, *_ in _first_of_each(
                sorted(candidates, key=lambda r: tuple(r[2:])), per
            ):
                groups.setdefault(key, []).append(wfid)
            ids: list[str] = []
            for key in _visit_order(list(groups)):
                free = min(per, budget - len(ids))
                if req.partition_concurrency is not None:
                    free = min(free, req.partition_concurrency - running.get(key, 0))
                if req.partition_worker_concurrency is not None:
                    here = 0 if key is None else req.local_partition_running.get(key, 0)
                    free = min(free, req.partition_worker_concurrency - here)
                if req.partition_rate_limit is not None:
                    left = req.partition_rate_limit[0] - recent.get(key, 0)
                    if left <= 0 and key in oldest:
                        period_ms = int(req.partition_rate_limit[1] * 1000)
                        retry.append(max(0, oldest[key] + period_ms + 1 - now))
                    free = min(free, left)
                ids.extend(groups[key][: max(0, free)])
                if len(ids) >= budget:
                    break
            return ids

        order = self.d.queue_order
        size = max(HEAD_ROWS, 4 * budget)
        # The queue's first rows, read from the in-flight index in order and only then tested
        # (PostgreSQL's planner, given the whole test, preferred a bitmap of every row of the
        # version and a sort of the queue's backlog, at 10,000 rows).
        first = (
            f"SELECT workflow_uuid FROM {ws} WHERE queue_name = %(queue)s "
            f"AND status = 'ENQUEUED' AND {IN_FLIGHT} ORDER BY {order} LIMIT %(head)s"
        )
        head = cur.all(
            f"SELECT CASE WHEN {where} THEN 1 ELSE 0 END, workflow_uuid, queue_partition_key, "
            f"{order} FROM {ws} WHERE {self.d.in_subquery('workflow_uuid', first)} "
            f"ORDER BY {order}",
            {**params, "head": size},
        )
        claimable = [row[1:] for row in head if row[0]]
        if len(head) == size:
            # The queue goes on past its first rows, whose partitions are those of its oldest
            # rows: each partition's first rows, and those without a key among the head's.
            keyed = cur.all(self._partition_heads(where), {**params, "per": per})
            claimable = [*keyed, *(r for r in claimable if r[1] is None)]
        ids = take(claimable)
        if retry:
            req.retry_in_ms = min(
                [*retry, *([req.retry_in_ms] if req.retry_in_ms is not None else [])]
            )
        return ids

    def _partition_heads(self, where: str) -> str:
        """The first ``per`` claimable rows of each partition with a key (with their queue
        order): the queue's partition keys walked one index seek at a time (a recursive CTE
        over the in-flight partition index: a loose index scan), and each one's first rows
        read from that index in order, so the cost follows the number of partitions, not the
        backlog (ranking every claimable row with a window function cost 9-12x at a million
        rows)."""
        ws = self.d.t("workflow_status")
        next_key = (
            f"(SELECT queue_partition_key FROM {ws} WHERE queue_name = %(queue)s "
            f"AND status = 'ENQUEUED' AND {IN_FLIGHT} AND queue_partition_key {{}} "
            "ORDER BY queue_partition_key LIMIT 1)"
        )
        cols = f"workflow_uuid, queue_partition_key, {self.d.queue_order}"
        heads = self.d.first_of_each(
            "parts",
            ws,
            cols,
            f"{where} AND queue_partition_key IS NOT NULL AND queue_partition_key = parts.k",
            "%(per)s",
        )
        return (
            f"WITH RECURSIVE parts(k) AS (SELECT {next_key.format('IS NOT NULL')} UNION ALL "
            f"SELECT {next_key.format('> parts.k')} FROM parts WHERE parts.k IS NOT NULL) "
            f"SELECT {', '.join('c.' + col for col in cols.split(', '))} FROM {heads}"
        )

    def promote_delayed(self, now_ms: int) -> list[str]:
        rows = self._all(
            f"UPDATE {self.d.t('workflow_status')} SET status = 'ENQUEUED', "
            "updated_at = %(now)s, deduplication_id = CASE WHEN is_debounced = "
            f"{self.d.true} THEN NULL ELSE deduplication_id END "
            "WHERE status = 'DELAYED' AND delay_until_epoch_ms <= %(now)s"
            + self.d.returning("queue_name", self.d.notify("'q:' || queue_name")),
            {"now": now_ms},
            "promote delayed workflows",
        )
        return sorted({r[0] for r in rows if r[0]})

    def next_delayed(self) -> Optional[int]:
        row = self._one(
            f"SELECT MIN(delay_until_epoch_ms) FROM {self.d.t('workflow_status')} "
            "WHERE status = 'DELAYED'",
            {},
            "next delayed workflow",
        )
        return int(row[0]) if row and row[0] is not None else None

    def extend_debounce(self, update: DebounceUpdate) -> Optional[str]:
        row = self._one(
            f"UPDATE {self.d.t('workflow_status')} SET inputs = %(inputs)s, "
            "serialization = %(ser)s, updated_at = %(now)s, application_version = %(ver)s, "
            "application_name = COALESCE(application_name, %(app)s), "
            "delay_until_epoch_ms = CASE WHEN debounce_deadline_epoch_ms IS NULL THEN %(until)s "
            f"ELSE {self.d.least}(%(until)s, debounce_deadline_epoch_ms) END "
            "WHERE queue_name = %(queue)s AND deduplication_id = %(dedup)s "
            f"AND status = 'DELAYED' AND is_debounced = {self.d.true} AND name = %(name)s "
            "RETURNING workflow_uuid",
            {
                "inputs": update.inputs,
                "ser": update.serialization,
                "now": update.now_ms,
                "app": update.application_name,
                "ver": update.application_version,
                "until": update.delay_until_ms,
                "queue": update.queue_name,
                "dedup": update.deduplication_id,
                "name": update.name,
            },
            "extend a debounced workflow",
        )
        return str(row[0]) if row else None

    def dedup_holder(self, queue_name: str, deduplication_id: str) -> Optional[str]:
        row = self._one(
            f"SELECT workflow_uuid FROM {self.d.t('workflow_status')} "
            "WHERE queue_name = %(queue)s AND deduplication_id = %(dedup)s",
            {"queue": queue_name, "dedup": deduplication_id},
            "find deduplication holder",
        )
        return str(row[0]) if row else None

    # -- database-backed queues -----------------------------------------------------------------
    def _queue_row(self, row: Row) -> QueueRow:
        values = dict(zip(QUEUE_COLUMNS, row, strict=True))
        values["priority_enabled"] = bool(values["priority_enabled"])
        values["partition_queue"] = bool(values["partition_queue"])
        return QueueRow(**values)

    def upsert_queue(self, row: QueueRow, update: bool) -> QueueRow:
        qt = self.d.t("queues")
        cols = [c for c in QUEUE_COLUMNS if c not in ("created_at", "updated_at")]
        params: Params = {c: getattr(row, c) for c in cols}
        params["now"] = _now_ms()
        params["id"] = str(uuid.uuid4())

        def body(cur: Cursor) -> QueueRow:
            existing = cur.one(
                f"SELECT {', '.join(QUEUE_COLUMNS)} FROM {qt} WHERE name = %(name)s", params
            )
            if existing is not None:
                current = self._queue_row(existing)
                if current.application_name not in (None, row.application_name):
                    raise QueueOwnedError(row.name, current.application_name)
                if not update:
                    return current
                sets = ", ".join(f"{c} = %({c})s" for c in cols if c != "name")
                cur.exec(
                    f"UPDATE {qt} SET {sets}, updated_at = %(now)s WHERE name = %(name)s", params
                )
            else:
                cur.exec(
                    f"INSERT INTO {qt} (queue_id, {', '.join(cols)}, created_at, updated_at) "
                    f"VALUES (%(id)s, {', '.join(f'%({c})s' for c in cols)}, %(now)s, %(now)s)",
                    params,
                )
            stored = cur.one(
                f"SELECT {', '.join(QUEUE_COLUMNS)} FROM {qt} WHERE name = %(name)s", params
            )
            assert stored is not None
            # Dispatchers in other processes re-read queue definitions.
            self.d.notify_in(cur, "'Q:' || %(name)s", params)
            return self._queue_row(stored)

        return self._tx(body, "register queue")

    def get_queue(self, name: str) -> Optional[QueueRow]:
        row = self._one(
            f"SELECT {', '.join(QUEUE_COLUMNS)} FROM {self.d.t('queues')} WHERE name = %(name)s",
            {"name": name},
            "read queue",
        )
        return self._queue_row(row) if row else None

    def delete_queue(self, name: str) -> bool:
        rows = self._all(
            f"DELETE FROM {self.d.t('queues')} WHERE name = %(name)s"
            + self.d.returning("1", self.d.notify("'Q:' || name")),
            {"name": name},
            "delete queue",
        )
        return bool(rows)

    def list_queues(self, application_name: Optional[str]) -> list[QueueRow]:
        rows = self._owned_rows(
            f"SELECT {', '.join(QUEUE_COLUMNS)} FROM {self.d.t('queues')}",
            application_name,
            "name",
            "list queues",
        )
        return [self._queue_row(r) for r in rows]
