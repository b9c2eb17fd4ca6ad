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
parser.add_argument(
    "--fork-all",
    action="store_true",
    help="instead: fork every finished top-level catalogue workflow of --db (written by either "
    "implementation) past its last step, so its whole history replays, and compare results",
)
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
    done, _pending = await DBOS.asyncio_wait([async_step(1), async_step(2)])
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


@DBOS.step()
def step_with_side_effects(dest: str) -> None:
    DBOS.set_event("from-step", 1)
    DBOS.write_stream("step-stream", "v")
    DBOS.send(dest, "from-step", topic="st")


@DBOS.step(timeout_seconds=0.05)
async def timing_out_step() -> None:
    await asyncio.sleep(1)


@DBOS.step(retries_allowed=True, max_attempts=3, interval_seconds=0, should_retry=lambda e: False)
def declined_step() -> None:
    raise ValueError("declined")


@DBOS.workflow()
async def w_async_ops(other: str) -> Any:
    h = await DBOS.retrieve_workflow_async(other)
    await h.get_status()
    await h.get_result()
    await DBOS.get_workflow_status_async(other)
    await DBOS.get_result_async(other)
    await DBOS.set_event_async("ak", 2)
    await DBOS.get_event_async(DBOS.workflow_id or "", "ak", timeout_seconds=1)
    await DBOS.get_all_events_async(DBOS.workflow_id or "")
    await DBOS.send_async(DBOS.workflow_id or "", "x", topic="a")
    await DBOS.recv_async("a", timeout_seconds=1)
    await DBOS.write_stream_async("as", 1)
    await DBOS.close_stream_async("as")
    await DBOS.read_stream_offset_async(DBOS.workflow_id or "", "as", 0)
    c1 = await DBOS.start_workflow_async(async_child, 1)
    first = await DBOS.wait_first_async([c1])
    await first.get_result()
    try:
        await timing_out_step()
    except Exception:
        pass
    f = await DBOS.fork_workflow_async(other, 1)
    await f.get_result()
    return "ok"


@DBOS.workflow()
def w_sync_more(other: str, dest: str) -> Any:
    step_with_side_effects(dest)
    try:
        declined_step()
    except ValueError:
        pass
    DBOS.read_stream_offset(other, "s", 0)
    f = DBOS.fork_workflow(other, 2)
    f.get_result()
    DBOS.list_queued_workflows()
    DBOS.set_event("e", 1)
    DBOS.update_workflow_attributes(other, {"a": 1})
    return "ok"


def main() -> None:
    config: dict[str, Any] = {
        "name": "opcat",
        "system_database_url": opts.db,
        "enable_patching": True,
    }
    DBOS(config=config)
    DBOS.launch()
    if opts.fork_all:
        fork_all(opts.db)
        DBOS.destroy()
        return
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
    run("cat-async-ops", w_async_ops, "cat-child-inline")
    run("cat-sync-more", w_sync_more, "cat-stream", "cat-recv")
    time.sleep(0.5)
    DBOS.destroy()
    dump(opts.db)


def fork_all(url: str) -> None:
    """Replay every finished top-level workflow's whole history through a fork; a replay that
    runs anything again, fails, or returns another result shows a record that does not hand
    over."""
    conn, prefix = _connect(url)
    cur = conn.cursor()
    cur.execute(
        f"SELECT workflow_uuid FROM {prefix}workflow_status WHERE workflow_uuid LIKE 'cat-%%' "
        "AND parent_workflow_id IS NULL AND status = 'SUCCESS' ORDER BY workflow_uuid"
        if prefix
        else "SELECT workflow_uuid FROM workflow_status WHERE workflow_uuid LIKE 'cat-%' "
        "AND parent_workflow_id IS NULL AND status = 'SUCCESS' ORDER BY workflow_uuid"
    )
    ids = [r[0] for r in cur.fetchall()]

    def count(wid: str) -> int:
        c = conn.cursor()
        ph = "%s" if prefix else "?"
        c.execute(
            f"SELECT COUNT(*) FROM {prefix}operation_outputs WHERE workflow_uuid = {ph}", (wid,)
        )
        n = int(c.fetchone()[0])
        conn.commit()
        return n

    for wid in ids:
        box: dict[str, Any] = {}

        def replay(wid: str = wid, box: dict[str, Any] = box) -> None:
            try:
                box["orig"] = repr(DBOS.retrieve_workflow(wid).get_result())
                with SetWorkflowID(f"fork-{wid}"):
                    forked = DBOS.fork_workflow(wid, 1000)
                box["fork"] = repr(forked.get_result())
            except BaseException as exc:
                box["error"] = f"{type(exc).__name__}: {str(exc)[:150]}"

        t = threading.Thread(target=replay, daemon=True)
        t.start()
        t.join(30)
        if t.is_alive():
            verdict = "HANGS"
        elif "error" in box:
            verdict = "FAILS " + box["error"]
        elif box["orig"] != box["fork"]:
            verdict = f"DIFFERS {box['orig']} != {box['fork']}"
        else:
            extra = count(f"fork-{wid}") - count(wid)
            verdict = "ok" if extra == 0 else f"RE-RAN ({extra:+d} rows)"
        print(f"{wid}: {verdict}", flush=True)


def _connect(url: str) -> tuple[Any, str]:
    if url.startswith("sqlite"):
        return sqlite3.connect(url.split(":///", 1)[1]), ""
    import psycopg

    return psycopg.connect(url), "dbos."


UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def dump(url: str) -> None:
    conn, prefix = _connect(url)
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
    for wid, name, status, qn, parent in wfs.values():
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
        except Exception as exc:
            return f"undecodable({type(exc).__name__})"
    return f"{ser}:" + UUID.sub("<uuid>", text)[:80]


if __name__ == "__main__":
    threading.excepthook = lambda a: None
    main()
    sys.exit(0)
