"""The engine's view of the system database: storage errors become ``waypoint.error`` classes.

Storage raises its own errors (``waypoint.storage.errors``) and knows nothing of the public
API. The engine wraps the store it is given once, here, so every caller above it (flows,
services, operations, the admin API) sees only the public classes, and a storage error is
translated in exactly one place.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, cast

from waypoint.error import (
    DBOSException,
    DBOSInitializationError,
    DBOSNonExistentWorkflowError,
    DBOSQueueDeduplicatedError,
    DBOSWorkflowConflictIDError,
    WaypointStorageError,
    WaypointStorageFullError,
)
from waypoint.storage import errors as se
from waypoint.storage.protocol import Store


class StoreClosed(WaypointStorageError):
    """The store was closed (``DBOS.destroy``) while a call waited for it; background loops
    take this as their signal to end."""


def public_error(exc: se.StorageError) -> DBOSException:
    if isinstance(exc, se.NotFoundError):
        return DBOSNonExistentWorkflowError("target", exc.workflow_id)
    if isinstance(exc, se.DeduplicatedError):
        return DBOSQueueDeduplicatedError(exc.workflow_id, exc.queue_name, exc.deduplication_id)
    if isinstance(exc, se.StoreClosedError):
        return StoreClosed(exc.message)
    if isinstance(exc, se.StorageFullError):
        return WaypointStorageFullError(exc.message)
    if isinstance(exc, se.StorageConfigError):
        return DBOSInitializationError(exc.message)
    if isinstance(
        exc,
        (se.AlreadyExistsError, se.UnsupportedError, se.QueueOwnedError, se.InvalidTextError),
    ):
        return DBOSException(exc.message)
    return WaypointStorageError(exc.message)


def public_exception(exc: se.StorageError) -> BaseException:
    """Like ``public_error``; a lost ownership is the control-flow error that unwinds a run."""
    if isinstance(exc, se.OwnershipLostError):
        return DBOSWorkflowConflictIDError(exc.workflow_id)
    return public_error(exc)


@contextmanager
def translated() -> Iterator[None]:
    """Run storage code outside a guarded store (URL parsing, schema admin) with the same
    translation."""
    try:
        yield
    except se.StorageError as exc:
        raise public_exception(exc) from exc


class _Guarded:
    """Delegates every attribute to the store; methods come back wrapped (and cached)."""

    def __init__(self, store: Store) -> None:
        self.__dict__["_store"] = store

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._store, name)
        if not callable(attr):
            return attr
        method: Callable[..., Any] = attr

        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return method(*args, **kwargs)
            except se.StorageError as exc:
                raise public_exception(exc) from exc

        call.__name__ = name
        self.__dict__[name] = call
        return call

    def queue_write(self, write: Any, done: Callable[[Any, BaseException | None], None]) -> bool:
        """``Store.queue_write`` with the error handed to ``done`` translated as well (it
        reaches the caller through the callback, not by raising from this call)."""

        def answer(result: Any, error: BaseException | None) -> None:
            if isinstance(error, se.StorageError):
                public = public_exception(error)
                public.__cause__ = error
                error = public
            done(result, error)

        try:
            return bool(self._store.queue_write(write, answer))
        except se.StorageError as exc:
            raise public_exception(exc) from exc

    def __repr__(self) -> str:
        return f"guarded({self._store!r})"


def guarded(store: Store) -> Store:
    """The store as the engine uses it: same methods, public errors."""
    if isinstance(store, _Guarded):
        return store
    return cast(Store, _Guarded(store))
