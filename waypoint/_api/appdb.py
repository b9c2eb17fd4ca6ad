"""The application database (config ``application_database_url``): where
``@DBOS.transaction`` bodies run, through a SQLAlchemy ``Session`` they reach as
``DBOS.sql_session``, and where each transaction's output is recorded in the same commit.

The record table is DBOS's: ``dbos.transaction_outputs`` on PostgreSQL (in the configured
system schema), ``transaction_outputs`` in SQLite (no schema), with the same columns, key and
``created_at`` index, so a DBOS application moved to Waypoint keeps its records and the other
way round. This module imports SQLAlchemy; nothing imports it unless an application database is
configured or a datasource is created.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any, Optional

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError, InvalidRequestError
from sqlalchemy.orm import Session, sessionmaker

from waypoint._api.sql_session import bound_session
from waypoint.core.transactions import TxnKey, TxnOutcome
from waypoint.error import DBOSUnexpectedStepError, DBOSWorkflowConflictIDError

logger = logging.getLogger("waypoint")

TABLE = "transaction_outputs"
PG_ONLY_CONNECT_ARGS = ("application_name", "connect_timeout")
# Connection errors and serialization failures (SQLSTATE classes 08, 53, 57; 40001 and
# 40P01) end a transaction without harm: the whole transaction is worth running again.
RETRIABLE_SQLSTATE_PREFIXES = ("08", "53", "57")
RETRIABLE_SQLSTATES = ("40001", "40P01")
RETRIABLE_MESSAGES = (
    "connection failed",
    "server closed the connection unexpectedly",
    "database is locked",  # SQLite: a lock held past the busy timeout
    "database table is locked",
)


def sqlite_now_ms() -> str:
    """SQLite's ``created_at`` default, as DBOS writes it for this Python."""
    if sys.version_info >= (3, 12):
        return "(unixepoch('subsec') * 1000)"
    return "(strftime('%s','now') * 1000)"


def is_sqlite(url: str | sa.URL) -> bool:
    return sa.make_url(url).get_backend_name() == "sqlite"


def engine_kwargs(url: sa.URL, app_name: str, given: Optional[dict[str, Any]]) -> dict[str, Any]:
    """DBOS's engine defaults (a pool of 20, pre-ping, a 10 s connect timeout) under the
    user's ``db_engine_kwargs``; PostgreSQL-only connect arguments are dropped for SQLite."""
    kwargs: dict[str, Any] = {
        "pool_size": 20,
        "max_overflow": 0,
        "pool_timeout": 30,
        "pool_pre_ping": True,
    }
    connect_args: dict[str, Any] = {"application_name": app_name[:63], "connect_timeout": 10}
    for key, value in (given or {}).items():
        if key == "connect_args":
            connect_args.update(value or {})
        else:
            kwargs[key] = value
    if url.get_backend_name() == "sqlite":
        connect_args = {k: v for k, v in connect_args.items() if k not in PG_ONLY_CONNECT_ARGS}
    kwargs["connect_args"] = connect_args
    if kwargs.get("poolclass") is sa.pool.NullPool:
        for key in ("pool_size", "max_overflow", "pool_timeout"):
            kwargs.pop(key, None)
    return kwargs


def create_engine(url: str, kwargs: dict[str, Any]) -> sa.Engine:
    """An engine on ``url``: PostgreSQL through psycopg 3, SQLite with a 30 s busy timeout
    (lock waits instead of failing fast with "database is locked")."""
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = sa.create_engine(parsed, **kwargs)

        @sa.event.listens_for(engine, "connect")
        def _busy_timeout(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.execute("PRAGMA busy_timeout=30000")

        return engine
    return sa.create_engine(parsed.set(drivername="postgresql+psycopg"), **kwargs)


def sqlstate(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    return str(getattr(orig, "sqlstate", None) or "")


def is_retriable(exc: BaseException) -> bool:
    """A lost connection, a serialization failure or a deadlock (PostgreSQL), or a lock
    held too long (SQLite): the transaction did nothing and can run again."""
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    state = sqlstate(exc)
    if state in RETRIABLE_SQLSTATES or state.startswith(RETRIABLE_SQLSTATE_PREFIXES):
        return True
    text = str(exc.orig).lower()
    # A connection that could not be made, or broke, reports no SQLSTATE.
    return any(sign in text for sign in RETRIABLE_MESSAGES) or (
        type(exc.orig).__name__ == "ConnectionTimeout"
    )


def is_unique_violation(exc: BaseException) -> bool:
    return sqlstate(exc) == "23505" or "UNIQUE constraint failed" in str(getattr(exc, "orig", ""))


class ApplicationDatabase:
    """The SQLAlchemy side of ``@DBOS.transaction`` (the engine's ``TxnDatabase``)."""

    def __init__(
        self,
        url: str,
        *,
        schema: str = "dbos",
        app_name: str = "waypoint",
        engine_kwargs_given: Optional[dict[str, Any]] = None,
    ) -> None:
        parsed = sa.make_url(url)
        self.url = url
        self.sqlite = parsed.get_backend_name() == "sqlite"
        self.schema: Optional[str] = None if self.sqlite else schema
        self._kwargs = engine_kwargs(parsed, app_name, engine_kwargs_given)
        self.engine = create_engine(url, self._kwargs)
        self.sessions = sessionmaker(bind=self.engine)
        self.table = _outputs_table(self.schema)

    def dispose(self) -> None:
        self.engine.dispose()

    # -- schema ---------------------------------------------------------------------------------
    def migrate(self) -> None:
        """Create the database (PostgreSQL, when missing), the schema and DBOS's
        ``transaction_outputs`` table; add ``function_name`` to a table from before it."""
        if self.sqlite:
            with self.engine.begin() as conn:
                conn.execute(
                    sa.text(
                        f"CREATE TABLE IF NOT EXISTS {TABLE} ("
                        "workflow_uuid TEXT NOT NULL, function_id INTEGER NOT NULL, "
                        "output TEXT, error TEXT, txn_id TEXT, txn_snapshot TEXT NOT NULL, "
                        "executor_id TEXT, function_name TEXT NOT NULL DEFAULT '', "
                        f"created_at BIGINT NOT NULL DEFAULT {sqlite_now_ms()}, "
                        "PRIMARY KEY (workflow_uuid, function_id))"
                    )
                )
                conn.execute(
                    sa.text(
                        "CREATE INDEX IF NOT EXISTS transaction_outputs_created_at_index "
                        f"ON {TABLE} (created_at)"
                    )
                )
            return
        self._create_pg_database()
        assert self.schema is not None
        with self.engine.begin() as conn:
            conn.execute(sa.text(f"CREATE SCHEMA IF NOT EXISTS {_quote(self.schema)}"))
        inspector = sa.inspect(self.engine)
        if not inspector.has_table(TABLE, schema=self.schema):
            self.table.metadata.create_all(self.engine)
            return
        columns = {c["name"] for c in inspector.get_columns(TABLE, schema=self.schema)}
        if "function_name" not in columns:
            with self.engine.begin() as conn:
                conn.execute(
                    sa.text(
                        f"ALTER TABLE {_quote(self.schema)}.{TABLE} "
                        "ADD COLUMN function_name TEXT NOT NULL DEFAULT ''"
                    )
                )

    def grant(self, role: str) -> None:
        """Let ``role`` use the schema's tables, present and future (PostgreSQL), as
        ``run_dbos_database_migrations(application_role=...)`` does for DBOS."""
        if self.sqlite:
            return
        assert self.schema is not None
        schema, who = _quote(self.schema), _quote(role)
        with self.engine.begin() as conn:
            for statement in (
                f"GRANT USAGE ON SCHEMA {schema} TO {who}",
                f"GRANT ALL PRIVILEGES ON ALL TABLES IN SCHEMA {schema} TO {who}",
                f"GRANT ALL PRIVILEGES ON ALL SEQUENCES IN SCHEMA {schema} TO {who}",
                f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT ALL ON TABLES TO {who}",
                f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT ALL ON SEQUENCES TO {who}",
            ):
                conn.execute(sa.text(statement))

    def _create_pg_database(self) -> None:
        url = self.engine.url
        admin = sa.create_engine(
            url.set(database="postgres"),
            connect_args=self._kwargs.get("connect_args", {}),
            isolation_level="AUTOCOMMIT",
            poolclass=sa.pool.NullPool,
        )
        try:
            with admin.connect() as conn:
                exists = conn.execute(
                    sa.text("SELECT 1 FROM pg_database WHERE datname = :name"),
                    {"name": url.database},
                ).scalar()
                if not exists:
                    conn.execute(sa.text(f"CREATE DATABASE {_quote(str(url.database))}"))
        except DBAPIError as exc:
            # A role that may not read the catalog of "postgres" can still use a database
            # that exists; if it does not, the first real statement says so.
            logger.warning("could not check that application database %s exists: %s", url, exc)
        finally:
            admin.dispose()

    # -- the engine's TxnDatabase ---------------------------------------------------------------
    def attempt(
        self,
        isolation_level: str,
        key: TxnKey,
        body: Callable[[], Any],
        encode: Callable[[Any], str],
    ) -> TxnOutcome:
        if self.sqlite:
            # SQLite has one level, SERIALIZABLE (writers are serialized): every level asked
            # for is met by it, where DBOS would refuse all but SERIALIZABLE on SQLite.
            isolation_level = "SERIALIZABLE"
        try:
            with self.sessions() as session, session.begin():
                # The isolation level must be set before the transaction's first statement.
                session.connection(execution_options={"isolation_level": isolation_level})
                recorded = self._recorded(session, key)
                if recorded is not None:
                    return recorded
                with bound_session(session):
                    value = body()
                output = encode(value)
                self._insert(session, key, output=output)
        except InvalidRequestError:
            logger.error(
                "InvalidRequestError in transaction %s. Hint: do not call commit() or "
                "rollback() within a DBOS transaction: Waypoint commits it",
                key.function_name,
            )
            raise
        return TxnOutcome(value=value, output=output)

    def record_error(self, key: TxnKey, error: str) -> None:
        with self.sessions() as session, session.begin():
            self._insert(session, key, error=error)

    def retriable(self, exc: BaseException) -> bool:
        return is_retriable(exc)

    def _recorded(self, session: Session, key: TxnKey) -> Optional[TxnOutcome]:
        t = self.table
        row = session.execute(
            sa.select(t.c.output, t.c.error, t.c.function_name).where(
                t.c.workflow_uuid == key.workflow_id, t.c.function_id == key.function_id
            )
        ).first()
        if row is None:
            return None
        if row.function_name != key.function_name:
            raise DBOSUnexpectedStepError(
                key.workflow_id, key.function_id, key.function_name, row.function_name
            )
        return TxnOutcome(output=row.output, error=row.error, replayed=True)

    def _insert(
        self,
        session: Session,
        key: TxnKey,
        *,
        output: Optional[str] = None,
        error: Optional[str] = None,
    ) -> None:
        try:
            session.execute(
                sa.insert(self.table).values(
                    workflow_uuid=key.workflow_id,
                    function_id=key.function_id,
                    output=output,
                    error=error,
                    txn_id="",
                    txn_snapshot="",
                    executor_id=None,
                    function_name=key.function_name,
                )
            )
        except DBAPIError as exc:
            if is_unique_violation(exc):
                # Another execution of this workflow recorded this transaction first.
                raise DBOSWorkflowConflictIDError(key.workflow_id) from exc
            raise

    # -- management -----------------------------------------------------------------------------
    def prune(
        self,
        existing: Callable[[list[str]], set[str]],
        older_than_ms: Optional[int] = None,
        batch: int = 1000,
    ) -> int:
        """Delete the records of workflows the system database no longer has (deleted by
        retention or by hand), only rows created before ``older_than_ms`` if given; returns
        how many rows went. ``existing`` says which of some workflow IDs still exist."""
        t = self.table
        deleted, after = 0, ""
        while True:
            query = sa.select(t.c.workflow_uuid).distinct().where(t.c.workflow_uuid > after)
            if older_than_ms is not None:
                query = query.where(t.c.created_at < older_than_ms)
            with self.engine.connect() as conn:
                ids = [r[0] for r in conn.execute(query.order_by(t.c.workflow_uuid).limit(batch))]
            if not ids:
                return deleted
            alive = existing(ids)
            gone = [i for i in ids if i not in alive]
            if gone:
                doomed = sa.delete(t).where(t.c.workflow_uuid.in_(gone))
                if older_than_ms is not None:
                    doomed = doomed.where(t.c.created_at < older_than_ms)
                with self.engine.begin() as conn:
                    deleted += conn.execute(doomed).rowcount
            after = ids[-1]

    def delete_outputs(self, workflow_ids: list[str]) -> None:
        """Forget the transactions of deleted workflows, as DBOS's ``delete_workflow`` does."""
        if not workflow_ids:
            return
        with self.engine.begin() as conn:
            conn.execute(sa.delete(self.table).where(self.table.c.workflow_uuid.in_(workflow_ids)))


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _outputs_table(schema: Optional[str]) -> sa.Table:
    metadata = sa.MetaData(schema=schema)
    return sa.Table(
        TABLE,
        metadata,
        sa.Column("workflow_uuid", sa.Text),
        sa.Column("function_id", sa.Integer),
        sa.Column("output", sa.Text, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("txn_id", sa.Text, nullable=True),
        sa.Column("txn_snapshot", sa.Text),
        sa.Column("executor_id", sa.Text, nullable=True),
        sa.Column("function_name", sa.Text, nullable=False, server_default=""),
        sa.Column(
            "created_at",
            sa.BigInteger,
            nullable=False,
            server_default=sa.text("(EXTRACT(epoch FROM now()) * 1000.0)::bigint"),
        ),
        sa.Index("transaction_outputs_created_at_index", "created_at"),
        sa.PrimaryKeyConstraint("workflow_uuid", "function_id"),
    )
