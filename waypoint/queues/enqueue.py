"""Enqueueing: turn a queue name plus options into an ``EnqueueSpec`` (validated before
anything is written) and run the flow that writes the ENQUEUED (or DELAYED) row."""

from __future__ import annotations

import dataclasses
import logging
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Optional, TypedDict

from waypoint.core.calls import resolve_workflow
from waypoint.core.context import UNSET, NextWorkflowID, current_auth, start_options
from waypoint.core.effects import Flow
from waypoint.core.engine import Engine
from waypoint.core.execution import start_flow
from waypoint.core.prepare import EnqueueSpec, Start, prepare, validate_workflow_id
from waypoint.core.registrations import REGISTRY, WorkflowInfo, target_of
from waypoint.core.types import INTERNAL_QUEUE_NAME, Auth, WorkflowSerializationFormat
from waypoint.error import DBOSException
from waypoint.queues.model import QUEUES, QueueConfig, QueueConfigError, config_from_row

logger = logging.getLogger("waypoint")

MAX_PRIORITY = 2**31 - 1


class EnqueueOptions(TypedDict, total=False):
    """Options for enqueueing a workflow by name (``enqueue_workflow_with_options``, clients)."""

    workflow_name: str
    queue_name: str
    workflow_id: str
    app_version: str
    workflow_timeout: float
    delay_seconds: float
    deduplication_id: str
    duplication_policy: str
    priority: int
    max_recovery_attempts: int
    queue_partition_key: str
    authenticated_user: str
    authenticated_roles: list[str]
    serialization_type: WorkflowSerializationFormat
    class_name: str
    instance_name: str
    attributes: dict[str, Any]
    application_name: str
    otel_context: Any  # an OpenTelemetry Context: the workflow joins its trace


class EnqueueError(DBOSException, ValueError):
    """An enqueue was asked for with options that cannot work; nothing was written."""


def check_priority(priority: Any) -> None:
    if priority is not None and (
        isinstance(priority, bool)
        or not isinstance(priority, int)
        or not 1 <= priority <= MAX_PRIORITY
    ):
        raise EnqueueError(
            f"priority must be an integer from 1 to {MAX_PRIORITY}, got {priority!r}"
        )


def check_duplication_policy(
    policy: Optional[str], queue_name: Optional[str], deduplication_id: Optional[str]
) -> None:
    """'return-existing' returns the workflow holding the deduplication ID on the queue:
    without both there is nothing to return."""
    if policy is None or policy == "reject":
        return
    if policy != "return-existing":
        raise EnqueueError(
            f"Invalid duplication_policy {policy}. Must be either 'reject' or 'return-existing'."
        )
    if queue_name is None:
        raise EnqueueError(
            "duplication_policy 'return-existing' requires a queue. It is only supported when "
            "enqueueing a workflow onto a queue."
        )
    if deduplication_id is None:
        raise EnqueueError("duplication_policy 'return-existing' requires a deduplication_id.")


def spec_from_context(queue_name: str) -> EnqueueSpec:
    """Queue options from an enclosing ``SetEnqueueOptions`` block."""
    opts = start_options.get()
    return EnqueueSpec(
        queue_name=queue_name,
        deduplication_id=opts.deduplication_id,
        priority=opts.priority,
        partition_key=opts.queue_partition_key,
        delay_seconds=opts.delay_seconds,
        app_version=opts.app_version,
        duplication_policy=opts.duplication_policy,
    )


def spec_from_options(options: EnqueueOptions) -> EnqueueSpec:
    unknown = set(options) - set(EnqueueOptions.__annotations__)
    if unknown:
        raise EnqueueError(f"unknown enqueue options: {', '.join(sorted(unknown))}")
    for key in ("workflow_name", "queue_name"):
        if not isinstance(options.get(key), str) or not str(options.get(key)).strip():
            raise EnqueueError(f"enqueue options need a non-empty {key!r}")
    if "workflow_id" in options and options["workflow_id"] is not None:
        validate_workflow_id(options["workflow_id"])
    timeout = options.get("workflow_timeout")
    if timeout is not None and (not isinstance(timeout, (int, float)) or timeout <= 0):
        raise EnqueueError(
            f"workflow_timeout must be a positive number of seconds, got {timeout!r}"
        )
    delay = options.get("delay_seconds")
    if delay is not None and (not isinstance(delay, (int, float)) or delay < 0):
        raise EnqueueError(f"delay_seconds must be a non-negative number, got {delay!r}")
    policy = options.get("duplication_policy")
    check_duplication_policy(policy, options["queue_name"], options.get("deduplication_id"))
    check_priority(options.get("priority"))
    return EnqueueSpec(
        queue_name=options["queue_name"],
        deduplication_id=options.get("deduplication_id"),
        priority=options.get("priority"),
        partition_key=options.get("queue_partition_key"),
        delay_seconds=delay,
        app_version=options.get("app_version"),
        duplication_policy=policy,
        versioned=False,
        config_name=options.get("instance_name"),
        timeout_sec=timeout,
    )


def validate_for_queue(spec: EnqueueSpec, config: Optional[QueueConfig]) -> None:
    """Reject options the queue cannot honour, before anything is written."""
    check_priority(spec.priority)
    check_duplication_policy(spec.duplication_policy, spec.queue_name, spec.deduplication_id)
    if spec.deduplication_id is not None and not isinstance(spec.deduplication_id, str):
        raise EnqueueError("deduplication_id must be a string")
    # DBOS's wording.
    no_dedup = "Deduplication is not supported for partitioned queues"
    if config is None:
        if spec.partition_key is not None and spec.deduplication_id is not None:
            raise EnqueueError(no_dedup)
        return
    name = config.name
    if config.partitioned:
        if spec.partition_key is None:
            raise EnqueueError(
                f"A workflow cannot be enqueued on partitioned queue {name} without a partition key"
            )
        if spec.deduplication_id is not None:
            raise EnqueueError(no_dedup)
    elif spec.partition_key is not None:
        raise EnqueueError(
            "You can only use a partition key on a partition-enabled queue. Key "
            f"{spec.partition_key} was used with non-partitioned queue {name}"
        )


def find_queue(engine: Engine, name: str) -> Optional[QueueConfig]:
    """The queue's config: declared in code here, else its database row (None: unknown)."""
    cfg = QUEUES.get(name)
    if cfg is not None:
        return cfg
    row = engine.store.get_queue(name)
    return config_from_row(row) if row is not None else None


def queue_limited(engine: Engine, name: str) -> Optional[bool]:
    """Whether the queue counts limits across processes; None: nobody declared or
    registered it where this engine can see (a sharded store must then assume it does)."""
    if name == INTERNAL_QUEUE_NAME:
        return False
    cfg = find_queue(engine, name)
    return cfg.shared_limits if cfg is not None else None


# Per engine (a launch, a client): the undeclared queues already named in the log.
_UNDECLARED_WARNED: weakref.WeakKeyDictionary[Engine, set[str]] = weakref.WeakKeyDictionary()


def known_queue(engine: Engine, name: str) -> Optional[QueueConfig]:
    """The queue's limits, to check the enqueue against. A queue nobody declared or
    registered (yet) is accepted, as DBOS accepts it: its workflows wait until a process
    declares it. That is said once per queue, so a misspelt name does not go unnoticed."""
    if not isinstance(name, str) or not name:
        raise QueueConfigError("a queue name must be a non-empty string")
    cfg = find_queue(engine, name)
    warned = _UNDECLARED_WARNED.setdefault(engine, set())
    if cfg is None and name not in warned:
        warned.add(name)
        logger.warning(
            "queue %r is not declared here nor registered in the database (yet): its "
            "workflows wait until a process declares it (Queue(%r, ...) or "
            "DBOS.register_queue)",
            name,
            name,
        )
    return cfg


def by_name(options: EnqueueOptions) -> WorkflowInfo:
    """A stand-in registration for a workflow this process may not have (enqueue by name)."""
    name = options["workflow_name"]
    registered = REGISTRY.workflows.get(name)
    fmt = options.get("serialization_type")
    if fmt is None and registered is not None:
        fmt = registered.serialization
    # Arguments given by name never include self/cls: the instance is named instead.
    return WorkflowInfo(
        name=name,
        func=_not_here,
        is_async=False,
        max_recovery_attempts=None,
        serialization=fmt,
        validate_args=None,
        kind="function",
        class_name=options.get("class_name")
        or (registered.class_name if registered is not None else None),
    )


def _not_here(*args: Any, **kwargs: Any) -> Any:
    raise DBOSException("this workflow is not registered in this process")


# -- the enqueue flows --------------------------------------------------------------------------


def enqueue_flow(
    eng: Engine,
    queue_name: str,
    func: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Flow[str]:
    """Enqueue a registered workflow (or step) with the options of the enclosing blocks."""
    spec = spec_from_context(queue_name)
    validate_for_queue(spec, known_queue(eng, queue_name))
    info, args = resolve_workflow(target_of(func), args)
    return (yield from start_flow(eng, prepare(eng, info, args, kwargs, spec)))


def by_name_start(
    eng: Engine,
    options: EnqueueOptions,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    check_queue: bool,
) -> Start:
    """Prepare an enqueue by workflow name (the function may live in another process)."""
    spec = spec_from_options(options)
    validate_for_queue(spec, known_queue(eng, spec.queue_name) if check_queue else None)
    info = by_name(options)
    with by_name_context(options, options.get("workflow_id")):
        return prepare(eng, info, args, kwargs, spec)


@contextmanager
def by_name_context(options: EnqueueOptions, workflow_id: Optional[str]) -> Iterator[None]:
    """The workflow ID, attributes and authentication ``options`` give, as the context
    ``prepare`` reads them from."""
    holder = NextWorkflowID(workflow_id) if workflow_id is not None else None
    token = start_options.set(
        dataclasses.replace(
            start_options.get(),
            next_id=holder,
            attributes=options.get("attributes", UNSET),
        )
    )
    auth_token = None
    if options.get("authenticated_user") is not None or options.get("authenticated_roles"):
        auth_token = current_auth.set(
            Auth(options.get("authenticated_user"), options.get("authenticated_roles"))
        )
    try:
        yield
    finally:
        start_options.reset(token)
        if auth_token is not None:
            current_auth.reset(auth_token)
