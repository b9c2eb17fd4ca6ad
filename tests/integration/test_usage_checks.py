"""DBOS's usage checks and their wording (both backends): what a DBOS application relies on
being refused, and the text DBOS's errors carry, since applications and tests match on it."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.conftest import database_urls
from waypoint import (
    DBOS,
    DBOSConfiguredInstance,
    Debouncer,
    DebouncerClient,
    Queue,
    SendMessage,
    SetEnqueueOptions,
    SetWorkflowID,
)
from waypoint.error import (
    DBOSDuplicateRegistrationError,
    DBOSException,
    DBOSNonExistentWorkflowError,
)


def test_missing_workflows_are_named_as_dbos_names_them(dbos: type[DBOS]) -> None:
    @DBOS.workflow()
    def waits() -> Any:
        return DBOS.recv(timeout_seconds=0.1)

    DBOS.launch()
    nowhere = str(uuid.uuid4())
    with pytest.raises(DBOSNonExistentWorkflowError) as caught:
        DBOS.send(nowhere, "hello")
    assert f"Non-existent `send` destination workflow ID: {nowhere}" in str(caught.value)
    assert caught.value.workflow_id == nowhere

    # send_bulk names a missing destination the same way, and delivers nothing at all.
    real = DBOS.start_workflow(waits)
    with pytest.raises(DBOSNonExistentWorkflowError, match="Non-existent `send` destination"):
        DBOS.send_bulk([SendMessage(real.workflow_id, "lost"), SendMessage(nowhere, "x")])
    assert real.get_result() is None

    with pytest.raises(DBOSNonExistentWorkflowError, match="Non-existent target workflow ID: aa"):
        DBOS.retrieve_workflow("aa")

    with pytest.raises(DBOSException, match="duplicate idempotency keys: k"):
        DBOS.send_bulk([SendMessage(nowhere, 1, idempotency_key="k")] * 2)


def test_body_only_operations_say_where_they_belong(dbos: type[DBOS]) -> None:
    DBOS.launch()
    with pytest.raises(DBOSException, match=r"set_event\(\) must be called from within a"):
        DBOS.set_event("k", 1)
    with pytest.raises(DBOSException, match=r"recv\(\) must be called from within a workflow"):
        DBOS.recv()
    with pytest.raises(DBOSException, match=r"write_stream\(\) must be called from within a"):
        DBOS.write_stream("s", 1)
    with pytest.raises(DBOSException, match=r"close_stream\(\) must be called from within a"):
        DBOS.close_stream("s")


def test_class_and_instance_names_are_taken_once(dbos: type[DBOS]) -> None:
    @DBOS.dbos_class()
    class Account(DBOSConfiguredInstance):
        def __init__(self, name: str) -> None:
            super().__init__(name)

    first = Account
    with pytest.raises(DBOSDuplicateRegistrationError) as caught:

        @DBOS.dbos_class()
        class Account(DBOSConfiguredInstance):  # type: ignore[no-redef]
            pass

    name = first.__qualname__
    assert str(caught.value) == f"Duplicate type registration for class '{name}'"
    first("alice")
    with pytest.raises(DBOSDuplicateRegistrationError) as caught:
        first("alice")
    assert str(caught.value) == (
        f"Duplicate instance registration for class '{name}' instance 'alice'"
    )
    first("bob")  # another config_name is another instance
    DBOS.dbos_class()(first)  # the same class again is harmless


def test_methods_recovery_could_not_find_are_refused(dbos: type[DBOS]) -> None:
    @DBOS.dbos_class()
    class NoName:
        @DBOS.workflow()
        def run(self) -> str:
            return "never"

    class Forgotten(DBOSConfiguredInstance):  # no @DBOS.dbos_class
        def __init__(self) -> None:
            super().__init__("one")

        @DBOS.workflow()
        def run(self) -> str:
            return "never"

        @classmethod
        @DBOS.workflow()
        def run_cls(cls) -> str:
            return "never"

    DBOS.launch()
    with pytest.raises(DBOSException, match="class instance, but does not have `config_name`"):
        NoName().run()
    with pytest.raises(DBOSException, match="class instance, but is not properly registered"):
        Forgotten().run()
    with pytest.raises(DBOSException, match="appears to be a class, but is not properly regist"):
        Forgotten.run_cls()
    assert DBOS.list_workflows() == []  # refused before anything was written


def test_static_methods_of_a_dbos_class_are_plain_functions(dbos: type[DBOS]) -> None:
    @DBOS.dbos_class()
    class Tools:
        @DBOS.step()
        @staticmethod
        def double(x: int) -> int:
            return 2 * x

        @DBOS.workflow()
        @staticmethod
        def twice(x: int) -> int:
            return Tools.double(Tools.double(x))

    DBOS.launch()
    assert Tools.twice(3) == 12
    assert Tools().twice(1) == 4  # through an instance too: no self is passed
    handle = DBOS.start_workflow(Tools.twice, 5)
    assert handle.get_result() == 20
    assert [s["function_name"] for s in DBOS.list_workflow_steps(handle.workflow_id)] == [
        Tools.double.dbos_function_name,  # type: ignore[attr-defined]
    ] * 2
    assert DBOS.get_workflow_status(handle.workflow_id).class_name is None  # type: ignore[union-attr]


def test_return_existing_needs_a_queue_and_a_deduplication_id(dbos: type[DBOS]) -> None:
    Queue("dedup-q")

    @DBOS.workflow()
    def job() -> str:
        return "done"

    DBOS.launch()
    with pytest.raises(DBOSException, match="requires a deduplication_id"):
        with SetEnqueueOptions(duplication_policy="return-existing"):
            DBOS.enqueue_workflow("dedup-q", job)
    wfid = str(uuid.uuid4())
    with pytest.raises(DBOSException, match="'return-existing' requires a queue"):
        with SetEnqueueOptions(duplication_policy="return-existing"), SetWorkflowID(wfid):
            DBOS.start_workflow(job)
    assert DBOS.get_workflow_status(wfid) is None
    with SetEnqueueOptions(duplication_policy="reject"):
        assert DBOS.start_workflow(job).get_result() == "done"
    with pytest.raises(DBOSException, match="Invalid duplication_policy other"):
        SetEnqueueOptions(duplication_policy="other")  # type: ignore[arg-type]
    with pytest.raises(DBOSException, match="requires a deduplication_id"):
        DBOS.enqueue_workflow_with_options(
            {
                "queue_name": "dedup-q",
                "workflow_name": job.dbos_function_name,  # type: ignore[attr-defined]
                "duplication_policy": "return-existing",
            }
        )
    with pytest.raises(
        DBOSException, match=r"Enqueue option\(s\) priority set on a workflow that is"
    ):
        with SetEnqueueOptions(priority=3):
            DBOS.start_workflow(job)


def test_debounce_refuses_options_it_owns(dbos: type[DBOS], db_url: str) -> None:
    from waypoint import DBOSClient

    @DBOS.workflow()
    def job(x: int) -> int:
        return x

    DBOS.launch()
    debouncer = Debouncer.create(job)
    for options, reason in [
        ({"duplication_policy": "return-existing"}, "with duplication_policy 'return-existing'"),
        ({"deduplication_id": "d"}, "with a deduplication_id set"),
        ({"priority": 2}, "with a priority set"),
        ({"delay_seconds": 1.0}, "with a delay set"),
    ]:
        with pytest.raises(DBOSException, match=f"Cannot debounce a workflow {reason}"):
            with SetEnqueueOptions(**options):
                debouncer.debounce("key", 0.1, 1)
    client = DBOSClient(system_database_url=db_url)
    try:
        by_name = DebouncerClient(
            client,
            {
                "workflow_name": job.dbos_function_name,  # type: ignore[attr-defined]
                "queue_name": "_dbos_internal_queue",
                "duplication_policy": "return-existing",
            },
        )
        with pytest.raises(DBOSException, match="Cannot debounce a workflow with duplication_p"):
            by_name.debounce("key", 0.1, 1)
    finally:
        client.destroy()


def test_debounce_keeps_a_pinned_workflow_id(dbos: type[DBOS]) -> None:
    @DBOS.workflow()
    def job(x: int) -> int:
        return x

    DBOS.launch()
    debouncer = Debouncer.create(job)
    wfid = str(uuid.uuid4())
    with SetWorkflowID(wfid):
        first = debouncer.debounce("pinned", 0.5, 1)
    with SetWorkflowID(wfid):
        second = debouncer.debounce("pinned", 0.1, 2)
    assert first.workflow_id == second.workflow_id == wfid
    assert second.get_result() == 2
    # The pinned ID was used up by the debounce: the next start gets a fresh one.
    pinned = str(uuid.uuid4())
    with SetWorkflowID(pinned):
        assert debouncer.debounce("other", 0.1, 3).workflow_id == pinned
        assert DBOS.start_workflow(job, 4).workflow_id != pinned


def test_create_async_returns_the_debouncer(dbos: type[DBOS]) -> None:
    import asyncio

    @DBOS.workflow()
    async def job(x: int) -> int:
        return x

    DBOS.launch()
    debouncer = Debouncer.create_async(job)
    assert isinstance(debouncer, Debouncer)

    async def main() -> int:
        handle = await debouncer.debounce_async("k", 0.1, 7)
        result: int = await handle.get_result()
        return result

    assert asyncio.run(main()) == 7


def test_errors_are_of_the_classes_dbos_raises(dbos: type[DBOS]) -> None:
    async def validator(exc: BaseException) -> bool:
        return True

    with pytest.raises(DBOSException, match="Preemption is only supported for async steps"):

        @DBOS.step(preemptible=True)
        def preempt() -> None: ...

    with pytest.raises(DBOSException, match="Step timeouts are only supported for async steps"):

        @DBOS.step(timeout_seconds=1)
        def timed() -> None: ...

    for bad in (0, float("nan"), float("inf")):
        with pytest.raises(DBOSException, match="must be positive and finite"):

            @DBOS.step(timeout_seconds=bad)
            async def never() -> None: ...

    @DBOS.step(retries_allowed=True, max_attempts=2, interval_seconds=0, should_retry=validator)
    def sync_step() -> str:
        return "ran"

    @DBOS.workflow()
    def uses_it() -> str:
        return sync_step()

    @DBOS.step()
    def unpicklable() -> Any:
        return (x for x in [1])  # a generator

    @DBOS.workflow()
    def returns_it() -> None:
        unpicklable()

    DBOS.launch()
    assert sync_step() == "ran"  # outside a workflow a step is a plain call
    with pytest.raises(DBOSException, match="is sync but should_retry is async"):
        uses_it()
    with pytest.raises(TypeError):  # DBOS lets pickle's TypeError through
        returns_it()
    with pytest.raises(ValueError, match="handles must not be empty"):
        DBOS.wait_first([])


def test_registering_a_name_twice_and_reusing_an_id_are_named(
    dbos: type[DBOS], caplog: pytest.LogCaptureFixture
) -> None:
    @DBOS.step()
    def twice() -> int:
        return 1

    @DBOS.step()  # type: ignore[no-redef]
    def twice() -> int:  # noqa: F811  (registered twice on purpose)
        return 2

    name = twice.dbos_function_name  # type: ignore[attr-defined]
    assert f"Duplicate registration of function '{name}'" in caplog.text

    @DBOS.workflow()
    def first() -> None:
        return None

    @DBOS.workflow()
    def second() -> None:
        return None

    DBOS.launch()
    with SetWorkflowID("taken"):
        first()
    with pytest.raises(DBOSException, match="already exists with a different function name"):
        with SetWorkflowID("taken"):
            second()


def test_settings_without_effect_are_said_not_ignored(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    import sqlalchemy

    if db_url.startswith("shards://"):
        db_url = database_urls(db_url)[0]  # an engine names one database: any will do here
    DBOS.destroy(destroy_registry=True)
    try:
        DBOS(
            config={
                "name": "no-effect",
                # The engine's URL is the system database (none other is given).
                "system_database_engine": sqlalchemy.create_engine(db_url),
                "conductor_key": "k",
                "console_log_level": "DEBUG",
                "kafka_queue_polling_interval_sec": 1.0,
            },
            conductor_url="wss://example.invalid",
        )
        said = caplog.text
        for key in ("conductor_key", "console_log_level", "kafka_queue_polling_interval_sec"):
            assert f"config {key} has no effect" in said
        assert "DBOS() conductor_url has no effect: Waypoint does not connect to DBOS" in said
        assert "config system_database_engine has no effect" in said
        DBOS.launch()

        @DBOS.workflow()
        def probe() -> str:
            return "here"

        assert probe() == "here"
        from waypoint import DBOSClient

        client = DBOSClient(system_database_url=db_url)  # the engine's database was used
        try:
            assert [w.name for w in client.list_workflows()] == [probe.dbos_function_name]  # type: ignore[attr-defined]
        finally:
            client.destroy()
    finally:
        DBOS.destroy(destroy_registry=True)


def test_a_started_workflow_keeps_a_pinned_application_version(dbos: type[DBOS]) -> None:
    @DBOS.workflow()
    def job() -> str:
        return "ran"

    DBOS.launch()
    with SetEnqueueOptions(app_version="pinned-version"), SetWorkflowID("pinned"):
        DBOS.start_workflow(job)
    status = DBOS.get_workflow_status("pinned")
    assert status is not None and status.app_version == "pinned-version"


def test_arguments_validated_from_type_hints(dbos: type[DBOS]) -> None:
    from waypoint import make_pydantic_args_validator, pydantic_args_validator

    @DBOS.workflow(validate_args=pydantic_args_validator)
    def double(n: int, label: str = "x") -> str:
        return f"{label}{n * 2}"

    @DBOS.dbos_class()
    class Counter(DBOSConfiguredInstance):
        @DBOS.workflow(validate_args=pydantic_args_validator)
        def add(self, n: int) -> int:
            return n + 1

    def plain(n: int) -> int:
        return n

    counter = Counter("c")
    DBOS.launch()
    assert double("21") == "x42"  # coerced, as pydantic coerces: "21" is the int 21
    handle = DBOS.start_workflow(double, "3", label="y")
    assert handle.get_result() == "y6"
    assert DBOS.get_workflow_status(handle.workflow_id).input["args"] == (3,)  # type: ignore[union-attr,index]
    assert counter.add("4") == 5  # self is not validated
    with SetWorkflowID("refused"), pytest.raises(ValueError, match="argument 'n' \\(position 0\\)"):
        double("not a number")
    assert DBOS.get_workflow_status("refused") is None  # refused before anything was written
    with pytest.raises(ValueError, match="missing required argument 'n'"):
        DBOS.start_workflow(double)
    assert make_pydantic_args_validator(plain)(("7",), {}) == ((7,), {})
    with pytest.raises(DBOSException, match="marker"):
        pydantic_args_validator((), {})


def test_an_id_reused_on_another_instance_is_named(dbos: type[DBOS]) -> None:
    @DBOS.dbos_class()
    class Owner(DBOSConfiguredInstance):
        @DBOS.workflow()
        def run(self) -> None:
            return None

    a, b = Owner("a"), Owner("b")
    DBOS.launch()
    with SetWorkflowID("owned"):
        a.run()
    with pytest.raises(DBOSException, match="different config name: a, but the provided config"):
        with SetWorkflowID("owned"):
            b.run()
    with pytest.raises(DBOSException, match="apply_schedules cannot be called from within a wo"):

        @DBOS.workflow()
        def applies() -> None:
            DBOS.apply_schedules([])

        applies()


def test_fork_before_the_first_step_and_attribute_filters_on_sqlite(
    dbos: type[DBOS], backend: str
) -> None:
    @DBOS.step()
    def one() -> int:
        return 1

    @DBOS.workflow()
    def wf() -> int:
        return one() + one()

    DBOS.launch()
    with SetWorkflowID("forked-from"):
        wf()
    forked = DBOS.fork_workflow("forked-from", -1)  # as DBOS takes it: re-run everything
    assert forked.get_result() == 2
    assert len(DBOS.list_workflow_steps(forked.workflow_id)) == 2
    if backend == "sqlite":
        with pytest.raises(DBOSException, match="attributes is not supported on SQLite"):
            DBOS.list_workflows(attributes={"a": 1})
