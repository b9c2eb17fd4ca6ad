"""SQL shared by both backends, written once against a small ``Dialect``.

Backends subclass ``SqlStore`` and supply the connection plumbing (``_all``, ``_exec``, ``_tx``)
plus their own versions of the few hot statements where PostgreSQL can do in one round trip
what SQLite does in one local transaction.
"""

from __future__ import annotations

import json
import operator
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import fields
from typing import Any, Optional, TypeVar

from waypoint.storage.errors import InvalidTextError, UnsupportedError
from waypoint.storage.records import (
    WORKFLOW_COLUMNS,
    InitOutcome,
    NewWorkflow,
    RecordOutcome,
    StepRecord,
    StepRow,
    WorkflowRow,
)
from waypoint.storage.retry import RetryPolicy

T = TypeVar("T")
Params = dict[str, Any]
Row = tuple[Any, ...]


def _texts(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)):
        return [v for v in value if isinstance(v, str)]
    return []


def check_text_params(params: Params) -> None:
    """Refuse a NUL in any text parameter, the same on both backends (SQLite would store
    it, PostgreSQL fails with a driver error naming nothing)."""
    check_text_values(params, params.values())


def check_text_values(names: Iterable[str], values: Iterable[Any]) -> None:
    """``check_text_params`` for positional parameters: ``values``, named by ``names``. Cheap:
    a ``memchr`` per string; serialized payloads never hold a raw NUL (base64 and JSON escape
    it). It runs on every checkpoint's dozen parameters, so the common cases (a ``str``, a
    number, None) are tested first, without building a list per parameter as ``_texts``
    does."""
    for name, value in zip(names, values, strict=True):
        if type(value) is str:
            if "\x00" in value:
                raise InvalidTextError(name, "contains a NUL character")
        elif value is None or type(value) is int:
            continue
        else:
            for text in _texts(value):
                if "\x00" in text:
                    raise InvalidTextError(name, "contains a NUL character")


def unencodable(params: Params, exc: UnicodeEncodeError) -> InvalidTextError:
    """The driver could not encode a parameter (an unpaired surrogate): name which."""
    for name, value in params.items():
        for text in _texts(value):
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as bad:
                return InvalidTextError(
                    name, f"is not valid Unicode (an unpaired surrogate at position {bad.start})"
                )
    return InvalidTextError("?", f"cannot be encoded: {exc.reason}")


class Cursor:
    """What a transaction body gets: execute and read rows, nothing else."""

    def __init__(self, raw: Any, render: Callable[[str], str]) -> None:
        self._raw = raw
        self._render = render

    def _execute(self, sql: str, params: Optional[Params]) -> None:
        params = params or {}
        check_text_params(params)
        try:
            self._raw.execute(self._render(sql), params)
        except UnicodeEncodeError as exc:
            raise unencodable(params, exc) from None

    def all(self, sql: str, params: Optional[Params] = None) -> list[Row]:
        self._execute(sql, params)
        return list(self._raw.fetchall()) if self._raw.description else []

    def one(self, sql: str, params: Optional[Params] = None) -> Optional[Row]:
        rows = self.all(sql, params)
        return rows[0] if rows else None

    def exec(self, sql: str, params: Optional[Params] = None) -> int:
        self._execute(sql, params)
        return int(self._raw.rowcount)


class CallerCursor(Cursor):
    """A ``Cursor`` on a caller's own connection, inside the caller's transaction: a
    SQLAlchemy ``Connection`` or ``Session``, or a DB-API connection of the backend's driver."""

    def __init__(self, conn: Any, render: Callable[[str], str]) -> None:
        super().__init__(None, render)
        self._conn = conn

    def _run(self, sql: str, params: Optional[Params]) -> Any:
        conn = self._conn
        if hasattr(conn, "get_bind") and callable(getattr(conn, "connection", None)):
            conn = conn.connection()  # a SQLAlchemy Session: its connection in this transaction
        if hasattr(conn, "exec_driver_sql"):  # a SQLAlchemy Connection
            return conn.exec_driver_sql(self._render(sql), params or {})
        return conn.execute(self._render(sql), params or {})  # a DB-API connection

    def all(self, sql: str, params: Optional[Params] = None) -> list[Row]:
        result = self._run(sql, params)
        rows = getattr(result, "returns_rows", None)
        if rows is None:
            rows = result.description is not None
        return list(result.fetchall()) if rows else []

    def exec(self, sql: str, params: Optional[Params] = None) -> int:
        return int(self._run(sql, params).rowcount)


# Schema version 16's span classes on SQLite (``Dialect.running_at``): the number of octal
# digits of a row's span in ms (as the index states it; ``%%`` is one ``%`` once rendered).
SPAN_CLASS = "length(printf('%%o', max({stamp} - created_at, 0)))"
SPAN_CLASSES = 14  # 8^13 ms is 17 years: the last class holds every longer span


class Dialect(ABC):
    name: str
    true: str
    false: str

    @abstractmethod
    def t(self, table: str) -> str:
        """A table name, schema-qualified where the backend has schemas."""

    @abstractmethod
    def any(self, column: str, param: str) -> str:
        """``column`` equals any element of the list parameter ``param``."""

    @abstractmethod
    def list_param(self, values: Sequence[Any]) -> Any: ...

    @abstractmethod
    def render(self, sql: str) -> str:
        """Turn ``%(name)s`` placeholders into the driver's style."""

    # The database's clock in epoch milliseconds: limits and windows shared by processes
    # must not depend on any one machine's clock.
    now_ms: str
    # Suffix that locks selected rows, skipping rows other claimers hold.
    skip_locked: str

    def lock_queue(self, cur: Cursor, queue_name: str) -> None:  # noqa: B027
        """Serialise claimers of one queue for the rest of the transaction (SQLite: the
        IMMEDIATE transaction already serialises every writer, so nothing to do)."""

    def notify(self, key_expr: str) -> str:
        """A RETURNING item that tells other processes about a change (``""``: cannot)."""
        return ""

    def notify_in(  # noqa: B027
        self, cur: Cursor, key_expr: str, params: Params, dbos_channel: str = ""
    ) -> None:
        """Tell other processes about a change made in this transaction (if possible); with
        ``dbos_channel``, DBOS processes too (payload ``<wf>::<key>`` from ``params``)."""

    def starts_with(self, column: str, param: str) -> str:
        """``column`` starts with the literal text of ``param`` (no wildcards, case matters;
        its parameters: ``prefix_params``). SQLite's LIKE ignores ASCII case, so it compares
        the leading substring, within the range of the column's index that holds every text
        with that prefix (BINARY collation orders by code point): without the range a
        listing walked the whole history to find them (58x at a million rows)."""
        return (
            f"({column} >= %({param})s AND {column} < %({param}_end)s "
            f"AND substr({column}, 1, length(%({param})s)) = %({param})s)"
        )

    def prefix_params(self, param: str, prefix: str) -> dict[str, Any]:
        """The parameters of ``starts_with(column, param)`` for ``prefix``."""
        return {param: prefix, f"{param}_end": _prefix_end(prefix)}

    def likely(self, term: str) -> str:
        """``term``, stated as true for most rows: a partial index whose condition it is can
        serve the query, but no index should read by it (SQLite, without statistics, read
        every live row from the status index and sorted them, rather than walk the live rows'
        index in listing order: tests/storage/test_sqlite_plans.py)."""
        return f"likely({term})"

    def unindexed(self, column: str) -> str:
        """``column`` in a term no index should serve (SQLite: a unary +)."""
        return f"+{column}"

    def in_subquery(self, column: str, subquery: str) -> str:
        """``column`` is one of the values ``subquery`` returns, looked up one by one in
        the column's index (PostgreSQL may otherwise hash-join against a whole-table scan)."""
        return f"{column} IN ({subquery})"

    def running_at(self, stamp: str, param: str) -> str:
        """The rows created before the time ``param`` and stamped (``stamp``: completed,
        dequeued) at or after it: those running (or queued) at that time.

        SQLite's: a range of schema version 16's span-class index per class. A row of
        class L (its span has L octal digits) spans less than 8^L ms, so one running at T was
        created after T - 8^L; within a class, the rows created in the last 8^(L-1) ms before
        T all match and those of the 8^L before that may. Only the classes past any real span
        (more than 17 years) are read without that bound."""
        span = SPAN_CLASS.format(stamp=stamp)
        table = self.t("workflow_status")
        parts = []
        for digits in range(1, SPAN_CLASSES + 1):
            cls = f"{span} = {digits}" if digits < SPAN_CLASSES else f"{span} >= {digits}"
            since = f" AND created_at > %({param})s - {8**digits}" if digits < SPAN_CLASSES else ""
            parts.append(
                f"SELECT rowid FROM {table} WHERE {stamp} IS NOT NULL AND {cls}{since} "
                f"AND created_at < %({param})s AND {stamp} >= %({param})s"
            )
        return "rowid IN (" + " UNION ALL ".join(parts) + ")"

    least = "MIN"  # the smaller of two values (PostgreSQL: LEAST)
    greatest = "MAX"  # the larger of two values (PostgreSQL: GREATEST)

    def json_contains(self, column: str, param: str) -> str:
        """``column`` (a JSON object) contains the JSON object parameter ``param``."""
        raise UnsupportedError(
            "Filtering workflows by attributes is not supported on SQLite. Use a Postgres "
            "system database to filter by attributes."
        )

    def json_value(self, param: str) -> str:
        """The placeholder of a JSON text parameter stored in a JSON column."""
        return f"%({param})s"

    # What an OFFSET without a LIMIT needs in front of it (SQLite: LIMIT -1).
    no_limit = " LIMIT -1"
    # Run before a listing that an index (filter column, created_at, workflow_uuid) serves in
    # order (schema version 11), inside the listing's transaction; None: nothing to run.
    ordered_listing: Optional[str] = None

    # Row locks for read-modify-write inside a transaction (SQLite: the write lock suffices).
    lock_shared = ""
    lock_exclusive = ""
    # A column that orders rows by insertion, for ties on timestamps.
    insertion_order = "rowid"
    # The order a queue hands out its rows: priority, then age, then (SQLite) the order they
    # were inserted, so two enqueued within one millisecond (created_at's unit; every row of
    # an enqueue_many batch within one) leave in the order they came. Every SQLite index ends
    # in the rowid, so the claim index still serves it. PostgreSQL's workflow_status (DBOS's
    # format) has no insertion-order column: ties within a millisecond are in any order.
    queue_order = "priority, created_at, rowid"

    def first_of_each(self, keys: str, table: str, columns: str, where: str, limit: str) -> str:
        """A FROM clause: each row of ``keys`` beside the first ``limit`` rows of ``table`` that
        match ``where`` (which names the ``keys`` row), in queue order, as ``c`` with
        ``columns``. SQLite has no LATERAL: the rows are looked up by the rowids a correlated
        subquery returns."""
        return (
            f"{keys} JOIN {table} AS c ON c.rowid IN (SELECT rowid FROM {table} "
            f"WHERE {where} ORDER BY {self.queue_order} LIMIT {limit})"
        )

    def notify_when(self, condition: str, key_expr: str) -> str:
        """Like ``notify`` but only for rows matching ``condition``."""
        expr = self.notify(key_expr)
        return f"CASE WHEN {condition} THEN {expr} END" if expr else ""

    def returning(self, *items: str) -> str:
        present = [i for i in items if i]
        return " RETURNING " + ", ".join(present) if present else ""


SELECT_WORKFLOW = ", ".join(WORKFLOW_COLUMNS)
STEP_COLUMNS = (
    "function_id, function_name, output, error, child_workflow_id, "
    "started_at_epoch_ms, completed_at_epoch_ms, serialization"
)


def workflow_row(row: Row) -> WorkflowRow:
    values = list(row)
    values[WORKFLOW_COLUMNS.index("was_forked_from")] = bool(
        values[WORKFLOW_COLUMNS.index("was_forked_from")]
    )
    return WorkflowRow(*values)


def step_row(row: Row) -> StepRow:
    return StepRow(*row)


_NEW_FIELDS = tuple(f.name for f in fields(NewWorkflow))
# The columns a new workflow_status row is written with (``NewWorkflow`` plus updated_at).
INIT_COLUMNS: tuple[str, ...] = ("workflow_uuid", *_NEW_FIELDS[1:], "updated_at")


# A new row's values in INIT_COLUMNS order without the last (updated_at = created_at), as a
# tuple: what a bulk COPY writes per workflow, at the cost of one C call.
init_values: Callable[[NewWorkflow], tuple[Any, ...]] = operator.attrgetter(*_NEW_FIELDS)


def init_params(wf: NewWorkflow) -> Params:
    params = {name: getattr(wf, name) for name in _NEW_FIELDS}
    params["workflow_uuid"] = params.pop("workflow_id")
    params["updated_at"] = wf.created_at
    return params


# What ``init_workflow`` reports about a workflow: InitOutcome's fields from ``status`` on.
_OUTCOME_FIELDS = (
    "status",
    "name",
    "class_name",
    "config_name",
    "serialization",
    "output",
    "error",
    "workflow_deadline_epoch_ms",
    "queue_name",
)
EXISTING_COLUMNS = ", ".join((*_OUTCOME_FIELDS, "owner_xid"))


def existing_outcome(row: Row, owner_xid: str) -> InitOutcome:
    """The outcome from a row of EXISTING_COLUMNS: "created" when this run wrote it."""
    return InitOutcome(row[-1] == owner_xid, *row[:-1])


def created_outcome(wf: NewWorkflow) -> InitOutcome:
    """The outcome of writing ``wf`` (no output or error yet)."""
    return InitOutcome(
        True,
        wf.status,
        wf.name,
        wf.class_name,
        wf.config_name,
        wf.serialization,
        None,
        None,
        wf.workflow_deadline_epoch_ms,
        wf.queue_name,
    )


# A step checkpoint (operation_outputs row): each column's parameter and the StepRecord field
# it holds. ``record_params`` names them (RECORD_KEYS), ``record_values`` lists them in this
# order, as the positional parameters of PostgreSQL's checkpoint (postgres/store.py).
_RECORD_FIELDS = (
    ("workflow_uuid", "wf", "workflow_id"),
    ("function_id", "fid", "function_id"),
    ("function_name", "fname", "function_name"),
    ("output", "output", "output"),
    ("error", "error", "error"),
    ("child_workflow_id", "child", "child_workflow_id"),
    ("started_at_epoch_ms", "started", "started_at_epoch_ms"),
    ("completed_at_epoch_ms", "completed", "completed_at_epoch_ms"),
    ("serialization", "ser", "serialization"),
    ("owner_xid", "owner", "owner_xid"),
    ("application_name", "app", "application_name"),
)
RECORD_COLUMNS = ", ".join(column for column, _, _ in _RECORD_FIELDS)
RECORD_KEYS = tuple(key for _, key, _ in _RECORD_FIELDS)
RECORD_VALUES = ", ".join(f"%({key})s" for key in RECORD_KEYS)


def record_fields(*keys: str) -> Callable[[StepRecord], tuple[Any, ...]]:
    """What gives the values of the checkpoint parameters ``keys`` (two or more, of
    RECORD_KEYS) of a StepRecord, as a tuple in that order: one C call."""
    field = {key: name for _, key, name in _RECORD_FIELDS}
    return operator.attrgetter(*(field[key] for key in keys))


record_values = record_fields(*RECORD_KEYS)


def record_params(rec: StepRecord) -> Params:
    return dict(zip(RECORD_KEYS, record_values(rec), strict=True))


# Rows that belong to an application: its own and those of none.
OWNED = "(application_name = %(app)s OR application_name IS NULL)"


class SqlCore(ABC):
    """Plumbing shared by the SQL mixins: connections, retries, fenced checkpoints."""

    d: Dialect

    retry: RetryPolicy

    # True where the hot writes (enqueue, completion) commit first and send their wake-ups
    # after, in a transaction of their own (PostgreSQL: see postgres/notifier.py).
    deferred_wakeups = False

    def _wake_after_commit(self, *keys: str) -> None:  # noqa: B027
        """Tell other processes about a write that has committed (deferred_wakeups)."""

    # -- plumbing supplied by the backend (single attempts, no retry) ---------------------------
    @abstractmethod
    def _all_raw(self, sql: str, params: Params) -> list[Row]: ...

    @abstractmethod
    def _exec_raw(self, sql: str, params: Params) -> int: ...

    @abstractmethod
    def _tx_raw(self, body: Callable[[Cursor], T]) -> T: ...

    # -- the same, retried through outages ------------------------------------------------------
    def _all(self, sql: str, params: Params, what: str) -> list[Row]:
        return self._checked(params, params.values(), lambda: self._all_raw(sql, params), what)

    def _exec(self, sql: str, params: Params, what: str) -> int:
        return self._checked(params, params.values(), lambda: self._exec_raw(sql, params), what)

    def _checked(
        self, names: Collection[str], values: Collection[Any], attempt: Callable[[], T], what: str
    ) -> T:
        """Run ``attempt``, a statement with the parameters ``values`` (named by ``names``),
        retried through outages; a parameter that cannot be stored is refused by name."""
        check_text_values(names, values)
        try:
            return self.retry.run(attempt, what)
        except UnicodeEncodeError as exc:
            raise unencodable(dict(zip(names, values, strict=True)), exc) from None

    def _tx(self, body: Callable[[Cursor], T], what: str) -> T:
        return self.retry.run(lambda: self._tx_raw(body), what)

    def _one(self, sql: str, params: Params, what: str) -> Optional[Row]:
        rows = self._all(sql, params, what)
        return rows[0] if rows else None

    def _workflow_columns(self, columns: str, workflow_id: str, what: str) -> Optional[Row]:
        """``columns`` of one workflow's row (None: no such workflow)."""
        return self._one(
            f"SELECT {columns} FROM {self.d.t('workflow_status')} WHERE workflow_uuid = %(id)s",
            {"id": workflow_id},
            what,
        )

    def _owned_rows(
        self, select: str, application_name: Optional[str], order: str, what: str
    ) -> list[Row]:
        """The rows of ``select`` (no WHERE) of the application (every row when None)."""
        params: Params = {}
        if application_name is not None:
            select += f" WHERE {OWNED}"
            params["app"] = application_name
        return self._all(f"{select} ORDER BY {order}", params, what)

    def _claim_retrying(self, token: str, attempt: Callable[[], list[Row]]) -> list[Row]:
        """Retry a claim; after an ambiguous failure first look for rows it already claimed,
        so a lost acknowledgement cannot strand workflows PENDING on this executor."""
        tried = False

        def op() -> list[Row]:
            nonlocal tried
            if tried:
                rows = self._all_raw(self._reclaim_sql(), {"token": token})
                if rows:
                    return rows
            tried = True
            return attempt()

        return self.retry.run(op, "claim queued workflows")

    def _runnable(self, compatible: bool) -> str:
        """Which version may run a workflow: the one rule for claims and recovery, as SQL over
        the ``workflow_status`` row in scope (``%(ver)s`` is the claimant's version,
        ``%(app)s`` its application).

        Its own version (DBOS's rule); an unversioned row, when it is the latest version; and
        with ``compatible`` (version_compatibility "fingerprint") a row of another version
        whose workflow has one and the same fingerprint recorded for that version and for this
        one, so a workflow either version changed, or that this version lacks, stays put."""
        ws = self.d.t("workflow_status")
        rule = (
            f"{ws}.application_version = %(ver)s OR ({ws}.application_version IS NULL AND "
            f"%(ver)s = (SELECT version_name FROM {self.d.t('application_versions')} "
            f"WHERE {OWNED} ORDER BY version_timestamp DESC LIMIT 1))"
        )
        if compatible:
            # The (version, workflow) pairs with one fingerprint, the one this version has for
            # that workflow: a small set, computed once per statement (not once per row).
            fp = self.d.t("workflow_fingerprints")
            pairs = (
                f"SELECT o.application_version, o.workflow_name FROM {fp} o JOIN {fp} m "
                "ON m.workflow_name = o.workflow_name AND m.application_version = %(ver)s "
                "GROUP BY o.application_version, o.workflow_name "
                "HAVING COUNT(DISTINCT o.fingerprint) = 1 AND COUNT(DISTINCT m.fingerprint) = 1 "
                "AND MIN(o.fingerprint) = MIN(m.fingerprint)"
            )
            rule += f" OR ({ws}.application_version, {ws}.name) IN ({pairs})"
        return f"({rule})"

    def _claim_set(self) -> str:
        return (
            "status = 'PENDING', executor_id = %(executor)s, "
            "application_version = %(ver)s, "
            "application_name = COALESCE(application_name, %(app)s), "
            "started_at_epoch_ms = %(now)s, updated_at = %(now)s, owner_xid = %(token)s, "
            "recovery_attempts = COALESCE(recovery_attempts, 0) + 1, "
            "workflow_deadline_epoch_ms = CASE WHEN workflow_timeout_ms IS NOT NULL "
            "AND workflow_deadline_epoch_ms IS NULL THEN %(now)s + workflow_timeout_ms "
            "ELSE workflow_deadline_epoch_ms END"
        )

    def _reclaim_sql(self) -> str:
        return (
            f"SELECT {SELECT_WORKFLOW} FROM {self.d.t('workflow_status')} "
            "WHERE status = 'PENDING' AND owner_xid = %(token)s"
        )

    # -- checkpoints inside a transaction ----------------------------------------------------
    def _checkpointed(
        self, record: Optional[StepRecord], write: Callable[[Cursor], None], what: str
    ) -> Optional[RecordOutcome]:
        """One transaction: checkpoint ``record`` (from a workflow), then ``write``. A refused
        checkpoint writes nothing and is returned; without a record the result is None."""

        def body(cur: Cursor) -> Optional[RecordOutcome]:
            outcome = None if record is None else self._record_in(cur, record)
            if outcome is None or outcome.accepted:
                write(cur)
            return outcome

        return self._tx(body, what)

    def _record_in(self, cur: Cursor, rec: StepRecord) -> RecordOutcome:
        """Fenced, idempotent checkpoint as part of a larger transaction."""
        wf = cur.one(
            f"SELECT status, owner_xid FROM {self.d.t('workflow_status')} "
            "WHERE workflow_uuid = %(wf)s" + self.d.lock_shared,
            {"wf": rec.workflow_id},
        )
        if wf is None or wf[1] != rec.owner_xid:
            return RecordOutcome(False, wf[0] if wf else None)
        oo = self.d.t("operation_outputs")
        inserted = cur.one(
            f"INSERT INTO {oo} ({RECORD_COLUMNS}) VALUES ({RECORD_VALUES}) "
            "ON CONFLICT (workflow_uuid, function_id) DO NOTHING RETURNING owner_xid",
            record_params(rec),
        )
        if inserted is not None:
            return RecordOutcome(True, wf[0])
        existing = cur.one(
            f"SELECT owner_xid FROM {oo} WHERE workflow_uuid = %(wf)s AND function_id = %(fid)s",
            {"wf": rec.workflow_id, "fid": rec.function_id},
        )
        return RecordOutcome(existing is not None and existing[0] == rec.owner_xid, wf[0])


def _prefix_end(prefix: str) -> Any:
    """The least text after every text that starts with ``prefix`` (code point order): its
    last character not already the greatest, plus one. None left: a BLOB, which SQLite
    orders after every text."""
    kept = prefix.rstrip(chr(0x10FFFF))
    if not kept:
        return b"\xff"
    nxt = ord(kept[-1]) + 1
    if 0xD800 <= nxt <= 0xDFFF:  # surrogates are not text
        nxt = 0xE000
    return kept[:-1] + chr(nxt)


def _like_prefix(prefix: str) -> str:
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)


def dumps_list(values: Sequence[Any]) -> str:
    return json.dumps(list(values))
