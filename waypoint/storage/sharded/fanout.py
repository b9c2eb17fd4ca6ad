"""Calling several shards at once, without letting a dead one hold up the others.

A member store waits out an outage of its server (``storage.retry``). A call that fans out
must not: it waits at most ``timeout`` seconds for each shard, then either raises naming
the shards that did not answer (reads a caller asked for: listing, counting) or goes on
without them (background work: promoting delayed work, claiming, timeouts), so one shard
down pauses only its own workflows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Generic, TypeVar

from waypoint.storage.errors import StorageError, UnavailableError

logger = logging.getLogger("waypoint")

M = TypeVar("M")
T = TypeVar("T")


class ShardUnavailableError(UnavailableError):
    """Some shards did not answer in time: the message names them."""

    def __init__(self, what: str, shards: Sequence[str]) -> None:
        super().__init__(
            f"{what}: shard{'s' if len(shards) > 1 else ''} {', '.join(shards)} did not answer"
        )
        self.shards = list(shards)


class FanOut(Generic[M]):
    def __init__(self, name_of: Callable[[M], str], timeout: float, workers: int) -> None:
        self.name_of = name_of
        self.timeout = timeout
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="waypoint-shard")

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

    def submit(self, fn: Callable[[M], T], member: M) -> Future[T]:
        return self.pool.submit(fn, member)

    def all(
        self, fn: Callable[[M], T], members: Sequence[M], what: str, *, wait_all: bool = False
    ) -> list[tuple[M, T]]:
        """``fn`` on every member; raises ShardUnavailableError naming those that did not
        answer within the timeout (``wait_all``: waits as long as it takes), or the first
        member's error."""
        if len(members) == 1:
            return [(members[0], fn(members[0]))]
        futures = [(m, self.pool.submit(fn, m)) for m in members]
        wait([f for _, f in futures], timeout=None if wait_all else self.timeout)
        late = [self.name_of(m) for m, f in futures if not f.done()]
        if late:
            raise ShardUnavailableError(what, late)
        return [(m, f.result()) for m, f in futures]

    def answered(self, fn: Callable[[M], T], members: Sequence[M], what: str) -> list[tuple[M, T]]:
        """``fn`` on every member; those that fail or do not answer within the timeout are
        left out (logged): background work goes on with the shards that are up."""
        futures = [(m, self.pool.submit(fn, m)) for m in members]
        wait([f for _, f in futures], timeout=self.timeout)
        out: list[tuple[M, T]] = []
        for m, f in futures:
            if not f.done():
                logger.warning(
                    "%s: shard %s did not answer; going on without it", what, self.name_of(m)
                )
                continue
            exc = f.exception()
            if exc is not None:
                if not isinstance(exc, StorageError):
                    raise exc
                logger.warning("%s: shard %s failed: %s", what, self.name_of(m), exc)
                continue
            out.append((m, f.result()))
        return out
