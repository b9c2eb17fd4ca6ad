"""SQL for the database-wide gauges of the metrics (both backends): queue backlogs, PENDING
workflows by executor, executor heartbeats. Every query reads through a partial index of the
in-flight rows (or the small executors table), so its cost follows the backlog, not history."""

from __future__ import annotations

from waypoint.storage.records import DatabaseGauges, QueueGauge
from waypoint.storage.sql_base import Cursor, SqlCore
from waypoint.storage.sql_fleet import EXECUTOR_COLUMNS, executor_row


class GaugesSql(SqlCore):
    def database_gauges(self) -> DatabaseGauges:
        ws = self.d.t("workflow_status")

        def body(cur: Cursor) -> DatabaseGauges:
            now = cur.one(f"SELECT {self.d.now_ms}")
            queues = cur.all(
                "SELECT queue_name, queue_partition_key, status, COUNT(*), MIN(created_at) "
                f"FROM {ws} WHERE queue_name IS NOT NULL AND status IN ('ENQUEUED', 'PENDING') "
                "GROUP BY queue_name, queue_partition_key, status"
            )
            pending = cur.all(
                f"SELECT executor_id, COUNT(*) FROM {ws} WHERE status = 'PENDING' "
                "GROUP BY executor_id"
            )
            executors = cur.all(f"SELECT {EXECUTOR_COLUMNS} FROM {self.d.t('executors')}")
            db_now = int(now[0]) if now is not None else 0
            return DatabaseGauges(
                db_now_ms=db_now,
                queues=[
                    QueueGauge(r[0], r[1], r[2], int(r[3]), None if r[4] is None else int(r[4]))
                    for r in queues
                ],
                pending_by_executor={str(r[0] or ""): int(r[1]) for r in pending},
                executors=[executor_row(r, db_now) for r in executors],
            )

        return self._tx(body, "read the database gauges")
