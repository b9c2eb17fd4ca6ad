"""DBOS 2.31.1's side of the trace-carrier interop test (run with the interop venv's python).

python tests/interop/otel_client.py enqueue <db_url> <workflow_id> <trace_hex> <span_hex>
    DBOS's client enqueues ``traced(10)`` on ``otelq`` with ``otel_context`` naming that
    span (a remote parent), as an application instrumented with OpenTelemetry does.
python tests/interop/otel_client.py read <db_url> <workflow_id>
    reads the workflow's stored carrier the way DBOS's executor does when it runs it and
    prints the parent it would use: {"trace": hex, "span": hex} (or null).
"""

from __future__ import annotations

import json
import sys

from dbos import DBOSClient
from dbos._context import extract_trace_context, otel_carrier_from_attributes
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

MODE, DB_URL, WORKFLOW_ID = sys.argv[1:4]
client = DBOSClient(system_database_url=DB_URL)
try:
    if MODE == "enqueue":
        trace_id, span_id = int(sys.argv[4], 16), int(sys.argv[5], 16)
        parent = SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(1))
        context = trace.set_span_in_context(NonRecordingSpan(parent))
        options = {"queue_name": "otelq", "workflow_name": "traced", "workflow_id": WORKFLOW_ID}
        client.enqueue({**options, "otel_context": context}, 10)  # type: ignore[typeddict-unknown-key]
        print(json.dumps({"enqueued": WORKFLOW_ID}))
    elif MODE == "read":
        attributes = client.retrieve_workflow(WORKFLOW_ID).get_status().attributes
        extracted = extract_trace_context(otel_carrier_from_attributes(attributes) or {})
        if extracted is None:
            print(json.dumps(None))
        else:
            ctx = trace.get_current_span(extracted).get_span_context()
            print(json.dumps({"trace": f"{ctx.trace_id:032x}", "span": f"{ctx.span_id:016x}"}))
    else:
        raise SystemExit(f"unknown mode {MODE!r}")
finally:
    client.destroy()
