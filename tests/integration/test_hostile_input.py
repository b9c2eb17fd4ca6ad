"""Hostile values at every door (both backends): property tests with Hypothesis.

Each door — the Python API, ``DBOSClient``, the CLI, configuration and environment — is fed
huge strings, NUL, unpaired surrogates, SQL wildcards and quotes, deep nesting and values of
the wrong type. Each call either works (and what it stored reads back exactly) or fails with
an error from Waypoint's tree (``DBOSException``) or a ``TypeError``/``ValueError`` whose
message names the argument — never a driver error, an ``AttributeError`` or a crash — and a
failed call leaves every stored row as it was. (The admin API has its own properties in
test_admin.py.)
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from tests.admin_http import checksum
from waypoint import DBOS, DBOSClient, Queue, SetWorkflowID
from waypoint.cli.main import app as cli_app
from waypoint.core.runtime import get_runtime
from waypoint.error import DBOSException, DBOSInitializationError

# Each property runs tens of examples: on a loaded 2-core machine that outlasts the
# default per-test timeout.
pytestmark = pytest.mark.timeout(900)

# Hostile text: what an attacker or a buggy caller can put in a string.
SPECIAL = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "\ud800",  # an unpaired surrogate: no encoding can store it
    "%",
    "_",
    "\\",
    "'",
    "'; DROP TABLE workflow_status; --",
    "\u202e\u0000\uffff",
    "é" * 3,
    "🙂",
    "x" * 70_000,
    "\n\r\t",
]
TEXT = st.sampled_from(SPECIAL) | st.text(max_size=40)
WRONG = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.binary(max_size=8),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
ANY = TEXT | WRONG


def deep(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = [value]
    return value


SETTINGS = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
ACCEPTED_ERRORS = (DBOSException, TypeError, ValueError)


def storable(text: Any) -> bool:
    """Whether a string can be stored as text by every backend (no NUL, valid Unicode)."""
    if not isinstance(text, str) or "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def assert_clear(exc: BaseException, *names: str) -> None:
    """A refusal from Waypoint's tree or a TypeError/ValueError; one naming the argument
    when it comes from a check of ours (a driver's message never reaches the caller)."""
    assert isinstance(exc, ACCEPTED_ERRORS), f"{type(exc).__module__}.{type(exc).__name__}: {exc}"
    text = str(exc)
    assert text, f"an empty message: {exc!r}"
    assert "psycopg" not in text and "sqlite3" not in text, text
    if names and not isinstance(exc, DBOSException):
        assert any(n in text for n in names), f"{text!r} names none of {names}"


@pytest.fixture
def launched(dbos: type[DBOS]) -> Iterator[type[DBOS]]:
    @DBOS.workflow(name="echo")
    def echo(value: Any) -> Any:
        return value

    @DBOS.workflow(name="emit")
    def emit(key: Any, value: Any) -> None:
        DBOS.set_event(key, value)

    @DBOS.workflow(name="waits")
    def waits(topic: Any, seconds: Any) -> Any:
        got = DBOS.recv(topic, timeout_seconds=0)
        long = isinstance(seconds, (int, float)) and not seconds <= 0.01  # inf; NaN passes
        DBOS.sleep(0 if long and seconds == seconds else seconds)
        return got

    @DBOS.workflow(name="job")
    def job(scheduled: Any, context: Any) -> None:
        return None

    Queue("hostile-q")
    DBOS.launch()
    yield DBOS


def quiet(timeout: float = 30.0) -> None:
    """Wait until no stored row changes for a moment (background runs have settled)."""
    deadline = time.monotonic() + timeout
    last = checksum()
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = checksum()
        if now == last:
            return
        last = now


def run_checked(call: Any, *names: str) -> Any:
    """Run ``call``; on failure the error is clear and nothing stored changed."""
    before = checksum()
    try:
        return ("ok", call())
    except Exception as exc:
        assert_clear(exc, *names)
        assert checksum() == before, f"a refused call changed stored rows: {exc}"
        return ("refused", exc)


@SETTINGS
@given(workflow_id=ANY, value=ANY)
def test_workflow_ids_and_values(launched: type[DBOS], workflow_id: Any, value: Any) -> None:
    echo = launched.list_workflows  # noqa: F841 — keeps the fixture's workflows registered

    def call() -> Any:
        with SetWorkflowID(workflow_id):
            handle = DBOS.start_workflow(_echo(), value)
        return handle.workflow_id, handle.get_result()

    earlier = _RESULTS.get(workflow_id) if isinstance(workflow_id, str) else None
    outcome, got = run_checked(call, "workflow_id", "ID")
    if outcome == "ok":
        assert storable(workflow_id)
        stored_id, result = got
        assert stored_id == workflow_id
        status = DBOS.get_workflow_status(workflow_id)
        assert status is not None and status.workflow_id == workflow_id
        expected = earlier[0] if earlier else value  # the same ID returns its first result
        if expected == expected:  # NaN is not equal to itself
            assert result == expected
        _RESULTS.setdefault(workflow_id, (value,))


_RESULTS: dict[str, tuple[Any]] = {}


@pytest.fixture(autouse=True)
def _fresh_results() -> None:
    _RESULTS.clear()  # each test function (and backend) starts with an empty database


def _echo() -> Any:
    from waypoint.core.registrations import REGISTRY

    info = REGISTRY.workflow("echo")
    assert info is not None and info.wrapper is not None
    return info.wrapper


@SETTINGS
@given(destination=ANY, topic=ANY, message=ANY)
def test_send(launched: type[DBOS], destination: Any, topic: Any, message: Any) -> None:
    run_checked(lambda: DBOS.send(destination, message, topic), "destination", "topic")


@SETTINGS
@given(key=ANY, value=ANY)
def test_events(launched: type[DBOS], key: Any, value: Any) -> None:
    emit = _registered("emit")
    handle = DBOS.start_workflow(emit, key, value)
    try:
        handle.get_result()
    except Exception as exc:
        assert_clear(exc, "key")
        assert DBOS.get_all_events(handle.workflow_id) == {}  # ...and wrote no event
    else:
        assert storable(key)
        got = DBOS.get_event(handle.workflow_id, key, timeout_seconds=0)
        assert got == value or value != value


def _registered(name: str) -> Any:
    from waypoint.core.registrations import REGISTRY

    info = REGISTRY.workflow(name)
    assert info is not None and info.wrapper is not None
    return info.wrapper


@SETTINGS
@given(
    field=st.sampled_from(
        [
            "workflow_ids",
            "status",
            "name",
            "app_version",
            "workflow_id_prefix",
            "queue_name",
            "limit",
            "offset",
            "sort_desc",
            "start_time",
            "end_time",
            "executor_id",
            "parent_workflow_id",
        ]
    ),
    value=ANY | st.lists(ANY, max_size=3),
)
def test_list_workflows_filters(launched: type[DBOS], field: str, value: Any) -> None:
    outcome, got = run_checked(lambda: DBOS.list_workflows(**{field: value}), field)
    if outcome == "ok":
        assert isinstance(got, list)


@SETTINGS
@given(workflow_id=ANY)
def test_lookups_by_id(launched: type[DBOS], workflow_id: Any) -> None:
    for call in (
        lambda: DBOS.get_workflow_status(workflow_id),
        lambda: DBOS.list_workflow_steps(workflow_id),
        lambda: DBOS.cancel_workflow(workflow_id),
        lambda: DBOS.get_event(workflow_id, "k", timeout_seconds=0),
    ):
        outcome, got = run_checked(call, "workflow_id", "ID")
        if outcome == "ok":
            assert not got  # nothing exists under a hostile ID


@SETTINGS
@given(
    name=ANY,
    concurrency=st.none() | WRONG,
    limiter=st.none() | WRONG,
    priority=st.none() | WRONG,
)
def test_queue_declarations(
    launched: type[DBOS], name: Any, concurrency: Any, limiter: Any, priority: Any
) -> None:
    def call() -> Any:
        return Queue(name, concurrency=concurrency, limiter=limiter, priority_enabled=priority)  # type: ignore[arg-type]

    run_checked(call, "name", "concurrency", "limiter", "priority")


@SETTINGS
@given(queue_name=ANY, workflow_name=ANY, extra=ANY, value=ANY)
def test_client_enqueue(
    launched: type[DBOS], db_url: str, queue_name: Any, workflow_name: Any, extra: Any, value: Any
) -> None:
    client = _client(db_url)
    options: dict[str, Any] = {"queue_name": queue_name, "workflow_name": workflow_name}
    for key in ("workflow_id", "deduplication_id", "priority", "app_version"):
        options[key] = extra if key == "workflow_id" else None
    run_checked(
        lambda: client.enqueue(options, value), "queue_name", "workflow_name", "workflow ID"
    )


_CLIENTS: dict[str, DBOSClient] = {}


def _client(db_url: str) -> DBOSClient:
    client = _CLIENTS.get(db_url)
    if client is None:
        for old in _CLIENTS.values():
            old.destroy()
        _CLIENTS.clear()
        client = _CLIENTS[db_url] = DBOSClient(system_database_url=db_url)
    return client


@pytest.fixture(autouse=True, scope="module")
def _close_clients() -> Iterator[None]:
    yield
    for client in _CLIENTS.values():
        client.destroy()
    _CLIENTS.clear()


CLI_ARGS = st.lists(TEXT.filter(lambda s: "\x00" not in s and storable(s)), max_size=2)


@settings(SETTINGS, max_examples=25)
@given(
    command=st.sampled_from(
        [
            ["workflow", "get"],
            ["workflow", "steps"],
            ["workflow", "cancel"],
            ["workflow", "resume"],
            ["workflow", "fork"],
            ["workflow", "list", "--limit"],
            ["workflow", "list", "--status"],
            ["workflow", "list", "--start-time"],
            ["queue", "list", "--queue-name"],
        ]
    ),
    args=CLI_ARGS,
)
def test_cli(launched: type[DBOS], db_url: str, command: list[str], args: list[str]) -> None:
    before = checksum()
    result = CliRunner().invoke(cli_app, [*command, *args, "-s", db_url], catch_exceptions=True)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"the CLI crashed: {result.exception!r}\n{result.output}")
    assert "Traceback" not in result.output, result.output
    if command[1] in ("get", "steps", "list") or result.exit_code != 0:
        assert checksum() == before, result.output


CONFIG_KEYS = [
    "name",
    "system_database_url",
    "application_version",
    "executor_id",
    "sys_db_pool_size",
    "max_executor_threads",
    "admin_port",
    "admin_host",
    "admin_token",
    "dbos_system_schema",
    "log_level",
    "notification_listener_polling_interval_sec",
    "dead_executor_recovery_sec",
    "retention_max_age_sec",
    "retention_max_rows",
    "retention_interval_sec",
    "run_admin_server",
    "enable_patching",
    "serializer",
    "refuse_pickle",
]


@SETTINGS
@given(key=st.sampled_from(CONFIG_KEYS), value=ANY | st.just(deep(200)))
def test_config_values(config: dict[str, Any], key: str, value: Any) -> None:
    DBOS.destroy(destroy_registry=True)
    try:
        DBOS(config={**config, key: value})  # type: ignore[misc]
    except Exception as exc:
        assert isinstance(exc, DBOSInitializationError), f"{type(exc).__name__}: {exc}"
        assert key in str(exc) or key == "system_database_url", str(exc)
    finally:
        DBOS.destroy(destroy_registry=True)


@SETTINGS
@given(
    variable=st.sampled_from(["DBOS__VMID", "DBOS__APPVERSION", "DBOS__ADMIN_TOKEN"]),
    value=TEXT.filter(lambda s: "\x00" not in s and storable(s)),
)
def test_environment(config: dict[str, Any], variable: str, value: str) -> None:
    DBOS.destroy(destroy_registry=True)
    old = os.environ.get(variable)
    os.environ[variable] = value
    try:
        DBOS(config=config)  # type: ignore[arg-type]
    except Exception as exc:
        assert isinstance(exc, DBOSInitializationError), f"{type(exc).__name__}: {exc}"
        assert re.search("executor_id|application_version|admin_token", str(exc)), str(exc)
    finally:
        DBOS.destroy(destroy_registry=True)
        if old is None:
            os.environ.pop(variable, None)
        else:
            os.environ[variable] = old


def test_deeply_nested_values_are_refused_or_stored(launched: type[DBOS]) -> None:
    """A value nested deeper than the serializer can go fails with a clear error before
    anything is written; one it can hold reads back the same."""
    echo = _echo()
    for depth in (50, 5_000, 100_000):
        value = deep(depth)
        outcome, got = run_checked(lambda v=value: DBOS.start_workflow(echo, v).get_result())
        if outcome == "ok":
            assert got == value
    assert get_runtime() is not None


@SETTINGS
@given(topic=ANY, seconds=ANY)
def test_waits_inside_a_workflow(launched: type[DBOS], topic: Any, seconds: Any) -> None:
    """recv's topic and timeout, sleep's seconds: a bad one fails the workflow clearly."""

    def body() -> Any:
        return _registered("waits")

    handle = DBOS.start_workflow(body(), topic, seconds)
    try:
        handle.get_result()
    except Exception as exc:
        assert_clear(exc, "topic", "timeout", "seconds")


@SETTINGS
@given(name=ANY, cron=ANY, timezone=ANY)
def test_schedules(launched: type[DBOS], name: Any, cron: Any, timezone: Any) -> None:
    job = _registered("job")
    outcome, _ = run_checked(
        lambda: DBOS.create_schedule(
            schedule_name=name, workflow_fn=job, schedule=cron, cron_timezone=timezone
        ),
        "schedule",
        "timezone",
    )
    if outcome == "ok":
        assert storable(name)
        DBOS.delete_schedule(name)


@SETTINGS
@given(start_step=ANY, version=ANY, new_id=ANY)
def test_fork(launched: type[DBOS], start_step: Any, version: Any, new_id: Any) -> None:
    echo = _echo()
    with SetWorkflowID("fork-source"):
        DBOS.start_workflow(echo, 1).get_result()
    quiet()  # an earlier example's fork may still be finishing in the background
    outcome, forked = run_checked(
        lambda: DBOS.fork_workflow(
            "fork-source", start_step, application_version=version, forked_workflow_id=new_id
        ),
        "start_step",
        "application_version",
        "forked_workflow_id",
        "workflow ID",
    )
    if outcome == "ok":
        assert storable(new_id) or new_id is None
        # The fork runs in the background: let it end before the next example's checksum.
        # (Forked to an application version no process runs, it stays ENQUEUED: cancel it.)
        if version is None or version == get_runtime().app_version:
            forked.get_result()
        else:
            DBOS.cancel_workflow(forked.workflow_id)
