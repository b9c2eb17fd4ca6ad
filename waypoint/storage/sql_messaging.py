"""SQL for messages, events and streams (both backends)."""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from typing import Any, Optional

from waypoint.storage.errors import NotFoundError
from waypoint.storage.protocol import cancel_key, done_key, event_key, message_key
from waypoint.storage.records import (
    EventWrite,
    NewMessage,
    Received,
    RecordOutcome,
    StepRecord,
    StreamWrite,
)
from waypoint.storage.sql_base import (
    RECORD_COLUMNS,
    CallerCursor,
    Cursor,
    Params,
    SqlCore,
    record_params,
)

# The channels DBOS processes LISTEN on for events and streams (payload "<workflow>::<key>").
_DBOS_CHANNELS = {"e": "dbos_workflow_events_channel", "s": "dbos_streams_channel"}


def value_params(w: EventWrite) -> Params:
    return {
        "wf": w.workflow_id,
        "key": w.key,
        "value": w.value,
        "ser": w.serialization,
        "fid": w.function_id,
    }


# One message's columns as statement parameters (``m_``: a checkpoint's share the dict), and
# as a tuple in this order (``message_values``).
MESSAGE_KEYS = ("m_id", "m_dest", "m_topic", "m_msg", "m_ser")
message_values: Callable[[NewMessage], tuple[Any, ...]] = operator.attrgetter(
    "message_uuid", "destination_id", "topic", "message", "serialization"
)


def message_params(m: NewMessage) -> Params:
    return dict(zip(MESSAGE_KEYS, message_values(m), strict=True))


def key_workflows(keys: Sequence[str]) -> tuple[list[str], list[str], list[str]]:
    """The workflows that ``ready_keys`` reads for ``keys``: destinations of messages,
    workflows whose events, and workflows whose status. A key's workflow ID may itself
    hold ``::``: every split is a candidate (a wrong one finds nothing that matches)."""
    dests: dict[str, None] = {}
    setters: dict[str, None] = {}
    ended: dict[str, None] = {}
    for key in keys:
        kind, rest = key[:2], key[2:]
        if kind in ("m:", "e:"):
            into = dests if kind == "m:" else setters
            at = rest.find("::")
            while at >= 0:
                into[rest[:at]] = None
                at = rest.find("::", at + 2)
        elif kind in ("d:", "c:"):
            ended[rest] = None
    return list(dests), list(setters), list(ended)


class MessagingSql(SqlCore):
    # -- parked waits ---------------------------------------------------------------------------
    def ready_keys(self, keys: Sequence[str]) -> list[str]:
        """Those of the wake-up ``keys`` whose wait would find what it waits for now: a
        message ``m:`` unconsumed, an event ``e:`` set, a workflow ``d:`` ended or ``c:``
        cancelled. One statement for them all: without notifications, the parked waits of a
        process are polled together (core/parking.py), not each re-run on its own."""
        dests, setters, ended = key_workflows(keys)
        if not (dests or setters or ended):
            return []
        rows = self._all(
            f"SELECT DISTINCT 'm', destination_uuid, topic FROM {self.d.t('notifications')} "
            f"WHERE {self.d.any('destination_uuid', 'dests')} AND consumed = {self.d.false} "
            f"UNION ALL SELECT 'e', workflow_uuid, key FROM {self.d.t('workflow_events')} "
            f"WHERE {self.d.any('workflow_uuid', 'setters')} "
            f"UNION ALL SELECT 's', workflow_uuid, status FROM {self.d.t('workflow_status')} "
            f"WHERE {self.d.any('workflow_uuid', 'ended')} "
            "AND status NOT IN ('PENDING', 'ENQUEUED', 'DELAYED')",
            {
                "dests": self.d.list_param(dests),
                "setters": self.d.list_param(setters),
                "ended": self.d.list_param(ended),
            },
            "ready keys",
        )
        found: set[str] = set()
        for kind, wfid, what in rows:
            if kind == "m":
                found.add(message_key(wfid, what))
            elif kind == "e":
                found.add(event_key(wfid, what))
            else:
                found.add(done_key(wfid))
                if what == "CANCELLED":
                    found.add(cancel_key(wfid))
        return [k for k in dict.fromkeys(keys) if k in found]

    # -- messages -------------------------------------------------------------------------------
    def send_messages(
        self, messages: Sequence[NewMessage], record: Optional[StepRecord]
    ) -> Optional[RecordOutcome]:
        return self._checkpointed(record, lambda cur: self._send_in(cur, messages), "send message")

    def send_on_connection(self, conn: Any, messages: Sequence[NewMessage]) -> None:
        self._send_in(CallerCursor(conn, self.d.render), messages)

    def _send_in(self, cur: Cursor, messages: Sequence[NewMessage]) -> None:
        nt = self.d.t("notifications")
        dests = sorted({m.destination_id for m in messages})
        found = {
            r[0]
            for r in cur.all(
                f"SELECT workflow_uuid FROM {self.d.t('workflow_status')} "
                f"WHERE {self.d.any('workflow_uuid', 'ids')}",
                {"ids": self.d.list_param(dests)},
            )
        }
        missing = [d for d in dests if d not in found]
        if missing:
            raise NotFoundError(missing[0])
        for m in messages:
            cur.exec(
                f"INSERT INTO {nt} (message_uuid, destination_uuid, topic, message, "
                "serialization) VALUES (%(id)s, %(dest)s, %(topic)s, %(msg)s, %(ser)s) "
                "ON CONFLICT (message_uuid) DO NOTHING",
                {
                    "id": m.message_uuid,
                    "dest": m.destination_id,
                    "topic": m.topic,
                    "msg": m.message,
                    "ser": m.serialization,
                },
            )

    def deliver_message(self, message: NewMessage, receiver: StepRecord) -> bool:
        return self._tx(lambda cur: self._deliver_in(cur, message, receiver), "send message")

    def deliver_recorded(
        self, message: NewMessage, receiver: StepRecord, record: StepRecord
    ) -> tuple[RecordOutcome, bool]:
        # A retried send (its checkpoint there, its message too) delivers nothing again:
        # ``_deliver_in`` finds the message sent before.
        def body(cur: Cursor) -> tuple[RecordOutcome, bool]:
            outcome = self._record_in(cur, record)
            return outcome, outcome.accepted and self._deliver_in(cur, message, receiver)

        return self._tx(body, "send message")

    def _deliver_in(self, cur: Cursor, message: NewMessage, receiver: StepRecord) -> bool:
        nt = self.d.t("notifications")
        oo = self.d.t("operation_outputs")
        params = record_params(receiver) | message_params(message)
        wf = cur.one(
            f"SELECT owner_xid FROM {self.d.t('workflow_status')} "
            "WHERE workflow_uuid = %(m_dest)s" + self.d.lock_shared,
            params,
        )
        if wf is None:
            raise NotFoundError(message.destination_id)
        waiting = cur.one(
            f"SELECT 1 FROM {nt} WHERE destination_uuid = %(m_dest)s AND topic = %(m_topic)s "
            f"AND consumed = {self.d.false}",
            params,
        )
        recorded = None
        if wf[0] == receiver.owner_xid and waiting is None:
            recorded = cur.one(
                f"INSERT INTO {oo} ({RECORD_COLUMNS}) VALUES (%(m_dest)s, %(fid)s, "
                "%(fname)s, %(m_msg)s, NULL, NULL, %(started)s, %(completed)s, %(m_ser)s, "
                "%(owner)s, %(app)s) "
                "ON CONFLICT (workflow_uuid, function_id) DO NOTHING RETURNING owner_xid",
                params,
            )
        consumed = self.d.true if recorded is not None else self.d.false
        sent = cur.one(
            f"INSERT INTO {nt} (message_uuid, destination_uuid, topic, message, "
            "serialization, consumed) VALUES (%(m_id)s, %(m_dest)s, %(m_topic)s, %(m_msg)s, "
            f"%(m_ser)s, {consumed}) "
            "ON CONFLICT (message_uuid) DO NOTHING RETURNING message_uuid",
            params,
        )
        if sent is None and recorded is not None:  # sent before: not delivered again
            cur.exec(
                f"DELETE FROM {oo} WHERE workflow_uuid = %(m_dest)s AND function_id = %(fid)s",
                params,
            )
            return False
        return recorded is not None

    def consume_message(
        self, workflow_id: str, topic: str, record: StepRecord, timed_out: bool = False
    ) -> Received:
        nt = self.d.t("notifications")
        oo = self.d.t("operation_outputs")

        def body(cur: Cursor) -> Received:
            wf = cur.one(
                f"SELECT owner_xid FROM {self.d.t('workflow_status')} "
                "WHERE workflow_uuid = %(wf)s" + self.d.lock_shared,
                {"wf": workflow_id},
            )
            if wf is None or wf[0] != record.owner_xid:
                return Received(found=True, accepted=False)
            done = cur.one(
                f"SELECT output, serialization, owner_xid FROM {oo} "
                "WHERE workflow_uuid = %(wf)s AND function_id = %(fid)s",
                {"wf": workflow_id, "fid": record.function_id},
            )
            if done is not None:  # an earlier attempt whose reply was lost, or a delivery
                return Received(True, done[2] == record.owner_xid, done[0], done[1])
            msg = cur.one(
                f"SELECT message_uuid, message, serialization FROM {nt} "
                "WHERE destination_uuid = %(wf)s AND topic = %(topic)s "
                f"AND consumed = {self.d.false} "
                f"ORDER BY created_at_epoch_ms, {self.d.insertion_order} LIMIT 1"
                + self.d.skip_locked,
                {"wf": workflow_id, "topic": topic},
            )
            if msg is None:
                if not timed_out:
                    return Received(found=False, accepted=True)
                outcome = self._record_in(cur, record)  # the receive's None
                return Received(True, outcome.accepted, record.output, record.serialization)
            cur.exec(
                f"UPDATE {nt} SET consumed = {self.d.true} WHERE message_uuid = %(id)s",
                {"id": msg[0]},
            )
            record.output, record.serialization = msg[1], msg[2]
            outcome = self._record_in(cur, record)
            return Received(True, outcome.accepted, msg[1], msg[2])

        return self._tx(body, "receive message")

    def forks_of(self, workflow_ids: Sequence[str]) -> list[str]:
        found: list[str] = []
        frontier = list(workflow_ids)
        seen = set(frontier)
        while frontier:
            rows = self._all(
                f"SELECT workflow_uuid FROM {self.d.t('workflow_status')} "
                f"WHERE {self.d.any('forked_from', 'ids')}",
                {"ids": self.d.list_param(frontier)},
                "find forks",
            )
            frontier = [r[0] for r in rows if r[0] not in seen]
            seen.update(frontier)
            found.extend(frontier)
        return found

    # -- events ---------------------------------------------------------------------------------
    def _write_value(
        self,
        kind: str,
        params: Params,
        statements: Sequence[str],
        record: Optional[StepRecord],
        what: str,
        lock: Optional[str] = None,
    ) -> Optional[RecordOutcome]:
        """Run ``statements`` after the checkpoint (see ``_checkpointed``) and wake whoever
        waits on the value's key (``kind`` is the wake-up key's prefix), in Waypoint and in
        DBOS processes sharing the database (DBOS listens on its own channels). ``lock`` runs
        first, before the checkpoint's shared lock on the workflow row: taking an exclusive
        lock after a shared one would deadlock two concurrent writers."""

        def body(cur: Cursor) -> Optional[RecordOutcome]:
            if lock is not None:
                cur.exec(lock, params)
            outcome = None if record is None else self._record_in(cur, record)
            if outcome is None or outcome.accepted:
                for sql in statements:
                    cur.exec(sql, params)
                self.d.notify_in(
                    cur, f"'{kind}:' || %(wf)s || '::' || %(key)s", params, _DBOS_CHANNELS[kind]
                )
            return outcome

        return self._tx(body, what)

    def set_event(self, event: EventWrite, record: Optional[StepRecord]) -> Optional[RecordOutcome]:
        latest = (
            f"INSERT INTO {self.d.t('workflow_events')} (workflow_uuid, key, value, "
            "serialization) VALUES (%(wf)s, %(key)s, %(value)s, %(ser)s) "
            "ON CONFLICT (workflow_uuid, key) DO UPDATE SET value = excluded.value, "
            "serialization = excluded.serialization"
        )
        history = (
            f"INSERT INTO {self.d.t('workflow_events_history')} (workflow_uuid, function_id, "
            "key, value, serialization) VALUES (%(wf)s, %(fid)s, %(key)s, %(value)s, "
            "%(ser)s) ON CONFLICT (workflow_uuid, function_id, key) DO UPDATE "
            "SET value = excluded.value, serialization = excluded.serialization"
        )
        return self._write_value("e", value_params(event), (latest, history), record, "set event")

    def get_event(self, workflow_id: str, key: str) -> Optional[tuple[str, Optional[str]]]:
        row = self._one(
            f"SELECT value, serialization FROM {self.d.t('workflow_events')} "
            "WHERE workflow_uuid = %(wf)s AND key = %(key)s",
            {"wf": workflow_id, "key": key},
            "get event",
        )
        return (row[0], row[1]) if row else None

    def get_events(self, workflow_id: str) -> dict[str, tuple[str, Optional[str]]]:
        rows = self._all(
            f"SELECT key, value, serialization FROM {self.d.t('workflow_events')} "
            "WHERE workflow_uuid = %(wf)s ORDER BY key",
            {"wf": workflow_id},
            "get events",
        )
        return {r[0]: (r[1], r[2]) for r in rows}

    # -- streams --------------------------------------------------------------------------------
    def write_stream(
        self, value: StreamWrite, record: Optional[StepRecord]
    ) -> Optional[RecordOutcome]:
        st = self.d.t("streams")
        # Writers of one stream queue up on the workflow row, so offsets never collide.
        lock = (
            f"SELECT 1 FROM {self.d.t('workflow_status')} WHERE workflow_uuid = %(wf)s"
            + self.d.lock_exclusive
        )
        append = (
            f'INSERT INTO {st} (workflow_uuid, key, value, "offset", function_id, '
            "serialization, write_key) SELECT %(wf)s, %(key)s, %(value)s, "
            f'COALESCE(MAX("offset"), -1) + 1, %(fid)s, %(ser)s, %(wk)s FROM {st} '
            "WHERE workflow_uuid = %(wf)s AND key = %(key)s "
            "ON CONFLICT (workflow_uuid, key, write_key) WHERE write_key IS NOT NULL DO NOTHING"
        )
        params = {**value_params(value), "wk": value.write_key}
        return self._write_value("s", params, (append,), record, "write stream", lock=lock)

    def read_stream(
        self, workflow_id: str, key: str, offset: int
    ) -> tuple[Optional[tuple[str, Optional[str]]], Optional[str]]:
        row = self._one(
            f"SELECT s.value, s.serialization, w.status FROM {self.d.t('workflow_status')} w "
            f"LEFT JOIN {self.d.t('streams')} s ON s.workflow_uuid = w.workflow_uuid "
            'AND s.key = %(key)s AND s."offset" = %(offset)s WHERE w.workflow_uuid = %(wf)s',
            {"wf": workflow_id, "key": key, "offset": offset},
            "read stream",
        )
        if row is None:
            return None, None
        value = (row[0], row[1]) if row[0] is not None else None
        return value, row[2]
