#!/usr/bin/env python3
"""Admin API request latency: one application on SQLite with the admin server on, and
sequential requests (one connection each, as DBOS's clients make them) to three endpoints.

    .venv/bin/python benchmarks/admin_latency.py [--requests 500] [--parallel 8]

Prints the median and 99th percentile per endpoint and the process CPU time per request
(client and server together: the client's share is the same for every server, and CPU time,
unlike latency, does not depend on how busy the rest of the machine is), then the
throughput of ``--parallel`` client threads on the health check. Used to compare the
http.server implementation with the uvicorn/Starlette one (numbers in benchmarks/RESULTS.md).
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import tempfile
import threading
import time

from waypoint import DBOS, SetWorkflowID


def request(port: int, method: str, path: str, body: bytes | None = None) -> float:
    start = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request(method, path, body=body)
    resp = conn.getresponse()
    resp.read()
    conn.close()
    assert resp.status < 300, (path, resp.status)
    return (time.perf_counter() - start) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--parallel", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config = {
            "name": "admin-latency",
            "system_database_url": f"sqlite:///{tmp}/sys.db",
            "run_admin_server": True,
            "admin_port": 0,
        }
        DBOS(config=config)  # type: ignore[arg-type]

        @DBOS.workflow()
        def hello(x: int) -> int:
            return x

        DBOS.launch()
        for i in range(20):
            with SetWorkflowID(f"bench-{i}"):
                hello(i)
        from waypoint.core.runtime import get_runtime

        port = int(get_runtime().service("admin").port)
        cases = [
            ("GET /dbos-healthz", "GET", "/dbos-healthz", None),
            ("GET /workflows/{id}", "GET", "/workflows/bench-3", None),
            ("POST /workflows (20 rows)", "POST", "/workflows", json.dumps({}).encode()),
        ]
        for label, method, path, body in cases:
            for _ in range(20):
                request(port, method, path, body)  # warm up
            cpu = time.process_time()
            times = sorted(request(port, method, path, body) for _ in range(args.requests))
            cpu_ms = (time.process_time() - cpu) * 1000 / args.requests
            p99 = times[int(len(times) * 0.99) - 1]
            print(
                f"{label:28s} median {statistics.median(times):6.2f} ms  p99 {p99:6.2f} ms  "
                f"CPU {cpu_ms:5.2f} ms/request"
            )
        done = 0
        lock = threading.Lock()
        stop = time.perf_counter() + 3.0

        def worker() -> None:
            nonlocal done
            while time.perf_counter() < stop:
                request(port, "GET", "/dbos-healthz")
                with lock:
                    done += 1

        threads = [threading.Thread(target=worker) for _ in range(args.parallel)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        print(f"health checks, {args.parallel} clients: {done / 3.0:.0f} requests/s")
        DBOS.destroy()


if __name__ == "__main__":
    main()
