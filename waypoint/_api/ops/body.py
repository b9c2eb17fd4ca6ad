"""Operations a workflow body makes about itself: durable sleep, patches, checkpointed waits.
(Its messages, events and streams are in ``messages``.)"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable
from typing import Any, Optional

from waypoint._api.ops.base import Ops
from waypoint.core.calls import workflow_scope
from waypoint.core.context import current_run
from waypoint.core.effects import Flow, Sleep, drive_async
from waypoint.core.patching import patch_flow
from waypoint.core.runtime import get_runtime
from waypoint.core.steps import record, replay, sleep_flow
from waypoint.error import DBOSException


def sleep(ops: Ops, seconds: float) -> Flow[None]:
    """Sleep durably: a recovered workflow sleeps only what remains (outside a workflow, a
    plain sleep)."""
    run = workflow_scope()
    if run is None:
        yield Sleep(seconds)
        return
    yield from sleep_flow(run.runtime, run, seconds)


def _patch(name: str, deprecated: bool) -> Flow[bool]:
    what = "DBOS.deprecate_patch" if deprecated else "DBOS.patch"
    run = current_run.get()
    if run is None:
        raise DBOSException(f"{what} can only be called from a workflow")
    enabled = get_runtime().config.enable_patching
    result: bool = yield from patch_flow(run, name, deprecated, enabled)
    return result


def patch(ops: Ops, patch_name: str) -> Flow[bool]:
    """True where this workflow runs the patched code: always for new workflows, never for
    ones that had passed this point under the old code (needs ``enable_patching``)."""
    return _patch(patch_name, deprecated=False)


def deprecate_patch(ops: Ops, patch_name: str) -> Flow[bool]:
    """True; once no workflow from before the patch remains, the marker is no longer written."""
    return _patch(patch_name, deprecated=True)


async def asyncio_wait(
    fs: Iterable[Awaitable[Any]],
    *,
    timeout: Optional[float] = None,
    return_when: str = asyncio.ALL_COMPLETED,
) -> tuple[set[Any], set[Any]]:
    """``asyncio.wait`` whose outcome (which tasks were done) is checkpointed, so replay
    takes the same branch even if the tasks finish in a different order."""
    tasks: list[asyncio.Future[Any]] = [asyncio.ensure_future(f) for f in fs]
    run = workflow_scope()
    if run is None:
        plain_done, plain_pending = await asyncio.wait(
            tasks, timeout=timeout, return_when=return_when
        )
        return set(plain_done), set(plain_pending)
    rt = run.runtime
    fid = run.next_function_id()
    rec = run.replay.get(fid)
    if rec is not None:
        # Let the tasks start (and take their positions) before the body goes on, as they do
        # while DBOS reads this checkpoint: a task left pending must not take a later one.
        await asyncio.sleep(0)
        indices = set(replay(rt, run, rec, "DBOS.asyncio_wait"))
        done = {t for i, t in enumerate(tasks) if i in indices}
        if done:
            await asyncio.wait(done)
        return done, {t for i, t in enumerate(tasks) if i not in indices}
    started = rt.now_ms()
    done, pending = await asyncio.wait(tasks, timeout=timeout, return_when=return_when)
    indices_done = sorted(i for i, t in enumerate(tasks) if t in done)
    output = rt.codec.encode(indices_done, run.serializer)
    await drive_async(record(rt, run, fid, "DBOS.asyncio_wait", started, output=output))
    return done, pending
