"""Waypoint's error hierarchy, exposed as ``waypoint.error`` (DBOS's ``dbos.error``).

The tree, with the stable numeric code of each class::

    Exception
     └─ DBOSException                               (base; ``dbos_error_code``, ``status_code``)
         ├─ DBOSRecoveryError                     2
         ├─ DBOSInitializationError               3
         ├─ DBOSWorkflowFunctionNotFoundError     4
         ├─ DBOSNonExistentWorkflowError          5
         ├─ MaxRecoveryAttemptsExceededError      6
         ├─ DBOSMaxStepRetriesExceeded            7
         ├─ DBOSNotAuthorizedError                8   (status_code 403)
         ├─ DBOSConflictingWorkflowError          9
         ├─ DBOSUnexpectedStepError              11
         ├─ DBOSQueueDeduplicatedError           12
         ├─ DBOSAwaitedWorkflowCancelledError    13
         ├─ DBOSAwaitedWorkflowMaxRecoveryAttemptsExceeded  14
         ├─ DBOSPatchNondeterminismError         15
         ├─ DBOSStreamTimeoutError               16
         ├─ DBOSStreamNondeterminismError        17
         ├─ DBOSStepTimeoutError                 18
         ├─ DBOSConflictingRegistrationError     25
         ├─ DBOSDuplicateRegistrationError          (a class or instance name taken twice)
         ├─ WaypointStorageError                 40  (storage failed in a way retrying will not fix)
         │   └─ WaypointStorageFullError         41
         ├─ WaypointPayloadError                 42  (a value cannot be serialized or is too large)
         └─ WaypointArgumentError                43  (an argument of the wrong type; a TypeError)
    BaseException
     └─ DBOSBaseException                           (not caught by ``except Exception``)
         ├─ DBOSWorkflowConflictIDError           1
         └─ DBOSWorkflowCancelledError           10

``DBOSBaseException`` subclasses are control flow: a workflow that observes its own
cancellation, or a duplicate execution that lost the race to checkpoint a step, must unwind
through user code that says ``except Exception``.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any, Optional


class DBOSErrorCode(IntEnum):
    """The stable numeric code of each error (``dbos_error_code``), as DBOS numbers them."""

    ConflictingIdError = 1
    RecoveryError = 2
    InitializationError = 3
    WorkflowFunctionNotFound = 4
    NonExistentWorkflowError = 5
    MaxRecoveryAttemptsExceeded = 6
    MaxStepRetriesExceeded = 7
    NotAuthorized = 8
    ConflictingWorkflowError = 9
    WorkflowCancelled = 10
    UnexpectedStep = 11
    QueueDeduplicated = 12
    AwaitedWorkflowCancelled = 13
    AwaitedWorkflowMaxRecoveryAttemptsExceeded = 14
    PatchNondeterminism = 15
    StreamTimeout = 16
    StreamNondeterminism = 17
    StepTimeout = 18
    ConflictingRegistrationError = 25
    StorageError = 40
    StorageFull = 41
    PayloadError = 42
    ArgumentError = 43


class _Coded(BaseException):
    """Message, DBOS error code and pickling shared by both roots of the hierarchy. A class
    names its code once (``_code``); raising it with just a message uses that code."""

    status_code: int = 500
    _code: Optional[DBOSErrorCode] = None

    def __init__(self, message: str, dbos_error_code: int | None = None) -> None:
        self.message = message
        if dbos_error_code is None and self._code is not None:
            dbos_error_code = self._code.value
        self.dbos_error_code = dbos_error_code
        super().__init__(message)

    def __str__(self) -> str:
        if self.dbos_error_code is not None:
            return f"DBOS Error {self.dbos_error_code}: {self.message}"
        return f"DBOS Error: {self.message}"

    def __reduce__(self) -> Any:
        # Errors are checkpointed with pickle; rebuild from the message and code only.
        return (_rebuild_exception, (type(self), self.__dict__.copy()))


def _rebuild_exception(cls: type[BaseException], state: dict[str, Any]) -> BaseException:
    obj = cls.__new__(cls)
    obj.__dict__.update(state)
    message = state.get("message")
    obj.args = (message,) if message is not None else ()
    return obj


class DBOSException(_Coded, Exception):
    """Base of every error Waypoint raises on purpose."""


class DBOSBaseException(_Coded, BaseException):
    """Base of control-flow errors that must pass through ``except Exception``."""


class DBOSWorkflowConflictIDError(DBOSBaseException):
    """Another execution of the same workflow checkpointed this step first."""

    _code = DBOSErrorCode.ConflictingIdError

    def __init__(self, workflow_id: str) -> None:
        self.workflow_id = workflow_id
        super().__init__(f"Conflicting workflow ID {workflow_id}")


class DBOSWorkflowCancelledError(DBOSBaseException):
    """The running workflow observed its own cancellation (or its deadline passed)."""

    _code = DBOSErrorCode.WorkflowCancelled


def _detail(text: str, detail: Optional[str]) -> str:
    return f"{text}: {detail}" if detail else text


class DBOSRecoveryError(DBOSException):
    """A workflow could not be recovered."""

    _code = DBOSErrorCode.RecoveryError

    def __init__(self, workflow_id: str, message: str | None = None) -> None:
        self.workflow_id = workflow_id
        super().__init__(f"Recovery error for workflow ID {workflow_id}: {message}")


class DBOSInitializationError(DBOSException):
    """DBOS could not be configured or launched (bad config, unreachable database)."""

    _code = DBOSErrorCode.InitializationError

    def __init__(self, message: str) -> None:
        super().__init__(f"Error initializing DBOS Transact: {message}")


class DBOSWorkflowFunctionNotFoundError(DBOSException):
    """A stored workflow names a function this process has not registered."""

    _code = DBOSErrorCode.WorkflowFunctionNotFound

    def __init__(self, workflow_id: str, message: str | None = None) -> None:
        self.workflow_id = workflow_id
        super().__init__(f"Could not execute workflow {workflow_id}: {message}")


class DBOSNonExistentWorkflowError(DBOSException):
    """No workflow has this ID (e.g. the destination of ``send``)."""

    _code = DBOSErrorCode.NonExistentWorkflowError

    def __init__(self, destination: str, destination_id: str) -> None:
        """``destination`` says which workflow the caller named: ``"target"`` (the one to act
        on) or ``"`send` destination"``."""
        self.workflow_id = destination_id
        super().__init__(f"Non-existent {destination} workflow ID: {destination_id}")


class MaxRecoveryAttemptsExceededError(DBOSException):
    """A workflow was recovered more than its ``max_recovery_attempts``."""

    _code = DBOSErrorCode.MaxRecoveryAttemptsExceeded

    def __init__(self, workflow_id: str, max_retries: Optional[int] = None) -> None:
        self.workflow_id, self.max_retries = workflow_id, max_retries
        limit = "its maximum" + (f" of {max_retries}" if max_retries is not None else " number of")
        super().__init__(
            f"Workflow {workflow_id} has exceeded {limit} execution or recovery attempts. "
            "Further attempts to execute or recover it will fail (its status is "
            "MAX_RECOVERY_ATTEMPTS_EXCEEDED)."
        )


class DBOSMaxStepRetriesExceeded(DBOSException):
    """A step failed on every one of its ``max_attempts``; holds each error."""

    _code = DBOSErrorCode.MaxStepRetriesExceeded

    def __init__(self, step_name: str, max_retries: int, errors: list[Exception]) -> None:
        self.step_name, self.max_retries, self.errors = step_name, max_retries, errors
        super().__init__(f"Step {step_name} has exceeded its maximum of {max_retries} retries")


class DBOSNotAuthorizedError(DBOSException):
    """The caller lacks a role the workflow requires (HTTP 403)."""

    status_code = 403
    _code = DBOSErrorCode.NotAuthorized


class DBOSConflictingWorkflowError(DBOSException):
    """A workflow ID is already used by a different workflow function."""

    _code = DBOSErrorCode.ConflictingWorkflowError

    def __init__(self, workflow_id: str, message: str | None = None) -> None:
        self.workflow_id = workflow_id
        text = f"Conflicting workflow invocation with the same ID ({workflow_id})"
        super().__init__(_detail(text, message))


class DBOSUnexpectedStepError(DBOSException):
    """Replay met a different operation than the one recorded at this position
    (the workflow code changed non-deterministically)."""

    _code = DBOSErrorCode.UnexpectedStep

    def __init__(self, workflow_id: str, step_id: int, expected_name: str, recorded_name: str):
        self.workflow_id, self.step_id = workflow_id, step_id
        self.expected_name, self.recorded_name = expected_name, recorded_name
        super().__init__(
            f"During execution of workflow {workflow_id} step {step_id}, function "
            f"{recorded_name} was recorded when {expected_name} was expected. Check that "
            "your workflow is deterministic."
        )


class DBOSQueueDeduplicatedError(DBOSException):
    """A workflow with this deduplication ID is already queued."""

    _code = DBOSErrorCode.QueueDeduplicated

    def __init__(self, workflow_id: str, queue_name: str, deduplication_id: str) -> None:
        self.workflow_id, self.queue_name = workflow_id, queue_name
        self.deduplication_id = deduplication_id
        super().__init__(
            f"Workflow {workflow_id} was deduplicated due to an existing workflow in queue "
            f"{queue_name} with deduplication ID {deduplication_id}."
        )


class DBOSAwaitedWorkflowCancelledError(DBOSException):
    """The workflow whose result was awaited was cancelled."""

    _code = DBOSErrorCode.AwaitedWorkflowCancelled

    def __init__(self, workflow_id: str) -> None:
        self.workflow_id = workflow_id
        super().__init__(f"Awaited workflow {workflow_id} was cancelled")


class DBOSAwaitedWorkflowMaxRecoveryAttemptsExceeded(DBOSException):
    """The awaited workflow exceeded its recovery attempts."""

    _code = DBOSErrorCode.AwaitedWorkflowMaxRecoveryAttemptsExceeded

    def __init__(self, workflow_id: str) -> None:
        self.workflow_id = workflow_id
        super().__init__(f"Awaited workflow {workflow_id} exceeded its maximum recovery attempts")


class DBOSPatchNondeterminismError(DBOSException):
    """A patch was applied differently on replay than on the first run."""

    _code = DBOSErrorCode.PatchNondeterminism


class DBOSStreamTimeoutError(DBOSException):
    """Reading a stream timed out before it was closed."""

    _code = DBOSErrorCode.StreamTimeout


class DBOSStreamNondeterminismError(DBOSException):
    """A stream was written differently on replay than on the first run."""

    _code = DBOSErrorCode.StreamNondeterminism


class DBOSStepTimeoutError(DBOSException):
    """A step ran longer than its ``timeout_seconds``."""

    _code = DBOSErrorCode.StepTimeout

    def __init__(self, step_name: str, timeout_seconds: float) -> None:
        self.step_name, self.timeout_seconds = step_name, timeout_seconds
        super().__init__(
            f"Step {step_name} was cancelled after exceeding its timeout of {timeout_seconds} "
            "seconds"
        )


class DBOSConflictingRegistrationError(DBOSException):
    """Two functions were registered under one name."""

    _code = DBOSErrorCode.ConflictingRegistrationError

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(
            f"Operation (Name: {name}) is already registered with a conflicting function type"
        )


class DBOSDuplicateRegistrationError(DBOSException):
    """A second class registered under a class's name, or a second instance under an
    instance's ``<class>/<config_name>``. Its text is exactly DBOS's message (DBOS raises a
    plain ``Exception`` here), without the ``DBOS Error`` prefix."""

    def __str__(self) -> str:
        return self.message


class WaypointStorageError(DBOSException):
    """The system database rejected an operation in a way retrying will not fix."""

    _code = DBOSErrorCode.StorageError


class WaypointStorageFullError(WaypointStorageError):
    """The system database is out of space; nothing of the failed call was written."""

    _code = DBOSErrorCode.StorageFull


class WaypointPayloadError(DBOSException, TypeError):
    """A value could not be serialized (or deserialized) for the system database. A
    ``TypeError`` too: DBOS lets the serializer's ``TypeError`` through."""

    _code = DBOSErrorCode.PayloadError


class WaypointArgumentError(DBOSException, TypeError):
    """A method of ``DBOS`` or ``DBOSClient`` was given an argument of the wrong type (named
    in the message). A ``TypeError`` too, as Python's own argument checks raise."""

    _code = DBOSErrorCode.ArgumentError


__all__ = [
    "DBOSAwaitedWorkflowCancelledError",
    "DBOSAwaitedWorkflowMaxRecoveryAttemptsExceeded",
    "DBOSBaseException",
    "DBOSConflictingRegistrationError",
    "DBOSConflictingWorkflowError",
    "DBOSDuplicateRegistrationError",
    "DBOSErrorCode",
    "DBOSException",
    "DBOSInitializationError",
    "DBOSMaxStepRetriesExceeded",
    "DBOSNonExistentWorkflowError",
    "DBOSNotAuthorizedError",
    "DBOSPatchNondeterminismError",
    "DBOSQueueDeduplicatedError",
    "DBOSRecoveryError",
    "DBOSStepTimeoutError",
    "DBOSStreamNondeterminismError",
    "DBOSStreamTimeoutError",
    "DBOSUnexpectedStepError",
    "DBOSWorkflowCancelledError",
    "DBOSWorkflowConflictIDError",
    "DBOSWorkflowFunctionNotFoundError",
    "MaxRecoveryAttemptsExceededError",
    "WaypointPayloadError",
    "WaypointStorageError",
    "WaypointStorageFullError",
]
