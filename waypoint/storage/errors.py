"""What the storage layer raises when an operation cannot be done as asked.

The tree::

    StorageError                 (base; ``message``)
     ├─ StoreClosedError         the store was closed while the call waited or retried
     ├─ StorageFullError         out of disk: nothing of the failed call was written
     ├─ StorageConfigError       a bad URL or schema name, an unreachable or unmigrated database
     ├─ UnavailableError         the database cannot answer now, and the caller asked not to wait
     ├─ UnsupportedError         this backend cannot do what was asked
 ├─ InvalidTextError         a text value no backend can store (NUL, unpaired surrogate)
     ├─ NotFoundError            a workflow the call needs does not exist (``workflow_id``)
     ├─ AlreadyExistsError       a row the call would create exists already
     ├─ DeduplicatedError        a queue's deduplication ID is held by another workflow
     ├─ OwnershipLostError       the calling execution no longer owns the workflow
     └─ QueueOwnedError          a queue name belongs to another application

Storage knows nothing of the public ``waypoint.error`` classes: the engine translates these
once, where it holds the store (``waypoint.core.storage_errors``). Driver errors that
retrying cannot fix and that are none of the above (a bug, a broken constraint) pass through
unchanged.
"""

from __future__ import annotations

from typing import Optional


class StorageError(Exception):
    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


class StoreClosedError(StorageError):
    def __init__(self) -> None:
        super().__init__("the system database connection was closed (DBOS.destroy was called)")


class StorageFullError(StorageError):
    pass


class StorageConfigError(StorageError):
    pass


class UnsupportedError(StorageError):
    pass


class UnavailableError(StorageError):
    pass


class InvalidTextError(StorageError):
    """A text parameter holds what a backend cannot store: PostgreSQL refuses NUL in text,
    and no encoding holds an unpaired surrogate. Refused the same way on every backend,
    before the statement runs, naming the parameter rather than the driver's complaint."""

    def __init__(self, parameter: str, problem: str) -> None:
        self.parameter = parameter
        super().__init__(f"the value given for {parameter!r} cannot be stored: it {problem}")


class NotFoundError(StorageError):
    def __init__(self, workflow_id: str) -> None:
        self.workflow_id = workflow_id
        super().__init__(f"Workflow {workflow_id} does not exist")


class AlreadyExistsError(StorageError):
    pass


class DeduplicatedError(StorageError):
    def __init__(self, workflow_id: str, queue_name: str, deduplication_id: str) -> None:
        self.workflow_id = workflow_id
        self.queue_name = queue_name
        self.deduplication_id = deduplication_id
        super().__init__(
            f"deduplication ID {deduplication_id} is held by another workflow on queue {queue_name}"
        )


class OwnershipLostError(StorageError):
    def __init__(self, workflow_id: str) -> None:
        self.workflow_id = workflow_id
        super().__init__(f"workflow {workflow_id} is owned by another execution")


class QueueOwnedError(StorageError):
    def __init__(self, name: str, owner: Optional[str]) -> None:
        self.name = name
        self.owner = owner
        super().__init__(
            f"queue {name!r} belongs to application {owner!r}; queue names are shared by every "
            "application on this database (rename one of them)"
        )
