"""Async workflows park as plain data too (core/suspend.py, core/parking.py), both backends.

A waiting async workflow holds no thread, but its suspended coroutine holds its frames, which
every full garbage collection walks. It suspends like a sync one: its task ends, the run
waits in the runtime's parking lot as plain data, and a new task re-runs it from its
checkpoints on the loop it ran on when what it waits for comes. A side-effect ledger shows
no step runs twice; the values each wait returns are checked.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.integration.test_suspension import Ledger
from waypoint import DBOS, SetWorkflowID
from waypoint.core.runtime import get_runtime

MANY = 8


@pytest.fixture
def config(db_url: str) -> dict[str, Any]:
    return {"name": "waypoint-test", "system_database_url": db_url, "max_executor_threads": 2}


async def wait_for(what: str, predicate: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def test_async_waits_park_as_plain_data_and_resume_on_their_loop(dbos: type[DBOS]) -> None:
    ledger = Ledger()
    loops: dict[str, set[int]] = collections.defaultdict(set)

    @DBOS.step()
    async def mark(tag: str) -> str:
        loops[tag.split(":")[1]].add(id(asyncio.get_running_loop()))
        return ledger.add(tag)

    @DBOS.workflow()
    async def receiver(name: str) -> Any:
        await mark(f"before:{name}")
        got = await DBOS.recv_async("t", timeout_seconds=3600)
        await mark(f"after:{name}")
        return got

    @DBOS.workflow()
    async def sleeper(name: str, wake_at: float) -> float:
        await mark(f"before:{name}")
        await DBOS.sleep_async(max(0.01, wake_at - time.time()))  # never zero: no position
        await mark(f"after:{name}")
        return time.time()

    @DBOS.workflow()
    async def parent(name: str) -> Any:
        await mark(f"before:{name}")
        with SetWorkflowID(f"{name}-child"):
            handle = await DBOS.start_workflow_async(receiver, f"{name}-child")
        got = await handle.get_result()
        await mark(f"after:{name}")
        return f"child:{got}"

    DBOS.launch()
    rt = get_runtime()
    rt.config.wait_suspend_after_sec = 0

    async def main() -> None:
        wake_at = time.time() + 3
        handles: dict[str, Any] = {}
        for i in range(MANY):
            for name, fn, args in (
                (f"r{i}", receiver, ()),
                (f"s{i}", sleeper, (wake_at,)),
                (f"p{i}", parent, ()),
            ):
                with SetWorkflowID(name):
                    handles[name] = await DBOS.start_workflow_async(fn, name, *args)
        # Parked: out of the registry, no task of theirs left on the loop.
        await wait_for("every workflow to be parked", lambda: len(rt.lot) == 4 * MANY)
        assert ledger.count("after:") == 0
        records = list(rt.lot._records.values())
        gc.collect()
        gc.collect()  # a tuple is untracked once what it holds is: the inner ones go first
        assert not any(gc.is_tracked(rec) for rec in records)
        for i in range(MANY):
            await DBOS.send_async(f"r{i}", f"to-r{i}", "t")
            await DBOS.send_async(f"p{i}-child", f"to-p{i}", "t")
        for i in range(MANY):
            assert await handles[f"r{i}"].get_result() == f"to-r{i}"
            assert await handles[f"p{i}"].get_result() == f"child:to-p{i}"
            assert await handles[f"s{i}"].get_result() >= wake_at

    asyncio.run(main())
    assert ledger.count("after:") == 3 * MANY + MANY  # the children too
    assert ledger.twice() == []
    # Each ran all its steps on one loop: the resumed task went back to the loop it ran on.
    assert all(len(ids) == 1 for ids in loops.values()), loops
    assert len(rt.lot) == 0


def test_an_async_run_with_an_operation_on_another_task_does_not_suspend(
    dbos: type[DBOS],
) -> None:
    """A step started on a task of its own may still run when a wait of the body would
    suspend: the re-run would start it a second time. Such a run keeps its coroutine."""
    ledger = Ledger()

    @DBOS.step()
    async def slow(tag: str) -> str:
        ledger.add(tag)
        return tag

    @DBOS.workflow()
    async def mixed() -> Any:
        task = asyncio.create_task(slow("side"))
        got = await DBOS.recv_async("t", timeout_seconds=3600)
        await task
        return got

    DBOS.launch()
    rt = get_runtime()
    rt.config.wait_suspend_after_sec = 0

    async def main() -> None:
        with SetWorkflowID("mixed"):
            handle = await DBOS.start_workflow_async(mixed)
        await wait_for("the side step to run", lambda: ledger.count("side") == 1)
        while len(await DBOS.list_workflow_steps_async("mixed")) < 2:
            await asyncio.sleep(0.02)  # the side step and the recv's deadline
        await asyncio.sleep(0.5)  # a wait that could suspend would have by now
        assert "mixed" not in rt.lot
        await DBOS.send_async("mixed", "hello", "t")
        assert await handle.get_result() == "hello"

    asyncio.run(main())
    assert ledger.twice() == []
