"""Configuration, launch, schema migrations and the worker pool (both backends)."""

from __future__ import annotations

import os
import threading
from typing import Any

import pytest

from waypoint import DBOS, SetWorkflowID, run_dbos_database_migrations
from waypoint.error import DBOSInitializationError
from waypoint.storage import migrations
from waypoint.storage.registry import open_url


def test_no_url_means_a_sqlite_file_named_after_the_app(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    DBOS.destroy(destroy_registry=True)
    DBOS(config={"name": "my-shop"})
    try:

        @DBOS.workflow()
        def wf() -> int:
            return 1

        DBOS.launch()
        assert wf() == 1
        assert os.path.exists(tmp_path / "my_shop.sqlite")
    finally:
        DBOS.destroy(destroy_registry=True)


@pytest.mark.parametrize(
    "config, message",
    [
        ({"name": "x"}, "name"),
        ({"name": "Bad Name"}, "name"),
        ({"name": "ok-name", "system_database_url": "mysql://h/db"}, "scheme"),
        ({"name": "ok-name", "system_database_url": "not a url"}, "URL"),
        ({"name": "ok-name", "sys_db_pool_size": 0}, "sys_db_pool_size"),
        ({"name": "ok-name", "max_executor_threads": -2}, "max_executor_threads"),
        ({"name": "ok-name", "dbos_system_schema": "x; drop"}, "schema"),
        ({"name": "ok-name", "no_such_key": 1}, "unknown"),
    ],
)
def test_bad_config_is_a_clear_error(config: dict[str, Any], message: str) -> None:
    DBOS.destroy(destroy_registry=True)
    with pytest.raises(DBOSInitializationError, match=message):
        DBOS(config=config)  # type: ignore[arg-type]
    DBOS.destroy(destroy_registry=True)


def test_run_migrations_false_needs_a_migrated_schema(db_url: str, backend: str) -> None:
    if backend in ("postgres", "shards"):
        from waypoint.storage.registry import reset_database

        reset_database(db_url)
    config = {"name": "schema-app", "system_database_url": db_url, "run_migrations": False}
    DBOS.destroy(destroy_registry=True)
    DBOS(config=config)  # type: ignore[arg-type]
    with pytest.raises(DBOSInitializationError, match="migrate"):
        DBOS.launch()
    DBOS.destroy(destroy_registry=True)
    run_dbos_database_migrations(db_url)
    DBOS(config=config)  # type: ignore[arg-type]

    @DBOS.workflow()
    def wf() -> str:
        return "ok"

    try:
        DBOS.launch()
        assert wf() == "ok"
    finally:
        DBOS.destroy(destroy_registry=True)


def test_migrations_are_idempotent_and_concurrent(db_url: str, backend: str) -> None:
    if backend in ("postgres", "shards"):
        from waypoint.storage.registry import reset_database

        reset_database(db_url)
    errors: list[BaseException] = []

    def migrate() -> None:
        store = open_url(db_url)
        try:
            store.migrate()
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)
        finally:
            store.close()

    threads = [threading.Thread(target=migrate) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    store = open_url(db_url)
    store.open()
    try:
        dialect = "sqlite" if backend == "sqlite" else "postgresql"
        assert store.schema_version() == migrations.latest_version(dialect)
        topo = getattr(store, "topo", None)  # sharded: every shard's schema
        for s in [m.store for m in topo.all()] if topo else [store]:
            rows = s._all(f"SELECT version FROM {s.d.t('dbos_migrations')}", {}, "read")
            assert rows == [(108,)]
    finally:
        store.close()


def test_reset_system_database(dbos: type[DBOS], config: dict[str, Any]) -> None:
    @DBOS.workflow()
    def wf() -> int:
        return 1

    DBOS.launch()
    with SetWorkflowID("before-reset"):
        wf()
    DBOS.destroy(destroy_registry=True)
    DBOS(config=config)  # type: ignore[arg-type]
    DBOS.reset_system_database()

    @DBOS.workflow()
    def wf2() -> int:
        return 2

    DBOS.launch()
    assert DBOS.get_workflow_status("before-reset") is None


def test_bounded_pool_does_not_deadlock_parents_waiting_on_children(
    config: dict[str, Any],
) -> None:
    DBOS.destroy(destroy_registry=True)
    DBOS(config={**config, "max_executor_threads": 2})  # type: ignore[typeddict-item]
    try:

        @DBOS.workflow()
        def child(i: int) -> int:
            return i + 100

        @DBOS.workflow()
        def parent(i: int) -> int:
            return DBOS.start_workflow(child, i).get_result()

        DBOS.launch()
        handles = [DBOS.start_workflow(parent, i) for i in range(6)]
        assert [h.get_result() for h in handles] == [100 + i for i in range(6)]
        from waypoint.core.runtime import get_runtime

        assert len(get_runtime().pool._threads) <= 2
    finally:
        DBOS.destroy(destroy_registry=True)


def test_launch_twice_is_harmless(dbos: type[DBOS]) -> None:
    DBOS.launch()
    DBOS.launch()


def test_dbos_is_a_singleton(dbos: type[DBOS], config: dict[str, Any]) -> None:
    assert DBOS(config=config) is DBOS(config=config)  # type: ignore[arg-type]
