"""The ``waypoint`` command: schema management and workflow operations from a shell.

Human-readable tables by default, ``--json`` for scripts. The database URL comes from
``--sys-db-url``, else ``DBOS_SYSTEM_DATABASE_URL``, else ``dbos-config.yaml``'s
``system_database_url``/``database_url`` in the current directory.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, NoReturn, Optional

import typer
from rich.console import Console
from rich.table import Table

from waypoint.__version__ import VERSION
from waypoint._api import database
from waypoint._api.ops import fleet, workflows
from waypoint._api.ops.base import ClientOps
from waypoint._api.records import WorkflowStatus
from waypoint.error import DBOSException

app = typer.Typer(help="Waypoint: durable workflows. Manage the system database and workflows.")
workflow_app = typer.Typer(help="Inspect and control workflows.")
queue_app = typer.Typer(help="Inspect queues.")
app.add_typer(workflow_app, name="workflow")
app.add_typer(queue_app, name="queue")
console = Console()
errors = Console(stderr=True)

UrlOpt = typer.Option(None, "--sys-db-url", "-s", help="System database URL.")
SchemaOpt = typer.Option("dbos", "--schema", help="System schema (PostgreSQL).")
JsonOpt = typer.Option(False, "--json", help="Print JSON instead of a table.")


def _config_url() -> Optional[str]:
    path = Path("dbos-config.yaml")
    if not path.exists():
        return None
    text = path.read_text()
    for key in ("system_database_url", "database_url"):
        m = re.search(rf"^{key}:\s*['\"]?([^'\"\s]+)", text, re.MULTILINE)
        if m:
            return os.path.expandvars(m.group(1))
    m = re.search(r"^name:\s*['\"]?([a-z0-9_-]+)", text, re.MULTILINE)
    if m:
        name = m.group(1).replace("-", "_")
        return f"sqlite:///{name}.sqlite"
    return None


def resolve_url(url: Optional[str]) -> str:
    found = url or os.environ.get("DBOS_SYSTEM_DATABASE_URL") or _config_url()
    if not found:
        errors.print(
            "[red]No system database URL: pass --sys-db-url, set DBOS_SYSTEM_DATABASE_URL, or "
            "run where dbos-config.yaml names one.[/red]"
        )
        raise typer.Exit(1)
    return found


def _ops(url: Optional[str], schema: str) -> ClientOps:
    try:
        # Fail fast with advice (no such database, no schema yet) instead of retrying.
        return database.open_ops(resolve_url(url), schema=schema)
    except DBOSException as exc:
        _fail(exc)


def _existing(ops: ClientOps, workflow_id: str) -> None:
    if ops.run(workflows.get_workflow_status(ops, workflow_id)) is None:
        _fail(DBOSException(f"workflow {workflow_id} does not exist"))


def _fail(exc: Exception) -> NoReturn:
    errors.print(f"[red]{exc}[/red]")
    raise typer.Exit(1)


def _status_dict(s: WorkflowStatus) -> dict[str, Any]:
    return {
        k: (v if isinstance(v, (str, int, float, bool, type(None), list, dict)) else repr(v))
        for k, v in vars(s).items()
    }


def _print_workflows(rows: list[WorkflowStatus], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps([_status_dict(r) for r in rows], indent=2, default=str))
        return
    table = Table("ID", "Status", "Name", "Queue", "Executor", "Version", "Created")
    for r in rows:
        table.add_row(
            r.workflow_id,
            r.status,
            r.name or "",
            r.queue_name or "",
            r.executor_id or "",
            r.app_version or "",
            str(r.created_at or ""),
        )
    console.print(table)


@app.command()
def version() -> None:
    """Print the Waypoint version."""
    typer.echo(f"Waypoint CLI version: {VERSION}")


@app.command()
def migrate(
    sys_db_url: Optional[str] = UrlOpt,
    schema: str = SchemaOpt,
    app_role: Optional[str] = typer.Option(
        None, "--app-role", "-r", help="Grant this role what the application needs."
    ),
) -> None:
    """Create or upgrade the system schema (run with a privileged role)."""
    url = resolve_url(sys_db_url)
    try:
        database.migrate(url, schema=schema, app_role=app_role or None)
    except DBOSException as exc:
        _fail(exc)
    typer.echo(f"System database {database.redact(url)} is up to date.")


@app.command()
def reset(
    sys_db_url: Optional[str] = UrlOpt,
    schema: str = SchemaOpt,
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
) -> None:
    """Drop the system database (every workflow is lost)."""
    url = resolve_url(sys_db_url)
    if not yes and not typer.confirm(f"Drop the system database {database.redact(url)}?"):
        raise typer.Exit(1)
    try:
        database.drop(url, schema=schema)
    except DBOSException as exc:
        _fail(exc)
    typer.echo("System database dropped.")


@app.command()
def gc(
    sys_db_url: Optional[str] = UrlOpt,
    schema: str = SchemaOpt,
    cutoff_ms: Optional[int] = typer.Option(
        None, "--cutoff-epoch-ms", help="Delete finished workflows created before this time."
    ),
    rows: Optional[int] = typer.Option(
        None, "--rows-threshold", help="Keep at most this many newest workflows."
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Delete old finished workflows (never PENDING, ENQUEUED or DELAYED ones)."""
    if cutoff_ms is None and rows is None:
        _fail(DBOSException("give --cutoff-epoch-ms or --rows-threshold"))
    ops = _ops(sys_db_url, schema)
    deleted = ops.run(
        fleet.garbage_collect(ops, cutoff_epoch_timestamp_ms=cutoff_ms, rows_threshold=rows)
    )
    typer.echo(json.dumps({"deleted": deleted}) if as_json else f"Deleted {deleted} workflows.")


@workflow_app.command("list")
def workflow_list(
    sys_db_url: Optional[str] = UrlOpt,
    schema: str = SchemaOpt,
    limit: int = typer.Option(10, "--limit", "-l"),
    offset: Optional[int] = typer.Option(None, "--offset", "-o"),
    status: Optional[str] = typer.Option(None, "--status", "-S"),
    name: Optional[str] = typer.Option(None, "--name", "-n"),
    user: Optional[str] = typer.Option(None, "--user", "-u"),
    start_time: Optional[str] = typer.Option(None, "--start-time", "-t"),
    end_time: Optional[str] = typer.Option(None, "--end-time", "-e"),
    app_version: Optional[str] = typer.Option(None, "--application-version", "-v"),
    sort_desc: bool = typer.Option(False, "--sort-desc", "-d"),
    as_json: bool = JsonOpt,
) -> None:
    """List workflows."""
    ops = _ops(sys_db_url, schema)
    try:
        rows = ops.run(
            workflows.list_workflows(
                ops,
                status=status,
                name=name,
                user=user,
                start_time=start_time,
                end_time=end_time,
                app_version=app_version,
                limit=limit,
                offset=offset,
                sort_desc=sort_desc,
                load_input=False,
                load_output=False,
            )
        )
    except DBOSException as exc:
        _fail(exc)
    _print_workflows(rows, as_json)


@workflow_app.command("get")
def workflow_get(
    workflow_id: str,
    sys_db_url: Optional[str] = UrlOpt,
    schema: str = SchemaOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Show one workflow."""
    ops = _ops(sys_db_url, schema)
    status = ops.run(workflows.get_workflow_status(ops, workflow_id))
    if status is None:
        _fail(DBOSException(f"workflow {workflow_id} does not exist"))
    if as_json:
        typer.echo(json.dumps(_status_dict(status), indent=2, default=str))
        return
    table = Table("Field", "Value")
    for key, value in _status_dict(status).items():
        table.add_row(key, "" if value is None else str(value))
    console.print(table)


@workflow_app.command("steps")
def workflow_steps(
    workflow_id: str,
    sys_db_url: Optional[str] = UrlOpt,
    schema: str = SchemaOpt,
    as_json: bool = JsonOpt,
) -> None:
    """List a workflow's checkpointed steps."""
    ops = _ops(sys_db_url, schema)
    _existing(ops, workflow_id)
    steps = ops.run(workflows.list_workflow_steps(ops, workflow_id))
    if as_json:
        typer.echo(json.dumps([dict(s) for s in steps], indent=2, default=repr))
        return
    table = Table("ID", "Name", "Output", "Error", "Child", "Started", "Completed")
    for s in steps:
        table.add_row(
            str(s["function_id"]),
            s["function_name"],
            "" if s["output"] is None else repr(s["output"])[:60],
            "" if s["error"] is None else repr(s["error"])[:60],
            s["child_workflow_id"] or "",
            str(s["started_at_epoch_ms"] or ""),
            str(s["completed_at_epoch_ms"] or ""),
        )
    console.print(table)


@workflow_app.command("cancel")
def workflow_cancel(
    workflow_id: str, sys_db_url: Optional[str] = UrlOpt, schema: str = SchemaOpt
) -> None:
    """Cancel a workflow (it stops at its next step)."""
    ops = _ops(sys_db_url, schema)
    _existing(ops, workflow_id)
    ops.run(workflows.cancel_workflow(ops, workflow_id))
    typer.echo(f"Cancelled {workflow_id}.")


@workflow_app.command("resume")
def workflow_resume(
    workflow_id: str, sys_db_url: Optional[str] = UrlOpt, schema: str = SchemaOpt
) -> None:
    """Put a cancelled or failed-over workflow back on a queue."""
    ops = _ops(sys_db_url, schema)
    try:
        ops.run(workflows.resume_workflow(ops, workflow_id))
    except DBOSException as exc:
        _fail(exc)
    typer.echo(f"Resumed {workflow_id}.")


@workflow_app.command("fork")
def workflow_fork(
    workflow_id: str,
    step: int = typer.Option(0, "--step", "-S", help="First step to re-run."),
    forked_id: Optional[str] = typer.Option(None, "--forked-workflow-id", "-f"),
    app_version: Optional[str] = typer.Option(None, "--application-version", "-v"),
    sys_db_url: Optional[str] = UrlOpt,
    schema: str = SchemaOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Start a copy of a workflow that re-runs it from a step."""
    ops = _ops(sys_db_url, schema)
    try:
        new_id = ops.run(
            workflows.fork_workflow(
                ops,
                workflow_id,
                step,
                application_version=app_version,
                forked_workflow_id=forked_id,
            )
        )
    except DBOSException as exc:
        _fail(exc)
    typer.echo(json.dumps({"workflow_id": new_id}) if as_json else f"Forked as {new_id}.")


@app.command()
def executors(
    sys_db_url: Optional[str] = UrlOpt,
    schema: str = SchemaOpt,
    as_json: bool = JsonOpt,
) -> None:
    """List executor processes and how long ago each was heard from."""
    ops = _ops(sys_db_url, schema)
    items = [
        {**e, "silent_sec": round(e["silent_sec"], 1)} for e in ops.run(fleet.list_executors(ops))
    ]
    if as_json:
        typer.echo(json.dumps(items, indent=2))
        return
    table = Table("Executor", "App", "Version", "Host", "PID", "Silent (s)")
    for i in items:
        table.add_row(
            str(i["executor_id"]),
            str(i["application_name"] or ""),
            str(i["application_version"] or ""),
            str(i["hostname"] or ""),
            str(i["pid"] or ""),
            str(i["silent_sec"]),
        )
    console.print(table)


@queue_app.command("list")
def queue_list(
    sys_db_url: Optional[str] = UrlOpt,
    schema: str = SchemaOpt,
    queue_name: Optional[str] = typer.Option(None, "--queue-name", "-q"),
    status: Optional[str] = typer.Option(None, "--status", "-S"),
    limit: int = typer.Option(100, "--limit", "-l"),
    as_json: bool = JsonOpt,
) -> None:
    """List queued (ENQUEUED, PENDING, DELAYED) workflows."""
    ops = _ops(sys_db_url, schema)
    try:
        rows = ops.run(
            workflows.list_queued_workflows(
                ops,
                queue_name=queue_name,
                status=status,
                limit=limit,
                load_input=False,
                load_output=False,
            )
        )
    except DBOSException as exc:
        _fail(exc)
    _print_workflows(rows, as_json)


if __name__ == "__main__":
    app()
