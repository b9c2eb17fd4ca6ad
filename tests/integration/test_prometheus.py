"""A real Prometheus server scrapes the admin server's ``/metrics`` on loopback, and the
values of a workload with failures, retries and a backlog are read back through its HTTP
query API (``/api/v1/query``). Also: the example alert rules of the documentation load in
``promtool`` and fire on the situations they name.

Needs the ``prometheus`` binaries (Debian package ``prometheus``; ``scripts/test.sh``
installs it when it can); skipped with the reason otherwise."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import pytest

from tests.admin_http import admin_port, destroy_quickly
from tests.metrics_workload import BACKLOG, define_and_run, finish, wait_for
from waypoint import DBOS

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "docs" / "operations" / "prometheus-alerts.yml"
DASHBOARD = ROOT / "docs" / "operations" / "grafana-dashboard.json"
PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
needs_prometheus = pytest.mark.skipif(
    PROMETHEUS is None,
    reason="the prometheus binary is not installed (Debian package prometheus; "
    "scripts/test.sh installs it when run as root with apt-get)",
)
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed (Debian package prometheus)"
)


@pytest.fixture
def config(db_url: str) -> dict[str, Any]:
    return {
        "name": "waypoint-test",
        "system_database_url": db_url,
        "run_admin_server": True,
        "admin_port": 0,
        "executor_id": "exec-p",
    }


@pytest.fixture
def dbos(config: dict[str, Any]) -> Iterator[type[DBOS]]:
    DBOS.destroy(destroy_registry=True)
    DBOS(config=config)  # type: ignore[arg-type]
    yield DBOS
    destroy_quickly()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Prometheus:
    """A Prometheus server of the test's own, scraping one target every 200 ms."""

    def __init__(self, tmp: Path, target_port: int) -> None:
        self.port = _free_port()
        config = tmp / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 200ms\n  scrape_timeout: 200ms\n"
            "scrape_configs:\n  - job_name: waypoint\n    metrics_path: /metrics\n"
            f"    static_configs:\n      - targets: ['127.0.0.1:{target_port}']\n"
        )
        self.log = (tmp / "prometheus.log").open("wb")
        assert PROMETHEUS is not None
        self.proc = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def results(self, promql: str) -> Optional[list[Any]]:
        """The series of an instant query (None: the server is not ready yet)."""
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode(
            {"query": promql}
        )
        try:
            with urllib.request.urlopen(url, timeout=5) as reply:
                body = json.load(reply)
        except urllib.error.HTTPError as exc:
            if exc.code == 503:
                return None  # starting up (its storage is not ready yet)
            raise AssertionError(f"{promql}: {exc.read().decode()}") from exc
        except OSError:
            return None
        assert body["status"] == "success", body
        return list(body["data"]["result"])

    def query(self, promql: str) -> Optional[float]:
        """The value of an instant query that yields one series (None: no series yet)."""
        result = self.results(promql)
        if not result:
            return None
        assert len(result) == 1, result
        return float(result[0]["value"][1])

    def settles_at(self, promql: str, expected: float) -> None:
        wait_for(lambda: self.query(promql) == expected, f"{promql} == {expected}", timeout=60)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@needs_prometheus
def test_prometheus_scrapes_the_workload(dbos: type[DBOS], tmp_path: Path) -> None:
    w = define_and_run("p")
    prom = Prometheus(tmp_path, admin_port())
    try:
        prom.settles_at('up{job="waypoint"}', 1)
        q = 'waypoint_queue_workflows{queue="p-backlog",partition="",status="%s"}'
        prom.settles_at(q % "ENQUEUED", BACKLOG - 1)
        prom.settles_at(q % "PENDING", 1)
        prom.settles_at('sum(waypoint_workflows_total{status="ERROR"})', 2)
        prom.settles_at('sum(waypoint_workflows_total{status="SUCCESS"})', 4)
        prom.settles_at("sum(waypoint_step_retries_total)", 2 + 2)
        prom.settles_at("sum(waypoint_step_failures_total)", 2)
        prom.settles_at('waypoint_pending_workflows{executor="exec-p"}', 1)
        prom.settles_at('waypoint_executors{state="alive"}', 1)
        prom.settles_at("waypoint_database_gauges_exporter", 1)
        assert (
            prom.query('waypoint_queue_oldest_enqueued_age_seconds{queue="p-backlog"}') or -1
        ) >= 0

        # Every query of the example dashboard is valid PromQL.
        for panel in json.loads(DASHBOARD.read_text())["panels"]:
            for target in panel["targets"]:
                assert prom.results(target["expr"]) is not None, target["expr"]

        finish(w)
        prom.settles_at(q % "ENQUEUED", 0)
        prom.settles_at('sum(waypoint_workflows_total{status="SUCCESS"})', 4 + BACKLOG)
        prom.settles_at('sum(waypoint_queue_wait_seconds_count{queue="p-backlog"})', BACKLOG)
    finally:
        prom.stop()


@needs_promtool
def test_the_example_alert_rules_load_and_fire(tmp_path: Path) -> None:
    assert PROMTOOL is not None
    checked = subprocess.run(
        [PROMTOOL, "check", "rules", str(ALERTS)], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tests = tmp_path / "alerts_test.yml"
    tests.write_text(ALERT_TESTS.replace("RULES", str(ALERTS)))
    ran = subprocess.run([PROMTOOL, "test", "rules", str(tests)], capture_output=True, text=True)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert json.loads(DASHBOARD.read_text())["panels"]


# Each alert fires on the situation it names (promtool's rule unit tests).
ALERT_TESTS = """
rule_files: [RULES]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'waypoint_queue_workflows{queue="q",partition="",status="ENQUEUED"}'
        values: '5+5x40'
      - series: 'waypoint_queue_oldest_enqueued_age_seconds{queue="q",partition=""}'
        values: '0+60x40'
      - series: 'waypoint_executors{state="silent"}'
        values: '1x40'
      - series: 'waypoint_workflows_total{workflow="w",status="ERROR"}'
        values: '0+1x40'
      - series: 'waypoint_database_unavailable{instance="a"}'
        values: '1x40'
    alert_rule_test:
      - eval_time: 30m
        alertname: WaypointDatabaseUnavailable
        exp_alerts:
          - exp_labels: {severity: critical}
            exp_annotations: {summary: "The system database has been unavailable for over a minute"}
      - eval_time: 30m
        alertname: WaypointQueueStuck
        exp_alerts:
          - exp_labels: {severity: critical, queue: q}
            exp_annotations: {summary: "Queue q has had work waiting for over 10 minutes"}
      - eval_time: 30m
        alertname: WaypointQueueBacklogGrowing
        exp_alerts:
          - exp_labels: {severity: warning, queue: q}
            exp_annotations: {summary: "The backlog of queue q keeps growing"}
      - eval_time: 30m
        alertname: WaypointExecutorSilent
        exp_alerts:
          - exp_labels: {severity: warning}
            exp_annotations: {summary: "1 executor(s) have gone silent"}
      - eval_time: 30m
        alertname: WaypointWorkflowsFailing
        exp_alerts:
          - exp_labels: {severity: warning, workflow: w}
            exp_annotations: {summary: "Workflow w ended in ERROR"}
  - interval: 1m
    input_series:
      - series: 'waypoint_queue_workflows{queue="q",partition="",status="ENQUEUED"}'
        values: '5x40'
      - series: 'waypoint_queue_oldest_enqueued_age_seconds{queue="q",partition=""}'
        values: '10x40'
      - series: 'waypoint_executors{state="silent"}'
        values: '0x40'
      - series: 'waypoint_workflows_total{workflow="w",status="ERROR"}'
        values: '3x40'
      - series: 'waypoint_database_unavailable{instance="a"}'
        values: '0x40'
    alert_rule_test:
      - {eval_time: 30m, alertname: WaypointQueueStuck, exp_alerts: []}
      - {eval_time: 30m, alertname: WaypointQueueBacklogGrowing, exp_alerts: []}
      - {eval_time: 30m, alertname: WaypointExecutorSilent, exp_alerts: []}
      - {eval_time: 30m, alertname: WaypointWorkflowsFailing, exp_alerts: []}
      - {eval_time: 30m, alertname: WaypointDatabaseUnavailable, exp_alerts: []}
"""
