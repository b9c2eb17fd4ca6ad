"""OpenTelemetry traces and logs (config enable_otlp): spans for workflows, steps, waits and
transactions with DBOS's attribute names, parented as DBOS parents them; trace carriers stored
with workflows (PropagateOtelContext, a client's otel_context); log records carrying the trace
and the workflow ID. The process-wide providers are in-memory, set once for this module."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry._logs import set_logger_provider
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace.span import format_trace_id

from waypoint import DBOS, DBOSClient, PropagateOtelContext, SetWorkflowAttributes, SetWorkflowID
from waypoint.core.runtime import get_runtime
from waypoint.error import DBOSInitializationError

SPANS = InMemorySpanExporter()
LOGS = InMemoryLogRecordExporter()


@pytest.fixture(scope="module", autouse=True)
def providers() -> None:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(SPANS))
    trace.set_tracer_provider(provider)
    logs = LoggerProvider()
    logs.add_log_record_processor(SimpleLogRecordProcessor(LOGS))
    set_logger_provider(logs)


@pytest.fixture
def traced(config: dict[str, Any]) -> Iterator[type[DBOS]]:
    DBOS.destroy(destroy_registry=True)
    DBOS(config={**config, "enable_otlp": True, "otlp_attributes": {"team": "ops"}})  # type: ignore[typeddict-item]
    SPANS.clear()
    LOGS.clear()
    yield DBOS
    DBOS.destroy(destroy_registry=True)


def named(name: str) -> list[ReadableSpan]:
    return [s for s in SPANS.get_finished_spans() if s.name == name]


def one(name: str) -> ReadableSpan:
    """The one finished span of that name. A workflow's span ends just after its result is
    stored, so a caller that read the result from the database (a client's handle) can get
    here first: wait briefly for the span to finish."""
    deadline = time.monotonic() + 5.0
    found = named(name)
    while not found and time.monotonic() < deadline:
        time.sleep(0.01)
        found = named(name)
    assert len(found) == 1, [s.name for s in SPANS.get_finished_spans()]
    return found[0]


def parent_of(span: ReadableSpan) -> int:
    assert span.parent is not None, f"{span.name} has no parent"
    return span.parent.span_id


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.span_id


def test_spans_of_a_workflow_its_steps_and_waits(traced: type[DBOS]) -> None:
    attempts = {"n": 0}
    mine = trace.get_tracer("app")

    @DBOS.step(retries_allowed=True, interval_seconds=0.01, max_attempts=3)
    def flaky() -> str:
        attempts["n"] += 1
        if attempts["n"] == 1:
            raise RuntimeError("first attempt fails")
        DBOS.logger.info("in the step")
        return "ok"

    @DBOS.workflow()
    def wf() -> str:
        with mine.start_as_current_span("manual"):
            flaky()
            sub = DBOS.tracer.start_span({"name": "sub"}, parent=DBOS.span)
            DBOS.tracer.end_span(sub)
        DBOS.logger.info("in the workflow")
        DBOS.sleep(0.01)
        DBOS.recv("topic", timeout_seconds=0.01)
        return "done"

    DBOS.launch()
    with SetWorkflowID("tel-1"):
        assert wf() == "done"

    root = one(wf.__qualname__)
    assert root.parent is None
    manual, step, sub = one("manual"), one(flaky.__qualname__), one("sub")
    assert parent_of(manual) == span_id(root)
    assert parent_of(step) == span_id(manual)
    assert parent_of(sub) == span_id(manual)  # DBOS.span is the active span: the manual one
    for wait in ("sleep", "recv"):
        assert parent_of(one(wait)) == span_id(root)
    assert len({s.context.trace_id for s in SPANS.get_finished_spans() if s.context}) == 1

    attrs = dict(root.attributes or {})
    assert attrs["operationUUID"] == "tel-1"
    assert attrs["operationType"] == "workflow"
    assert attrs["applicationVersion"] == DBOS.application_version
    assert attrs["executorID"] == DBOS.executor_id
    assert attrs["team"] == "ops"
    assert "queueName" not in attrs
    step_attrs = dict(step.attributes or {})
    assert step_attrs["operationType"] == "step" and step_attrs["operationUUID"] == "tel-1"
    assert step_attrs["retries"] == 1
    assert [e.name for e in step.events] == ["retry"]
    assert step.status.is_ok and root.status.is_ok

    # Log records carry the span they were logged in, the trace ID and the workflow ID.
    records = {r.log_record.body: r.log_record for r in LOGS.get_finished_logs()}
    in_step, in_wf = records["in the step"], records["in the workflow"]
    assert in_step.span_id == span_id(step)
    assert in_wf.span_id == span_id(root)
    for rec in (in_step, in_wf):
        assert rec.attributes is not None
        assert rec.attributes["operationUUID"] == "tel-1"
        assert rec.attributes["traceId"] == format_trace_id(rec.trace_id or 0)
        assert rec.attributes["executorID"] == DBOS.executor_id
        assert rec.attributes["team"] == "ops"


def test_failed_workflow_and_transaction_spans(traced: type[DBOS], config: dict[str, Any]) -> None:
    @DBOS.workflow()
    def broken() -> None:
        raise ValueError("no")

    DBOS.launch()
    with pytest.raises(ValueError):
        broken()
    span = one(broken.__qualname__)
    assert not span.status.is_ok and span.status.description == "no"


def test_async_workflow_spans(traced: type[DBOS]) -> None:
    @DBOS.step()
    async def step() -> int:
        return 1

    @DBOS.workflow()
    async def wf() -> int:
        return await step() + await step()

    DBOS.launch()
    assert asyncio.run(wf()) == 2
    root = one(wf.__qualname__)
    steps = named(step.__qualname__)
    assert len(steps) == 2 and all(parent_of(s) == span_id(root) for s in steps)


def test_semconv_attribute_names(config: dict[str, Any]) -> None:
    DBOS.destroy(destroy_registry=True)
    DBOS(config={**config, "enable_otlp": True, "otel_attribute_format": "semconv"})  # type: ignore[typeddict-item]
    try:

        @DBOS.workflow()
        def wf() -> None:
            pass

        DBOS.launch()
        SPANS.clear()
        with SetWorkflowID("sem-1"):
            wf()
        attrs = dict(one(wf.__qualname__).attributes or {})
        assert attrs["dbos.operation.workflow_id"] == "sem-1"
        assert attrs["dbos.operation.type"] == "workflow"
        assert "dbos.executor.id" in attrs and "dbos.application.version" in attrs
        assert "operationUUID" not in attrs and "executorID" not in attrs
    finally:
        DBOS.destroy(destroy_registry=True)


def test_tracing_off_costs_nothing_and_emits_nothing(dbos: type[DBOS]) -> None:
    @DBOS.workflow()
    def wf() -> str:
        DBOS.logger.info("untraced")
        return "x"

    DBOS.launch()
    assert not get_runtime().observers  # no observer: the engine does no work for tracing
    SPANS.clear()
    LOGS.clear()
    with trace.get_tracer("app").start_as_current_span("caller"):
        assert wf() == "x"
    assert [s.name for s in SPANS.get_finished_spans()] == ["caller"]


def test_bad_telemetry_settings_are_refused(config: dict[str, Any]) -> None:
    DBOS.destroy(destroy_registry=True)
    for bad in (
        {"otel_attribute_format": "camel"},
        {"otlp_attributes": {"a": 1}},
        {"otlp_traces_endpoints": "http://x"},
        {"otlp_log_level": "LOUD"},
    ):
        with pytest.raises(DBOSInitializationError):
            DBOS(config={**config, "enable_otlp": True, **bad})  # type: ignore[typeddict-item]
        DBOS.destroy(destroy_registry=True)


def test_started_and_enqueued_workflows_join_the_callers_trace(traced: type[DBOS]) -> None:
    @DBOS.step()
    def step() -> None:
        pass

    @DBOS.workflow()
    def wf() -> str:
        step()
        return "done"

    DBOS.launch()
    DBOS.register_queue("tq")
    mine = trace.get_tracer("app")
    with mine.start_as_current_span("caller") as caller:
        started = DBOS.start_workflow(wf)  # runs on a worker thread
        with PropagateOtelContext(), SetWorkflowAttributes({"customer": "acme"}):
            carried = DBOS.enqueue_workflow("tq", wf)
        loose = DBOS.enqueue_workflow("tq", wf)
    for h in (started, carried, loose):
        assert h.get_result() == "done"

    by_id = {s.attributes["operationUUID"]: s for s in named(wf.__qualname__) if s.attributes}
    caller_ctx = caller.get_span_context()
    for wfid in (started.workflow_id, carried.workflow_id):
        span = by_id[wfid]
        assert parent_of(span) == caller_ctx.span_id
        assert span.context is not None and span.context.trace_id == caller_ctx.trace_id
    assert by_id[loose.workflow_id].parent is None
    assert (by_id[carried.workflow_id].attributes or {})["queueName"] == "tq"
    steps = [
        s for s in named(step.__qualname__) if parent_of(s) == span_id(by_id[carried.workflow_id])
    ]
    assert len(steps) == 1

    # The carrier is stored with the workflow, as DBOS stores it, beside its attributes.
    attributes = DBOS.get_workflow_status(carried.workflow_id).attributes  # type: ignore[union-attr]
    assert attributes["customer"] == "acme"
    assert set(attributes["dbos.otelContext"]) == {"traceparent"}
    assert DBOS.get_workflow_status(loose.workflow_id).attributes is None  # type: ignore[union-attr]


def test_client_otel_context_joins_the_trace(traced: type[DBOS], config: dict[str, Any]) -> None:
    @DBOS.workflow()
    def wf() -> str:
        return "done"

    DBOS.launch()
    DBOS.register_queue("cq")
    client = DBOSClient(system_database_url=config["system_database_url"])
    try:
        with trace.get_tracer("app").start_as_current_span("caller") as caller:
            handle = client.enqueue(
                {
                    "queue_name": "cq",
                    "workflow_name": wf.__qualname__,
                    "otel_context": otel_context.get_current(),
                }
            )
        assert handle.get_result() == "done"
    finally:
        client.destroy()
    assert parent_of(one(wf.__qualname__)) == caller.get_span_context().span_id


def test_a_malformed_carrier_does_not_stop_the_workflow(traced: type[DBOS]) -> None:
    @DBOS.workflow()
    def wf() -> str:
        return "done"

    DBOS.launch()
    for poison in ({"traceparent": 42}, {"traceparent": "garbage"}, "not a dict"):
        SPANS.clear()
        with SetWorkflowAttributes({"dbos.otelContext": poison}):
            assert DBOS.start_workflow(wf).get_result() == "done"
        assert one(wf.__qualname__).parent is None


def test_logs_without_tracing_carry_the_workflow_id(dbos: type[DBOS], caplog: Any) -> None:
    @DBOS.workflow()
    def wf() -> None:
        DBOS.logger.info("hello")

    DBOS.launch()
    with caplog.at_level(logging.INFO, logger="waypoint"), SetWorkflowID("log-1"):
        wf()
    (record,) = [r for r in caplog.records if r.getMessage() == "hello"]
    assert record.operationUUID == "log-1"
    assert not hasattr(record, "traceId")


def test_request_spans_parent_the_workflows_they_start(traced: type[DBOS]) -> None:
    import httpx
    from fastapi import FastAPI
    from flask import Flask

    from tests.web_servers import serve_asgi, serve_wsgi

    api, web = FastAPI(), Flask(__name__)
    DBOS(config=DBOS._get()._config.raw, fastapi=api, flask=web)  # type: ignore[arg-type]

    @DBOS.workflow()
    def wf(x: int) -> int:
        return x + 1

    @api.get("/api/{x}")
    def api_endpoint(x: int) -> int:
        DBOS.set_authentication("ann", ["reader"])
        return wf(x)

    @web.get("/web/<int:x>")
    def web_endpoint(x: int) -> str:
        return str(DBOS.start_workflow(wf, x).get_result())

    DBOS.launch()
    with serve_wsgi(web) as url, httpx.Client(base_url=url) as http:
        assert http.get("/web/2").text == "3"
    with serve_asgi(api) as url, httpx.Client(base_url=url) as http:  # destroys at shutdown
        assert http.get("/api/1", headers={"x-request-id": "req-1"}).json() == 2

    by_id = {span_id(s): s for s in SPANS.get_finished_spans()}

    def ancestors(span: ReadableSpan) -> list[int]:
        found = []
        while span.parent is not None and span.parent.span_id in by_id:
            found.append(span.parent.span_id)
            span = by_id[span.parent.span_id]
        return found

    for path in ("/api/1", "/web/2"):
        handler = one(path)
        attrs = dict(handler.attributes or {})
        assert attrs["operationType"] == "handler" and attrs["requestMethod"] == "GET"
        assert attrs["responseCode"] == 200 and attrs["requestURL"].endswith(path)
        # FastAPI may open spans of its own around the endpoint: the handler's span is an
        # ancestor of the workflow's, not necessarily its parent.
        (run,) = [s for s in named(wf.__qualname__) if span_id(handler) in ancestors(s)]
        assert run.context is not None and handler.context is not None
        assert run.context.trace_id == handler.context.trace_id
    assert one("/web/2").parent is None
    api_attrs = dict(one("/api/1").attributes or {})
    assert api_attrs["requestID"] == "req-1"
    # set_authentication in the handler names the user on the request's span.
    assert api_attrs["authenticatedUser"] == "ann"
    assert api_attrs["authenticatedUserRoles"] == '["reader"]'


def test_transaction_and_child_workflow_spans(config: dict[str, Any], tmp_path: Any) -> None:
    import sqlalchemy as sa

    app_url = f"sqlite:///{tmp_path}/app.sqlite"
    DBOS.destroy(destroy_registry=True)
    DBOS(config={**config, "enable_otlp": True, "application_database_url": app_url})  # type: ignore[typeddict-item]
    try:

        @DBOS.transaction()
        def read() -> int:
            return int(DBOS.sql_session.execute(sa.text("SELECT 41")).scalar_one())

        @DBOS.workflow()
        def child() -> int:
            return read() + 1

        @DBOS.workflow()
        def parent() -> int:
            inline = child()
            return inline + DBOS.start_workflow(child).get_result()

        DBOS.launch()
        SPANS.clear()
        with SetWorkflowID("par-1"):
            assert parent() == 84
        root = one(parent.__qualname__)
        children = named(child.__qualname__)
        assert len(children) == 2 and all(parent_of(c) == span_id(root) for c in children)
        txns = named(read.__qualname__)
        assert {parent_of(t) for t in txns} == {span_id(c) for c in children}
        assert all((t.attributes or {})["operationType"] == "transaction" for t in txns)
        assert {(c.attributes or {})["operationUUID"] for c in children} == {"par-1-1", "par-1-3"}
    finally:
        DBOS.destroy(destroy_registry=True)


WITHOUT_OTEL = """
import sys

class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "opentelemetry" or name.startswith("opentelemetry."):
            raise ModuleNotFoundError(name)

sys.meta_path.insert(0, Block())
from waypoint import DBOS, PropagateOtelContext
from waypoint.error import DBOSInitializationError

url = sys.argv[1]
try:
    DBOS(config={"name": "no-otel", "system_database_url": url, "enable_otlp": True})
except DBOSInitializationError as exc:
    assert "waypoint-workflows[otel]" in str(exc), exc
else:
    raise AssertionError("enable_otlp without OpenTelemetry was accepted")
DBOS.destroy(destroy_registry=True)
DBOS(config={"name": "no-otel", "system_database_url": url})

@DBOS.workflow()
def wf():
    DBOS.logger.info("logged")
    return DBOS.span

DBOS.launch()
with PropagateOtelContext():
    assert DBOS.start_workflow(wf).get_result() is None
assert not any(m.startswith("opentelemetry") for m in sys.modules)
DBOS.destroy()
print("OK")
"""


def test_without_opentelemetry_installed(tmp_path: Any) -> None:
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path}/no-otel.sqlite"
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_OTEL, url], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and done.stdout.strip() == "OK", done.stderr


def test_otlp_handler_for_all_loggers_skips_opentelemetrys_own(traced: type[DBOS]) -> None:
    from waypoint._api import telemetry

    handler = telemetry._otlp_handler
    assert handler is not None and handler in logging.getLogger("waypoint").handlers
    quiet = logging.getLogger("tests.telemetry.quiet")
    quiet.propagate = False
    guard = logging.getLogger("opentelemetry.sdk._logs._internal.export.propagate.false")
    guard.propagate = False
    try:
        telemetry.add_otlp_to_all_loggers()
        telemetry.add_transformer_to_all_loggers()
        assert handler in logging.root.handlers and handler in quiet.handlers
        assert handler not in guard.handlers
        quiet.warning("from elsewhere")
        (rec,) = [r for r in LOGS.get_finished_logs() if r.log_record.body == "from elsewhere"]
        assert rec.log_record.attributes is not None
        assert rec.log_record.attributes["executorID"] == DBOS.executor_id
    finally:
        quiet.propagate = True
        quiet.removeHandler(handler)
        logging.root.removeHandler(handler)
        for name in [None, *logging.root.manager.loggerDict]:
            logging.getLogger(name).removeFilter(telemetry._log_transformer)
        logging.getLogger("waypoint").addFilter(telemetry._log_transformer)
