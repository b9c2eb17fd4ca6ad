"""OpenTelemetry traces and logs, as DBOS 2.31 emits them (the optional ``otel`` extra).

Nothing here imports OpenTelemetry until tracing is switched on (config ``enable_otlp``): with
it off, the engine has no observer and pays nothing. When on, a ``TracingObserver`` on the
engine's observation seam (``core.observe``) opens a span per workflow run, step, transaction
and durable wait, with DBOS's attribute names (or the ``dbos.*`` semantic-convention names
under ``otel_attribute_format="semconv"``), and log records of the ``waypoint`` logger carry
the workflow ID and trace ID and go to the OTLP log endpoints.

A workflow's trace is durable: ``PropagateOtelContext`` (and a client's
``EnqueueOptions["otel_context"]``) store a W3C ``traceparent`` carrier in the workflow's
attributes under ``dbos.otelContext``, DBOS's key, so a run dequeued or recovered in any
process, Waypoint or DBOS, continues the trace that started it.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Literal, Optional

from waypoint._api.context_managers import _StartOptionsBlock
from waypoint.core.context import (
    TRACE_CARRIER_ATTRIBUTE,
    current_auth,
    current_run,
)
from waypoint.core.observe import ObservedRun, Observer, Watch
from waypoint.core.runtime import Runtime
from waypoint.core.settings import RuntimeConfig
from waypoint.core.types import RequestInfo
from waypoint.error import DBOSInitializationError

if TYPE_CHECKING:
    from opentelemetry.context import Context as OtelContext
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span

logger = logging.getLogger("waypoint")

OtelAttributeFormat = Literal["legacy", "semconv"]

# DBOS's span attribute names and their OpenTelemetry-style names (otel_attribute_format).
LEGACY_TO_SEMCONV: dict[str, str] = {
    "operationUUID": "dbos.operation.workflow_id",
    "operationType": "dbos.operation.type",
    "applicationID": "dbos.application.id",
    "applicationVersion": "dbos.application.version",
    "executorID": "dbos.executor.id",
    "queueName": "dbos.queue.name",
    "authenticatedUser": "dbos.user.name",
    "authenticatedUserRoles": "dbos.user.roles",
    "authenticatedUserAssumedRole": "dbos.user.assumed_role",
    "requestID": "dbos.request.id",
    "requestIP": "dbos.request.ip",
    "requestURL": "dbos.request.url",
    "requestMethod": "dbos.request.method",
    "responseCode": "dbos.response.status_code",
}

_LEGACY_TO_SEMCONV = LEGACY_TO_SEMCONV  # DBOS's name for it
TRACER_NAME = "dbos-tracer"


class DBOSTracer:
    """Opens DBOS-shaped spans: the attributes every span carries (application, version,
    executor, ``otlp_attributes``), named per ``otel_attribute_format``."""

    def __init__(self) -> None:
        self.app_id: Optional[str] = os.environ.get("DBOS__APPID", None)
        self.provider: Optional[TracerProvider] = None
        self.disable_otlp: bool = True
        self.otel_attribute_format: OtelAttributeFormat = "legacy"
        self.otlp_attributes: dict[str, str] = {}
        self.app_version: Optional[str] = None
        self.executor_id: Optional[str] = None
        self._tracer: Optional[tuple[Any, Any]] = None  # (provider, its tracer): made once

    def set_provider(self, provider: Optional[TracerProvider]) -> None:
        """Use this provider instead of the global one."""
        self.provider = provider

    def _resolve_attribute_name(self, key: str) -> str:
        if self.otel_attribute_format == "semconv":
            return LEGACY_TO_SEMCONV.get(key, key)
        return key

    def start_span(
        self,
        attributes: Mapping[str, Any],
        parent: Optional[Span] = None,
        *,
        context: Optional[OtelContext] = None,
    ) -> Span:
        """A started (not current) span named ``attributes["name"]``, under ``parent`` (or
        ``context``, else the current span)."""
        from opentelemetry import trace

        provider = self.provider if self.provider is not None else trace.get_tracer_provider()
        cached = self._tracer
        if cached is None or cached[0] is not provider:
            cached = self._tracer = (provider, provider.get_tracer(TRACER_NAME))
        if parent is not None:
            context = trace.set_span_in_context(parent)
        values = {
            **attributes,
            "applicationID": self.app_id,
            "applicationVersion": self.app_version,
            "executorID": self.executor_id,
        }
        plain = {
            self._resolve_attribute_name(k): v
            for k, v in values.items()
            if k != "name" and v is not None and isinstance(v, (str, bool, int, float))
        }
        plain.update(self.otlp_attributes)  # verbatim: never renamed
        return cached[1].start_span(name=str(attributes["name"]), context=context, attributes=plain)

    def end_span(self, span: Span) -> None:
        span.end()

    def get_current_span(self) -> Optional[Span]:
        """The active span (DBOS's or the application's), if any."""
        try:
            from opentelemetry import trace
        except ImportError:
            return None

        span = trace.get_current_span()
        return span if span.get_span_context().is_valid else None


dbos_tracer = DBOSTracer()
# The innermost span Waypoint opened here (a workflow's, a step's, a request's): the one
# DBOS.set_authentication names the user on, as DBOS's context does.
_dbos_span: contextvars.ContextVar[Optional[Span]] = contextvars.ContextVar(
    "waypoint_dbos_span", default=None
)


# -- carriers ---------------------------------------------------------------------------------


def inject_trace_context(context: Optional[OtelContext]) -> dict[str, str]:
    """The W3C trace context (traceparent/tracestate, never baggage: it is unbounded and
    often holds user data) of ``context`` (default: the current one); empty without a span."""
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier, context=context)
    return carrier


def extract_trace_context(carrier: Any) -> Optional[OtelContext]:
    """The context a stored carrier names, or None when it names none. Never raises: the
    carrier lives in the user-writable attributes."""
    from opentelemetry.trace import get_current_span
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    if not isinstance(carrier, dict):
        return None
    try:
        extracted = TraceContextTextMapPropagator().extract(carrier)
    except Exception as exc:
        logger.warning("Ignoring malformed %s workflow attribute: %s", TRACE_CARRIER_ATTRIBUTE, exc)
        return None
    if not get_current_span(extracted).get_span_context().is_valid:
        return None
    return extracted


def stored_carrier(attributes: Optional[str]) -> Any:
    """The carrier in a workflow's stored attributes (JSON text), if any."""
    if not attributes:
        return None
    try:
        parsed = json.loads(attributes)
    except ValueError:
        return None
    return parsed.get(TRACE_CARRIER_ATTRIBUTE) if isinstance(parsed, dict) else None


def fold_otel_context(options: Mapping[str, Any]) -> dict[str, Any]:
    """Enqueue options with ``otel_context`` (an OpenTelemetry context) folded into the
    workflow's attributes as a carrier, as DBOS's client does."""
    result = dict(options)
    context = result.pop("otel_context", None)
    if context is None:
        return result
    try:
        carrier = inject_trace_context(context)
    except ImportError as exc:
        raise DBOSInitializationError(
            "otel_context needs OpenTelemetry: pip install 'waypoint-workflows[otel]'"
        ) from exc
    if carrier:
        result["attributes"] = {
            **(result.get("attributes") or {}),
            TRACE_CARRIER_ATTRIBUTE: carrier,
        }
    return result


class PropagateOtelContext(_StartOptionsBlock):
    """Workflows started or enqueued in the block join the current OpenTelemetry trace (or
    that of ``context``), also when they run later or in another process: the trace context
    is stored with each workflow. Children do not inherit it."""

    def __init__(self, context: Optional[OtelContext] = None) -> None:
        self.context = context

    def _changes(self) -> dict[str, Any]:
        try:
            carrier: Optional[dict[str, str]] = inject_trace_context(self.context) or None
        except ImportError:
            carrier = None  # no OpenTelemetry, so no trace to propagate
        return {"trace_carrier": carrier}


# -- spans on the observation seam -----------------------------------------------------------


class SpanWatch(Watch):
    """One span: current while the operation's code runs, ended with its outcome."""

    __slots__ = ("authenticated", "retries", "span")

    def __init__(self, span: Span, authenticated: bool = False) -> None:
        self.span = span
        self.authenticated = authenticated  # set the user attributes at the first enter
        self.retries = 0

    def enter(self) -> Any:
        from opentelemetry import context, trace

        if self.authenticated:
            self.authenticated = False
            _set_auth_attributes(self.span)
        return context.attach(trace.set_span_in_context(self.span)), _dbos_span.set(self.span)

    def exit(self, token: Any) -> None:
        from opentelemetry import context

        otel_token, own_token = token
        _dbos_span.reset(own_token)
        context.detach(otel_token)

    def event(self, name: str, attributes: dict[str, Any]) -> None:
        if name == "retry":
            self.retries += 1
        self.span.add_event(
            name,
            {
                k: v if isinstance(v, (str, bool, int, float)) else repr(v)
                for k, v in attributes.items()
            },
        )

    def end(self, status: str, error: Optional[BaseException]) -> None:
        from opentelemetry.trace import Status, StatusCode

        if self.retries:
            self.span.set_attribute("retries", self.retries)
        if status == "SUCCESS":
            self.span.set_status(Status(StatusCode.OK))
        elif status in ("ERROR", "CANCELLED"):
            why = str(error) if error is not None else status.lower()
            self.span.set_status(Status(StatusCode.ERROR, description=why))
        else:
            self.span.set_attribute("outcome", status)  # ABANDONED: finished elsewhere
        dbos_tracer.end_span(self.span)


def _set_auth_attributes(span: Span) -> None:
    auth = current_auth.get()
    if auth is None:
        return
    name = dbos_tracer._resolve_attribute_name
    if auth.user is not None:
        span.set_attribute(name("authenticatedUser"), auth.user)
    span.set_attribute(
        name("authenticatedUserRoles"), json.dumps(auth.roles) if auth.roles is not None else ""
    )
    if auth.assumed_role is not None:
        span.set_attribute(name("authenticatedUserAssumedRole"), auth.assumed_role)


def authenticated(user: str, roles: Optional[list[str]]) -> None:
    """``DBOS.set_authentication``: the innermost span Waypoint opened (a request's, say)
    names the user, as DBOS's does."""
    span = _dbos_span.get()
    if span is not None:
        name = dbos_tracer._resolve_attribute_name
        span.set_attribute(name("authenticatedUser"), user)
        roles_text = json.dumps(roles) if roles is not None else ""
        span.set_attribute(name("authenticatedUserRoles"), roles_text)


class TracingObserver(Observer):
    """Spans for the engine's operations, parented as DBOS parents them: a workflow under its
    stored carrier, else under the span current where it was started in this process; its
    steps, transactions and waits under whatever span is current in its body."""

    def origin(self) -> Any:
        from opentelemetry import context, trace

        ctx = context.get_current()
        return ctx if trace.get_current_span(ctx).get_span_context().is_valid else None

    def workflow(self, run: ObservedRun) -> Optional[Watch]:
        parent = extract_trace_context(stored_carrier(run.attributes))
        if parent is None and run.origins is not None:
            parent = run.origins.get(self)
        attributes = {
            "name": run.name,
            "operationUUID": run.workflow_id,
            "operationType": "workflow",
            "queueName": run.queue_name,
        }
        return SpanWatch(dbos_tracer.start_span(attributes, context=parent), authenticated=True)

    def _child(self, run: ObservedRun, name: str, kind: Optional[str]) -> Watch:
        attributes = {"name": name, "operationUUID": run.workflow_id, "operationType": kind}
        return SpanWatch(dbos_tracer.start_span(attributes), authenticated=True)

    def step(self, run: ObservedRun, name: str, function_id: int) -> Optional[Watch]:
        return self._child(run, name, "step")

    def transaction(self, run: ObservedRun, name: str, function_id: int) -> Optional[Watch]:
        return self._child(run, name, "transaction")

    def wait(self, run: ObservedRun, name: str, function_id: int) -> Optional[Watch]:
        return self._child(run, name, None)


# -- request spans (FastAPI, Flask) ------------------------------------------------------------


def _no_response_code(code: int) -> None:
    return None


@contextlib.contextmanager
def handler_span(info: RequestInfo) -> Iterator[Callable[[int], None]]:
    """A span for one HTTP request, current while it is handled (the workflows the handler
    starts are its children); yields the setter of the response code."""
    if dbos_tracer.disable_otlp:
        yield _no_response_code
        return
    from opentelemetry import context, trace
    from opentelemetry.trace import Status, StatusCode

    attributes = {
        "name": info.path,
        "requestID": info.request_id,
        "requestIP": info.client_ip,
        "requestURL": info.url,
        "requestMethod": info.method,
        "operationType": "handler",
    }
    span = dbos_tracer.start_span(attributes)
    token = context.attach(trace.set_span_in_context(span))
    own_token = _dbos_span.set(span)

    def respond(code: int) -> None:
        span.set_attribute(dbos_tracer._resolve_attribute_name("responseCode"), code)

    try:
        yield respond
    except BaseException as exc:
        span.set_status(Status(StatusCode.ERROR, description=str(exc)))
        raise
    else:
        span.set_status(Status(StatusCode.OK))
    finally:
        _dbos_span.reset(own_token)
        context.detach(token)
        dbos_tracer.end_span(span)


# -- logs -------------------------------------------------------------------------------------


class DBOSLogTransformer(logging.Filter):
    """Adds DBOS's attributes to log records: application, version, executor, the
    ``otlp_attributes``, the running workflow's ID and (tracing on) the trace ID."""

    def __init__(self) -> None:
        super().__init__()

    def filter(self, record: logging.LogRecord) -> bool:
        record.applicationID = dbos_tracer.app_id or ""
        record.applicationVersion = dbos_tracer.app_version
        record.executorID = dbos_tracer.executor_id
        for k, v in dbos_tracer.otlp_attributes.items():
            setattr(record, k, v)
        run = current_run.get()
        if run is not None:
            record.operationUUID = run.workflow_id
        span = None if dbos_tracer.disable_otlp else dbos_tracer.get_current_span()
        if span is not None:
            from opentelemetry.trace.span import format_trace_id

            record.traceId = format_trace_id(span.get_span_context().trace_id)
        return True


_log_transformer = DBOSLogTransformer()
_otlp_handler: Optional[logging.Handler] = None


# -- configuration ----------------------------------------------------------------------------


def _string_list(config: Mapping[str, Any], key: str) -> list[str]:
    value = config.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise DBOSInitializationError(f"config {key} must be a list of URLs, got {value!r}")
    return list(value)


def configure(config: RuntimeConfig) -> None:
    """Apply the telemetry settings of ``DBOS(config=...)`` (before launch, as DBOS does)."""
    raw = config.raw
    fmt = raw.get("otel_attribute_format") or "legacy"
    if fmt not in ("legacy", "semconv"):
        raise DBOSInitializationError(
            f"config otel_attribute_format must be 'legacy' or 'semconv', got {fmt!r}"
        )
    attributes = raw.get("otlp_attributes") or {}
    if not isinstance(attributes, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in attributes.items()
    ):
        raise DBOSInitializationError(
            f"config otlp_attributes must map strings to strings, got {attributes!r}"
        )
    level = raw.get("otlp_log_level")
    if level is not None and not isinstance(logging.getLevelName(str(level).upper()), int):
        raise DBOSInitializationError(
            f"config otlp_log_level must be a logging level name, got {level!r}"
        )
    traces = _string_list(raw, "otlp_traces_endpoints")
    logs = _string_list(raw, "otlp_logs_endpoints")
    enabled = bool(raw.get("enable_otlp", False))
    dbos_tracer.otel_attribute_format = "semconv" if fmt == "semconv" else "legacy"
    dbos_tracer.otlp_attributes = dict(attributes)
    dbos_tracer.executor_id = config.executor_id
    dbos_tracer.app_version = config.application_version
    dbos_tracer.disable_otlp = not enabled
    if _log_transformer not in logger.filters:
        logger.addFilter(_log_transformer)
    if not enabled:
        if traces or logs:
            logger.warning(
                "otlp_traces_endpoints/otlp_logs_endpoints are set but enable_otlp is not: "
                "nothing is exported"
            )
        return
    try:
        _setup_traces(config.name, traces)
        _setup_logs(config.name, logs, level)
    except ImportError as exc:
        raise DBOSInitializationError(
            f"enable_otlp needs OpenTelemetry ({exc}): pip install 'waypoint-workflows[otel]'"
        ) from exc


def _resource(name: str) -> Any:
    from opentelemetry.sdk.resources import Resource

    return Resource.create({"service.name": name})


def _setup_traces(name: str, endpoints: list[str]) -> None:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    provider = trace.get_tracer_provider()
    if endpoints:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        if isinstance(provider, trace.ProxyTracerProvider):
            provider = TracerProvider(resource=_resource(name))
            trace.set_tracer_provider(provider)
        for e in endpoints:
            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=e)))  # type: ignore[attr-defined]
    if isinstance(provider, trace.ProxyTracerProvider):
        logger.warning(
            "OTLP is enabled but tracer provider not set, skipping trace exporter setup."
        )


def _setup_logs(name: str, endpoints: list[str], level: Any) -> None:
    global _otlp_handler
    from opentelemetry._logs import get_logger_provider, set_logger_provider
    from opentelemetry._logs._internal import ProxyLoggerProvider
    from opentelemetry.instrumentation.logging.handler import LoggingHandler
    from opentelemetry.sdk._logs import LoggerProvider

    provider = get_logger_provider()
    if endpoints:
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
        from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

        if isinstance(provider, ProxyLoggerProvider):
            provider = LoggerProvider(resource=_resource(name))
            set_logger_provider(provider)
        for e in endpoints:
            provider.add_log_record_processor(  # type: ignore[attr-defined]
                BatchLogRecordProcessor(OTLPLogExporter(endpoint=e), export_timeout_millis=5000)
            )
    if _otlp_handler is not None:
        return
    if isinstance(provider, ProxyLoggerProvider):
        logger.warning("OTLP is enabled but logger provider not set, skipping log exporter setup.")
        return
    _otlp_handler = LoggingHandler(logger_provider=provider)
    if level is not None:
        _otlp_handler.setLevel(str(level).upper())
    logger.addHandler(_otlp_handler)


dbos_logger = logger  # DBOS's name for its logger


def add_otlp_to_all_loggers() -> None:
    """Send the records of every logger to the OTLP log handler (tracing on): the root's and
    those of loggers that do not propagate, except OpenTelemetry's own (the handler's
    recursion guard logs through them)."""
    if _otlp_handler is None:
        return
    root = logging.root
    if _otlp_handler not in root.handlers:
        root.addHandler(_otlp_handler)
    for name in list(root.manager.loggerDict):
        if name == logger.name or name.split(".")[0] == "opentelemetry":
            continue
        other = logging.getLogger(name)
        if not other.propagate and _otlp_handler not in other.handlers:
            other.addHandler(_otlp_handler)


def add_transformer_to_all_loggers() -> None:
    """Give every logger's records DBOS's attributes (the workflow ID, the trace ID...)."""
    for target in [logging.root, *(logging.getLogger(n) for n in logging.root.manager.loggerDict)]:
        if _log_transformer not in target.filters:
            target.addFilter(_log_transformer)


def install(rt: Runtime) -> None:
    """Put the tracing observer on a runtime being built (when tracing is on): before it
    recovers anything, so recovered runs are traced too."""
    dbos_tracer.app_version = rt.app_version
    dbos_tracer.executor_id = rt.executor_id
    if not dbos_tracer.disable_otlp:
        rt.observers.add(TracingObserver())


def current_span() -> Optional[Span]:
    """``DBOS.span``: the active span, None with tracing off or no span."""
    return dbos_tracer.get_current_span()
