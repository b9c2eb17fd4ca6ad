"""Worker program for the crash tests; the tests run it as a child process and SIGKILL it.

    python tests/crash/app.py <db_url> <ledger_path> <mode> [args...]

Modes:
    start <workflow> <json_args> <wfid>...   launch (recovering this executor's PENDING
                                             workflows), start one workflow per ID with
                                             SetWorkflowID, wait for them, print the results
    wait <wfid>...                           launch, then wait for the given workflows
                                             (DBOS.retrieve_workflow(id).get_result()) and
                                             print their outcomes
    idle                                     launch, then do nothing until killed

Behaviour switches come from the environment, never from workflow inputs (inputs are
checkpointed, so they would be the same in the restarted process):
    CRASH_EXECUTOR_ID   config executor_id (else DBOS__VMID, else Waypoint's default)
    CRASH_BLOCK_STEP    step index whose body blocks forever after writing its 'start' row
    CRASH_STEP_DELAY    "lo:hi": every step body sleeps uniform(lo, hi) seconds (before 'end')
    CRASH_POST_DELAY    "lo:hi": every step body sleeps after writing 'end' (its side effect
                        is done but its checkpoint is not yet written)
    CRASH_GAP_DELAY     "lo:hi": the workflow sleeps between steps (after a checkpoint, before
                        the next step is entered)
    CRASH_GATE_FILE     the "gated" workflow waits (outside any step) for this file to exist
    CRASH_LINGER        seconds to stay up after the waited-for workflows ended
    DBOS__APPVERSION    set by the harness to the same value for every process

Output: one JSON line on stdout, {"pid": ..., "results": {wfid: {"ok": value} |
{"error": class name, "module": module}}}.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import time
import uuid
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import ledger  # type: ignore[import-not-found]  # tests/crash/ledger.py, stdlib only

from waypoint import DBOS, SetWorkflowID

DB_URL, LEDGER_PATH, MODE = sys.argv[1], sys.argv[2], sys.argv[3]
ARGS = sys.argv[4:]

LEDGER = ledger.Writer(LEDGER_PATH)
BLOCK_STEP = int(os.environ.get("CRASH_BLOCK_STEP") or 0)


def _delay(var: str) -> tuple[float, float] | None:
    value = os.environ.get(var)
    if not value:
        return None
    lo, hi = (float(x) for x in value.split(":"))
    return lo, hi


STEP_DELAY = _delay("CRASH_STEP_DELAY")
POST_DELAY = _delay("CRASH_POST_DELAY")
GAP_DELAY = _delay("CRASH_GAP_DELAY")


def nap(delay: tuple[float, float] | None) -> None:
    if delay is not None:
        time.sleep(random.uniform(*delay))


def seed_token(workflow_id: str) -> str:
    return f"seed:{workflow_id}"


@DBOS.step()
def chain_step(workflow_id: str, index: int, prev_token: str) -> str:
    """Record entry with the input token, maybe block, return a fresh random token."""
    LEDGER.step(workflow_id, index, "start", prev_token)
    if index == BLOCK_STEP:
        while True:  # the test SIGKILLs us here
            time.sleep(1)
    nap(STEP_DELAY)
    token = uuid.uuid4().hex
    LEDGER.step(workflow_id, index, "end", token)
    nap(POST_DELAY)
    return token


@DBOS.step()
async def achain_step(workflow_id: str, index: int, prev_token: str) -> str:
    """The async twin of chain_step (runs on the event loop)."""
    LEDGER.step(workflow_id, index, "start", prev_token)
    if index == BLOCK_STEP:
        while True:
            await asyncio.sleep(1)
    token = uuid.uuid4().hex
    LEDGER.step(workflow_id, index, "end", token)
    return token


def _run_chain(nsteps: int) -> list[str]:
    wfid = DBOS.workflow_id
    assert wfid is not None
    tokens: list[str] = []
    prev = seed_token(wfid)
    for i in range(1, nsteps + 1):
        if i > 1:
            nap(GAP_DELAY)
        prev = chain_step(wfid, i, prev)
        tokens.append(prev)
    return tokens


@DBOS.workflow()
def chain(nsteps: int) -> list[str]:
    return _run_chain(nsteps)


@DBOS.workflow(max_recovery_attempts=2)
def chain_limited(nsteps: int) -> list[str]:
    return _run_chain(nsteps)


@DBOS.workflow()
async def achain(nsteps: int) -> list[str]:
    wfid = DBOS.workflow_id
    assert wfid is not None
    tokens: list[str] = []
    prev = seed_token(wfid)
    for i in range(1, nsteps + 1):
        prev = await achain_step(wfid, i, prev)
        tokens.append(prev)
    return tokens


@DBOS.workflow()
def gated(nsteps: int) -> list[str]:
    """Run the steps, then wait (in the workflow body, not in a step) for the gate file."""
    tokens = _run_chain(nsteps)
    LEDGER.event(f"gate:{DBOS.workflow_id}")
    gate = os.environ["CRASH_GATE_FILE"]
    while not os.path.exists(gate):
        time.sleep(0.02)
    return tokens


@DBOS.workflow()
def sleepy(seconds: float) -> list[str]:
    wfid = DBOS.workflow_id
    assert wfid is not None
    t1 = chain_step(wfid, 1, seed_token(wfid))
    DBOS.sleep(seconds)
    t2 = chain_step(wfid, 2, t1)
    return [t1, t2]


WORKFLOWS: dict[str, Any] = {
    "chain": chain,
    "achain": achain,
    "chain_limited": chain_limited,
    "sleepy": sleepy,
    "gated": gated,
}


def outcome(wfid: str) -> dict[str, Any]:
    try:
        return {"ok": DBOS.retrieve_workflow(wfid).get_result(polling_interval_sec=0.1)}
    except Exception as exc:
        return {"error": type(exc).__name__, "module": type(exc).__module__, "message": str(exc)}


def main() -> None:
    config: dict[str, Any] = {"name": "crash-app", "system_database_url": DB_URL}
    executor_id = os.environ.get("CRASH_EXECUTOR_ID")
    if executor_id:
        config["executor_id"] = executor_id
    DBOS(config=config)  # type: ignore[arg-type]
    DBOS.launch()  # recovers this executor's PENDING workflows
    LEDGER.event("launched")

    if MODE == "idle":
        while True:
            time.sleep(1)

    if MODE == "start":
        func = WORKFLOWS[ARGS[0]]
        wf_args = json.loads(ARGS[1])
        ids = ARGS[2:]
        for wfid in ids:
            with SetWorkflowID(wfid):
                DBOS.start_workflow(func, *wf_args)
        LEDGER.event("started")
    elif MODE == "wait":
        ids = ARGS
    else:
        raise SystemExit(f"unknown mode {MODE!r}")

    results = {wfid: outcome(wfid) for wfid in ids}
    linger = float(os.environ.get("CRASH_LINGER") or 0)
    if linger > 0:
        time.sleep(linger)
    print(json.dumps({"pid": os.getpid(), "results": results}), flush=True)
    DBOS.destroy()
    LEDGER.event("exiting")


if __name__ == "__main__":
    main()
