"""``@DBOS.transaction`` and ``DBOS.sql_session``: the decorator, the application database
opened at launch, and the session the running transaction's body sees.

Called from a workflow body, a transaction is that workflow's next operation
(``core.transactions``). Called anywhere else it runs, as in DBOS, inside a one-operation
workflow named ``<temp>.<name>`` (so ``SetWorkflowID`` gives it an ID, and it can be started,
enqueued and scheduled like any workflow). SQLAlchemy is imported only when an application
database is opened (``waypoint._api.appdb``).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Optional, TypeVar, cast

from waypoint._api import decorators
from waypoint._api.launch import ExtensionContext, register_extension
from waypoint._api.sql_session import NotInTransactionError, sql_session_var
from waypoint.core.calls import call_workflow
from waypoint.core.context import current_run, current_step
from waypoint.core.effects import drive_sync
from waypoint.core.registrations import REGISTRY, WorkflowInfo
from waypoint.core.roles import authorized, rule_for
from waypoint.core.services import Periodic, Service
from waypoint.core.settings import RuntimeConfig
from waypoint.core.storage_errors import StoreClosed
from waypoint.core.transactions import check_isolation_level, in_transaction, transaction_flow
from waypoint.error import (
    DBOSConflictingRegistrationError,
    DBOSException,
    DBOSInitializationError,
)

if TYPE_CHECKING:
    from waypoint._api.appdb import ApplicationDatabase

F = TypeVar("F", bound=Callable[..., Any])

logger = logging.getLogger("waypoint")

_app_db: Optional[ApplicationDatabase] = None


def temp_workflow_name(name: str) -> str:
    """The one-operation workflow a transaction runs in when called outside a workflow."""
    return f"<temp>.{name}"


# -- the application database of the launched DBOS --------------------------------------------


def application_database_url(config: RuntimeConfig) -> Optional[str]:
    url = config.raw.get("database_url") or config.raw.get("application_database_url")
    if url is not None and not isinstance(url, str):
        raise DBOSInitializationError(
            f"application_database_url must be a database URL string, got {type(url).__name__}"
        )
    return url or None


def _application_database_class() -> type[ApplicationDatabase]:
    try:
        from waypoint._api.appdb import ApplicationDatabase
    except ImportError as exc:
        raise DBOSInitializationError(
            "an application database needs SQLAlchemy: pip install 'waypoint-workflows[sql]'"
        ) from exc
    return ApplicationDatabase


def migrate_application_database(url: str, *, schema: str, role: Optional[str]) -> None:
    """Create the application database's ``transaction_outputs`` out of band (and grant
    ``role`` its schema), as ``run_dbos_database_migrations(app_database_url=...)`` does."""
    db = _application_database_class()(url, schema=schema, engine_kwargs_given={"pool_size": 2})
    try:
        db.migrate()
        if role is not None:
            db.grant(role)
    finally:
        db.dispose()


def open_application_database(config: RuntimeConfig) -> None:
    """At launch: open and migrate the configured application database, if any."""
    global _app_db
    close_application_database()
    url = application_database_url(config)
    if url is None:
        return
    kwargs = config.raw.get("db_engine_kwargs")
    if kwargs is not None and not isinstance(kwargs, dict):
        raise DBOSInitializationError("db_engine_kwargs must be a dict of SQLAlchemy options")
    db = _application_database_class()(
        url,
        schema=config.schema,
        app_name=f"waypoint:{config.name}",
        engine_kwargs_given=kwargs,
    )
    try:
        db.migrate()
    except BaseException:
        db.dispose()
        raise
    _app_db = db


def close_application_database() -> None:
    global _app_db
    db, _app_db = _app_db, None
    if db is not None:
        db.dispose()


def application_database() -> Optional[ApplicationDatabase]:
    return _app_db


def prune_transaction_outputs(store: Any, older_than_ms: Optional[int]) -> int:
    """Delete the application database's records of workflows the system database no
    longer has (DBOS's garbage collection does the same to ``transaction_outputs``)."""
    db = _app_db
    if db is None:
        return 0
    return db.prune(lambda ids: set(store.get_outcomes(ids)), older_than_ms)


class _OutputsRetention:
    """On the retention policy's schedule, prune what retention left behind in the
    application database."""

    name = "transaction-outputs-retention"

    def __init__(self, ctx: ExtensionContext) -> None:
        self.ops = ctx.ops
        self.max_age = ctx.config.retention_max_age_sec
        every = ctx.config.retention_interval_sec
        self._ticker = Periodic(
            self.name, every, self.tick, stop_on=(StoreClosed,), first_after=min(10.0, every)
        )

    def start(self) -> None:
        self._ticker.start()

    def stop(self) -> None:
        self._ticker.stop()

    def tick(self) -> None:
        eng = self.ops.engine()
        cutoff = None if self.max_age is None else eng.now_ms() - int(self.max_age * 1000)
        deleted = prune_transaction_outputs(eng.store, cutoff)
        if deleted:
            logger.info("retention policy deleted %d transaction output(s)", deleted)


def _outputs_retention(ctx: ExtensionContext) -> Optional[Service]:
    wanted = ctx.config.retention_max_age_sec is not None or ctx.config.retention_max_rows
    return _OutputsRetention(ctx) if wanted and _app_db is not None else None


register_extension("transaction-outputs-retention", _outputs_retention)


def sql_session() -> Any:
    """The SQLAlchemy ``Session`` of the ``@DBOS.transaction`` running here."""
    session = sql_session_var.get()
    if session is None or in_transaction() is None:
        raise NotInTransactionError("DBOS.sql_session is only available within a @DBOS.transaction")
    return session


# -- the decorator -----------------------------------------------------------------------------


def transaction(name: Optional[str], isolation_level: str) -> Callable[[F], F]:
    level = check_isolation_level(isolation_level)

    def decorator(func: F) -> F:
        txn_name = name or func.__qualname__
        if inspect.iscoroutinefunction(func):
            raise DBOSException(
                f"Function {txn_name} is a coroutine function, but DBOS.transaction does not "
                "support coroutine functions"
            )
        if hasattr(func, "__waypoint_step__") or hasattr(func, "__waypoint_workflow__"):
            # Already a step or workflow (or transaction): one function, one kind, as in DBOS.
            raise DBOSConflictingRegistrationError(temp_workflow_name(txn_name))
        info: Optional[WorkflowInfo] = None
        rule = rule_for(func)

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with authorized(rule, txn_name):  # @DBOS.required_roles, checked on every call
                return _call(*args, **kwargs)

        def _call(*args: Any, **kwargs: Any) -> Any:
            step = current_step.get()
            if step is not None:
                raise DBOSException(
                    f"transaction {txn_name} was called inside "
                    f"{'transaction' if in_transaction() else 'step'} {step.name}: "
                    "transactions run from a workflow body or outside any workflow"
                )
            run = current_run.get()
            if run is None:
                assert info is not None
                return call_workflow(info, args, kwargs)
            db = _app_db
            if db is None:
                raise DBOSException(
                    f"transaction {txn_name}: transactions can only be used if DBOS is "
                    "configured with an application_database_url"
                )
            if _loop_running():
                logger.warning(
                    "Transaction %s was called while an event loop is running; it blocks "
                    "the loop (call it through asyncio.to_thread)",
                    txn_name,
                )
            flow = transaction_flow(run.runtime, run, db, txn_name, level, func, args, kwargs)
            return drive_sync(flow)

        info = _register_temp_workflow(txn_name, wrapper)
        wrapper.__waypoint_workflow__ = info  # type: ignore[attr-defined]
        wrapper.__waypoint_transaction__ = txn_name  # type: ignore[attr-defined]
        wrapper.dbos_function_name = txn_name  # type: ignore[attr-defined]  # (so it schedules)
        return cast(F, wrapper)

    return decorator


def _register_temp_workflow(txn_name: str, txn: Callable[..., Any]) -> WorkflowInfo:
    def run(*args: Any, **kwargs: Any) -> Any:
        return txn(*args, **kwargs)

    name = temp_workflow_name(txn_name)
    decorators.workflow(name, decorators.DEFAULT_MAX_RECOVERY_ATTEMPTS, None, None)(run)
    info = REGISTRY.workflows[name]
    info.internal = True
    return info


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
