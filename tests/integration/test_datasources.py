"""SQLAlchemyDatasource and AsyncSQLAlchemyDatasource on a real user database (a SQLite file
or a PostgreSQL database of its own), with the system database of each backend."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from psycopg import sql

from tests.conftest import pg_url
from waypoint import DBOS, AsyncSQLAlchemyDatasource, SetWorkflowID, SQLAlchemyDatasource
from waypoint.core.runtime import get_runtime
from waypoint.error import DBOSException


@pytest.fixture
def user_url(backend: str, tmp_path: Any) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path}/user-{uuid.uuid4().hex[:8]}.sqlite"
        return
    name = f"wp_ds_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_url("postgres"), autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield pg_url(name)
    with psycopg.connect(pg_url("postgres"), autocommit=True) as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture
def created() -> Iterator[list[SQLAlchemyDatasource]]:
    """Datasources a test created, disposed at its end (their pools hold connections)."""
    made: list[SQLAlchemyDatasource] = []
    yield made
    for ds in made:
        ds.engine.dispose()


def query(url: str, statement: str) -> list[tuple[Any, ...]]:
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    engine = sa.create_engine(parsed, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            result = conn.execute(sa.text(statement))
            return [tuple(r) for r in result.fetchall()] if result.returns_rows else []
    finally:
        engine.dispose()


def outputs(url: str, schema: str = "dbos") -> str:
    return "datasource_outputs" if url.startswith("sqlite") else f"{schema}.datasource_outputs"


def test_sync_datasource_records_in_the_same_transaction(
    dbos: type[DBOS], created: list[SQLAlchemyDatasource], user_url: str
) -> None:
    ds = SQLAlchemyDatasource.create(user_url)
    created.append(ds)
    runs: list[int] = []

    @ds.transaction()
    def add(n: int) -> int:
        runs.append(n)
        session = ds.sql_session()
        session.execute(sa.text("INSERT INTO items VALUES (:n)"), {"n": n})
        return int(session.execute(sa.text("SELECT count(*) FROM items")).scalar_one())

    @DBOS.workflow()
    def wf(n: int) -> int:
        return add(n)

    query(user_url, "CREATE TABLE items (n INT)")
    DBOS.launch()
    with SetWorkflowID("ds-1"):
        assert wf(7) == 1
    with SetWorkflowID("ds-1"):
        assert wf(7) == 1
    assert runs == [7]
    rows = query(
        user_url,
        f"SELECT workflow_id, step_id, output, error, serialization FROM {outputs(user_url)}",
    )
    assert len(rows) == 1
    wfid, step_id, output, error, serialization = rows[0]
    assert (wfid, step_id, error, serialization) == ("ds-1", 1, None, "py_pickle")
    assert get_runtime().codec.decode(output, serialization) == 1
    [step] = DBOS.list_workflow_steps("ds-1")
    assert (step["function_name"], step["output"]) == (add.__qualname__, 1)

    # Outside a workflow: a plain transaction, nothing recorded.
    assert add(8) == 2
    assert len(query(user_url, f"SELECT * FROM {outputs(user_url)}")) == 1


def test_a_committed_step_whose_checkpoint_was_lost_is_replayed(
    dbos: type[DBOS], created: list[SQLAlchemyDatasource], user_url: str
) -> None:
    ds = SQLAlchemyDatasource.create(user_url)
    created.append(ds)
    runs = 0

    @ds.transaction()
    def once() -> str:
        nonlocal runs
        runs += 1
        ds.sql_session().execute(sa.text("INSERT INTO items VALUES (1)"))
        return uuid.uuid4().hex

    @DBOS.workflow()
    def wf() -> str:
        return once()

    query(user_url, "CREATE TABLE items (n INT)")
    DBOS.launch()
    with SetWorkflowID("lost-1"):
        first = wf()
    get_runtime().store.delete_workflows(["lost-1"])  # the system database forgets it
    with SetWorkflowID("lost-1"):
        assert wf() == first  # the datasource's record answers: no second transaction
    assert runs == 1
    assert query(user_url, "SELECT count(*) FROM items") == [(1,)]


def test_errors_roll_back_and_are_recorded(
    dbos: type[DBOS], created: list[SQLAlchemyDatasource], user_url: str
) -> None:
    ds = SQLAlchemyDatasource.create(user_url)
    created.append(ds)

    def fail(n: int) -> None:
        ds.sql_session().execute(sa.text("INSERT INTO items VALUES (:n)"), {"n": n})
        raise KeyError(n)

    @DBOS.workflow()
    def wf() -> str:
        try:
            ds.run_tx_step({"name": "failing"}, fail, 3)
        except KeyError as exc:
            return f"caught {exc}"
        return "no error"

    query(user_url, "CREATE TABLE items (n INT)")
    DBOS.launch()
    with SetWorkflowID("err-1"):
        assert wf() == "caught 3"
    assert query(user_url, "SELECT * FROM items") == []
    [(output, error, serialization)] = query(
        user_url, f"SELECT output, error, serialization FROM {outputs(user_url)}"
    )
    assert output is None
    assert isinstance(get_runtime().codec.decode_error(error, serialization), KeyError)
    [step] = DBOS.list_workflow_steps("err-1")
    assert step["function_name"] == "failing" and isinstance(step["error"], KeyError)


def test_isolation_level_and_misuse(
    dbos: type[DBOS], created: list[SQLAlchemyDatasource], user_url: str, backend: str
) -> None:
    ds = SQLAlchemyDatasource.create(user_url)
    created.append(ds)

    @ds.transaction(isolation_level="READ COMMITTED")
    def level() -> str:
        if backend == "sqlite":
            return "serializable"  # SQLite's one level
        return str(ds.sql_session().execute(sa.text("SHOW transaction_isolation")).scalar())

    DBOS.launch()
    assert level() == ("serializable" if backend == "sqlite" else "read committed")
    with pytest.raises(DBOSException, match="within a datasource transaction"):
        ds.sql_session()
    with pytest.raises(AssertionError):  # what DBOS raises there
        ds.sql_session()
    with pytest.raises(DBOSException, match="coroutine"):

        @ds.transaction()
        async def not_sync() -> None: ...

    with pytest.raises(DBOSException, match="isolation_level"):
        ds.transaction(isolation_level="SOMETIMES")


def test_custom_schema(
    dbos: type[DBOS], created: list[SQLAlchemyDatasource], user_url: str, backend: str
) -> None:
    if backend == "sqlite":
        pytest.skip("SQLite has no schemas")
    created.append(SQLAlchemyDatasource.create(user_url, schema="my_outputs"))
    assert query(user_url, f"SELECT count(*) FROM {outputs(user_url, 'my_outputs')}") == [(0,)]


def test_async_datasource(
    dbos: type[DBOS], created: list[SQLAlchemyDatasource], user_url: str
) -> None:
    runs: list[int] = []

    async def scenario() -> None:
        ds = await AsyncSQLAlchemyDatasource.create(user_url)

        @ds.transaction()
        async def add(n: int) -> int:
            runs.append(n)
            session = ds.sql_session()
            await session.execute(sa.text("INSERT INTO items VALUES (:n)"), {"n": n})
            result = await session.execute(sa.text("SELECT count(*) FROM items"))
            return int(result.scalar_one())

        @DBOS.workflow()
        async def wf(n: int) -> int:
            a = await add(n)
            b = await ds.run_tx_step_async({"name": "again"}, add, n + 1)
            return a * 10 + b

        DBOS.launch()
        with SetWorkflowID("ads-1"):
            assert await wf(1) == 12
        with SetWorkflowID("ads-1"):
            assert await wf(1) == 12
        assert await add(5) == 3  # outside a workflow: a plain transaction
        with pytest.raises(DBOSException, match="coroutine"):
            await ds.run_tx_step_async(None, lambda: 1)
        await ds.engine.dispose()

    query(user_url, "CREATE TABLE items (n INT)")
    asyncio.run(scenario())
    assert runs == [1, 2, 5]
    rows = query(user_url, f"SELECT workflow_id, step_id FROM {outputs(user_url)} ORDER BY 2")
    assert rows == [("ads-1", 1), ("ads-1", 2)]
    assert [s["function_name"] for s in DBOS.list_workflow_steps("ads-1")] == [
        "test_async_datasource.<locals>.scenario.<locals>.add",
        "again",
    ]


def test_serialization_failures_are_retried(
    dbos: type[DBOS], created: list[SQLAlchemyDatasource], user_url: str, backend: str
) -> None:
    if backend != "postgres":
        pytest.skip("serialization failures are a PostgreSQL matter")
    ds = SQLAlchemyDatasource.create(user_url)
    created.append(ds)
    both_read = threading.Barrier(2, timeout=30)
    attempts = {"a": 0, "b": 0}

    @ds.transaction()
    def increment(who: str) -> int:
        attempts[who] += 1
        session = ds.sql_session()
        value = int(session.execute(sa.text("SELECT v FROM counter")).scalar_one())
        if attempts[who] == 1:
            both_read.wait()  # both snapshots taken before either writes
        session.execute(sa.text("UPDATE counter SET v = :v"), {"v": value + 1})
        return value + 1

    @DBOS.workflow()
    def wf(who: str) -> int:
        return increment(who)

    query(user_url, "CREATE TABLE counter (v INT)")
    query(user_url, "INSERT INTO counter VALUES (0)")
    DBOS.launch()
    handles = [DBOS.start_workflow(wf, who) for who in ("a", "b")]
    assert sorted(h.get_result() for h in handles) == [1, 2]
    assert sorted(attempts.values()) == [1, 2]


def test_a_concurrent_recorder_wins(
    dbos: type[DBOS], created: list[SQLAlchemyDatasource], user_url: str, backend: str
) -> None:
    """If another execution recorded the step between this one's check and its insert, the
    insert finds the row: this transaction rolls back and the recorded output is returned."""
    if backend != "postgres":
        pytest.skip("SQLite serializes writers: no other recorder can commit meanwhile")
    ds = SQLAlchemyDatasource.create(user_url)
    created.append(ds)

    raced: list[bool] = []

    @ds.transaction()
    def write() -> str:
        ds.sql_session().execute(sa.text("INSERT INTO items VALUES (1)"))
        if raced:  # a retry (SERIALIZABLE reports the race as a serialization failure)
            return "mine"
        raced.append(True)
        # The other execution commits its record now, before this one inserts its own.
        other = sa.create_engine(ds.engine.url, poolclass=sa.pool.NullPool)
        text = get_runtime().codec.encode("theirs", get_runtime().codec.default)
        with other.begin() as conn:
            conn.execute(
                sa.text(
                    f"INSERT INTO {outputs(user_url)} (workflow_id, step_id, output, "
                    "serialization, created_at) VALUES ('race-1', 1, :o, 'py_pickle', 0)"
                ),
                {"o": text},
            )
        other.dispose()
        return "mine"

    @DBOS.workflow()
    def wf() -> str:
        return write()

    query(user_url, "CREATE TABLE items (n INT)")
    DBOS.launch()
    with SetWorkflowID("race-1"):
        assert wf() == "theirs"
    assert query(user_url, "SELECT count(*) FROM items") == [(0,)]  # rolled back


def test_a_caller_engine_and_serializer(dbos: type[DBOS], user_url: str) -> None:
    from waypoint import DBOSPortableJSONSerializer

    url = sa.make_url(user_url)
    if url.get_backend_name() == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    engine = sa.create_engine(url)
    ds = SQLAlchemyDatasource.create(
        user_url, engine=engine, serializer=DBOSPortableJSONSerializer()
    )
    assert ds.created_engine is False

    @ds.transaction()
    def pair(x: int) -> dict[str, int]:
        return {"x": x, "one": int(ds.sql_session().execute(sa.text("SELECT 1")).scalar_one())}

    @DBOS.workflow()
    def wf() -> dict[str, int]:
        return pair(4)

    DBOS.launch()
    with SetWorkflowID("ser-1"):
        assert wf() == {"x": 4, "one": 1}
    rows = query(user_url, f"SELECT output, serialization FROM {outputs(user_url)}")
    assert rows == [('{"x":4,"one":1}', "portable_json")]
    engine.dispose()
