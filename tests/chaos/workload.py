"""The chaos campaign's programs: worker processes and DBOSClient producers.

    python -m tests.chaos.workload worker   <db_url> <history_dir> <name> <seed>
    python -m tests.chaos.workload producer <db_url> <history_dir> <name> <seed>

A **worker** launches Waypoint with the executor ID ``<name>`` (a restarted incarnation
recovers the PENDING work of the killed one), dequeues every queue below, and starts direct
workflows of its own on a driver thread: ``chain`` (steps, a child, a durable sleep),
``sleeper`` and ``timeboxed`` (a workflow timeout far shorter than its sleep).

A **producer** is a ``DBOSClient`` that enqueues queued work (``qjob`` on queues with a global
concurrency, a rate limit, partitions and a worker concurrency; ``chain``, ``mailbox``,
``eventer`` and ``streamer`` on a plain queue), sends messages, reads events and streams,
waits for results, cancels and forks. SIGTERM asks it to stop starting operations; it then
finishes those in flight (the waiters included) and exits. When the file CHAOS_DRAIN_FILE
appears a worker stops its driver thread only: it goes on running (and recovering) work
until SIGKILLed.

Every step body and every client call is written to the history (``history.py``), outside
the system database: the checker (``checker.py``) compares that with the database.

Step bodies chain nonces: each returns a fresh random token, and the next step takes the
previous checkpointed token as input, so the history shows whether downstream code used the
checkpointed result. After a step call returns (its checkpoint is written) the workflow
writes an ``ack``: a step body started after its ack is a re-execution the checkpoint should
have prevented.
"""

from __future__ import annotations

import itertools
import logging
import os
import random
import signal
import sys
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Optional

from tests.chaos.history import History

if "faketime" in os.environ.get("LD_PRELOAD", ""):
    import select

    def _sleep(seconds: float) -> None:
        # libfaketime 0.9.10 with FAKETIME_DONT_FAKE_MONOTONIC makes clock_nanosleep (which
        # time.sleep uses) fail with EINVAL; select's timeout does not go through it.
        if seconds > 0:
            select.select([], [], [], seconds)

    time.sleep = _sleep

from waypoint import DBOS, DBOSClient, Queue, SetWorkflowID, SetWorkflowTimeout
from waypoint.error import WaypointStorageFullError

# -- the queues (declared in code, identically in every worker) ---------------------------------
# name -> the limit the checker verifies
Q_CONC, Q_RATE, Q_PART, Q_WORKER, Q_PLAIN = "q_conc", "q_rate", "q_part", "q_worker", "q_plain"
GLOBAL_CONCURRENCY = 2
RATE_LIMIT, RATE_PERIOD = 3, 2.0
PARTITION_CONCURRENCY = 1
WORKER_CONCURRENCY = 1
PARTITIONS = ["p0", "p1", "p2"]

QUEUES = [
    Queue(Q_CONC, global_concurrency=GLOBAL_CONCURRENCY, polling_interval_sec=0.5),
    Queue(Q_RATE, limiter={"limit": RATE_LIMIT, "period": RATE_PERIOD}, polling_interval_sec=0.5),
    Queue(Q_PART, partition_concurrency=PARTITION_CONCURRENCY, polling_interval_sec=0.5),
    Queue(Q_WORKER, worker_concurrency=WORKER_CONCURRENCY, polling_interval_sec=0.5),
    Queue(Q_PLAIN, polling_interval_sec=0.5),
]

SEED_TOKEN = "seed"
# A worker silent (SIGSTOPped, cut off) this long is taken over by a peer; when it resumes,
# its late checkpoints must be refused (fenced), never run twice.
DEAD_EXECUTOR_SEC = 3.0
TIMEBOX_SEC = 1.0
TIMEBOX_SLEEP_SEC = 3600.0
H: History  # set in main()


# -- step bodies and workflows ------------------------------------------------------------------


@DBOS.step(name="body")
def body(wf: str, idx: int, prev: str) -> str:
    op = H.invoke("step", wf=wf, idx=idx, prev=prev)
    time.sleep(random.uniform(0.01, 0.12))
    token = uuid.uuid4().hex
    H.complete("ok", "step", op, wf=wf, idx=idx, token=token)
    return token


def _wfid() -> str:
    wf = DBOS.workflow_id
    assert wf is not None
    return wf


def run_steps(wf: str, first: int, last: int, prev: str) -> list[str]:
    tokens = []
    for i in range(first, last + 1):
        prev = body(wf, i, prev)
        H.write("event", "ack", wf=wf, idx=i, token=prev)
        tokens.append(prev)
    return tokens


@DBOS.workflow(name="leaf")
def leaf() -> list[str]:
    wf = _wfid()
    H.write("event", "wf", wf=wf, kind="leaf", at="begin")
    out = run_steps(wf, 1, 2, SEED_TOKEN)
    H.write("event", "wf", wf=wf, kind="leaf", at="end")
    return out


@DBOS.workflow(name="chain")
def chain(n: int, child: bool, sleep_s: float) -> dict[str, Any]:
    """Steps 1..n first (function IDs 1..n, so a fork at step s copies steps < s), then a
    child workflow and a durable sleep."""
    wf = _wfid()
    H.write("event", "wf", wf=wf, kind="chain", at="begin")
    tokens = run_steps(wf, 1, n, SEED_TOKEN)
    child_out = None
    if child:
        with SetWorkflowID(f"{wf}-c"):
            handle = DBOS.start_workflow(leaf)
        child_out = handle.get_result(polling_interval_sec=0.2)
    if sleep_s > 0:
        op = H.invoke("sleep", wf=wf, seconds=sleep_s)
        DBOS.sleep(sleep_s)
        H.complete("ok", "sleep", op, wf=wf, seconds=sleep_s)
    H.write("event", "wf", wf=wf, kind="chain", at="end")
    return {"tokens": tokens, "child": child_out}


@DBOS.workflow(name="qjob")
def qjob(queue: str, partition: Optional[str], n: int) -> list[str]:
    wf = _wfid()
    H.write("event", "wf", wf=wf, kind="qjob", at="begin", queue=queue, part=partition)
    tokens = run_steps(wf, 1, n, SEED_TOKEN)
    H.write("event", "wf", wf=wf, kind="qjob", at="end", queue=queue, part=partition)
    return tokens


@DBOS.workflow(name="mailbox")
def mailbox() -> list[str]:
    """Receive messages on topic "m" until "END" (or two idle minutes); return them in order."""
    wf = _wfid()
    H.write("event", "wf", wf=wf, kind="mailbox", at="begin")
    got: list[str] = []
    idle = 0
    while idle < 24:
        value = DBOS.recv("m", timeout_seconds=5)
        if value is None:
            idle += 1
            continue
        H.write("event", "recv", wf=wf, pos=len(got), value=value)
        if value == "END":
            break
        got.append(value)
    H.write("event", "wf", wf=wf, kind="mailbox", at="end")
    return got


@DBOS.workflow(name="eventer")
def eventer(k: int) -> int:
    wf = _wfid()
    H.write("event", "wf", wf=wf, kind="eventer", at="begin")
    prev = SEED_TOKEN
    for i in range(k):
        prev = run_steps(wf, i + 1, i + 1, prev)[0]
        value = f"{wf}:{i}"
        op = H.invoke("set_event", wf=wf, key="e", value=value)
        DBOS.set_event("e", value)
        H.complete("ok", "set_event", op, wf=wf, key="e", value=value)
    H.write("event", "wf", wf=wf, kind="eventer", at="end")
    return k


@DBOS.workflow(name="streamer")
def streamer(n: int) -> int:
    wf = _wfid()
    H.write("event", "wf", wf=wf, kind="streamer", at="begin")
    prev = SEED_TOKEN
    for i in range(n):
        prev = run_steps(wf, i + 1, i + 1, prev)[0]
        DBOS.write_stream("s", i)
    DBOS.close_stream("s")
    H.write("event", "wf", wf=wf, kind="streamer", at="end")
    return n


@DBOS.workflow(name="sleeper")
def sleeper(seconds: float) -> str:
    wf = _wfid()
    H.write("event", "wf", wf=wf, kind="sleeper", at="begin")
    op = H.invoke("sleep", wf=wf, seconds=seconds)
    DBOS.sleep(seconds)
    H.complete("ok", "sleep", op, wf=wf, seconds=seconds)
    tokens = run_steps(wf, 1, 1, SEED_TOKEN)
    H.write("event", "wf", wf=wf, kind="sleeper", at="end")
    return tokens[0]


@DBOS.workflow(name="timeboxed")
def timeboxed() -> str:
    """Started with a TIMEBOX_SEC timeout and sleeps an hour: it must end CANCELLED."""
    wf = _wfid()
    H.write("event", "wf", wf=wf, kind="timeboxed", at="begin")
    tokens = run_steps(wf, 1, 1, SEED_TOKEN)
    DBOS.sleep(TIMEBOX_SLEEP_SEC)
    tokens += run_steps(wf, 2, 2, tokens[0])
    H.write("event", "wf", wf=wf, kind="timeboxed", at="end")
    return tokens[-1]


# -- calls recorded as operations ---------------------------------------------------------------


def recorded(f: str, call: Any, *, ok_value: Any = None, **fields: Any) -> Any:
    """Run ``call()`` between an invoke and its completion. A full database is a definite
    failure (nothing was written: the checker holds Waypoint to that); any other error is
    indeterminate (info)."""
    op = H.invoke(f, **fields)
    try:
        value = call()
    except Exception as exc:
        outcome = "fail" if isinstance(exc, WaypointStorageFullError) else "info"
        H.complete(outcome, f, op, error=f"{type(exc).__name__}: {exc}"[:300], **fields)
        return None
    H.complete("ok", f, op, value=value if ok_value is None else ok_value(value), **fields)
    return value


# -- worker -------------------------------------------------------------------------------------


class Takeovers(logging.Handler):
    """Records each takeover of a silent peer's work in the history (the heartbeat's
    warning: ``executor(s) %s gone or silent for over %ss: took over %d pending ...``)."""

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("executor(s)") and len(record.args or ()) == 3:
            dead, _, n = record.args  # type: ignore[misc]
            H.write("event", "takeover", dead=list(dead), n=int(n))


def worker(db_url: str, name: str, rng: random.Random, stop: threading.Event) -> None:
    DBOS(
        config={  # type: ignore[typeddict-item]
            "name": "chaos",
            "system_database_url": db_url,
            "executor_id": name,
            "application_version": "chaos-v1",
            "dead_executor_recovery_sec": DEAD_EXECUTOR_SEC,
        }
    )
    logging.getLogger("waypoint").addHandler(Takeovers(logging.WARNING))
    skip = set(filter(None, os.environ.get("CHAOS_SKIP_QUEUES", "").split(",")))
    if skip:
        DBOS.listen_queues([q for q in QUEUES if q.name not in skip])
    DBOS.launch()
    H.write("event", "launched")
    counter = itertools.count()
    incarnation = os.getpid()
    while not stop.is_set():
        n = next(counter)
        kind = rng.choices(["chain", "sleeper", "timeboxed"], [6, 2, 1])[0]
        wf = f"{name}.{incarnation}.{kind}.{n}"
        if kind == "chain":
            args: tuple[Any, ...] = (3, rng.random() < 0.6, rng.choice([0.0, 0.0, 0.5, 1.5]))
            func: Any = chain
        elif kind == "sleeper":
            args, func = (rng.uniform(0.5, 3.0),), sleeper
        else:
            args, func = (), timeboxed

        def start(wf: str = wf, func: Any = func, args: tuple[Any, ...] = args) -> str:
            with SetWorkflowID(wf):
                if func is timeboxed:
                    with SetWorkflowTimeout(TIMEBOX_SEC):
                        DBOS.start_workflow(func, *args)
                else:
                    DBOS.start_workflow(func, *args)
            return wf

        recorded("start", start, wf=wf, kind=kind)
        stop.wait(rng.uniform(0.4, 1.2))


# -- producer -----------------------------------------------------------------------------------


class Producer:
    def __init__(self, db_url: str, name: str, rng: random.Random) -> None:
        self.client = DBOSClient(system_database_url=db_url)
        self.name = name
        self.rng = rng
        self.counter = itertools.count()
        self.waiters = ThreadPoolExecutor(6, thread_name_prefix="waiter")
        self.pending: list[Future[Any]] = []
        self.started: list[str] = []  # every workflow enqueued ok
        self.chains: list[str] = []  # chain workflows on q_plain (cancel and fork targets)
        self.finished_chains: list[str] = []  # chains whose get_result returned
        self.eventers: list[str] = []
        self.streamers: list[str] = []

    def new_id(self, kind: str) -> str:
        return f"{self.name}.{kind}.{next(self.counter)}"

    def enqueue(
        self, kind: str, workflow: str, queue: str, *args: Any, part: Optional[str] = None
    ) -> Optional[str]:
        wf = self.new_id(kind)
        options: dict[str, Any] = {
            "queue_name": queue,
            "workflow_name": workflow,
            "workflow_id": wf,
        }
        if part is not None:
            options["queue_partition_key"] = part

        def call() -> str:
            self.client.enqueue(options, *args)  # type: ignore[arg-type]
            return wf

        got = recorded("enqueue", call, wf=wf, kind=kind, queue=queue)
        if got is not None:
            self.started.append(wf)
        return got  # type: ignore[no-any-return]

    def wait_result(self, wf: str) -> None:
        def call() -> Any:
            return self.client.retrieve_workflow(wf).get_result(polling_interval_sec=0.5)

        def run() -> None:
            op = H.invoke("get_result", wf=wf)
            try:
                value = call()
            except Exception as exc:
                # An error the workflow ended with (cancelled, timed out) is a definite answer.
                H.complete("fail", "get_result", op, wf=wf, error=type(exc).__name__)
                return
            H.complete("ok", "get_result", op, wf=wf)
            if wf in self.chains:
                self.finished_chains.append(wf)
            del value

        self.pending.append(self.waiters.submit(run))

    def read_stream(self, wf: str) -> None:
        def run() -> None:
            recorded(
                "read_stream",
                lambda: list(self.client.read_stream(wf, "s", timeout_seconds=60)),
                wf=wf,
            )

        self.pending.append(self.waiters.submit(run))

    def step(self) -> None:
        rng = self.rng
        op = rng.choices(
            ["qjob", "chain", "mailbox", "eventer", "get_event", "streamer", "read_stream",
             "get_result", "cancel", "fork"],
            [10, 3, 2, 2, 3, 2, 2, 3, 1, 1],
        )[0]  # fmt: skip
        if op == "qjob":
            queue = rng.choice([Q_CONC, Q_RATE, Q_PART, Q_WORKER])
            part = rng.choice(PARTITIONS) if queue == Q_PART else None
            self.enqueue("qjob", "qjob", queue, queue, part, rng.randint(1, 3), part=part)
        elif op == "chain":
            wf = self.enqueue("chain", "chain", Q_PLAIN, 3, False, 0.0)
            if wf:
                self.chains.append(wf)
        elif op == "mailbox":
            wf = self.enqueue("mailbox", "mailbox", Q_PLAIN)
            if wf:
                for _ in range(rng.randint(1, 4)):
                    nonce = f"{wf}/{uuid.uuid4().hex[:8]}"
                    recorded(
                        "send",
                        lambda n=nonce: self.client.send(wf, n, "m", n),
                        dest=wf,
                        msg=nonce,
                    )
                for _ in range(20):  # the mailbox waits for END (else two idle minutes)
                    end = lambda: self.client.send(wf, "END", "m", f"{wf}/END")  # noqa: E731
                    if recorded("send", lambda: end() or True, dest=wf, msg="END"):
                        break
                    time.sleep(0.5)
        elif op == "eventer":
            wf = self.enqueue("eventer", "eventer", Q_PLAIN, 3)
            if wf:
                self.eventers.append(wf)
        elif op == "get_event" and self.eventers:
            wf = rng.choice(self.eventers)
            recorded(
                "get_event",
                lambda: self.client.get_event(wf, "e", timeout_seconds=1),
                wf=wf,
                key="e",
            )
        elif op == "streamer":
            wf = self.enqueue("streamer", "streamer", Q_PLAIN, 4)
            if wf:
                self.streamers.append(wf)
        elif op == "read_stream" and self.streamers:
            self.read_stream(rng.choice(self.streamers))
        elif op == "get_result" and self.started:
            self.wait_result(rng.choice(self.started))
        elif op == "cancel" and self.chains:
            wf = rng.choice(self.chains)
            recorded("cancel", lambda: self.client.cancel_workflow(wf), wf=wf)
        elif op == "fork" and self.finished_chains:
            src = rng.choice(self.finished_chains)
            new = self.new_id("fork")
            start_step = rng.randint(2, 3)

            def fork() -> str:
                self.client.fork_workflow(src, start_step, forked_workflow_id=new)  # type: ignore[call-arg]
                return new

            if recorded("fork", fork, wf=new, src=src, start_step=start_step):
                self.started.append(new)

    def drain(self) -> None:
        """Stop: every workflow this producer started gets a waiter, then all waiters end."""
        for wf in self.started:
            self.wait_result(wf)
        for f in self.pending:
            f.result()
        self.waiters.shutdown()


def _watch(path: str, stop: threading.Event) -> None:
    while not os.path.exists(path):
        time.sleep(0.2)
    stop.set()


CLOCK_WATCH_SEC = 0.05  # how often a worker samples its own wall clock
CLOCK_OFF_SEC = 0.5  # a change of the wall-minus-monotonic skew this large is a clock jump


def _clock_watch(stop: threading.Event) -> None:
    """Record, as it happens, each change of this process's wall clock against the monotonic one.

    The monotonic clock is machine-wide and never faked (FAKETIME_DONT_FAKE_MONOTONIC), so
    ``time.time() - time.monotonic()`` is constant except while libfaketime applies an offset.
    libfaketime picks a new offset up lazily (its cache), so the nemesis's own start and end of a
    clock_jump fault say only roughly when this process's clock was off; these records say
    exactly (to one sampling period), and the checker excuses an early sleep only then.
    """
    last: Optional[float] = None
    while not stop.is_set():
        skew = time.time() - time.monotonic()
        if last is None or abs(skew - last) > CLOCK_OFF_SEC:
            H.write("event", "clock", skew=skew)
            last = skew
        stop.wait(CLOCK_WATCH_SEC)


def main() -> None:
    global H
    role, db_url, hist_dir, name, seed = sys.argv[1:6]
    H = History(hist_dir, name)
    rng = random.Random(f"{seed}/{name}/{os.getpid()}")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    drain_file = os.environ.get("CHAOS_DRAIN_FILE")
    if drain_file:  # the campaign drains: workers recover and serve, but start nothing new
        threading.Thread(target=_watch, args=(drain_file, stop), daemon=True).start()
    if role == "worker":
        threading.Thread(target=_clock_watch, args=(threading.Event(),), daemon=True).start()
        worker(db_url, name, rng, stop)
        # The drain file stops only the driver: the worker goes on finishing (and recovering)
        # work until the campaign SIGKILLs it after the system has quiesced.
        H.write("event", "driver_stopped")
        while True:
            time.sleep(1)
    elif role == "producer":
        producer = Producer(db_url, name, rng)
        H.write("event", "launched")
        while not stop.is_set():
            producer.step()
            stop.wait(rng.uniform(0.05, 0.25))
        H.write("event", "draining")
        producer.drain()
        producer.client.destroy()
    else:
        raise SystemExit(f"unknown role {role!r}")
    H.write("event", "exited")


if __name__ == "__main__":
    main()
