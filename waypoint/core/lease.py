"""This process's lease on the work it runs, when peers take over silent executors.

With ``dead_executor_recovery_sec`` set, a peer takes this executor's PENDING workflows once
the database has heard no heartbeat from it for that long. A heartbeat sent at (monotonic)
time S therefore means nobody takes over before S + that long: the lease, kept here shorter
than that by a margin. Checkpoints are fenced on the run's token, but a step BODY runs on what
the process last knew: a process frozen past its lease (SIGSTOP, a VM pause, a stalled
machine) may resume with a reply that predates a takeover ("you own it") and run a body a
peer has already run and checkpointed. So before a step body, a run re-confirms that it still
owns its workflow whenever the lease lapsed, or lapsed at any time since the run last knew it
owned the workflow (``stale``): it renews the lease (a heartbeat) and re-reads its token.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

MARGIN = 2 / 3  # of dead_executor_recovery_sec: the lease ends well before a takeover


class Lease:
    def __init__(self, dead_after: float, beat: Callable[[], float]) -> None:
        self.span = dead_after * MARGIN
        self._beat = beat  # writes a heartbeat, calls ``renewed``, returns when it was sent
        self._lock = threading.Lock()
        self.until = -math.inf  # monotonic time the lease ends
        self.last_gap_end = -math.inf  # when the last renewal after a lapse began
        # When a heartbeat found this executor's row gone (a peer took it over): the peer
        # moves the workflows in a second transaction, so until it has (or a span has
        # passed: it died in between) a token read cannot tell a run it still owns its work.
        self.revoked_at = -math.inf

    def renewed(self, began: float, first: bool = False) -> None:
        """A heartbeat sent at ``began`` was written."""
        with self._lock:
            if began >= self.until and not first:
                self.last_gap_end = began
            self.until = max(self.until, began + self.span)

    def revoked(self, at: float) -> None:
        """A heartbeat sent at ``at`` found this executor's row removed by a takeover."""
        with self._lock:
            self.revoked_at = max(self.revoked_at, at)

    def settling(self) -> bool:
        """Whether a takeover of this executor may still be moving its workflows."""
        with self._lock:
            return time.monotonic() - self.revoked_at < self.span

    def renew(self) -> float:
        """Write a heartbeat now; the (monotonic) time it was sent."""
        return self._beat()

    def held_since(self) -> float:
        """A run's ownership, learnt now, may predate a lapse up to a span ago."""
        return time.monotonic() - self.span

    def stale(self, confirmed_at: float) -> bool:
        """Whether a run that last knew it owned its workflow at ``confirmed_at`` must check
        again: the lease lapsed, now or since then."""
        with self._lock:
            return (
                time.monotonic() >= self.until
                or self.last_gap_end > confirmed_at
                or self.revoked_at > confirmed_at
            )
