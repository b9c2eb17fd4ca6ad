"""Operations on queues: database-backed definitions, and enqueueing by workflow name."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Optional

from waypoint._api.ops.base import Ops
from waypoint._api.queue import Queue
from waypoint._api.telemetry import fold_otel_context
from waypoint.core.effects import Flow, Io
from waypoint.core.execution import start_flow
from waypoint.error import DBOSException
from waypoint.queues.bulk import by_name_many_flow
from waypoint.queues.enqueue import EnqueueOptions, by_name_start
from waypoint.queues.model import QUEUES, config_from_arguments, config_from_row, row_from_config
from waypoint.storage.protocol import queue_config_key

ON_CONFLICT = ("update_if_latest_version", "always_update", "never_update")


def register_queue(
    ops: Ops,
    name: str,
    *,
    worker_concurrency: Optional[int] = None,
    global_concurrency: Optional[int] = None,
    partition_concurrency: Optional[int] = None,
    partition_worker_concurrency: Optional[int] = None,
    partition_limiter: Optional[dict[str, Any]] = None,
    limiter: Optional[dict[str, Any]] = None,
    polling_interval_sec: float = 1.0,
    on_conflict: Optional[str] = None,
    concurrency: Optional[int] = None,
    priority_enabled: bool = False,
    partition_queue: bool = False,
    application_name: Optional[str] = None,
) -> Flow[Queue]:
    """Create (or update, per ``on_conflict``) a queue stored in the database. The default
    policy is ``update_if_latest_version`` for ``DBOS``, ``always_update`` for a client."""
    policy = on_conflict or ("update_if_latest_version" if ops.strict else "always_update")
    if policy not in ON_CONFLICT:
        raise DBOSException(
            f"on_conflict must be one of {', '.join(repr(p) for p in ON_CONFLICT)}, got "
            f"{on_conflict!r}"
        )
    cfg = config_from_arguments(name, locals())
    eng = ops.engine()
    rt = ops.runtime()
    update = policy == "always_update" or (
        policy == "update_if_latest_version" and (rt is None or rt.is_latest_version())
    )
    owner = application_name or eng.app_name
    row = yield Io(lambda: eng.store.upsert_queue(row_from_config(cfg, owner), update))
    eng.wakeups.fire(queue_config_key(name))
    return Queue.from_row(row, ops)


def retrieve_queue(ops: Ops, name: str) -> Flow[Optional[Queue]]:
    """A queue stored in the database (None if there is none by that name)."""
    eng = ops.engine()
    row = yield Io(lambda: eng.store.get_queue(name))
    return Queue.from_row(row, ops) if row is not None else None


def delete_queue(ops: Ops, name: str) -> Flow[None]:
    """Delete a queue's stored definition (its waiting workflows stay, unclaimed)."""
    eng = ops.engine()
    yield Io(lambda: eng.store.delete_queue(name))
    eng.wakeups.fire(queue_config_key(name))


def list_queues(ops: Ops, *, application_name: Optional[str] = None) -> Flow[list[Queue]]:
    """The queues stored in the database for this application."""
    eng = ops.engine()
    rows = yield Io(lambda: eng.store.list_queues(application_name or eng.app_name))
    return [Queue.from_row(r, ops) for r in rows]


def enqueue_with_options(ops: Ops, options: EnqueueOptions, *args: Any, **kwargs: Any) -> Flow[str]:
    """Enqueue a workflow by name (it may be registered only in another process)."""
    eng = ops.engine()
    options = fold_otel_context(options)  # type: ignore[assignment]
    return start_flow(eng, by_name_start(eng, options, args, kwargs, check_queue=ops.strict))


def enqueue_many_with_options(
    ops: Ops, options: EnqueueOptions, calls: Iterable[Any]
) -> Flow[list[str]]:
    """Enqueue the workflow named in ``options`` once per item of ``calls`` (an
    ``EnqueueCall`` or a tuple of arguments), in one transaction: all are stored or none.
    ``options`` apply to every item that does not set its own; give IDs per item."""
    eng = ops.engine()
    options = fold_otel_context(options)  # type: ignore[assignment]
    return by_name_many_flow(eng, options, calls, check_queue=ops.strict)


def queues_metadata(ops: Ops) -> Flow[list[dict[str, Any]]]:
    """Every queue this process knows (declared in code, or stored), with its limits."""
    eng = ops.engine()
    rows = yield Io(lambda: eng.store.list_queues(eng.app_name))
    configs = {r.name: config_from_row(r) for r in rows}
    for cfg in QUEUES.all():
        configs[cfg.name] = cfg
    out = []
    for name, cfg in sorted(configs.items()):
        item: dict[str, Any] = {"name": name}
        if cfg.global_concurrency is not None:
            item["concurrency"] = cfg.global_concurrency
        if cfg.worker_concurrency is not None:
            item["workerConcurrency"] = cfg.worker_concurrency
        if cfg.limiter is not None:
            item["rateLimit"] = cfg.limiter.as_dict()
        out.append(item)
    return out
