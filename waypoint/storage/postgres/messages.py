"""Sending and receiving a message in one statement each (the PostgreSQL store).

A message's trip from ``send`` to the ``recv`` that returns it is a chain of writes, each
waited for: the sender's insert, then the receiver's consumption and checkpoint. The shared
SQL (``storage/sql_messaging.py``) runs each as a transaction of several statements: four
round trips to send (BEGIN, a read of the destinations, one insert per message, COMMIT; six
from a workflow, with the checkpoint's fence and insert), eight to receive (BEGIN, the fence,
the earlier attempt's checkpoint, the message, marking it consumed, the checkpoint's own
fence and insert, COMMIT). Each round trip costs a tenth of a millisecond or more besides the
commits: traced at load 1.4, these 12 and the completion's were 4 of the 4.6 ms a message
took from ``send`` to the sender's ``get_result`` (benchmarks/RESULTS.md).

Here each is one autocommit statement of data-modifying CTEs, with the same checks in the
same order: a send whose destinations are not all there writes nothing (nor its checkpoint);
a send or receive from a workflow is fenced on its owner (the workflow row share-locked until
the commit, as before) and, retried, answers from the checkpoint an earlier attempt wrote; a
receive marks a message consumed only together with the checkpoint that records it, so a
message is never taken unrecorded (the transaction marked it consumed even when a checkpoint
committed meanwhile at its position had won: the message was lost).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import psycopg.errors as pgerr

from waypoint.storage.errors import NotFoundError
from waypoint.storage.records import NewMessage, Received, RecordOutcome, StepRecord
from waypoint.storage.sql_base import RECORD_COLUMNS, RECORD_VALUES, Params, record_params
from waypoint.storage.sql_messaging import MessagingSql

# The checkpoint of a receive: a step record whose output and serialization are the message's.
_RECV_VALUES = (
    "%(wf)s, %(fid)s, %(fname)s, msg.message, NULL, NULL, %(started)s, %(completed)s, "
    "msg.serialization, %(owner)s, %(app)s"
)


class PgMessaging(MessagingSql):
    """``send_messages`` and ``consume_message``, one round trip each."""

    def _setup_messaging(self) -> None:
        ws, oo, nt = (
            self.d.t("workflow_status"),
            self.d.t("operation_outputs"),
            self.d.t("notifications"),
        )
        self._sql_send = {one: self._send_sql(one, recorded=False) for one in (True, False)}
        self._sql_send_recorded = {one: self._send_sql(one, recorded=True) for one in (True, False)}
        # An earlier attempt's checkpoint, else the oldest unconsumed message, then the fence:
        # the workflow row share-locked (its owner cannot change before the commit) only once
        # a message was found (the lateral read runs per message, and a subquery that locks
        # is never flattened into a join), so a read that finds nothing writes nothing, not
        # even a row lock, and costs no commit. The message is marked consumed only if its
        # checkpoint was inserted.
        self._sql_consume = (
            f"WITH seen AS MATERIALIZED (SELECT owner_xid FROM {ws} WHERE workflow_uuid = %(wf)s), "
            "done AS MATERIALIZED (SELECT output, serialization, owner_xid, TRUE AS present "
            f"FROM {oo} WHERE workflow_uuid = %(wf)s AND function_id = %(fid)s), "
            "msg AS MATERIALIZED (SELECT message_uuid, message, serialization "
            f"FROM {nt} WHERE destination_uuid = %(wf)s AND topic = %(topic)s "
            "AND NOT consumed AND (SELECT owner_xid FROM seen) = %(owner)s "
            "AND NOT EXISTS (SELECT 1 FROM done) "
            f"ORDER BY created_at_epoch_ms, {self.d.insertion_order} LIMIT 1"
            f"{self.d.skip_locked}), "
            "fence AS MATERIALIZED (SELECT w.owner_xid FROM msg, LATERAL (SELECT owner_xid "
            f"FROM {ws} WHERE workflow_uuid = %(wf)s AND msg.message_uuid IS NOT NULL "
            "OFFSET 0 FOR SHARE) AS w), "
            f"rec AS (INSERT INTO {oo} ({RECORD_COLUMNS}) SELECT {_RECV_VALUES} FROM msg, fence "
            "WHERE fence.owner_xid = %(owner)s "
            "ON CONFLICT (workflow_uuid, function_id) DO NOTHING RETURNING 1), "
            f"used AS (UPDATE {nt} SET consumed = TRUE FROM msg "
            f"WHERE {nt}.message_uuid = msg.message_uuid AND EXISTS (SELECT 1 FROM rec) "
            "RETURNING 1) "
            "SELECT COALESCE((SELECT owner_xid FROM fence), (SELECT owner_xid FROM seen)), "
            "done.output, done.serialization, done.owner_xid, done.present, msg.message, "
            "msg.serialization, (SELECT count(*) FROM used) "
            "FROM (SELECT 1) AS one LEFT JOIN done ON TRUE LEFT JOIN msg ON TRUE"
        )

    def _send_sql(self, one: bool, *, recorded: bool) -> str:
        """The send of ``one`` message (scalar parameters: psycopg dumps a list at several
        times the cost) or of several (arrays, inserted in their order, hence their seq).

        A missing destination fails the statement on the messages' foreign key (DBOS's
        schema has it too), so nothing of it is written; the destinations are not read
        first: their lookup cost as much to plan as the insert itself."""
        oo, nt = self.d.t("operation_outputs"), self.d.t("notifications")
        if one:  # m_: a checkpoint's parameters share the dict
            rows = "(VALUES (%(m_id)s, %(m_dest)s, %(m_topic)s, %(m_msg)s, %(m_ser)s, 1))"
        else:
            rows = (
                "unnest(%(ids)s::text[], %(to)s::text[], %(topics)s::text[], %(msgs)s::text[], "
                "%(sers)s::text[]) WITH ORDINALITY"
            )
        insert = (
            f"INSERT INTO {nt} (message_uuid, destination_uuid, topic, message, serialization) "
            f"SELECT m.id, m.dest, m.topic, m.msg, m.ser FROM {rows} "
            "AS m(id, dest, topic, msg, ser, n) {when}ORDER BY m.n "
            "ON CONFLICT (message_uuid) DO NOTHING"
        )
        if not recorded:
            return insert.format(when="")
        # From a workflow, with its checkpoint, as ``_checkpointed`` does it: fenced on the
        # sender's owner (its row share-locked), and the messages written again (each once)
        # by a retry of the checkpoint.
        ws = self.d.t("workflow_status")
        when = (
            "WHERE EXISTS (SELECT 1 FROM ok) AND (EXISTS (SELECT 1 FROM rec) "
            "OR EXISTS (SELECT 1 FROM prior WHERE owner_xid = %(owner)s)) "
        )
        return (
            f"WITH wf AS MATERIALIZED (SELECT status, owner_xid FROM {ws} "
            "WHERE workflow_uuid = %(wf)s FOR SHARE), "
            "ok AS MATERIALIZED (SELECT 1 FROM wf WHERE owner_xid = %(owner)s), "
            f"rec AS (INSERT INTO {oo} ({RECORD_COLUMNS}) SELECT {RECORD_VALUES} FROM ok "
            "ON CONFLICT (workflow_uuid, function_id) DO NOTHING RETURNING 1), "
            f"prior AS MATERIALIZED (SELECT owner_xid FROM {oo} "
            "WHERE workflow_uuid = %(wf)s AND function_id = %(fid)s), "
            f"ins AS ({insert.format(when=when)}) "
            "SELECT (SELECT status FROM wf), (SELECT owner_xid FROM wf), "
            "(SELECT count(*) FROM rec), (SELECT count(*) FROM prior), "
            "(SELECT owner_xid FROM prior)"
        )

    def send_messages(
        self, messages: Sequence[NewMessage], record: Optional[StepRecord]
    ) -> Optional[RecordOutcome]:
        params: Params = {}
        one = len(messages) == 1
        if one:
            m = messages[0]
            params.update(
                m_id=m.message_uuid,
                m_dest=m.destination_id,
                m_topic=m.topic,
                m_msg=m.message,
                m_ser=m.serialization,
            )
        else:
            params.update(
                ids=[m.message_uuid for m in messages],
                to=[m.destination_id for m in messages],
                topics=[m.topic for m in messages],
                msgs=[m.message for m in messages],
                sers=[m.serialization for m in messages],
            )
        try:
            if record is None:
                self._exec(self._sql_send[one], params, "send message")
                return None
            params.update(record_params(record))
            for _ in range(3):
                rows = self._all(self._sql_send_recorded[one], params, "send message")
                status, owner, inserted, prior, prior_owner = rows[0]
                if owner != record.owner_xid:
                    return RecordOutcome(False, status)
                if inserted or prior:
                    return RecordOutcome(inserted > 0 or prior_owner == record.owner_xid, status)
                # A checkpoint at this position committed after the statement's snapshot was
                # taken (nothing was written): read again, and answer from it.
            return RecordOutcome(False, None)
        except pgerr.ForeignKeyViolation:
            raise self._missing(messages) from None

    def _missing(self, messages: Sequence[NewMessage]) -> NotFoundError:
        """The error of a send refused for a missing destination: the first one missing."""
        dests = sorted({m.destination_id for m in messages})
        found = {
            r[0]
            for r in self._all(
                f"SELECT workflow_uuid FROM {self.d.t('workflow_status')} "
                "WHERE workflow_uuid = ANY(%(ids)s)",
                {"ids": dests},
                "find destinations",
            )
        }
        return NotFoundError(next((d for d in dests if d not in found), dests[0]))

    def consume_message(self, workflow_id: str, topic: str, record: StepRecord) -> Received:
        params = record_params(record)
        params["topic"] = topic
        for _ in range(3):
            rows = self._all(self._sql_consume, params, "receive message")
            owner, d_output, d_ser, d_owner, earlier, message, m_ser, used = rows[0]
            if owner != record.owner_xid:
                return Received(found=True, accepted=False)
            if earlier:  # consumed by an earlier attempt whose reply was lost
                return Received(True, d_owner == record.owner_xid, d_output, d_ser)
            if message is None:
                return Received(found=False, accepted=True)
            if used:
                record.output, record.serialization = message, m_ser
                return Received(True, True, message, m_ser)
            # A checkpoint at this position committed after the statement's snapshot was
            # taken (the message is left unconsumed): read again, and answer from it.
        return Received(found=True, accepted=False)
