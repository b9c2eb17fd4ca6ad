"""Class and instance workflows, and how values are stored (both backends)."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import re
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from waypoint import (
    DBOS,
    DBOSConfiguredInstance,
    DBOSPortableJSONSerializer,
    PortableWorkflowError,
    Queue,
    Serializer,
    SetWorkflowID,
    WorkflowSerializationFormat,
)
from waypoint.core.runtime import get_runtime
from waypoint.error import WaypointPayloadError


def raw_row(workflow_id: str) -> Any:
    return get_runtime().store.get_workflow(workflow_id)


def test_instance_class_and_static_workflows(dbos: type[DBOS]) -> None:
    @DBOS.dbos_class()
    class Shop(DBOSConfiguredInstance):
        def __init__(self, region: str) -> None:
            self.region = region
            super().__init__(config_name=region)

        @DBOS.workflow()
        def checkout(self, item: str) -> str:
            return f"{item}@{self.region}:{self.tax(item)}"

        @DBOS.step()
        def tax(self, item: str) -> int:
            return len(item)

        @classmethod
        @DBOS.workflow()
        def open_shops(cls, n: int) -> str:
            return f"{cls.__name__}:{n}"

        @staticmethod
        @DBOS.workflow()
        def version() -> str:
            return "v1"

    eu = Shop("eu")
    DBOS.launch()
    with SetWorkflowID("inst"):
        assert eu.checkout("book") == "book@eu:4"
    with SetWorkflowID("cls"):
        assert Shop.open_shops(3) == "Shop:3"
    with SetWorkflowID("static"):
        assert Shop.version() == "v1"
    row = raw_row("inst")
    assert (row.class_name, row.config_name) == (Shop.__qualname__, "eu")
    status = DBOS.get_workflow_status("inst")
    assert status is not None and status.input == {"args": ("book",), "kwargs": {}}
    cls_status = DBOS.get_workflow_status("cls")
    assert cls_status is not None and cls_status.class_name == Shop.__qualname__
    assert cls_status.input == {"args": (3,), "kwargs": {}}
    with SetWorkflowID("inst-bg"):
        handle = DBOS.start_workflow(eu.checkout, "pen")
    assert handle.get_result() == "pen@eu:3"


def test_instance_workflow_recovers_onto_registered_instance(
    dbos: type[DBOS], config: dict[str, Any]
) -> None:
    config = {**config, "application_version": "v1"}
    entered = threading.Event()
    first_run = {"yes": True}

    def define() -> Any:
        @DBOS.dbos_class()
        class Counter(DBOSConfiguredInstance):
            def __init__(self, name: str, start: int) -> None:
                self.start = start
                super().__init__(name)

            @DBOS.workflow()
            def count(self, by: int) -> int:
                if first_run["yes"]:
                    first_run["yes"] = False
                    entered.set()
                    time.sleep(30)
                return self.start + by

        return Counter

    DBOS.destroy(destroy_registry=True)
    DBOS(config=config)  # type: ignore[arg-type]
    counter_cls = define()
    c = counter_cls("c1", 100)
    DBOS.launch()
    with SetWorkflowID("count-1"):
        DBOS.start_workflow(c.count, 5)
    assert entered.wait(10)
    DBOS.destroy(destroy_registry=True)
    DBOS(config=config)  # type: ignore[arg-type]
    counter_cls = define()
    counter_cls("c1", 1000)  # the new process's instance of the same name
    DBOS.launch()
    assert DBOS.retrieve_workflow("count-1").get_result(polling_interval_sec=0.05) == 1005


def test_pickle_is_the_default(dbos: type[DBOS]) -> None:
    @DBOS.workflow()
    def wf(x: set[int]) -> frozenset[int]:
        return frozenset(x)

    DBOS.launch()
    with SetWorkflowID("pickled"):
        assert wf({1, 2}) == frozenset({1, 2})
    row = raw_row("pickled")
    assert row.serialization == "py_pickle"
    assert DBOS.retrieve_workflow("pickled").get_result() == frozenset({1, 2})


def test_portable_json_workflow(dbos: type[DBOS]) -> None:
    @DBOS.step()
    def stamp(when: dt.datetime) -> dict[str, Any]:
        return {"iso": when.isoformat(), "amount": decimal.Decimal("1.50"), "tags": ("a", "b")}

    @DBOS.workflow(serialization_type=WorkflowSerializationFormat.PORTABLE)
    def portable(when: dt.datetime, n: int = 1) -> dict[str, Any]:
        assert isinstance(when, dt.datetime)
        return stamp(when)

    DBOS.launch()
    when = dt.datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=dt.timezone.utc)
    with SetWorkflowID("portable"):
        result = portable(when, n=2)
    assert result["amount"] == decimal.Decimal("1.50")
    row = raw_row("portable")
    assert row.serialization == "portable_json"
    assert json.loads(row.inputs) == {
        "positionalArgs": ["2026-01-02T03:04:05.678Z"],
        "namedArgs": {"n": 2},
    }
    assert json.loads(row.output) == {
        "iso": "2026-01-02T03:04:05.678000+00:00",
        "amount": "1.50",
        "tags": ["a", "b"],
    }
    step_row = get_runtime().store.load_steps("portable")[1]
    assert step_row.serialization == "portable_json"
    # Read back as JSON, whatever the process default is.
    assert DBOS.retrieve_workflow("portable").get_result()["tags"] == ["a", "b"]


def test_portable_errors(dbos: type[DBOS]) -> None:
    @DBOS.workflow(serialization_type=WorkflowSerializationFormat.PORTABLE)
    def boom() -> None:
        raise KeyError("missing")

    DBOS.launch()
    with SetWorkflowID("portable-err"), pytest.raises(KeyError):
        boom()
    with pytest.raises(PortableWorkflowError) as info:
        DBOS.retrieve_workflow("portable-err").get_result()
    assert info.value.name == "KeyError"
    assert "missing" in info.value.message


def test_unserializable_input_writes_nothing(dbos: type[DBOS]) -> None:
    @DBOS.workflow(serialization_type=WorkflowSerializationFormat.PORTABLE)
    def portable(x: Any) -> None:
        return None

    @DBOS.workflow()
    def pickled(x: Any) -> None:
        return None

    DBOS.launch()
    with SetWorkflowID("bad-in"), pytest.raises(WaypointPayloadError, match="object"):
        portable(object())
    with SetWorkflowID("bad-in-2"), pytest.raises(WaypointPayloadError):
        pickled(threading.Lock())
    with SetWorkflowID("bad-in-3"), pytest.raises(WaypointPayloadError, match=r"NaN|nan|compliant"):
        portable(float("nan"))
    assert DBOS.list_workflows() == []


def test_an_unserializable_argument_is_named(dbos: type[DBOS]) -> None:
    @DBOS.workflow(name="ship")
    def ship(order: str, box: Any, *extra: Any, **options: Any) -> None:
        return None

    @DBOS.workflow(name="portable", serialization_type=WorkflowSerializationFormat.PORTABLE)
    def portable(order: str, box: Any) -> None:
        return None

    @DBOS.dbos_class()
    class Depot:
        @classmethod
        @DBOS.workflow()
        def store(cls, crate: Any) -> None:
            return None

    queue = Queue("ser-q")
    DBOS.launch()
    lock = threading.Lock()

    def refused(argument: str, workflow: str, call: Callable[[], Any]) -> None:
        expected = f"argument {argument} of workflow '(.*[.])?{workflow}' cannot be serialized"
        with pytest.raises(WaypointPayloadError, match=expected) as info:
            call()
        # ...and says why, in the serializer's own words.
        assert re.search(
            "cannot pickle '_thread.lock'|cannot be stored as portable JSON", str(info.value)
        )

    refused("'box'", "ship", lambda: ship("o1", lock))
    refused("'box'", "ship", lambda: ship("o1", box=lock))
    refused("4", "ship", lambda: ship("o1", 1, 2, lock))
    refused("'gift'", "ship", lambda: ship("o1", 1, gift=lock))
    refused("'box'", "ship", lambda: DBOS.start_workflow(ship, "o1", lock))
    refused("'box'", "ship", lambda: queue.enqueue(ship, "o1", lock))
    refused("'box'", "portable", lambda: portable("o1", object()))
    refused("'crate'", "Depot.store", lambda: Depot.store(lock))
    assert DBOS.list_workflows() == []


def test_unserializable_step_output_fails_the_workflow_once(dbos: type[DBOS]) -> None:
    calls = {"n": 0}

    @DBOS.step(retries_allowed=True, max_attempts=5, interval_seconds=0)
    def make_lock() -> Any:
        calls["n"] += 1
        return threading.Lock()

    @DBOS.workflow()
    def wf() -> None:
        make_lock()

    @DBOS.workflow(name="lock_maker")
    def returns_a_lock() -> Any:
        return threading.Lock()

    @DBOS.workflow()
    def publishes_a_lock() -> None:
        DBOS.set_event("the-lock", threading.Lock())

    DBOS.launch()
    named = "the result of step '.*make_lock' cannot be serialized with py_pickle: TypeError"
    with SetWorkflowID("bad-out"), pytest.raises(WaypointPayloadError, match=named):
        wf()
    assert calls["n"] == 1
    with pytest.raises(WaypointPayloadError, match="the result of workflow 'lock_maker'"):
        returns_a_lock()
    with pytest.raises(WaypointPayloadError, match="event 'the-lock' cannot be serialized"):
        publishes_a_lock()
    assert DBOS.get_workflow_status("bad-out").status == "ERROR"  # type: ignore[union-attr]
    steps = DBOS.list_workflow_steps("bad-out")
    assert isinstance(steps[0]["error"], WaypointPayloadError)


class Rot13(Serializer):
    def serialize(self, data: Any) -> str:
        import codecs

        return codecs.encode(json.dumps(data), "rot13")

    def deserialize(self, serialized_data: str) -> Any:
        import codecs

        return json.loads(codecs.decode(serialized_data, "rot13"))

    def name(self) -> str:
        return "rot13_json"


def test_custom_serializer(config: dict[str, Any]) -> None:
    DBOS.destroy(destroy_registry=True)
    DBOS(config={**config, "serializer": Rot13()})  # type: ignore[typeddict-item]
    try:

        @DBOS.workflow()
        def wf(name: str) -> str:
            return "hello " + name

        DBOS.launch()
        with SetWorkflowID("custom"):
            assert wf("bob") == "hello bob"
        row = raw_row("custom")
        assert row.serialization == "rot13_json"
        assert "uryyb obo" in row.output
        assert DBOS.retrieve_workflow("custom").get_result() == "hello bob"
    finally:
        DBOS.destroy(destroy_registry=True)


def test_portable_serializer_unit() -> None:
    ser = DBOSPortableJSONSerializer()
    assert ser.name() == "portable_json"
    text = ser.serialize({"d": dt.date(2026, 3, 1), "s": {1}, "naive": dt.datetime(2026, 3, 1, 12)})
    assert json.loads(text) == {"d": "2026-03-01", "s": [1], "naive": "2026-03-01T12:00:00.000Z"}
    with pytest.raises(TypeError):
        ser.serialize({1: "int key"})
