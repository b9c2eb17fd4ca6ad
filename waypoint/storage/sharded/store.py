"""``ShardedStore``: the storage contract over several PostgreSQL shards.

Single-workflow calls go to the workflow's shard (``routing``); calls about many workflows
are grouped by shard; listings and counts fan out and merge (``merge``); fleet state
(executors, schedules, the queues table, versions, fingerprints) lives on the catalog shard,
so one row per schedule, executor or queue exists cluster-wide; recovery, retention and
delayed work fan out to every shard.
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from functools import partial
from typing import Any, Optional, Union

from waypoint.storage.backend import StoreOptions
from waypoint.storage.errors import (
    AlreadyExistsError,
    NotFoundError,
    UnsupportedError,
)
from waypoint.storage.postgres.faults import when_reachable
from waypoint.storage.protocol import Closeable
from waypoint.storage.records import (
    INTERNAL_QUEUE_NAME,
    AgeBucket,
    ClaimRequest,
    Completion,
    DebounceUpdate,
    EventHistoryRow,
    ForkRequest,
    ListFilter,
    MessageRow,
    NewMessage,
    NewWorkflow,
    Outcome,
    RecordOutcome,
    Recovered,
    RecoveryRequest,
    RetentionRequest,
    StepRecord,
    StepRow,
    StreamRow,
    Throughput,
    WorkflowRow,
)
from waypoint.storage.sharded import catalog, markers, merge
from waypoint.storage.sharded.fanout import FanOut
from waypoint.storage.sharded.fleet import FleetCalls
from waypoint.storage.sharded.messaging import MessagingCalls
from waypoint.storage.sharded.retention import drop_orphan_markers
from waypoint.storage.sharded.topology import Member, Topology

_NO_CALLER_CONNECTION = (
    "{what} on the caller's own connection is not available with system_database_shards: a "
    "connection reaches one shard, and the workflow's shard is decided by its placement; "
    "call it without a connection (its own transaction) instead"
)


class _Listeners:
    def __init__(self, parts: list[Closeable]) -> None:
        self.parts = parts

    def stop(self) -> None:
        for p in self.parts:
            p.stop()


class ShardedStore(FleetCalls, MessagingCalls):
    dialect = "postgresql"

    def __init__(
        self, urls: Sequence[str], options: StoreOptions, shard_timeout_s: float = 5.0
    ) -> None:
        self.topo = Topology(urls, options)
        self.options = options
        self.identity = "shards:" + ",".join(s.identity for s in self.topo.configured)
        self.fan: FanOut[Member] = FanOut(
            lambda m: m.name, shard_timeout_s, workers=max(8, 4 * len(urls))
        )
        self._rotation = itertools.count()
        self._late: dict[tuple[str, int], Future[list[WorkflowRow]]] = {}
        self._late_lock = threading.Lock()
        self._marker_writers = {}
        self._marker_lock = threading.Lock()

    # -- lifecycle ---------------------------------------------------------------------------
    def open(self) -> None:
        self.topo.open()

    def close(self) -> None:
        self.fan.close()
        for m in {id(s): s for s in self._stores()}.values():
            m.close()

    def _stores(self) -> list[Any]:
        return [*self.topo.configured, *(m.store for m in self.topo.members.values())]

    def listen(
        self, on_notify: Callable[[str, str], None], on_connect: Callable[[], None]
    ) -> Optional[Closeable]:
        parts: list[Closeable] = []
        try:
            for m in self.topo.all():
                part = m.store.listen(on_notify, on_connect)
                if part is not None:
                    parts.append(part)
        except BaseException:
            _Listeners(parts).stop()  # a launch that fails leaves no listener running
            raise
        return _Listeners(parts)

    def ping(self) -> None:
        self.fan.all(lambda m: m.store.ping(), self.topo.all(), "ping", wait_all=True)

    def ping_once(self) -> None:
        for s in self.topo.configured:
            s.ping_once()
        self.topo.load()

    def history_id(self) -> Optional[str]:
        parts = self.fan.all(
            lambda m: m.store.history_id(), self.topo.all(), "history", wait_all=True
        )
        return "|".join(f"{m.ordinal}:{h or '-'}" for m, h in parts)

    # -- schema --------------------------------------------------------------------------------
    def migrate(self) -> None:
        for s in self.topo.configured:
            s.migrate()

        def found() -> None:
            catalog.found(self.topo.urls, self.options.schema)
            self.topo.forget_places()
            self.topo.load()

        self._when_reachable(found, "found or read the shard catalog")

    def verify_schema(self) -> None:
        for s in self.topo.configured:
            s.verify_schema()
        self._when_reachable(self.topo.load, "read the shard catalog")

    def _when_reachable(self, call: Callable[[], None], what: str) -> None:
        """The catalog's connections (outside the shards' pools) wait as each shard's do."""
        when_reachable(call, what, self.identity, self.options.wait_for_server)

    def schema_version(self) -> int:
        return min(s.schema_version() for s in self.topo.configured)

    def grant(self, role: str) -> None:
        for s in self.topo.configured:
            s.grant(role)

    def drop(self) -> None:
        for s in self.topo.configured:
            s.drop()
        self.topo.forget_places()

    def truncate_all(self) -> None:
        for m in self.topo.all():
            m.store.truncate_all()
            markers.delete_all(m.store)
        self.topo.cache = type(self.topo.cache)(self.topo.cache.capacity)

    # -- workflows -----------------------------------------------------------------------------
    def insert_on_connection(self, conn: Any, wf: NewWorkflow) -> None:
        raise UnsupportedError(_NO_CALLER_CONNECTION.format(what="enqueueing"))

    def send_on_connection(self, conn: Any, messages: Sequence[NewMessage]) -> None:
        raise UnsupportedError(_NO_CALLER_CONNECTION.format(what="sending"))

    def complete_workflow(self, done: Completion) -> bool:
        return self._at(done.workflow_id).complete_workflow(done)

    def get_workflow(self, workflow_id: str) -> Optional[WorkflowRow]:
        found = self._at(workflow_id).get_workflow(workflow_id)
        if found is None and self._forget(workflow_id):
            found = self._at(workflow_id).get_workflow(workflow_id)
        return found

    def get_outcome(self, workflow_id: str) -> Optional[Outcome]:
        found = self._at(workflow_id).get_outcome(workflow_id)
        if found is None and self._forget(workflow_id):
            found = self._at(workflow_id).get_outcome(workflow_id)
        return found

    def _forget(self, workflow_id: str) -> bool:
        """Drop a cached placement that found nothing (the ID was deleted, its marker
        removed by retention, and created again elsewhere); True if there was one."""
        if self.topo.cache.get(workflow_id) is None:
            return False
        self.topo.cache.drop(workflow_id)
        return True

    def get_outcomes(self, workflow_ids: Sequence[str]) -> dict[str, Outcome]:
        out: dict[str, Outcome] = {}
        for part in self._by_shard(workflow_ids, lambda s, ids: s.get_outcomes(ids), "outcomes"):
            out.update(part)
        return out

    def list_workflows(self, flt: ListFilter) -> list[WorkflowRow]:
        each = merge.per_shard_filter(flt)
        parts = self.fan.all(
            lambda m: m.store.list_workflows(each), self.topo.all(), "list workflows"
        )
        rows = merge.merge_workflows(flt, [p for _, p in parts])
        for m, part in parts:
            for r in part:
                self.topo.cache.put(r.workflow_id, m.ordinal)
        return rows

    def cancel_workflows(self, workflow_ids: Sequence[str], now_ms: int) -> list[str]:
        done = set().union(
            *self._by_shard(
                workflow_ids, lambda s, ids: set(s.cancel_workflows(ids, now_ms)), "cancel"
            )
        )
        return [w for w in dict.fromkeys(workflow_ids) if w in done]

    def children_of(self, workflow_ids: Sequence[str]) -> list[str]:
        # Direct children live with their parent, enqueued ones on their queue's home.
        parts = self.fan.all(
            lambda m: m.store.children_of(workflow_ids),
            self.topo.all(),
            "find children",
            wait_all=True,
        )
        return [w for _, p in parts for w in p]

    def queue_write(
        self,
        write: Union[NewWorkflow, StepRecord, Completion],
        done: Callable[[Any, Optional[BaseException]], None],
    ) -> bool:
        """Not queued: finding a workflow's shard may read the catalog."""
        return False

    # -- steps ---------------------------------------------------------------------------------
    def record_step(self, rec: StepRecord) -> RecordOutcome:
        return self._at(rec.workflow_id).record_step(rec)

    def load_steps(self, workflow_id: str) -> dict[int, StepRow]:
        return self._at(workflow_id).load_steps(workflow_id)

    def resume_state(self, workflow_id: str) -> tuple[Optional[str], dict[int, StepRow]]:
        return self._at(workflow_id).resume_state(workflow_id)

    def load_steps_many(self, workflow_ids: Sequence[str]) -> dict[str, dict[int, StepRow]]:
        out: dict[str, dict[int, StepRow]] = {}
        for part in self._by_shard(
            workflow_ids, lambda s, ids: s.load_steps_many(ids), "load steps"
        ):
            out.update(part)
        return out

    def list_steps(
        self, workflow_id: str, limit: Optional[int] = None, offset: Optional[int] = None
    ) -> list[StepRow]:
        return self._at(workflow_id).list_steps(workflow_id, limit, offset)

    # -- recovery and dispatch -----------------------------------------------------------------
    def _remember(self, m: Member, rows: Sequence[WorkflowRow]) -> None:
        for r in rows:
            self.topo.cache.put(r.workflow_id, m.ordinal)

    def recover_pending(self, req: RecoveryRequest) -> Recovered:
        # Every shard, however long one takes: a dead executor's work must all come back.
        parts = self.fan.all(
            lambda m: m.store.recover_pending(req), self.topo.all(), "recover", wait_all=True
        )
        out = Recovered([], [])
        for m, part in parts:
            self._remember(m, part.claimed)
            out.workflow_ids.extend(part.workflow_ids)
            out.claimed.extend(part.claimed)
        return out

    def release_runs(
        self, owner_xids: Sequence[str], internal_queue: str, now_ms: int
    ) -> list[str]:
        parts = self.fan.all(
            lambda m: m.store.release_runs(owner_xids, internal_queue, now_ms),
            self.topo.all(),
            "release runs",
            wait_all=True,
        )
        return [w for _, p in parts for w in p]

    def claim(self, req: ClaimRequest, now_ms: int) -> list[WorkflowRow]:
        if req.shared_budget:
            # A queue with shared limits is claimed on its home shard only, where its enqueued
            # work lives: the limits are counted and enforced in one database.
            home = self.topo.queue_home(req.queue_name)
            rows = home.store.claim(req, now_ms)
            self._remember(home, rows)
            return rows
        return self._claim_spread(req, now_ms)

    def _claim_spread(self, req: ClaimRequest, now_ms: int) -> list[WorkflowRow]:
        """A queue without shared limits: its work may be on any shard (resumed, recovered,
        forked). Claim shard by shard from a rotating start, so no shard starves; a shard
        that does not answer in time is skipped and what its claim took is handed out by the
        next claim of this queue (never stranded)."""
        members = self.topo.all()
        start = next(self._rotation) % len(members)
        got: list[WorkflowRow] = []
        for m in members[start:] + members[:start]:
            key = (req.queue_name, m.ordinal)
            with self._late_lock:
                late = self._late.get(key)
                if late is not None:
                    if not late.done():
                        continue
                    del self._late[key]
            if late is not None and late.exception() is None:
                rows = late.result()
                self._remember(m, rows)
                got.extend(rows)
                continue
            remaining = req.limit - len(got)
            if remaining <= 0:
                break
            part = dataclasses.replace(req, limit=remaining)
            future = self.fan.submit(_claimer(part, now_ms), m)
            try:
                rows = future.result(timeout=self.fan.timeout)
            except TimeoutError:
                with self._late_lock:
                    self._late[key] = future
                continue
            if part.retry_in_ms is not None:
                req.retry_in_ms = part.retry_in_ms
            self._remember(m, rows)
            got.extend(rows)
        return got

    def promote_delayed(self, now_ms: int) -> list[str]:
        parts = self.fan.answered(
            lambda m: m.store.promote_delayed(now_ms), self.topo.all(), "promote delayed workflows"
        )
        return sorted({q for _, p in parts for q in p})

    def next_delayed(self) -> Optional[int]:
        parts = self.fan.answered(
            lambda m: m.store.next_delayed(), self.topo.all(), "next delayed workflow"
        )
        due = [d for _, d in parts if d is not None]
        return min(due) if due else None

    def dedup_holder(self, queue_name: str, deduplication_id: str) -> Optional[str]:
        return self.topo.queue_home(queue_name).store.dedup_holder(queue_name, deduplication_id)

    def extend_debounce(self, update: DebounceUpdate) -> Optional[str]:
        return self.topo.queue_home(update.queue_name).store.extend_debounce(update)

    def dead_letter(self, workflow_id: str, recovery_attempts: int, now_ms: int) -> bool:
        return self._at(workflow_id).dead_letter(workflow_id, recovery_attempts, now_ms)

    # -- messages, events, streams: sharded/messaging.py ------------------------------------
    def forks_of(self, workflow_ids: Sequence[str]) -> list[str]:
        # A fork onto a named queue lives at that queue's home, which may be another shard
        # than its original's: ask every shard, level by level, until no new fork is found.
        found: list[str] = []
        seen = set(workflow_ids)
        frontier = list(dict.fromkeys(workflow_ids))
        while frontier:
            parts = self.fan.all(
                partial(_forks_on, ids=frontier), self.topo.all(), "find forks", wait_all=True
            )
            frontier = [w for _, p in parts for w in p if w not in seen]
            frontier = list(dict.fromkeys(frontier))
            seen.update(frontier)
            found.extend(frontier)
        return found

    # -- management ----------------------------------------------------------------------------
    def resume_workflows(
        self,
        workflow_ids: Sequence[str],
        queue_name: str,
        now_ms: int,
        queue_limited: Optional[bool] = None,
    ) -> list[str]:
        groups = self._locate_many(workflow_ids)
        placed = {w for ids in groups.values() for w in ids}
        for wfid in dict.fromkeys(workflow_ids):
            if wfid not in placed:
                raise NotFoundError(wfid)
        if queue_name != INTERNAL_QUEUE_NAME and queue_limited is not False:
            # A queue with limits across processes is claimed at its home, where they are
            # counted (an unlimited queue is claimed on every shard). A workflow cannot move
            # there (every process caches where a workflow lives, and a run may still be
            # writing it), so one living elsewhere is refused, changing nothing; so is one
            # whose queue the caller cannot tell about (a client, a queue declared elsewhere).
            home = self.topo.queue_home(queue_name)
            for ordinal, ids in groups.items():
                if ordinal != home.ordinal:
                    limits = (
                        "has limits" if queue_limited else "may have limits (not declared here)"
                    )
                    raise UnsupportedError(
                        f"cannot resume {ids[0]!r} onto queue {queue_name!r}: the queue {limits}, "
                        f"so it is claimed only at its home shard #{home.ordinal}; the workflow "
                        f"lives on shard #{ordinal}, and a workflow does not move between shards. "
                        "Resume it on the internal queue (no queue_name), or fork it onto the "
                        "queue (a fork is created at the queue's home)"
                    )
        moved: set[str] = set()
        for ordinal, ids in groups.items():
            moved.update(self.topo.member(ordinal).store.resume_workflows(ids, queue_name, now_ms))
        return [w for w in dict.fromkeys(workflow_ids) if w in moved]

    def fork_workflow(self, req: ForkRequest) -> None:
        source = self._locate(req.source_id)
        if source is None:
            raise NotFoundError(req.source_id)
        if source.store.get_outcome(req.source_id) is None:
            raise NotFoundError(req.source_id)
        # A fork onto the internal queue stays with its original (one transaction copies it);
        # onto a named queue it goes to the queue's home, where that queue is claimed and its
        # limits counted: read on the original's shard, written in one transaction there.
        named = req.queue_name != INTERNAL_QUEUE_NAME
        target = self.topo.queue_home(req.queue_name) if named else source
        at = self._place(req.new_id, target, req.now_ms)
        if at is not target:
            raise AlreadyExistsError(f"cannot fork into {req.new_id!r}: that workflow exists")
        if target is source:
            source.store.fork_workflow(req)
        else:
            target.store.create_fork(req, source.store.read_fork_source(req))

    def delete_workflows(self, workflow_ids: Sequence[str]) -> int:
        return sum(self._by_shard(workflow_ids, lambda s, ids: s.delete_workflows(ids), "delete"))

    def set_delay(self, workflow_id: str, delay_until_ms: int) -> bool:
        return self._at(workflow_id).set_delay(workflow_id, delay_until_ms)

    def set_attributes(self, workflow_id: str, attributes: Optional[str]) -> bool:
        return self._at(workflow_id).set_attributes(workflow_id, attributes)

    def garbage_collect(self, req: RetentionRequest) -> int:
        """``rows_threshold`` keeps the newest N across all shards: the cutoff is the
        creation time of the N-th newest of the merged newest N of every shard."""
        cutoff = req.cutoff_epoch_ms
        if req.rows_threshold is not None:
            n = max(1, req.rows_threshold)
            parts = self.fan.all(
                lambda m: _newest_created(m, n), self.topo.all(), "retention cutoff", wait_all=True
            )
            newest = sorted((t for _, p in parts for t in p), reverse=True)
            if len(newest) >= n:
                cutoff = newest[n - 1] if cutoff is None else max(cutoff, newest[n - 1])
            elif cutoff is None:
                return 0
        if cutoff is None:
            return 0
        each = RetentionRequest(cutoff, None, req.application_name, req.batch_size)
        parts2 = self.fan.all(
            lambda m: m.store.garbage_collect(each),
            self.topo.all(),
            "garbage collect",
            wait_all=True,
        )
        # Markers whose workflow is gone (whoever's it was) go too, after the same cutoff.
        drop_orphan_markers(self.topo, cutoff)
        return sum(p for _, p in parts2)

    def active_created_before(self, cutoff_epoch_ms: int) -> list[str]:
        parts = self.fan.answered(
            lambda m: m.store.active_created_before(cutoff_epoch_ms),
            self.topo.all(),
            "find workflows to time out",
        )
        return [w for _, p in parts for w in p]

    # -- what the console reads ----------------------------------------------------------------
    def count_capped(
        self, column: str, values: Sequence[str], application_name: Optional[str], cap: int
    ) -> dict[str, int]:
        parts = self.fan.all(
            lambda m: m.store.count_capped(column, values, application_name, cap),
            self.topo.all(),
            "count workflows",
        )
        return merge.sum_counts((p for _, p in parts), cap)

    def completions_since(self, since_ms: int, application_name: Optional[str]) -> list[Throughput]:
        parts = self.fan.all(
            lambda m: m.store.completions_since(since_ms, application_name),
            self.topo.all(),
            "completions",
        )
        return merge.merge_throughput(p for _, p in parts)

    def age_buckets(
        self, now_ms: int, bands_ms: Sequence[int], application_name: Optional[str]
    ) -> list[AgeBucket]:
        parts = self.fan.all(
            lambda m: m.store.age_buckets(now_ms, bands_ms, application_name),
            self.topo.all(),
            "age buckets",
        )
        return merge.merge_ages(p for _, p in parts)

    def messages_to(self, workflow_id: str, limit: int) -> list[MessageRow]:
        return self._at(workflow_id).messages_to(workflow_id, limit)

    def event_history(self, workflow_id: str, limit: int) -> list[EventHistoryRow]:
        return self._at(workflow_id).event_history(workflow_id, limit)

    def stream_values(self, workflow_id: str, limit: int) -> list[StreamRow]:
        return self._at(workflow_id).stream_values(workflow_id, limit)


def _claimer(req: ClaimRequest, now_ms: int) -> Callable[[Member], list[WorkflowRow]]:
    def call(m: Member) -> list[WorkflowRow]:
        return m.store.claim(req, now_ms)

    return call


def _forks_on(m: Member, ids: list[str]) -> list[str]:
    return m.store.forks_of(ids)


def _newest_created(m: Member, n: int) -> list[int]:
    rows = m.store._all(
        f"SELECT created_at FROM {m.store.d.t('workflow_status')} "
        "ORDER BY created_at DESC LIMIT %(n)s",
        {"n": n},
        "find retention cutoff",
    )
    return [int(r[0]) for r in rows]
