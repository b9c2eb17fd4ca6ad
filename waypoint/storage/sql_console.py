"""SQL for the console's pages (both backends): per-status counts, queue throughput, the
retention picture, and a workflow's messages, event history and stream values.

The counts run on every render of the workflows page, so each is capped: a count stops at
``cap`` rows (read through an index where the status has one) instead of scanning history.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Optional

from waypoint.storage.records import (
    AgeBucket,
    EventHistoryRow,
    MessageRow,
    StreamRow,
    Throughput,
)
from waypoint.storage.sql_base import OWNED, Cursor, Params, SqlCore

# The columns the console counts workflows by.
COUNTABLE = ("status", "application_version")
STATUS_NAME = re.compile(r"[A-Z_]{1,40}")
# The predicate of the partial index (migration 0001) that holds a status's rows, repeated
# in the count's WHERE: SQLite uses a partial index only when the query states its
# predicate (it does not infer "status IN (...)" from "status = 'ERROR'").
FAILED = "status IN ('ERROR', 'CANCELLED', 'MAX_RECOVERY_ATTEMPTS_EXCEEDED')"
INDEXED = {
    "ERROR": f" AND {FAILED}",
    "CANCELLED": f" AND {FAILED}",
    "MAX_RECOVERY_ATTEMPTS_EXCEEDED": f" AND {FAILED}",
    "ENQUEUED": " AND status IN ('ENQUEUED', 'PENDING')",
}


class ConsoleSql(SqlCore):
    def count_capped(
        self, column: str, values: Sequence[str], application_name: Optional[str], cap: int
    ) -> dict[str, int]:
        if column not in COUNTABLE:
            raise ValueError(f"cannot count workflows by {column!r}")
        ws = self.d.t("workflow_status")
        owned = f" AND {OWNED}" if application_name is not None else ""

        def body(cur: Cursor) -> dict[str, int]:
            out: dict[str, int] = {}
            for value in values:
                params: Params = {"value": value, "app": application_name}
                # A status is written into the statement: PostgreSQL picks a partial index
                # (PENDING, the failed ones, DELAYED...) only for a literal it can match
                # against the index's predicate, not for a parameter of a generic plan.
                match = f"'{value}'" if column == "status" else "%(value)s"
                if column == "status" and not STATUS_NAME.fullmatch(value):
                    raise ValueError(f"not a workflow status: {value!r}")
                row = cur.one(
                    f"SELECT COUNT(*) FROM (SELECT 1 FROM {ws} WHERE {column} = {match}"
                    f"{INDEXED.get(value, '') if column == 'status' else ''}"
                    f"{owned} LIMIT {int(cap)}) capped",
                    params,
                )
                out[value] = int(row[0]) if row is not None else 0
            return out

        return self._tx(body, f"count workflows by {column}")

    def completions_since(self, since_ms: int, application_name: Optional[str]) -> list[Throughput]:
        owned = f" AND {OWNED}" if application_name is not None else ""
        rows = self._all(
            "SELECT queue_name, completed_at / 60000 AS minute, COUNT(*) "
            f"FROM {self.d.t('workflow_status')} WHERE completed_at >= %(since)s "
            f"AND queue_name IS NOT NULL{owned} GROUP BY queue_name, completed_at / 60000",
            {"since": since_ms, "app": application_name},
            "count queue completions",
        )
        return [Throughput(str(r[0]), int(r[1]), int(r[2])) for r in rows]

    def age_buckets(
        self, now_ms: int, bands_ms: Sequence[int], application_name: Optional[str]
    ) -> list[AgeBucket]:
        params: Params = {"app": application_name}
        cases = []
        for i, band in enumerate(bands_ms):
            params[f"b{i}"] = now_ms - band
            cases.append(f"WHEN created_at >= %(b{i})s THEN {i}")
        band_expr = f"CASE {' '.join(cases)} ELSE {len(bands_ms)} END"
        where = f" WHERE {OWNED}" if application_name is not None else ""
        rows = self._all(
            f"SELECT status, {band_expr} AS band, COUNT(*) FROM {self.d.t('workflow_status')}"
            f"{where} GROUP BY status, {band_expr}",
            params,
            "count workflows by age",
        )
        return [AgeBucket(str(r[0]), int(r[1]), int(r[2])) for r in rows]

    def messages_to(self, workflow_id: str, limit: int) -> list[MessageRow]:
        rows = self._all(
            "SELECT message_uuid, topic, message, serialization, created_at_epoch_ms, consumed "
            f"FROM {self.d.t('notifications')} WHERE destination_uuid = %(wf)s "
            "ORDER BY created_at_epoch_ms, message_uuid LIMIT %(limit)s",
            {"wf": workflow_id, "limit": limit},
            "list messages",
        )
        return [MessageRow(str(r[0]), r[1], str(r[2]), r[3], int(r[4]), bool(r[5])) for r in rows]

    def event_history(self, workflow_id: str, limit: int) -> list[EventHistoryRow]:
        rows = self._all(
            "SELECT function_id, key, value, serialization "
            f"FROM {self.d.t('workflow_events_history')} WHERE workflow_uuid = %(wf)s "
            "ORDER BY function_id, key LIMIT %(limit)s",
            {"wf": workflow_id, "limit": limit},
            "list event history",
        )
        return [EventHistoryRow(int(r[0]), str(r[1]), str(r[2]), r[3]) for r in rows]

    def stream_values(self, workflow_id: str, limit: int) -> list[StreamRow]:
        rows = self._all(
            'SELECT key, "offset", function_id, value, serialization '
            f"FROM {self.d.t('streams')} WHERE workflow_uuid = %(wf)s "
            'ORDER BY key, "offset" LIMIT %(limit)s',
            {"wf": workflow_id, "limit": limit},
            "list stream values",
        )
        return [StreamRow(str(r[0]), int(r[1]), int(r[2]), str(r[3]), r[4]) for r in rows]
