"""Waypoint: durable workflows for Python, as a library.

The public API mirrors DBOS Transact's, so ``from waypoint import DBOS`` ports a DBOS
application. Everything public is re-exported here and nowhere else.
"""

from typing import Any

from waypoint import admin as admin  # imported for its effect: registers the admin server
from waypoint import error
from waypoint.__version__ import VERSION as __version__
from waypoint._api.client import DBOSClient
from waypoint._api.config import DBOSConfig
from waypoint._api.context_managers import (
    DBOSContextEnsure,
    DBOSContextSetAuth,
    SetEnqueueOptions,
    SetWorkflowAttributes,
    SetWorkflowID,
    SetWorkflowTimeout,
)
from waypoint._api.dbos import DBOS, DBOSConfiguredInstance
from waypoint._api.debouncer import Debouncer, DebouncerClient
from waypoint._api.handles import WorkflowHandle, WorkflowHandleAsync
from waypoint._api.migrate import run_dbos_database_migrations
from waypoint._api.queue import Queue
from waypoint._api.telemetry import PropagateOtelContext
from waypoint._api.unsupported import KafkaMessage
from waypoint._api.validation import make_pydantic_args_validator, pydantic_args_validator
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
from waypoint.queues.bulk import EnqueueCall
from waypoint.queues.enqueue import EnqueueOptions

__all__ = [
    "DBOS",
    "AsyncSQLAlchemyDatasource",
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
    "EnqueueCall",
    "EnqueueOptions",
    "KafkaMessage",
    "PortableWorkflowError",
    "PropagateOtelContext",
    "Queue",
    "SQLAlchemyDatasource",
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
    "make_pydantic_args_validator",
    "pydantic_args_validator",
    "run_dbos_database_migrations",
]

_DATASOURCES = ("SQLAlchemyDatasource", "AsyncSQLAlchemyDatasource")


def __getattr__(name: str) -> Any:
    """The SQLAlchemy datasources, imported on first use: SQLAlchemy is an optional extra
    (``pip install 'waypoint-workflows[sql]'``)."""
    if name in _DATASOURCES:
        from waypoint._api import datasource

        return getattr(datasource, name)
    raise AttributeError(f"module 'waypoint' has no attribute {name!r}")
