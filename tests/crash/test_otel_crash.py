"""One trace across a client, a SIGKILLed worker and the worker that recovers its run: spans
exported over OTLP/HTTP to a receiver this test serves on loopback, decoded with
opentelemetry-proto, and checked for their trace and parents."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from tests.crash.harness import Proc
from tests.otlp_receiver import Receiver, receiver, value_of  # noqa: F401  (the fixture)
from waypoint import DBOSClient

APP = Path(__file__).with_name("otel_app.py")
REPO = APP.parents[2]


def spawn(procs: list[Proc], tmp: Path, db_url: str, endpoint: str, mode: str, *args: str) -> Proc:
    out, err = tmp / f"{mode}.stdout", tmp / f"{mode}.stderr"
    env = {"PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", "OTEL_BSP_SCHEDULE_DELAY": "20"}
    with open(out, "wb") as fo, open(err, "wb") as fe:
        popen = subprocess.Popen(
            [sys.executable, str(APP), db_url, endpoint, mode, str(tmp), *args],
            stdout=fo,
            stderr=fe,
            stdin=subprocess.DEVNULL,
            env={**_base_env(), **env},
        )
    proc = Proc(mode, popen, out, err, time.time())
    procs.append(proc)
    return proc


def _base_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("DBOS__", "OTEL_"))}


def wait_for(what: str, predicate: Any, procs: list[Proc]) -> Any:
    deadline = time.monotonic() + 60  # a guard against a hang, not a timed assertion
    while True:
        value = predicate()
        if value:
            return value
        for p in procs:
            if not p.alive() and p.popen.returncode != 0:
                raise AssertionError(f"{p.name} died waiting for {what}:\n{p.diagnostics()}")
        if time.monotonic() > deadline:
            diag = "\n".join(p.diagnostics() for p in procs)
            raise AssertionError(f"no {what}\n{diag}")
        time.sleep(0.02)


def test_one_trace_across_a_client_a_crash_and_a_recovery(
    crash_db_url: str,
    tmp_path: Path,
    receiver: Receiver,  # noqa: F811
) -> None:
    procs: list[Proc] = []
    try:
        first = spawn(procs, tmp_path, crash_db_url, receiver.url, "first")
        wait_for("launch", (tmp_path / "first-launched").exists, procs)

        # The client's own span, exported to the same receiver, is the trace's root.
        provider = TracerProvider(resource=Resource.create({"service.name": "client"}))
        provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=receiver.url)))
        client = DBOSClient(system_database_url=crash_db_url)
        try:
            with provider.get_tracer("test").start_as_current_span("client-enqueue") as root:
                handle = client.enqueue(
                    {
                        "queue_name": "otelq",
                        "workflow_name": "traced",
                        "otel_context": otel_context.get_current(),
                    },
                    10,
                )
        finally:
            client.destroy()
            provider.shutdown()
        wfid = handle.workflow_id

        wait_for("step two", (tmp_path / "in-step-two").exists, procs)
        wait_for("the first step's span", lambda: receiver.named("step_one"), procs)
        first.sigkill()

        second = spawn(procs, tmp_path, crash_db_url, receiver.url, "second", wfid)
        assert second.wait_exit(60) == {"result": 12}
    finally:
        for p in procs:
            p.reap()

    trace_id = root.get_span_context().trace_id.to_bytes(16, "big")
    root_id = root.get_span_context().span_id.to_bytes(8, "big")
    (client_span,) = receiver.named("client-enqueue")
    runs = receiver.named("traced")
    (one,) = receiver.named("step_one")
    (two,) = receiver.named("step_two")
    # The killed run's workflow span never ended, so it was never exported: one run span,
    # the recovered one's; both runs (their steps) are in the client's trace.
    (run,) = runs
    for span in (client_span, run, one, two):
        assert span.trace_id == trace_id, span.name
    assert run.parent_span_id == root_id
    assert run.service == one.service == "otel-crash"
    assert run.attributes["operationUUID"] == wfid
    assert run.attributes["queueName"] == "otelq"
    assert run.attributes["executorID"] == "otel-executor"
    assert two.parent_span_id == run.span_id
    # The first step ran in the killed process, under that run's (unexported) span.
    assert one.parent_span_id not in (b"", root_id, run.span_id)
    assert one.attributes["operationUUID"] == two.attributes["operationUUID"] == wfid

    # The recovered step's log record went to the logs endpoint, inside the step's span.
    (log,) = [r for r in receiver.logs if r.body.string_value == "step two runs"]
    assert log.trace_id == trace_id and log.span_id == two.span_id
    attrs = {a.key: value_of(a.value) for a in log.attributes}
    assert attrs["operationUUID"] == wfid and attrs["executorID"] == "otel-executor"
