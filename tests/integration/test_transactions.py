"""@DBOS.transaction and DBOS.sql_session on a real application database (SQLite file or a
PostgreSQL database of its own), beside the system database of each backend."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from psycopg import sql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from tests.conftest import pg_url, requires_postgres
from waypoint import DBOS, DBOSConfiguredInstance, Queue, SetWorkflowID
from waypoint.core.runtime import get_runtime
from waypoint.error import DBOSException, DBOSUnexpectedStepError


@pytest.fixture
def app_url(backend: str, tmp_path: Any) -> Iterator[str]:
    """A fresh application database: a SQLite file, or a PostgreSQL database that launch
    creates (DBOS creates a missing application database) and the test drops."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path}/app-{uuid.uuid4().hex[:8]}.sqlite"
        return
    name = f"wp_txn_app_{uuid.uuid4().hex[:10]}"
    yield pg_url(name)
    with psycopg.connect(pg_url("postgres"), autocommit=True) as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture
def txn_dbos(config: dict[str, Any], app_url: str) -> Iterator[type[DBOS]]:
    DBOS.destroy(destroy_registry=True)
    DBOS(config={**config, "application_database_url": app_url})  # type: ignore[typeddict-item]
    yield DBOS
    DBOS.destroy(destroy_registry=True)


def app_engine(url: str) -> sa.Engine:
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return sa.create_engine(parsed, poolclass=sa.pool.NullPool)


def outputs_table(url: str) -> str:
    return "transaction_outputs" if url.startswith("sqlite") else "dbos.transaction_outputs"


def query(url: str, statement: str, **params: Any) -> list[Any]:
    engine = app_engine(url)
    try:
        with engine.begin() as conn:
            result = conn.execute(sa.text(statement), params)
            return list(result.fetchall()) if result.returns_rows else []
    finally:
        engine.dispose()


def create_ledger(url: str) -> None:
    engine = app_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE ledger (entry TEXT PRIMARY KEY, amount INT)"))
    finally:
        engine.dispose()


def test_output_is_recorded_in_the_same_commit_and_replayed(
    txn_dbos: type[DBOS], app_url: str
) -> None:
    runs: list[str] = []

    @DBOS.transaction()
    def credit(entry: str, amount: int) -> int:
        runs.append(entry)
        assert DBOS.step_id == 1 and DBOS.step_status is None
        session = DBOS.sql_session
        session.execute(sa.text("INSERT INTO ledger VALUES (:e, :a)"), {"e": entry, "a": amount})
        total = session.execute(sa.text("SELECT sum(amount) FROM ledger")).scalar()
        return int(total)

    @DBOS.workflow()
    def deposit(entry: str, amount: int) -> int:
        return credit(entry, amount)

    DBOS.launch()
    create_ledger(app_url)
    with SetWorkflowID("dep-1"):
        assert deposit("a", 5) == 5
    with SetWorkflowID("dep-1"):
        assert deposit("a", 5) == 5  # the recorded outcome: the body does not run again
    assert runs == ["a"]

    rows = query(
        app_url,
        "SELECT workflow_uuid, function_id, output, error, function_name, txn_id, "
        f"txn_snapshot, executor_id, created_at FROM {outputs_table(app_url)}",
    )
    assert len(rows) == 1
    wfid, fid, output, error, name, txn_id, snapshot, executor, created = rows[0]
    codec = get_runtime().codec
    assert (wfid, fid, error, name) == ("dep-1", 1, None, credit.__qualname__)
    assert codec.decode(output, "py_pickle") == 5
    assert (txn_id, snapshot, executor) == ("", "", None) and created > 0

    steps = DBOS.list_workflow_steps("dep-1")
    assert [(s["function_id"], s["function_name"], s["output"]) for s in steps] == [
        (1, credit.__qualname__, 5)
    ]
    assert query(app_url, "SELECT entry, amount FROM ledger") == [("a", 5)]


def test_errors_roll_back_and_are_recorded_in_both_databases(
    txn_dbos: type[DBOS], app_url: str
) -> None:
    runs = 0

    @DBOS.transaction()
    def overdraw(entry: str) -> None:
        nonlocal runs
        runs += 1
        DBOS.sql_session.execute(sa.text("INSERT INTO ledger VALUES (:e, -100)"), {"e": entry})
        raise ValueError(f"insufficient funds for {entry}")

    @DBOS.workflow()
    def attempt(entry: str) -> str:
        try:
            overdraw(entry)
        except ValueError as exc:
            return str(exc)
        return "no error"

    DBOS.launch()
    create_ledger(app_url)
    with SetWorkflowID("od-1"):
        assert attempt("x") == "insufficient funds for x"
    assert runs == 1
    assert query(app_url, "SELECT * FROM ledger") == []  # rolled back
    rows = query(app_url, f"SELECT output, error FROM {outputs_table(app_url)}")
    assert len(rows) == 1 and rows[0][0] is None
    error = get_runtime().codec.decode_error(rows[0][1], "py_pickle")
    assert isinstance(error, ValueError) and str(error) == "insufficient funds for x"
    [step] = DBOS.list_workflow_steps("od-1")
    assert step["output"] is None and isinstance(step["error"], ValueError)

    # Outside a workflow: a one-operation workflow, so its ID replays the recorded error.
    with SetWorkflowID("od-2"), pytest.raises(ValueError):
        overdraw("y")
    with SetWorkflowID("od-2"), pytest.raises(ValueError):
        overdraw("y")
    assert runs == 2


def test_outside_a_workflow_it_runs_as_a_temp_workflow(txn_dbos: type[DBOS]) -> None:
    @DBOS.transaction(name="stamp")
    def stamp(x: int) -> str:
        assert DBOS.workflow_id is not None
        return f"{DBOS.workflow_id}:{x}"

    queue = Queue("txn-queue")
    DBOS.launch()
    with SetWorkflowID("direct"):
        assert stamp(1) == "direct:1"
    status = DBOS.get_workflow_status("direct")
    assert status is not None and status.name == "<temp>.stamp" and status.status == "SUCCESS"

    handle = DBOS.start_workflow(stamp, 2)
    assert handle.get_result() == f"{handle.workflow_id}:2"
    queued = queue.enqueue(stamp, 3)
    assert queued.get_result() == f"{queued.workflow_id}:3"
    assert queued.get_status().name == "<temp>.stamp"


def test_isolation_levels_are_honoured(txn_dbos: type[DBOS], backend: str) -> None:
    def level() -> str:
        if backend == "sqlite":
            return str(DBOS.sql_session.execute(sa.text("PRAGMA read_uncommitted")).scalar())
        return str(DBOS.sql_session.execute(sa.text("SHOW transaction_isolation")).scalar())

    @DBOS.transaction()
    def default_level() -> str:
        return level()

    @DBOS.transaction(isolation_level="REPEATABLE READ")
    def repeatable() -> str:
        return level()

    @DBOS.transaction(isolation_level="READ COMMITTED")
    def committed() -> str:
        return level()

    @DBOS.workflow()
    def levels() -> list[str]:
        return [default_level(), repeatable(), committed()]

    DBOS.launch()
    if backend == "sqlite":
        # SQLite transactions are always serializable (read_uncommitted stays off).
        assert levels() == ["0", "0", "0"]
    else:
        assert levels() == ["serializable", "repeatable read", "read committed"]

    with pytest.raises(DBOSException, match="isolation_level"):
        DBOS.transaction(isolation_level="CHAOS")


def test_serialization_failures_are_retried(txn_dbos: type[DBOS], backend: str) -> None:
    """Two SERIALIZABLE transactions read the same counter, then both write it: PostgreSQL
    fails the second writer (40001); Waypoint runs that transaction again, and both
    increments land."""
    if backend != "postgres":
        pytest.skip("serialization failures are a PostgreSQL matter")
    both_read = threading.Barrier(2, timeout=30)
    attempts: dict[str, int] = {"a": 0, "b": 0}

    @DBOS.transaction()
    def increment(who: str) -> int:
        attempts[who] += 1
        session = DBOS.sql_session
        value = int(session.execute(sa.text("SELECT v FROM counter")).scalar_one())
        if attempts[who] == 1:
            both_read.wait()  # both transactions have their snapshot before either writes
        session.execute(sa.text("UPDATE counter SET v = :v"), {"v": value + 1})
        return value + 1

    @DBOS.transaction()
    def setup() -> None:
        DBOS.sql_session.execute(sa.text("CREATE TABLE counter (v INT)"))
        DBOS.sql_session.execute(sa.text("INSERT INTO counter VALUES (0)"))

    DBOS.launch()
    setup()
    results: dict[str, int] = {}

    def run(who: str) -> None:
        with SetWorkflowID(f"inc-{who}"):
            results[who] = increment(who)

    threads = [threading.Thread(target=run, args=(w,)) for w in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(results.values()) == [1, 2]
    assert sorted(attempts.values()) == [1, 2]  # the loser ran once more, then committed
    loser = "a" if attempts["a"] == 2 else "b"
    assert results[loser] == 2


def test_instance_method_transactions(txn_dbos: type[DBOS]) -> None:
    @DBOS.dbos_class()
    class Teller(DBOSConfiguredInstance):
        def __init__(self, rate: int) -> None:
            self.rate = rate
            super().__init__("teller")

        @DBOS.transaction()
        def fee(self, amount: int) -> int:
            return amount * self.rate

        @DBOS.workflow()
        def charge(self, amount: int) -> int:
            return self.fee(amount) + 1

        @classmethod
        @DBOS.transaction()
        def one(cls, x: int) -> str:
            value = DBOS.sql_session.execute(sa.text("SELECT :x"), {"x": x}).scalar()
            return f"{cls.__name__}:{value}"

    teller = Teller(3)
    DBOS.launch()
    assert teller.charge(2) == 7
    with SetWorkflowID("fee-direct"):
        assert teller.fee(5) == 15
    status = DBOS.get_workflow_status("fee-direct")
    assert status is not None
    assert status.class_name == Teller.__qualname__ and status.config_name == "teller"
    handle = DBOS.start_workflow(teller.fee, 4)
    assert handle.get_result() == 12
    assert handle.get_status().config_name == "teller"
    with SetWorkflowID("cls-direct"):
        assert Teller.one(9) == "Teller:9"
    status = DBOS.get_workflow_status("cls-direct")
    assert status is not None and status.class_name == Teller.__qualname__


def test_misuse_is_refused_with_a_clear_error(txn_dbos: type[DBOS]) -> None:
    @DBOS.transaction()
    def peek() -> None:
        DBOS.get_workflow_status("anything")

    @DBOS.transaction()
    def plain() -> int:
        return 1

    @DBOS.step()
    def step_calling_txn() -> int:
        return plain()

    @DBOS.workflow()
    def wf() -> int:
        return step_calling_txn()

    with pytest.raises(DBOSException, match="coroutine"):

        @DBOS.transaction()
        async def not_allowed() -> None: ...

    DBOS.launch()
    with pytest.raises(DBOSException, match=r"only available within a @DBOS\.transaction"):
        _ = DBOS.sql_session
    with pytest.raises(AssertionError):  # what DBOS raises there
        _ = DBOS.sql_session
    with pytest.raises(DBOSException, match=r"Invalid call to `DBOS\.getStatus` inside a"):
        peek()
    with pytest.raises(DBOSException, match="inside step"):
        wf()


def test_without_an_application_database(dbos: type[DBOS]) -> None:
    @DBOS.transaction()
    def txn() -> int:
        return 1

    DBOS.launch()
    with pytest.raises(DBOSException, match="application_database_url"):
        txn()


def test_a_recorded_transaction_of_another_name_is_nondeterminism(
    txn_dbos: type[DBOS], app_url: str
) -> None:
    """The application database's record is checked too: a committed transaction whose
    system checkpoint was lost is replayed only under its own name."""

    @DBOS.transaction()
    def first() -> int:
        return 1

    @DBOS.transaction()
    def second() -> int:
        return 2

    @DBOS.workflow()
    def wf(which: str) -> int:
        return first() if which == "first" else second()

    DBOS.launch()
    with SetWorkflowID("nd-1"):
        assert wf("first") == 1
    # Forget the system checkpoint and the outcome, keep the application database's record.
    store = get_runtime().store
    store.delete_workflows(["nd-1"])
    with SetWorkflowID("nd-1"), pytest.raises(DBOSUnexpectedStepError):
        wf("second")
    DBOS.destroy()


def test_application_database_schema_matches_dbos(txn_dbos: type[DBOS], app_url: str) -> None:
    DBOS.launch()
    engine = app_engine(app_url)
    try:
        inspector = sa.inspect(engine)
        schema = None if app_url.startswith("sqlite") else "dbos"
        columns = {
            c["name"]: (str(c["type"]).upper(), c["nullable"])
            for c in inspector.get_columns("transaction_outputs", schema=schema)
        }
        pk = inspector.get_pk_constraint("transaction_outputs", schema=schema)
        indexes = inspector.get_indexes("transaction_outputs", schema=schema)
    finally:
        engine.dispose()
    assert list(columns) == [
        "workflow_uuid",
        "function_id",
        "output",
        "error",
        "txn_id",
        "txn_snapshot",
        "executor_id",
        "function_name",
        "created_at",
    ]
    assert columns["workflow_uuid"][1] is False and columns["function_name"][1] is False
    assert columns["created_at"] == ("BIGINT", False)
    assert pk["constrained_columns"] == ["workflow_uuid", "function_id"]
    assert [(i["name"], i["column_names"]) for i in indexes] == [
        ("transaction_outputs_created_at_index", ["created_at"])
    ]


def test_delete_workflow_forgets_its_transactions(txn_dbos: type[DBOS], app_url: str) -> None:
    @DBOS.transaction()
    def txn() -> int:
        return 1

    @DBOS.workflow()
    def wf() -> int:
        return txn()

    DBOS.launch()
    with SetWorkflowID("del-1"):
        wf()
    with SetWorkflowID("keep-1"):
        wf()
    DBOS.delete_workflow("del-1")
    rows = query(app_url, f"SELECT workflow_uuid FROM {outputs_table(app_url)}")
    assert rows == [("keep-1",)]


def test_only_an_application_database_url(backend: str, app_url: str, tmp_path: Any) -> None:
    """DBOS's rule: the system database lives beside the application database (the same
    SQLite file; a PostgreSQL database named <app>_dbos_sys), for DBOS and DBOSClient."""
    from waypoint import DBOSClient

    DBOS.destroy(destroy_registry=True)

    @DBOS.transaction()
    def txn() -> str:
        return "ok"

    DBOS(config={"name": "app-only", "application_database_url": app_url})
    try:
        DBOS.launch()
        with SetWorkflowID("only-app"):
            assert txn() == "ok"
        client = DBOSClient(application_database_url=app_url)
        try:
            assert client.retrieve_workflow("only-app").get_result() == "ok"
        finally:
            client.destroy()
    finally:
        DBOS.destroy(destroy_registry=True)
        if backend == "postgres":
            name = sa.make_url(app_url).database + "_dbos_sys"
            with psycopg.connect(pg_url("postgres"), autocommit=True) as admin:
                admin.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )


def test_run_dbos_database_migrations_creates_the_application_table(
    backend: str, db_url: str, app_url: str
) -> None:
    from waypoint import run_dbos_database_migrations

    role = f"wp_txn_role_{uuid.uuid4().hex[:8]}"
    if backend == "postgres":
        with psycopg.connect(pg_url("postgres"), autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(role)))
            admin.execute(
                sql.SQL("CREATE DATABASE {}").format(sql.Identifier(sa.make_url(app_url).database))
            )
    try:
        run_dbos_database_migrations(
            db_url,
            app_database_url=app_url,
            application_role=role if backend == "postgres" else None,
        )
        assert query(app_url, f"SELECT count(*) FROM {outputs_table(app_url)}") == [(0,)]
        if backend == "postgres":
            allowed = query(
                app_url,
                "SELECT has_table_privilege(:r, 'dbos.transaction_outputs', 'INSERT')",
                r=role,
            )
            assert allowed == [(True,)]
    finally:
        if backend == "postgres":
            for url in (app_url, db_url):  # its grants in both databases
                with psycopg.connect(url) as conn:
                    conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            with psycopg.connect(pg_url("postgres"), autocommit=True) as admin:
                admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_a_function_is_a_transaction_or_a_step_not_both(txn_dbos: type[DBOS]) -> None:
    from waypoint.error import DBOSConflictingRegistrationError

    with pytest.raises(DBOSConflictingRegistrationError, match="conflicting function type"):

        @DBOS.step()
        @DBOS.transaction()
        def both() -> None: ...

    with pytest.raises(DBOSConflictingRegistrationError, match="conflicting function type"):

        @DBOS.transaction()
        @DBOS.step()
        def both_again() -> None: ...


def test_a_sync_transaction_from_an_async_workflow(txn_dbos: type[DBOS]) -> None:
    @DBOS.transaction()
    def txn(x: int) -> int:
        return int(DBOS.sql_session.execute(sa.text("SELECT :x + 1"), {"x": x}).scalar_one())

    @DBOS.workflow()
    async def wf(x: int) -> int:
        direct = txn(x)  # blocks the loop while it runs, as in DBOS (a warning says so)
        threaded = await asyncio.to_thread(txn, x + 10)  # the advised way
        return direct + threaded

    DBOS.launch()
    with SetWorkflowID("async-txn"):
        assert asyncio.run(wf(1)) == 2 + 12
    steps = DBOS.list_workflow_steps("async-txn")
    assert [(s["function_id"], s["output"]) for s in steps] == [(1, 2), (2, 12)]


def test_garbage_collection_and_retention_prune_transaction_outputs(
    config: dict[str, Any], app_url: str
) -> None:
    DBOS.destroy(destroy_registry=True)

    @DBOS.transaction()
    def txn() -> int:
        return 1

    def recorded() -> list[str]:
        rows = query(app_url, f"SELECT workflow_uuid FROM {outputs_table(app_url)}")
        return sorted(r[0] for r in rows)

    DBOS(config={**config, "application_database_url": app_url})  # type: ignore[typeddict-item]
    try:
        DBOS.launch()
        for wfid in ("gc-1", "gc-2"):
            with SetWorkflowID(wfid):
                txn()
        DBOS.garbage_collect(rows_threshold=1)  # keeps the newest workflow and its record
        assert recorded() == ["gc-2"]
    finally:
        DBOS.destroy(destroy_registry=True)

    # The retention policy prunes them too, on its own schedule.
    @DBOS.transaction()
    def txn2() -> int:
        return 2

    retention = {"retention_max_rows": 1, "retention_interval_sec": 0.2}
    DBOS(config={**config, "application_database_url": app_url, **retention})  # type: ignore[typeddict-item]
    try:
        DBOS.launch()
        with SetWorkflowID("gc-3"):
            txn2()
        deadline = time.monotonic() + 30
        while recorded() != ["gc-3"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert recorded() == ["gc-3"]
    finally:
        DBOS.destroy(destroy_registry=True)


def test_fork_reruns_the_transactions_from_the_fork_point(txn_dbos: type[DBOS]) -> None:
    counts = {1: 0, 2: 0, 3: 0}

    @DBOS.transaction()
    def count(i: int) -> int:
        counts[i] += 1
        return i

    @DBOS.workflow()
    def three() -> list[int]:
        return [count(1), count(2), count(3)]

    DBOS.launch()
    with SetWorkflowID("fork-src"):
        assert three() == [1, 2, 3]
    forked = DBOS.fork_workflow("fork-src", 2)
    assert forked.get_result() == [1, 2, 3]
    assert counts == {1: 1, 2: 2, 3: 2}


def test_cli_migrate_creates_the_application_table(db_url: str, app_url: str) -> None:
    from tests.integration.test_cli import ok, wp

    out = ok(wp("migrate", "-s", db_url, "-D", app_url))
    assert "Application database" in out and "up to date" in out
    assert query(app_url, f"SELECT count(*) FROM {outputs_table(app_url)}") == [(0,)]


def test_sqlite_application_tables_beside_the_system_tables(tmp_path: Any) -> None:
    """DBOS's SQLite layout: one file holds the system tables and the application's, with
    transactions from many threads at once."""
    url = f"sqlite:///{tmp_path}/one-file.sqlite"
    DBOS.destroy(destroy_registry=True)

    @DBOS.transaction()
    def add(n: int) -> int:
        DBOS.sql_session.execute(sa.text("INSERT INTO nums VALUES (:n)"), {"n": n})
        return n

    @DBOS.workflow()
    def wf(n: int) -> int:
        return add(n) + add(n + 100)

    DBOS(config={"name": "one-file", "system_database_url": url, "application_database_url": url})
    try:
        DBOS.launch()
        query(url, "CREATE TABLE nums (n INT)")
        handles = [DBOS.start_workflow(wf, n) for n in range(20)]
        assert sorted(h.get_result() for h in handles) == [2 * n + 100 for n in range(20)]
        assert query(url, "SELECT count(*) FROM nums") == [(40,)]
        assert query(url, "SELECT count(*) FROM transaction_outputs") == [(40,)]
    finally:
        DBOS.destroy(destroy_registry=True)


def test_committing_inside_a_transaction_is_an_error(txn_dbos: type[DBOS]) -> None:
    from sqlalchemy.exc import InvalidRequestError

    runs = 0

    @DBOS.transaction()
    def commits() -> None:
        nonlocal runs
        runs += 1
        DBOS.sql_session.commit()  # Waypoint commits the transaction, not its body

    DBOS.launch()
    for _ in range(2):  # the second call replays the recorded error
        with SetWorkflowID("commits"), pytest.raises(InvalidRequestError, match="closed"):
            commits()
    assert runs == 1


def test_orm_objects_in_a_transaction(txn_dbos: type[DBOS], app_url: str) -> None:
    class Base(DeclarativeBase):
        pass

    class Greeting(Base):
        __tablename__ = "greetings"
        id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
        name: Mapped[str] = mapped_column(nullable=False)

    @DBOS.transaction()
    def greet(name: str) -> str:
        DBOS.sql_session.add(Greeting(name=name))  # flushed before the query and the record
        count = DBOS.sql_session.scalar(
            sa.select(sa.func.count()).select_from(Greeting).where(Greeting.name == name)
        )
        return f"{name}{count}"

    DBOS.launch()
    engine = app_engine(app_url)
    Base.metadata.create_all(engine)
    engine.dispose()
    assert greet("alice") == "alice1"
    assert greet("alice") == "alice2"
    with SetWorkflowID("orm-1"):
        assert greet("alice") == "alice3"
    with SetWorkflowID("orm-1"):
        assert greet("alice") == "alice3"
    assert query(app_url, "SELECT count(*) FROM greetings") == [(3,)]


def test_retriable_and_other_database_errors(txn_dbos: type[DBOS], backend: str) -> None:
    """A serialization failure reported by the driver is retried however the body raised it;
    any other database error fails the transaction at once with the driver's error."""
    from psycopg.errors import SerializationFailure
    from sqlalchemy.exc import OperationalError

    failures = 0

    @DBOS.transaction()
    def flaky(times: int) -> int:
        nonlocal failures
        if failures < times:
            failures += 1
            raise OperationalError("serialization test", {}, SerializationFailure())
        return times

    @DBOS.transaction()
    def broken() -> None:
        DBOS.sql_session.execute(sa.text("selct abc from c"))

    DBOS.launch()
    assert flaky(5) == 5
    assert failures == 5
    with pytest.raises(sa.exc.DBAPIError) as caught:
        broken()
    if backend == "postgres":
        assert getattr(caught.value.orig, "sqlstate", None) == "42601"
    else:
        assert "syntax error" in str(caught.value.orig)


def test_a_transaction_can_be_scheduled(txn_dbos: type[DBOS]) -> None:
    """As in DBOS, @DBOS.scheduled accepts a transaction: it fires as a one-transaction
    workflow, its slots named after the transaction."""
    import datetime as dt
    import threading

    fired = threading.Event()

    @DBOS.scheduled("* * * * * *")
    @DBOS.transaction()
    def tick(scheduled: dt.datetime, actual: dt.datetime) -> None:
        DBOS.sql_session.execute(sa.text("SELECT 1"))
        fired.set()

    name = tick.dbos_function_name  # type: ignore[attr-defined]
    DBOS.launch()
    assert fired.wait(10)
    assert DBOS.list_workflows(workflow_id_prefix=f"sched-{name}-")


@requires_postgres
def test_an_application_database_outage_is_retried(
    config: dict[str, Any], backend: str, app_url: str
) -> None:
    """The application database drops every connection in the middle of a transaction and
    refuses new ones for a while: the transaction is run again until it commits, once."""
    if backend != "postgres":
        pytest.skip("a PostgreSQL outage, through a proxy")
    from tests.proxy import TcpProxy

    target = sa.make_url(app_url)
    proxy = TcpProxy(target.host or "127.0.0.1", target.port or 5432)
    proxied_url = target.set(port=proxy.port).render_as_string(hide_password=False)
    attempts = 0
    restored = threading.Event()

    @DBOS.transaction()
    def pay(amount: int) -> int:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            proxy.cut()  # the outage begins inside the transaction
            threading.Timer(0.5, lambda: (proxy.restore(), restored.set())).start()
        DBOS.sql_session.execute(sa.text("INSERT INTO payments VALUES (:a)"), {"a": amount})
        return amount

    DBOS.destroy(destroy_registry=True)
    DBOS(config={**config, "application_database_url": proxied_url})  # type: ignore[typeddict-item]
    try:
        DBOS.launch()
        query(app_url, "CREATE TABLE payments (amount INT)")
        with SetWorkflowID("outage-pay"):
            assert pay(7) == 7
        assert restored.is_set() and attempts >= 2
        assert query(app_url, "SELECT amount FROM payments") == [(7,)]
        assert len(query(app_url, "SELECT * FROM dbos.transaction_outputs")) == 1
    finally:
        DBOS.destroy(destroy_registry=True)
        proxy.close()


def test_db_engine_kwargs_shape_the_application_engine(
    config: dict[str, Any], app_url: str
) -> None:
    from waypoint._api.transactions import application_database

    DBOS.destroy(destroy_registry=True)
    DBOS(
        config={  # type: ignore[typeddict-item]
            **config,
            "application_database_url": app_url,
            "db_engine_kwargs": {"pool_size": 3, "connect_args": {"connect_timeout": 5}},
        }
    )
    try:
        DBOS.launch()
        db = application_database()
        assert db is not None
        assert db.engine.pool.size() == 3  # type: ignore[attr-defined]
    finally:
        DBOS.destroy(destroy_registry=True)
    with pytest.raises(DBOSException, match="db_engine_kwargs"):
        DBOS(config={**config, "application_database_url": app_url, "db_engine_kwargs": 3})  # type: ignore[typeddict-item]
        DBOS.launch()
    DBOS.destroy(destroy_registry=True)
