"""Trace carriers across implementations: a workflow DBOS 2.31.1's client enqueued with an
``otel_context`` runs on Waypoint under that trace (its span exported over OTLP/HTTP to a
receiver on loopback), and the carrier Waypoint's client stores is the parent DBOS's executor
would read from it."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import pytest
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context

from tests.crash.harness import Proc
from tests.crash.test_otel_crash import spawn, wait_for
from tests.otlp_receiver import Receiver, receiver  # noqa: F401  (the fixture)
from waypoint import DBOSClient

DBOS_SIDE = Path(__file__).with_name("otel_client.py")


@pytest.fixture(scope="session")
def dbos_python(dbos_venv: Path) -> str:
    """The interop venv's python, with the OpenTelemetry API DBOS's carrier code imports."""
    python = str(dbos_venv / "python")
    if subprocess.run([python, "-c", "import opentelemetry.trace"]).returncode != 0:
        subprocess.run(
            [python, "-m", "pip", "install", "-q", "--disable-pip-version-check",
             "opentelemetry-api"],
            check=True,
        )  # fmt: skip
    return python


def dbos_side(python: str, *args: str) -> object:
    done = subprocess.run(
        [python, str(DBOS_SIDE), *args], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_trace_carriers_cross_between_dbos_and_waypoint(
    dbos_python: str,
    crash_db_url: str,
    tmp_path: Path,
    receiver: Receiver,  # noqa: F811
) -> None:
    trace_hex, span_hex = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    wfid = f"from-dbos-{uuid.uuid4().hex[:8]}"
    procs: list[Proc] = []
    try:
        worker = spawn(procs, tmp_path, crash_db_url, receiver.url, "second", wfid)
        wait_for("launch", (tmp_path / "second-launched").exists, procs)
        assert dbos_side(dbos_python, "enqueue", crash_db_url, wfid, trace_hex, span_hex) == {
            "enqueued": wfid
        }
        assert worker.wait_exit(60) == {"result": 12}
    finally:
        for p in procs:
            p.reap()
    (run,) = receiver.named("traced")
    assert run.trace_id.hex() == trace_hex and run.parent_span_id.hex() == span_hex
    assert run.attributes["operationUUID"] == wfid
    (step,) = receiver.named("step_two")
    assert step.trace_id.hex() == trace_hex and step.parent_span_id == run.span_id

    # The other way: what Waypoint's client stores, DBOS's executor reads as the parent.
    parent = SpanContext(int(trace_hex, 16), int(span_hex, 16), True, TraceFlags(1))
    client = DBOSClient(system_database_url=crash_db_url)
    try:
        handle = client.enqueue(
            {
                "queue_name": "otelq",
                "workflow_name": "traced",
                "otel_context": set_span_in_context(NonRecordingSpan(parent)),
            },
            1,
        )
    finally:
        client.destroy()
    read = dbos_side(dbos_python, "read", crash_db_url, handle.workflow_id)
    assert read == {"trace": trace_hex, "span": span_hex}
