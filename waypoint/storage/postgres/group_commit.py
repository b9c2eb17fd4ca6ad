"""Group commit: many threads' writes in one statement and one commit.

The first caller with nothing in flight writes alone, at once, so a lone workflow pays no
added latency. Callers that arrive while ``max_leaders`` writes are in flight queue up;
whoever finishes a write next takes everything queued and writes it as one batch. Under
concurrency this turns N commits into one, which is how throughput goes past the
one-round-trip-per-checkpoint floor of a single connection.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, Optional, TypeVar

In = TypeVar("In")
Out = TypeVar("Out")


class _Slot(Generic[In, Out]):
    __slots__ = ("done", "error", "item", "result")

    def __init__(self, item: In) -> None:
        self.item = item
        self.done = threading.Event()
        self.result: Optional[Out] = None
        self.error: Optional[BaseException] = None


class GroupCommitter(Generic[In, Out]):
    def __init__(
        self,
        write_one: Callable[[In], Out],
        write_many: Callable[[list[In]], list[Out]],
        *,
        max_leaders: int = 2,
        max_batch: int = 256,
    ) -> None:
        self._write_one = write_one
        self._write_many = write_many
        self._max_leaders = max(1, max_leaders)
        self._max_batch = max_batch
        self._lock = threading.Lock()
        self._queue: list[_Slot[In, Out]] = []
        self._leaders = 0

    def submit(self, item: In) -> Out:
        with self._lock:
            if self._leaders < self._max_leaders:
                self._leaders += 1
                lead = True
            else:
                slot: _Slot[In, Out] = _Slot(item)
                self._queue.append(slot)
                lead = False
        if not lead:
            slot.done.wait()
            if slot.error is not None:
                raise slot.error
            return slot.result  # type: ignore[return-value]
        try:
            result = self._write_one(item)
        finally:
            self._drain()
        return result

    def _drain(self) -> None:
        """While holding a leader seat, write whatever queued up, then give the seat back."""
        while True:
            with self._lock:
                if not self._queue:
                    self._leaders -= 1
                    return
                batch = self._queue[: self._max_batch]
                del self._queue[: self._max_batch]
            if len(batch) > 1:
                try:
                    results = self._write_many([s.item for s in batch])
                except Exception:
                    # One bad item must not fail its neighbours: write them one by one so
                    # each caller gets its own outcome.
                    pass_through = batch
                else:
                    for s, r in zip(batch, results, strict=True):
                        s.result = r
                        s.done.set()
                    continue
            else:
                pass_through = batch
            for s in pass_through:
                try:
                    s.result = self._write_one(s.item)
                except BaseException as exc:
                    s.error = exc
                s.done.set()
