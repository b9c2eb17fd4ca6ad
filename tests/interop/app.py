"""Worker program of the interop tests, run by DBOS 2.31.1 (the interop venv) or by Waypoint
(the project's venv) on one system database; the tests SIGKILL it and let the other take over.

    python tests/interop/app.py <dbos|waypoint> <db_url> <ledger_path> <mode> [args...]

The same file is the application on both sides, so workflow and step names, queue names and
inputs agree; only the import differs.

Modes:
    start <wfid> [wf]    launch, start ``three_steps`` (or the workflow named) under that ID,
                         send it its message, wait for it and print the outcome
    wait <wfid>...       launch (recovering this executor's PENDING workflows, or dequeuing
                         queued ones) and print the outcomes of the given workflows
    features <prefix>    launch, use every kind of record once (``features``) and print what
                         was read back
    serve <seconds>      launch and serve queues until killed (or the seconds have passed)

Switches come from the environment, never from inputs (inputs are checkpointed):
    INTEROP_BLOCK_STEP   the step of ``three_steps`` whose body hangs after its 'start' row
    DBOS__VMID           the executor ID (the same on both sides, so recovery takes the work)
    DBOS__APPVERSION     the application version (the same on both sides)
    INTEROP_EVERY_SECOND "1": a workflow scheduled every second (``every_second``)

Output: one JSON line, {"pid": ..., "results": {wfid: {"ok": value} | {"error": name}},
"events": {wfid: {key: value}}}.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crash"))

import ledger  # type: ignore[import-not-found]  # tests/crash/ledger.py, stdlib only

IMPL, DB_URL, LEDGER_PATH, MODE = sys.argv[1:5]
ARGS = sys.argv[5:]

if IMPL == "dbos":
    from dbos import DBOS, Debouncer, Queue, SetWorkflowID  # the interop venv
elif IMPL == "waypoint":
    from waypoint import DBOS, Debouncer, Queue, SetWorkflowID
else:
    raise SystemExit(f"unknown implementation {IMPL!r}: expected dbos or waypoint")

LEDGER = ledger.Writer(LEDGER_PATH)
BLOCK_STEP = int(os.environ.get("INTEROP_BLOCK_STEP") or 0)
QUEUE = Queue("interop-q")
TOPIC = "go"


def _body(index: int, value: str) -> str:
    wfid = DBOS.workflow_id or "?"
    LEDGER.step(wfid, index, "start", value)
    if index == BLOCK_STEP:
        while True:  # hangs until the test SIGKILLs this process
            time.sleep(60)
    LEDGER.step(wfid, index, "end", value)
    return f"s{index}({value})"


@DBOS.step()
def step_one(value: str) -> str:
    return _body(1, value)


@DBOS.step()
def step_two(value: str) -> str:
    return _body(2, value)


@DBOS.step()
def step_three(value: str) -> str:
    return _body(3, value)


@DBOS.workflow()
def three_steps(seed: str) -> str:
    """Steps, an event, a message and a durable sleep: what both sides record alike."""
    a = step_one(seed)
    DBOS.set_event("stage", "one")
    message = DBOS.recv(TOPIC, timeout_seconds=120)
    b = step_two(f"{a}+{message}")
    DBOS.sleep(0.01)
    c = step_three(b)
    DBOS.set_event("stage", "done")
    return c


@DBOS.workflow()
def child(value: str) -> str:
    DBOS.set_event("child", value)
    return f"child({value})"


@DBOS.workflow()
def composite(seed: str) -> str:
    """Operations beyond plain steps: a child started and awaited, another's event read, the
    clock, a random ID; then the same steps as ``three_steps``."""
    a = step_one(seed)
    handle = DBOS.start_workflow(child, a)
    result = handle.get_result()
    seen = DBOS.get_event(handle.workflow_id, "child", timeout_seconds=1)
    b = step_two(f"{result}+{seen}")
    DBOS.sleep(0.01)
    return step_three(b)


@DBOS.step(retries_allowed=True, max_attempts=2, interval_seconds=0)
def exhausted(value: str) -> str:
    """Fails every attempt: the workflow gets DBOS's DBOSMaxStepRetriesExceeded, recorded."""
    LEDGER.event(f"exhausted:{DBOS.workflow_id}:{value}")
    raise ValueError(f"no luck with {value}")


@DBOS.workflow()
def operations(seed: str) -> str:
    """Every kind of operation the records cover, then the same steps as ``three_steps``: an
    inline child call, a started child retrieved, its status and listing read, forked and
    resumed, a stream read at an offset, a debounced call, a step started as a workflow
    (``<temp>.echo``), a step out of retries. Step 2 gets what they returned, so a hand-over
    that replays any of them differently shows in the result."""
    me = DBOS.workflow_id or "?"
    a = step_one(seed)
    inline = child(a)
    started = DBOS.start_workflow(child, "started")
    again = DBOS.retrieve_workflow(started.workflow_id).get_result()
    status = DBOS.get_workflow_status(started.workflow_id)
    listed = DBOS.list_workflows(workflow_ids=[started.workflow_id])
    forked = DBOS.fork_workflow(started.workflow_id, 1).get_result()
    resumed = DBOS.resume_workflow(started.workflow_id).get_result()
    DBOS.write_stream("ops", "first")
    DBOS.write_stream("ops", inline)
    at_offset = DBOS.read_stream_offset(me, "ops", 1)
    debounced = Debouncer.create(child).debounce(f"{me}-key", 0.1, "debounced").get_result()
    as_workflow = DBOS.start_workflow(echo, "temp").get_result()
    try:
        exhausted("x")
        failure = "none"
    except Exception as exc:
        failure = type(exc).__name__
    seen = [
        inline, again, status and status.status, [w.status for w in listed], forked, resumed,
        at_offset, debounced, as_workflow, failure,
    ]  # fmt: skip
    b = step_two(json.dumps(seen))
    DBOS.sleep(0.01)
    return step_three(b)


@DBOS.step(timeout_seconds=0.2)
async def too_slow(value: str) -> str:
    """Times out: the workflow gets DBOS's DBOSStepTimeoutError, recorded."""
    LEDGER.event(f"too_slow:{DBOS.workflow_id}:{value}")
    await asyncio.sleep(60)
    return value


@DBOS.workflow()
async def async_operations(seed: str) -> str:
    """An async workflow: a step that times out, then the steps of ``three_steps``."""
    a = step_one(seed)
    try:
        await too_slow(a)
        failure = "none"
    except Exception as exc:
        failure = type(exc).__name__
    b = step_two(f"{a}+{failure}")
    await DBOS.sleep_async(0.01)
    return step_three(b)


@DBOS.workflow()
def waiter(tag: str) -> str:
    """Announces itself, waits for a reply, echoes it through a step (driven by clients)."""
    DBOS.set_event("ready", tag)
    reply = DBOS.recv("reply", timeout_seconds=120)
    return echo(f"{tag}:{reply}")


@DBOS.step()
def echo(value: str) -> str:
    return value


@DBOS.workflow()
def streamer(count: int) -> int:
    for i in range(count):
        DBOS.write_stream("numbers", i)
    DBOS.close_stream("numbers")
    return count


@DBOS.workflow()
def ticked(at: Any, context: Any) -> str:
    return f"tick:{context}"


if os.environ.get("INTEROP_EVERY_SECOND") == "1":

    @DBOS.scheduled("* * * * * *")
    @DBOS.workflow()
    def every_second(scheduled: Any, actual: Any) -> None:
        LEDGER.event(f"tick:{scheduled.isoformat()}")


def features(prefix: str) -> dict[str, Any]:
    """Every kind of record once, each read back: steps, events, messages, queues, streams,
    a stored schedule."""
    seen: dict[str, Any] = {}
    with SetWorkflowID(f"{prefix}-steps"):
        handle = DBOS.start_workflow(three_steps, prefix)
    DBOS.send(handle.workflow_id, "hello", TOPIC)
    seen["steps"] = handle.get_result()
    seen["stage"] = DBOS.get_event(handle.workflow_id, "stage", timeout_seconds=0)
    with SetWorkflowID(f"{prefix}-queued"):
        queued = QUEUE.enqueue(waiter, prefix)
    seen["ready"] = DBOS.get_event(queued.workflow_id, "ready", timeout_seconds=60)
    DBOS.send(queued.workflow_id, "pong", "reply")
    seen["queued"] = queued.get_result()
    with SetWorkflowID(f"{prefix}-stream"):
        streaming = DBOS.start_workflow(streamer, 3)
    seen["stream"] = list(DBOS.read_stream(streaming.workflow_id, "numbers"))
    streaming.get_result()
    DBOS.create_schedule(
        schedule_name=f"{prefix}-schedule",
        workflow_fn=ticked,
        schedule="0 0 1 1 *",
        context=prefix,
    )
    seen["schedule"] = DBOS.trigger_schedule(f"{prefix}-schedule").get_result()
    seen["steps_listed"] = [s["function_name"] for s in DBOS.list_workflow_steps(f"{prefix}-steps")]
    return seen


def outcome(wfid: str) -> dict[str, Any]:
    try:
        return {"ok": DBOS.retrieve_workflow(wfid).get_result()}
    except Exception as exc:  # reported, the test decides
        return {"error": type(exc).__name__, "message": str(exc)}


def main() -> None:
    DBOS(config={"name": "interop", "system_database_url": DB_URL})  # type: ignore[arg-type]
    DBOS.launch()
    LEDGER.event("launched")
    results: dict[str, Any] = {}
    events: dict[str, Any] = {}
    if MODE == "start":
        wfid, workflow = ARGS[0], ARGS[1] if len(ARGS) > 1 else "three_steps"
        with SetWorkflowID(wfid):
            DBOS.start_workflow(globals()[workflow], "seed")
        DBOS.send(wfid, "hello", TOPIC)
        results[wfid] = outcome(wfid)
        events[wfid] = {"stage": DBOS.get_event(wfid, "stage", timeout_seconds=0)}
    elif MODE == "wait":
        for wfid in ARGS:
            results[wfid] = outcome(wfid)
            events[wfid] = {"stage": DBOS.get_event(wfid, "stage", timeout_seconds=0)}
    elif MODE == "features":
        results["features"] = {"ok": features(ARGS[0])}
    elif MODE == "serve":
        time.sleep(float(ARGS[0]) if ARGS else 3600)
    else:
        raise SystemExit(f"unknown mode {MODE!r}")
    print(json.dumps({"pid": os.getpid(), "results": results, "events": events}), flush=True)
    DBOS.destroy()


if __name__ == "__main__":
    main()
