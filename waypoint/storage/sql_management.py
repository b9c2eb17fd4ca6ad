"""SQL for managing workflows from outside: resume, fork, delete, delays, attributes,
application versions and retention (both backends)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

from waypoint.storage.errors import AlreadyExistsError, NotFoundError
from waypoint.storage.records import ForkRequest, ForkSource, RetentionRequest
from waypoint.storage.sql_base import OWNED, Cursor, Params, SqlCore, _now_ms

ACTIVE = "('PENDING', 'ENQUEUED', 'DELAYED')"
# What a fork keeps of its original's row, and copies of its checkpoints, event history and
# stream values (with the fork's own ID, and owner for the checkpoints).
FORK_KEEPS = (
    "name", "class_name", "config_name", "authenticated_user", "assumed_role",
    "authenticated_roles", "inputs", "serialization", "application_version", "application_id",
    "application_name", "executor_id", "workflow_timeout_ms", "attributes",
)  # fmt: skip
FORK_STEPS = (
    "function_id", "function_name", "output", "error", "child_workflow_id",
    "started_at_epoch_ms", "completed_at_epoch_ms", "serialization", "application_name",
)  # fmt: skip
FORK_EVENTS = ("function_id", "key", "value", "serialization")
FORK_STREAMS = ("key", "value", '"offset"', "function_id", "serialization", "write_key")
FORK_BEFORE = "WHERE workflow_uuid = %(src)s AND function_id < %(step)s"  # what a fork copies


class ManagementSql(SqlCore):
    def resume_workflows(
        self,
        workflow_ids: Sequence[str],
        queue_name: str,
        now_ms: int,
        queue_limited: Optional[bool] = None,
    ) -> list[str]:
        """Put workflows back on a queue (unless they succeeded or failed); returns those moved.
        Raises NotFoundError, changing nothing, if an ID is unknown."""
        ws = self.d.t("workflow_status")
        ids = list(dict.fromkeys(workflow_ids))

        def body(cur: Cursor) -> list[str]:
            found = {
                r[0]
                for r in cur.all(
                    f"SELECT workflow_uuid FROM {ws} WHERE {self.d.any('workflow_uuid', 'ids')}",
                    {"ids": self.d.list_param(ids)},
                )
            }
            for wfid in ids:
                if wfid not in found:
                    raise NotFoundError(wfid)
            rows = cur.all(
                f"UPDATE {ws} SET status = 'ENQUEUED', queue_name = %(queue)s, "
                "recovery_attempts = 0, workflow_deadline_epoch_ms = NULL, "
                "deduplication_id = NULL, started_at_epoch_ms = NULL, completed_at = NULL, "
                "delay_until_epoch_ms = NULL, updated_at = %(now)s "
                f"WHERE {self.d.any('workflow_uuid', 'ids')} "
                "AND status NOT IN ('SUCCESS', 'ERROR')"
                + self.d.returning("workflow_uuid", self.d.notify("'q:' || queue_name")),
                {"ids": self.d.list_param(ids), "queue": queue_name, "now": now_ms},
            )
            return [r[0] for r in rows]

        return self._tx(body, "resume workflows")

    def fork_workflow(self, req: ForkRequest) -> None:
        """Copy a workflow's row and its checkpoints before ``start_step`` into a new
        ENQUEUED workflow, in one transaction."""
        ws = self.d.t("workflow_status")
        oo = self.d.t("operation_outputs")
        eh = self.d.t("workflow_events_history")
        ev = self.d.t("workflow_events")
        st = self.d.t("streams")
        p: Params = {
            "src": req.source_id,
            "new": req.new_id,
            "step": req.start_step,
            "queue": req.queue_name,
            "pkey": req.partition_key,
            "ver": req.application_version,
            "now": req.now_ms,
            "timeout": req.timeout_ms,
            "owner": req.owner_xid,
            "app": req.application_name,
        }

        steps, events = ", ".join(FORK_STEPS), ", ".join(FORK_EVENTS)
        streams, before = ", ".join(FORK_STREAMS), FORK_BEFORE

        def body(cur: Cursor) -> None:
            src = cur.one(f"SELECT application_version FROM {ws} WHERE workflow_uuid = %(src)s", p)
            if src is None:
                raise NotFoundError(req.source_id)
            if cur.one(f"SELECT 1 FROM {ws} WHERE workflow_uuid = %(new)s", p) is not None:
                raise AlreadyExistsError(f"cannot fork into {req.new_id!r}: that workflow exists")
            p["ver"] = req.application_version or src[0]
            cur.exec(
                f"INSERT INTO {ws} (workflow_uuid, status, name, class_name, config_name, "
                "authenticated_user, assumed_role, authenticated_roles, inputs, serialization, "
                "application_version, application_id, application_name, executor_id, "
                "created_at, updated_at, recovery_attempts, queue_name, queue_partition_key, "
                "workflow_timeout_ms, forked_from, owner_xid, attributes, priority) "
                "SELECT %(new)s, 'ENQUEUED', name, class_name, config_name, authenticated_user, "
                "assumed_role, authenticated_roles, inputs, serialization, %(ver)s, "
                "application_id, COALESCE(application_name, %(app)s), executor_id, %(now)s, "
                "%(now)s, 0, %(queue)s, %(pkey)s, COALESCE(%(timeout)s, workflow_timeout_ms), "
                f"%(src)s, %(owner)s, attributes, 0 FROM {ws} WHERE workflow_uuid = %(src)s",
                p,
            )
            cur.exec(
                f"UPDATE {ws} SET was_forked_from = {self.d.true} WHERE workflow_uuid = %(src)s", p
            )
            cur.exec(
                f"INSERT INTO {oo} (workflow_uuid, owner_xid, {steps}) "
                f"SELECT %(new)s, %(owner)s, {steps} FROM {oo} {before}",
                p,
            )
            for old, new in req.replacement_children.items():
                cur.exec(
                    f"UPDATE {oo} SET child_workflow_id = %(newc)s WHERE workflow_uuid = %(new)s "
                    "AND child_workflow_id = %(oldc)s",
                    {**p, "oldc": old, "newc": new},
                )
            cur.exec(
                f"INSERT INTO {eh} (workflow_uuid, {events}) "
                f"SELECT %(new)s, {events} FROM {eh} {before}",
                p,
            )
            # The latest value of each event as of the fork point.
            cur.exec(
                f"INSERT INTO {ev} (workflow_uuid, key, value, serialization) "
                f"SELECT h.workflow_uuid, h.key, h.value, h.serialization FROM {eh} h "
                "WHERE h.workflow_uuid = %(new)s AND h.function_id = (SELECT MAX(function_id) "
                f"FROM {eh} h2 WHERE h2.workflow_uuid = h.workflow_uuid AND h2.key = h.key)",
                p,
            )
            cur.exec(
                f"INSERT INTO {st} (workflow_uuid, {streams}) "
                f"SELECT %(new)s, {streams} FROM {st} {before}",
                p,
            )
            self.d.notify_in(cur, "'q:' || %(queue)s", p)

        self._tx(body, "fork workflow")

    def read_fork_source(self, req: ForkRequest) -> ForkSource:
        """The rows a fork of ``req.source_id`` copies, read in one transaction that also marks
        the original ``was_forked_from`` (a fork written to another database, ``create_fork``).
        Marked first: if the fork is then not written, the flag overstates, never hides, it."""
        ws = self.d.t("workflow_status")
        p: Params = {"src": req.source_id, "step": req.start_step}

        def body(cur: Cursor) -> ForkSource:
            keeps = ", ".join(
                "CAST(attributes AS TEXT)" if c == "attributes" else c for c in FORK_KEEPS
            )
            row = cur.one(f"SELECT {keeps} FROM {ws} WHERE workflow_uuid = %(src)s", p)
            if row is None:
                raise NotFoundError(req.source_id)
            cur.exec(
                f"UPDATE {ws} SET was_forked_from = {self.d.true} WHERE workflow_uuid = %(src)s", p
            )
            before = FORK_BEFORE
            return ForkSource(
                status=dict(zip(FORK_KEEPS, row, strict=True)),
                steps=cur.all(
                    f"SELECT {', '.join(FORK_STEPS)} FROM {self.d.t('operation_outputs')} {before}",
                    p,
                ),
                events=cur.all(
                    f"SELECT {', '.join(FORK_EVENTS)} FROM "
                    f"{self.d.t('workflow_events_history')} {before}",
                    p,
                ),
                streams=cur.all(
                    f"SELECT {', '.join(FORK_STREAMS)} FROM {self.d.t('streams')} {before}", p
                ),
            )

        return self._tx(body, "read fork source")

    def create_fork(self, req: ForkRequest, src: ForkSource) -> None:
        """Write, in one transaction, the fork that ``read_fork_source`` read on another
        database: the same rows ``fork_workflow`` copies within one."""
        ws = self.d.t("workflow_status")
        status = dict(src.status)
        status["application_version"] = req.application_version or status["application_version"]
        status["application_name"] = status["application_name"] or req.application_name
        if req.timeout_ms is not None:
            status["workflow_timeout_ms"] = req.timeout_ms
        p: Params = {
            **{f"k_{c}": v for c, v in status.items()},
            "new": req.new_id,
            "queue": req.queue_name,
            "pkey": req.partition_key,
            "now": req.now_ms,
            "src": req.source_id,
            "owner": req.owner_xid,
        }
        children = req.replacement_children

        def body(cur: Cursor) -> None:
            if cur.one(f"SELECT 1 FROM {ws} WHERE workflow_uuid = %(new)s", p) is not None:
                raise AlreadyExistsError(f"cannot fork into {req.new_id!r}: that workflow exists")
            values = ", ".join(
                self.d.json_value(f"k_{c}") if c == "attributes" else f"%(k_{c})s"
                for c in FORK_KEEPS
            )
            cur.exec(
                f"INSERT INTO {ws} (workflow_uuid, status, {', '.join(FORK_KEEPS)}, created_at, "
                "updated_at, recovery_attempts, queue_name, queue_partition_key, forked_from, "
                f"owner_xid, priority) VALUES (%(new)s, 'ENQUEUED', {values}, %(now)s, %(now)s, "
                "0, %(queue)s, %(pkey)s, %(src)s, %(owner)s, 0)",
                p,
            )
            for r in src.steps:
                row = dict(zip(FORK_STEPS, r, strict=True))
                row["child_workflow_id"] = children.get(
                    row["child_workflow_id"], row["child_workflow_id"]
                )
                cur.exec(
                    f"INSERT INTO {self.d.t('operation_outputs')} (workflow_uuid, owner_xid, "
                    f"{', '.join(FORK_STEPS)}) VALUES (%(new)s, %(owner)s, "
                    + ", ".join(f"%(s_{c})s" for c in FORK_STEPS)
                    + ")",
                    {**p, **{f"s_{c}": v for c, v in row.items()}},
                )
            latest: dict[str, tuple[Any, ...]] = {}
            for r in sorted(src.events, key=lambda e: e[0]):
                latest[r[1]] = r
                cur.exec(
                    f"INSERT INTO {self.d.t('workflow_events_history')} (workflow_uuid, "
                    f"{', '.join(FORK_EVENTS)}) VALUES (%(new)s, %(f)s, %(k)s, %(v)s, %(s)s)",
                    {**p, "f": r[0], "k": r[1], "v": r[2], "s": r[3]},
                )
            for _, key, value, ser in latest.values():
                cur.exec(
                    f"INSERT INTO {self.d.t('workflow_events')} (workflow_uuid, key, value, "
                    "serialization) VALUES (%(new)s, %(k)s, %(v)s, %(s)s)",
                    {**p, "k": key, "v": value, "s": ser},
                )
            for r in src.streams:
                cur.exec(
                    f"INSERT INTO {self.d.t('streams')} (workflow_uuid, "
                    f"{', '.join(FORK_STREAMS)}) VALUES (%(new)s, "
                    + ", ".join(f"%(t{i})s" for i in range(len(FORK_STREAMS)))
                    + ")",
                    {**p, **{f"t{i}": v for i, v in enumerate(r)}},
                )
            self.d.notify_in(cur, "'q:' || %(queue)s", p)

        self._tx(body, "create fork")

    def delete_workflows(self, workflow_ids: Sequence[str]) -> int:
        if not workflow_ids:
            return 0
        return self._exec(
            f"DELETE FROM {self.d.t('workflow_status')} WHERE {self.d.any('workflow_uuid', 'ids')}",
            {"ids": self.d.list_param(list(workflow_ids))},
            "delete workflows",
        )

    def set_delay(self, workflow_id: str, delay_until_ms: int) -> bool:
        rows = self._all(
            f"UPDATE {self.d.t('workflow_status')} SET delay_until_epoch_ms = %(until)s, "
            "updated_at = %(now)s WHERE workflow_uuid = %(id)s AND status = 'DELAYED'"
            + self.d.returning("1", self.d.notify("'t:' || queue_name")),
            {"until": delay_until_ms, "now": _now_ms(), "id": workflow_id},
            "set workflow delay",
        )
        return bool(rows)

    def set_attributes(self, workflow_id: str, attributes: Optional[str]) -> bool:
        n = self._exec(
            f"UPDATE {self.d.t('workflow_status')} SET attributes = {self.d.json_value('attrs')}, "
            "updated_at = %(now)s WHERE workflow_uuid = %(id)s",
            {"attrs": attributes, "now": _now_ms(), "id": workflow_id},
            "update workflow attributes",
        )
        return n > 0

    def set_latest_version(self, version_name: str, application_name: Optional[str]) -> bool:
        rows = self._all(
            f"UPDATE {self.d.t('application_versions')} SET version_timestamp = %(now)s "
            "WHERE version_name = %(name)s AND (application_name = %(app)s "
            "OR application_name IS NULL OR %(app)s IS NULL)"
            + self.d.returning("1", self.d.notify("'V:' || version_name")),
            {"now": _now_ms(), "name": version_name, "app": application_name},
            "set latest application version",
        )
        return bool(rows)

    def garbage_collect(self, req: RetentionRequest) -> int:
        """Each batch is one transaction (its checkpoints, events and messages go with it by
        cascade)."""
        ws = self.d.t("workflow_status")
        cutoff = req.cutoff_epoch_ms
        if req.rows_threshold is not None:
            row = self._one(
                f"SELECT created_at FROM {ws} ORDER BY created_at DESC LIMIT 1 OFFSET %(n)s",
                {"n": max(0, req.rows_threshold - 1)},
                "find retention cutoff",
            )
            if row is not None:  # older than the cutoff *or* beyond the newest N rows
                cutoff = row[0] if cutoff is None else max(cutoff, row[0])
            elif cutoff is None:
                return 0
        if cutoff is None:
            return 0
        owner = f"AND {OWNED} " if req.application_name is not None else ""
        deleted = 0
        while True:
            batch = (
                f"SELECT workflow_uuid FROM {ws} WHERE created_at < %(cutoff)s "
                f"AND status NOT IN {ACTIVE} {owner}ORDER BY created_at LIMIT %(batch)s"
            )
            n = self._exec(
                f"DELETE FROM {ws} WHERE {self.d.in_subquery('workflow_uuid', batch)}",
                {"cutoff": cutoff, "batch": req.batch_size, "app": req.application_name},
                "garbage collect",
            )
            deleted += n
            if n < req.batch_size:
                return deleted

    def active_created_before(self, cutoff_epoch_ms: int) -> list[str]:
        rows = self._all(
            f"SELECT workflow_uuid FROM {self.d.t('workflow_status')} "
            f"WHERE status IN {ACTIVE} AND created_at <= %(cutoff)s",
            {"cutoff": cutoff_epoch_ms},
            "find workflows to time out",
        )
        return [r[0] for r in rows]
