"""What every engine flow needs: a store, a codec, an identity and wake-ups.

The launched runtime (``Runtime``) and the out-of-process client (``DBOSClient``) are both
engines; the runtime adds a worker pool, the runs in flight and its services.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Optional, Protocol

from waypoint.core.lease import Lease
from waypoint.core.observe import Observers
from waypoint.core.serialization import Codec, Serializer
from waypoint.core.signals import Signal
from waypoint.core.storage_errors import guarded
from waypoint.core.wakeups import for_database
from waypoint.storage.protocol import Closeable, Store, cancel_key

logger = logging.getLogger("waypoint")

SAFETY_INTERVAL = 30.0  # re-read period while notifications cover other processes' writes
# The same for a suspended wait (core/suspend.py): re-reading re-runs the workflow. With
# notifications only a lost one needs it (a reconnecting listener wakes every waiter anyway);
# without, the runtime polls every parked wait at once each polling interval (ParkingLot.poll).
SUSPENDED_SAFETY_INTERVAL = 300.0


class LocalRun(Protocol):
    """A run executing in this process, as waiters see it (``core.run.RunEntry``)."""

    done: Signal
    cancel: Signal
    lost: bool
    output: Any
    error: Optional[BaseException]
    task: Any


class Engine:
    def __init__(
        self,
        store: Store,
        *,
        app_name: Optional[str],
        executor_id: str,
        app_version: Optional[str],
        serializer: Optional[Serializer] = None,
        polling_interval_sec: float = 1.0,
        refuse_pickle: bool = False,
    ) -> None:
        self.store = guarded(store)
        self.app_name = app_name
        self.executor_id = executor_id
        self.app_version = app_version
        self.app_id: Optional[str] = None
        self.codec = Codec(serializer, refuse_pickle)
        self.observers = Observers()  # empty unless a runtime's assembly adds some
        self.wakeups = for_database(store.identity)
        self.polling_interval_sec = polling_interval_sec
        # How long a step may trust the last status it saw before re-reading it to notice a
        # cancellation made elsewhere when no notification can tell it (SQLite, listener down).
        self.status_freshness = 0.1
        self._listener: Optional[Closeable] = None
        # The database's line of writes when the listener last connected (see
        # ``Store.history_id``), and what to do when it changed: the database failed over.
        self._history: Optional[str] = None
        self.failover_hooks: list[Callable[[], object]] = []
        # With dead-executor takeover on (heartbeat.py): when this process's runs must
        # re-confirm they still own their workflow before a step body (lease.py).
        self.lease: Optional[Lease] = None

    def now_ms(self) -> int:
        return int(time.time() * 1000)

    def active(self, workflow_id: str, parked: bool = False) -> Optional[LocalRun]:
        """The run of ``workflow_id`` executing in this process, if any (``parked``: a
        suspended one too, see ``Runtime.active``)."""
        return None

    def start_listening(self) -> None:
        self._listener = self.store.listen(self.wakeups.notified, self._listener_connected)

    def stop_listening(self) -> None:
        if self._listener is not None:
            self._listener.stop()
            self._listener = None

    def wait_interval(self) -> float:
        """How long a waiter may sleep before re-reading the database on its own: one polling
        interval, or a slow safety period while notifications reach this process."""
        return SAFETY_INTERVAL if self.notifications else self.polling_interval_sec

    def suspended_wait_interval(self) -> float:
        """How long a suspended wait may go before it is resumed to re-read the database (on
        its own: the runtime's poll of parked waits covers the interval without notifications)."""
        return SUSPENDED_SAFETY_INTERVAL

    @property
    def notifications(self) -> bool:
        """Whether writes made elsewhere reach this process as wake-ups."""
        return self._listener is not None

    def _listener_connected(self) -> None:
        # Anything sent while the listener was away is lost: wake every waiter to re-check.
        self.wakeups.fire_all()
        try:
            history = self.store.history_id()
        except Exception as exc:  # advice only: the next reconnect tries again
            logger.debug("cannot read the database's history id: %s", exc)
            return
        before, self._history = self._history, history
        if before is not None and history is not None and history != before:
            logger.warning(
                "the system database failed over (timeline %s -> %s): writes it acknowledged "
                "just before may be lost if its standby was asynchronous; re-applying this "
                "process's recent workflow completions",
                before,
                history,
            )
            # Off the listener's thread: notifications keep flowing meanwhile.
            threading.Thread(
                target=self._failed_over, name="waypoint-failover", daemon=True
            ).start()

    def _failed_over(self) -> None:
        for hook in self.failover_hooks:
            try:
                hook()
            except Exception as exc:
                logger.warning("after the failover, %s failed: %s", hook, exc)

    def cancel(self, workflow_ids: list[str]) -> list[str]:
        changed = self.store.cancel_workflows(workflow_ids, self.now_ms())
        for wfid in workflow_ids:
            entry = self.active(wfid, parked=True)
            if entry is not None:
                entry.cancel.set()
            self.wakeups.fire(cancel_key(wfid))
        return changed
