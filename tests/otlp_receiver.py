"""An OTLP/HTTP receiver for tests: serves on loopback, decodes what exporters send with
opentelemetry-proto and keeps the spans and log records."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)


@dataclass(frozen=True)
class Received:
    service: str
    name: str
    trace_id: bytes
    span_id: bytes
    parent_span_id: bytes
    attributes: dict[str, Any]


class Receiver:
    """An OTLP/HTTP receiver: keeps every span and log record it is sent."""

    def __init__(self) -> None:
        self.spans: list[Received] = []
        self.logs: list[Any] = []  # LogRecord messages
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.path == "/v1/logs":
                    logs = ExportLogsServiceRequest.FromString(body)
                    with receiver.lock:
                        receiver.logs.extend(
                            r for rl in logs.resource_logs for sl in rl.scope_logs
                            for r in sl.log_records
                        )  # fmt: skip
                    self._reply(ExportLogsServiceResponse().SerializeToString())
                    return
                request = ExportTraceServiceRequest.FromString(body)
                with receiver.lock:
                    for rs in request.resource_spans:
                        res = {a.key: a.value.string_value for a in rs.resource.attributes}
                        for ss in rs.scope_spans:
                            for s in ss.spans:
                                receiver.spans.append(
                                    Received(
                                        res.get("service.name", ""),
                                        s.name,
                                        s.trace_id,
                                        s.span_id,
                                        s.parent_span_id,
                                        {a.key: value_of(a.value) for a in s.attributes},
                                    )
                                )
                self._reply(ExportTraceServiceResponse().SerializeToString())

            def _reply(self, reply: bytes) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"

    def named(self, name: str) -> list[Received]:
        with self.lock:
            return [s for s in self.spans if s.name == name]


def value_of(v: Any) -> Any:
    """The Python value of an OTLP AnyValue."""
    return getattr(v, v.WhichOneof("value")) if v.WhichOneof("value") else None


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    thread = threading.Thread(target=r.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield r
    finally:
        r.server.shutdown()
        r.server.server_close()
