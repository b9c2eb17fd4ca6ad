"""Recovery and claims: taking back PENDING work, claiming queued work under every kind of
limit, in priority order and by version, delays, deduplication, debouncing, dead letters."""

from __future__ import annotations

import random
import threading
import time
from typing import Any

import pytest

from tests.storage.build import (
    EXECUTOR,
    T0,
    claim_request,
    enqueue,
    ids,
    start,
    status,
    step,
)
from waypoint.storage import sql_queues
from waypoint.storage.protocol import Completion, DebounceUpdate, RecoveryRequest, Store

INTERNAL = "_wp_internal"

# -- recover_pending ----------------------------------------------------------------------------


def pending_mix(store: Store) -> None:
    start(store, "mine")
    start(store, "mine-queued", queue_name="q")
    start(store, "other-executor", executor_id="exec-2")
    start(store, "other-version", application_version="v0")
    start(store, "other-app", application_name="other")
    start(store, "no-app", application_name=None)
    start(store, "done")
    store.complete_workflow(Completion("done", "run-done", "SUCCESS", None, None, T0))


def test_recover_without_claimant_requeues(store: Store) -> None:
    pending_mix(store)
    found = store.recover_pending(RecoveryRequest([EXECUTOR], "v1", "app", INTERNAL, T0 + 9))
    # Every version's work is taken back from the executor; each keeps its version.
    assert sorted(found.workflow_ids) == ["mine", "mine-queued", "no-app", "other-version"]
    assert found.claimed == []
    mine = store.get_workflow("mine")
    assert mine is not None and (mine.status, mine.queue_name) == ("ENQUEUED", INTERNAL)
    assert mine.started_at_epoch_ms is None and mine.updated_at == T0 + 9
    queued = store.get_workflow("mine-queued")
    assert queued is not None and (queued.status, queued.queue_name) == ("ENQUEUED", "q")
    older = store.get_workflow("other-version")
    assert older is not None and (older.status, older.application_version) == ("ENQUEUED", "v0")
    for untouched in ("other-executor", "other-app"):
        assert status(store, untouched) == "PENDING"
    assert status(store, "done") == "SUCCESS"
    assert store.recover_pending(RecoveryRequest([], "v1", "app", INTERNAL, T0)).workflow_ids == []
    # The requeued rows carry no run token: the run that was taken over is fenced at once.
    assert mine.owner_xid is None and queued.owner_xid is None
    assert not store.record_step(step("mine", 1, "run-mine")).accepted


def test_recover_any_version_and_application(store: Store) -> None:
    pending_mix(store)
    found = store.recover_pending(RecoveryRequest([EXECUTOR, "exec-2"], None, None, INTERNAL, T0))
    assert len(found.workflow_ids) == 6


def test_recover_with_claimant_runs_them_here(store: Store) -> None:
    pending_mix(store)
    found = store.recover_pending(
        RecoveryRequest([EXECUTOR], "v1", "app", INTERNAL, T0 + 9, ("exec-9", "tok"))
    )
    assert sorted(found.workflow_ids) == ["mine", "mine-queued", "no-app", "other-version"]
    assert sorted(ids(found.claimed)) == ["mine", "no-app"]
    for row in found.claimed:
        assert (row.status, row.executor_id, row.owner_xid) == ("PENDING", "exec-9", "tok")
        assert (row.queue_name, row.started_at_epoch_ms, row.recovery_attempts) == (
            INTERNAL,
            T0 + 9,
            2,
        )
        assert row.application_name == "app"  # an unowned row is adopted by the claimant
    # Workflows of a user queue go back on it, where its limits apply.
    assert status(store, "mine-queued") == "ENQUEUED"
    # Another version's workflow is not run here: it waits, pinned, on the internal queue.
    older = store.get_workflow("other-version")
    assert older is not None
    assert (older.status, older.queue_name, older.application_version) == (
        "ENQUEUED",
        INTERNAL,
        "v0",
    )


# -- release_runs (a graceful shutdown hands its work back) ------------------------------------


def test_release_runs_hands_work_back_fenced(store: Store) -> None:
    start(store, "direct", recovery_attempts=1)
    start(store, "queued", queue_name="q", recovery_attempts=2)
    start(store, "other-run")
    start(store, "finished")
    store.complete_workflow(Completion("finished", "run-finished", "SUCCESS", None, None, T0))
    released = store.release_runs(
        ["run-direct", "run-queued", "run-finished", "run-ghost"], INTERNAL, T0 + 5
    )
    assert sorted(released) == ["direct", "queued"]
    direct, queued = store.get_workflow("direct"), store.get_workflow("queued")
    assert direct is not None and queued is not None
    assert (direct.status, direct.queue_name, direct.executor_id, direct.owner_xid) == (
        "ENQUEUED",
        INTERNAL,
        None,
        None,
    )
    assert (queued.status, queued.queue_name, queued.executor_id) == ("ENQUEUED", "q", None)
    assert direct.started_at_epoch_ms is None and direct.updated_at == T0 + 5
    # A hand-back is not a recovery attempt: the claim that started the run is taken back.
    assert (direct.recovery_attempts, queued.recovery_attempts) == (0, 1)
    assert status(store, "other-run") == "PENDING" and status(store, "finished") == "SUCCESS"
    # A late write of the released run is refused; a peer's claim takes the work.
    assert not store.record_step(step("direct", 1, "run-direct")).accepted
    assert not store.complete_workflow(
        Completion("direct", "run-direct", "SUCCESS", None, None, T0 + 6)
    )
    assert ids(store.claim(claim_request(queue=INTERNAL, claim_token="peer"), T0 + 7)) == ["direct"]
    assert store.record_step(step("direct", 1, "peer")).accepted
    assert store.release_runs([], INTERNAL, T0) == []


# -- claim --------------------------------------------------------------------------------------


def claim(store: Store, **fields: Any) -> list[str]:
    return ids(store.claim(claim_request(**fields), T0 + 100))


def test_claim_moves_enqueued_work_to_this_executor(store: Store) -> None:
    enqueue(store, "a", workflow_timeout_ms=500)
    enqueue(store, "b", workflow_timeout_ms=500, workflow_deadline_epoch_ms=T0 + 7)
    enqueue(store, "elsewhere", queue="q2")
    rows = store.claim(claim_request(limit=5, claim_token="tok"), T0 + 100)
    assert sorted(ids(rows)) == ["a", "b"]
    a = next(r for r in rows if r.workflow_id == "a")
    assert (a.status, a.executor_id, a.owner_xid) == ("PENDING", EXECUTOR, "tok")
    assert (a.started_at_epoch_ms, a.recovery_attempts) == (T0 + 100, 2)
    # The timeout starts counting at the claim, unless a deadline was set already.
    assert a.workflow_deadline_epoch_ms == T0 + 600
    assert next(r for r in rows if r.workflow_id == "b").workflow_deadline_epoch_ms == T0 + 7
    assert claim(store) == []
    assert claim(store, queue="q2") == ["elsewhere"]


def test_claim_says_which_rows_have_no_checkpoints(store: Store, store_url: str) -> None:
    """A re-enqueued or forked row has checkpoints the dispatcher must read before it runs;
    a fresh enqueue has none, and a store that can tell so in the claim says so."""
    enqueue(store, "fresh")
    enqueue(store, "resumed")
    assert store.record_step(step("resumed", 1, "enqueue-resumed")).accepted
    req = claim_request(limit=5)
    assert sorted(ids(store.claim(req, T0 + 100))) == ["fresh", "resumed"]
    assert "resumed" not in req.stepless  # never skipped: its history is read
    if not store_url.startswith("sqlite"):
        assert req.stepless == {"fresh"}


def test_claim_order_is_priority_then_age(store: Store) -> None:
    enqueue(store, "old-low", priority=5, created_at=T0)
    enqueue(store, "new-high", priority=1, created_at=T0 + 2)
    enqueue(store, "old-high", priority=1, created_at=T0 + 1)
    enqueue(store, "default", created_at=T0 + 3)
    assert sorted(claim(store, limit=2)) == ["default", "old-high"]  # in no particular order
    assert claim(store, limit=1) == ["new-high"]
    assert claim(store, limit=9) == ["old-low"]


def test_claim_ties_within_a_millisecond_leave_in_enqueue_order(store: Store) -> None:
    """Rows enqueued within one millisecond (created_at's unit; an enqueue_many batch) leave
    in the order they were enqueued, plain and partitioned. The names sort against that
    order, so neither the ID nor chance can pass the test. PostgreSQL's DBOS-format table
    has no insertion-order column."""
    if store.dialect != "sqlite":
        pytest.skip("PostgreSQL: ties within a millisecond are in any order (DBOS's format)")
    names = [f"w{9 - i}" for i in range(10)]
    for name in names:
        enqueue(store, name, created_at=T0)
    assert [claim(store, limit=1) for _ in names] == [[n] for n in names]
    keyed = [f"p{9 - i}" for i in range(6)]
    for name in keyed:
        enqueue(store, name, "pq", queue_partition_key="k", created_at=T0)
    got = [
        claim(store, queue="pq", partitioned=True, partition_concurrency=9, limit=1) for _ in keyed
    ]
    assert got == [[n] for n in keyed]


def test_claim_respects_version_and_application(store: Store) -> None:
    enqueue(store, "v1")
    enqueue(store, "v2", application_version="v2")
    enqueue(store, "other-app", application_name="other")
    enqueue(store, "unversioned", application_version=None)
    # Unversioned work goes only to the latest registered version; none is registered yet.
    assert claim(store) == ["v1"]
    store.register_version("v1", "app")
    time.sleep(0.003)
    store.register_version("v2", "app")
    assert claim(store) == []  # v1 is not the latest
    store.set_latest_version("v1", "app")
    assert claim(store) == ["unversioned"]
    assert claim(store, application_version="v2") == ["v2"]
    assert claim(store, application_name="other", application_version="v1") == ["other-app"]


def test_claim_under_global_concurrency(store: Store) -> None:
    for i in range(5):
        enqueue(store, f"w{i}", created_at=T0 + i)
    start(store, "running", queue_name="q", created_at=T0 - 1)
    assert sorted(claim(store, global_concurrency=3, limit=9)) == ["w0", "w1"]
    assert claim(store, global_concurrency=3) == []
    store.complete_workflow(Completion("running", "run-running", "SUCCESS", None, None, T0))
    assert claim(store, global_concurrency=3) == ["w2"]


def test_claim_under_a_rate_limit(store: Store) -> None:
    for i in range(5):
        enqueue(store, f"w{i}", created_at=T0 + i)
    req = claim_request(limit=9, rate_limit=(2, 60.0))
    assert sorted(ids(store.claim(req, T0))) == ["w0", "w1"]
    assert req.retry_in_ms is None
    full = claim_request(limit=9, rate_limit=(2, 60.0))
    assert store.claim(full, T0) == []
    # The window reopens when its oldest start is a period old: a delay, by the database's clock.
    assert full.retry_in_ms is not None and 50_000 < full.retry_in_ms <= 60_001


def test_claim_per_partition(store: Store) -> None:
    for i, key in enumerate(["a", "a", "a", "b", "b", "c"]):
        enqueue(store, f"{key}{i}", queue_partition_key=key, created_at=T0 + i)
    got = claim(store, partitioned=True, partition_concurrency=1, limit=9)
    assert sorted(got) == ["a0", "b3", "c5"]
    assert claim(store, partitioned=True, partition_concurrency=1) == []
    # This process's own running count per partition caps it further.
    store.complete_workflow(Completion("a0", "claim-q", "SUCCESS", None, None, T0))
    store.complete_workflow(Completion("b3", "claim-q", "SUCCESS", None, None, T0))
    assert claim(
        store,
        partitioned=True,
        partition_worker_concurrency=1,
        local_partition_running={"a": 1},
    ) == ["b4"]
    assert claim(store, partitioned=True, limit=1) == ["a1"]


def test_claim_under_a_partition_rate_limit(store: Store) -> None:
    for i, key in enumerate(["a", "a", "b"]):
        enqueue(store, f"{key}{i}", queue_partition_key=key, created_at=T0 + i)
    req = claim_request(partitioned=True, partition_rate_limit=(1, 60.0))
    assert sorted(ids(store.claim(req, T0))) == ["a0", "b2"]
    again = claim_request(partitioned=True, partition_rate_limit=(1, 60.0))
    assert store.claim(again, T0) == []
    assert again.retry_in_ms is not None and 0 < again.retry_in_ms <= 60_001


class PartitionModel:
    """What a partitioned claim takes, by its definition: the first ``per`` claimable rows of
    each partition (rows without a key are one more), the partitions visited in the claim's
    order (random in the store; given here), each one's rows taken in queue order while its
    limits allow, up to the claim's budget."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}

    def add(
        self, wid: str, key: str | None, priority: int, created_at: int, runnable: bool
    ) -> None:
        self.rows[wid] = {
            "key": key,
            "order": (priority, created_at, len(self.rows)),
            "status": "ENQUEUED",
            "runnable": runnable,
            "rated": False,
        }

    def claim(
        self,
        budget: int,
        pc: int | None,
        pwc: int | None,
        local: dict[Any, int],
        rl: int | None,
        visit: list[Any],
    ) -> list[str]:
        running: dict[Any, int] = {}
        recent: dict[Any, int] = {}
        for r in self.rows.values():
            if r["status"] == "PENDING":
                running[r["key"]] = running.get(r["key"], 0) + 1
            if r["rated"]:
                recent[r["key"]] = recent.get(r["key"], 0) + 1
        per = min(c for c in (budget, pc, pwc, rl) if c is not None)
        ready = sorted(
            (r["order"], wid, r["key"])
            for wid, r in self.rows.items()
            if r["status"] == "ENQUEUED" and r["runnable"]
        )
        got: list[str] = []
        for part in visit:
            n = 0
            for _, wid, key in ready:
                if key != part or n >= per or len(got) >= budget:
                    continue
                if (
                    (pc is not None and running.get(key, 0) + n >= pc)
                    or (pwc is not None and local.get(key, 0) + n >= pwc)
                    or (rl is not None and recent.get(key, 0) + n >= rl)
                ):
                    break
                n += 1
                got.append(wid)
        for wid in got:
            self.rows[wid]["status"] = "PENDING"
            self.rows[wid]["rated"] = rl is not None
        return got


@pytest.mark.parametrize(
    ("seed", "head", "keys"),
    [
        (0, sql_queues.HEAD_ROWS, [None, "a", "b", "c", "d", "e"]),
        (1, sql_queues.HEAD_ROWS, [None, "a", "b", "c", "d", "e"]),
        (2, 3, ["a", "b", "c", "d", "e", "f", "g"]),
        (3, 3, ["a", "b", "c"]),
    ],
)
def test_partitioned_claims_take_each_partitions_first_rows_in_queue_order(
    store: Store, monkeypatch: pytest.MonkeyPatch, seed: int, head: int, keys: list[str | None]
) -> None:
    """Claims of a partitioned queue under random limits take exactly what the definition
    does (PartitionModel): the first rows of each partition, by priority then age, the
    partitions visited in the claim's order (drawn by the test), within each partition's
    limits; rows of another version are
    passed over, rows without a key form a partition of their own. With a head of 3 rows,
    most claims read each partition's first rows (rows without a key are looked for only in
    the head: none here)."""
    monkeypatch.setattr(sql_queues, "HEAD_ROWS", head)
    rnd = random.Random(seed)
    model = PartitionModel()
    queue = f"pq{seed}"
    for i in range(60):
        key = rnd.choice(keys)
        priority = rnd.choice((0, 0, 1, 2))
        runnable = rnd.random() > 0.1
        wid = f"w{i:02d}"
        created = T0 + rnd.randrange(10_000) * 2 + i % 2  # distinct: PostgreSQL has no tie-break
        fields: dict[str, Any] = {"priority": priority, "created_at": created}
        if not runnable:
            fields["application_version"] = "v0"
        enqueue(store, wid, queue, queue_partition_key=key, **fields)
        model.add(wid, key, priority, created, runnable)
    for n in range(12):
        budget = rnd.randint(1, 8)
        pc = rnd.choice((None, 1, 2, 3))
        pwc = rnd.choice((None, 1, 2))
        rl = rnd.choice((None, None, 4))
        if pc is None and pwc is None and rl is None:
            pc = 2
        local = {k: rnd.randint(0, 2) for k in keys if rnd.random() < 0.3}
        req = claim_request(
            queue,
            budget,
            claim_token=f"tok{n}",
            partitioned=True,
            partition_concurrency=pc,
            partition_worker_concurrency=pwc,
            partition_rate_limit=(rl, 3600.0) if rl is not None else None,
            local_partition_running=local,
        )
        # The partitions' visiting order, random in the store, is drawn here for both.
        visit = rnd.sample(keys, len(keys))
        monkeypatch.setattr(
            sql_queues, "_visit_order", lambda parts, v=visit: sorted(parts, key=v.index)
        )
        got = ids(store.claim(req, T0 + 100))
        assert sorted(got) == sorted(model.claim(budget, pc, pwc, local, rl, visit)), (n, req)
        for wid in got:
            if rnd.random() < 0.5:
                store.complete_workflow(Completion(wid, f"tok{n}", "SUCCESS", None, None, T0))
                model.rows[wid]["status"] = "SUCCESS"


def test_concurrent_claims_never_share_a_workflow(store: Store) -> None:
    for i in range(40):
        enqueue(store, f"w{i:02d}", created_at=T0 + i)
    claimed: list[str] = []
    lock = threading.Lock()

    def worker(n: int, limited: bool) -> None:
        while True:
            extra: dict[str, Any] = {"global_concurrency": 100} if limited else {}
            got = claim(store, limit=3, claim_token=f"tok{n}", **extra)
            if not got:
                return
            with lock:
                claimed.extend(got)

    threads = [threading.Thread(target=worker, args=(n, n % 2 == 0)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == [f"w{i:02d}" for i in range(40)]


# -- delays, deduplication, debouncing, dead letters ------------------------------------------


def test_promote_delayed(store: Store) -> None:
    assert store.next_delayed() is None
    enqueue(store, "soon", status="DELAYED", delay_until_epoch_ms=T0 + 10)
    enqueue(store, "later", queue="q2", status="DELAYED", delay_until_epoch_ms=T0 + 20)
    enqueue(store, "ready")
    assert store.next_delayed() == T0 + 10
    assert store.promote_delayed(T0 + 9) == []
    assert store.promote_delayed(T0 + 10) == ["q"]
    assert status(store, "soon") == "ENQUEUED"
    assert store.next_delayed() == T0 + 20
    assert store.promote_delayed(T0 + 100) == ["q2"]
    assert store.next_delayed() is None


def test_debounce(store: Store) -> None:
    enqueue(
        store,
        "deb",
        status="DELAYED",
        name="job",
        deduplication_id="job-k",
        is_debounced=True,
        delay_until_epoch_ms=T0 + 10,
        debounce_deadline_epoch_ms=T0 + 50,
    )
    assert store.dedup_holder("q", "job-k") == "deb"
    assert store.dedup_holder("q", "nobody") is None
    assert (
        store.extend_debounce(
            DebounceUpdate("q", "job-k", "job", '"new"', "json", T0 + 30, "app", T0)
        )
        == "deb"
    )
    row = store.get_workflow("deb")
    assert row is not None and (row.inputs, row.delay_until_epoch_ms) == ('"new"', T0 + 30)
    # Never past the deadline.
    store.extend_debounce(DebounceUpdate("q", "job-k", "job", '"x"', "json", T0 + 99, "app", T0))
    assert store.next_delayed() == T0 + 50
    # Only a DELAYED debounced row of the same workflow name is extended.
    assert (
        store.extend_debounce(DebounceUpdate("q", "job-k", "other", '"x"', "json", T0, "app", T0))
        is None
    )
    assert (
        store.extend_debounce(DebounceUpdate("q", "nope", "job", '"x"', "json", T0, "app", T0))
        is None
    )
    # Promotion releases the key for the next debounce round.
    store.promote_delayed(T0 + 50)
    assert store.dedup_holder("q", "job-k") is None
    assert (
        store.extend_debounce(DebounceUpdate("q", "job-k", "job", '"x"', "json", T0, "app", T0))
        is None
    )


def test_dead_letter(store: Store) -> None:
    start(store, "w", recovery_attempts=4)
    assert not store.dead_letter("w", 3, T0)  # someone claimed it again meanwhile
    assert store.dead_letter("w", 4, T0 + 1)
    row = store.get_workflow("w")
    assert row is not None and row.status == "MAX_RECOVERY_ATTEMPTS_EXCEEDED"
    assert row.completed_at == T0 + 1
    assert not store.dead_letter("w", 4, T0 + 2)
