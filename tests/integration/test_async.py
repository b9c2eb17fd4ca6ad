"""Async workflows and steps share the sync engine (both backends)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from waypoint import DBOS, SetWorkflowID
from waypoint.error import DBOSAwaitedWorkflowCancelledError, DBOSException, DBOSStepTimeoutError


def test_async_workflow_with_gathered_steps(dbos: type[DBOS]) -> None:
    @DBOS.step()
    async def fetch(i: int) -> int:
        await asyncio.sleep(0.01 * (5 - i))  # finish in reverse order
        return i * i

    @DBOS.workflow()
    async def fan() -> list[int]:
        return list(await asyncio.gather(*(fetch(i) for i in range(5))))

    DBOS.launch()

    async def main() -> None:
        with SetWorkflowID("fan"):
            assert await fan() == [0, 1, 4, 9, 16]
        steps = await asyncio.to_thread(DBOS.list_workflow_steps, "fan")
        # Step IDs follow creation order, not completion order, so replay is deterministic.
        assert [(s["function_id"], s["output"]) for s in steps] == [
            (i + 1, i * i) for i in range(5)
        ]
        with SetWorkflowID("fan"):
            assert await fan() == [0, 1, 4, 9, 16]

    asyncio.run(main())


def test_start_workflow_async_and_handle(dbos: type[DBOS]) -> None:
    @DBOS.workflow()
    async def slow_add(a: int, b: int) -> int:
        await DBOS.sleep_async(0.05)
        return a + b

    DBOS.launch()

    async def main() -> None:
        with SetWorkflowID("async-bg"):
            handle = await DBOS.start_workflow_async(slow_add, 2, 3)
        assert (await handle.get_status()).status in ("PENDING", "SUCCESS")
        assert await handle.get_result() == 5
        again = await DBOS.retrieve_workflow_async("async-bg")
        assert await again.get_result() == 5
        assert (await DBOS.get_workflow_status_async("async-bg")).status == "SUCCESS"  # type: ignore[union-attr]

    asyncio.run(main())


def test_async_workflow_started_from_sync_code(dbos: type[DBOS]) -> None:
    @DBOS.workflow()
    async def hello(name: str) -> str:
        await asyncio.sleep(0.01)
        return "hi " + name

    DBOS.launch()
    with SetWorkflowID("sync-start-async"):
        handle = DBOS.start_workflow(hello, "ann")
    assert handle.get_result() == "hi ann"


def test_async_step_timeout(dbos: type[DBOS]) -> None:
    attempts = {"n": 0}

    @DBOS.step(timeout_seconds=0.1, retries_allowed=True, max_attempts=2, interval_seconds=0)
    async def hangs() -> None:
        attempts["n"] += 1
        await asyncio.sleep(10)

    @DBOS.workflow()
    async def wf() -> None:
        await hangs()

    DBOS.launch()

    async def main() -> None:
        start = time.time()
        with SetWorkflowID("step-timeout"), pytest.raises(Exception) as info:
            await wf()
        assert time.time() - start < 3
        assert attempts["n"] == 2
        errors = getattr(info.value, "errors", [])
        assert all(isinstance(e, DBOSStepTimeoutError) for e in errors) and len(errors) == 2

    asyncio.run(main())


def test_sync_only_options_rejected_for_sync_steps(dbos: type[DBOS]) -> None:
    with pytest.raises(DBOSException, match="only supported for async steps"):  # as DBOS

        @DBOS.step(timeout_seconds=1)
        def sync_step() -> None:
            return None


def test_preemptible_step_is_cancelled(dbos: type[DBOS]) -> None:
    @DBOS.step(preemptible=True)
    async def long_io() -> None:
        await asyncio.sleep(30)

    @DBOS.workflow()
    async def wf() -> None:
        await long_io()

    DBOS.launch()

    async def main() -> None:
        with SetWorkflowID("preempt"):
            handle = await DBOS.start_workflow_async(wf)
        await asyncio.sleep(0.2)
        start = time.time()
        await DBOS.cancel_workflow_async("preempt")
        with pytest.raises(DBOSAwaitedWorkflowCancelledError):
            await handle.get_result()
        assert time.time() - start < 3
        steps = await asyncio.to_thread(DBOS.list_workflow_steps, "preempt")
        assert steps == []  # a preempted step is not checkpointed

    asyncio.run(main())


def test_run_step_async(dbos: type[DBOS]) -> None:
    async def double(x: int) -> int:
        return 2 * x

    @DBOS.workflow()
    async def wf() -> Any:
        return await DBOS.run_step_async({"name": "double"}, double, 21)

    DBOS.launch()

    async def main() -> None:
        with SetWorkflowID("rsa"):
            assert await wf() == 42

    asyncio.run(main())
    assert DBOS.list_workflow_steps("rsa")[0]["function_name"] == "double"


def test_no_waypoint_thread_outlives_destroy(dbos: type[DBOS]) -> None:
    """After DBOS.destroy() the I/O threads of async calls end too (a process whose main
    thread returns exits, with no non-daemon Waypoint thread left)."""
    import threading

    @DBOS.workflow()
    async def wf(x: int) -> int:
        return x

    DBOS.launch()

    async def main() -> None:
        handle = await DBOS.start_workflow_async(wf, 1)
        assert await handle.get_result() == 1
        await DBOS.list_workflows_async()

    asyncio.run(main())
    io_threads = [t for t in threading.enumerate() if t.name.startswith("waypoint-io")]
    assert io_threads  # the async calls used them
    DBOS.destroy()
    for t in io_threads:
        t.join(30)
    assert [t.name for t in io_threads if t.is_alive()] == []


def test_async_checkpoints_waiting_for_a_group_commit_hold_no_thread(dbos: type[DBOS]) -> None:
    """Checkpoints of async workflows that wait for a group commit wait as futures: while
    the committing threads are held, the waiting steps occupy no I/O thread (each used to
    hold one, blocked in the group commit, so 32 coroutines needed ~64 threads)."""
    import sys
    import threading

    from waypoint.core.runtime import get_runtime
    from waypoint.storage.records import StepRecord

    @DBOS.step()
    async def step(i: int) -> int:
        return i * 2

    @DBOS.workflow()
    async def work(i: int) -> int:
        started.add(i)
        await go.wait()
        return await step(i)

    DBOS.launch()
    store: Any = get_runtime().store._store  # type: ignore[attr-defined]
    writes = getattr(store, "_writes", None)
    if writes is None:
        pytest.skip("this store does not group its writes (SQLite, shards)")
    gate = threading.Event()
    held: list[str] = []
    alone, together = writes._write_one, writes._write_many

    def holding(batch: list[Any]) -> None:
        ours = [w for w in batch if isinstance(w, StepRecord) and w.workflow_id.startswith("held")]
        if ours:
            held.extend(threading.current_thread().name for _ in ours)
            gate.wait(30)

    writes._write_one = lambda w: (holding([w]), alone(w))[1]
    writes._write_many = lambda ws: (holding(ws), together(ws))[1]
    n = 12
    started: set[int] = set()
    go = asyncio.Event()  # bound to the loop that first waits on it

    def in_group_commit(thread: threading.Thread) -> bool:
        frame = sys._current_frames().get(thread.ident or 0)
        while frame is not None:
            if frame.f_code.co_name == "submit" and "group_commit" in frame.f_code.co_filename:
                return True
            frame = frame.f_back
        return False

    async def one(i: int) -> int:
        with SetWorkflowID(f"held-{i}"):
            return await work(i)

    async def until(condition: Any) -> None:
        deadline = time.monotonic() + 30
        while not condition():
            assert time.monotonic() < deadline, "never reached"
            await asyncio.sleep(0.005)

    async def main() -> list[int]:
        tasks = [asyncio.ensure_future(one(i)) for i in range(n)]
        await until(lambda: len(started) == n)  # every start acknowledged
        go.set()
        # Every checkpoint is inside a held write or queued behind one.
        await until(
            lambda: len(held) + sum(isinstance(s.item, StepRecord) for s in writes._queue) == n
        )
        io_threads = [t for t in threading.enumerate() if t.name.startswith("waypoint-io")]
        assert not [t.name for t in io_threads if in_group_commit(t)]
        assert all(name.startswith("waypoint-commit") for name in held)
        gate.set()
        return list(await asyncio.gather(*tasks))

    assert asyncio.run(main()) == [i * 2 for i in range(n)]
