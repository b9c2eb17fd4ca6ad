"""What the ``waypoint`` command prints: JSON with the raw stored values (``--json``), or a
table for people that fits the terminal (100 columns is enough) without ever cutting an ID,
with epoch-millisecond times shown as local ISO timestamps.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Any

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from waypoint._api.public_types import WorkflowStatus

console = Console()

# Fields that hold epoch milliseconds.
TIME_FIELDS = frozenset(
    {
        "created_at",
        "updated_at",
        "dequeued_at",
        "completed_at",
        "delay_until_epoch_ms",
        "workflow_deadline_epoch_ms",
        "started_at_epoch_ms",
        "completed_at_epoch_ms",
    }
)


def is_id(field: str) -> bool:
    return field.endswith("_id") or field == "id"


def local_time(epoch_ms: int) -> str:
    """``2026-12-01T21:04:05+01:00``: the instant in this machine's time zone, to the second
    (``--json`` has the milliseconds)."""
    moment = dt.datetime.fromtimestamp(epoch_ms / 1000, tz=dt.timezone.utc).astimezone()
    return moment.isoformat(timespec="seconds")


def cell(field: str, value: Any, short: tuple[str, ...] = ()) -> str:
    if value is None:
        return ""
    if field in TIME_FIELDS and isinstance(value, int):
        return local_time(value)
    if field in short:
        return repr(value)[:60]
    return str(value)


def table(columns: str, items: list[Any], short: tuple[str, ...] = ()) -> None:
    """Print ``items`` (records or dicts) as a table. ``columns`` is ``"Title=field ..."``
    (``_`` in a title is a space); fields in ``short`` are shown abbreviated. A column empty
    in every row is left out. IDs, statuses and times never wrap (such a column is as wide as
    its longest value); the other columns wrap to fit the terminal."""
    spec = [column.split("=") for column in columns.split()]
    rows = [
        [cell(f, item[f] if isinstance(item, dict) else getattr(item, f), short) for _, f in spec]
        for item in items
    ]
    keep = [i for i in range(len(spec)) if not rows or any(row[i] for row in rows)]
    out = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1, 0, 0))
    for i in keep:
        title, field = spec[i][0].replace("_", " "), spec[i][1]
        if is_id(field) or field in TIME_FIELDS or field == "status":
            width = max([len(row[i]) for row in rows] + [len(title)])
            out.add_column(title, no_wrap=True, min_width=width)
        else:
            out.add_column(title, overflow="fold")
    for row in rows:
        out.add_row(*(row[i] for i in keep))
    console.print(out)


def status_dict(s: WorkflowStatus) -> dict[str, Any]:
    return {
        k: (v if isinstance(v, (str, int, float, bool, type(None), list, dict)) else repr(v))
        for k, v in vars(s).items()
    }


def show(
    items: Any,
    as_json: bool,
    columns: str,
    *,
    short: tuple[str, ...] = (),
    default: Callable[[Any], str] = str,
) -> None:
    """Print records as JSON (``--json``; ``default`` for what JSON cannot hold) or as a
    table (see ``table``)."""
    if as_json:
        typer.echo(json.dumps(items, indent=2, default=default))
    else:
        table(columns, items, short)


def show_workflows(rows: list[WorkflowStatus], as_json: bool) -> None:
    show(
        [status_dict(r) for r in rows],
        as_json,
        "ID=workflow_id Status=status Name=name Queue=queue_name Created=created_at",
    )


def show_fields(record: dict[str, Any]) -> None:
    """One record as a two-column table of its fields."""
    table("Field=field Value=value", [{"field": k, "value": cell(k, v)} for k, v in record.items()])
