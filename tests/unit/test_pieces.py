"""Pure pieces that need no database: fast, deterministic."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import weakref
from typing import Any

import pytest

import waypoint
from waypoint.core.effects import Call, Flow, Io, Sleep, drive_async, drive_sync
from waypoint.core.pool import WorkerPool
from waypoint.core.serialization import Codec, DBOSPortableJSONSerializer
from waypoint.core.settings import resolve
from waypoint.core.signals import Signal
from waypoint.core.timers import TimerService
from waypoint.core.versioning import compute_app_version
from waypoint.error import DBOSException, DBOSInitializationError, WaypointPayloadError
from waypoint.storage.errors import StorageConfigError
from waypoint.storage.migrations import Migration, load, split_statements
from waypoint.storage.postgres.group_commit import GroupCommitter
from waypoint.storage.registry import default_sqlite_url, parse_url
from waypoint.storage.url import redact


def test_public_names_are_pinned() -> None:
    assert sorted(waypoint.__all__) == sorted(
        [
            "AsyncSQLAlchemyDatasource",
            "ClientScheduleInput",
            "DBOS",
            "DBOSClient",
            "DBOSConfig",
            "DBOSConfiguredInstance",
            "DBOSContextEnsure",
            "DBOSContextSetAuth",
            "DBOSPortableJSONSerializer",
            "Debouncer",
            "DebouncerClient",
            "DuplicationPolicy",
            "EnqueueCall",
            "EnqueueOptions",
            "KafkaMessage",
            "PortableWorkflowError",
            "PropagateOtelContext",
            "Queue",
            "ScheduleInput",
            "SQLAlchemyDatasource",
            "SendMessage",
            "Serializer",
            "SetEnqueueOptions",
            "SetWorkflowAttributes",
            "SetWorkflowID",
            "SetWorkflowTimeout",
            "StepInfo",
            "StepOptions",
            "StepStatus",
            "VersionInfo",
            "WorkflowHandle",
            "WorkflowHandleAsync",
            "WorkflowSchedule",
            "WorkflowSerializationFormat",
            "WorkflowStatus",
            "WorkflowStatusString",
            "__version__",
            "error",
            "make_pydantic_args_validator",
            "pydantic_args_validator",
            "run_dbos_database_migrations",
        ]
    )
    for name in waypoint.__all__:
        assert hasattr(waypoint, name), name
    assert issubclass(waypoint.error.DBOSWorkflowCancelledError, BaseException)
    assert not issubclass(waypoint.error.DBOSWorkflowCancelledError, Exception)
    assert waypoint.error.DBOSConflictingWorkflowError("x").dbos_error_code == 9


def test_error_messages_and_pickling() -> None:
    import pickle

    err = waypoint.error.DBOSQueueDeduplicatedError("wf", "q", "d")
    clone = pickle.loads(pickle.dumps(err))
    assert str(clone) == str(err) and clone.deduplication_id == "d"
    assert str(err).startswith("DBOS Error 12:")


def test_urls() -> None:
    assert parse_url("postgresql+psycopg://u:p@h:5/db").url == "postgresql://u:p@h:5/db"
    assert parse_url("postgres://h/db").database == "db"
    assert parse_url("sqlite:///rel.sqlite").url == "rel.sqlite"
    assert parse_url("sqlite:////abs/x.sqlite").url == "/abs/x.sqlite"
    assert default_sqlite_url("9-lives") == "sqlite:///_9_lives.sqlite"
    assert redact("postgresql://u:secret@h/db") == "postgresql://u:***@h/db"
    with pytest.raises(StorageConfigError, match="memory"):
        parse_url("sqlite:///:memory:")  # storage raises its own errors...
    with pytest.raises(DBOSInitializationError, match="memory"):  # ...the API, public ones
        resolve({"name": "app", "system_database_url": "sqlite:///:memory:"})


def test_config_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DBOS__VMID", "vm")
    monkeypatch.setenv("DBOS__APPVERSION", "envver")
    cfg = resolve({"name": "app"})
    assert (cfg.executor_id, cfg.application_version) == ("vm", "envver")
    cfg = resolve({"name": "app", "executor_id": "conf", "application_version": "confver"})
    assert (cfg.executor_id, cfg.application_version) == ("conf", "confver")
    monkeypatch.delenv("DBOS__APPVERSION")
    assert (
        resolve({"name": "app", "enable_patching": True}).application_version == "PATCHING_ENABLED"
    )
    cfg = resolve({"name": "app", "application_database_url": "postgresql://h/shop"})
    assert cfg.system_database_url == "postgresql://h/shop_dbos_sys"


def _load(tmp_path: Any, name: str, source: str) -> Any:
    import importlib.util

    path = tmp_path / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.checkout


def test_version_ignores_comments_but_not_code(tmp_path: Any) -> None:
    plain = _load(tmp_path, "v_plain", "def checkout(x):\n    return x + 1\n")
    commented = _load(
        tmp_path,
        "v_commented",
        'def checkout(x):\n    """Docs."""\n    # why\n    return (x +   1)  # note\n',
    )
    changed = _load(tmp_path, "v_changed", "def checkout(x):\n    return x + 2\n")
    v1 = compute_app_version("app", [plain])
    assert compute_app_version("app", [commented]) == v1
    assert compute_app_version("app", [changed]) != v1
    assert compute_app_version("other-app", [plain]) != v1


def test_codec_roundtrips_and_errors() -> None:
    codec = Codec()
    pickle_ser = codec.for_format(None)
    text = codec.encode_inputs((1, "a"), {"k": [1]}, pickle_ser)
    assert codec.decode_inputs(text, "py_pickle") == ((1, "a"), {"k": [1]})
    assert codec.decode_inputs(text, None) == ((1, "a"), {"k": [1]})  # legacy NULL = pickle
    portable = DBOSPortableJSONSerializer()
    ptext = codec.encode_inputs((1,), {}, portable)
    assert codec.decode_inputs(ptext, "portable_json") == ((1,), {})
    with pytest.raises(WaypointPayloadError, match="unknown_codec"):
        codec.decode("x", "unknown_codec")
    with pytest.raises(WaypointPayloadError):
        codec.decode("not base64 pickle", "py_pickle")
    err = codec.decode_error(codec.encode_error(ValueError("bad"), pickle_ser), "py_pickle")
    assert isinstance(err, ValueError) and str(err) == "bad"


def test_effects_drive_the_same_flow_sync_and_async() -> None:
    log: list[str] = []

    def flow() -> Flow[int]:
        a = yield Io(lambda: 20)
        b = yield Call(lambda x: x + 1, (a,), {})
        try:
            yield Call(_raise, (), {})
        except KeyError:
            log.append("caught")
        interrupted = yield Sleep(0.001)
        assert interrupted is False
        return int(b) * 2

    assert drive_sync(flow()) == 42
    assert asyncio.run(drive_async(flow())) == 42
    assert log == ["caught", "caught"]


def _raise() -> None:
    raise KeyError("x")


def test_signal_wakes_threads_and_tasks() -> None:
    sig = Signal()
    threading.Timer(0.05, sig.set).start()
    assert sig.wait(5)

    async def waiter() -> bool:
        s2 = Signal()
        asyncio.get_running_loop().call_later(0.05, s2.set)
        return await s2.wait_async(5)

    assert asyncio.run(waiter())
    assert asyncio.run(Signal().wait_async(0.01)) is False


def test_a_signal_makes_its_thread_event_only_for_a_waiting_thread() -> None:
    # Thousands of suspended workflows hold signals nobody waits on with a thread: each
    # threading.Event is objects every full garbage collection walks.
    quiet = Signal()
    quiet.on_set(lambda: None)
    assert not any(isinstance(o, threading.Event) for o in gc.get_referents(quiet))
    assert not quiet.wait(0.01)
    assert any(isinstance(o, threading.Event) for o in gc.get_referents(quiet))
    done = Signal()
    done.set()
    assert done.wait(0) and done.is_set()
    assert not any(isinstance(o, threading.Event) for o in gc.get_referents(done))


def test_a_finished_task_lets_go_of_its_function() -> None:
    # A suspended run keeps its pool task; what the task ran (the body's closures) must not
    # stay alive with it.
    class Payload:
        pass

    payload = Payload()
    gone = weakref.ref(payload)
    ran = threading.Event()

    def work(held: Payload = payload) -> None:
        ran.set()

    pool = WorkerPool(1)
    task = pool.submit(work)
    del work, payload
    assert ran.wait(5)
    deadline = time.time() + 5
    while gone() is not None and time.time() < deadline:
        time.sleep(0.01)
    assert gone() is None and task.fn is None
    pool.shutdown()


def test_pool_is_bounded_and_waiters_run_tasks_inline() -> None:
    pool = WorkerPool(1)
    gate = threading.Event()
    pool.submit(lambda: gate.wait(5), "blocker")
    ran: list[str] = []
    task = pool.submit(lambda: ran.append(threading.current_thread().name), "queued")
    assert pool.free_slots() == 0
    assert task.run_inline()  # the only worker is busy: the waiter runs it itself
    assert ran == [threading.current_thread().name]
    assert not task.run_inline()
    gate.set()
    pool.shutdown()
    with pytest.raises(RuntimeError):
        pool.submit(lambda: None)


def test_timers_fire_in_order_and_can_be_cancelled() -> None:
    timers = TimerService()
    fired: list[str] = []
    now = time.time()
    timers.at(now + 0.10, lambda: fired.append("b"))
    timers.at(now + 0.05, lambda: fired.append("a"))
    handle = timers.at(now + 0.07, lambda: fired.append("cancelled"))
    timers.cancel(handle)
    time.sleep(0.3)
    timers.stop()
    assert fired == ["a", "b"]


def test_cancelling_a_timer_that_fired_leaves_nothing_behind() -> None:
    # Every suspended wait cancels its timer when it resumes, usually because it fired: a
    # million sleeps must not leave a million remembered handles.
    timers = TimerService()
    done = threading.Event()
    handles = [timers.at(time.time(), lambda: None) for _ in range(50)]
    timers.at(time.time() + 0.01, done.set)
    assert done.wait(5)
    for handle in handles:
        timers.cancel(handle)
    assert not timers._cancelled
    pending = timers.at(time.time() + 60, lambda: None)
    timers.cancel(pending)
    assert timers._cancelled == {pending}
    timers.stop()


def test_group_commit_batches_concurrent_writers() -> None:
    batches: list[int] = []
    gate = threading.Event()

    def one(x: int) -> int:
        if x == 0:
            gate.wait(5)  # hold the only leader seat while others queue up
        batches.append(1)
        return x * 10

    def many(xs: list[int]) -> list[int]:
        batches.append(len(xs))
        return [x * 10 for x in xs]

    gc: GroupCommitter[int, int] = GroupCommitter(one, many, max_leaders=1)
    results: dict[int, int] = {}

    def submit(x: int) -> None:
        results[x] = gc.submit(x)

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(6)]
    threads[0].start()
    time.sleep(0.05)
    for t in threads[1:]:
        t.start()
    time.sleep(0.1)
    gate.set()
    for t in threads:
        t.join(5)
    assert results == {i: i * 10 for i in range(6)}
    assert batches == [1, 5]


def test_group_commit_blocking_callers_take_fewer_seats() -> None:
    """With ``max_blocking_leaders`` 1, a thread that waits for its write joins the queue
    while another write is in flight, though seats are free (it is written in a batch, not
    alone); a caller told by callback still takes a free seat and is written at once, with
    whatever queued, beside the write in flight."""
    batches: list[list[int]] = []
    gate = threading.Event()

    def one(x: int) -> int:
        if x == 0:
            gate.wait(10)  # hold a seat while the others arrive
        batches.append([x])
        return x * 10

    def many(xs: list[int]) -> list[int]:
        batches.append(xs)
        return [x * 10 for x in xs]

    gc: GroupCommitter[int, int] = GroupCommitter(one, many, max_leaders=3, max_blocking_leaders=1)
    results: dict[int, int] = {}

    def submit(x: int) -> None:
        results[x] = gc.submit(x)

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(4)]
    threads[0].start()
    while gc._leaders == 0:
        time.sleep(0.001)
    for t in threads[1:]:
        t.start()
    deadline = time.monotonic() + 10
    while len(gc._queue) < 3 and not batches and time.monotonic() < deadline:
        time.sleep(0.001)
    assert gc._leaders == 1 and not batches  # queued behind the one in flight, none alone
    answered = threading.Event()
    gc.queue(9, lambda result, error: answered.set())
    assert answered.wait(10)  # a free seat: written while the first is still held
    assert batches == [[1, 2, 3, 9]]
    gate.set()
    for t in threads:
        t.join(10)
    assert results == {i: i * 10 for i in range(4)}
    assert batches == [[1, 2, 3, 9], [0]]
    gc.close()


def test_group_commit_isolates_a_failing_item() -> None:
    def one(x: int) -> int:
        if x == 3:
            raise ValueError("bad item")
        return x

    def many(xs: list[int]) -> list[int]:
        if 3 in xs:
            raise ValueError("batch contains a bad item")
        return xs

    gc: GroupCommitter[int, int] = GroupCommitter(one, many, max_leaders=1)
    assert gc.submit(1) == 1
    with pytest.raises(ValueError):
        gc.submit(3)


def test_group_commit_queued_callers_hold_no_thread() -> None:
    """A queued caller (an async task) waits with no thread of its own: it is answered by
    callback, on the thread that wrote its batch, only once that write has returned."""
    log: list[str] = []
    gate = threading.Event()

    def one(x: int) -> int:
        if x == 0:
            gate.wait(10)  # hold the only leader seat while others queue up
        return x * 10

    def many(xs: list[int]) -> list[int]:
        log.append(f"wrote {xs}")
        return [x * 10 for x in xs]

    gc: GroupCommitter[int, int] = GroupCommitter(one, many, max_leaders=1)
    leader = threading.Thread(target=gc.submit, args=(0,), name="leader")
    leader.start()
    while gc._leaders == 0:
        time.sleep(0.001)
    before = threading.active_count()
    answers: dict[int, tuple[Any, Any, str]] = {}
    done = threading.Event()

    def answer(x: int) -> Any:
        def on_done(result: Any, error: Any) -> None:
            log.append(f"answered {x}")
            answers[x] = (result, error, threading.current_thread().name)
            if len(answers) == 5:
                done.set()

        return on_done

    for x in range(1, 6):
        gc.queue(x, answer(x))
    assert threading.active_count() == before  # no thread per waiting caller, no helper
    assert not answers  # nothing answered while its write has not happened
    gate.set()
    assert done.wait(10)
    leader.join(10)
    assert answers == {x: (x * 10, None, "leader") for x in range(1, 6)}
    assert log == ["wrote [1, 2, 3, 4, 5]"] + [f"answered {x}" for x in range(1, 6)]
    gc.close()


def test_group_commit_queue_with_a_free_seat_writes_on_a_helper() -> None:
    """With nothing in flight a queued item is written at once, alone, by one of the
    committer's own threads; a failing item is answered with its error."""

    def one(x: int) -> int:
        if x < 0:
            raise ValueError("bad item")
        return x + 1

    gc: GroupCommitter[int, int] = GroupCommitter(one, lambda xs: [], max_leaders=2)
    got: list[tuple[Any, Any, str]] = []
    done = threading.Semaphore(0)

    def on_done(result: Any, error: Any) -> None:
        got.append((result, error, threading.current_thread().name))
        done.release()

    gc.queue(1, on_done)
    assert done.acquire(timeout=10)
    gc.queue(-1, on_done)
    assert done.acquire(timeout=10)
    assert got[0][:2] == (2, None) and got[0][2].startswith("waypoint-commit")
    assert got[1][0] is None and isinstance(got[1][1], ValueError)
    assert gc._leaders == 0
    gc.close()


def test_io_effect_awaits_a_queued_write_without_the_io_pool() -> None:
    """Driven async, an ``Io`` whose write was queued is answered through its future (many
    answers from one thread wake the loop once); one not queued runs on the I/O pool;
    driven sync, the blocking call runs inline."""
    pending: list[Any] = []
    calls: list[str] = []

    def blocking() -> str:
        calls.append(threading.current_thread().name)
        return "blocking"

    def queue(answered: Any) -> bool:
        pending.append(answered)
        return True

    def flow(queued: bool) -> Flow[list[Any]]:
        got = yield Io(blocking, queue if queued else None)
        return [got]

    async def main() -> list[Any]:
        tasks = [asyncio.ensure_future(drive_async(flow(True))) for _ in range(3)]
        while len(pending) < 3:
            await asyncio.sleep(0)
        answer_all = threading.Thread(target=lambda: [a(i, None) for i, a in enumerate(pending)])
        answer_all.start()
        answer_all.join()
        return [*(await asyncio.gather(*tasks)), await drive_async(flow(False))]

    assert asyncio.run(main()) == [[0], [1], [2], ["blocking"]]
    assert len(calls) == 1 and calls[0].startswith("waypoint-io")
    assert drive_sync(flow(True)) == ["blocking"] and len(pending) == 3


def test_a_queued_write_failure_reaches_the_engine_translated() -> None:
    """A queued write's error comes back through its callback, not by raising: the guarded
    store translates it there too (a full disk must reach the outcome writer as
    WaypointStorageFullError, which it waits through)."""
    from waypoint.core.storage_errors import guarded
    from waypoint.error import WaypointStorageFullError
    from waypoint.storage.errors import StorageFullError

    class Full:
        def queue_write(self, write: Any, done: Any) -> bool:
            done(None, StorageFullError("no space"))
            return True

    got: list[Any] = []
    assert guarded(Full()).queue_write("w", lambda r, e: got.append((r, e)))  # type: ignore[arg-type]
    assert got[0][0] is None and isinstance(got[0][1], WaypointStorageFullError)
    assert isinstance(got[0][1].__cause__, StorageFullError)


def test_migration_files_split_into_statements() -> None:
    for dialect in ("postgresql", "sqlite"):
        migrations = load(dialect)
        assert [m.version for m in migrations] == list(range(1, len(migrations) + 1))
    statements = split_statements(load("sqlite")[0].sql)
    assert statements and all(s.rstrip().endswith(";") for s in statements)


def test_index_migrations_build_concurrently_on_postgresql_only() -> None:
    """Migrations 10, 11, 13 and 14 build their indexes CONCURRENTLY (outside a transaction)
    on PostgreSQL, and nothing else does; a new database runs them as plain CREATE INDEX."""
    pg = load("postgresql")
    assert [m.version for m in pg if not m.transactional] == [10, 11, 13, 14]
    assert [len(m.concurrent_indexes) for m in pg if not m.transactional] == [3, 12, 2, 2]
    assert all(m.transactional and not m.concurrent_indexes for m in load("sqlite"))
    for mig in pg:
        plain = mig.in_transaction()
        assert "CONCURRENTLY" not in plain.replace("-- Built CONCURRENTLY", "")
        assert plain.replace("INDEX IF", "INDEX CONCURRENTLY IF") == mig.sql or mig.transactional
    name, statement = pg[9].concurrent_indexes[0]
    assert name == "idx_workflow_status_active_created"
    assert statement.startswith("CREATE INDEX CONCURRENTLY IF NOT EXISTS " + name)


def test_a_concurrent_migration_holds_nothing_but_index_builds() -> None:
    """The runner can check only index builds valid before recording: anything else beside
    them, outside a transaction, could be left half done and is refused when loading."""
    mixed = Migration(
        99,
        "mixed",
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS i ON t (x);\nCREATE TABLE u (x INT);\n",
    )
    assert not mixed.transactional
    with pytest.raises(RuntimeError, match="nothing but CREATE INDEX CONCURRENTLY"):
        _ = mixed.concurrent_indexes
    bare = Migration(98, "bare", "CREATE INDEX CONCURRENTLY i ON t (x);\n")
    with pytest.raises(RuntimeError, match="0098_bare"):
        _ = bare.concurrent_indexes


def test_dbos_without_config_is_a_clear_error() -> None:
    from waypoint import DBOS

    DBOS.destroy(destroy_registry=True)
    with pytest.raises(DBOSException, match="initialized"):
        DBOS.launch()
    assert DBOS.workflow_id is None
