"""Sharding (system_database_shards): what holds across shards that one database gives for
free: one creation per ID, listings equal to one database's, a queue's global limit,
shards added online, and a dead shard pausing only its own workflows.

The store-level tests use ``ShardedStore`` through ``open_url`` like the engine does; the
shards are databases on the servers of ``WAYPOINT_TEST_SHARDS`` (three databases of the
shared server when unset), or a private server where one is stopped.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, cast

import psycopg
import pytest
from psycopg import sql

from tests.conftest import BACKENDS, SHARD_BASES
from tests.private_pg import PrivatePostgres
from tests.storage.build import T0, queued, start, workflow
from waypoint.storage.errors import UnavailableError
from waypoint.storage.records import ChildLink, ClaimRequest, Completion, ListFilter
from waypoint.storage.registry import open_url, sharded_url
from waypoint.storage.sharded.store import ShardedStore

pytestmark = pytest.mark.skipif(
    not {"postgres", "shards"} & set(BACKENDS), reason="needs PostgreSQL"
)


def _database(base: str, name: str, drop: bool = False) -> str:
    with psycopg.connect(f"{base.rstrip('/')}/postgres", autocommit=True) as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        if not drop:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return f"{base.rstrip('/')}/{name}"


@pytest.fixture
def databases() -> Iterator[Callable[[int], list[str]]]:
    """``make(n)``: n fresh databases, one per shard server in turn; dropped afterwards."""
    made: list[tuple[str, str]] = []

    def make(n: int) -> list[str]:
        tag = uuid.uuid4().hex[:8]
        urls = []
        for i in range(n):
            base = SHARD_BASES[i % len(SHARD_BASES)]
            name = f"wp_shard_{tag}_{i}"
            urls.append(_database(base, name))
            made.append((base, name))
        return urls

    yield make
    for base, name in made:
        _database(base, name, drop=True)


def sharded(urls: list[str]) -> ShardedStore:
    store = open_url(sharded_url(urls), schema="dbos", pool_size=6)
    store.migrate()
    store.open()
    return cast(ShardedStore, store)


@pytest.fixture
def stores() -> Iterator[list[Any]]:
    opened: list[Any] = []
    yield opened
    for s in opened:
        s.close()


def rows_per_shard(store: ShardedStore) -> dict[str, int]:
    found: dict[str, int] = {}
    for m in store.topo.all():
        for (wfid,) in m.store._all(
            f"SELECT workflow_uuid FROM {m.store.d.t('workflow_status')}", {}, "t"
        ):
            found[wfid] = found.get(wfid, 0) + 1
    return found


def test_an_id_is_created_once_whatever_the_path(
    databases: Callable[[int], list[str]], stores: list[Any]
) -> None:
    """Threads of two "processes" race to create the same IDs directly, enqueued on
    queues homed on different shards, and as children: one row per ID, everywhere."""
    urls = databases(3)
    a, b = sharded(urls), sharded(urls)
    stores += [a, b]
    parent = start(a, "parent")
    ids = [f"race-{i}" for i in range(40)]
    # Two queues whose homes differ, and differ from the parent's shard.
    names = [f"queue-{i}" for i in range(50)]
    parent_home = a.topo.cache.get("parent")
    homes = [n for n in names if a.topo.queue_home(n).ordinal != parent_home]
    homes = [
        homes[0],
        next(n for n in homes if a.topo.queue_home(n) != a.topo.queue_home(homes[0])),
    ]
    outcomes: dict[str, list[tuple[int, bool]]] = {i: [] for i in ids}
    lock = threading.Lock()

    def create(store: ShardedStore, how: int) -> None:
        for n, wfid in enumerate(ids):
            if how == 0:  # direct: a hash of the ID
                out = store.init_workflow(workflow(wfid), None)
            elif how in (1, 2):  # enqueued: the queue's home (two queues, two homes)
                out = store.init_workflow(
                    queued(wfid, homes[how - 1], owner_xid=f"q{how}-{wfid}"), None
                )
            else:  # a child: its parent's shard
                wf = workflow(wfid, parent_workflow_id="parent", owner_xid=f"child-{wfid}")
                link = ChildLink("parent", 100 + n, "child", parent.owner_xid, T0)
                out = store.init_workflow(wf, link)
            with lock:
                outcomes[wfid].append((how, out.created))

    threads = [threading.Thread(target=create, args=(s, how)) for how, s in enumerate([a, b, a, b])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    placed = rows_per_shard(a)
    assert all(placed[i] == 1 for i in ids)  # never on two shards
    for i in ids:
        assert sum(c for _, c in outcomes[i]) == 1, outcomes[i]  # one path created it
        assert a.get_workflow(i) is not None and b.get_workflow(i) is not None


def test_listing_equals_one_databases_listing(
    databases: Callable[[int], list[str]], stores: list[Any]
) -> None:
    """The same rows in one database and in three shards list the same, for every order,
    limit, offset and keyset page."""
    (one_url, *shard_urls) = databases(4)
    one = open_url(one_url, schema="dbos", pool_size=4)
    one.migrate()
    one.open()
    many = sharded(shard_urls)
    stores += [one, many]
    for i in range(60):
        created = T0 + (i * 7) % 23  # ties on created_at, broken by ID
        for s in (one, many):
            if i % 3:
                s.init_workflow(queued(f"wf-{i:02}", f"q{i % 4}", created_at=created), None)
            else:
                start(s, f"wf-{i:02}", created_at=created)
    assert (
        len(set(rows_per_shard(many).values())) == 1
        and len({many.topo.cache.get(f"wf-{i:02}") for i in range(60)}) == 3
    )  # spread over all three
    cases = [ListFilter()]
    for desc in (False, True):
        for limit in (None, 1, 5, 17, 100):
            for offset in (None, 0, 3, 59, 70):
                cases.append(ListFilter(limit=limit, offset=offset, sort_desc=desc))
        cases.append(ListFilter(queue_name=["q1", "q2"], limit=7, offset=2, sort_desc=desc))
        cases.append(ListFilter(status=["PENDING"], limit=4, sort_desc=desc))
        cases.append(ListFilter(after=(T0 + 5, "wf-10"), limit=9, sort_desc=desc))
    for flt in cases:
        expected = [r.workflow_id for r in one.list_workflows(flt)]
        assert [r.workflow_id for r in many.list_workflows(flt)] == expected, flt
    assert many.count_capped("status", ["ENQUEUED", "PENDING"], None, 1000) == one.count_capped(
        "status", ["ENQUEUED", "PENDING"], None, 1000
    )


def test_a_queues_global_concurrency_holds_across_shards_and_processes(
    databases: Callable[[int], list[str]], stores: list[Any]
) -> None:
    urls = databases(3)
    procs = [sharded(urls) for _ in range(4)]
    stores += procs
    for i in range(40):
        procs[i % 4].init_workflow(queued(f"job-{i}", "limited", created_at=T0 + i), None)
    running: set[str] = set()
    most = 0
    lock = threading.Lock()
    done = threading.Event()

    def worker(n: int, store: ShardedStore) -> None:
        nonlocal most
        while not done.is_set():
            req = ClaimRequest(
                "limited",
                3,
                f"exec-{n}",
                "v1",
                "app",
                f"tok-{n}-{time.time()}",
                global_concurrency=3,
            )
            got = store.claim(req, int(time.time() * 1000))
            with lock:
                running.update(r.workflow_id for r in got)
                most = max(most, len(running))
            for r in got:
                time.sleep(0.005)
                # Out of the set before its completion: the set never holds a workflow that
                # is not PENDING, so more than 3 in it is more than 3 running.
                with lock:
                    running.discard(r.workflow_id)
                assert store.complete_workflow(
                    Completion(r.workflow_id, str(r.owner_xid), "SUCCESS", None, None, T0)
                )
            if not got and finished() == 40:
                done.set()

    def finished() -> int:
        return sum(
            1
            for i in range(40)
            if (o := procs[0].get_outcome(f"job-{i}")) is not None and o.status == "SUCCESS"
        )

    threads = [threading.Thread(target=worker, args=(n, s)) for n, s in enumerate(procs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert finished() == 40
    assert most <= 3


def test_adding_a_shard_online(databases: Callable[[int], list[str]], stores: list[Any]) -> None:
    """A shard added while processes run: joining takes no new work; activated, new work
    lands on it; old work stays, completes and is found; a process whose configuration does
    not list the new shard (and has not refreshed) still creates each ID once and finds
    workflows on the new shard through the catalog."""
    from waypoint.storage.sharded import admin

    first, second, new = databases(3)
    a, b = sharded([first, second]), sharded([first, second])
    stores += [a, b]
    old = [f"old-{i}" for i in range(30)]
    for wfid in old:
        start(a, wfid)
    admin.add_shard(a, new)
    assert [m.state for m in a.topo.all()] == ["active", "active", "joining"]
    for i in range(30):
        start(a, f"while-joining-{i}")
    assert {a.topo.cache.get(f"while-joining-{i}") for i in range(30)} <= {0, 1}
    admin.activate_shard(a, new)
    fresh = [f"fresh-{i}" for i in range(60)]
    for wfid in fresh:
        start(a, wfid)
    on_new = [w for w in fresh if a.topo.cache.get(w) == 2]
    assert 10 <= len(on_new) <= 35  # about a third; none moved
    assert {a.topo.cache.get(w) for w in old} <= {0, 1}
    # Old work keeps running and completes where it is.
    for wfid in old:
        done = Completion(wfid, f"run-{wfid}", "SUCCESS", '"ok"', None, T0)
        assert a.complete_workflow(done)
    # b never refreshed (its view: two active shards) and was not configured with the new
    # shard: it still finds workflows there, and a creation of an existing ID finds it.
    assert 2 not in b.topo.members
    for wfid in on_new:
        got = b.get_workflow(wfid)
        assert got is not None and got.status == "PENDING"
        assert not b.init_workflow(workflow(wfid, owner_xid="other-run"), None).created
    assert 2 in b.topo.members  # learnt from the catalog when a marker named it
    assert all(n == 1 for n in rows_per_shard(a).values())
    listed = {r.workflow_id for r in b.list_workflows(ListFilter())}
    assert set(fresh) <= listed and set(old) <= listed
    # A third process configured with the new list, in another order, agrees on the ordinals.
    c = sharded([new, second, first])
    stores.append(c)
    assert [(m.ordinal, m.state) for m in c.topo.all()] == [
        (0, "active"),
        (1, "active"),
        (2, "active"),
    ]
    assert c.get_workflow(on_new[0]) is not None


def test_one_shard_down_pauses_only_its_workflows(
    databases: Callable[[int], list[str]], stores: list[Any], private_pg: PrivatePostgres
) -> None:
    """A private server is shard 2; stopped, its workflows wait while the other shards'
    complete; listing names the dead shard instead of hanging; background fan-outs go on
    without it; started again, its workflows finish."""
    first, second = databases(2)
    third = private_pg.create_database("wp_shard_down")
    store = sharded([first, second, third])
    stores.append(store)
    ids = [f"w-{i}" for i in range(40)]
    for wfid in ids:
        start(store, wfid)
    by_shard: dict[int, list[str]] = {}
    for wfid in ids:
        by_shard.setdefault(int(store.topo.cache.get(wfid) or 0), []).append(wfid)
    assert set(by_shard) == {0, 1, 2}
    store.topo.refresh_s = 0.0  # every call refreshes the catalog view: that must not fail
    private_pg.stop()
    paused = by_shard[2][0]
    result: list[bool] = []
    waiter = threading.Thread(
        target=lambda: result.append(
            store.complete_workflow(
                Completion(paused, f"run-{paused}", "SUCCESS", '"ok"', None, T0)
            )
        )
    )
    waiter.start()
    for wfid in by_shard[0] + by_shard[1]:
        done = Completion(wfid, f"run-{wfid}", "SUCCESS", '"ok"', None, T0)
        assert store.complete_workflow(done)
        assert store.get_outcome(wfid) is not None
    with pytest.raises(UnavailableError, match="#2"):
        store.list_workflows(ListFilter())
    assert store.promote_delayed(int(time.time() * 1000)) == []  # went on without shard 2
    assert waiter.is_alive()  # shard 2's workflow waits for its server
    private_pg.start()
    waiter.join(timeout=120)
    assert result == [True]
    statuses = {r.workflow_id: r.status for r in store.list_workflows(ListFilter())}
    assert statuses[paused] == "SUCCESS"
    assert all(statuses[w] == "SUCCESS" for w in by_shard[0] + by_shard[1])


def test_configuration_names_shards_one_way(databases: Callable[[int], list[str]]) -> None:
    """``system_database_shards`` on DBOS and DBOSClient; with ``system_database_url`` too,
    or as anything but a list of PostgreSQL URLs, a clear error naming what is wrong."""
    from waypoint import DBOS, DBOSClient
    from waypoint.error import DBOSInitializationError

    urls = databases(3)
    base = {"name": "sharded-app", "system_database_shards": urls}
    DBOS.destroy(destroy_registry=True)
    with pytest.raises(DBOSInitializationError, match="both system_database_url and"):
        DBOS(config={**base, "system_database_url": urls[0]})  # type: ignore[typeddict-item]
    DBOS.destroy(destroy_registry=True)
    with pytest.raises(DBOSInitializationError, match="must be a list"):
        DBOS(config={**base, "system_database_shards": urls[0]})  # type: ignore[typeddict-item]
    DBOS.destroy(destroy_registry=True)
    with pytest.raises(DBOSInitializationError, match="not a PostgreSQL URL"):
        DBOS(config={**base, "system_database_shards": ["sqlite:///x.sqlite"]})  # type: ignore[typeddict-item]
    DBOS.destroy(destroy_registry=True)

    DBOS(config=base)  # type: ignore[arg-type]
    try:

        @DBOS.workflow()
        def double(x: int) -> int:
            return 2 * x

        DBOS.launch()
        handles = [DBOS.start_workflow(double, i) for i in range(12)]
        assert [h.get_result() for h in handles] == [2 * i for i in range(12)]
        client = DBOSClient(system_database_shards=urls)
        try:
            listed = client.list_workflows()
            assert {w.workflow_id for w in listed} == {h.workflow_id for h in handles}
        finally:
            client.destroy()
        with pytest.raises(Exception, match="both system_database_url and"):
            DBOSClient(system_database_url=urls[0], system_database_shards=urls)
    finally:
        DBOS.destroy(destroy_registry=True)


def test_the_command_takes_shards_as_repeated_s(
    databases: Callable[[int], list[str]], stores: list[Any], tmp_path: Any
) -> None:
    import json
    import subprocess
    import sys
    from pathlib import Path

    first, second, new = databases(3)
    store = sharded([first, second])
    stores.append(store)
    for i in range(6):
        start(store, f"cli-{i}")
    exe = str(Path(sys.executable).with_name("waypoint"))

    def wp(*args: str) -> Any:
        done = subprocess.run(
            [exe, *args, "--json"], capture_output=True, text=True, timeout=120, cwd=tmp_path
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return json.loads(done.stdout)

    listed = wp("workflow", "list", "-s", second, "-s", first)  # any order
    assert sorted(w["workflow_id"] for w in listed) == [f"cli-{i}" for i in range(6)]
    shards = wp("shards", "add", new, "-s", first, "-s", second)
    assert [(s["ordinal"], s["state"]) for s in shards] == [
        (0, "active"),
        (1, "active"),
        (2, "joining"),
    ]
    shards = wp("shards", "activate", new, "-s", first, "-s", second)
    assert [s["state"] for s in shards] == ["active"] * 3
    assert sum(s["workflows"] for s in shards) == 6
    (tmp_path / "dbos-config.yaml").write_text(
        f"name: cli-app\nsystem_database_shards:\n  - {first}\n  - {second}\n  - {new}\n"
    )
    assert len(wp("shards", "list")) == 3


def test_retention_removes_the_markers_of_deleted_workflows(
    databases: Callable[[int], list[str]], stores: list[Any]
) -> None:
    from waypoint.storage.records import RetentionRequest

    store = sharded(databases(3))
    stores.append(store)
    for i in range(20):
        wf = start(store, f"old-{i}", created_at=T0 + i)
        store.complete_workflow(Completion(wf.workflow_id, wf.owner_xid, "SUCCESS", None, None, T0))
    start(store, "running", created_at=T0)
    start(store, "new", created_at=T0 + 10_000)

    def markers() -> set[str]:
        return {
            r[0]
            for m in store.topo.founding
            for r in m.store._all(
                f"SELECT workflow_uuid FROM {m.store.d.t('workflow_placement')}", {}, "t"
            )
        }

    assert len(markers()) == 22
    assert store.garbage_collect(RetentionRequest(cutoff_epoch_ms=T0 + 5_000)) == 20
    # The finished ones and their markers went; the running one and the new one stay, found.
    assert markers() == {"running", "new"}
    assert store.get_workflow("running") is not None and store.get_workflow("new") is not None
    assert store.get_workflow("old-3") is None
    # An ID created again after its marker went is placed afresh and found.
    start(store, "old-3", created_at=T0 + 20_000)
    assert store.get_workflow("old-3") is not None


def _queue_homed_off(store: ShardedStore, ordinal: int) -> str:
    return next(
        n
        for n in (f"limited-{i}" for i in range(100))
        if store.topo.queue_home(n).ordinal != ordinal
    )


def test_a_fork_onto_a_named_queue_is_created_at_the_queues_home(
    databases: Callable[[int], list[str]], stores: list[Any]
) -> None:
    """Claimed at its home only (its limits are counted there), a queue's fork is written
    there, whatever shard its original lives on, with what a fork copies."""
    from tests.storage.build import fork_request, step
    from waypoint.storage.records import EventWrite, StreamWrite

    store = sharded(databases(3))
    stores.append(store)
    wf = start(store, "original", status="SUCCESS")
    for i in range(1, 5):
        store.record_step(step("original", i, wf.owner_xid, child_workflow_id=f"child-{i}"))
    for fid, value in ((1, '"a"'), (2, '"b"'), (4, '"c"')):
        store.set_event(EventWrite("original", "k", value, "json", fid), None)
    for fid in (1, 2, 4):
        store.write_stream(StreamWrite("original", "s", f'"{fid}"', "json", fid, f"wf:{fid}"), None)
    here = store.topo.cache.get("original")
    assert here is not None
    queue = _queue_homed_off(store, here)
    home = store.topo.queue_home(queue).ordinal
    store.fork_workflow(
        fork_request(
            "original", "forked", 3, queue_name=queue, replacement_children={"child-2": "new-2"}
        )
    )
    assert store.topo.cache.get("forked") == home
    on_shards = {m.ordinal: rows_per_shard_of(m) for m in store.topo.all()}
    assert "forked" in on_shards[home] and "forked" not in on_shards[here]
    assert [(s.function_id, s.child_workflow_id) for s in store.list_steps("forked")] == [
        (1, "child-1"),
        (2, "new-2"),
    ]
    assert store.get_event("forked", "k") == ('"b"', "json")
    assert store.read_stream("forked", "s", 1)[0] == ('"2"', "json")
    assert store.read_stream("forked", "s", 2)[0] is None
    row = store.get_workflow("forked")
    assert row is not None and (row.status, row.queue_name, row.forked_from) == (
        "ENQUEUED",
        queue,
        "original",
    )
    source = store.get_workflow("original")
    assert source is not None and source.was_forked_from
    assert store.forks_of(["original"]) == ["forked"]
    # Its queue's claim (limits shared: the home shard only) finds it.
    req = ClaimRequest(queue, 5, "exec", "v1", "app", "tok", global_concurrency=1)
    assert [r.workflow_id for r in store.claim(req, T0 + 5000)] == ["forked"]
    # A fork onto the internal queue stays with its original.
    store.fork_workflow(fork_request("original", "beside", 2, queue_name="_dbos_internal_queue"))
    assert store.topo.cache.get("beside") == here
    assert sorted(store.forks_of(["original"])) == ["beside", "forked"]


def rows_per_shard_of(m: Any) -> set[str]:
    return {
        r[0]
        for r in m.store._all(
            f"SELECT workflow_uuid FROM {m.store.d.t('workflow_status')}", {}, "t"
        )
    }


def test_resume_onto_a_limited_queue_homed_elsewhere_is_refused(
    databases: Callable[[int], list[str]], stores: list[Any]
) -> None:
    """A workflow does not move between shards, so it cannot join a queue whose limits are
    counted on another shard: refused with the way out, nothing changed. An unlimited queue
    and the internal queue are claimed on every shard: those resumes work."""
    from waypoint.storage.errors import UnsupportedError

    store = sharded(databases(3))
    stores.append(store)
    start(store, "stuck")
    store.cancel_workflows(["stuck"], T0)
    here = store.topo.cache.get("stuck")
    assert here is not None
    queue = _queue_homed_off(store, here)
    for limited in (True, None):
        with pytest.raises(UnsupportedError, match=rf"shard #{here}.*fork it onto the queue"):
            store.resume_workflows(["stuck"], queue, T0 + 1, limited)
        row = store.get_workflow("stuck")
        assert row is not None and row.status == "CANCELLED"
    assert store.resume_workflows(["stuck"], queue, T0 + 2, False) == ["stuck"]
    req = ClaimRequest(queue, 5, "exec", "v1", "app", "tok")  # no shared limits: every shard
    assert [r.workflow_id for r in store.claim(req, T0 + 5000)] == ["stuck"]
    # Homed on the workflow's own shard, a limited queue takes it.
    store.cancel_workflows(["stuck"], T0 + 6000)
    same = next(
        n for n in (f"limited-{i}" for i in range(100)) if store.topo.queue_home(n).ordinal == here
    )
    assert store.resume_workflows(["stuck"], same, T0 + 7000, True) == ["stuck"]


def test_an_application_forks_onto_its_limited_queue_and_resumes_with_a_clear_error(
    databases: Callable[[int], list[str]], stores: list[Any]
) -> None:
    """Through DBOS: a workflow that ran directly on one shard, forked onto a queue with
    global concurrency homed on another, runs there; resuming it onto that queue says why not."""
    from waypoint import DBOS, Queue, SetWorkflowID
    from waypoint.error import DBOSException

    urls = databases(3)
    DBOS.destroy(destroy_registry=True)
    DBOS(config={"name": "sharded-fork", "system_database_shards": urls})  # type: ignore[typeddict-item]
    try:
        calls: list[int] = []

        @DBOS.step()
        def record(i: int) -> int:
            calls.append(i)
            return i

        @DBOS.workflow()
        def flow(n: int) -> int:
            return sum(record(i) for i in range(n))

        DBOS.launch()
        store = sharded(urls)  # to look where things are
        stores.append(store)
        wfid = "direct-1"
        with SetWorkflowID(wfid):
            assert flow(3) == 3
        here = store._locate(wfid).ordinal  # type: ignore[union-attr]
        name = _queue_homed_off(store, here)
        Queue(name, concurrency=1, polling_interval_sec=0.1)
        calls.clear()
        handle = DBOS.fork_workflow(wfid, 2, queue_name=name)
        assert handle.get_result() == 3
        assert calls == [1, 2]  # steps count from 1: step 1 (i=0) is a copied checkpoint
        forked_at = store._locate(handle.workflow_id)
        assert forked_at is not None and forked_at.ordinal == store.topo.queue_home(name).ordinal
        with pytest.raises(DBOSException, match=r"has limits.*fork it onto the queue"):
            DBOS.resume_workflow(wfid, queue_name=name)
    finally:
        DBOS.destroy(destroy_registry=True)
