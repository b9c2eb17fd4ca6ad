"""The assembly: build the launched runtime, register its services, make it current, recover.

This is the one place that knows every part: the store (opened by URL), the engine
(``core.runtime``), the services that run beside it (the heartbeat, the queue dispatcher, the
cron scheduler, retention) and the extensions packages add to it (the admin server registers
itself from ``waypoint.admin``). The engine knows its services only as ``core.services``
describes them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional

from waypoint._api import metrics, telemetry
from waypoint._api.ops.base import RUNTIME, Ops
from waypoint.core.heartbeat import Heartbeat
from waypoint.core.recovery import recover
from waypoint.core.registrations import REGISTRY
from waypoint.core.retention import Retention
from waypoint.core.runtime import Runtime, set_runtime
from waypoint.core.services import Service
from waypoint.core.settings import RuntimeConfig
from waypoint.core.storage_errors import translated
from waypoint.queues.dispatcher import Dispatcher
from waypoint.scheduling.scheduler import Scheduler
from waypoint.storage.registry import open_url

logger = logging.getLogger("waypoint")


@dataclass(frozen=True)
class ExtensionContext:
    """What an extension gets to build its service: the settings, and the operations on the
    runtime being launched."""

    config: RuntimeConfig
    ops: Ops


# An extension builds a service for a runtime (None: not configured to run).
Extension = Callable[[ExtensionContext], Optional[Service]]
EXTENSIONS: dict[str, Extension] = {}


def register_extension(name: str, factory: Extension) -> None:
    """Add a service to every runtime launched from now on (the admin server does)."""
    EXTENSIONS[name] = factory


def build_runtime(config: RuntimeConfig, app_version: str) -> Runtime:
    with translated():
        store = open_url(
            config.system_database_url,
            schema=config.schema,
            pool_size=config.pool_size,
            application_name=f"waypoint:{config.name}"[:63],
            wait_for_server=True,  # a process relaunched during an outage waits for it
        )
    rt = Runtime(config, app_version, store)
    telemetry.install(rt)
    if config.run_admin_server:  # metrics are served there (GET /metrics), else not kept
        metrics.install(rt)
    dispatcher = Dispatcher(rt)
    rt.dispatch = dispatcher
    scheduler = Scheduler(rt)
    for name, cron, func in REGISTRY.scheduled:
        scheduler.add_decorated(name, cron, func)
    rt.services += [Heartbeat(rt), dispatcher, scheduler]
    if Retention.wanted(rt):
        rt.services.append(Retention(rt))
    context = ExtensionContext(config, RUNTIME)
    for factory in EXTENSIONS.values():
        service = factory(context)
        if service is not None:
            rt.services.append(service)
    return rt


def running_loop() -> Optional[asyncio.AbstractEventLoop]:
    """The event loop running on this thread, if any."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def launch(config: RuntimeConfig, app_version: str) -> Runtime:
    """Start a runtime and recover this executor's unfinished workflows. It is current
    before anything runs, so recovered workflows find it."""
    rt = build_runtime(config, app_version)
    rt.main_loop = running_loop()
    set_runtime(rt)
    try:
        rt.start(recover=lambda: recover(rt, [rt.executor_id]))
    except BaseException:
        set_runtime(None)
        rt.stop()
        raise
    return rt
