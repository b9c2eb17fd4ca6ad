"""The sharded store's messages, events and streams: each lives with the workflow it belongs
to (a message with its destination), so each call goes to that workflow's shard; a send to
several shards writes the others' messages before its own checkpoint. Split from ``store``
(a mixin of ``ShardedStore``) to keep each module to one job.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Optional

from waypoint.storage.errors import NotFoundError
from waypoint.storage.records import (
    EventWrite,
    NewMessage,
    Received,
    RecordOutcome,
    StepRecord,
    StreamWrite,
)
from waypoint.storage.sharded.routing import Routing

if TYPE_CHECKING:
    from waypoint.storage.sharded.fanout import FanOut
    from waypoint.storage.sharded.topology import Member


class MessagingCalls(Routing):
    if TYPE_CHECKING:
        fan: FanOut[Member]

    def send_messages(
        self, messages: Sequence[NewMessage], record: Optional[StepRecord]
    ) -> Optional[RecordOutcome]:
        """Messages live with their destination. From a workflow whose shard is another, the
        messages are written first (their IDs are deterministic: a retry after a crash
        inserts nothing twice), then the send is checkpointed."""
        dests = sorted({m.destination_id for m in messages})
        groups = self._locate_many(dests)
        placed = {w for ids in groups.values() for w in ids}
        missing = [d for d in dests if d not in placed]
        if missing:
            raise NotFoundError(missing[0])
        home = None if record is None else self._locate(record.workflow_id)
        if record is not None and (home is None or set(groups) - {home.ordinal}):
            # Messages to other shards are written before the checkpoint: a run that is no
            # longer the sender's owner writes none (a run that loses ownership in between
            # wrote them with the IDs its successor will use, so nothing arrives twice).
            fenced = _fenced(self._at(record.workflow_id), record)
            if fenced is not None:
                return fenced
        local: list[NewMessage] = []
        for ordinal, ids in groups.items():
            mine = [m for m in messages if m.destination_id in set(ids)]
            if home is not None and ordinal == home.ordinal:
                local = mine
            else:
                self.topo.member(ordinal).store.send_messages(mine, None)
        if home is None:
            return None
        return home.store.send_messages(local, record)

    def deliver_message(self, message: NewMessage, receiver: StepRecord) -> bool:
        return self._at(message.destination_id).deliver_message(message, receiver)

    def deliver_recorded(
        self, message: NewMessage, receiver: StepRecord, record: StepRecord
    ) -> tuple[RecordOutcome, bool]:
        """One transaction when sender and destination share a shard; otherwise the send as
        ``send_messages`` writes it, not delivered (the receive then reads it as any other)."""
        home = self._locate(record.workflow_id)
        there = self._locate(message.destination_id)
        if home is not None and there is not None and home.ordinal == there.ordinal:
            return home.store.deliver_recorded(message, receiver, record)
        outcome = self.send_messages([message], record)
        assert outcome is not None  # a send with a checkpoint answers for it
        return outcome, False

    def consume_message(
        self, workflow_id: str, topic: str, record: StepRecord, timed_out: bool = False
    ) -> Received:
        return self._at(workflow_id).consume_message(workflow_id, topic, record, timed_out)

    def set_event(self, event: EventWrite, record: Optional[StepRecord]) -> Optional[RecordOutcome]:
        return self._at(event.workflow_id).set_event(event, record)

    def get_event(self, workflow_id: str, key: str) -> Optional[tuple[str, Optional[str]]]:
        return self._at(workflow_id).get_event(workflow_id, key)

    def get_events(self, workflow_id: str) -> dict[str, tuple[str, Optional[str]]]:
        return self._at(workflow_id).get_events(workflow_id)

    def ready_keys(self, keys: Sequence[str]) -> list[str]:
        """Asked of every shard at once: each finds only the rows it holds."""
        if not keys:
            return []
        parts = self.fan.all(lambda m: m.store.ready_keys(keys), self.topo.all(), "ready keys")
        found = {k for _, part in parts for k in part}
        return [k for k in dict.fromkeys(keys) if k in found]

    def write_stream(
        self, value: StreamWrite, record: Optional[StepRecord]
    ) -> Optional[RecordOutcome]:
        return self._at(value.workflow_id).write_stream(value, record)

    def read_stream(
        self, workflow_id: str, key: str, offset: int
    ) -> tuple[Optional[tuple[str, Optional[str]]], Optional[str]]:
        return self._at(workflow_id).read_stream(workflow_id, key, offset)


def _fenced(store: Any, record: StepRecord) -> Optional[RecordOutcome]:
    """The refusal a checkpoint of ``record`` would meet now (None: it would be accepted)."""
    row = store._one(
        f"SELECT status, owner_xid FROM {store.d.t('workflow_status')} "
        "WHERE workflow_uuid = %(wf)s",
        {"wf": record.workflow_id},
        "check sender",
    )
    if row is None or row[1] != record.owner_xid:
        return RecordOutcome(False, row[0] if row else None)
    return None
