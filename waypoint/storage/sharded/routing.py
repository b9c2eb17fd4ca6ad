"""Routing a call to the shard that holds what it names, and creating workflows there.

Placement (see docs/operations/sharding.md):
- a top-level workflow: a hash of its ID over the active shards;
- an enqueued workflow (ENQUEUED or DELAYED on a queue): its queue's home shard, so a
  queue's limits, priority, partitions and deduplication are one database's;
- a child started directly (a ChildLink, not queued): its parent's shard, so the parent's
  step and the child's row commit together, as on one database;
- a fork: its original's shard (its checkpoints are copied inside one database).
Whatever the path, the ID's placement marker decides: an ID placed before stays there.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Optional, TypeVar

from waypoint.storage.errors import OwnershipLostError
from waypoint.storage.postgres.group_commit import GroupCommitter
from waypoint.storage.postgres.store import PostgresStore
from waypoint.storage.records import (
    ChildLink,
    InitOutcome,
    NewWorkflow,
    StepRecord,
)
from waypoint.storage.sharded import markers
from waypoint.storage.sharded.fanout import FanOut
from waypoint.storage.sharded.topology import Member, Topology
from waypoint.storage.sql_base import existing_outcome

T = TypeVar("T")


class _DryRun(Exception):
    """Raised by a batch's check to read outcomes without writing (a batch across shards)."""


def is_queued(wf: NewWorkflow) -> bool:
    """On a queue (whatever its status: a queued workflow started at once counts toward the
    queue's limits like any other)."""
    return wf.queue_name is not None


class Routing:
    topo: Topology
    fan: FanOut[Member]
    _marker_writers: dict[int, GroupCommitter[tuple[str, int, int], int]]
    _marker_lock: threading.Lock

    # -- finding ---------------------------------------------------------------------------
    def _locate(self, workflow_id: str) -> Optional[Member]:
        """The shard ``workflow_id`` was created on; None if it never was."""
        ordinal = self.topo.cache.get(workflow_id)
        if ordinal is None:
            ordinal = markers.lookup(self.topo.marker_home(workflow_id).store, workflow_id)
            if ordinal is None:
                return None
            self.topo.cache.put(workflow_id, ordinal)
        return self.topo.member(ordinal)

    def _at(self, workflow_id: str) -> PostgresStore:
        """The store to ask about ``workflow_id``; for an unknown ID, its marker shard, which
        answers as one database does about a missing workflow."""
        found = self._locate(workflow_id)
        return (found or self.topo.marker_home(workflow_id)).store

    def _locate_many(self, workflow_ids: Sequence[str]) -> dict[int, list[str]]:
        """Known IDs grouped by shard ordinal (unknown ones left out), in the given order."""
        found: dict[str, int] = {}
        missing: dict[int, list[str]] = defaultdict(list)
        for wfid in dict.fromkeys(workflow_ids):
            ordinal = self.topo.cache.get(wfid)
            if ordinal is None:
                missing[self.topo.marker_home(wfid).ordinal].append(wfid)
            else:
                found[wfid] = ordinal
        for home, ids in missing.items():
            for wfid, ordinal in markers.lookup_many(self.topo.member(home).store, ids).items():
                self.topo.cache.put(wfid, ordinal)
                found[wfid] = ordinal
        grouped: dict[int, list[str]] = defaultdict(list)
        for wfid in dict.fromkeys(workflow_ids):
            if wfid in found:
                grouped[found[wfid]].append(wfid)
        return grouped

    def _by_shard(
        self, workflow_ids: Sequence[str], call: Callable[[PostgresStore, list[str]], T], what: str
    ) -> list[T]:
        groups = self._locate_many(workflow_ids)
        members = [self.topo.member(o) for o in groups]
        return [
            r
            for _, r in self.fan.all(
                lambda m: call(m.store, groups[m.ordinal]), members, what, wait_all=True
            )
        ]

    # -- placing -----------------------------------------------------------------------------
    def _target(self, wf: NewWorkflow, link: Optional[ChildLink]) -> Member:
        if is_queued(wf):
            return self.topo.queue_home(str(wf.queue_name))
        if link is not None:
            parent = self._locate(link.parent_workflow_id)
            if parent is None:
                raise OwnershipLostError(link.parent_workflow_id)
            return parent
        return self.topo.new_home(wf.workflow_id)

    def _place(self, workflow_id: str, target: Member, created_at: Optional[int] = None) -> Member:
        """Mark ``workflow_id`` as living on ``target`` unless it lives somewhere already.
        Concurrent placements on one marker shard are written together (group commit), as
        the workflow rows they precede are."""
        markers.check_ids([workflow_id])
        home = self.topo.marker_home(workflow_id)
        ordinal = self._markers_of(home).submit(
            (workflow_id, target.ordinal, created_at or int(time.time() * 1000))
        )
        self.topo.cache.put(workflow_id, ordinal)
        return self.topo.member(ordinal)

    def init_workflow(self, wf: NewWorkflow, link: Optional[ChildLink]) -> InitOutcome:
        target = self._target(wf, link)
        at = self._place(wf.workflow_id, target, wf.created_at)
        if link is None:
            return at.store.init_workflow(wf, None)
        parent = self._at(link.parent_workflow_id)
        if at.store is parent:
            return at.store.init_workflow(wf, link)  # the row and the link commit together
        return self._init_linked_elsewhere(wf, link, at.store, parent)

    def _markers_of(self, home: Member) -> GroupCommitter[tuple[str, int, int], int]:
        with self._marker_lock:
            found = self._marker_writers.get(home.ordinal)
            if found is None:
                store = home.store

                def one(item: tuple[str, int, int]) -> int:
                    return markers.claim_many(store, {item[0]: item[1]}, {item[0]: item[2]})[
                        item[0]
                    ]

                def many(items: list[tuple[str, int, int]]) -> list[int]:
                    placed = markers.claim_many(
                        store, {i[0]: i[1] for i in items}, {i[0]: i[2] for i in items}
                    )
                    return [placed[i[0]] for i in items]

                found = GroupCommitter(one, many, max_leaders=max(1, store.pool_size // 4))
                self._marker_writers[home.ordinal] = found
            return found

    def _init_linked_elsewhere(
        self, wf: NewWorkflow, link: ChildLink, at: PostgresStore, parent: PostgresStore
    ) -> InitOutcome:
        """A child on another shard than its parent (an enqueued child lives on its queue's
        home): check the parent's position, create the child, then record the link. A crash
        in between leaves a child the parent has not linked yet; the parent's next run
        creates the same ID (a child's ID is a function of its parent's), finds it, links it."""
        ws, oo = parent.d.t("workflow_status"), parent.d.t("operation_outputs")
        owner = parent._one(
            f"SELECT owner_xid FROM {ws} WHERE workflow_uuid = %(p)s",
            {"p": link.parent_workflow_id},
            "check parent",
        )
        if owner is None or owner[0] != link.parent_owner_xid:
            raise OwnershipLostError(link.parent_workflow_id)
        linked = parent._one(
            f"SELECT child_workflow_id, function_name, owner_xid FROM {oo} "
            "WHERE workflow_uuid = %(p)s AND function_id = %(f)s",
            {"p": link.parent_workflow_id, "f": link.function_id},
            "read child link",
        )
        if linked is not None and linked[0] != wf.workflow_id:
            outcome = self._existing(at, wf)
            outcome.linked_child_id, outcome.linked_function_name = linked[0], linked[1]
            return outcome
        outcome = at.init_workflow(wf, None)
        recorded = parent.record_step(
            StepRecord(
                workflow_id=link.parent_workflow_id,
                function_id=link.function_id,
                function_name=link.function_name,
                output=None,
                error=None,
                serialization=None,
                owner_xid=link.parent_owner_xid,
                started_at_epoch_ms=link.started_at_epoch_ms,
                completed_at_epoch_ms=link.started_at_epoch_ms,
                child_workflow_id=wf.workflow_id,
                application_name=wf.application_name,
            )
        )
        if not recorded.accepted:
            raise OwnershipLostError(link.parent_workflow_id)
        return outcome

    def _existing(self, store: PostgresStore, wf: NewWorkflow) -> InitOutcome:
        from waypoint.storage.sql_base import EXISTING_COLUMNS

        row = store._one(
            f"SELECT {EXISTING_COLUMNS} FROM {store.d.t('workflow_status')} "
            "WHERE workflow_uuid = %(id)s",
            {"id": wf.workflow_id},
            "read existing workflow",
        )
        if row is None:
            return InitOutcome(created=False, status="MISSING")
        return existing_outcome(row, wf.owner_xid)

    def init_workflows(
        self,
        wfs: Sequence[NewWorkflow],
        check: Optional[Callable[[list[InitOutcome]], None]] = None,
    ) -> list[InitOutcome]:
        """All or none on each shard. A batch whose rows land on several shards (several
        queues, or IDs placed before elsewhere) is first read on each without writing, then
        ``check`` sees every outcome, then each shard's part commits: atomic per shard."""
        if not wfs:
            return []
        if len({wf.workflow_id for wf in wfs}) != len(wfs):
            raise ValueError("init_workflows: the same workflow ID twice in one batch")
        wanted: dict[int, dict[str, int]] = defaultdict(dict)
        for wf in wfs:
            target = self._target(wf, None)
            wanted[self.topo.marker_home(wf.workflow_id).ordinal][wf.workflow_id] = target.ordinal
        placed: dict[str, int] = {}
        created = {wf.workflow_id: wf.created_at for wf in wfs}
        for home, ids in wanted.items():
            placed.update(markers.claim_many(self.topo.member(home).store, ids, created))
        groups: dict[int, list[int]] = defaultdict(list)
        for i, wf in enumerate(wfs):
            self.topo.cache.put(wf.workflow_id, placed[wf.workflow_id])
            groups[placed[wf.workflow_id]].append(i)
        if len(groups) == 1:
            (ordinal,) = groups
            return self.topo.member(ordinal).store.init_workflows(wfs, check)
        out: list[Optional[InitOutcome]] = [None] * len(wfs)
        if check is not None:
            for ordinal, idx in groups.items():
                seen: list[InitOutcome] = []

                def peek(outcomes: list[InitOutcome], seen: list[InitOutcome] = seen) -> None:
                    seen.extend(outcomes)
                    raise _DryRun()

                try:
                    self.topo.member(ordinal).store.init_workflows([wfs[i] for i in idx], peek)
                except _DryRun:
                    pass
                for i, o in zip(idx, seen, strict=True):
                    out[i] = o
            check([o for o in out if o is not None])
        for ordinal, idx in groups.items():
            done = self.topo.member(ordinal).store.init_workflows([wfs[i] for i in idx])
            for i, o in zip(idx, done, strict=True):
                out[i] = o
        return [o for o in out if o is not None]
