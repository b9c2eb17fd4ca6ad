"""Datasources: exactly-once SQL transactions against a database of the user's, as steps.

``SQLAlchemyDatasource.create(url)`` (and ``await AsyncSQLAlchemyDatasource.create(url)``)
opens a database and creates its ``datasource_outputs`` table (in schema ``dbos`` on
PostgreSQL, or the schema given; none on SQLite), as DBOS does. ``@ds.transaction()`` or
``ds.run_tx_step(options, func, ...)`` then runs ``func`` in one transaction there; called
from a workflow body, the call is a step (named after the function, or ``options["name"]``)
whose output is inserted into ``datasource_outputs`` by that same transaction, so a run that
crashed after the commit replays the recorded output instead of running the transaction
again. Outside a workflow it is a plain transaction. ``ds.sql_session()`` is the running
transaction's session.

The transaction is written once, as a flow of effects (``core.effects``): with a sync
``Session`` each effect runs inline, with an ``AsyncSession`` it is awaited. That is the only
difference between the two classes.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional, TypedDict

import sqlalchemy as sa
import sqlalchemy.dialects.postgresql as pg_dialect
import sqlalchemy.dialects.sqlite as sqlite_dialect
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm import sessionmaker

from waypoint._api import appdb
from waypoint._api.decorators import step_spec
from waypoint._api.sql_session import NotInTransactionError, sql_session_var
from waypoint.core import calls
from waypoint.core.context import current_run, current_step
from waypoint.core.effects import Call, Flow, Sleep, drive_async, drive_sync
from waypoint.core.serialization import Codec, Serializer
from waypoint.core.transactions import (
    RETRY_BACKOFF,
    RETRY_FIRST_WAIT,
    RETRY_MAX_WAIT,
    check_isolation_level,
)
from waypoint.error import DBOSException

logger = logging.getLogger("waypoint")

TABLE = "datasource_outputs"


class DatasourceOptions(TypedDict, total=False):
    """Options of one datasource transaction: its step ``name`` and ``isolation_level``."""

    name: Optional[str]
    isolation_level: Optional[str]


@dataclass(frozen=True)
class _Recorded:
    output: Optional[str]
    error: Optional[str]
    serialization: Optional[str]


class _StepAlreadyRecorded(Exception):
    """Another execution recorded this step first (the insert found its row)."""


def _outputs_table(schema: Optional[str]) -> sa.Table:
    return sa.Table(
        TABLE,
        sa.MetaData(schema=schema),
        sa.Column("workflow_id", sa.Text, primary_key=True),
        sa.Column("step_id", sa.Integer, primary_key=True),
        sa.Column("output", sa.Text, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("serialization", sa.Text, nullable=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )


def _ddl(sqlite: bool, schema: Optional[str]) -> list[str]:
    if sqlite:
        return [
            f"CREATE TABLE IF NOT EXISTS {TABLE} (workflow_id TEXT NOT NULL, "
            "step_id INTEGER NOT NULL, output TEXT, error TEXT, serialization TEXT, "
            f"created_at INTEGER NOT NULL DEFAULT {appdb.sqlite_now_ms()}, "
            "PRIMARY KEY (workflow_id, step_id))"
        ]
    assert schema is not None
    quoted = '"' + schema.replace('"', '""') + '"'
    return [
        f"CREATE SCHEMA IF NOT EXISTS {quoted}",
        f"CREATE TABLE IF NOT EXISTS {quoted}.{TABLE} (workflow_id TEXT NOT NULL, "
        "step_id INT NOT NULL, output TEXT, error TEXT, serialization TEXT, "
        "created_at BIGINT NOT NULL DEFAULT (EXTRACT(EPOCH FROM now())*1000)::bigint, "
        "PRIMARY KEY (workflow_id, step_id))",
    ]


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # As the system database: writers serialized, lock waits instead of "database is locked".
    dbapi_conn.isolation_level = "IMMEDIATE"
    dbapi_conn.execute("PRAGMA busy_timeout=30000")
    dbapi_conn.execute("PRAGMA foreign_keys=ON")


def _sqlite_connect_args(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The user's connect arguments minus PostgreSQL's, which SQLite would reject."""
    given = kwargs.get("connect_args") or {}
    return {k: v for k, v in given.items() if k not in appdb.PG_ONLY_CONNECT_ARGS}


def _options(options: Optional[DatasourceOptions], func: Callable[..., Any]) -> tuple[str, str]:
    opts = dict(options or {})
    unknown = set(opts) - {"name", "isolation_level"}
    if unknown:
        raise DBOSException(f"unknown datasource options: {', '.join(sorted(unknown))}")
    name = opts.get("name") or getattr(func, "__qualname__", "transaction")
    level = check_isolation_level(opts.get("isolation_level") or "SERIALIZABLE")
    return str(name), level


class _Datasource:
    """What both datasources share: the table, the codec and the transaction flow."""

    is_async = False

    def __init__(
        self,
        url: str,
        engine: Any,
        schema: Optional[str],
        serializer: Optional[Serializer],
        created_engine: bool,
    ) -> None:
        self.url = url
        self.sqlite = appdb.is_sqlite(url)
        self.schema: Optional[str] = None if self.sqlite else (schema or "dbos")
        self.engine = engine
        self.created_engine = created_engine
        self.serializer = serializer
        self._codec = Codec(serializer)
        self._table = _outputs_table(self.schema)
        self._insert: Any = sqlite_dialect.insert if self.sqlite else pg_dialect.insert

    # -- flows, run inline (sync) or awaited (async) -------------------------------------------
    def _migrate_flow(self) -> Flow[None]:
        conn = yield Call(self.engine.connect, (), {})
        try:
            for statement in _ddl(self.sqlite, self.schema):
                yield Call(conn.execute, (sa.text(statement),), {})
            yield Call(conn.commit, (), {})
        finally:
            yield Call(conn.close, (), {})

    def _read_flow(self, workflow_id: str, step_id: int) -> Flow[Optional[_Recorded]]:
        t = self._table
        wait = RETRY_FIRST_WAIT
        while True:
            conn = yield Call(self.engine.connect, (), {})
            try:
                result = yield Call(
                    conn.execute,
                    (
                        sa.select(t.c.output, t.c.error, t.c.serialization).where(
                            t.c.workflow_id == workflow_id, t.c.step_id == step_id
                        ),
                    ),
                    {},
                )
                row = result.first()
                return None if row is None else _Recorded(row[0], row[1], row[2])
            except Exception as exc:
                if not appdb.is_retriable(exc):
                    raise
            finally:
                yield Call(conn.close, (), {})
            yield Sleep(wait)
            wait = min(wait * RETRY_BACKOFF, RETRY_MAX_WAIT)

    def _record(self, workflow_id: str, step_id: int, **values: Any) -> Any:
        t = self._table
        return (
            self._insert(t)
            .values(workflow_id=workflow_id, step_id=step_id, **values)
            .on_conflict_do_nothing(index_elements=[t.c.workflow_id, t.c.step_id])
            .returning(t.c.workflow_id)
        )

    def _replay(self, rec: _Recorded) -> Any:
        if rec.error is not None:
            raise self._codec.decode_error(rec.error, rec.serialization)
        return self._codec.decode(rec.output, rec.serialization)

    def _transaction_flow(
        self,
        level: str,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        key: Optional[tuple[str, int]],
    ) -> Flow[Any]:
        """Run ``func`` in one transaction; with ``key`` (inside a workflow), record its
        output under it in the same transaction, or replay what is recorded there."""
        if key is not None:
            recorded = yield from self._read_flow(*key)
            if recorded is not None:
                return self._replay(recorded)
        if self.sqlite:
            level = "SERIALIZABLE"  # SQLite's one level; it meets every level asked for
        ser = self._codec.default
        wait = RETRY_FIRST_WAIT
        while True:
            session = self._sessions()
            try:
                yield Call(session.begin, (), {})
                yield Call(
                    session.connection, (), {"execution_options": {"isolation_level": level}}
                )
                value = yield Call(func, args, kwargs, ((sql_session_var, session),))
                if key is not None:
                    row = self._record(
                        *key, output=self._codec.encode(value, ser), serialization=ser.name()
                    )
                    result = yield Call(session.execute, (row,), {})
                    if result.first() is None:
                        raise _StepAlreadyRecorded()
                yield Call(session.commit, (), {})
                return value
            except _StepAlreadyRecorded:
                yield Call(session.rollback, (), {})
                break
            except Exception as exc:
                yield Call(session.rollback, (), {})
                if not appdb.is_retriable(exc):
                    if key is not None:
                        text = self._codec.encode_error(exc, ser)
                        yield from self._record_error_flow(key, text, ser.name())
                    raise
            finally:
                yield Call(session.close, (), {})
            logger.debug("datasource transaction retried in %.3fs", wait)
            yield Sleep(wait)
            wait = min(wait * RETRY_BACKOFF, RETRY_MAX_WAIT)
        # A concurrent execution of this step committed first: its outcome is the one.
        assert key is not None
        recorded = yield from self._read_flow(*key)
        if recorded is None:
            raise DBOSException(
                f"datasource step {key[1]} of workflow {key[0]} conflicted with a concurrent "
                "execution, but no recorded result was found"
            )
        return self._replay(recorded)

    def _record_error_flow(self, key: tuple[str, int], text: str, ser: str) -> Flow[None]:
        conn = yield Call(self.engine.connect, (), {})
        try:
            row = self._record(*key, error=text, serialization=ser)
            result = yield Call(conn.execute, (row,), {})
            result.first()  # consumed: SQLite cannot commit with a RETURNING cursor open
            yield Call(conn.commit, (), {})
        finally:
            yield Call(conn.close, (), {})

    # -- what both classes expose --------------------------------------------------------------
    def _sessions(self) -> Any:
        raise NotImplementedError

    def _step(
        self, options: Optional[DatasourceOptions], func: Callable[..., Any]
    ) -> tuple[Optional[Any], str]:
        """The step spec (None outside a workflow body) and the isolation level."""
        name, level = _options(options, func)
        if current_run.get() is None or current_step.get() is not None:
            return None, level
        return step_spec(name, {}, self.is_async), level

    def _key(self) -> tuple[str, int]:
        run, step = current_run.get(), current_step.get()
        assert run is not None and step is not None
        return run.workflow_id, step.step_id

    def sql_session(self) -> Any:
        """The session of the datasource transaction running here."""
        session = sql_session_var.get()
        if session is None:
            raise NotInTransactionError(
                "sql_session() must be called within a datasource transaction"
            )
        return session

    def _call(
        self,
        options: DatasourceOptions,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        raise NotImplementedError

    def transaction(
        self,
        func: Optional[Callable[..., Any]] = None,
        *,
        name: Optional[str] = None,
        isolation_level: str = "SERIALIZABLE",
    ) -> Any:
        """Decorate a function (a coroutine function, for the async datasource) to run as
        one datasource transaction: ``@ds.transaction`` or ``@ds.transaction(name=...,
        isolation_level=...)``."""
        options: DatasourceOptions = {"isolation_level": check_isolation_level(isolation_level)}
        if name is not None:
            options["name"] = name

        def decorator(f: Callable[..., Any]) -> Callable[..., Any]:
            if inspect.iscoroutinefunction(f) != self.is_async:
                kind = "a coroutine function" if self.is_async else "a non-coroutine function"
                raise DBOSException(
                    f"{type(self).__name__}.transaction requires {kind}; {f.__qualname__} is "
                    f"{'not' if self.is_async else 'a coroutine'}"
                )
            if self.is_async:

                @functools.wraps(f)
                async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                    return await self._call(options, f, args, kwargs)

                return async_wrapper

            @functools.wraps(f)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                return self._call(options, f, args, kwargs)

            return wrapper

        return decorator(func) if func is not None else decorator


class SQLAlchemyDatasource(_Datasource):
    """Exactly-once SQL transactions as steps, on a database of the user's (sync)."""

    def __init__(
        self,
        database_url: str,
        engine_kwargs: Optional[dict[str, Any]] = None,
        engine: Optional[sa.Engine] = None,
        schema: Optional[str] = None,
        serializer: Optional[Serializer] = None,
    ) -> None:
        created = engine is None
        if engine is None:
            kwargs = dict(engine_kwargs or {})
            if appdb.is_sqlite(database_url):
                kwargs["connect_args"] = _sqlite_connect_args(kwargs)
                engine = sa.create_engine(database_url, **kwargs)
                sa.event.listen(engine, "connect", _sqlite_pragmas)
            else:
                url = sa.make_url(database_url).set(drivername="postgresql+psycopg")
                engine = sa.create_engine(url, **kwargs)
        super().__init__(database_url, engine, schema, serializer, created)
        self.sessionmaker = sessionmaker(bind=self.engine)

    @staticmethod
    def create(
        database_url: str,
        engine_kwargs: Optional[dict[str, Any]] = None,
        engine: Optional[sa.Engine] = None,
        schema: Optional[str] = None,
        serializer: Optional[Serializer] = None,
    ) -> SQLAlchemyDatasource:
        """Open the database and create its ``datasource_outputs`` table."""
        ds = SQLAlchemyDatasource(database_url, engine_kwargs, engine, schema, serializer)
        drive_sync(ds._migrate_flow())
        return ds

    def _sessions(self) -> Any:
        return self.sessionmaker()

    def run_tx_step(
        self,
        ds_options: Optional[DatasourceOptions],
        func: Callable[..., Any],
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        """Run ``func(*args, **kwargs)`` in one transaction; a step inside a workflow."""
        if inspect.iscoroutinefunction(func):
            raise DBOSException(
                f"Function {getattr(func, '__qualname__', func)} is a coroutine; use "
                "AsyncSQLAlchemyDatasource.run_tx_step_async instead"
            )
        spec, level = self._step(ds_options, func)
        if spec is None:
            return drive_sync(self._transaction_flow(level, func, args, kwargs, None))

        def body() -> Any:
            return drive_sync(self._transaction_flow(level, func, args, kwargs, self._key()))

        return calls.run_step(spec, body, (), {})

    def _call(
        self,
        options: DatasourceOptions,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        return self.run_tx_step(options, func, *args, **kwargs)


class AsyncSQLAlchemyDatasource(_Datasource):
    """The async twin: an ``AsyncEngine``, coroutine transactions, an ``AsyncSession``."""

    is_async = True

    def __init__(
        self,
        database_url: str,
        engine_kwargs: Optional[dict[str, Any]] = None,
        engine: Optional[AsyncEngine] = None,
        schema: Optional[str] = None,
        serializer: Optional[Serializer] = None,
    ) -> None:
        created = engine is None
        if engine is None:
            kwargs = dict(engine_kwargs or {})
            url = sa.make_url(database_url)
            if url.get_backend_name() == "sqlite":
                if url.drivername == "sqlite":
                    url = url.set(drivername="sqlite+aiosqlite")
                kwargs["connect_args"] = _sqlite_connect_args(kwargs)
                engine = create_async_engine(url, **kwargs)
                sa.event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
            else:
                engine = create_async_engine(url.set(drivername="postgresql+psycopg"), **kwargs)
        super().__init__(database_url, engine, schema, serializer, created)
        self.sessionmaker = async_sessionmaker(bind=self.engine)

    @staticmethod
    async def create(
        database_url: str,
        engine_kwargs: Optional[dict[str, Any]] = None,
        engine: Optional[AsyncEngine] = None,
        schema: Optional[str] = None,
        serializer: Optional[Serializer] = None,
    ) -> AsyncSQLAlchemyDatasource:
        """Open the database and create its ``datasource_outputs`` table."""
        ds = AsyncSQLAlchemyDatasource(database_url, engine_kwargs, engine, schema, serializer)
        await drive_async(ds._migrate_flow())
        return ds

    def _sessions(self) -> Any:
        return self.sessionmaker()

    async def run_tx_step_async(
        self,
        ds_options: Optional[DatasourceOptions],
        func: Callable[..., Any],
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        """Run the coroutine ``func(*args, **kwargs)`` in one transaction; a step inside a
        workflow."""
        if not inspect.iscoroutinefunction(func):
            raise DBOSException(
                f"Function {getattr(func, '__qualname__', func)} must be a coroutine function "
                "for AsyncSQLAlchemyDatasource"
            )
        spec, level = self._step(ds_options, func)
        if spec is None:
            return await drive_async(self._transaction_flow(level, func, args, kwargs, None))

        async def body() -> Any:
            flow = self._transaction_flow(level, func, args, kwargs, self._key())
            return await drive_async(flow)

        return await calls.run_step_async(spec, body, (), {})

    def _call(
        self,
        options: DatasourceOptions,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        return self.run_tx_step_async(options, func, *args, **kwargs)
