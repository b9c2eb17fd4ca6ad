"""Catalogue of the operation records a workflow writes, for comparing Waypoint with DBOS.

Runs one small workflow per kind of operation (steps, sleeps, messages, events, children,
queues, streams, patches, waits, introspection, debouncing, steps started as workflows)
under either implementation, then prints every ``operation_outputs`` row (position, name,
child workflow, whether it has an output or an error, its duration class) and every
workflow's name, as JSON lines sorted for ``diff``.

    python scripts/op_catalogue.py --impl waypoint --db sqlite:///tmp/cat.sqlite
    /path/to/dbos-venv/bin/python scripts/op_catalogue.py --impl dbos --db postgresql://...

Not a test: it needs ``dbos`` installed for the DBOS side (a throwaway venv).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import re
import sqlite3
import sys
import threading
import time
from typing import Any

parser = argparse.ArgumentParser()
parser.add_argument("--impl", choices=["dbos", "waypoint"], required=True)
parser.add_argument("--db", required=True, help="system database URL (fresh)")
parser.add_argument("--only", default="", help="comma-separated workflow kinds to run")
opts = parser.parse_args()

lib: Any = importlib.import_module(opts.impl)
DBOS = lib.DBOS
SetWorkflowID = lib.SetWorkflowID
Queue = lib.Queue
Debouncer = lib.Debouncer

queue = Queue("catq")
attempts = {"flaky": 0}


@DBOS.step()
def plain_step(x: int) -> int:
    return x + 1


@DBOS.step()
async def async_step(x: int) -> int:
    await asyncio.sleep(0)
    return x * 2


@DBOS.step(retries_allowed=True, max_attempts=3, interval_seconds=0.01)
def flaky_step() -> str:
    attempts["flaky"] += 1
    if attempts["flaky"] < 2:
        raise RuntimeError("first attempt fails")
    return "ok"


@DBOS.step()
def failing_step() -> None:
    raise ValueError("step fails")


@DBOS.step(retries_allowed=True, max_attempts=2, interval_seconds=0.01)
def always_failing_step() -> None:
    raise ValueError("always fails")


@DBOS.step(name="custom_named_step")
def renamed_step() -> int:
    return 7


@DBOS.workflow()
def child(x: int) -> int:
    return plain_step(x)


@DBOS.workflow()
async def async_child(x: int) -> int:
    return await async_step(x)


@DBOS.workflow()
def w_steps() -> str:
    plain_step(1)
    flaky_step()
    try:
        failing_step()
    except ValueError:
        pass
    try:
        always_failing_step()
    except Exception:
        pass
    renamed_step()
    return "done"


@DBOS.workflow()
async def w_async_steps() -> int:
    a = await async_step(2)
    b = plain_step(a)
    await DBOS.sleep_async(0.05)
    return b


@DBOS.workflow()
def w_sleep() -> None:
    DBOS.sleep(0.05)
    DBOS.sleep(0)


@DBOS.workflow()
def w_recv() -> Any:
    got = DBOS.recv("t", timeout_seconds=10)
    none = DBOS.recv("never", timeout_seconds=0.2)
    return [got, none]


@DBOS.workflow()
def w_send(dest: str) -> None:
    DBOS.send(dest, "hi", topic="t")


@DBOS.workflow()
def w_send_bulk(dest: str) -> None:
    DBOS.send_bulk([lib.SendMessage(destination_id=dest, message="bulk", topic="b")])


@DBOS.workflow()
def w_event() -> Any:
    DBOS.set_event("k", 1)
    found = DBOS.get_event(DBOS.workflow_id, "k", timeout_seconds=1)
    missing = DBOS.get_event(DBOS.workflow_id, "missing", timeout_seconds=0.2)
    allev = DBOS.get_all_events(DBOS.workflow_id)
    return [found, missing, allev]


@DBOS.workflow()
def w_child_start() -> int:
    h = DBOS.start_workflow(child, 1)
    st = h.get_status()
    r = h.get_result()
    return r + (1 if st is not None else 0)


@DBOS.workflow()
def w_child_inline() -> int:
    return child(2)


@DBOS.workflow()
async def w_async_child_inline() -> int:
    a = await async_child(3)
    h = await DBOS.start_workflow_async(async_child, 4)
    b = await h.get_result()
    return a + b


@DBOS.workflow()
def w_enqueue() -> int:
    h = queue.enqueue(child, 3)
    return h.get_result()


@DBOS.workflow()
def w_get_result_by_id() -> Any:
    h = DBOS.start_workflow(child, 5)
    return DBOS.get_result(h.get_workflow_id())


def raw_fn(x: int) -> int:
    return x - 1


async def raw_async_fn(x: int) -> int:
    return x - 2


@DBOS.workflow()
def w_run_step() -> Any:
    a = DBOS.run_step(None, raw_fn, 10)
    b = DBOS.run_step({"name": "named_run_step"}, raw_fn, 11)
    return [a, b]


@DBOS.workflow()
async def w_run_step_async() -> Any:
    a = await DBOS.run_step_async(None, raw_async_fn, 10)
    b = await DBOS.run_step_async({"name": "named_async"}, raw_fn, 11)
    return [a, b]


@DBOS.workflow()
def w_stream() -> None:
    DBOS.write_stream("s", 1)
    DBOS.write_stream("s", 2)
    DBOS.close_stream("s")


@DBOS.workflow()
def w_stream_reader(src: str) -> Any:
    return list(DBOS.read_stream(src, "s"))


@DBOS.workflow()
def w_patch() -> Any:
    a = DBOS.patch("p1")
    b = DBOS.deprecate_patch("p2")
    plain_step(0)
    return [a, b]


@DBOS.workflow()
async def w_asyncio_wait() -> Any:
    done, pending = await DBOS.asyncio_wait([async_step(1), async_step(2)])
    return sorted(t.result() for t in done)


@DBOS.workflow()
def w_wait_first() -> Any:
    h1 = DBOS.start_workflow(child, 1)
    h2 = DBOS.start_workflow(child, 2)
    first = DBOS.wait_first([h1, h2])
    return first.get_result()


@DBOS.workflow()
def w_introspect(other: str) -> Any:
    h = DBOS.retrieve_workflow(other)
    st = h.get_status()
    r = h.get_result()
    st2 = DBOS.get_workflow_status(other)
    steps = DBOS.list_workflow_steps(other)
    wfs = DBOS.list_workflows(workflow_ids=[other])
    return [st is not None, r, st2 is not None, len(steps), len(wfs)]


@DBOS.workflow()
def w_debounce() -> Any:
    d = Debouncer.create(child)
    h = d.debounce("key", 0.1, 9)
    return h.get_result()


@DBOS.workflow()
def w_start_step() -> Any:
    h = DBOS.start_workflow(plain_step, 41)
    h2 = queue.enqueue(plain_step, 42)
    return [h.get_result(), h2.get_result()]


@DBOS.workflow()
def w_management(victim: str) -> Any:
    DBOS.cancel_workflow(victim)
    DBOS.resume_workflow(victim)
    return "ok"


@DBOS.workflow()
def victim_wf() -> int:
    return 1


@DBOS.workflow()
def w_fails() -> None:
    plain_step(0)
    raise KeyError("workflow fails")


def main() -> None:
    config: dict[str, Any] = {
        "name": "opcat",
        "system_database_url": opts.db,
        "enable_patching": True,
    }
    DBOS(config=config)
    DBOS.launch()
    only = set(opts.only.split(",")) if opts.only else None

    def run(wid: str, fn: Any, *args: Any) -> Any:
        if only is not None and wid.removeprefix("cat-") not in only:
            return None
        with SetWorkflowID(wid):
            h = DBOS.start_workflow(fn, *args)
        try:
            return h.get_result()
        except Exception as exc:
            return f"raised {type(exc).__name__}"

    run("cat-steps", w_steps)
    run("cat-async-steps", w_async_steps)
    run("cat-sleep", w_sleep)
    if only is None or "recv" in only:
        with SetWorkflowID("cat-recv"):
            h = DBOS.start_workflow(w_recv)
        time.sleep(0.3)
        run("cat-send", w_send, "cat-recv")
        h.get_result()
    run("cat-send-bulk", w_send_bulk, "cat-recv")
    run("cat-event", w_event)
    run("cat-child-start", w_child_start)
    run("cat-child-inline", w_child_inline)
    run("cat-async-child-inline", w_async_child_inline)
    run("cat-enqueue", w_enqueue)
    run("cat-get-result-by-id", w_get_result_by_id)
    run("cat-run-step", w_run_step)
    run("cat-run-step-async", w_run_step_async)
    run("cat-stream", w_stream)
    run("cat-stream-reader", w_stream_reader, "cat-stream")
    run("cat-patch", w_patch)
    run("cat-asyncio-wait", w_asyncio_wait)
    run("cat-wait-first", w_wait_first)
    run("cat-introspect", w_introspect, "cat-steps")
    run("cat-debounce", w_debounce)
    run("cat-start-step", w_start_step)
    if only is None or "stepwf" in only:
        with SetWorkflowID("cat-stepwf"):
            DBOS.start_workflow(plain_step, 1).get_result()
        with SetWorkflowID("cat-stepq"):
            queue.enqueue(plain_step, 2).get_result()
    run("cat-victim", victim_wf)
    run("cat-management", w_management, "cat-victim")
    run("cat-fails", w_fails)
    time.sleep(0.5)
    DBOS.destroy()
    dump(opts.db)


UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def dump(url: str) -> None:
    if url.startswith("sqlite"):
        conn: Any = sqlite3.connect(url.split(":///", 1)[1])
        prefix = ""
    else:
        import psycopg

        conn = psycopg.connect(url)
        prefix = "dbos."
    cur = conn.cursor()
    cur.execute(
        f"SELECT workflow_uuid, name, status, queue_name, parent_workflow_id "
        f"FROM {prefix}workflow_status"
    )
    wfs = {r[0]: r for r in cur.fetchall()}
    cur.execute(
        "SELECT workflow_uuid, function_id, function_name, output, error, child_workflow_id, "
        f"started_at_epoch_ms, completed_at_epoch_ms, serialization FROM {prefix}operation_outputs"
    )
    rows = cur.fetchall()
    lines = []
    for w, (wid, name, status, qn, parent) in wfs.items():
        lines.append(
            {
                "wf": UUID.sub("<uuid>", wid),
                "fid": 0,
                "workflow_name": name,
                "status": status,
                "queue": qn,
                "parent": UUID.sub("<uuid>", parent) if parent else None,
            }
        )
    for wid, fid, fname, out, err, child_id, started, completed, ser in rows:
        dur = None if started is None or completed is None else completed - started
        lines.append(
            {
                "wf": UUID.sub("<uuid>", wid),
                "fid": fid,
                "function_name": fname,
                "output": None if out is None else _short(out, ser),
                "error": None if err is None else _short(err, ser),
                "child": UUID.sub("<uuid>", child_id) if child_id else None,
                "dur": None if dur is None else ("long" if dur >= 150 else "short"),
                "ser": ser,
            }
        )
    lines.sort(key=lambda d: (d["wf"], d["fid"]))
    for d in lines:
        print(json.dumps(d, sort_keys=True))


def _short(text: str, ser: Any) -> str:
    """The value, decoded when it is a pickle (the comparison is of values, not bytes)."""
    if ser in (None, "py_pickle") or (ser and "pickle" in ser):
        try:
            import base64
            import pickle

            val = pickle.loads(base64.b64decode(text))
            if isinstance(val, BaseException):
                return f"exc:{type(val).__name__}:{val}"
            return "pickle:" + UUID.sub("<uuid>", repr(val))[:80]
        except Exception as exc:  # noqa: BLE001
            return f"undecodable({type(exc).__name__})"
    return f"{ser}:" + UUID.sub("<uuid>", text)[:80]


if __name__ == "__main__":
    threading.excepthook = lambda a: None
    main()
    sys.exit(0)
