"""SQL for the fleet: executor heartbeats, cron schedules and renaming an application (both
backends)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Optional

from waypoint.storage.records import (
    SCHEDULE_COLUMNS,
    ExecutorRow,
    ScheduleFilter,
    ScheduleRow,
    heartbeat_signatures,
)
from waypoint.storage.sql_base import OWNED, Cursor, Params, SqlCore

EXECUTOR_COLUMNS = (
    "executor_id, incarnation, application_name, application_version, hostname, pid, "
    "heartbeat_ms, started_at, last_seen, state"
)

EXECUTOR_STATES = ("live", "draining", "gone")


def executor_row(r: Sequence[Any], db_now: int) -> ExecutorRow:
    """An ``executors`` row selected as ``EXECUTOR_COLUMNS``, read at ``db_now``."""
    return ExecutorRow(
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
        state=r[9],
    )


class FleetSql(SqlCore):
    # -- executors ------------------------------------------------------------------------------
    def heartbeat(self, row: ExecutorRow) -> bool:
        """Record that this incarnation is alive, by the database's clock. False when its row
        was not there (its first heartbeat, or a peer took this executor over and removed
        it): a process that has beaten before then knows its work was taken."""
        ex = self.d.t("executors")
        params = {
            "id": row.executor_id,
            "inc": row.incarnation,
            "app": row.application_name,
            "ver": row.application_version,
            "host": row.hostname,
            "pid": row.pid,
            "every": row.heartbeat_ms,
        }

        def body(cur: Cursor) -> bool:
            # An UPDATE first: on PostgreSQL it waits for a takeover that holds the row
            # (claim_dead_executors locks it) and then finds it gone.
            if cur.exec(
                f"UPDATE {ex} SET last_seen = {self.d.now_ms}, "
                "application_version = %(ver)s, heartbeat_ms = %(every)s "
                "WHERE executor_id = %(id)s AND incarnation = %(inc)s",
                params,
            ):
                return True
            cur.exec(
                f"INSERT INTO {ex} (executor_id, incarnation, application_name, "
                "application_version, hostname, pid, heartbeat_ms, started_at, last_seen) "
                "VALUES (%(id)s, %(inc)s, %(app)s, %(ver)s, %(host)s, %(pid)s, %(every)s, "
                f"{self.d.now_ms}, {self.d.now_ms}) "
                "ON CONFLICT (executor_id, incarnation) DO UPDATE SET "
                f"last_seen = {self.d.now_ms}, application_version = excluded.application_version, "
                "heartbeat_ms = excluded.heartbeat_ms",
                params,
            )
            return False

        return self._tx(body, "heartbeat")

    def retire(self, executor_id: str, incarnation: str) -> None:
        """A clean shutdown: this incarnation is gone (its work was finished or abandoned)."""
        self._exec(
            f"DELETE FROM {self.d.t('executors')} WHERE executor_id = %(id)s "
            "AND incarnation = %(inc)s",
            {"id": executor_id, "inc": incarnation},
            "retire executor",
        )

    def list_executors(self, application_name: Optional[str]) -> list[ExecutorRow]:
        rows = self._owned_rows(
            f"SELECT {EXECUTOR_COLUMNS}, {self.d.now_ms} FROM {self.d.t('executors')}",
            application_name,
            "executor_id, started_at",
            "list executors",
        )
        return [executor_row(r, int(r[10])) for r in rows]

    def set_executor_state(self, executor_id: str, incarnation: str, state: str) -> None:
        """Record that this incarnation drains, or has handed its work back ('gone'); its
        heartbeats keep the state (they only refresh ``last_seen``)."""
        if state not in EXECUTOR_STATES:
            raise ValueError(f"executor state must be one of {EXECUTOR_STATES}, got {state!r}")
        self._exec(
            f"UPDATE {self.d.t('executors')} SET state = %(state)s, last_seen = {self.d.now_ms} "
            "WHERE executor_id = %(id)s AND incarnation = %(inc)s",
            {"id": executor_id, "inc": incarnation, "state": state},
            "set executor state",
        )

    def claim_dead_executors(
        self,
        application_name: Optional[str],
        application_version: Optional[str],
        silent_ms: Optional[int],
        unchanged: Optional[Mapping[str, str]] = None,
    ) -> list[str]:
        """Executor IDs of this version (of any, with None) none of whose incarnations is
        still there: each one has handed its work back ('gone') or (with ``silent_ms``) not
        been heard from in that long, and (with ``unchanged``) whose heartbeats are still
        those the caller watched stand still (``heartbeat_signature``). Their rows are
        removed in the same transaction so one survivor takes each over."""
        ex = self.d.t("executors")
        version = "" if application_version is None else "application_version = %(ver)s AND "
        # A gone incarnation counts as silent since forever: no timeout to wait out.
        seen = "MAX(CASE WHEN state = 'gone' THEN 0 ELSE last_seen END)"
        if silent_ms is None:
            dead_when = f"{seen} = 0"
        else:
            # Silent for the asked time *and* for three of its own heartbeat periods: a peer
            # that checks in rarely is not taken for dead.
            dead_when = (
                f"{seen} < {self.d.now_ms} - {self.d.greatest}(%(silent)s, 3 * MAX(heartbeat_ms))"
            )
        params = {"ver": application_version, "app": application_name, "silent": silent_ms}

        def body(cur: Cursor) -> list[str]:
            self.d.lock_queue(cur, "waypoint-executors")
            # Lock the rows read below (PostgreSQL; SQLite's writers are serialised already):
            # a heartbeat that has not committed by now waits for this transaction and then
            # finds its row gone (heartbeat() says so: the process knows it was taken over);
            # one that committed is seen below, and its executor is not taken.
            cur.all(
                f"SELECT executor_id FROM {ex} WHERE {version}{OWNED}{self.d.lock_exclusive}",
                params,
            )
            found = cur.all(
                f"SELECT executor_id, {seen} FROM {ex} WHERE {version}{OWNED} "
                f"GROUP BY executor_id HAVING {dead_when}",
                params,
            )
            dead = [r[0] for r in found if unchanged is None or r[1] == 0]
            watched = [r[0] for r in found if unchanged is not None and r[1] != 0]
            if watched:
                rows = cur.all(
                    f"SELECT {EXECUTOR_COLUMNS} FROM {ex} WHERE {version}{OWNED} "
                    f"AND {self.d.any('executor_id', 'ids')}",
                    {**params, "ids": self.d.list_param(watched)},
                )
                now = heartbeat_signatures([executor_row(r, 0) for r in rows])
                dead += [e for e in watched if unchanged and unchanged.get(e) == now.get(e)]
            if dead:
                cur.exec(
                    f"DELETE FROM {ex} WHERE {self.d.any('executor_id', 'ids')}",
                    {"ids": self.d.list_param(dead)},
                )
            return dead

        return self._tx(body, "find dead executors")

    # -- schedules ------------------------------------------------------------------------------
    def _schedule(self, row: Any) -> ScheduleRow:
        values = dict(zip(SCHEDULE_COLUMNS, row, strict=True))
        values["automatic_backfill"] = bool(values["automatic_backfill"])
        return ScheduleRow(**values)

    def upsert_schedule(self, row: ScheduleRow, replace: bool) -> ScheduleRow:
        st = self.d.t("workflow_schedules")
        params: Params = {c: getattr(row, c) for c in SCHEDULE_COLUMNS}
        cols = ", ".join(SCHEDULE_COLUMNS)
        vals = ", ".join(f"%({c})s" for c in SCHEDULE_COLUMNS)
        update = ", ".join(
            f"{c} = excluded.{c}"
            for c in SCHEDULE_COLUMNS
            if c not in ("schedule_id", "schedule_name", "last_fired_at")
        )
        conflict = f"DO UPDATE SET {update}" if replace else "DO NOTHING"
        self._exec(
            f"INSERT INTO {st} ({cols}) VALUES ({vals}) ON CONFLICT (schedule_name) {conflict}",
            params,
            "save schedule",
        )
        stored = self.get_schedule(row.schedule_name)
        assert stored is not None
        return stored

    def get_schedule(self, name: str) -> Optional[ScheduleRow]:
        row = self._one(
            f"SELECT {', '.join(SCHEDULE_COLUMNS)} FROM {self.d.t('workflow_schedules')} "
            "WHERE schedule_name = %(name)s",
            {"name": name},
            "read schedule",
        )
        return self._schedule(row) if row else None

    def list_schedules(self, flt: ScheduleFilter) -> list[ScheduleRow]:
        where: list[str] = []
        params: Params = {
            "app": flt.application_name,
            "status": flt.status,
            "wf": flt.workflow_name,
        }
        if flt.application_name is not None:
            where.append(OWNED)
        if flt.status is not None:
            where.append("status = %(status)s")
        if flt.workflow_name is not None:
            where.append("workflow_name = %(wf)s")
        if flt.name_prefix is not None:
            where.append(self.d.starts_with("schedule_name", "prefix"))
            params.update(self.d.prefix_params("prefix", flt.name_prefix))
        sql = f"SELECT {', '.join(SCHEDULE_COLUMNS)} FROM {self.d.t('workflow_schedules')}"
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = self._all(sql + " ORDER BY schedule_name", params, "list schedules")
        return [self._schedule(r) for r in rows]

    def delete_schedule(self, name: str) -> bool:
        return (
            self._exec(
                f"DELETE FROM {self.d.t('workflow_schedules')} WHERE schedule_name = %(name)s",
                {"name": name},
                "delete schedule",
            )
            > 0
        )

    def set_schedule_status(self, name: str, status: str) -> bool:
        return (
            self._exec(
                f"UPDATE {self.d.t('workflow_schedules')} SET status = %(status)s "
                "WHERE schedule_name = %(name)s",
                {"name": name, "status": status},
                "change schedule status",
            )
            > 0
        )

    def set_last_fired(self, name: str, fired_at_iso: str) -> None:
        self._exec(
            f"UPDATE {self.d.t('workflow_schedules')} SET last_fired_at = %(at)s "
            "WHERE schedule_name = %(name)s AND (last_fired_at IS NULL OR last_fired_at < %(at)s)",
            {"name": name, "at": fired_at_iso},
            "record schedule firing",
        )

    # -- renaming an application --------------------------------------------------------------
    def rename_application(
        self, old_name: Optional[str], new_name: str, adopt_unclaimed: bool, batch: Optional[int]
    ) -> dict[str, int]:
        """Give ``new_name`` the rows ``old_name`` owns (and, with ``adopt_unclaimed``, the
        rows nobody owns); how many moved, by kind. Queues, schedules, versions and unfinished
        workflows move in one transaction; finished workflows and steps follow in batches of
        ``batch`` (None: at once). Never a merge: queue, schedule and version names are unique
        whoever owns them."""
        sources = (["application_name = %(old)s"] if old_name is not None else []) + (
            ["application_name IS NULL"] if adopt_unclaimed else []
        )
        source = "(" + " OR ".join(sources) + ")"
        params: Params = {"old": old_name, "new": new_name}
        ws, oo = self.d.t("workflow_status"), self.d.t("operation_outputs")
        active = "status IN ('PENDING', 'ENQUEUED', 'DELAYED')"

        def at_once(cur: Cursor) -> dict[str, int]:
            def move(table: str, extra: str = "") -> int:
                return cur.exec(
                    f"UPDATE {self.d.t(table)} SET application_name = %(new)s "
                    f"WHERE {source}{extra}",
                    params,
                )

            return {
                "queues": move("queues"),
                "schedules": move("workflow_schedules"),
                "versions": move("application_versions"),
                "workflows": move("workflow_status", f" AND {active}"),
            }

        counts = self._tx(at_once, "rename application")
        limit = "" if batch is None else f" LIMIT {int(batch)}"
        counts["workflows"] += self._in_batches(
            f"UPDATE {ws} SET application_name = %(new)s WHERE workflow_uuid IN "
            f"(SELECT workflow_uuid FROM {ws} WHERE {source}{limit})",
            params,
            batch,
        )
        counts["steps"] = self._in_batches(
            f"UPDATE {oo} SET application_name = %(new)s WHERE {source} AND workflow_uuid IN "
            f"(SELECT DISTINCT workflow_uuid FROM {oo} WHERE {source}{limit})",
            params,
            batch,
        )
        return counts

    def _in_batches(self, sql: str, params: Params, batch: Optional[int]) -> int:
        """Run ``sql`` (which moves at most ``batch`` of something) until it moves nothing."""
        moved = 0
        while True:
            done = self._exec(sql, params, "rename application (batch)")
            moved += done
            if batch is None or done == 0:
                return moved
