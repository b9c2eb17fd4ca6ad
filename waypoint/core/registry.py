"""Which functions, classes and instances this process can run, by their recorded names.

Decorators register at import time, before any ``DBOS`` object exists, so the registry is
process-wide; recovery resolves a stored ``name``/``class_name``/``config_name`` through it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Optional

from waypoint.core.types import StepSpec, WorkflowSerializationFormat
from waypoint.error import DBOSConflictingRegistrationError

logger = logging.getLogger("waypoint")

Kind = Literal["function", "instance", "class", "static"]


@dataclass
class WorkflowInfo:
    name: str
    func: Callable[..., Any]  # the user's function, undecorated
    is_async: bool
    max_recovery_attempts: Optional[int]
    serialization: Optional[WorkflowSerializationFormat]
    validate_args: Optional[Callable[[tuple[Any, ...], dict[str, Any]], Any]]
    kind: Kind = "function"
    class_name: Optional[str] = None
    wrapper: Optional[Callable[..., Any]] = None


@dataclass
class StepEntry:
    name: str
    func: Callable[..., Any]
    spec: StepSpec


class Registry:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.workflows: dict[str, WorkflowInfo] = {}
        self.steps: dict[str, StepEntry] = {}
        self.classes: dict[str, type] = {}
        self.instances: dict[str, object] = {}

    def add_workflow(self, info: WorkflowInfo) -> None:
        with self._lock:
            if info.name in self.steps:
                raise DBOSConflictingRegistrationError(info.name)
            old = self.workflows.get(info.name)
            if old is not None and old.func is not info.func:
                logger.warning("workflow %s registered again; the newer definition wins", info.name)
            self.workflows[info.name] = info

    def add_step(self, entry: StepEntry) -> None:
        with self._lock:
            if entry.name in self.workflows:
                raise DBOSConflictingRegistrationError(entry.name)
            self.steps[entry.name] = entry

    def add_class(self, name: str, cls: type) -> None:
        with self._lock:
            old = self.classes.get(name)
            if old is not None and old is not cls and old.__module__ != cls.__module__:
                raise DBOSConflictingRegistrationError(name)
            self.classes[name] = cls

    def add_instance(self, class_name: str, config_name: str, inst: object) -> None:
        key = f"{class_name}/{config_name}"
        with self._lock:
            old = self.instances.get(key)
            if old is not None and old is not inst:
                logger.warning("instance %s registered again; the newer instance wins", key)
            self.instances[key] = inst

    def instance(self, class_name: str, config_name: str) -> Optional[object]:
        return self.instances.get(f"{class_name}/{config_name}")

    def clear(self) -> None:
        with self._lock:
            self.workflows.clear()
            self.steps.clear()
            self.classes.clear()
            self.instances.clear()


REGISTRY = Registry()
