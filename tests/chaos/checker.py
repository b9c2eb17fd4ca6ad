"""The checker: the operation history (``history.py``) against the system database's end state.

Pure functions over plain data (records, and one ``DbRow`` per workflow), so that
``test_checker.py`` can feed it hand-made histories with each kind of violation.

What it reports, per run (Jepsen's definitions, reliability.md B3 and B6):

* workflows started / completed / lost: an *ok* start (start_workflow, enqueue, fork) whose
  workflow is not in a terminal status at the end is lost; an *info* (indeterminate) start
  may or may not exist; a row that nobody attempted is unexpected.
* acknowledged messages lost or delivered twice: an *ok* send to a mailbox that returned must
  be in what it received exactly once; a received message must have been sent.
* step bodies run again AFTER their checkpoint was acknowledged (``ack``, written by the
  workflow once the step call returned): must be 0. Forks must not re-run copied steps. Two
  acknowledgements of one step with different tokens (a zombie whose late checkpoint was
  accepted after a peer took its work over, or any double run) are a violation too.
* takeovers: how often a worker took over the work of a silent (paused, cut-off) peer.
* nonce chaining: every step body received the token its predecessor's checkpoint holds, and
  every stored output token is one that a body really produced (at-least-once body).
* queue limits: concurrency from the history's intervals (distinct workflows whose bodies ran
  at once: globally, per partition, per process), rate per window from the claim times the
  database recorded (the limiter's own clock).
* waiters that never returned: a producer's call with no completion (producers are never
  faulted, and they finish every call before exiting).
* events read that had not been set, stream reads out of order or duplicated.
* a workflow timeout that did not end its workflow; a durable sleep that woke early (outside
  a clock-jump fault).
* recovery time after each fault: from the heal to the first checkpoint acknowledged by an
  affected process (the restarted worker, the resumed one, or anyone after a database or
  network fault); p50 / p99 / max per fault kind.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Optional

from tests.chaos.history import Record, completions

TERMINAL = {"SUCCESS", "ERROR", "CANCELLED", "MAX_RECOVERY_ATTEMPTS_EXCEEDED"}
SEED_TOKEN = "seed"
SLEEP_TOLERANCE = 0.25  # seconds a durable sleep may end early (clock granularity, rounding)
# A worker records its wall-minus-monotonic skew each time it changes by more than this
# (workload._clock_watch, every CLOCK_WATCH seconds); the nemesis records the true skew.
CLOCK_OFF = 0.5
CLOCK_WATCH = 0.05
START_OPS = ("start", "enqueue", "fork")


@dataclass
class DbRow:
    status: str
    name: str = ""
    output: Any = None
    queue: Optional[str] = None
    started_at_ms: Optional[int] = None
    partition: Optional[str] = None
    error: Optional[str] = None  # the stored error, as text


@dataclass
class Limits:
    global_concurrency: dict[str, int] = field(default_factory=dict)  # queue -> limit
    partition_concurrency: dict[str, int] = field(default_factory=dict)
    worker_concurrency: dict[str, int] = field(default_factory=dict)
    rate: dict[str, tuple[int, float]] = field(default_factory=dict)  # queue -> (limit, period)


@dataclass
class Report:
    counts: dict[str, Any] = field(default_factory=dict)
    violations: list[tuple[str, str]] = field(default_factory=list)

    def violation(self, kind: str, detail: str) -> None:
        self.violations.append((kind, detail))

    def by_kind(self) -> dict[str, int]:
        return dict(Counter(k for k, _ in self.violations))


def percentile(values: list[float], p: float) -> Optional[float]:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(p / 100 * len(s)) - 1))]


def check(records: list[Record], db: dict[str, DbRow], limits: Limits) -> Report:
    rep = Report()
    _operations(records, rep)
    _workflows(records, db, rep)
    _steps(records, db, rep)
    _messages(records, db, rep)
    _queues(records, db, limits, rep)
    _waiters(records, rep)
    _events_streams(records, rep)
    _time(records, db, rep)
    _recovery(records, rep)
    rep.counts["violations"] = rep.by_kind()
    return rep


# -- counting -----------------------------------------------------------------------------------


def _operations(records: list[Record], rep: Report) -> None:
    ops: Counter[str] = Counter()
    for inv, done in completions(records):
        if inv["f"] == "fault":
            continue
        ops[f"{inv['f']}:{done['type'] if done else 'none'}"] += 1
    ops["step-bodies"] = sum(1 for r in records if r["f"] == "step" and r["type"] == "invoke")
    ops["acks"] = sum(1 for r in records if r["f"] == "ack")
    rep.counts["operations"] = dict(sorted(ops.items()))
    takeovers = [r for r in records if r["f"] == "takeover"]
    rep.counts["takeovers"] = {
        "takeovers": len(takeovers),
        "workflows_taken_over": sum(int(r.get("n", 0)) for r in takeovers),
    }
    faults: Counter[str] = Counter(
        r["kind"] for r in records if r["f"] == "fault" and r["type"] == "invoke"
    )
    rep.counts["faults"] = dict(sorted(faults.items()))


def _attempted(records: list[Record]) -> tuple[dict[str, str], set[str]]:
    """Start outcome per workflow ID (ok beats info beats fail), and every ID attempted."""
    rank = {"ok": 3, "info": 2, "fail": 1, "none": 0}
    outcome: dict[str, str] = {}
    for inv, done in completions(records):
        if inv["f"] not in START_OPS:
            continue
        t = done["type"] if done else "none"
        wf = inv["wf"]
        if rank[t] > rank.get(outcome.get(wf, "none"), -1) or wf not in outcome:
            outcome[wf] = t
    return outcome, set(outcome)


def _workflows(records: list[Record], db: dict[str, DbRow], rep: Report) -> None:
    outcome, attempted = _attempted(records)
    acked = {wf for wf, t in outcome.items() if t == "ok"}
    statuses: Counter[str] = Counter(row.status for row in db.values())
    lost = []
    for wf in sorted(acked):
        row = db.get(wf)
        if row is None or row.status not in TERMINAL:
            lost.append(wf)
            rep.violation("workflow_lost", f"{wf}: {'no row' if row is None else row.status}")
    for wf in sorted(db):
        parent = wf[:-2] if wf.endswith("-c") else None
        if wf in attempted or (parent is not None and (parent in attempted or parent in db)):
            continue
        rep.violation("workflow_unexpected", f"{wf}: a row nobody started")
    for wf, t in outcome.items():
        if t == "fail" and wf in db:
            rep.violation("workflow_unexpected", f"{wf}: start failed definitely, row exists")
    children = [wf for wf in db if wf.endswith("-c")]
    errors: Counter[str] = Counter(
        f"{row.name}: {row.error}"[:200] for row in db.values() if row.status == "ERROR"
    )
    rep.counts["errors"] = dict(errors.most_common(10))
    rep.counts["workflows"] = {
        "started_ok": len(acked),
        "started_indeterminate": sum(1 for t in outcome.values() if t in ("info", "none")),
        "indeterminate_that_exist": sum(
            1 for wf, t in outcome.items() if t in ("info", "none") and wf in db
        ),
        "children": len(children),
        "rows": len(db),
        "by_status": dict(sorted(statuses.items())),
        "lost": len(lost),
    }


# -- steps --------------------------------------------------------------------------------------


def _fork_sources(records: list[Record]) -> dict[str, tuple[str, int]]:
    return {
        inv["wf"]: (inv["src"], int(inv["start_step"]))
        for inv, done in completions(records)
        if inv["f"] == "fork"
    }


def _steps(records: list[Record], db: dict[str, DbRow], rep: Report) -> None:
    forks = _fork_sources(records)
    first_ack: dict[tuple[str, int], Record] = {}
    produced: dict[tuple[str, int], set[str]] = defaultdict(set)
    for r in records:
        if r["f"] == "ack":
            first = first_ack.setdefault((r["wf"], r["idx"]), r)
            if r["token"] != first["token"]:
                rep.violation(
                    "step_acked_twice",
                    f"{r['wf']} step {r['idx']}: acknowledged {first['token']!r} by "
                    f"{first['proc']}/{first['pid']}, then {r['token']!r} by "
                    f"{r['proc']}/{r['pid']} (two checkpoints of one step)",
                )
        elif r["f"] == "step" and r["type"] == "ok":
            produced[(r["wf"], r["idx"])].add(r["token"])

    def acked_token(wf: str, idx: int) -> Optional[str]:
        """The checkpointed token of step idx: this workflow's ack, or a fork's source's."""
        if idx == 0:
            return SEED_TOKEN
        src = forks.get(wf)
        if src is not None and idx < src[1]:
            return acked_token(src[0], idx)
        ack = first_ack.get((wf, idx))
        return None if ack is None else str(ack["token"])

    reruns = 0
    bodies: Counter[tuple[str, int]] = Counter()
    for r in records:
        if r["f"] != "step" or r["type"] != "invoke":
            continue
        wf, idx = r["wf"], int(r["idx"])
        bodies[(wf, idx)] += 1
        ack = first_ack.get((wf, idx))
        src = forks.get(wf)
        if src is not None and idx < src[1]:
            reruns += 1
            rep.violation("step_rerun_after_ack", f"{wf} step {idx}: a fork re-ran a copied step")
        elif ack is not None and r["t"] > ack["t"]:
            reruns += 1
            rep.violation(
                "step_rerun_after_ack",
                f"{wf} step {idx}: body started by {r['proc']}/{r['pid']} "
                f"{r['t'] - ack['t']:.3f}s after its checkpoint was acknowledged",
            )
        want = acked_token(wf, idx - 1)
        if want is not None and r["prev"] != want:
            rep.violation(
                "nonce_chain_broken",
                f"{wf} step {idx}: body got {r['prev']!r}, step {idx - 1}'s checkpoint is {want!r}",
            )
    for (wf, idx), ack in first_ack.items():
        src = forks.get(wf)
        if src is not None and idx < src[1]:
            continue  # a copied checkpoint: its body ran in the source
        if ack["token"] not in produced[(wf, idx)]:
            rep.violation(
                "checkpoint_without_body",
                f"{wf} step {idx}: checkpoint {ack['token']!r} no body produced",
            )
    # The stored outputs hold the acknowledged tokens (exactly-once outcome).
    for wf, row in db.items():
        if row.status != "SUCCESS" or row.output is None:
            continue
        tokens: Optional[list[Any]] = None
        if row.name in ("qjob", "leaf") and isinstance(row.output, list):
            tokens = row.output
        elif row.name == "chain" and isinstance(row.output, dict):
            tokens = row.output.get("tokens")
        if tokens is None:
            continue
        for i, tok in enumerate(tokens, start=1):
            want = acked_token(wf, i)
            if want is not None and tok != want:
                rep.violation(
                    "wrong_output", f"{wf}: output step {i} is {tok!r}, acknowledged {want!r}"
                )
    rep.counts["steps"] = {
        "bodies": sum(bodies.values()),
        "distinct_steps": len(bodies),
        "bodies_run_more_than_once": sum(1 for n in bodies.values() if n > 1),
        "reruns_after_ack": reruns,
    }


# -- messages -----------------------------------------------------------------------------------


def _messages(records: list[Record], db: dict[str, DbRow], rep: Report) -> None:
    sends: dict[str, dict[str, str]] = defaultdict(dict)  # dest -> value -> outcome
    attempted: set[str] = set()
    for inv, done in completions(records):
        if inv["f"] == "send" and inv["msg"] != "END":
            attempted.add(inv["msg"])
            sends[inv["dest"]][inv["msg"]] = done["type"] if done else "none"
    received: dict[tuple[str, int], str] = {}
    for r in records:
        if r["f"] == "recv":
            key = (r["wf"], int(r["pos"]))
            if key in received and received[key] != r["value"]:
                rep.violation(
                    "message_replay_differs",
                    f"{r['wf']} recv #{r['pos']}: {received[key]!r} then {r['value']!r}",
                )
            received.setdefault(key, r["value"])
    seen: dict[str, Counter[str]] = defaultdict(Counter)
    for (wf, _), value in received.items():
        if value != "END":
            seen[wf][value] += 1
    lost = dup = unexpected = recovered = 0
    for wf, row in db.items():
        if row.name != "mailbox":
            continue
        got: Counter[str] = Counter(row.output if row.status == "SUCCESS" else [])
        got.update({v: 0 for v in seen[wf]})
        for v, n in got.items():
            n = max(n, seen[wf][v])
            if n > 1:
                dup += 1
                rep.violation("message_duplicated", f"{wf}: {v!r} delivered {n} times")
            if v not in attempted:
                unexpected += 1
                rep.violation("message_unexpected", f"{wf}: {v!r} was never sent")
        if row.status != "SUCCESS":
            continue
        for v, outcome in sends[wf].items():
            if outcome == "ok" and got[v] == 0:
                lost += 1
                rep.violation("message_lost", f"{wf}: acknowledged send {v!r} never received")
            elif outcome == "fail" and got[v] > 0:
                unexpected += 1
                rep.violation("message_unexpected", f"{wf}: {v!r} delivered, its send failed")
            elif outcome != "ok" and got[v] > 0:
                recovered += 1
    rep.counts["messages"] = {
        "sent_ok": sum(1 for d in sends.values() for o in d.values() if o == "ok"),
        "sent_indeterminate": sum(1 for d in sends.values() for o in d.values() if o != "ok"),
        "received": sum(sum(c.values()) for c in seen.values()),
        "lost": lost,
        "duplicated": dup,
        "unexpected": unexpected,
        "recovered": recovered,
    }


# -- queues -------------------------------------------------------------------------------------


def _intervals(records: list[Record]) -> list[tuple[str, int, str, Optional[str], float, float]]:
    """(wf, pid, queue, partition, begin, end) per run of a queued workflow body: from its
    'wf begin' to the last record that run wrote for the workflow."""
    runs: dict[tuple[str, int], list[Any]] = {}
    for r in records:
        if r["f"] == "wf" and r.get("at") == "begin" and r.get("queue"):
            runs[(r["wf"], r["pid"])] = [r["queue"], r.get("part"), r["t"], r["t"]]
        elif "wf" in r and (r["wf"], r["pid"]) in runs:
            runs[(r["wf"], r["pid"])][3] = r["t"]
    # A run whose workflow began again in another process had lost its place when that run
    # was admitted (a peer took it over from a frozen or cut-off zombie): what the zombie does
    # after that is fenced (checked by the step checks), not a slot it holds.
    began: dict[str, list[float]] = defaultdict(list)
    for (wf, _), run in runs.items():
        began[wf].append(run[2])
    for (wf, _), run in runs.items():
        later = [b for b in began[wf] if b > run[2]]
        if later:
            run[3] = min(run[3], min(later))
    # A run killed right after it began still held its place for an instant.
    return [(wf, pid, q, p, b, max(e, b + 1e-6)) for (wf, pid), (q, p, b, e) in runs.items()]


def _max_overlap(spans: list[tuple[str, float, float]]) -> tuple[int, float]:
    """Most distinct workflows inside their spans at one instant (and when)."""
    points = sorted(
        [(b, 1, wf) for wf, b, _ in spans] + [(e, -1, wf) for wf, _, e in spans],
        key=lambda x: (x[0], x[1]),  # at a tie, an end before a begin
    )
    active: Counter[str] = Counter()
    best, when = 0, 0.0
    for t, d, wf in points:
        active[wf] += d
        if active[wf] == 0:
            del active[wf]
        if len(active) > best:
            best, when = len(active), t
    return best, when


def _queues(records: list[Record], db: dict[str, DbRow], limits: Limits, rep: Report) -> None:
    runs = _intervals(records)
    seen: dict[str, int] = {}
    for queue, limit in limits.global_concurrency.items():
        n, t = _max_overlap([(wf, b, e) for wf, _, q, _, b, e in runs if q == queue])
        seen[queue] = n
        if n > limit:
            rep.violation("concurrency_exceeded", f"{queue}: {n} at once (limit {limit}) at t={t}")
    per = [
        ("partition", limits.partition_concurrency, 3),
        ("process", limits.worker_concurrency, 1),
    ]
    for label, table, field_ in per:  # a limit per partition key, per worker process
        for queue, limit in table.items():
            most = 0
            for group in {run[field_] for run in runs if run[2] == queue}:
                spans = [(r[0], r[4], r[5]) for r in runs if r[2] == queue and r[field_] == group]
                n, t = _max_overlap(spans)
                most = max(most, n)
                if n > limit:
                    rep.violation(
                        "concurrency_exceeded",
                        f"{queue} {label} {group}: {n} at once (limit {limit}) at t={t}",
                    )
            seen[f"{queue}/{label}"] = most
    for queue, (limit, period) in limits.rate.items():
        starts = sorted(
            row.started_at_ms for row in db.values() if row.queue == queue and row.started_at_ms
        )
        most, j = 0, 0
        for i, t0 in enumerate(starts):
            while starts[j] <= t0 - period * 1000:
                j += 1
            most = max(most, i - j + 1)
        seen[f"{queue}/rate"] = most
        if most > limit:
            rep.violation(
                "rate_exceeded", f"{queue}: {most} started within {period}s (limit {limit})"
            )
    rep.counts["queues_max_seen"] = seen


# -- liveness of callers, events, streams --------------------------------------------------------


def _waiters(records: list[Record], rep: Report) -> None:
    stuck = 0
    for inv, done in completions(records):
        if done is None and inv["proc"].startswith("p") and inv["f"] != "fault":
            stuck += 1
            rep.violation(
                "waiter_never_returned", f"{inv['proc']} {inv['f']} {inv.get('wf', '')}".strip()
            )
    rep.counts["waiters_never_returned"] = stuck


def _events_streams(records: list[Record], rep: Report) -> None:
    set_at: dict[tuple[str, str], list[tuple[float, Any]]] = defaultdict(list)
    for r in records:
        if r["f"] == "set_event" and r["type"] == "invoke":
            set_at[(r["wf"], r["key"])].append((r["t"], r["value"]))
    reads = bad = 0
    for inv, done in completions(records):
        if inv["f"] == "get_event" and done is not None and done["type"] == "ok":
            reads += 1
            value = done.get("value")
            if value is None:
                continue
            ok = any(v == value and t <= done["t"] for t, v in set_at[(inv["wf"], inv["key"])])
            if not ok:
                bad += 1
                rep.violation(
                    "event_not_set", f"{inv['wf']} {inv['key']}: read {value!r}, never set"
                )
    streams = 0
    for inv, done in completions(records):
        if inv["f"] == "read_stream" and done is not None and done["type"] == "ok":
            streams += 1
            values = done.get("value") or []
            if values != list(range(len(values))):
                rep.violation("stream_disorder", f"{inv['wf']}: read {values!r}")
    rep.counts["events"] = {"reads": reads, "not_set": bad}
    rep.counts["stream_reads"] = streams


def _time(records: list[Record], db: dict[str, DbRow], rep: Report) -> None:
    for wf, row in db.items():
        if row.name == "timeboxed" and row.status == "SUCCESS":
            rep.violation("timeout_ignored", f"{wf}: finished an hour's sleep past its timeout")
    clock = _clock_off(records)
    first: dict[str, Record] = {}  # a workflow's first sleep invoke (replays invoke again)
    early = 0
    for r in records:
        if r["f"] != "sleep":
            continue
        if r["type"] == "invoke":
            first.setdefault(r["wf"], r)
        elif r["type"] == "ok" and r["wf"] in first:
            began = first[r["wf"]]
            slept = r["t"] - began["t"]
            if slept < float(r["seconds"]) - SLEEP_TOLERANCE:
                jumped = any(a <= r["t"] and b >= began["t"] for a, b in clock)
                early += 1
                if not jumped:
                    rep.violation(
                        "sleep_woke_early",
                        f"{r['wf']}: slept {slept:.2f}s of {r['seconds']:.2f}s",
                    )
    rep.counts["sleeps_woken_early"] = early


def _clock_off(records: list[Record]) -> list[tuple[float, float]]:
    """The times some process's wall clock was off: while a clock_jump fault ran, and while a
    process's own clock records (``clock`` events) showed a skew off the nemesis's true one.

    libfaketime applies a new offset lazily, so a process can keep a jumped clock past the
    fault's end; its own records bound that to one sampling period, with no fixed allowance.
    A process whose last clock record is off (it was killed jumped) stays off until its end.
    """
    off = [
        (inv["t"], done["t"] if done else math.inf)
        for inv, done in completions(records)
        if inv["f"] == "fault" and inv["kind"] == "clock_jump"
    ]
    clocks = [r for r in records if r["type"] == "event" and r["f"] == "clock"]
    true_skew = next((float(r["skew"]) for r in clocks if r["proc"] == "nemesis"), None)
    if true_skew is None:
        return off
    last_t: dict[int, float] = {}
    for r in records:
        last_t[r["pid"]] = float(r["t"])
    began: dict[int, float] = {}  # pid -> when its clock was first seen off
    for r in clocks:
        if r["proc"] == "nemesis":
            continue
        pid, t = r["pid"], float(r["t"])
        if abs(float(r["skew"]) - true_skew) > CLOCK_OFF:
            began.setdefault(pid, t - CLOCK_WATCH)
        elif pid in began:
            off.append((began.pop(pid), t))
    off.extend((t, last_t[pid]) for pid, t in began.items())
    return off


def _recovery(records: list[Record], rep: Report) -> None:
    acks = [(r["t"], r["pid"]) for r in records if r["f"] == "ack"]
    times: dict[str, list[float]] = defaultdict(list)
    unrecovered: Counter[str] = Counter()
    for inv, done in completions(records):
        if inv["f"] != "fault" or done is None:
            continue
        healed = done["t"]
        pids = set(done.get("pids") or [])
        after = [t for t, pid in acks if t >= healed and (not pids or pid in pids)]
        if after:
            times[inv["kind"]].append(min(after) - healed)
        else:
            unrecovered[inv["kind"]] += 1
    rep.counts["recovery_seconds"] = {
        kind: {
            "n": len(v),
            "p50": round(percentile(v, 50) or 0, 3),
            "p99": round(percentile(v, 99) or 0, 3),
            "max": round(max(v), 3),
        }
        for kind, v in sorted(times.items())
    }
    rep.counts["faults_without_recovery"] = dict(unrecovered)
