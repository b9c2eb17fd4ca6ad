"""Transactions: operations whose body runs inside one transaction on the application
database, with their output recorded in that same transaction.

``@DBOS.transaction`` is a step with a stronger promise: its effects on the application
database happen exactly once. The output is inserted into the application database's
``transaction_outputs`` table by the user's own transaction, so the effects and the record
commit together. If the process dies after that commit and before the system database's
checkpoint, the recovered run finds the recorded output there and replays it (recording the
checkpoint it missed) instead of running the body again.

The engine knows the application database only through ``TxnDatabase``: opening a transaction
at an isolation level, reading and writing ``transaction_outputs`` and telling which errors are
worth retrying are the SQL layer's business (``waypoint._api.appdb``), so that plain Waypoint
never imports SQLAlchemy.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional, Protocol

from waypoint.core.context import StepState, current_step
from waypoint.core.effects import Call, Flow, Io, Sleep
from waypoint.core.engine import Engine
from waypoint.core.run import WorkflowRun
from waypoint.core.steps import NOT_RECORDED, next_operation, record
from waypoint.error import DBOSException, DBOSUnexpectedStepError

logger = logging.getLogger("waypoint")

ISOLATION_LEVELS = ("SERIALIZABLE", "REPEATABLE READ", "READ COMMITTED")

# Serialization failures and deadlocks are retried as DBOS retries them: 1 ms, growing by
# half each time, at most 2 s between attempts, for as long as they keep failing.
RETRY_FIRST_WAIT = 0.001
RETRY_BACKOFF = 1.5
RETRY_MAX_WAIT = 2.0

TRANSACTION_MARK = "transaction"  # key in ``StepState.extra`` while a transaction body runs


@dataclass(frozen=True)
class TxnKey:
    """Where a transaction's outcome is recorded: its workflow and operation position."""

    workflow_id: str
    function_id: int
    function_name: str


@dataclass
class TxnOutcome:
    """What one transaction attempt ended with: the body ran and committed (``value``, with
    ``output`` the text recorded for it), or an earlier execution had recorded this position
    (``replayed``: ``output`` or ``error`` is that record)."""

    value: Any = None
    output: Optional[str] = None
    error: Optional[str] = None
    replayed: bool = False


class TxnDatabase(Protocol):
    """What the engine needs of an application database."""

    def attempt(
        self,
        isolation_level: str,
        key: TxnKey,
        body: Callable[[], Any],
        encode: Callable[[Any], str],
    ) -> TxnOutcome:
        """One transaction at ``isolation_level``: if ``key`` is recorded, its record (nothing
        runs); else run ``body`` and insert ``encode(value)`` under ``key``, then commit.
        An error rolls everything back and propagates."""
        ...

    def record_error(self, key: TxnKey, error: str) -> None:
        """Record a failed transaction's error under ``key`` (its own transaction)."""
        ...

    def retriable(self, exc: BaseException) -> bool:
        """Whether ``exc`` is a serialization failure, deadlock or lost connection, after
        which the whole transaction is worth running again."""
        ...


def in_transaction() -> Optional[StepState]:
    """The transaction whose body is running here, if any."""
    step = current_step.get()
    if step is not None and step.extra.get(TRANSACTION_MARK):
        return step
    return None


def check_isolation_level(level: Any) -> str:
    if level not in ISOLATION_LEVELS:
        raise DBOSException(
            f"isolation_level must be one of {', '.join(ISOLATION_LEVELS)}; got {level!r}"
        )
    return str(level)


def transaction_flow(
    rt: Engine,
    run: WorkflowRun,
    db: TxnDatabase,
    name: str,
    isolation_level: str,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Flow[Any]:
    """Run ``fn`` as the transaction at the run's next operation position."""
    fid, recorded = yield from next_operation(run, name)
    if recorded is not NOT_RECORDED:
        logger.debug("Replaying transaction, id: %d, name: %s", fid, name)
        return recorded
    logger.debug("Running transaction, id: %d, name: %s", fid, name)
    key = TxnKey(run.workflow_id, fid, name)
    started = rt.now_ms()
    scope = rt.observers.transaction(run, name, fid) if rt.observers else None
    state = StepState(step_id=fid, name=name, extra={TRANSACTION_MARK: True})
    body = functools.partial(fn, *args, **kwargs)

    def encode(value: Any) -> str:
        return rt.codec.encode(value, run.serializer)

    wait = RETRY_FIRST_WAIT
    try:
        while True:
            try:
                outcome: TxnOutcome = yield Call(
                    db.attempt,
                    (isolation_level, key, body, encode),
                    {},
                    ((current_step, state),),
                    scope,
                )
                break
            except DBOSUnexpectedStepError:
                raise  # not this transaction's outcome: another operation holds the position
            except Exception as exc:
                if not db.retriable(exc):
                    text = rt.codec.encode_error(exc, run.serializer)
                    yield Io(functools.partial(db.record_error, key, text))
                    yield from record(rt, run, fid, name, started, error=text)
                    raise
                logger.debug("transaction %s: %s; retrying in %.3fs", name, exc, wait)
                if scope is not None:
                    scope.event("retry", error=exc, delay=wait)
                yield Sleep(wait)
                wait = min(wait * RETRY_BACKOFF, RETRY_MAX_WAIT)
    except BaseException as exc:
        if scope is not None:
            scope.end("ERROR", exc)
        raise
    ser = run.serializer.name()
    if outcome.replayed and outcome.error is not None:
        # An earlier execution's transaction failed and recorded why; so does this one.
        yield from record(rt, run, fid, name, started, error=outcome.error)
        error = rt.codec.decode_error(outcome.error, ser)
        if scope is not None:
            scope.end("ERROR", error)
        raise error
    yield from record(rt, run, fid, name, started, output=outcome.output)
    if scope is not None:
        scope.end("SUCCESS")
    return rt.codec.decode(outcome.output, ser) if outcome.replayed else outcome.value
