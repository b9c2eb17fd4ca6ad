"""Where the SQLAlchemy session of the running transaction is kept (``DBOS.sql_session``,
a datasource's ``sql_session()``): a context variable, so each thread and task sees its own.
Kept apart from the SQLAlchemy code so that reading it never imports SQLAlchemy."""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from waypoint.error import DBOSException

sql_session_var: contextvars.ContextVar[Any] = contextvars.ContextVar(
    "waypoint_sql_session", default=None
)


@contextmanager
def bound_session(session: Any) -> Iterator[None]:
    """Make ``session`` the one the transaction's body sees here."""
    token = sql_session_var.set(session)
    try:
        yield
    finally:
        sql_session_var.reset(token)


class NotInTransactionError(DBOSException, AssertionError):
    """A transaction's session asked for outside any transaction. An ``AssertionError`` too,
    as DBOS raises one there (its check is an ``assert``)."""
