"""Group commit: many threads' writes in one statement and one commit.

The first caller with nothing in flight writes alone, at once, so a lone workflow pays no
added latency. Callers that arrive while ``max_leaders`` writes are in flight queue up;
whoever finishes a write next takes everything queued and writes it as one batch. Under
concurrency this turns N commits into one, which is how throughput goes past the
one-round-trip-per-checkpoint floor of a single connection.

A caller whose own thread waits (``submit``) takes a seat only while fewer than
``max_blocking_leaders`` writes are in flight (all of ``max_leaders`` unless told). Threads
overlap their work with a write in flight by themselves: while one leader waits on the
server, the others run and queue their next writes, so a second write in flight mostly adds
a statement and a commit, which costs the CPU everyone waits for (32 threads of 10-step
workflows: 1 seat ~35 % less CPU per workflow, client and server, than 3; issue 11).
Callers told by callback (an event loop) keep every seat: their loop thread lets a helper
write a batch only once it is idle, so writes in flight overlap the loop's work.

A caller that must not block (a coroutine on an event loop) uses ``queue``: its write joins
the queue with a callback instead of a waiting thread, and whoever writes the batch calls it
once the batch has committed. With a leader seat free, one of the committer's own threads
(at most ``max_leaders``, kept) takes the seat and writes it, alone or with whatever joined
meanwhile, so no thread is held per waiting caller and none is handed over per write.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, Optional, TypeVar

In = TypeVar("In")
Out = TypeVar("Out")

logger = logging.getLogger("waypoint")


# Called with (result, None) or (None, error) on the thread that wrote the batch.
Done = Callable[[Optional[Out], Optional[BaseException]], None]


class _Slot(Generic[In, Out]):
    __slots__ = ("done", "error", "item", "on_done", "result")

    def __init__(self, item: In, on_done: Optional[Done[Out]] = None) -> None:
        self.item = item
        # A waiting thread's lock, held until the answer is in (cheaper to wait on and to
        # release than an Event's condition); none for a caller told by callback.
        self.done: Optional[threading.Lock] = None
        if on_done is None:
            self.done = threading.Lock()
            self.done.acquire()
        self.on_done = on_done
        self.result: Optional[Out] = None
        self.error: Optional[BaseException] = None

    def finish(self) -> None:
        """Answer the caller: only ever after the write carrying its item returned."""
        if self.on_done is None:
            assert self.done is not None
            self.done.release()
            return
        try:
            self.on_done(self.result, self.error)
        except Exception:
            # The caller's own failure (its loop closed, say) must not stop this thread from
            # answering the rest of the batch.
            logger.exception("a group-commit callback failed")


class GroupCommitter(Generic[In, Out]):
    def __init__(
        self,
        write_one: Callable[[In], Out],
        write_many: Callable[[list[In]], list[Out]],
        *,
        max_leaders: int = 2,
        max_blocking_leaders: Optional[int] = None,
        max_batch: int = 256,
    ) -> None:
        self._write_one = write_one
        self._write_many = write_many
        self._max_leaders = max(1, max_leaders)
        blocking = self._max_leaders if max_blocking_leaders is None else max_blocking_leaders
        self._max_blocking = max(1, min(blocking, self._max_leaders))
        self._max_batch = max_batch
        self._lock = threading.Lock()
        self._queue: list[_Slot[In, Out]] = []
        self._leaders = 0
        # Threads that lead for queued callers (``queue``), made on first use.
        self._helpers: Optional[ThreadPoolExecutor] = None

    def submit(self, item: In) -> Out:
        with self._lock:
            if self._leaders < self._max_blocking:
                self._leaders += 1
                lead = True
            else:
                slot: _Slot[In, Out] = _Slot(item)
                self._queue.append(slot)
                lead = False
        if not lead:
            # A leader is in flight (at least one seat is taken): it drains the queue,
            # this slot included, before giving its seat back.
            assert slot.done is not None
            slot.done.acquire()
            if slot.error is not None:
                raise slot.error
            return slot.result  # type: ignore[return-value]
        try:
            result = self._write_one(item)
        finally:
            self._drain()
        return result

    def queue(self, item: In, on_done: Done[Out]) -> None:
        """Queue ``item`` for the next batch without waiting; ``on_done`` is called, on the
        thread that wrote it, once that batch committed (or failed)."""
        with self._lock:
            self._queue.append(_Slot(item, on_done))
            if self._leaders >= self._max_leaders:
                # A leader holds a seat; it gives the seat back only once the queue is
                # empty (under the same lock), so it, or another leader, takes this slot.
                return
            self._leaders += 1
        helpers = self._helpers
        if helpers is None:
            with self._lock:
                if self._helpers is None:
                    self._helpers = ThreadPoolExecutor(
                        self._max_leaders, thread_name_prefix="waypoint-commit"
                    )
                helpers = self._helpers
        try:
            helpers.submit(self._drain)
        except RuntimeError:
            # Closed (the store is closing): the seat is taken and must drain, so that
            # every queued caller is answered (with the closed store's error).
            threading.Thread(target=self._drain, name="waypoint-commit", daemon=True).start()

    def close(self) -> None:
        """Let the helper threads end once their writes are done."""
        with self._lock:
            helpers = self._helpers
        if helpers is not None:
            helpers.shutdown(wait=False)

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
                        s.finish()
                    continue
            else:
                pass_through = batch
            for s in pass_through:
                try:
                    s.result = self._write_one(s.item)
                except BaseException as exc:
                    s.error = exc
                s.finish()
