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

Here each is one autocommit statement, with the same checks in the same order: a send whose
destinations are not all there writes nothing (nor its checkpoint); a send or receive from a
workflow is fenced on its owner (the workflow row share-locked until the commit, as before)
and, retried, answers from the checkpoint an earlier attempt wrote; a receive marks a message
consumed only together with the checkpoint that records it, so a message is never taken
unrecorded (the transaction marked it consumed even when a checkpoint committed meanwhile at
its position had won: the message was lost). A send from a workflow, or of several messages,
is a statement of data-modifying CTEs; the receive, and the send that delivers a message to
a receive waiting in the sender's process (``deliver_message``: recorded as that receive's
checkpoint and inserted consumed, in the send's transaction, so the receiver's own statement
and commit are off the message's path), call functions (schema version 17) whose plans are
kept: planned at every execution, the receive cost more to plan than to run. A send from a
workflow that delivers writes its own checkpoint in that statement too (``deliver_recorded``,
version 18). These run only in a Waypoint worker, on its current schema; a send outside a
workflow may be a client's on a schema DBOS made, so it stays a plain statement.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Optional

import psycopg.errors as pgerr

from waypoint.storage.errors import NotFoundError
from waypoint.storage.postgres.dialect import positional
from waypoint.storage.records import NewMessage, Received, RecordOutcome, StepRecord
from waypoint.storage.sql_base import (
    RECORD_COLUMNS,
    RECORD_KEYS,
    RECORD_VALUES,
    Params,
    Row,
    record_fields,
    record_params,
    record_values,
)
from waypoint.storage.sql_messaging import (
    MESSAGE_KEYS,
    MessagingSql,
    message_params,
    message_values,
)

# The positional parameters of a delivery and of a receive, in the order of their functions'
# arguments, and what gives their checkpoint's part.
_DELIVER_STEP = ("fid", "fname", "started", "completed", "owner", "app")
_DELIVER_KEYS = (*MESSAGE_KEYS, *_DELIVER_STEP)
# A delivery by a workflow's send: the send's own checkpoint (``s_``) first.
_DELIVER_RECORDED_KEYS = (*(f"s_{key}" for key in RECORD_KEYS), *_DELIVER_KEYS)
_deliver_step = record_fields(*_DELIVER_STEP)
_RECEIVE_HEAD, _RECEIVE_TAIL = ("wf", "fid", "fname"), ("started", "completed", "owner", "app")
_RECEIVE_KEYS = (*_RECEIVE_HEAD, "topic", *_RECEIVE_TAIL, "none", "none_ser")
_receive_head, _receive_tail = record_fields(*_RECEIVE_HEAD), record_fields(*_RECEIVE_TAIL)


class PgMessaging(MessagingSql):
    """``send_messages`` and ``consume_message``, one round trip each."""

    if TYPE_CHECKING:

        def _call(
            self, sql: str, names: Sequence[str], values: Sequence[Any], what: str
        ) -> list[Row]: ...
        def _call_count(
            self, sql: str, names: Sequence[str], values: Sequence[Any], what: str
        ) -> int: ...

    def _setup_messaging(self) -> None:
        # A send outside a workflow is also a client's (DBOSClient), which may drive a schema
        # DBOS made, without Waypoint's functions: a plain statement. One message's, as the
        # delivery and the receive, takes its values positionally (``positional``).
        self._sql_send_one = positional(self._send_sql(True, recorded=False), MESSAGE_KEYS)
        self._sql_send_many = self._send_sql(False, recorded=False)
        self._sql_send_recorded = {one: self._send_sql(one, recorded=True) for one in (True, False)}
        # A delivery and a receive (a Waypoint worker's, on its current schema): functions
        # whose plans are kept (schema version 17).
        self._sql_deliver = positional(
            f"SELECT {self.d.t('waypoint_send')}(%(m_id)s, %(m_dest)s, %(m_topic)s, %(m_msg)s, "
            "%(m_ser)s, %(fid)s::integer, %(fname)s, %(started)s::bigint, "
            "%(completed)s::bigint, %(owner)s, %(app)s)",
            _DELIVER_KEYS,
        )
        self._sql_deliver_recorded = positional(
            f"SELECT r_status, r_owner, r_recorded_by, r_delivered "
            f"FROM {self.d.t('waypoint_send_recorded')}(%(s_wf)s, %(s_fid)s::integer, "
            "%(s_fname)s, %(s_output)s, %(s_error)s, %(s_child)s, %(s_started)s::bigint, "
            "%(s_completed)s::bigint, %(s_ser)s, %(s_owner)s, %(s_app)s, %(m_id)s, %(m_dest)s, "
            "%(m_topic)s, %(m_msg)s, %(m_ser)s, %(fid)s::integer, %(fname)s, "
            "%(started)s::bigint, %(completed)s::bigint, %(owner)s, %(app)s)",
            _DELIVER_RECORDED_KEYS,
        )
        self._sql_receive = positional(
            "SELECT r_owner, r_found, r_output, r_serialization, r_recorded_by "
            f"FROM {self.d.t('waypoint_receive')}(%(wf)s, %(fid)s::integer, %(fname)s, "
            "%(topic)s, %(started)s::bigint, %(completed)s::bigint, %(owner)s, %(app)s, "
            "%(none)s, %(none_ser)s)",
            _RECEIVE_KEYS,
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
        one = len(messages) == 1
        try:
            if record is None and one:
                values = message_values(messages[0])
                self._call_count(self._sql_send_one, MESSAGE_KEYS, values, "send message")
                return None
            params: Params = (
                message_params(messages[0])
                if one
                else {
                    "ids": [m.message_uuid for m in messages],
                    "to": [m.destination_id for m in messages],
                    "topics": [m.topic for m in messages],
                    "msgs": [m.message for m in messages],
                    "sers": [m.serialization for m in messages],
                }
            )
            if record is None:
                self._exec(self._sql_send_many, params, "send message")
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

    def deliver_message(self, message: NewMessage, receiver: StepRecord) -> bool:
        values = (*message_values(message), *_deliver_step(receiver))
        try:
            rows = self._call(self._sql_deliver, _DELIVER_KEYS, values, "send message")
        except pgerr.ForeignKeyViolation:
            raise self._missing([message]) from None
        return bool(rows[0][0])

    def deliver_recorded(
        self, message: NewMessage, receiver: StepRecord, record: StepRecord
    ) -> tuple[RecordOutcome, bool]:
        # The send's own checkpoint, then the delivery's parameters.
        values = (*record_values(record), *message_values(message), *_deliver_step(receiver))
        try:
            status, _owner, recorded_by, delivered = self._call(
                self._sql_deliver_recorded, _DELIVER_RECORDED_KEYS, values, "send message"
            )[0]
        except pgerr.ForeignKeyViolation:
            raise self._missing([message]) from None
        # r_recorded_by is set only while the sender's run owns it (r_owner).
        return RecordOutcome(recorded_by == record.owner_xid, status), bool(delivered)

    def consume_message(
        self, workflow_id: str, topic: str, record: StepRecord, timed_out: bool = False
    ) -> Received:
        values = (
            *_receive_head(record),
            topic,
            *_receive_tail(record),
            record.output if timed_out else None,  # none
            record.serialization if timed_out else None,  # none_ser
        )
        owner, found, output, ser, recorded_by = self._call(
            self._sql_receive, _RECEIVE_KEYS, values, "receive message"
        )[0]
        if owner != record.owner_xid:
            return Received(found=True, accepted=False)
        if not found:
            return Received(found=False, accepted=True)
        if recorded_by == record.owner_xid:
            record.output, record.serialization = output, ser
        return Received(True, recorded_by == record.owner_xid, output, ser)
