"""A worker exporting its traces over OTLP/HTTP, for tests/crash/test_otel_crash.py.

Usage: python otel_app.py DB_URL OTLP_TRACES_URL MODE WORKDIR [WORKFLOW_ID]
(logs go to the same receiver's /v1/logs)

``first``: launches and runs what it dequeues; the workflow's second step writes
``in-step-two`` into WORKDIR and blocks there until the process is SIGKILLed.
``second``: launches with the same executor ID (so it recovers the killed run), waits for
WORKFLOW_ID (recovered, or enqueued later) and its result, flushes its spans and prints
``{"result": ...}``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from waypoint import DBOS, Queue

db_url, endpoint, mode, workdir = sys.argv[1:5]
work = Path(workdir)

DBOS(
    config={
        "name": "otel-crash",
        "system_database_url": db_url,
        "enable_otlp": True,
        "otlp_traces_endpoints": [endpoint],
        "otlp_logs_endpoints": [endpoint.replace("/v1/traces", "/v1/logs")],
        "executor_id": "otel-executor",
        "application_version": "otel-v1",
    }
)
queue = Queue("otelq")


@DBOS.step()
def step_one() -> int:
    return 1


@DBOS.step()
def step_two(x: int) -> int:
    if mode == "first":
        (work / "in-step-two").write_text(str(os.getpid()))
        time.sleep(600)  # SIGKILLed here
    DBOS.logger.info("step two runs")
    return x + 1


@DBOS.workflow()
def traced(n: int) -> int:
    return step_two(step_one() + n)


DBOS.launch()
(work / f"{mode}-launched").write_text(str(os.getpid()))
if mode == "second":
    from opentelemetry import trace
    from opentelemetry._logs import get_logger_provider

    while DBOS.get_workflow_status(sys.argv[5]) is None:  # it may be enqueued after launch
        time.sleep(0.05)
    result = DBOS.retrieve_workflow(sys.argv[5]).get_result()
    trace.get_tracer_provider().force_flush()  # type: ignore[attr-defined]
    get_logger_provider().force_flush()  # type: ignore[attr-defined]
    print(json.dumps({"result": result}))
    DBOS.destroy()
else:
    time.sleep(600)
