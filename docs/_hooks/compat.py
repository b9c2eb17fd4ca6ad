"""The DBOS compatibility table of the documentation site, name by name.

``dbos-2.31.1.json`` (beside this file) holds every public name of ``dbos`` 2.31.1, grouped:
the package's exports, the members of ``DBOS``, ``DBOSClient``, ``Queue``, ``Debouncer``,
``DebouncerClient`` and the handles, ``dbos.error``, the ``DBOSConfig`` keys and the ``dbos``
commands. Regenerate it for another DBOS version by running this file with that DBOS
installed (a throwaway virtualenv): ``python docs/_hooks/compat.py --capture > x.json``.

Each name's status is computed against the ``waypoint`` of this checkout, so the table
follows the code: a name Waypoint offers is *supported*; a name it lacks needs a reason in
``UNSUPPORTED``; a name Waypoint offers only to refuse it clearly is in ``REFUSED``.
``tests/unit/test_compat_table.py`` fails when the code and these lists disagree (a name
gained or lost), saying which line to change. ``mkdocs`` calls ``on_page_markdown``, which
replaces the ``<!-- compat-table -->`` marker of ``compatibility.md`` with the tables.
"""

from __future__ import annotations

import inspect
import json
import sys
from pathlib import Path
from typing import Any

NAMES_FILE = Path(__file__).with_name("dbos-2.31.1.json")
MARKER = "<!-- compat-table -->"

CONDUCTOR = "no DBOS Conductor connection (Waypoint is self-hosted only)"

# Names Waypoint does not offer, with the reason. Remove a line when the name lands.
UNSUPPORTED: dict[str, str] = {
    "command: start": "run your application with python; Waypoint has no start script",
    "command: init": "no application templates",
    "command: postgres": "no Docker helper: point -s at any PostgreSQL",
}

# Names Waypoint has only to refuse them with a clear error (never silently accepted).
REFUSED: dict[str, str] = {
    "DBOS.alert_handler": CONDUCTOR + "; raises DBOSException where it decorates",
    "DBOS.kafka_consumer": "Kafka consumers are not supported yet; raises DBOSException where "
    "it decorates (KafkaMessage exists for annotations)",
}

# DBOSConfig keys Waypoint accepts and what it does with them, where that is not "the same
# as DBOS". Keys absent from Waypoint's DBOSConfig need an UNSUPPORTED reason instead.
CONFIG_NOTES: dict[str, str] = {
    "application_database_url": "the database of @DBOS.transaction (SQLAlchemy, the sql "
    "extra); on SQLite every isolation level runs as SERIALIZABLE",
    "db_engine_kwargs": "used for the application database's engine only",
    "system_database_engine": "its URL is used (Waypoint opens its own connections); a "
    "warning says the engine itself is not",
    "enable_otlp": "traces and logs need the otel extra (pip install 'waypoint-workflows[otel]')",
    "kafka_queue_polling_interval_sec": "accepted with a warning: no Kafka consumers",
    "conductor_key": "accepted with a warning: " + CONDUCTOR,
    "conductor_url": "accepted with a warning: " + CONDUCTOR,
    "conductor_executor_metadata": "accepted with a warning: " + CONDUCTOR,
    "console_log_level": "accepted with a warning: configure the waypoint logger's handlers",
    "notification_coalesce_sec": "accepted with a warning: notifications are not coalesced",
    "sys_db_polling_concurrency": "accepted with a warning: polling uses sys_db_pool_size",
}

# The DBOS class each member group belongs to, and where Waypoint's is.
GROUPS = {
    "DBOS": "DBOS",
    "DBOSClient": "DBOSClient",
    "Queue": "Queue",
    "Debouncer": "Debouncer",
    "DebouncerClient": "DebouncerClient",
    "WorkflowHandle": "WorkflowHandle",
    "WorkflowHandleAsync": "WorkflowHandleAsync",
}

# DBOS commands that Waypoint spells differently.
COMMAND_ALIASES: dict[str, str] = {}

DBOS_COMMANDS = [  # `dbos --help` and `dbos workflow --help` of 2.31.1
    "version", "start", "init", "migrate", "reset", "rename-application", "workflow list",
    "workflow get", "workflow steps", "workflow cancel", "workflow resume", "workflow fork",
    "workflow queue list", "postgres",
]  # fmt: skip


def capture() -> dict[str, list[str]]:
    """The public names of the installed ``dbos`` (run where ``dbos`` is importable)."""
    import dbos  # type: ignore[import-not-found]

    def public(obj: Any) -> list[str]:
        return sorted(n for n in dir(obj) if not n.startswith("_"))

    names: dict[str, list[str]] = {"dbos": public(dbos)}
    for group in GROUPS:
        names[group] = public(getattr(dbos, group))
    names["error"] = [n for n in public(dbos.error) if n not in ("Any", "Enum", "Optional")]
    names["DBOSConfig"] = list(dbos.DBOSConfig.__annotations__)
    names["commands"] = DBOS_COMMANDS
    return names


def load() -> dict[str, list[str]]:
    names: dict[str, list[str]] = json.loads(NAMES_FILE.read_text())
    return names


def _has(obj: Any, name: str) -> bool:
    return inspect.getattr_static(obj, name, None) is not None or hasattr(obj, name)


def _waypoint_commands() -> set[str]:
    from typer.main import get_command

    from waypoint.cli.main import app

    found: set[str] = set()

    def walk(command: Any, prefix: str) -> None:
        for name, sub in getattr(command, "commands", {}).items():
            full = f"{prefix}{name}"
            found.add(full)
            walk(sub, f"{full} ")

    walk(get_command(app), "")
    return found


def statuses() -> list[tuple[str, str, str, str]]:
    """``(group, name, key, status)`` for every DBOS name: status is ``supported``,
    ``refused`` or ``unsupported``; ``key`` is how UNSUPPORTED/REFUSED name it."""
    import waypoint

    rows: list[tuple[str, str, str, str]] = []
    names = load()
    commands = _waypoint_commands()

    def add(group: str, name: str, key: str, present: bool) -> None:
        if key in REFUSED:
            rows.append((group, name, key, "refused"))
        elif present:
            rows.append((group, name, key, "supported"))
        else:
            rows.append((group, name, key, "unsupported"))

    for name in names["dbos"]:
        add("dbos", name, name, _has(waypoint, name))
    for group, attr in GROUPS.items():
        cls = getattr(waypoint, attr)
        for name in names[group]:
            add(group, name, f"{group}.{name}", _has(cls, name))
    for name in names["error"]:
        add("dbos.error", name, f"error.{name}", _has(waypoint.error, name))
    config_keys = waypoint.DBOSConfig.__annotations__
    for name in names["DBOSConfig"]:
        add("DBOSConfig", name, f"config: {name}", name in config_keys)
    for name in names["commands"]:
        add("commands", name, f"command: {name}", COMMAND_ALIASES.get(name, name) in commands)
    return rows


def _note(key: str, status: str, name: str) -> str:
    if status == "unsupported":
        return UNSUPPORTED.get(key, "")
    if status == "refused":
        return REFUSED[key]
    if key.startswith("config: "):
        return CONFIG_NOTES.get(name, "")
    if key.startswith("command: "):
        return f"`waypoint {COMMAND_ALIASES.get(name, name)}`"
    return ""


TITLES = {
    "dbos": "Package exports (`from dbos import ...`)",
    "DBOS": "`DBOS`",
    "DBOSClient": "`DBOSClient`",
    "Queue": "`Queue`",
    "Debouncer": "`Debouncer`",
    "DebouncerClient": "`DebouncerClient`",
    "WorkflowHandle": "`WorkflowHandle`",
    "WorkflowHandleAsync": "`WorkflowHandleAsync`",
    "dbos.error": "Errors (`dbos.error`)",
    "DBOSConfig": "Configuration keys (`DBOSConfig`)",
    "commands": "Commands (`dbos` → `waypoint`)",
}
MARK = {"supported": "✅ supported", "refused": "⛔ raises", "unsupported": "❌ unsupported"}


def render() -> str:
    """The tables, one per group, with a summary line."""
    rows = statuses()
    counts = {s: sum(1 for r in rows if r[3] == s) for s in MARK}
    out = [
        f"{len(rows)} names of dbos 2.31.1: **{counts['supported']} supported**, "
        f"{counts['refused']} refused with a clear error, {counts['unsupported']} unsupported.",
        "",
    ]
    for group, title in TITLES.items():
        group_rows = [r for r in rows if r[0] == group]
        out += [f"### {title}", "", "| Name | Status | Notes |", "| --- | --- | --- |"]
        for _, name, key, status in group_rows:
            out.append(f"| `{name}` | {MARK[status]} | {_note(key, status, name)} |")
        out.append("")
    return "\n".join(out)


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    """mkdocs hook: fill the marker of the compatibility page."""
    return markdown.replace(MARKER, render()) if MARKER in markdown else markdown


if __name__ == "__main__":
    if sys.argv[1:] == ["--capture"]:
        print(json.dumps(capture(), indent=1))
    else:
        print(render())
