"""mkdocs hook: the class properties of ``DBOS`` (``DBOS.workflow_id`` and the like) as a
table, from their docstrings. The API reference inspects the live class, where a class
property reads as its current value (``None``), not as a documented member."""

from __future__ import annotations

import inspect
from typing import Any

MARKER = "<!-- dbos-properties -->"


def render() -> str:
    from waypoint import DBOS

    rows = ["| Property | What it is |", "| --- | --- |"]
    for name in sorted(dir(DBOS)):
        static = inspect.getattr_static(DBOS, name)
        if not name.startswith("_") and type(static).__name__ == "classproperty":
            doc = " ".join((static.__doc__ or "").split())
            rows.append(f"| `DBOS.{name}` | {doc} |")
    return "\n".join(rows)


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    return markdown.replace(MARKER, render()) if MARKER in markdown else markdown
