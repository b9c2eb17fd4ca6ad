"""The chaos checker on hand-made histories: a clean one passes, and each kind of violation
it exists to find is found (so a campaign reporting 0 means something)."""

from __future__ import annotations

import itertools
from typing import Any, Optional

import pytest

from tests.chaos import checker
from tests.chaos.checker import DbRow, Limits
from tests.chaos.history import History, Record, read

LIMITS = Limits(
    global_concurrency={"q_conc": 2},
    partition_concurrency={"q_part": 1},
    worker_concurrency={"q_worker": 1},
    rate={"q_rate": (3, 2.0)},
)


class Hist:
    """Builds a history: each record one time unit after the previous one."""

    def __init__(self) -> None:
        self.records: list[Record] = []
        self.t = 0.0
        self.ops = itertools.count(1)
        self.db: dict[str, DbRow] = {}

    def rec(self, type_: str, f: str, proc: str = "w1", pid: int = 1, **kw: Any) -> Record:
        self.t += 1.0
        r: Record = {"t": self.t, "proc": proc, "pid": pid, "type": type_, "f": f, **kw}
        self.records.append(r)
        return r

    def call(
        self, f: str, outcome: Optional[str], proc: str = "p1", pid: int = 100, **kw: Any
    ) -> int:
        op = next(self.ops)
        done = kw.pop("done", {})
        self.rec("invoke", f, proc, pid, op=op, **kw)
        if outcome is not None:
            self.rec(outcome, f, proc, pid, op=op, **{**kw, **done})
        return op

    def steps(self, wf: str, first: int, last: int, pid: int = 1, prev: str = "seed") -> list[str]:
        tokens = []
        for i in range(first, last + 1):
            tok = f"{wf}#{i}"
            self.call("step", None, "w1", pid, wf=wf, idx=i, prev=prev)
            self.rec("ok", "step", "w1", pid, op=0, wf=wf, idx=i, token=tok)
            self.rec("event", "ack", "w1", pid, wf=wf, idx=i, token=tok)
            tokens.append(tok)
            prev = tok
        return tokens

    def qjob(
        self, wf: str, queue: str = "q_plain", part: Optional[str] = None, pid: int = 1,
        started_ms: Optional[int] = None, run: bool = True,
    ) -> list[str]:  # fmt: skip
        self.call("enqueue", "ok", wf=wf, kind="qjob", queue=queue)
        tokens: list[str] = []
        if run:
            self.rec("event", "wf", "w1", pid, wf=wf, at="begin", queue=queue, part=part)
            tokens = self.steps(wf, 1, 2, pid)
            self.rec("event", "wf", "w1", pid, wf=wf, at="end", queue=queue, part=part)
        self.db[wf] = DbRow("SUCCESS", "qjob", tokens, queue, started_ms, part)
        return tokens

    def check(self) -> checker.Report:
        return checker.check(self.records, self.db, LIMITS)


def kinds(rep: checker.Report) -> set[str]:
    return {k for k, _ in rep.violations}


def clean() -> Hist:
    h = Hist()
    h.qjob("a")
    h.qjob("b", "q_conc")
    h.call("get_result", "ok", wf="a")
    return h


def test_a_clean_history_passes() -> None:
    rep = clean().check()
    assert rep.violations == []
    assert rep.counts["workflows"]["started_ok"] == 2
    assert rep.counts["steps"]["bodies"] == 4


def test_history_files_round_trip(tmp_path: Any) -> None:
    h = History(str(tmp_path), "p1")
    op = h.invoke("send", dest="x", msg="m")
    h.complete("ok", "send", op, dest="x", msg="m")
    recs = read(tmp_path)
    assert [r["type"] for r in recs] == ["invoke", "ok"] and recs[0]["op"] == recs[1]["op"]


def test_lost_workflow_is_found() -> None:
    h = clean()
    h.call("enqueue", "ok", wf="c", kind="qjob", queue="q_plain")
    h.db["c"] = DbRow("ENQUEUED", "qjob")
    h.call("start", "ok", proc="w2", pid=2, wf="d", kind="chain")  # no row at all
    rep = h.check()
    assert [k for k, _ in rep.violations] == ["workflow_lost", "workflow_lost"]
    assert rep.counts["workflows"]["lost"] == 2


def test_indeterminate_start_may_or_may_not_exist() -> None:
    h = clean()
    h.call("enqueue", "info", wf="c", kind="qjob", queue="q_plain")
    h.call("enqueue", "info", wf="d", kind="qjob", queue="q_plain")
    h.db["d"] = DbRow("SUCCESS", "qjob")
    assert h.check().violations == []


def test_unexpected_workflow_is_found() -> None:
    h = clean()
    h.db["ghost"] = DbRow("SUCCESS", "qjob")
    h.call("enqueue", "fail", wf="refused", kind="qjob", queue="q_plain")
    h.db["refused"] = DbRow("SUCCESS", "qjob")
    h.db["a-c"] = DbRow("SUCCESS", "leaf")  # a child of a started workflow is expected
    rep = h.check()
    assert [k for k, _ in rep.violations] == ["workflow_unexpected", "workflow_unexpected"]


def test_step_rerun_after_its_checkpoint_was_acknowledged_is_found() -> None:
    h = clean()
    h.call("step", None, "w1", 7, wf="a", idx=2, prev="a#1")  # after a's ack of step 2
    rep = h.check()
    assert kinds(rep) == {"step_rerun_after_ack"}
    assert rep.counts["steps"]["reruns_after_ack"] == 1


def test_step_rerun_before_the_acknowledgement_is_at_least_once() -> None:
    h = Hist()
    h.call("enqueue", "ok", wf="a", kind="qjob", queue="q_plain")
    h.call("step", None, "w1", 1, wf="a", idx=1, prev="seed")  # killed in the body
    h.steps("a", 1, 2, pid=2)
    h.db["a"] = DbRow("SUCCESS", "qjob", ["a#1", "a#2"], "q_plain")
    rep = h.check()
    assert rep.violations == []
    assert rep.counts["steps"]["bodies_run_more_than_once"] == 1


def zombie(fenced: bool) -> Hist:
    """w1 (pid 1) is frozen inside step 2 of ``z``; w2 (pid 2) takes ``z`` over and runs it
    to the end; w1 resumes and its body finishes. Fenced, its checkpoint is refused (no
    ack); unfenced, it acknowledges its own token and runs step 3 again."""
    h = Hist()
    h.call("enqueue", "ok", wf="z", kind="qjob", queue="q_plain")
    h.rec("event", "wf", "w1", 1, wf="z", at="begin", queue="q_plain", part=None)
    h.steps("z", 1, 1, pid=1)
    h.call("step", None, "w1", 1, wf="z", idx=2, prev="z#1")  # SIGSTOP inside the body
    h.rec("event", "takeover", "w2", 2, dead=["w1"], n=1)
    h.rec("event", "wf", "w2", 2, wf="z", at="begin", queue="q_plain", part=None)
    h.call("step", None, "w2", 2, wf="z", idx=2, prev="z#1")
    for i in (2, 3):
        tok = f"z#{i}"
        if i == 3:
            h.call("step", None, "w2", 2, wf="z", idx=3, prev="z#2")
        h.rec("ok", "step", "w2", 2, op=0, wf="z", idx=i, token=tok)
        h.rec("event", "ack", "w2", 2, wf="z", idx=i, token=tok)
    h.rec("event", "wf", "w2", 2, wf="z", at="end", queue="q_plain", part=None)
    h.rec("ok", "step", "w1", 1, op=0, wf="z", idx=2, token="zombie#2")  # SIGCONT: body ends
    if not fenced:
        h.rec("event", "ack", "w1", 1, wf="z", idx=2, token="zombie#2")
        h.call("step", None, "w1", 1, wf="z", idx=3, prev="zombie#2")
    h.db["z"] = DbRow("SUCCESS", "qjob", ["z#1", "z#2", "z#3"], "q_plain")
    return h


def test_a_fenced_zombie_after_a_takeover_passes_and_the_takeover_is_counted() -> None:
    rep = zombie(fenced=True).check()
    assert rep.violations == []
    assert rep.counts["takeovers"] == {"takeovers": 1, "workflows_taken_over": 1}
    assert rep.counts["steps"]["bodies_run_more_than_once"] == 1  # at least once, allowed


def test_an_unfenced_zombie_running_on_after_a_takeover_is_found() -> None:
    rep = zombie(fenced=False).check()
    assert kinds(rep) == {"step_acked_twice", "step_rerun_after_ack", "nonce_chain_broken"}


def test_a_zombie_run_holds_no_queue_slot_after_its_takeover() -> None:
    """q_conc allows 2: the zombie's run of ``a`` ends (for the limit) where the peer's run
    of ``a`` begins, though the zombie wrote a record later; ``b`` and ``c`` fit."""
    h = Hist()
    for wf in ("a", "b", "c"):
        h.call("enqueue", "ok", wf=wf, kind="qjob", queue="q_conc")
        h.db[wf] = DbRow("SUCCESS", "qjob", None, "q_conc")
    h.rec("event", "wf", "w1", 1, wf="a", at="begin", queue="q_conc")
    h.rec("event", "wf", "w2", 2, wf="a", at="begin", queue="q_conc")  # taken over
    h.rec("event", "wf", "w2", 2, wf="a", at="end", queue="q_conc")
    h.rec("event", "wf", "w2", 2, wf="b", at="begin", queue="q_conc")
    h.rec("event", "wf", "w2", 2, wf="c", at="begin", queue="q_conc")
    h.rec("ok", "step", "w1", 1, op=0, wf="a", idx=1, token="late")  # the zombie resumes
    h.rec("event", "wf", "w2", 2, wf="b", at="end", queue="q_conc")
    h.rec("event", "wf", "w2", 2, wf="c", at="end", queue="q_conc")
    rep = h.check()
    assert not kinds(rep) & {"concurrency_exceeded"}
    assert rep.counts["queues_max_seen"]["q_conc"] == 2


def test_fork_rerunning_a_copied_step_is_found() -> None:
    h = clean()
    h.call("fork", "ok", wf="f", src="a", start_step=2)
    h.steps("f", 2, 2, prev="a#1")  # good: step 1 copied, step 2 chained on a's token
    h.db["f"] = DbRow("SUCCESS", "qjob", ["a#1", "f#2"])
    assert h.check().violations == []
    h.call("step", None, "w1", 1, wf="f", idx=1, prev="seed")
    assert kinds(h.check()) == {"step_rerun_after_ack"}


def test_broken_nonce_chain_is_found() -> None:
    h = clean()
    h.call("enqueue", "ok", wf="c", kind="qjob", queue="q_plain")
    h.steps("c", 1, 1)
    h.steps("c", 2, 2, prev="recomputed-token")
    h.db["c"] = DbRow("SUCCESS", "qjob", ["c#1", "c#2"])
    assert kinds(h.check()) == {"nonce_chain_broken"}


def test_checkpoint_no_body_produced_is_found() -> None:
    h = clean()
    h.call("enqueue", "ok", wf="c", kind="qjob", queue="q_plain")
    h.rec("event", "ack", wf="c", idx=1, token="from-nowhere")
    h.db["c"] = DbRow("SUCCESS", "qjob", ["from-nowhere"])
    assert kinds(h.check()) == {"checkpoint_without_body"}


def test_stored_output_differing_from_the_acknowledged_checkpoints_is_found() -> None:
    h = clean()
    h.db["a"] = DbRow("SUCCESS", "qjob", ["a#1", "other"])
    assert kinds(h.check()) == {"wrong_output"}


def mailbox(h: Hist, wf: str, sends: list[tuple[str, str]], received: list[str]) -> None:
    h.call("enqueue", "ok", wf=wf, kind="mailbox", queue="q_plain")
    for msg, outcome in sends:
        h.call("send", outcome, dest=wf, msg=msg)
    h.call("send", "ok", dest=wf, msg="END")
    for pos, v in enumerate(received):
        h.rec("event", "recv", wf=wf, pos=pos, value=v)
    h.db[wf] = DbRow("SUCCESS", "mailbox", received)


def test_messages_delivered_once_pass() -> None:
    h = clean()
    mailbox(h, "m", [("x", "ok"), ("y", "info"), ("z", "info")], ["x", "y"])
    rep = h.check()
    assert rep.violations == []
    assert rep.counts["messages"]["recovered"] == 1


def test_lost_message_is_found() -> None:
    h = clean()
    mailbox(h, "m", [("x", "ok"), ("y", "ok")], ["x"])
    assert kinds(h.check()) == {"message_lost"}


def test_duplicated_message_is_found() -> None:
    h = clean()
    mailbox(h, "m", [("x", "ok")], ["x", "x"])
    assert kinds(h.check()) == {"message_duplicated"}
    h = clean()  # or twice in the recv records, though the output holds it once
    mailbox(h, "m", [("x", "ok")], ["x"])
    h.rec("event", "recv", wf="m", pos=1, value="x")
    assert kinds(h.check()) == {"message_duplicated"}


def test_unexpected_message_is_found() -> None:
    h = clean()
    mailbox(h, "m", [("x", "ok")], ["x", "never-sent"])
    assert kinds(h.check()) == {"message_unexpected"}
    h = clean()  # a send that failed definitely (a full database) was delivered after all
    mailbox(h, "m", [("x", "ok"), ("y", "fail")], ["x", "y"])
    assert kinds(h.check()) == {"message_unexpected"}


def test_global_concurrency_exceeded_is_found() -> None:
    h = Hist()
    for wf in ("a", "b", "c"):
        h.call("enqueue", "ok", wf=wf, kind="qjob", queue="q_conc")
        h.db[wf] = DbRow("SUCCESS", "qjob", None, "q_conc")
    for wf in ("a", "b", "c"):  # three bodies begin before any ends
        h.rec("event", "wf", wf=wf, at="begin", queue="q_conc", part=None)
    for wf in ("a", "b", "c"):
        h.rec("event", "wf", wf=wf, at="end", queue="q_conc", part=None)
    rep = h.check()
    assert kinds(rep) == {"concurrency_exceeded"}
    assert rep.counts["queues_max_seen"]["q_conc"] == 3


def test_one_workflow_in_two_runs_counts_once() -> None:
    h = Hist()
    h.call("enqueue", "ok", wf="a", kind="qjob", queue="q_conc")
    h.call("enqueue", "ok", wf="b", kind="qjob", queue="q_conc")
    h.db["a"] = DbRow("SUCCESS", "qjob", None, "q_conc")
    h.db["b"] = DbRow("SUCCESS", "qjob", None, "q_conc")
    h.rec("event", "wf", "w1", 1, wf="a", at="begin", queue="q_conc")
    h.rec("event", "wf", "w1", 2, wf="a", at="begin", queue="q_conc")
    h.rec("event", "wf", "w1", 3, wf="b", at="begin", queue="q_conc")
    h.rec("event", "wf", "w1", 1, wf="a", at="end", queue="q_conc")
    h.rec("event", "wf", "w1", 2, wf="a", at="end", queue="q_conc")
    h.rec("event", "wf", "w1", 3, wf="b", at="end", queue="q_conc")
    assert h.check().violations == []


def test_partition_and_worker_concurrency_exceeded_are_found() -> None:
    h = Hist()
    for wf, part in (("a", "p0"), ("b", "p1"), ("c", "p0")):
        h.call("enqueue", "ok", wf=wf, kind="qjob", queue="q_part")
        h.db[wf] = DbRow("SUCCESS", "qjob", None, "q_part", None, part)
        h.rec("event", "wf", wf=wf, at="begin", queue="q_part", part=part)
    for wf in ("d", "e"):
        h.call("enqueue", "ok", wf=wf, kind="qjob", queue="q_worker")
        h.db[wf] = DbRow("SUCCESS", "qjob", None, "q_worker")
        h.rec("event", "wf", "w1", 5, wf=wf, at="begin", queue="q_worker")
    h.rec("event", "wf", "w2", 6, wf="f", at="begin", queue="q_worker")  # another process
    h.call("enqueue", "ok", wf="f", kind="qjob", queue="q_worker")
    h.db["f"] = DbRow("SUCCESS", "qjob", None, "q_worker")
    for wf, pid in (("a", 1), ("b", 1), ("c", 1), ("d", 5), ("e", 5), ("f", 6)):
        h.rec("event", "wf", "w1", pid, wf=wf, at="end")
    details = [d for _, d in h.check().violations]
    assert len(details) == 2
    assert "q_part partition p0: 2 at once" in details[0]
    assert "q_worker process 5: 2 at once" in details[1]


def test_rate_exceeded_is_found() -> None:
    h = Hist()
    for i, ms in enumerate([0, 500, 1000, 2100, 2600, 3100]):  # at most 3 in any 2 s
        h.qjob(f"r{i}", "q_rate", started_ms=ms, run=False)
    assert h.check().violations == []
    h.qjob("r9", "q_rate", started_ms=3200, run=False)  # 2100, 2600, 3100, 3200
    rep = h.check()
    assert kinds(rep) == {"rate_exceeded"}
    assert rep.counts["queues_max_seen"]["q_rate/rate"] == 4


def test_waiter_that_never_returned_is_found() -> None:
    h = clean()
    h.call("get_result", None, wf="a")
    h.call("step", None, "w1", 9, wf="a", idx=3, prev="a#2")  # a worker killed mid-step: fine
    rep = h.check()
    assert kinds(rep) == {"waiter_never_returned"}
    assert rep.counts["waiters_never_returned"] == 1


def test_event_read_that_was_not_set_is_found() -> None:
    h = clean()
    h.call("set_event", "ok", "w1", 1, wf="a", key="e", value="v1")
    h.call("get_event", "ok", wf="a", key="e", done={"value": "v1"})
    h.call("get_event", "ok", wf="a", key="e", done={"value": None})  # timed out: fine
    assert h.check().violations == []
    h.call("get_event", "ok", wf="a", key="e", done={"value": "v2"})  # read before set
    h.call("set_event", "ok", "w1", 1, wf="a", key="e", value="v2")
    h.call("get_event", "ok", wf="a", key="e", done={"value": "bogus"})
    rep = h.check()
    assert [k for k, _ in rep.violations] == ["event_not_set", "event_not_set"]


def test_stream_read_out_of_order_or_twice_is_found() -> None:
    h = clean()
    h.call("read_stream", "ok", wf="s", done={"value": [0, 1, 2]})
    h.call("read_stream", "ok", wf="s", done={"value": [0, 1]})  # a prefix (reader timed out)
    assert h.check().violations == []
    h.call("read_stream", "ok", wf="s", done={"value": [0, 1, 1, 2]})
    h.call("read_stream", "ok", wf="s", done={"value": [1, 0]})
    assert [k for k, _ in h.check().violations] == ["stream_disorder", "stream_disorder"]


def test_workflow_timeout_ignored_is_found() -> None:
    h = clean()
    h.call("start", "ok", "w1", 1, wf="t", kind="timeboxed")
    h.db["t"] = DbRow("CANCELLED", "timeboxed")
    assert h.check().violations == []
    h.db["t"] = DbRow("SUCCESS", "timeboxed")
    assert kinds(h.check()) == {"timeout_ignored"}


@pytest.mark.parametrize("jumped", [False, True])
def test_durable_sleep_woken_early_is_found_unless_the_clock_jumped(jumped: bool) -> None:
    h = clean()
    fault = None
    if jumped:
        fault = h.call("fault", None, "nemesis", 50, kind="clock_jump", target=0, duration=5)
    h.call("sleep", "ok", "w3", 3, wf="a", seconds=10.0)  # 1 s apart in the built history
    if fault is not None:
        h.rec("ok", "fault", "nemesis", 50, op=fault, kind="clock_jump", pids=[3])
    h.call("sleep", None, "w3", 4, wf="b", seconds=1.0)  # recovered: the replay re-invokes
    h.call("sleep", "ok", "w3", 4, wf="b", seconds=1.0)
    rep = h.check()
    assert rep.counts["sleeps_woken_early"] == 1
    assert kinds(rep) == (set() if jumped else {"sleep_woke_early"})


@pytest.mark.parametrize("still_off", [True, False])
def test_a_sleep_after_a_clock_jump_is_excused_only_while_the_process_clock_was_off(
    still_off: bool,
) -> None:
    """libfaketime applies the end of a jump lazily: the worker's own clock records decide."""
    h = clean()
    h.rec("event", "clock", "nemesis", 50, skew=1000.0)  # the true skew
    h.rec("event", "clock", "w3", 3, skew=1000.0)
    fault = h.call("fault", None, "nemesis", 50, kind="clock_jump", target=0, duration=5)
    h.rec("event", "clock", "w3", 3, skew=1120.0)  # the worker sees the jump
    h.rec("ok", "fault", "nemesis", 50, op=fault, kind="clock_jump", pids=[3])
    if not still_off:
        h.rec("event", "clock", "w3", 3, skew=1000.2)  # back (within the tolerance)
    h.call("sleep", "ok", "w3", 3, wf="a", seconds=10.0)  # began after the fault ended
    if still_off:
        h.rec("event", "clock", "w3", 3, skew=1000.0)  # back only after the sleep
    rep = h.check()
    assert rep.counts["sleeps_woken_early"] == 1
    assert kinds(rep) == (set() if still_off else {"sleep_woke_early"})


def test_a_process_killed_with_its_clock_off_is_off_until_its_last_record() -> None:
    h = clean()
    h.rec("event", "clock", "nemesis", 50, skew=0.0)
    h.rec("event", "clock", "w3", 3, skew=-200.0)  # launched during a jump, then killed
    h.call("sleep", "ok", "w3", 3, wf="a", seconds=10.0)
    h.call("sleep", "ok", "w3", 4, wf="b", seconds=10.0)  # its next incarnation: clock fine
    h.rec("event", "clock", "w3", 4, skew=0.0)
    rep = h.check()
    assert rep.counts["sleeps_woken_early"] == 2
    assert [d.split(":")[0] for _, d in rep.violations] == ["b"]


def test_recovery_time_after_each_fault() -> None:
    h = clean()
    op = h.call("fault", None, "nemesis", 50, kind="kill", target=0, duration=1)
    h.rec("ok", "fault", "nemesis", 50, op=op, kind="kill", pids=[2])  # healed at t0
    t0 = h.t
    h.steps("a2", 1, 1, pid=1)  # another process: does not count for a kill
    h.steps("a3", 1, 1, pid=2)  # the restarted worker's first checkpoint: its ack
    first_ack = h.t
    op = h.call("fault", None, "nemesis", 50, kind="net_cut", target=0, duration=1)
    h.rec("ok", "fault", "nemesis", 50, op=op, kind="net_cut", pids=[])
    rep = checker.check(h.records, h.db, LIMITS)
    rec = rep.counts["recovery_seconds"]
    assert rec["kill"]["p99"] == pytest.approx(first_ack - t0)
    assert rep.counts["faults_without_recovery"] == {"net_cut": 1}
    assert rep.counts["faults"] == {"kill": 1, "net_cut": 1}
