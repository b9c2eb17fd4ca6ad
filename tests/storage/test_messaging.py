"""Messages (sent once, consumed first in first out and exactly once), events and streams,
each optionally checkpointed in the same transaction and fenced on the writer's token."""

from __future__ import annotations

import pytest

from tests.storage.build import T0, start, step
from waypoint.storage.errors import NotFoundError
from waypoint.storage.protocol import (
    Completion,
    EventWrite,
    NewMessage,
    Received,
    StepRecord,
    StepRow,
    Store,
    StreamWrite,
)
from waypoint.storage.sharded.store import ShardedStore


def message(n: int, dest: str = "dest", topic: str = "t") -> NewMessage:
    return NewMessage(f"m{n}", dest, topic, f'"{n}"', "json")


def consume(store: Store, fid: int, topic: str = "t", owner: str = "run-dest") -> Received:
    return store.consume_message("dest", topic, step("dest", fid, owner, output=None))


def test_messages_are_consumed_in_order_exactly_once(store: Store) -> None:
    start(store, "dest")
    assert store.send_messages([message(1), message(2)], None) is None
    store.send_messages([message(3)], None)
    store.send_messages([message(9, topic="other")], None)
    got = [consume(store, fid) for fid in range(4)]
    assert [(r.found, r.accepted, r.output) for r in got] == [
        (True, True, '"1"'),
        (True, True, '"2"'),
        (True, True, '"3"'),
        (False, True, None),
    ]
    assert got[0].serialization == "json"
    # The receive is checkpointed with the message it took.
    assert store.load_steps("dest")[1].output == '"2"'
    assert 3 not in store.load_steps("dest")  # nothing taken, nothing recorded
    assert consume(store, 5, topic="other").output == '"9"'


def test_consume_retried_returns_the_same_message(store: Store) -> None:
    start(store, "dest")
    store.send_messages([message(1), message(2)], None)
    first = consume(store, 7)
    retried = consume(store, 7)  # the acknowledgement of the first was lost
    assert (first.output, retried.output, retried.found, retried.accepted) == (
        '"1"',
        '"1"',
        True,
        True,
    )
    assert consume(store, 8).output == '"2"'


def test_consume_is_fenced(store: Store) -> None:
    start(store, "dest")
    store.send_messages([message(1)], None)
    refused = consume(store, 1, owner="run-stale")
    assert refused.found and not refused.accepted
    assert store.load_steps("dest") == {}
    assert consume(store, 1).output == '"1"'  # the message was left for its owner


def test_sent_twice_is_delivered_once(store: Store) -> None:
    start(store, "dest")
    store.send_messages([message(1)], None)
    store.send_messages([message(1)], None)
    assert consume(store, 1).found
    assert not consume(store, 2).found


def test_send_to_a_missing_destination_writes_nothing(store: Store) -> None:
    start(store, "dest")
    start(store, "sender")
    with pytest.raises(NotFoundError) as caught:
        store.send_messages([message(1), message(2, dest="ghost")], step("sender", 1, "run-sender"))
    assert caught.value.workflow_id == "ghost"
    assert not consume(store, 1).found
    assert store.load_steps("sender") == {}


def test_send_outside_a_workflow_to_a_missing_destination_writes_nothing(store: Store) -> None:
    start(store, "dest")
    for batch in ([message(1, dest="ghost")], [message(2), message(3, dest="ghost")]):
        with pytest.raises(NotFoundError) as caught:
            store.send_messages(batch, None)
        assert caught.value.workflow_id == "ghost"
    assert not consume(store, 1).found


def test_send_from_a_workflow_is_checkpointed_and_fenced(store: Store) -> None:
    start(store, "dest")
    start(store, "sender")
    sent = store.send_messages([message(1)], step("sender", 1, "run-sender"))
    assert sent is not None and sent.accepted and sent.workflow_status == "PENDING"
    assert 1 in store.load_steps("sender")
    retried = store.send_messages([message(1)], step("sender", 1, "run-sender"))
    assert retried is not None and retried.accepted
    stale = store.send_messages([message(2)], step("sender", 2, "run-stale"))
    assert stale is not None and not stale.accepted
    assert consume(store, 1).output == '"1"'
    assert not consume(store, 2).found


def receipt(fid: int, n: int, owner: str = "run-dest") -> StepRecord:
    """The checkpoint of a receive waiting at ``fid``, as a send delivering message ``n``
    writes it (core/wakeups.py, WaitingReceive.checkpoint)."""
    return step("dest", fid, owner, function_name="DBOS.recv", output=f'"{n}"')


def test_a_send_delivers_to_a_waiting_receive(store: Store) -> None:
    start(store, "dest")
    assert not consume(store, 1).found  # the receive's read found nothing: it waits
    assert store.deliver_message(message(1), receipt(1, 1))
    # Consumed and recorded as the receive's checkpoint in the send's transaction: the
    # receive's read (were it to make one) answers from it, and nothing is left to take.
    recorded = store.load_steps("dest")[1]
    assert (recorded.function_name, recorded.output) == ("DBOS.recv", '"1"')
    again = consume(store, 1)
    assert (again.found, again.accepted, again.output) == (True, True, '"1"')
    assert not consume(store, 2).found
    # A retry of that send (the same message ID) neither sends nor delivers it again.
    assert not store.deliver_message(message(1), receipt(3, 1))
    assert 3 not in store.load_steps("dest")
    assert not consume(store, 3).found


def test_a_delivery_is_only_a_send_when_the_receive_cannot_take_it(store: Store) -> None:
    start(store, "dest")
    store.send_messages([message(1)], None)
    # An older message waits: it comes first, the new one is only sent.
    assert not store.deliver_message(message(2), receipt(1, 2))
    assert [consume(store, fid).output for fid in (1, 2)] == ['"1"', '"2"']
    # Another run owns the workflow now: sent, not recorded for the stale run.
    assert not store.deliver_message(message(3), receipt(3, 3, owner="run-stale"))
    assert 3 not in store.load_steps("dest")
    assert consume(store, 3).output == '"3"'
    # An answer is recorded at that position already (the receive's own, say): only sent.
    assert not store.deliver_message(message(4), receipt(3, 4))
    assert store.load_steps("dest")[3].output == '"3"'
    assert consume(store, 4).output == '"4"'
    with pytest.raises(NotFoundError):
        store.deliver_message(message(5, dest="ghost"), receipt(5, 5))


def test_a_send_from_a_workflow_delivers_with_its_own_checkpoint(store: Store) -> None:
    start(store, "dest")
    start(store, "sender")
    sender = step("sender", 4, "run-sender", function_name="DBOS.send")
    outcome, delivered = store.deliver_recorded(message(1), receipt(1, 1), sender)
    assert outcome.accepted and outcome.workflow_status == "PENDING"
    assert store.load_steps("sender")[4].function_name == "DBOS.send"
    # One transaction: the send's checkpoint, the message consumed, the receive's checkpoint;
    # across two shards, only sent (the receive takes it by its own read).
    assert delivered == _one_database(store, "sender", "dest")
    assert (1 in store.load_steps("dest")) == delivered
    assert consume(store, 1).output == '"1"' and not consume(store, 2).found
    # The same send retried by its run (its acknowledgement lost): accepted, nothing again.
    outcome, delivered = store.deliver_recorded(message(1), receipt(3, 1), sender)
    assert outcome.accepted and not delivered
    assert 3 not in store.load_steps("dest") and not consume(store, 3).found


def _one_database(store: Store, *workflow_ids: str) -> bool:
    """The workflows live in one database (always, but on a sharded store)."""
    inner = getattr(store, "_store", store)  # the conformance wrapper's store
    if not isinstance(inner, ShardedStore):
        return True
    return len({inner._at(w) for w in workflow_ids}) == 1


def test_a_refused_send_checkpoint_writes_nothing_and_delivers_nothing(store: Store) -> None:
    start(store, "dest")
    start(store, "sender")
    stale = step("sender", 1, "run-stale", function_name="DBOS.send")
    outcome, delivered = store.deliver_recorded(message(1), receipt(1, 1), stale)
    assert not outcome.accepted and not delivered
    assert store.load_steps("sender") == {} and store.load_steps("dest") == {}
    assert not consume(store, 1).found  # not even sent
    # A retry whose first attempt was sent before delivery existed: the message once, no
    # delivery; and one the receive cannot take (an older message waits) is only sent.
    store.send_messages([message(3)], step("sender", 3, "run-sender", function_name="DBOS.send"))
    outcome, delivered = store.deliver_recorded(
        message(3), receipt(1, 3), step("sender", 3, "run-sender", function_name="DBOS.send")
    )
    assert outcome.accepted and not delivered
    outcome, delivered = store.deliver_recorded(
        message(4), receipt(1, 4), step("sender", 4, "run-sender", function_name="DBOS.send")
    )
    assert outcome.accepted and not delivered
    assert [consume(store, fid).output for fid in (1, 2)] == ['"3"', '"4"']
    with pytest.raises(NotFoundError):
        store.deliver_recorded(
            message(5, dest="ghost"),
            receipt(5, 5),
            step("sender", 5, "run-sender", function_name="DBOS.send"),
        )
    assert 5 not in store.load_steps("sender")


def test_a_receive_and_a_delivery_record_the_step_as_given(store: Store) -> None:
    """Each field of the checkpoint a receive or a delivery writes is the step's own (on
    PostgreSQL both pass them positionally: none may land in another's place)."""
    start(store, "dest")
    store.send_messages([message(1)], None)
    taken = step("dest", 1, "run-dest", function_name="DBOS.recv", output=None)
    taken.started_at_epoch_ms, taken.completed_at_epoch_ms = T0 + 10, T0 + 20
    assert store.consume_message("dest", "t", taken).output == '"1"'
    handed = receipt(2, 2)
    handed.started_at_epoch_ms, handed.completed_at_epoch_ms = T0 + 30, T0 + 40
    assert store.deliver_message(message(2), handed)
    rows = store.load_steps("dest")
    assert rows[1] == StepRow(1, "DBOS.recv", '"1"', None, None, T0 + 10, T0 + 20, "json")
    assert rows[2] == StepRow(2, "DBOS.recv", '"2"', None, None, T0 + 30, T0 + 40, "json")
    # A workflow's send delivering, with its own checkpoint.
    start(store, "sender")
    sender = step("sender", 4, "run-sender", function_name="DBOS.send")
    sender.started_at_epoch_ms, sender.completed_at_epoch_ms = T0 + 50, T0 + 60
    handed = receipt(3, 3)
    handed.started_at_epoch_ms, handed.completed_at_epoch_ms = T0 + 70, T0 + 80
    outcome, delivered = store.deliver_recorded(message(3), handed, sender)
    assert outcome.accepted
    sent = StepRow(4, "DBOS.send", '"out-4"', None, None, T0 + 50, T0 + 60, "json")
    assert store.load_steps("sender")[4] == sent
    if delivered:  # not across two shards
        received = StepRow(3, "DBOS.recv", '"3"', None, None, T0 + 70, T0 + 80, "json")
        assert store.load_steps("dest")[3] == received


def test_a_receive_past_its_deadline_records_none_unless_an_answer_came_first(
    store: Store,
) -> None:
    start(store, "dest")
    none = step("dest", 1, "run-dest", function_name="DBOS.recv", output="null")
    timed_out = store.consume_message("dest", "t", none, True)
    assert (timed_out.found, timed_out.accepted, timed_out.output) == (True, True, "null")
    assert store.load_steps("dest")[1].output == "null"
    # A delivery committed first at the next position: the late read returns it, not None.
    assert store.deliver_message(message(2), receipt(2, 2))
    late = step("dest", 2, "run-dest", function_name="DBOS.recv", output="null")
    got = store.consume_message("dest", "t", late, True)
    assert (got.found, got.accepted, got.output) == (True, True, '"2"')
    # A message waiting at the deadline is still taken.
    store.send_messages([message(3)], None)
    last = step("dest", 3, "run-dest", function_name="DBOS.recv", output="null")
    assert store.consume_message("dest", "t", last, True).output == '"3"'


def test_events(store: Store) -> None:
    start(store, "w")
    assert store.get_event("w", "k") is None
    first = store.set_event(EventWrite("w", "k", '"a"', "json", 1), step("w", 1, "run-w"))
    retried = store.set_event(EventWrite("w", "k", '"a"', "json", 1), step("w", 1, "run-w"))
    assert first is not None and first.accepted and retried is not None and retried.accepted
    assert store.get_event("w", "k") == ('"a"', "json")
    # From inside a step: an upsert, not checkpointed.
    assert store.set_event(EventWrite("w", "k", '"b"', "portable", 2), None) is None
    store.set_event(EventWrite("w", "j", '"c"', None, 3), None)
    assert store.get_event("w", "k") == ('"b"', "portable")
    assert store.get_events("w") == {"j": ('"c"', None), "k": ('"b"', "portable")}
    assert store.get_events("missing") == {}
    assert sorted(store.load_steps("w")) == [1]


def test_set_event_is_fenced(store: Store) -> None:
    start(store, "w")
    outcome = store.set_event(EventWrite("w", "k", '"x"', "json", 1), step("w", 1, "run-stale"))
    assert outcome is not None and not outcome.accepted
    assert store.get_event("w", "k") is None


def test_streams(store: Store) -> None:
    start(store, "w")
    assert store.read_stream("w", "s", 0) == (None, "PENDING")
    store.write_stream(StreamWrite("w", "s", '"a"', "json", 1, "wf:1"), step("w", 1, "run-w"))
    store.write_stream(StreamWrite("w", "s", '"b"', "json", 2, "step:2:0"), None)
    store.write_stream(StreamWrite("w", "s", '"b"', "json", 2, "step:2:0"), None)  # a retried write
    store.write_stream(StreamWrite("w", "other", '"z"', None, 3, "step:3:0"), None)
    store.write_stream(StreamWrite("w", "s", '"c"', None, 4, "wf:4"), None)
    assert [store.read_stream("w", "s", i)[0] for i in range(4)] == [
        ('"a"', "json"),
        ('"b"', "json"),
        ('"c"', None),
        None,
    ]
    assert store.read_stream("w", "other", 0) == (('"z"', None), "PENDING")
    store.complete_workflow(Completion("w", "run-w", "SUCCESS", None, None, 1))
    assert store.read_stream("w", "s", 3) == (None, "SUCCESS")
    assert store.read_stream("missing", "s", 0) == (None, None)


def test_write_stream_is_fenced(store: Store) -> None:
    start(store, "w")
    outcome = store.write_stream(
        StreamWrite("w", "s", '"x"', "json", 1, "wf:1"), step("w", 1, "run-stale")
    )
    assert outcome is not None and not outcome.accepted
    assert store.read_stream("w", "s", 0) == (None, "PENDING")


def test_ready_keys_finds_what_parked_waits_wait_for_in_one_read(store: Store) -> None:
    """Without notifications a process polls its parked waits' keys together: a message
    unconsumed on the topic, an event set, a workflow ended or cancelled."""
    for wf in ("dest", "a::b", "setter", "ended", "cancelled", "running"):
        start(store, wf)
    store.send_messages([message(1), message(2, dest="a::b", topic="x::y")], None)
    store.send_messages([message(3, topic="taken")], None)
    consume(store, 1, topic="taken")
    store.set_event(EventWrite("setter", "k", '"v"', "json", 1), None)
    store.complete_workflow(Completion("ended", "run-ended", "SUCCESS", '"ok"', None, 1))
    store.cancel_workflows(["cancelled"], 1)
    keys = [
        "m:dest::t",  # a message waits
        "m:dest::other",  # not on this topic
        "m:dest::taken",  # consumed already
        "m:a::b::x::y",  # IDs and topics holding "::"
        "e:setter::k",
        "e:setter::nope",
        "d:ended",
        "c:ended",  # ended, not cancelled
        "d:cancelled",
        "c:cancelled",
        "d:running",
        "c:running",
        "m:missing::t",
        "q:some-queue",  # not a wait's key
    ]
    assert store.ready_keys(keys) == [
        "m:dest::t",
        "m:a::b::x::y",
        "e:setter::k",
        "d:ended",
        "d:cancelled",
        "c:cancelled",
    ]
    assert store.ready_keys([]) == []
    assert store.ready_keys(["q:x"]) == []
