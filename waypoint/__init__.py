"""Waypoint: durable workflows for Python, as a library.

The public API mirrors DBOS Transact's, so ``from waypoint import DBOS`` ports a DBOS
application. Everything public is re-exported here and nowhere else.
"""

from waypoint import error
from waypoint.__version__ import VERSION as __version__
from waypoint._api.client import DBOSClient
from waypoint._api.config import DBOSConfig
from waypoint._api.context import (
    DBOSContextEnsure,
    DBOSContextSetAuth,
    SetEnqueueOptions,
    SetWorkflowAttributes,
    SetWorkflowID,
    SetWorkflowTimeout,
)
from waypoint._api.dbos import DBOS, DBOSConfiguredInstance
from waypoint._api.handles import WorkflowHandle, WorkflowHandleAsync
from waypoint._api.migrate import run_dbos_database_migrations
from waypoint.core.messaging import SendMessage
from waypoint.core.serialization import (
    DBOSPortableJSONSerializer,
    PortableWorkflowError,
    Serializer,
)
from waypoint.core.types import (
    ClientScheduleInput,
    DuplicationPolicy,
    ScheduleInput,
    StepInfo,
    StepOptions,
    StepStatus,
    VersionInfo,
    WorkflowSchedule,
    WorkflowSerializationFormat,
    WorkflowStatus,
    WorkflowStatusString,
)
from waypoint.queues.debouncer import Debouncer, DebouncerClient
from waypoint.queues.enqueue import EnqueueOptions
from waypoint.queues.queue import Queue

__all__ = [
    "DBOS",
    "ClientScheduleInput",
    "DBOSClient",
    "DBOSConfig",
    "DBOSConfiguredInstance",
    "DBOSContextEnsure",
    "DBOSContextSetAuth",
    "DBOSPortableJSONSerializer",
    "Debouncer",
    "DebouncerClient",
    "DuplicationPolicy",
    "EnqueueOptions",
    "PortableWorkflowError",
    "Queue",
    "ScheduleInput",
    "SendMessage",
    "Serializer",
    "SetEnqueueOptions",
    "SetWorkflowAttributes",
    "SetWorkflowID",
    "SetWorkflowTimeout",
    "StepInfo",
    "StepOptions",
    "StepStatus",
    "VersionInfo",
    "WorkflowHandle",
    "WorkflowHandleAsync",
    "WorkflowSchedule",
    "WorkflowSerializationFormat",
    "WorkflowStatus",
    "WorkflowStatusString",
    "__version__",
    "error",
    "run_dbos_database_migrations",
]
