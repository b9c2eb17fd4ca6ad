"""SQL for the database-wide gauges of the metrics (both backends): queue backlogs, PENDING
workflows by executor, executor heartbeats. Every query reads through a partial index of the
in-flight rows (or the small executors table), so its cost follows the backlog, not history."""

from __future__ import annotations

from waypoint.storage.records import DatabaseGauges, ExecutorRow, QueueGauge
from waypoint.storage.sql_base import Cursor, SqlCore


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
            executors = cur.all(
                "SELECT executor_id, incarnation, application_name, application_version, "
                "hostname, pid, heartbeat_ms, started_at, last_seen "
                f"FROM {self.d.t('executors')}"
            )
            db_now = int(now[0]) if now is not None else 0
            return DatabaseGauges(
                db_now_ms=db_now,
                queues=[
                    QueueGauge(r[0], r[1], r[2], int(r[3]), None if r[4] is None else int(r[4]))
                    for r in queues
                ],
                pending_by_executor={str(r[0] or ""): int(r[1]) for r in pending},
                executors=[
                    ExecutorRow(
                        executor_id=r[0],
                        incarnation=r[1],
                        application_name=r[2],
                        application_version=r[3],
                        hostname=r[4],
                        pid=r[5],
                        heartbeat_ms=int(r[6]),
                        started_at=r[7],
                        last_seen=r[8],
                        db_now=db_now,
                    )
                    for r in executors
                ],
            )

        return self._tx(body, "read the database gauges")
