"""The installed ``waypoint`` command (spec §8), run as a subprocess against databases the
tests prepare: migrate/reset, workflow list/get/steps/cancel/resume/fork, queue list, gc;
where the URL comes from; and, on PostgreSQL, ``migrate --app-role`` with real roles.

Tests named test_bug_* pin bugs found (and fixed) while writing them.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any, Optional
from zoneinfo import ZoneInfo

import psycopg
import pytest
from psycopg import sql

from tests.conftest import BACKENDS, pg_url, pg_url_as, requires_postgres
from waypoint import DBOS, Queue, SetWorkflowID
from waypoint.__version__ import VERSION
from waypoint.error import DBOSInitializationError
from waypoint.storage import migrations

WAYPOINT = str(Path(sys.executable).with_name("waypoint"))

one_backend = pytest.mark.parametrize("backend", BACKENDS[:1])
# Every CLI call is a fresh Python process: seconds each on a loaded machine, and a test here
# makes up to twenty of them. Each call has its own bound (wp's timeout); this is the hang
# guard for the whole test, not a speed requirement (the default 120 s was exceeded under
# load in the PostgreSQL matrix, by a test that takes under a minute on a quiet machine).
pytestmark = pytest.mark.timeout(600)


def wp(
    *args: str,
    cwd: Optional[Path] = None,
    env: Optional[dict[str, str]] = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """Run the installed command; DBOS_SYSTEM_DATABASE_URL only if the test sets it."""
    full_env = {k: v for k, v in os.environ.items() if k != "DBOS_SYSTEM_DATABASE_URL"}
    full_env.update({"COLUMNS": "250", "NO_COLOR": "1", "TERM": "dumb"})
    full_env.update(env or {})
    return subprocess.run(
        [WAYPOINT, *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, (proc.args, proc.stdout[-2000:], proc.stderr[-2000:])
    return proc.stdout


def fails(proc: subprocess.CompletedProcess[str], *needles: str) -> str:
    """Exit code 1, a message containing each needle, and no Python traceback."""
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, (proc.args, proc.returncode, out[-2000:])
    for needle in needles:
        assert needle in " ".join(out.split()), (needle, out[-2000:])
    assert "Traceback" not in out and "╭" not in out, out[-2000:]
    return out


def as_json(proc: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(ok(proc))


def wait_status(workflow_id: str, wanted: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    status = None
    while time.monotonic() < deadline:
        st = DBOS.get_workflow_status(workflow_id)
        status = st.status if st is not None else None
        if status == wanted:
            return
        time.sleep(0.02)
    raise AssertionError(f"{workflow_id} is {status}, expected {wanted}")


def pg_admin() -> psycopg.Connection[Any]:
    return psycopg.connect(pg_url("postgres"), autocommit=True, connect_timeout=5)


def drop_database(name: str) -> None:
    with pg_admin() as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def pg_database_exists(name: str) -> bool:
    with pg_admin() as conn:
        return (
            conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            is not None
        )


@pytest.fixture
def fresh_url(backend: str, tmp_path: Path) -> Iterator[str]:
    """The URL of a system database that does not exist yet."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path}/fresh-{uuid.uuid4().hex[:6]}.sqlite"
        return
    name = f"wp_cli_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    try:
        yield pg_url(name)
    finally:
        drop_database(name)


def schema_version(url: str) -> int:
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            return int(conn.execute("SELECT max(version) FROM waypoint_migrations").fetchone()[0])
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT max(version) FROM dbos.waypoint_migrations").fetchone()
        assert row is not None
        return int(row[0])


# -- no database -------------------------------------------------------------------------------


def test_version() -> None:
    out = ok(wp("version"))
    assert out.strip() == f"Waypoint CLI version: {VERSION}"


def test_where_the_url_comes_from(tmp_path: Path) -> None:
    """-s, then DBOS_SYSTEM_DATABASE_URL, then dbos-config.yaml (its URL, else its name);
    with none of them every database command exits 1 and says what to do. (Backend
    specific runs of -s, the variable and the file are in test_workflow_and_queue_commands.)"""
    bare = tmp_path / "bare"
    useless = tmp_path / "useless"
    named = tmp_path / "named"
    for d in (bare, useless, named):
        d.mkdir()
    (useless / "dbos-config.yaml").write_text("language: python\n")
    (named / "dbos-config.yaml").write_text("name: cli-app\nlanguage: python\n")
    calls: list[tuple[list[str], Path]] = [
        (["workflow", "list"], bare),
        (["workflow", "get", "x"], bare),
        (["queue", "list"], bare),
        (["migrate"], bare),
        (["gc", "--cutoff-epoch-ms", "1"], bare),
        (["reset", "-y"], bare),
        (["workflow", "list"], useless),
    ]
    with ThreadPoolExecutor(4) as pool:
        procs = list(pool.map(lambda c: wp(*c[0], cwd=c[1]), calls))
    for proc in procs:
        fails(proc, "No system database URL", "DBOS_SYSTEM_DATABASE_URL")
    assert list(bare.iterdir()) == []  # nothing was created on the way

    out = ok(wp("migrate", cwd=named))  # sqlite:///<name>.sqlite in the working directory
    assert "cli_app.sqlite" in out
    assert (named / "cli_app.sqlite").exists()
    assert as_json(wp("workflow", "list", "--json", cwd=named)) == []


# -- migrate and reset ----------------------------------------------------------------------------


def test_migrate_fresh_database_is_idempotent_and_reset_drops_it(
    fresh_url: str, backend: str
) -> None:
    latest = migrations.latest_version("sqlite" if backend == "sqlite" else "postgresql")
    out = ok(wp("migrate", "-s", fresh_url))
    assert "up to date" in out
    assert schema_version(fresh_url) == latest
    ok(wp("migrate", "-s", fresh_url))  # again: nothing to do, no error
    assert schema_version(fresh_url) == latest
    assert as_json(wp("workflow", "list", "-s", fresh_url, "--json")) == []

    assert "dropped" in ok(wp("reset", "-y", "-s", fresh_url))
    if backend == "sqlite":
        assert not Path(fresh_url.removeprefix("sqlite:///")).exists()
    else:
        assert not pg_database_exists(fresh_url.rsplit("/", 1)[1])
    if backend == BACKENDS[0]:
        ok(wp("reset", "--yes", "-s", fresh_url))  # dropping what is gone is fine
        # without -y it asks, and "no" (here: no input at all) keeps the database
        ok(wp("migrate", "-s", fresh_url))
        assert wp("reset", "-s", fresh_url).returncode == 1
        assert schema_version(fresh_url) == latest


# -- workflow and queue commands ---------------------------------------------------------------


def test_workflow_and_queue_commands(
    dbos: type[DBOS], db_url: str, backend: str, tmp_path: Path
) -> None:
    gate = threading.Event()
    q = Queue("cli-q", worker_concurrency=1)

    @DBOS.step()
    def double(x: int) -> int:
        return 2 * x

    @DBOS.workflow()
    def calc(x: int) -> int:
        return double(x) + double(x + 1)

    @DBOS.workflow()
    def boom() -> None:
        raise ValueError("kaboom")

    @DBOS.workflow()
    def gated(tag: str) -> str:
        gate.wait(600)  # released by the test; a loaded machine runs the CLI slowly
        return tag

    @DBOS.workflow()
    def waiter() -> Any:
        return DBOS.recv("go", timeout_seconds=600)

    DBOS.launch()
    for i in range(3):
        with SetWorkflowID(f"cli-a-{i}"):
            calc(i)
        time.sleep(0.003)
    with SetWorkflowID("cli-err"), pytest.raises(ValueError):
        boom()
    with SetWorkflowID("cli-q-1"):
        q.enqueue(gated, "one")
    wait_status("cli-q-1", "PENDING")
    time.sleep(0.003)
    with SetWorkflowID("cli-q-2"):
        q.enqueue(gated, "two")
    time.sleep(0.003)
    with SetWorkflowID("cli-wait"):
        waiting = DBOS.start_workflow(waiter)
    wait_status("cli-wait", "PENDING")
    calc_name = DBOS.get_workflow_status("cli-a-0").name  # type: ignore[union-attr]
    everything = ["cli-a-0", "cli-a-1", "cli-a-2", "cli-err", "cli-q-1", "cli-q-2", "cli-wait"]

    config_dir = tmp_path / "project"
    config_dir.mkdir()
    (config_dir / "dbos-config.yaml").write_text(
        f"name: cli-test\nlanguage: python\nsystem_database_url: '{db_url}'\n"
    )
    s = ["-s", db_url]
    bogus = {"DBOS_SYSTEM_DATABASE_URL": f"sqlite:///{tmp_path}/missing/dir/x.sqlite"}
    read_only: dict[str, Callable[[], subprocess.CompletedProcess[str]]] = {
        "list": lambda: wp("workflow", "list", *s, "--json"),
        "list env": lambda: wp(
            "workflow", "list", "-l", "50", env={"DBOS_SYSTEM_DATABASE_URL": db_url}
        ),
        "list status": lambda: wp("workflow", "list", *s, "--status", "ERROR", "--json"),
        "list name": lambda: wp("workflow", "list", *s, "--name", calc_name, "--json"),
        "list limit": lambda: wp("workflow", "list", *s, "--limit", "2", "--sort-desc", "--json"),
        "get config": lambda: wp("workflow", "get", "cli-a-1", "--json", cwd=config_dir),
        "steps": lambda: wp("workflow", "steps", "cli-a-1", *s, "--json"),
        "queue list": lambda: wp("queue", "list", *s, "--json"),
        "queue list status": lambda: wp("queue", "list", *s, "-S", "ENQUEUED", "--json"),
    }
    first = backend == BACKENDS[0]
    if first:  # what does not depend on the backend is checked once
        read_only.update(
            {
                "list -s over env": lambda: wp("workflow", "list", *s, "--json", env=bogus),
                "list offset": lambda: wp("workflow", "list", *s, "-l", "2", "-o", "1", "--json"),
                "get missing": lambda: wp("workflow", "get", "cli-nope", *s, "--json"),
                "queue list name": lambda: wp("queue", "list", *s, "-q", "other", "--json"),
                "list bad status": lambda: wp("workflow", "list", *s, "--status", "FOO"),
                "get table": lambda: wp("workflow", "get", "cli-err", *s),
                "steps table": lambda: wp("workflow", "steps", "cli-a-2", *s),
                "cancel missing": lambda: wp("workflow", "cancel", "cli-nope", *s),
                "resume missing": lambda: wp("workflow", "resume", "cli-nope", *s),
                "fork missing": lambda: wp("workflow", "fork", "cli-nope", *s),
            }
        )
    with ThreadPoolExecutor(4) as pool:
        futures = {name: pool.submit(fn) for name, fn in read_only.items()}
        r = {name: f.result() for name, f in futures.items()}

    listed = as_json(r["list"])
    assert [w["workflow_id"] for w in listed] == everything
    assert {"workflow_id", "status", "name", "queue_name", "created_at"} <= set(listed[0])
    assert listed[0]["status"] == "SUCCESS" and listed[0]["name"] == calc_name
    table = ok(r["list env"])
    assert "ID" in table and "Status" in table
    for wid in everything:
        assert wid in table
    assert "SUCCESS" in table and "ERROR" in table and "ENQUEUED" in table
    assert [w["workflow_id"] for w in as_json(r["list status"])] == ["cli-err"]
    assert [w["workflow_id"] for w in as_json(r["list name"])] == everything[:3]
    assert [w["workflow_id"] for w in as_json(r["list limit"])] == ["cli-wait", "cli-q-2"]

    got = as_json(r["get config"])
    assert got["workflow_id"] == "cli-a-1" and got["status"] == "SUCCESS"
    assert got["output"] == 6

    steps = as_json(r["steps"])
    assert [(st["function_id"], st["output"]) for st in steps] == [(1, 2), (2, 4)]
    assert all(st["function_name"].endswith("double") for st in steps)

    assert [w["workflow_id"] for w in as_json(r["queue list"])] == ["cli-q-1", "cli-q-2"]
    assert [w["workflow_id"] for w in as_json(r["queue list status"])] == ["cli-q-2"]
    if first:
        assert [w["workflow_id"] for w in as_json(r["list -s over env"])] == everything
        assert [w["workflow_id"] for w in as_json(r["list offset"])] == everything[1:3]
        fails(r["get missing"], "cli-nope", "does not exist")
        assert as_json(r["queue list name"]) == []
        fails(r["list bad status"], "FOO")
        table = ok(r["get table"])
        assert "cli-err" in table and "ERROR" in table and "kaboom" in table
        assert "double" in ok(r["steps table"])
        for name in ("cancel missing", "resume missing", "fork missing"):
            fails(r[name], "cli-nope")

    # state-changing commands, one at a time
    assert "Cancelled cli-wait" in ok(wp("workflow", "cancel", "cli-wait", *s))
    wait_status("cli-wait", "CANCELLED")
    assert "Resumed cli-wait" in ok(wp("workflow", "resume", "cli-wait", *s))
    DBOS.send("cli-wait", "went", "go")
    assert waiting.get_result(polling_interval_sec=0.05) == "went"

    forked = as_json(
        wp("workflow", "fork", "cli-a-1", "--step", "2", "-f", "cli-fork", *s, "--json")
    )
    assert forked == {"workflow_id": "cli-fork"}
    assert DBOS.retrieve_workflow("cli-fork").get_result(polling_interval_sec=0.05) == 6
    assert DBOS.get_workflow_status("cli-fork").forked_from == "cli-a-1"  # type: ignore[union-attr]
    if first:
        out = ok(wp("workflow", "fork", "cli-a-0", *s))  # the table form: a generated ID
        assert out.startswith("Forked as ")
        new_id = out.split()[-1].rstrip(".")
        assert DBOS.retrieve_workflow(new_id).get_result(polling_interval_sec=0.05) == 2
    else:
        DBOS.fork_workflow("cli-a-0", 0).get_result(polling_interval_sec=0.05)

    gate.set()
    for wid in ("cli-q-1", "cli-q-2"):
        wait_status(wid, "SUCCESS")

    # gc: finished workflows created before the cutoff go, a PENDING one stays
    with SetWorkflowID("cli-live"):
        DBOS.start_workflow(waiter)
    wait_status("cli-live", "PENDING")
    cutoff = str(int(time.time() * 1000) + 60_000)
    if first:
        fails(wp("gc", *s), "--cutoff-epoch-ms")
    deleted = as_json(wp("gc", *s, "--cutoff-epoch-ms", cutoff, "--json"))
    assert deleted == {"deleted": len(everything) + 2}
    assert [w.workflow_id for w in DBOS.list_workflows()] == ["cli-live"]
    if first:
        assert "Deleted 0 workflows" in ok(wp("gc", *s, "--rows-threshold", "1"))
    DBOS.cancel_workflow("cli-live")


# -- PostgreSQL: an application role that cannot run DDL ------------------------------------------


@pytest.fixture
def app_role() -> Iterator[tuple[str, list[str]]]:
    """A LOGIN role without CREATE on any database, and a list the test fills with the
    databases it creates; all dropped afterwards."""
    role = f"wp_app_{os.getpid()}_{uuid.uuid4().hex[:4]}"
    databases: list[str] = []
    with pg_admin() as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    try:
        yield role, databases
    finally:
        DBOS.destroy(destroy_registry=True)
        for name in databases:
            drop_database(name)
        with pg_admin() as conn:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def launch_as(role: str, database: str, *, run_migrations: bool = False) -> Any:
    """Launch an app as ``role``; returns (workflow, queue) to run."""
    DBOS.destroy(destroy_registry=True)
    DBOS(
        config={
            "name": "role-app",
            "system_database_url": pg_url_as(role, database),
            "run_migrations": run_migrations,
        }
    )

    @DBOS.step()
    def add_one(x: int) -> int:
        return x + 1

    @DBOS.workflow()
    def wf(x: int) -> int:
        return add_one(x) * 2

    q = Queue("role-q")
    DBOS.launch()
    return wf, q


@requires_postgres
def test_migrate_with_app_role(app_role: tuple[str, list[str]]) -> None:
    role, databases = app_role
    base = f"wp_role_{os.getpid()}_{uuid.uuid4().hex[:4]}"
    granted, ungranted, empty = f"{base}_g", f"{base}_u", f"{base}_e"
    databases.extend([granted, ungranted, empty])

    ok(wp("migrate", "-s", pg_url(granted), "--app-role", role))  # creates the database
    ok(wp("migrate", "-s", pg_url(ungranted)))
    with pg_admin() as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(empty)))
        for name in (granted, ungranted, empty):
            row = conn.execute(
                "SELECT has_database_privilege(%s, %s, 'CREATE')", (role, name)
            ).fetchone()
            assert row == (False,), name  # the role cannot create schemas

    # Without the migrate step the role cannot launch, and says why.
    with pytest.raises(DBOSInitializationError, match="waypoint migrate"):
        launch_as(role, empty)
    with pytest.raises(DBOSInitializationError, match="permission denied"):
        launch_as(role, empty, run_migrations=True)
    with pytest.raises(DBOSInitializationError, match="permission denied"):
        launch_as(role, ungranted)  # migrated, but nothing granted to the role

    # After `migrate --app-role` it runs workflows, steps and queues without any DDL.
    wf, q = launch_as(role, granted)
    with SetWorkflowID("role-1"):
        assert wf(1) == 4
    assert q.enqueue(wf, 5).get_result(polling_interval_sec=0.05) == 12
    steps = DBOS.list_workflow_steps("role-1")
    assert [s["function_name"].rsplit(".", 1)[-1] for s in steps] == ["add_one"]
    assert len(DBOS.list_workflows()) == 2
    DBOS.destroy(destroy_registry=True)
    # and the CLI works as that role too (reads only)
    listed = as_json(wp("workflow", "list", "-s", pg_url_as(role, granted), "--json"))
    assert len(listed) == 2


# -- known bugs ----------------------------------------------------------------------------------


@one_backend
def test_bug_steps_of_missing_workflow_exits_1(db_url: str) -> None:
    DBOS.reset_system_database(system_database_url=db_url, truncate=True)  # migrated, empty
    fails(wp("workflow", "steps", "nope", "-s", db_url, "--json"), "does not exist")


@one_backend
def test_bug_errors_go_to_stderr(db_url: str) -> None:
    DBOS.reset_system_database(system_database_url=db_url, truncate=True)
    proc = wp("workflow", "get", "nope", "-s", db_url, "--json")
    assert proc.returncode == 1
    assert proc.stdout == "" and "does not exist" in proc.stderr


def test_bug_unmigrated_sqlite_gives_a_clear_error(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/never-migrated.sqlite"
    fails(wp("workflow", "list", "-s", url), "migrate")


@requires_postgres
def test_bug_missing_postgres_database_gives_a_clear_error() -> None:
    url = pg_url(f"wp_cli_never_{os.getpid()}")
    # retrying forever would raise TimeoutExpired
    proc = wp("workflow", "list", "-s", url, timeout=60)
    fails(proc, "does not exist")


def test_executors_lists_this_process(dbos: type[DBOS], db_url: str) -> None:
    DBOS.launch()
    rows = json.loads(ok(wp("executors", "-s", db_url, "--json")))
    assert [(r["executor_id"], r["pid"]) for r in rows] == [("local", os.getpid())]
    assert rows[0]["silent_sec"] < 30
    assert "local" in ok(wp("executors", "-s", db_url))


# -- errors and tables for people ------------------------------------------------------------------


def one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> str:
    """Exit 1 with nothing on stdout and one line on stderr: ``error: ... (hint: ...)``."""
    line = fails(proc, *needles)
    assert proc.stdout == "", proc.stdout
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: "), proc.stderr
    assert "(hint: " in line, line
    return line


@requires_postgres
def test_a_missing_role_or_database_is_named_as_such(tmp_path: Path) -> None:
    ghost_role = f"wp_ghost_{uuid.uuid4().hex[:6]}"
    ghost_db = f"wp_ghost_{uuid.uuid4().hex[:6]}"
    migrated = f"wp_cli_roles_{os.getpid()}_{uuid.uuid4().hex[:4]}"
    try:
        ok(wp("migrate", "-s", pg_url(migrated)))
        as_ghost = pg_url_as(ghost_role, migrated)
        for proc in (
            wp("workflow", "list", "-s", as_ghost),
            wp("migrate", "-s", as_ghost),
            wp("migrate", "-s", pg_url(migrated), "--app-role", ghost_role),
        ):
            line = one_line_error(proc, f'role "{ghost_role}" does not exist', "CREATE ROLE")
            assert "waypoint migrate" not in line  # not the advice for a missing database
        line = one_line_error(
            wp("workflow", "list", "-s", pg_url(ghost_db)),
            f'database "{ghost_db}" does not exist',
            "waypoint migrate",
        )
        assert not pg_database_exists(ghost_db)
        one_line_error(
            wp("workflow", "list", "-s", "postgresql://postgres@127.0.0.1:1/x"),
            "no database server answers at 127.0.0.1:1",
        )
    finally:
        drop_database(migrated)


@one_backend
def test_errors_are_one_line_and_debug_shows_the_traceback(db_url: str, tmp_path: Path) -> None:
    DBOS.reset_system_database(system_database_url=db_url, truncate=True)
    one_line_error(wp("workflow", "get", "nope", "-s", db_url), "workflow nope does not exist")
    one_line_error(wp("gc", "-s", db_url), "--cutoff-epoch-ms")
    one_line_error(wp("workflow", "list", cwd=tmp_path), "No system database URL")
    bad = wp("workflow", "list", "-s", db_url, "--start-time", "not-a-time")
    assert bad.stderr == "error: list filter start_time must be an ISO-8601 time: 'not-a-time'\n"
    debug = wp("--debug", "workflow", "list", "-s", db_url, "--start-time", "not-a-time")
    assert debug.returncode == 1
    assert "Traceback" in debug.stderr or "╭" in debug.stderr, debug.stderr[-2000:]


def test_tables_fit_100_columns_with_whole_ids_and_local_times(
    dbos: type[DBOS], db_url: str
) -> None:
    q = Queue("table-q")

    @DBOS.step()
    def describe(n: int) -> dict[str, Any]:
        return {"n": n, "padding": list(range(40))}

    @DBOS.workflow(name="a_workflow_whose_name_is_long_enough_to_wrap_in_a_table")
    def parent(n: int) -> int:
        describe(n)
        DBOS.start_workflow(child, n).get_result()
        return n

    @DBOS.workflow()
    def child(n: int) -> int:
        if n == 1:
            raise ValueError("a failure with a message long enough to need wrapping " * 2)
        return n

    DBOS.launch()
    ids = []
    for n in range(3):
        handle = q.enqueue(parent, n)
        ids.append(handle.workflow_id)
        try:
            handle.get_result()
        except ValueError:
            pass
    children = [f"{i}-2" for i in ids]  # step 1 is describe, 2 starts the child
    zone = "Asia/Kolkata"  # +05:30: a local time that cannot be mistaken for UTC
    env = {"COLUMNS": "100", "TZ": zone}
    s = ["-s", db_url]

    name = "a_workflow_whose_name_is_long_enough_to_wrap_in_a_table"
    done = ["--status", "SUCCESS", "--json"]
    commands: dict[str, list[str]] = {
        "list": ["workflow", "list", "-l", "20"],
        "list json": ["workflow", "list", "-l", "20", "--json"],
        "queue": ["queue", "list"],
        "get": ["workflow", "get", ids[1]],
        "executors": ["executors"],
        # the list filters DBOS's command has, and its `workflow queue list` spelling
        "done": ["queue", "list", *done],
        "done as dbos": ["workflow", "queue", "list", *done],
        "newest first": ["workflow", "list", "-n", name, "-d", "--json"],
        "-a": ["workflow", "list", "-a", "waypoint-test", "--json"],
        "--application-name": ["queue", "list", "--application-name", "elsewhere", *done],
    }
    for wfid in ids:
        commands[f"steps {wfid}"] = ["workflow", "steps", wfid]
        commands[f"steps json {wfid}"] = ["workflow", "steps", wfid, "--json"]
    with ThreadPoolExecutor(4) as pool:
        procs = dict(zip(commands, pool.map(lambda a: wp(*a, *s, env=env), commands.values())))

    def lines(command: str) -> list[str]:
        out = ok(procs[command]).splitlines()
        too_wide = [line for line in out if len(line) > 100]
        assert too_wide == [], too_wide
        return out

    def local(epoch_ms: int) -> str:
        moment = datetime.fromtimestamp(epoch_ms / 1000, ZoneInfo(zone))
        return moment.isoformat(timespec="seconds")

    listed = lines("list")
    raw = as_json(procs["list json"])
    assert {r["workflow_id"] for r in raw} == {*ids, *children}
    for r in raw:
        assert isinstance(r["created_at"], int)  # --json: the stored value
        row = next(line for line in listed if line.startswith(r["workflow_id"] + " "))
        assert local(r["created_at"]) in row and "+05:30" in row
    assert sum("table-q" in line for line in listed) == 3

    for wfid, child_id in zip(ids, children):
        steps = lines(f"steps {wfid}")
        assert any(child_id in line for line in steps), steps
        started = as_json(procs[f"steps json {wfid}"])[0]["started_at_epoch_ms"]
        assert isinstance(started, int) and local(started) in "\n".join(steps)
    assert all("2026" not in line or "+05:30" in line for line in lines("queue"))
    got = lines("get")
    assert any(line.split()[:2] == ["workflow_id", ids[1]] for line in got)
    created = next(r["created_at"] for r in raw if r["workflow_id"] == ids[1])
    assert any(line.split() == ["created_at", local(created)] for line in got), got
    assert any("local" in line for line in lines("executors"))

    queued = as_json(procs["done"])
    assert {r["workflow_id"] for r in queued} == {ids[0], ids[2]}  # ids[1]'s child failed it
    assert as_json(procs["done as dbos"]) == queued
    assert [r["workflow_id"] for r in as_json(procs["newest first"])] == ids[::-1]
    assert len(as_json(procs["-a"])) == 6
    assert as_json(procs["--application-name"]) == []
