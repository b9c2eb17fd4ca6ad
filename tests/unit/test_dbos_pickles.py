"""Pickled values of DBOS's own classes cross over both ways: DBOS records workflow statuses
(``DBOS.getStatus``, ``DBOS.listWorkflows``...) and step errors as pickles of ``dbos`` classes,
and a history handed over must replay on either side, with or without ``dbos`` installed."""

from __future__ import annotations

import base64
import pickle
import sys
import types
from collections.abc import Iterator
from typing import Any

import pytest

from waypoint.core.serialization import DefaultSerializer
from waypoint.core.types import WorkflowStatus
from waypoint.error import (
    DBOSAwaitedWorkflowCancelledError,
    DBOSAwaitedWorkflowMaxRecoveryAttemptsExceeded,
    DBOSMaxStepRetriesExceeded,
    DBOSStepTimeoutError,
    DBOSUnexpectedStepError,
)


class _FakeStatus:  # DBOS's WorkflowStatus is a plain class
    pass


class _FakeRetries(Exception):
    def __init__(self, step_name: str, max_retries: int, errors: list[Exception]) -> None:
        self.step_name, self.max_retries, self.errors = step_name, max_retries, errors
        super().__init__(f"Step {step_name} has exceeded its maximum of {max_retries} retries")

    def __reduce__(self) -> Any:
        return (self.__class__, (self.step_name, self.max_retries, self.errors))


@pytest.fixture
def fake_dbos() -> Iterator[None]:
    """A stand-in ``dbos`` package holding classes under DBOS's module and class names."""
    sys_db = types.ModuleType("dbos._sys_db")
    err = types.ModuleType("dbos._error")
    _FakeStatus.__module__, _FakeStatus.__qualname__ = "dbos._sys_db", "WorkflowStatus"
    _FakeRetries.__module__ = "dbos._error"
    _FakeRetries.__qualname__ = "DBOSMaxStepRetriesExceeded"
    sys_db.WorkflowStatus = _FakeStatus  # type: ignore[attr-defined]
    err.DBOSMaxStepRetriesExceeded = _FakeRetries  # type: ignore[attr-defined]
    saved = {k: sys.modules.get(k) for k in ("dbos", "dbos._sys_db", "dbos._error")}
    sys.modules.update(
        {"dbos": types.ModuleType("dbos"), "dbos._sys_db": sys_db, "dbos._error": err}
    )
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


def _dbos_pickle(value: Any) -> str:
    return base64.b64encode(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)).decode()


def test_statuses_and_step_errors_pickled_by_dbos_are_read_as_waypoint_classes(
    fake_dbos: None,
) -> None:
    status = _FakeStatus()
    status.__dict__.update(workflow_id="w", status="SUCCESS", name="n", output=3)
    texts = [_dbos_pickle(status), _dbos_pickle([status]), _dbos_pickle(_FakeRetries("s", 2, []))]
    del sys.modules["dbos._sys_db"], sys.modules["dbos._error"], sys.modules["dbos"]
    ser = DefaultSerializer()
    one = ser.deserialize(texts[0])
    assert isinstance(one, WorkflowStatus) and (one.workflow_id, one.output) == ("w", 3)
    assert isinstance(ser.deserialize(texts[1])[0], WorkflowStatus)
    err = ser.deserialize(texts[2])
    assert isinstance(err, DBOSMaxStepRetriesExceeded)
    assert (err.step_name, err.max_retries) == ("s", 2)


def test_statuses_and_step_errors_are_pickled_as_dbos_classes(fake_dbos: None) -> None:
    ser = DefaultSerializer()
    status = WorkflowStatus(workflow_id="w", status="ERROR", name="n")
    text = ser.serialize([status, status])
    dbos_side = pickle.loads(base64.b64decode(text))
    assert isinstance(dbos_side[0], _FakeStatus) and dbos_side[0] is dbos_side[1]
    assert (dbos_side[0].workflow_id, dbos_side[0].status) == ("w", "ERROR")
    steps = [{"function_id": 1, "error": DBOSMaxStepRetriesExceeded("s", 3, [ValueError("x")])}]
    back = pickle.loads(base64.b64decode(ser.serialize(steps)))
    assert isinstance(back[0]["error"], _FakeRetries) and back[0]["error"].max_retries == 3
    # And Waypoint reads its own pickles back as its own classes.
    assert isinstance(ser.deserialize(text)[0], WorkflowStatus)
    timeout = ser.deserialize(ser.serialize(DBOSStepTimeoutError("t", 0.5)))
    assert isinstance(timeout, DBOSStepTimeoutError) and timeout.timeout_seconds == 0.5


@pytest.mark.parametrize(
    "exc",
    [
        DBOSAwaitedWorkflowCancelledError("child"),
        DBOSAwaitedWorkflowMaxRecoveryAttemptsExceeded("child"),
        DBOSUnexpectedStepError("w", 3, "expected", "recorded"),
    ],
)
def test_recorded_errors_name_dbos_classes_and_read_back(exc: BaseException) -> None:
    ser = DefaultSerializer()
    text = ser.serialize(exc)
    assert f"cdbos._error\n{type(exc).__name__}\n".encode() in base64.b64decode(text)
    back = ser.deserialize(text)
    assert type(back) is type(exc) and str(back) == str(exc)
