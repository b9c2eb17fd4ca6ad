"""The fleet: executor heartbeats and takeover of dead executors, cron schedules and
database-backed queue definitions."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import pytest

from tests.storage.build import APP, VERSION, start, step
from tests.storage.conftest import SCHEMA
from waypoint.storage.errors import QueueOwnedError
from waypoint.storage.protocol import ExecutorRow, QueueRow, ScheduleFilter, ScheduleRow, Store
from waypoint.storage.records import heartbeat_signatures

# -- executors ----------------------------------------------------------------------------------


def executor(executor_id: str, incarnation: str = "i1", **fields: Any) -> ExecutorRow:
    row = ExecutorRow(executor_id, incarnation, "app", "v1", "host", 42)
    return replace(row, **fields)


def test_heartbeat_retire_and_list(store: Store) -> None:
    assert store.list_executors("app") == []
    store.heartbeat(executor("e1"))
    store.heartbeat(executor("e1"))
    store.heartbeat(executor("e1", "i2", application_version="v2"))
    store.heartbeat(executor("e2", application_name=None))
    store.heartbeat(executor("theirs", application_name="other"))
    rows = store.list_executors("app")
    assert [(r.executor_id, r.incarnation) for r in rows] == [
        ("e1", "i1"),
        ("e1", "i2"),
        ("e2", "i1"),
    ]
    first = rows[0]
    assert (first.application_version, first.hostname, first.pid) == ("v1", "host", 42)
    assert first.db_now is not None and first.last_seen is not None and first.started_at is not None
    assert abs(first.db_now - time.time() * 1000) < 60_000  # the database's clock, in ms
    assert first.started_at <= first.last_seen <= first.db_now
    assert len(store.list_executors(None)) == 4
    store.retire("e1", "i1")
    store.retire("e1", "ghost")
    assert [(r.executor_id, r.incarnation) for r in store.list_executors("app")] == [
        ("e1", "i2"),
        ("e2", "i1"),
    ]


def test_claim_dead_executors(store: Store) -> None:
    store.heartbeat(executor("dead", heartbeat_ms=1))
    store.heartbeat(executor("slow", heartbeat_ms=3_600_000))
    store.heartbeat(executor("old-version", application_version="v0", heartbeat_ms=1))
    store.heartbeat(executor("theirs", application_name="other", heartbeat_ms=1))
    time.sleep(0.6)
    store.heartbeat(executor("alive", heartbeat_ms=1))
    # Silent for the asked time and for three of its own periods: "slow" is not dead yet.
    # (The asked time leaves "alive" half a second to be claimed in, even on a loaded machine.)
    assert store.claim_dead_executors("app", "v1", 500) == ["dead"]
    # Each dead executor is taken over once.
    assert store.claim_dead_executors("app", "v1", 500) == []
    remaining = {r.executor_id for r in store.list_executors(None)}
    assert remaining == {"slow", "old-version", "theirs", "alive"}
    # Of any version (recovery hands back what the caller may not run).
    assert store.claim_dead_executors("app", None, 500) == ["old-version"]


def test_a_silent_executor_is_claimed_only_while_its_heartbeats_stand_still(
    store: Store,
) -> None:
    """``unchanged``: the heartbeat signatures the caller watched stand still. A peer whose
    timestamps look old (its clock is behind, on SQLite its own) but which wrote a heartbeat
    since is alive; a gone one is claimed regardless."""
    store.heartbeat(executor("quiet", heartbeat_ms=1))
    store.heartbeat(executor("writing", heartbeat_ms=1))
    store.heartbeat(executor("leaving", heartbeat_ms=1))
    watched = heartbeat_signatures(store.list_executors("app"))
    time.sleep(0.6)
    store.heartbeat(executor("writing", heartbeat_ms=1))  # a heartbeat since, stamped late
    store.set_executor_state("leaving", "i1", "gone")
    # "writing" looks silent by the database's clock only if its stamp is old: make it so.
    assert store.claim_dead_executors("app", "v1", 0, {}) == ["leaving"]
    assert store.claim_dead_executors("app", "v1", 500, watched) == ["quiet"]
    assert heartbeat_signatures(store.list_executors("app")).keys() == {"writing"}
    assert store.claim_dead_executors("app", "v1", 0, watched) == []  # it wrote since


def test_executor_states_and_gone_executors_are_taken_over_at_once(store: Store) -> None:
    store.heartbeat(executor("pod-a"))
    store.heartbeat(executor("pod-b"))
    store.heartbeat(executor("shared", "i1"))
    store.heartbeat(executor("shared", "i2"))
    assert {r.executor_id: r.state for r in store.list_executors("app")} == {
        "pod-a": "live",
        "pod-b": "live",
        "shared": "live",
    }
    store.set_executor_state("pod-a", "i1", "draining")
    store.heartbeat(executor("pod-a"))  # heartbeats while draining keep the state
    assert [r.state for r in store.list_executors("app") if r.executor_id == "pod-a"] == [
        "draining"
    ]
    with pytest.raises(ValueError, match="executor state"):
        store.set_executor_state("pod-a", "i1", "asleep")
    # Nothing is silent or gone yet.
    assert store.claim_dead_executors("app", "v1", None) == []
    assert store.claim_dead_executors("app", "v1", 3_600_000) == []
    store.set_executor_state("pod-a", "i1", "gone")
    store.set_executor_state("shared", "i1", "gone")  # another incarnation is still there
    # A gone executor is taken over without waiting, with or without a silence timeout.
    assert store.claim_dead_executors("app", "v1", None) == ["pod-a"]
    store.heartbeat(executor("pod-b", application_version="v2"))
    store.set_executor_state("pod-b", "i1", "gone")
    assert store.claim_dead_executors("app", "v1", 3_600_000) == []  # not our version
    assert store.claim_dead_executors("app", "v2", 3_600_000) == ["pod-b"]
    assert {(r.executor_id, r.state) for r in store.list_executors("app")} == {
        ("shared", "gone"),
        ("shared", "live"),
    }


# -- schedules ----------------------------------------------------------------------------------


def schedule(name: str, **fields: Any) -> ScheduleRow:
    row = ScheduleRow(
        schedule_id=f"id-{name}",
        schedule_name=name,
        workflow_name="job",
        workflow_class_name=None,
        schedule="* * * * *",
        status="ACTIVE",
        context="{}",
        last_fired_at=None,
        automatic_backfill=False,
        cron_timezone=None,
        queue_name=None,
        application_name="app",
    )
    return replace(row, **fields)


def test_schedule_crud(store: Store) -> None:
    assert store.get_schedule("nightly") is None
    saved = store.upsert_schedule(schedule("nightly", automatic_backfill=True), replace=False)
    assert saved == schedule("nightly", automatic_backfill=True)
    # Without replace, an existing schedule wins.
    kept = store.upsert_schedule(schedule("nightly", schedule="0 0 * * *"), replace=False)
    assert kept.schedule == "* * * * *"
    store.set_last_fired("nightly", "2024-01-02T00:00:00+00:00")
    store.set_last_fired("nightly", "2024-01-01T00:00:00+00:00")  # never moves back
    # Replacing keeps the ID and the firing history.
    new = schedule("nightly", schedule_id="other-id", schedule="0 0 * * *", cron_timezone="UTC")
    replaced = store.upsert_schedule(new, replace=True)
    assert (replaced.schedule_id, replaced.schedule, replaced.cron_timezone) == (
        "id-nightly",
        "0 0 * * *",
        "UTC",
    )
    assert replaced.last_fired_at == "2024-01-02T00:00:00+00:00"
    assert store.set_schedule_status("nightly", "PAUSED")
    assert not store.set_schedule_status("ghost", "PAUSED")
    assert store.get_schedule("nightly") == replace(replaced, status="PAUSED")
    assert store.delete_schedule("nightly")
    assert not store.delete_schedule("nightly")
    assert store.get_schedule("nightly") is None


def test_list_schedules(store: Store) -> None:
    for row in (
        schedule("rep-a1", status="PAUSED"),
        schedule("rep-a2"),
        schedule("rep%_b", workflow_name="other"),
        schedule("Rep-c", application_name=None),
        schedule("theirs", application_name="other"),
    ):
        store.upsert_schedule(row, replace=False)

    def names(*args: object, **kwargs: object) -> list[str]:
        return [s.schedule_name for s in store.list_schedules(ScheduleFilter(*args, **kwargs))]  # type: ignore[arg-type]

    assert names("app") == ["Rep-c", "rep%_b", "rep-a1", "rep-a2"]
    assert names(None) == ["Rep-c", "rep%_b", "rep-a1", "rep-a2", "theirs"]
    assert names("app", status="ACTIVE") == ["Rep-c", "rep%_b", "rep-a2"]
    assert names("app", workflow_name="other") == ["rep%_b"]
    assert names("app", name_prefix="rep-") == ["rep-a1", "rep-a2"]
    assert names("app", name_prefix="rep%") == ["rep%_b"]  # literal, and case matters
    assert names("app", status="PAUSED", name_prefix="rep") == ["rep-a1"]


# -- queues -------------------------------------------------------------------------------------


def test_queue_crud(store: Store) -> None:
    assert store.get_queue("emails") is None
    row = QueueRow(
        "emails",
        concurrency=4,
        rate_limit_max=50,
        rate_limit_period_sec=1.5,
        priority_enabled=True,
        partition_queue=True,
        polling_interval_sec=0.5,
        application_name="app",
        partition_concurrency=2,
        partition_worker_concurrency=1,
        partition_rate_limit_max=3,
        partition_rate_limit_period_sec=2.0,
    )
    saved = store.upsert_queue(row, update=False)
    assert replace(saved, created_at=None, updated_at=None) == row
    assert saved.created_at is not None and saved.updated_at is not None
    assert store.upsert_queue(replace(row, concurrency=9), update=False).concurrency == 4
    updated = store.upsert_queue(replace(row, concurrency=9, worker_concurrency=2), update=True)
    assert (updated.concurrency, updated.worker_concurrency) == (9, 2)
    assert store.get_queue("emails") == updated
    assert store.delete_queue("emails")
    assert not store.delete_queue("emails")
    assert store.get_queue("emails") is None


def test_queue_names_belong_to_one_application(store: Store) -> None:
    store.upsert_queue(QueueRow("emails", application_name="app"), update=False)
    store.upsert_queue(QueueRow("shared", application_name=None), update=False)
    store.upsert_queue(QueueRow("z-theirs", application_name="other"), update=False)
    with pytest.raises(QueueOwnedError) as caught:
        store.upsert_queue(QueueRow("emails", application_name="other"), update=True)
    assert (caught.value.name, caught.value.owner) == ("emails", "app")
    with pytest.raises(QueueOwnedError):
        store.upsert_queue(QueueRow("emails", application_name=None), update=False)
    # An unowned queue may be adopted.
    assert store.upsert_queue(QueueRow("shared", application_name="app"), update=True)
    assert [q.name for q in store.list_queues("app")] == ["emails", "shared"]
    assert [q.name for q in store.list_queues(None)] == ["emails", "shared", "z-theirs"]


# -- renaming an application --------------------------------------------------------------------


def test_rename_application_moves_what_the_old_name_owns(store: Store) -> None:
    active = start(store, "r-active")
    store.record_step(step("r-active", 1, active.owner_xid, application_name=APP))
    for i in range(3):
        start(store, f"r-done-{i}", status="SUCCESS")
    start(store, "r-theirs", application_name="other")
    start(store, "r-unowned", application_name=None)
    store.upsert_queue(QueueRow(name="rq", application_name=APP), True)
    store.register_version(VERSION, APP)

    moved = store.rename_application(APP, "new-app", False, 2)  # batches of 2
    assert moved == {"queues": 1, "schedules": 0, "versions": 1, "workflows": 4, "steps": 1}
    owners = {
        wfid: store.get_workflow(wfid).application_name  # type: ignore[union-attr]
        for wfid in ("r-active", "r-done-0", "r-done-2", "r-theirs", "r-unowned")
    }
    assert owners == {
        "r-active": "new-app",
        "r-done-0": "new-app",
        "r-done-2": "new-app",
        "r-theirs": "other",
        "r-unowned": None,
    }
    assert [v.application_name for v in store.list_versions("new-app")] == ["new-app"]
    assert [q.application_name for q in store.list_queues("new-app")] == ["new-app"]

    adopted = store.rename_application(None, "new-app", True, None)
    assert adopted["workflows"] == 1
    assert store.get_workflow("r-unowned").application_name == "new-app"  # type: ignore[union-attr]
    assert store.rename_application(APP, "new-app", True, None) == dict.fromkeys(moved, 0)


def test_a_heartbeat_says_whether_its_row_was_there(store: Store) -> None:
    """A process that has beaten before and finds its row gone was taken over: it must not
    trust what it last read about its workflows (core/lease.py)."""
    assert store.heartbeat(executor("e1", heartbeat_ms=1)) is False  # the first one
    assert store.heartbeat(executor("e1", heartbeat_ms=1)) is True
    store.set_executor_state("e1", "i1", "gone")
    assert store.claim_dead_executors("app", None, None) == ["e1"]
    assert store.heartbeat(executor("e1", heartbeat_ms=1)) is False  # taken over meanwhile
    assert store.heartbeat(executor("e1", heartbeat_ms=1)) is True


def test_a_heartbeat_racing_a_takeover_learns_it_lost(store_url: str, store: Store) -> None:
    """A heartbeat sent while a takeover holds the executor's row waits for it and then finds
    the row gone: it cannot slip in between the takeover's read and its removal, be removed
    anyway, and report the executor alive."""
    if not store_url.startswith("postgresql"):
        pytest.skip(
            "one PostgreSQL database (SQLite serialises writers; shards: see the sharded tests)"
        )
    import threading

    import psycopg

    store.heartbeat(executor("zombie", heartbeat_ms=1))
    table = f"{SCHEMA}.executors"
    with psycopg.connect(store_url) as taker:
        # What claim_dead_executors does, held open: lock the rows, then remove the dead one.
        taker.execute(f"SELECT executor_id FROM {table} FOR UPDATE")
        taker.execute(f"DELETE FROM {table} WHERE executor_id = 'zombie'")
        answer: list[bool] = []
        beat = threading.Thread(
            target=lambda: answer.append(store.heartbeat(executor("zombie", heartbeat_ms=1)))
        )
        beat.start()
        beat.join(1.0)
        assert beat.is_alive(), "the heartbeat should wait for the takeover's transaction"
        taker.commit()
        beat.join(30)
    assert answer == [False]
