"""The ``waypoint`` command: schema management and workflow operations from a shell.

Human-readable tables by default, ``--json`` for scripts. The database URL comes from
``--sys-db-url``, else ``DBOS_SYSTEM_DATABASE_URL``, else ``dbos-config.yaml``'s
``system_database_url``/``database_url`` in the current directory.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, Optional

import typer
from typer.core import TyperGroup

from waypoint.__version__ import VERSION
from waypoint._api import database
from waypoint._api.database import sharded_url
from waypoint._api.metrics import database_exposition
from waypoint._api.ops import fleet, workflows
from waypoint._api.transactions import migrate_application_database
from waypoint.cli import errors
from waypoint.cli.errors import CliFailure
from waypoint.cli.output import show, show_fields, show_workflows, status_dict


class _Options:
    debug = False


class Commands(TyperGroup):
    """Any failure of a command is one line with a hint (``errors``), unless ``--debug``."""

    def invoke(self, ctx: Any) -> Any:  # a click Context (typer vendors click)
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise
        except Exception as exc:
            _fail(exc)


app = typer.Typer(
    cls=Commands,
    help="Waypoint: durable workflows. Manage the system database and workflows.",
    pretty_exceptions_show_locals=False,
)
workflow_app = typer.Typer(help="Inspect and control workflows.")
queue_app = typer.Typer(help="Inspect queues.")
executors_app = typer.Typer(help="Executors: list them, take over a gone one's work.")
app.add_typer(workflow_app, name="workflow")
app.add_typer(executors_app, name="executors")
app.add_typer(queue_app, name="queue")
shards_app = typer.Typer(help="Shards of a sharded system database (-s repeated).")
app.add_typer(shards_app, name="shards")
workflow_app.add_typer(queue_app, name="queue")  # also where DBOS has it: workflow queue list


@app.callback()
def _global_options(
    debug: bool = typer.Option(False, "--debug", help="Show the Python traceback of an error."),
) -> None:
    _Options.debug = debug


UrlOpt = typer.Option(
    None,
    "--sys-db-url",
    "-s",
    help="System database URL; repeat it to name the shards of a sharded system database.",
)
UrlArg = Optional[list[str]]
SchemaOpt = typer.Option("dbos", "--schema", help="System schema (PostgreSQL).")
JsonOpt = typer.Option(False, "--json", help="Print JSON instead of a table.")
# The list filters, as DBOS's `dbos workflow list` / `dbos workflow queue list` name them.
OffsetOpt = typer.Option(None, "--offset", "-o", help="Skip this many workflows.")
StatusOpt = typer.Option(None, "--status", "-S", help="Only this status (e.g. ERROR).")
NameOpt = typer.Option(None, "--name", "-n", help="Only workflows of this function name.")
StartOpt = typer.Option(None, "--start-time", "-t", help="Created at or after (ISO 8601).")
EndOpt = typer.Option(None, "--end-time", "-e", help="Created at or before (ISO 8601).")
AppNameOpt = typer.Option(None, "--application-name", "-a", help="Only this application's.")
SortDescOpt = typer.Option(False, "--sort-desc", "-d", help="Newest first.")
ExecutorIdsArg = typer.Argument(..., help="Executor IDs (e.g. pod names).")


def _config_shards(text: str) -> Optional[str]:
    """``system_database_shards`` of dbos-config.yaml (a block or flow list), as one URL."""
    m = re.search(r"^system_database_shards:[ \t]*(.*)$", text, re.MULTILINE)
    if not m:
        return None
    inline = m.group(1).strip()
    if inline.startswith("["):
        items = [i.strip().strip("'\"") for i in inline.strip("[]").split(",")]
    else:
        block = re.match(r"((?:[ \t]*-[^\n]*\n?)+)", text[m.end() + 1 :])
        lines = block.group(1).splitlines() if block else []
        items = [ln.strip()[1:].strip().strip("'\"") for ln in lines]
    return sharded_url([os.path.expandvars(i) for i in items if i])


def _config_url() -> Optional[str]:
    path = Path("dbos-config.yaml")
    if not path.exists():
        return None
    text = path.read_text()
    shards = _config_shards(text)
    if shards is not None:
        return shards
    for key in ("system_database_url", "database_url"):
        m = re.search(rf"^{key}:\s*['\"]?([^'\"\s]+)", text, re.MULTILINE)
        if m:
            return os.path.expandvars(m.group(1))
    m = re.search(r"^name:\s*['\"]?([a-z0-9_-]+)", text, re.MULTILINE)
    if m:
        name = m.group(1).replace("-", "_")
        return f"sqlite:///{name}.sqlite"
    return None


def resolve_url(urls: UrlArg) -> str:
    """``-s`` once: that URL; repeated: the shards of a sharded system database."""
    url = (urls[0] if len(urls) == 1 else sharded_url(list(urls))) if urls else None
    found = url or os.environ.get("DBOS_SYSTEM_DATABASE_URL") or _config_url()
    if not found:
        _fail(
            CliFailure(
                "No system database URL",
                "pass --sys-db-url, set DBOS_SYSTEM_DATABASE_URL, or run where "
                "dbos-config.yaml names one",
            )
        )
    return found


def _call(
    url: UrlArg,
    schema: str,
    operation: Callable[..., Any],
    *args: Any,
    existing: Optional[str] = None,
    **kwargs: Any,
) -> Any:
    """Run one operation (``_api.ops``) on the database; with ``existing``, that workflow
    must exist first. A failure is reported by ``Commands``."""
    # Fail fast with advice (no such database, no schema yet) instead of retrying.
    ops = database.open_ops(resolve_url(url), schema=schema)
    try:
        if existing is not None and ops.run(workflows.get_workflow_status(ops, existing)) is None:
            _fail(CliFailure(f"workflow {existing} does not exist", "`waypoint workflow list`"))
        return ops.run(operation(ops, *args, **kwargs))
    finally:
        ops.engine().store.close()  # the command may run in-process (tests, a REPL)


def _fail(exc: BaseException) -> NoReturn:
    errors.fail(exc, debug=_Options.debug)


@app.command()
def version() -> None:
    """Print the Waypoint version."""
    typer.echo(f"Waypoint CLI version: {VERSION}")


@app.command()
def migrate(
    sys_db_url: UrlArg = UrlOpt,
    schema: str = SchemaOpt,
    app_role: Optional[str] = typer.Option(
        None, "--app-role", "-r", help="Grant this role what the application needs."
    ),
    app_db_url: Optional[str] = typer.Option(
        None,
        "--db-url",
        "-D",
        help="The application database of @DBOS.transaction: create its transaction_outputs.",
    ),
) -> None:
    """Create or upgrade the system schema (run with a privileged role)."""
    url = resolve_url(sys_db_url)
    database.migrate(url, schema=schema, app_role=app_role or None)
    typer.echo(f"System database {database.redact(url)} is up to date.")
    if app_db_url:
        migrate_application_database(app_db_url, schema=schema, role=app_role or None)
        typer.echo(f"Application database {database.redact(app_db_url)} is up to date.")


@app.command()
def reset(
    sys_db_url: UrlArg = UrlOpt,
    schema: str = SchemaOpt,
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
) -> None:
    """Drop the system database (every workflow is lost)."""
    url = resolve_url(sys_db_url)
    if not yes and not typer.confirm(f"Drop the system database {database.redact(url)}?"):
        raise typer.Exit(1)
    database.drop(url, schema=schema)
    typer.echo("System database dropped.")


@app.command()
def gc(
    sys_db_url: UrlArg = UrlOpt,
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
        _fail(CliFailure("nothing to delete by", "give --cutoff-epoch-ms or --rows-threshold"))
    deleted = _call(
        sys_db_url,
        schema,
        fleet.garbage_collect,
        cutoff_epoch_timestamp_ms=cutoff_ms,
        rows_threshold=rows,
    )
    typer.echo(json.dumps({"deleted": deleted}) if as_json else f"Deleted {deleted} workflows.")


@app.command("rename-application")
def rename_application(
    sys_db_url: UrlArg = UrlOpt,
    schema: str = SchemaOpt,
    old_name: Optional[str] = typer.Option(
        None, "--from", "-f", help="The application's previous name."
    ),
    new_name: str = typer.Option(
        ..., "--to", "-t", help="The application that ends up owning the rows."
    ),
    adopt_unclaimed_rows: bool = typer.Option(
        False, "--adopt-unclaimed-rows", help="Also take rows no application owns."
    ),
    batch_size: int = typer.Option(
        fleet.DEFAULT_RENAME_BATCH_SIZE, "--batch-size", help="Workflows and steps per transaction."
    ),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    as_json: bool = JsonOpt,
) -> None:
    """Re-own a system database's rows after an application is renamed (stop it first)."""
    sources = ([f"'{old_name}'s rows"] if old_name else []) + (
        ["rows no application owns"] if adopt_unclaimed_rows else []
    )
    if not sources:
        _fail(CliFailure("nothing to re-own", "pass --from, --adopt-unclaimed-rows, or both"))
    question = (
        f"Re-own {' and '.join(sources)} as '{new_name}'? Stop the application being renamed first."
    )
    if not yes and not typer.confirm(question):
        raise typer.Exit(1)
    moved = _call(
        sys_db_url,
        schema,
        fleet.rename_application,
        old_name,
        new_name,
        batch_size=batch_size,
        adopt_unclaimed_rows=adopt_unclaimed_rows,
    )
    show(
        moved if as_json else [{"kind": k, "moved": n} for k, n in moved.items()],
        as_json,
        "Rows=kind Moved=moved",
    )


@workflow_app.command("list")
def workflow_list(
    sys_db_url: UrlArg = UrlOpt,
    schema: str = SchemaOpt,
    limit: int = typer.Option(10, "--limit", "-l", help="At most this many workflows."),
    offset: Optional[int] = OffsetOpt,
    status: Optional[str] = StatusOpt,
    name: Optional[str] = NameOpt,
    user: Optional[str] = typer.Option(None, "--user", "-u", help="Only this user's."),
    start_time: Optional[str] = StartOpt,
    end_time: Optional[str] = EndOpt,
    app_version: Optional[str] = typer.Option(
        None, "--application-version", "-v", help="Only this application version's."
    ),
    application_name: Optional[str] = AppNameOpt,
    sort_desc: bool = SortDescOpt,
    as_json: bool = JsonOpt,
) -> None:
    """List workflows."""
    rows = _call(
        sys_db_url,
        schema,
        workflows.list_workflows,
        status=status,
        name=name,
        user=user,
        start_time=start_time,
        end_time=end_time,
        app_version=app_version,
        application_name=application_name,
        limit=limit,
        offset=offset,
        sort_desc=sort_desc,
        load_input=False,
        load_output=False,
    )
    show_workflows(rows, as_json)


@workflow_app.command("get")
def workflow_get(
    workflow_id: str,
    sys_db_url: UrlArg = UrlOpt,
    schema: str = SchemaOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Show one workflow."""
    status = _call(sys_db_url, schema, workflows.get_workflow_status, workflow_id)
    if status is None:
        _fail(CliFailure(f"workflow {workflow_id} does not exist", "`waypoint workflow list`"))
    if as_json:
        typer.echo(json.dumps(status_dict(status), indent=2, default=str))
        return
    show_fields(status_dict(status))


@workflow_app.command("steps")
def workflow_steps(
    workflow_id: str,
    sys_db_url: UrlArg = UrlOpt,
    schema: str = SchemaOpt,
    as_json: bool = JsonOpt,
) -> None:
    """List a workflow's checkpointed steps."""
    steps = _call(
        sys_db_url, schema, workflows.list_workflow_steps, workflow_id, existing=workflow_id
    )
    show(
        [dict(s) for s in steps],
        as_json,
        "ID=function_id Name=function_name Started=started_at_epoch_ms Child=child_workflow_id "
        "Output=output Error=error",
        short=("output", "error"),
        default=repr,
    )


@workflow_app.command("cancel")
def workflow_cancel(workflow_id: str, sys_db_url: UrlArg = UrlOpt, schema: str = SchemaOpt) -> None:
    """Cancel a workflow (it stops at its next step)."""
    _call(sys_db_url, schema, workflows.cancel_workflow, workflow_id, existing=workflow_id)
    typer.echo(f"Cancelled {workflow_id}.")


@workflow_app.command("resume")
def workflow_resume(workflow_id: str, sys_db_url: UrlArg = UrlOpt, schema: str = SchemaOpt) -> None:
    """Put a cancelled or failed-over workflow back on a queue."""
    _call(sys_db_url, schema, workflows.resume_workflow, workflow_id)
    typer.echo(f"Resumed {workflow_id}.")


@workflow_app.command("fork")
def workflow_fork(
    workflow_id: str,
    step: int = typer.Option(1, "--step", "-S", help="First step to re-run (from 1)."),
    forked_id: Optional[str] = typer.Option(None, "--forked-workflow-id", "-f"),
    app_version: Optional[str] = typer.Option(None, "--application-version", "-v"),
    sys_db_url: UrlArg = UrlOpt,
    schema: str = SchemaOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Start a copy of a workflow that re-runs it from a step."""
    new_id = _call(
        sys_db_url,
        schema,
        workflows.fork_workflow,
        workflow_id,
        step,
        application_version=app_version,
        forked_workflow_id=forked_id,
    )
    typer.echo(json.dumps({"workflow_id": new_id}) if as_json else f"Forked as {new_id}.")


@executors_app.callback(invoke_without_command=True)
def executors(
    ctx: typer.Context,
    sys_db_url: UrlArg = UrlOpt,
    schema: str = SchemaOpt,
    as_json: bool = JsonOpt,
) -> None:
    """List executor processes: state (live, draining, gone) and when each was last heard
    from. `waypoint executors recover ID` takes over a gone one's PENDING workflows."""
    if ctx.invoked_subcommand is not None:
        return
    found = _call(sys_db_url, schema, fleet.list_executors)
    items = [{**e, "silent_sec": round(e["silent_sec"], 1)} for e in found]
    show(
        items,
        as_json,
        "Executor=executor_id State=state App=application_name Version=application_version "
        "Host=hostname PID=pid Silent_(s)=silent_sec",
    )


@executors_app.command("recover")
def executors_recover(
    executor_ids: list[str] = ExecutorIdsArg,
    sys_db_url: UrlArg = UrlOpt,
    schema: str = SchemaOpt,
    force: bool = typer.Option(
        False, "--force", help="Also when an executor is live (its runs are cut off, fenced)."
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Put the PENDING workflows of these executors back on their queues, for any live
    executor of their version, or of a version with the same fingerprint under
    version_compatibility "fingerprint" (what POST /dbos-workflow-recovery does, from a
    shell)."""
    known = {e["executor_id"]: e["state"] for e in _call(sys_db_url, schema, fleet.list_executors)}
    live = [i for i in executor_ids if known.get(i) in ("live", "draining")]
    if live and not force:
        _fail(
            CliFailure(
                f"executor {', '.join(live)} is {known[live[0]]}: its workflows are running",
                "wait until it is gone (`waypoint executors`), or pass --force",
            )
        )
    ids = _call(sys_db_url, schema, fleet.recover_executors, list(executor_ids))
    if as_json:
        typer.echo(json.dumps({"workflow_ids": ids}))
    else:
        typer.echo(f"Requeued {len(ids)} workflow(s) of {', '.join(executor_ids)}.")
        for wfid in ids:
            typer.echo(wfid)


@app.command()
def metrics(
    sys_db_url: UrlArg = UrlOpt,
    schema: str = SchemaOpt,
) -> None:
    """Print the database-wide gauges (queue backlogs, PENDING by executor, executors alive
    and silent) in the Prometheus text format, without a running application."""
    ops = database.open_ops(resolve_url(sys_db_url), schema=schema)
    try:
        typer.echo(database_exposition(ops.engine()).decode(), nl=False)
    finally:
        ops.engine().store.close()


@app.command("console")
def console_command(
    sys_db_url: UrlArg = UrlOpt,
    schema: str = SchemaOpt,
    port: int = typer.Option(3002, "--port", "-p", help="TCP port to serve on."),
    host: str = typer.Option(
        "127.0.0.1", "--host", help="Address to bind (loopback unless you mean otherwise)."
    ),
    admin_token: Optional[str] = typer.Option(
        None,
        "--admin-token",
        envvar="DBOS__ADMIN_TOKEN",
        help="Require this token (login page, bearer token for the API). Prefer the variable.",
    ),
    read_only_token: Optional[str] = typer.Option(
        None,
        "--read-only-token",
        envvar="WAYPOINT_ADMIN_READ_ONLY_TOKEN",
        help="Also accept this token for a read-only console login.",
    ),
) -> None:
    """Serve the console (and the admin API) for a system database, with no application
    process: PostgreSQL or SQLite. Stop with Ctrl-C."""
    from waypoint.admin.mount import Console
    from waypoint.admin.routes import standalone_routes
    from waypoint.admin.server import AdminServer

    if not 0 <= port <= 65535:
        _fail(CliFailure(f"--port must be a TCP port number, got {port}", "e.g. --port 3002"))
    if read_only_token and not admin_token:
        _fail(
            CliFailure(
                "--read-only-token needs --admin-token",
                "without an admin token the console is open to whoever reaches the port",
            )
        )
    ops = database.open_ops(resolve_url(sys_db_url), schema=schema, pool_size=8)
    engine = ops.engine()
    try:
        engine.start_listening()  # PostgreSQL: live updates by LISTEN/NOTIFY
    except Exception as exc:
        typer.echo(f"live updates will poll: {exc}", err=True)
    console = Console(
        ops,
        admin_token=admin_token or None,
        read_only_token=read_only_token or None,
        bound_host=host,
    )
    try:
        server = AdminServer(
            standalone_routes(ops), host, port, admin_token or None, console=console
        )
    except OSError as exc:
        engine.stop_listening()
        engine.store.close()
        _fail(CliFailure(f"cannot listen on {host}:{port}: {exc}", "choose another --port"))
    shown = f"[{host}]" if ":" in host else host
    typer.echo(f"Waypoint console on http://{shown}:{server.port}/console/ (Ctrl-C to stop)")
    try:
        server.serve_forever()
    finally:
        engine.stop_listening()
        engine.store.close()


@queue_app.command("list")
def queue_list(
    sys_db_url: UrlArg = UrlOpt,
    schema: str = SchemaOpt,
    queue_name: Optional[str] = typer.Option(None, "--queue-name", "-q", help="Only this queue."),
    status: Optional[str] = StatusOpt,
    name: Optional[str] = NameOpt,
    start_time: Optional[str] = StartOpt,
    end_time: Optional[str] = EndOpt,
    application_name: Optional[str] = AppNameOpt,
    limit: int = typer.Option(100, "--limit", "-l", help="At most this many workflows."),
    offset: Optional[int] = OffsetOpt,
    sort_desc: bool = SortDescOpt,
    as_json: bool = JsonOpt,
) -> None:
    """List queued (ENQUEUED, PENDING, DELAYED) workflows."""
    rows = _call(
        sys_db_url,
        schema,
        workflows.list_queued_workflows,
        queue_name=queue_name,
        status=status,
        name=name,
        start_time=start_time,
        end_time=end_time,
        application_name=application_name,
        limit=limit,
        offset=offset,
        sort_desc=sort_desc,
        load_input=False,
        load_output=False,
    )
    show_workflows(rows, as_json)


if __name__ == "__main__":
    app()


def _show_shards(found: list[dict[str, Any]], as_json: bool) -> None:
    show(
        found,
        as_json,
        "Shard=ordinal URL=url State=state Markers=holds_markers Workflows=workflows",
    )


@shards_app.command("list")
def shards_list(
    sys_db_url: UrlArg = UrlOpt, schema: str = SchemaOpt, as_json: bool = JsonOpt
) -> None:
    """The shards in catalog order, their state and how many workflows each holds."""
    _show_shards(database.shards(resolve_url(sys_db_url), schema=schema), as_json)


@shards_app.command("add")
def shards_add(
    new_url: str = typer.Argument(..., help="The new shard's PostgreSQL URL."),
    sys_db_url: UrlArg = UrlOpt,
    schema: str = SchemaOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Add a shard online: migrate it and register it 'joining' (found by lookups, given no
    new work until `waypoint shards activate`). Existing workflows stay where they are."""
    _show_shards(database.shards(resolve_url(sys_db_url), schema=schema, add=new_url), as_json)


@shards_app.command("activate")
def shards_activate(
    url: str = typer.Argument(..., help="The joining shard's PostgreSQL URL."),
    sys_db_url: UrlArg = UrlOpt,
    schema: str = SchemaOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Let new top-level workflows be placed on a joining shard too."""
    _show_shards(database.shards(resolve_url(sys_db_url), schema=schema, activate=url), as_json)
