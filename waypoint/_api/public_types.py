"""The public record types, as the API layer hands them out (defined in ``core.types``)."""

from __future__ import annotations

from waypoint.core.types import ClientScheduleInput as ClientScheduleInput
from waypoint.core.types import DuplicationPolicy as DuplicationPolicy
from waypoint.core.types import ScheduleInput as ScheduleInput
from waypoint.core.types import StepInfo as StepInfo
from waypoint.core.types import StepOptions as StepOptions
from waypoint.core.types import StepStatus as StepStatus
from waypoint.core.types import VersionInfo as VersionInfo
from waypoint.core.types import WorkflowSchedule as WorkflowSchedule
from waypoint.core.types import WorkflowSerializationFormat as WorkflowSerializationFormat
from waypoint.core.types import WorkflowStatus as WorkflowStatus
from waypoint.core.types import WorkflowStatusString as WorkflowStatusString
