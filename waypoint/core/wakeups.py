"""In-process wake-ups for anything that waits on the database.

A waiter subscribes to a key *before* it reads the database, then waits on the returned
signal with a timeout of one polling interval. Keys are fired by local writes at once and,
on PostgreSQL, by LISTEN/NOTIFY for writes made elsewhere. A notification is only a hint:
correctness comes from re-reading the tables after every wake-up or timeout, and after the
listener reconnects every waiter is woken, because notifications sent while it was down are
lost.

Keys: ``q:<queue>`` (work enqueued), ``d:<workflow>`` (a workflow finished),
``c:<workflow>`` (cancelled), ``m:<workflow>::<topic>`` (a message arrived),
``e:<workflow>::<key>`` (an event was set), ``s:<workflow>::<key>`` (a stream grew),
``t:<queue>`` (a delayed workflow's timer), ``Q:<queue>`` (a queue's definition changed),
``V:<version>`` (the latest application version changed), ``S:<schedule>`` (a schedule
changed; this process only).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Optional

from waypoint.core.signals import Signal
from waypoint.storage.protocol import (
    DBOS_MESSAGE_CHANNEL,
    NOTIFY_CHANNEL,
    StepRecord,
    message_key,
)


class WaitingReceive:
    """A receive waiting in this process, to which a send from this process may deliver its
    message: the send records it as this receive's checkpoint (``record``, with the message's
    output, serialization and time) and consumes it in its own transaction, then hands the
    message over here before it fires the wake-up, so the receiver returns it without a
    statement of its own. Only a delivery that committed is handed over; whatever else
    happens, the receiver reads the database as before, where the checkpoint at its position
    is the one answer (a delivery, or the receive's own)."""

    __slots__ = ("delivered", "output", "record", "serialization", "settled", "taken")

    def __init__(self, record: StepRecord) -> None:
        self.record = record
        self.taken = False  # a send took it (``Wakeups.take_receive``)
        self.settled = Signal()  # ... and is done with it, delivered or not
        self.delivered = False
        self.output: Optional[str] = None
        self.serialization: Optional[str] = None

    def checkpoint(self, output: str, serialization: Optional[str], now_ms: int) -> StepRecord:
        """The receive's checkpoint with the message a send delivers."""
        return replace(
            self.record, output=output, serialization=serialization, completed_at_epoch_ms=now_ms
        )

    def hand_over(self, output: str, serialization: Optional[str]) -> None:
        """The delivery committed: the receiver returns this message."""
        self.output, self.serialization = output, serialization
        self.delivered = True


class Wakeups:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subs: dict[str, set[Signal]] = {}
        self._hooks: list[tuple[str, Callable[[str], None]]] = []
        self._receives: dict[str, WaitingReceive] = {}

    def subscribe(self, *keys: str) -> Signal:
        """One signal, set when any of ``keys`` fires."""
        sig = Signal()
        with self._lock:
            for key in keys:
                self._subs.setdefault(key, set()).add(sig)
        return sig

    def unsubscribe(self, sig: Signal, *keys: str) -> None:
        with self._lock:
            for key in keys:
                subs = self._subs.get(key)
                if subs is not None:
                    subs.discard(sig)
                    if not subs:
                        del self._subs[key]

    def offer_receive(self, key: str, record: StepRecord) -> Optional[WaitingReceive]:
        """A receive about to wait on message key ``key``, checkpointed as ``record`` if a
        send delivers to it; None if another receive already waits on that key."""
        with self._lock:
            if key in self._receives:
                return None
            waiting = self._receives[key] = WaitingReceive(record)
        return waiting

    def take_receive(self, key: str) -> Optional[WaitingReceive]:
        """The receive waiting on ``key``, for one send to deliver to (no other send can);
        that send sets its ``settled`` signal when it is done."""
        with self._lock:
            waiting = self._receives.pop(key, None)
            if waiting is not None:
                waiting.taken = True
        return waiting

    def withdraw_receive(self, key: str, waiting: WaitingReceive) -> None:
        """The receive stopped waiting: no send takes it any more."""
        with self._lock:
            if self._receives.get(key) is waiting:
                del self._receives[key]

    def add_hook(self, prefix: str, callback: Callable[[str], None]) -> None:
        """Call ``callback(key)`` for every fired key starting with ``prefix`` (and with ``""``
        on ``fire_all``); the dispatcher hooks ``q:`` this way."""
        with self._lock:
            self._hooks.append((prefix, callback))

    def remove_hooks(self, callbacks: Sequence[Callable[[str], None]]) -> None:
        with self._lock:
            self._hooks = [(p, cb) for p, cb in self._hooks if cb not in callbacks]

    def fire(self, key: str) -> None:
        with self._lock:
            subs = self._subs.pop(key, None)
            hooks = [cb for prefix, cb in self._hooks if key.startswith(prefix)]
        if subs:
            for sig in subs:
                sig.set()
        for cb in hooks:
            cb(key)

    def fire_all(self) -> None:
        with self._lock:
            subs, self._subs = self._subs, {}
            hooks = [cb for _, cb in self._hooks]
        for group in subs.values():
            for sig in group:
                sig.set()
        for cb in hooks:
            cb("")

    def notified(self, channel: str, payload: str) -> None:
        """Translate a database notification into a wake-up."""
        if channel == NOTIFY_CHANNEL:
            self.fire(payload)
        elif channel == DBOS_MESSAGE_CHANNEL:
            dest, _, topic = payload.partition("::")
            self.fire(message_key(dest, topic))


_shared: dict[str, Wakeups] = {}
_shared_lock = threading.Lock()


def for_database(key: str) -> Wakeups:
    """One registry per database in this process, so a client and a runtime on the same
    database (or two clients) wake each other without a round trip through the database."""
    with _shared_lock:
        found = _shared.get(key)
        if found is None:
            found = _shared[key] = Wakeups()
        return found
