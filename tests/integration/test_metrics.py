"""Prometheus metrics on both backends: ``GET /metrics`` read over real HTTP after a workload
with failures, retries and a backlog; zombie writes, recoveries and database outages counted;
the database-wide gauges exported by one process only; ``waypoint metrics``."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from tests.admin_http import admin_port, call, destroy_quickly, orphan
from tests.conftest import database_urls, requires_postgres
from tests.metrics_workload import BACKLOG, define_and_run, finish, parse, scrape, wait_for
from tests.proxy import TcpProxy
from waypoint import DBOS, Queue, SetWorkflowID
from waypoint._api.metrics import runtime_metrics
from waypoint._api.ops import fleet
from waypoint._api.ops.base import RUNTIME
from waypoint.cli.main import app
from waypoint.core.runtime import get_runtime
from waypoint.error import DBOSAwaitedWorkflowCancelledError
from waypoint.storage.protocol import NewWorkflow


@pytest.fixture
def config(db_url: str) -> dict[str, Any]:
    return {
        "name": "waypoint-test",
        "system_database_url": db_url,
        "run_admin_server": True,
        "admin_port": 0,
        "executor_id": "exec-m",
    }


@pytest.fixture
def dbos(config: dict[str, Any]) -> Iterator[type[DBOS]]:
    DBOS.destroy(destroy_registry=True)
    DBOS(config=config)  # type: ignore[arg-type]
    yield DBOS
    destroy_quickly()


def _name(samples: Any, metric: str, suffix: str) -> str:
    """The full (qualified) workflow or step name a label carries, by its last part."""
    label = "workflow" if metric.startswith("waypoint_workflow") else "step"
    for (n, labels), _ in samples.values.items():
        for k, v in labels:
            if n == metric and k == label and v.endswith(suffix):
                return str(v)
    raise AssertionError(f"no {metric} sample for {suffix}:\n{samples.text}")


def test_metrics_after_a_workload_with_failures_retries_and_a_backlog(
    dbos: type[DBOS], config: dict[str, Any]
) -> None:
    w = define_and_run()
    m = scrape()

    good = _name(m, "waypoint_workflows_total", "good")
    failing = _name(m, "waypoint_workflows_total", "failing")
    retried = _name(m, "waypoint_workflows_total", "retried")
    assert m.get("waypoint_workflows_total", workflow=good, status="SUCCESS") == 3
    assert m.get("waypoint_workflows_total", workflow=failing, status="ERROR") == 2
    assert m.get("waypoint_workflows_total", workflow=retried, status="SUCCESS") == 1
    assert m.get("waypoint_workflow_duration_seconds_count", workflow=good) == 3
    blocker = _name(m, "waypoint_workflows_started_total", "blocker")
    assert m.get("waypoint_workflows_running", workflow=blocker) == 1

    flaky = _name(m, "waypoint_step_attempts_total", "flaky")
    doomed = _name(m, "waypoint_step_attempts_total", "doomed")
    plain = _name(m, "waypoint_step_attempts_total", "plain")
    assert m.get("waypoint_step_attempts_total", step=flaky) == 3
    assert m.get("waypoint_step_retries_total", step=flaky) == 2
    assert m.get("waypoint_step_failures_total", step=flaky) in (None, 0)
    assert m.get("waypoint_step_attempts_total", step=doomed) == 4  # 2 workflows x 2 attempts
    assert m.get("waypoint_step_retries_total", step=doomed) == 2
    assert m.get("waypoint_step_failures_total", step=doomed) == 2
    assert m.get("waypoint_step_attempts_total", step=plain) == 6
    assert m.get("waypoint_step_duration_seconds_count", step=plain) == 6
    assert m.sum("waypoint_checkpoint_seconds_count") >= 6 + 1 + 2
    assert m.get("waypoint_queue_wait_seconds_count", queue="m-backlog") == 1

    # The database-wide gauges: this is the only (so the oldest) live executor.
    assert m.get("waypoint_database_gauges_exporter") == 1
    labels = {"queue": "m-backlog", "partition": ""}
    assert m.get("waypoint_queue_workflows", **labels, status="ENQUEUED") == BACKLOG - 1
    assert m.get("waypoint_queue_workflows", **labels, status="PENDING") == 1
    assert (m.get("waypoint_queue_oldest_enqueued_age_seconds", **labels) or -1) >= 0
    assert m.get("waypoint_pending_workflows", executor="exec-m") == 1
    assert m.get("waypoint_executors", state="alive") == 1
    assert m.get("waypoint_executors", state="silent") == 0

    # Bounded labels: no workflow ID is ever a label value.
    handles_ids = {h.workflow_id for h in w.handles}  # type: ignore[attr-defined]
    assert not (m.label_values() & (handles_ids | {"m-failing-0", "m-failing-1"}))

    # The process-less view prints the same database-wide gauges, and nothing of a process.
    out = CliRunner().invoke(app, ["metrics", "-s", config["system_database_url"]])
    assert out.exit_code == 0, out.output
    cli = parse(out.output)
    assert cli.get("waypoint_queue_workflows", **labels, status="ENQUEUED") == BACKLOG - 1
    assert cli.get("waypoint_pending_workflows", executor="exec-m") == 1
    assert cli.get("waypoint_executors", state="alive") == 1
    assert cli.get("waypoint_workflows_total", workflow=good, status="SUCCESS") is None

    finish(w)
    m = scrape()
    assert m.get("waypoint_workflows_total", workflow=blocker, status="SUCCESS") == BACKLOG
    assert m.get("waypoint_queue_workflows", **labels, status="ENQUEUED") == 0
    assert m.get("waypoint_queue_wait_seconds_count", queue="m-backlog") == BACKLOG
    assert m.get("waypoint_workflows_running", workflow=blocker) == 0


def _steal(url: str, workflow_id: str) -> None:
    """What a recovery elsewhere does to a running workflow: it changes hands."""
    sql = "UPDATE {t} SET owner_xid = 'another-execution' WHERE workflow_uuid = ?"
    if url.startswith("sqlite"):
        with sqlite3.connect(url.split("sqlite:///", 1)[1]) as conn:
            conn.execute(sql.format(t="workflow_status"), (workflow_id,))
    else:
        for each in database_urls(url):  # sharded: the shard that holds it
            with psycopg.connect(each, autocommit=True) as conn:
                conn.execute(
                    sql.format(t="dbos.workflow_status").replace("?", "%s"), (workflow_id,)
                )


def test_fenced_writes_and_recoveries_are_counted(dbos: type[DBOS], config: dict[str, Any]) -> None:
    entered, release = threading.Event(), threading.Event()

    @DBOS.step()
    def slow() -> str:
        entered.set()
        release.wait(30)
        return "late"

    @DBOS.workflow()
    def zombie() -> str:
        return slow()

    @DBOS.workflow()
    def quick() -> str:
        return "quick"

    DBOS.launch()
    with SetWorkflowID("zombie-m"):
        handle = DBOS.start_workflow(zombie)
    assert entered.wait(30)
    _steal(config["system_database_url"], "zombie-m")
    release.set()  # the late checkpoint is refused: a fenced write
    wait_for(lambda: (scrape().get("waypoint_fenced_writes_total") or 0) >= 1, "a fenced write")
    DBOS.cancel_workflow("zombie-m")  # (nobody else runs it here)
    with pytest.raises(DBOSAwaitedWorkflowCancelledError):
        handle.get_result()

    wfid = orphan(quick.__qualname__, "m-rec")
    assert RUNTIME.run(fleet.recover_executors(RUNTIME, ["gone-executor"])) == [wfid]
    assert DBOS.retrieve_workflow(wfid).get_result() == "quick"
    m = scrape()
    assert m.get("waypoint_fenced_writes_total") == 1
    assert m.get("waypoint_recovered_workflows_total") == 1
    zombie_name = _name(m, "waypoint_workflows_total", "zombie")
    # It ended without an outcome of its own (then was cancelled): never a SUCCESS here.
    assert m.sum("waypoint_workflows_total", workflow=zombie_name) == 1
    assert not m.get("waypoint_workflows_total", workflow=zombie_name, status="SUCCESS")


def test_only_the_oldest_live_executor_exports_the_database_gauges(
    dbos: type[DBOS], config: dict[str, Any]
) -> None:
    """A younger executor on the same database exports its own numbers only."""
    DBOS.launch()
    first = runtime_metrics(get_runtime())
    assert first is not None
    first.gauges.every = 0
    port = get_runtime().service("admin").port  # type: ignore[union-attr]
    # A second executor: another incarnation row, started later and heard from now.
    rt = get_runtime()
    from waypoint.storage.protocol import ExecutorRow

    rt.store.heartbeat(ExecutorRow("exec-young", "inc-young", rt.app_name, None, "h", 1))
    m = scrape(port)
    assert m.get("waypoint_database_gauges_exporter") == 1
    assert m.get("waypoint_executors", state="alive") == 2

    from waypoint._api.metrics import DatabaseGaugesCollector

    young = DatabaseGaugesCollector(rt, executor_id="exec-young", incarnation="inc-young", every=0)
    names = {f.name: f for f in young.collect()}
    assert set(names) == {"waypoint_database_gauges_exporter"}
    assert names["waypoint_database_gauges_exporter"].samples[0].value == 0


@requires_postgres
def test_database_retries_and_outage_seconds(pg_database: str) -> None:
    DBOS.reset_system_database(system_database_url=pg_database, truncate=True)
    base = psycopg.conninfo.conninfo_to_dict(pg_database)
    proxy = TcpProxy(str(base.get("host", "127.0.0.1")), int(base.get("port", 5432)))
    url = f"postgresql://postgres@127.0.0.1:{proxy.port}/{base['dbname']}"
    try:
        DBOS.destroy(destroy_registry=True)
        DBOS(
            config={  # type: ignore[arg-type]
                "name": "waypoint-test",
                "system_database_url": url,
                "run_admin_server": True,
                "admin_port": 0,
            }
        )

        @DBOS.step()
        def one(i: int) -> int:
            return i

        @DBOS.workflow()
        def wf(n: int) -> int:
            return sum(one(i) for i in range(n))

        DBOS.launch()
        assert wf(2) == 1
        before = scrape()
        assert (before.get("waypoint_database_retries_total") or 0) == 0
        proxy.cut()
        done: list[int] = []
        runner = threading.Thread(target=lambda: done.append(wf(5)))
        runner.start()
        retries = lambda: scrape().get("waypoint_database_retries_total") or 0  # noqa: E731
        wait_for(lambda: retries() >= 1, "a retried database call")
        assert scrape().get("waypoint_database_unavailable") == 1  # served during the outage
        proxy.restore()
        runner.join(60)
        assert done == [10]
        m = scrape()
        assert (m.get("waypoint_database_outages_total") or 0) >= 1
        assert (m.get("waypoint_database_outage_seconds_total") or 0) > 0
        assert m.get("waypoint_database_unavailable") == 0
    finally:
        destroy_quickly()
        proxy.close()


def test_metrics_needs_the_token_when_one_is_set(config: dict[str, Any]) -> None:
    DBOS.destroy(destroy_registry=True)
    DBOS(config={**config, "admin_token": "tok"})  # type: ignore[arg-type]
    try:
        DBOS.launch()
        assert call("GET", "/metrics").status == 401
        reply = call("GET", "/metrics", token="tok")
        assert reply.status == 200
        assert b"waypoint_database_gauges_exporter" in reply.body
    finally:
        destroy_quickly()


def test_queue_wait_counts_from_the_end_of_a_delay(dbos: type[DBOS]) -> None:
    """A delayed workflow waits in its queue from the end of its delay, not from its
    enqueueing: enqueued an hour ago with a delay that just ended, it waited seconds."""
    queue = Queue("m-delayed")

    @DBOS.workflow()
    def later() -> str:
        return "ran"

    DBOS.launch()
    rt = get_runtime()
    now = rt.now_ms()
    rt.store.init_workflow(
        NewWorkflow(
            workflow_id="m-delayed-1",
            status="DELAYED",
            name=later.__qualname__,
            class_name=None,
            config_name=None,
            inputs=rt.codec.encode_inputs((), {}, rt.codec.default),
            serialization=rt.codec.default.name(),
            owner_xid="",
            executor_id=None,
            application_version=rt.app_version,
            application_id=None,
            application_name=rt.app_name,
            created_at=now - 3_600_000,
            queue_name=queue.name,
            delay_until_epoch_ms=now,
        ),
        None,
    )
    assert DBOS.retrieve_workflow("m-delayed-1").get_result() == "ran"
    m = scrape()
    assert m.get("waypoint_queue_wait_seconds_count", queue="m-delayed") == 1
    # Under 15 minutes: an hour if counted from the enqueueing.
    assert m.get("waypoint_queue_wait_seconds_bucket", queue="m-delayed", le="900.0") == 1


EXECUTOR_PROCESS = """
import sys
from waypoint import DBOS
DBOS(config={"name": "waypoint-test", "system_database_url": sys.argv[1],
              "run_admin_server": True, "admin_port": 0, "executor_id": "exec-other"})
DBOS.launch()
from waypoint.core.runtime import get_runtime
from waypoint._api.metrics import runtime_metrics
runtime_metrics(get_runtime()).gauges.every = 0
print(get_runtime().service("admin").port, flush=True)
sys.stdin.read()  # until the test closes it
DBOS.destroy()
"""


def test_one_process_of_two_exports_the_database_gauges_and_hands_over(
    dbos: type[DBOS], config: dict[str, Any]
) -> None:
    """Two real executor processes on one database: only the older exports the gauges;
    when it retires, the younger one takes over."""
    DBOS.launch()
    metrics = runtime_metrics(get_runtime())
    assert metrics is not None
    metrics.gauges.every = 0
    mine = admin_port()
    other = subprocess.Popen(
        [sys.executable, "-c", EXECUTOR_PROCESS, config["system_database_url"]],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert other.stdout is not None and other.stdin is not None
        theirs = int(other.stdout.readline())
        wait_for(lambda: scrape(mine).get("waypoint_executors", state="alive") == 2, "2 alive")
        assert scrape(mine).get("waypoint_database_gauges_exporter") == 1
        younger = scrape(theirs)
        assert younger.get("waypoint_database_gauges_exporter") == 0
        assert younger.get("waypoint_executors", state="alive") is None  # not exported there
        destroy_quickly()  # this executor retires (its heartbeat row is deleted)
        wait_for(
            lambda: scrape(theirs).get("waypoint_database_gauges_exporter") == 1,
            "the younger executor to export",
        )
        assert scrape(theirs).get("waypoint_executors", state="alive") == 1
        other.stdin.close()
        assert other.wait(30) == 0
    finally:
        if other.poll() is None:
            other.kill()
            other.wait()
        for pipe in (other.stdin, other.stdout):
            if pipe is not None and not pipe.closed:
                pipe.close()
