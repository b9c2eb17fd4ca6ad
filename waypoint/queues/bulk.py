"""Bulk enqueue: many workflows onto one queue in one transaction (``Queue.enqueue_many``,
``DBOSClient.enqueue_many``).

The result is what the same calls to ``enqueue`` one after the other would give (IDs,
deduplication, priorities, partitions, delays, an existing ID returning its workflow), with
one difference that is the point of a batch: it is atomic. Every item is validated and
serialized before anything is written, and a refusal (a bad item, a deduplication conflict
under the ``reject`` policy, an ID that names another workflow) raises and stores none of
the batch.
"""

from __future__ import annotations

import dataclasses
import functools
import operator
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Optional

from waypoint.core.calls import resolve_workflow
from waypoint.core.context import current_run, current_step, start_options
from waypoint.core.effects import Flow, Io
from waypoint.core.engine import Engine
from waypoint.core.ids import new_uuid, random_hex
from waypoint.core.prepare import (
    EnqueueSpec,
    Start,
    check_init,
    prepare,
    split_bound,
    validate_workflow_id,
)
from waypoint.core.registrations import WorkflowInfo, target_of
from waypoint.core.serialization import positional_names
from waypoint.error import DBOSQueueDeduplicatedError
from waypoint.queues.enqueue import (
    EnqueueError,
    EnqueueOptions,
    by_name,
    by_name_context,
    known_queue,
    spec_from_context,
    spec_from_options,
    validate_for_queue,
)
from waypoint.storage.protocol import InitOutcome, NewWorkflow, queue_key, timer_key

# An attempt that loses every ``return-existing`` holder to its completion tries again.
_ATTEMPTS = 5


@dataclass(frozen=True)
class EnqueueCall:
    """One workflow of ``enqueue_many``: its arguments and, if wanted, its own options.
    Options left ``None`` come from the enclosing ``SetEnqueueOptions`` block, as they do
    for ``enqueue``; ``workflow_id`` replaces ``SetWorkflowID`` (which would name only one)."""

    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    workflow_id: Optional[str] = None
    deduplication_id: Optional[str] = None
    priority: Optional[int] = None
    queue_partition_key: Optional[str] = None
    delay_seconds: Optional[float] = None
    app_version: Optional[str] = None
    duplication_policy: Optional[str] = None


def as_call(item: Any, index: int) -> EnqueueCall:
    """An ``EnqueueCall``, or a tuple of positional arguments."""
    if isinstance(item, EnqueueCall):
        call = item
    elif isinstance(item, tuple):
        call = EnqueueCall(args=item)
    else:
        raise EnqueueError(
            f"enqueue_many item {index}: expected an EnqueueCall or a tuple of arguments, "
            f"got {type(item).__name__}"
        )
    if not isinstance(call.args, tuple):
        raise EnqueueError(f"enqueue_many item {index}: args must be a tuple")
    if not isinstance(call.kwargs, Mapping):
        raise EnqueueError(f"enqueue_many item {index}: kwargs must be a mapping")
    return call


def refuse_in_context(what: str) -> None:
    """A batch inside a workflow body would need a checkpoint per child; ``SetWorkflowID``
    names one workflow, not a batch: both are refused before anything is written."""
    if current_run.get() is not None and current_step.get() is None:
        raise EnqueueError(
            f"{what} cannot be called from a workflow body (its children would each need a "
            "checkpoint of the parent): call enqueue for each, or enqueue_many from a step"
        )
    holder = start_options.get().next_id
    if holder is not None and holder.workflow_id is not None:
        raise EnqueueError(
            f"SetWorkflowID does not apply to {what}: give each EnqueueCall its workflow_id"
        )


def _spec(base: EnqueueSpec, call: EnqueueCall) -> EnqueueSpec:
    change: dict[str, Any] = {
        key: value
        for key, value in (
            ("deduplication_id", call.deduplication_id),
            ("priority", call.priority),
            ("partition_key", call.queue_partition_key),
            ("delay_seconds", call.delay_seconds),
            ("app_version", call.app_version),
            ("duplication_policy", call.duplication_policy),
        )
        if value is not None
    }
    return dataclasses.replace(base, **change) if change else base


def _check_call(spec: EnqueueSpec, call: EnqueueCall) -> None:
    delay = spec.delay_seconds
    if delay is not None and (
        isinstance(delay, bool) or not isinstance(delay, (int, float)) or delay < 0
    ):
        raise EnqueueError(f"delay_seconds must be a non-negative number, got {delay!r}")
    if call.workflow_id is not None:
        validate_workflow_id(call.workflow_id)


def prepare_batch(
    eng: Engine,
    base: EnqueueSpec,
    calls: Iterable[Any],
    resolve: Callable[[EnqueueCall], tuple[WorkflowInfo, tuple[Any, ...], dict[str, Any]]],
    check_queue: bool,
) -> list[Start]:
    """Validate and serialize every item (nothing is written); errors name the item."""
    config = known_queue(eng, base.queue_name) if check_queue else None
    starts = []
    template: Optional[Start] = None  # the first item with only arguments of its own
    for index, item in enumerate(calls):
        call = as_call(item, index)
        spec = _spec(base, call)
        plain = spec is base and call.workflow_id is None
        try:
            info, args, kwargs = resolve(call)
            if plain and template is not None and info is template.info:
                st = _like(eng, template, args, kwargs, (new_uuid(), random_hex()))
            else:
                _check_call(spec, call)
                validate_for_queue(spec, config)
                st = prepare(eng, info, args, kwargs, spec, workflow_id=call.workflow_id)
                if plain and info.kind == "function":
                    template = st
        except (EnqueueError, TypeError, ValueError) as exc:
            raise EnqueueError(
                f"enqueue_many item {index}: {getattr(exc, 'message', exc)}"
            ) from exc
        starts.append(st)
    return starts


_NEW_FIELDS = tuple(f.name for f in dataclasses.fields(NewWorkflow))
_new_values = operator.attrgetter(*_NEW_FIELDS)
_AT = {name: _NEW_FIELDS.index(name) for name in ("workflow_id", "owner_xid", "inputs")}
_AT_CREATED = _NEW_FIELDS.index("created_at")
_AT_DELAY = _NEW_FIELDS.index("delay_until_epoch_ms")


def _like(
    eng: Engine,
    template: Start,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    ids: tuple[str, str],
) -> Start:
    """``prepare`` for another item of the batch that differs from ``template`` only in its
    arguments (the same function, options and context): the queue, version, user, timeout
    and attributes ``prepare`` worked out for the first hold for it too. Its arguments are
    checked and encoded; it gets its own ID, run token and creation time. A third of the
    batch's Python time per item otherwise went to recomputing the same row."""
    info = template.info
    _, stored = split_bound(info, args)
    if info.validate_args is not None:
        stored, kwargs = info.validate_args(stored, kwargs)
        stored = tuple(stored)
    inputs = eng.codec.encode_inputs(
        stored,
        kwargs,
        template.serializer,
        names=positional_names(info.func),
        what=f"workflow {info.name!r}",
    )
    now = eng.now_ms()
    first = template.new
    values = list(_new_values(first))  # positional construction: a third of copy.copy's cost
    values[_AT["workflow_id"]], values[_AT["owner_xid"]] = workflow_id, _ = ids
    values[_AT["inputs"]] = inputs
    values[_AT_CREATED] = now
    if first.delay_until_epoch_ms is not None:
        values[_AT_DELAY] = now + (first.delay_until_epoch_ms - first.created_at)
    st = object.__new__(Start)
    st.__dict__.update(template.__dict__)
    st.workflow_id, st.call_args, st.kwargs = workflow_id, stored, kwargs
    st.new = NewWorkflow(*values)
    return st


def enqueue_many_flow(
    eng: Engine, queue_name: str, func: Callable[..., Any], calls: Iterable[Any]
) -> Flow[list[str]]:
    """``Queue.enqueue_many``: registered workflow ``func`` once per item."""
    refuse_in_context("enqueue_many")
    target = target_of(func)
    base = spec_from_context(queue_name)

    def resolve(call: EnqueueCall) -> tuple[WorkflowInfo, tuple[Any, ...], dict[str, Any]]:
        info, args = resolve_workflow(target, call.args)
        return info, args, dict(call.kwargs)

    starts = prepare_batch(eng, base, calls, resolve, check_queue=True)
    return (yield from store_batch(eng, starts))


def by_name_many_flow(
    eng: Engine, options: EnqueueOptions, calls: Iterable[Any], *, check_queue: bool
) -> Flow[list[str]]:
    """``DBOSClient.enqueue_many``: the workflow named in ``options`` once per item; the
    options apply to every item unless the item sets its own."""
    if options.get("workflow_id") is not None:
        raise EnqueueError(
            "enqueue_many takes no workflow_id option: give each EnqueueCall its workflow_id"
        )
    refuse_in_context("enqueue_many")
    base = spec_from_options(options)
    info = by_name(options)

    def resolve(call: EnqueueCall) -> tuple[WorkflowInfo, tuple[Any, ...], dict[str, Any]]:
        return info, call.args, dict(call.kwargs)

    with by_name_context(options, None):
        starts = prepare_batch(eng, base, calls, resolve, check_queue=check_queue)
    return (yield from store_batch(eng, starts))


def store_batch(eng: Engine, starts: list[Start]) -> Flow[list[str]]:
    """Write the prepared rows in one transaction; the workflow ID for each item (with
    ``return-existing``, the holder's)."""
    ids: list[str] = [st.workflow_id for st in starts]
    batch: list[Start] = []
    by_id: dict[str, Start] = {}
    holders: dict[tuple[str, str], str] = {}
    for i, st in enumerate(starts):
        if st.workflow_id in by_id:
            continue  # the same ID again: one workflow, as a second enqueue would find it
        dedup = st.new.deduplication_id
        if dedup is not None:
            key = (st.new.queue_name or "", dedup)
            if key in holders:
                if st.duplication_policy == "return-existing":
                    ids[i] = holders[key]
                    continue
                raise DBOSQueueDeduplicatedError(st.workflow_id, key[0], dedup)
            holders[key] = st.workflow_id
        by_id[st.workflow_id] = st
        batch.append(st)

    def check(outcomes: list[InitOutcome]) -> None:
        for st, init in zip(batch, outcomes, strict=True):
            check_init(st, init)

    stored = not batch
    for _ in range(_ATTEMPTS):
        try:
            yield Io(lambda: eng.store.init_workflows([st.new for st in batch], check))
            stored = True
            break
        except DBOSQueueDeduplicatedError as exc:
            conflicting = by_id.get(exc.workflow_id)
            if conflicting is None or conflicting.duplication_policy != "return-existing":
                raise
            holder = yield Io(
                functools.partial(eng.store.dedup_holder, exc.queue_name, exc.deduplication_id)
            )
            if holder is None:
                continue  # it finished between our insert and our read: try again
            ids = [str(holder) if wid == conflicting.workflow_id else wid for wid in ids]
            batch.remove(conflicting)
            if not batch:
                stored = True
                break
    if not stored:
        first = batch[0]
        raise DBOSQueueDeduplicatedError(
            first.workflow_id, first.new.queue_name or "", first.new.deduplication_id or ""
        )
    for kind in {queue_key if st.new.status == "ENQUEUED" else timer_key for st in batch}:
        eng.wakeups.fire(kind(starts[0].new.queue_name or ""))
    return ids
