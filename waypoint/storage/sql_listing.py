"""SQL for ``list_workflows`` (both backends): the filters, and the shape of the statement
that lets the first page of a filtered listing cost the same with a million rows as with
ten thousand.

Schema version 11 gives each filter column an index (column, created_at, workflow_uuid),
which holds the rows of one value in the listing's order. Three things make the planner
read a page of it rather than walk creation order past the rows that do not match:
one value is compared with ``=`` (``= ANY`` of a list cannot return index order); several
values are listed branch by branch, a page from each, merged (``_branches``); and on
PostgreSQL the listing runs without incremental sort (``Dialect.ordered_listing``).

A "before" bound (completed_before, dequeued_before) is the one filter no such index can
serve: newest first among the workflows completed before T, a walk in creation order passes
every workflow completed after T first (6x at a million rows, the newest day of 30). Its
page is read in two branches instead (``_bound_branches``), exactly, whatever the clocks.
"""

from __future__ import annotations

from typing import Optional

from waypoint.storage.records import WORKFLOW_COLUMNS, ListFilter, WorkflowRow
from waypoint.storage.sql_base import Params, SqlCore, workflow_row

# A list of at most this many values is listed value by value (a page from each branch);
# a longer one is one ``= ANY`` (and may sort every match).
MAX_BRANCHES = 8
# Statuses of live workflows: idx_workflow_status_active_created holds them together, in
# order, so a list of them needs no branches.
_LIVE = {"ENQUEUED", "PENDING", "DELAYED"}
# The WHERE of the partial indexes over live rows (schema version 10), added to a listing of
# live statuses: SQLite uses a partial index only when the query states its condition (a
# list bound as a parameter implies nothing); PostgreSQL proves it either way.
LIVE_TERM = "status IN ('ENQUEUED', 'PENDING', 'DELAYED')"
# The "before" and "after" filters and the timestamp each bounds (see ``_bound_branches``).
_BEFORE = (("completed_before", "completed_at"), ("dequeued_before", "started_at_epoch_ms"))
_AFTER = (("completed_after", "completed_at"), ("dequeued_after", "started_at_epoch_ms"))
# Marks the branch of the rows running at an "after" bound (read unordered, then sorted).
RUNNING = "/* running */"


class ListingSql(SqlCore):
    def list_workflows(self, flt: ListFilter) -> list[WorkflowRow]:
        sql, params, prelude = self.listing_statement(flt)
        if prelude is not None:
            rows = self._tx(lambda cur: (cur.exec(prelude), cur.all(sql, params))[1], "list")
        else:
            rows = self._all(sql, params, "list_workflows")
        return [workflow_row(r) for r in rows]

    def listing_statement(self, flt: ListFilter) -> tuple[str, Params, Optional[str]]:
        """The statement that lists ``flt``'s page, its parameters, and the statement to run
        before it in the same transaction (None: nothing; see ``Dialect.ordered_listing``).
        Apart so the plan tests can EXPLAIN exactly what is run."""
        where: list[str] = []
        params: Params = {}
        # Whether an index of schema version 11 holds this filter's rows in listing order.
        in_order = (
            flt.completed_after is not None
            or flt.completed_before is not None
            or flt.dequeued_after is not None
            or flt.dequeued_before is not None
            or flt.has_parent is True
            or flt.was_forked_from is True
            or flt.attributes is not None
        )
        split: Optional[tuple[str, str, list[str]]] = None  # listed branch by branch

        def any_of(column: str, key: str, values: Optional[list[str]], indexed: bool) -> None:
            nonlocal in_order, split
            if values is None:
                return
            if len(values) == 1:
                # Plain equality, so the index (column, created_at, workflow_uuid) returns the
                # rows already in the listing's order.
                where.append(f"{column} = %({key})s")
                params[key] = values[0]
                in_order = in_order or indexed
            elif (
                indexed
                and split is None
                and flt.limit is not None
                and 1 < len(values) <= MAX_BRANCHES
                and not (column == "status" and set(values) <= _LIVE)
            ):
                split = (column, key, list(dict.fromkeys(values)))
                in_order = True
            else:
                where.append(self.d.any(column, key))
                params[key] = self.d.list_param(values)

        any_of("workflow_uuid", "ids", flt.workflow_ids, False)
        # A live status has its own indexes (pending, active_created), which serve it best
        # with incremental sort (idx_workflow_status_pending holds created_at alone).
        # Several live statuses are not read from the index of every status either: SQLite,
        # without statistics, read every live row from it and sorted them (issue 11).
        live = bool(flt.status) and set(flt.status or ()) <= _LIVE
        several = live and len(set(flt.status or ())) > 1
        any_of(self.d.unindexed("status") if several else "status", "status", flt.status, not live)
        if live:
            where.append(self.d.likely(LIVE_TERM))
        any_of("name", "name", flt.name, True)
        any_of("application_version", "ver", flt.app_version, True)
        any_of("authenticated_user", "usr", flt.user, True)
        any_of("queue_name", "queue", flt.queue_name, True)
        any_of("executor_id", "exec", flt.executor_id, True)
        any_of("parent_workflow_id", "parent", flt.parent_workflow_id, False)
        any_of("forked_from", "forked", flt.forked_from, False)
        if flt.start_time_ms is not None:
            where.append("created_at >= %(start)s")
            params["start"] = flt.start_time_ms
        if flt.end_time_ms is not None:
            where.append("created_at <= %(end)s")
            params["end"] = flt.end_time_ms
        if flt.workflow_id_prefix:
            ors = []
            for i, prefix in enumerate(flt.workflow_id_prefix):
                ors.append(self.d.starts_with("workflow_uuid", f"pfx{i}"))
                params.update(self.d.prefix_params(f"pfx{i}", prefix))
            where.append("(" + " OR ".join(ors) + ")")
        if flt.application_name is not None:
            where.append("(application_name = %(app)s OR application_name IS NULL)")
            params["app"] = flt.application_name
        if flt.queues_only:
            # Most queued rows may be old: walked in creation order, not read from
            # queue_name's index and sorted (99x at a million rows on SQLite).
            where.append(f"{self.d.unindexed('queue_name')} IS NOT NULL")
        any_of("schedule_name", "sched", flt.schedule_name, True)
        for column, key, op in (
            ("completed_at", "completed_after", ">="),
            ("completed_at", "completed_before", "<="),
            ("started_at_epoch_ms", "dequeued_after", ">="),
            ("started_at_epoch_ms", "dequeued_before", "<="),
        ):
            value = getattr(flt, key)
            if value is not None:
                where.append(f"{column} {op} %({key})s")
                params[key] = value
        if flt.was_forked_from is not None:
            where.append(
                "was_forked_from = " + (self.d.true if flt.was_forked_from else self.d.false)
            )
        if flt.has_parent is not None:
            where.append("parent_workflow_id IS " + ("NOT NULL" if flt.has_parent else "NULL"))
        if flt.attributes is not None:
            where.append(self.d.json_contains("attributes", "attrs"))
            params["attrs"] = flt.attributes
        if flt.after is not None:
            # Spelled out rather than a row comparison, so the created_at index bounds the scan.
            op = "<" if flt.sort_desc else ">"
            where.append(
                f"created_at {op}= %(after_at)s AND (created_at {op} %(after_at)s "
                f"OR workflow_uuid {op} %(after_id)s)"
            )
            params["after_at"], params["after_id"] = flt.after
        select = ", ".join(
            "NULL"
            if (c == "inputs" and not flt.load_input)
            or (c in ("output", "error") and not flt.load_output)
            else c
            for c in WORKFLOW_COLUMNS
        )
        direction = "DESC" if flt.sort_desc else "ASC"
        order = f" ORDER BY created_at {direction}, workflow_uuid {direction}"
        table = self.d.t("workflow_status")
        bound = self._bound_branches(flt, where)
        if split is not None:
            column, key, values = split
            conds = []
            for i, value in enumerate(values):
                params[f"{key}{i}"] = value
                conds.append([f"{column} = %({key}{i})s"])
            sql = self._branches(conds, select, table, where, params, order, flt)
        elif bound is not None:
            sql = self._branches(bound[1], select, table, bound[0], params, order, flt)
        else:
            sql = f"SELECT {select} FROM {table}"
            if where:
                sql += " WHERE " + " AND ".join(where)
            sql += order
        sql += self._page(flt, params)
        ordered = in_order and not flt.workflow_ids
        return sql, params, self.d.ordered_listing if ordered else None

    def _page(self, flt: ListFilter, params: Params) -> str:
        sql = ""
        if flt.limit is not None:
            sql += " LIMIT %(limit)s"
            params["limit"] = flt.limit
        if flt.offset is not None:
            if flt.limit is None:
                sql += self.d.no_limit
            sql += " OFFSET %(offset)s"
            params["offset"] = flt.offset
        return sql

    def _bound_branches(
        self, flt: ListFilter, where: list[str]
    ) -> Optional[tuple[list[str], list[list[str]]]]:
        """The conditions shared by, and the own conditions of, the two branches of a page
        bounded by a "before" or (oldest first) an "after" filter; None: no such filter, or
        no page.

        With ``completed_at <= T``, the rows created at or before T are one branch: walked
        in creation order from T, it passes only the workflows created by T that completed
        after it (those running at T), not every one completed since. A row created after
        T yet completed at or before T has ``completed_at < created_at`` (another process's
        clock behind its creator's): the other branch reads those from the partial index of
        schema version 13 that holds such rows only (normally none). The two are disjoint
        and together are every match, so the page of their pages is the page, in the same
        order, for any clocks. Of two bounds the earlier serves (with the same argument for
        its own column).

        Oldest first with ``completed_at >= T``, the mirror image: a walk from the oldest
        passes every workflow completed before T (the whole history, 240x at a million
        rows). The rows created at or after T are one branch, walked from T (passing only
        rows stamped before their creation); the rows created before T and completed at or
        after it, those running at T, are the other, found by ``Dialect.running_at`` (on
        PostgreSQL the GiST index of each row's span of schema version 14). The bound's own
        term is left out of that branch so the planner cannot walk its B-tree instead. Of
        two bounds the later serves."""
        if flt.limit is None:
            return None
        afters = [(getattr(flt, k), k, c) for k, c in _AFTER if getattr(flt, k) is not None]
        if afters and not flt.sort_desc:
            _, key, column = max(afters)
            term = f"{column} >= %({key})s"
            return [w for w in where if w != term], [
                [term, f"created_at >= %({key})s"],
                [f"{self.d.running_at(column, key)} {RUNNING}"],
            ]
        bounds = [
            (getattr(flt, key), key, column)
            for key, column in _BEFORE
            if getattr(flt, key) is not None
        ]
        if not bounds:
            return None
        _, key, column = min(bounds)
        return where, [
            [f"created_at <= %({key})s"],
            [f"created_at > %({key})s", f"{column} < created_at"],
        ]

    def _branches(
        self,
        branches: list[list[str]],
        select: str,
        table: str,
        where: list[str],
        params: Params,
        order: str,
        flt: ListFilter,
    ) -> str:
        """The first page of each branch (the listing's conditions and the branch's own,
        which part the matches, each an index range in listing order), then the page of their
        union. Several values of one indexed column are a branch per value: this reads at most
        a page per value, where ``= ANY`` would read and sort every match."""
        assert flt.limit is not None
        params["branch_limit"] = flt.limit + (flt.offset or 0)
        parts = []
        for i, own in enumerate(branches):
            conds = " AND ".join([*where, *own])
            rows = f"SELECT {select} FROM {table} WHERE {conds}"
            if RUNNING in own[-1]:
                # Found by its own index, then sorted: OFFSET 0 keeps the planner from walking
                # an index in listing order past every row instead (it prices a match as
                # likely as on average, and these are the few running at the bound).
                rows = f"SELECT * FROM ({rows}{self.d.no_limit} OFFSET 0) AS r{i}"
            parts.append(f"SELECT * FROM ({rows}{order} LIMIT %(branch_limit)s) AS b{i}")
        return "SELECT * FROM (" + " UNION ALL ".join(parts) + f") AS m{order}"
