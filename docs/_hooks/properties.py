"""mkdocs hook: the class properties of ``DBOS`` (``DBOS.workflow_id`` and the like).

The API reference is built by inspecting the live classes (``inspect.getmembers``), where a
class property reads as its current value (``None`` outside a workflow) and one that only has a
value in context raises (``DBOS.sql_session`` outside a transaction), which would abort the
build. So, while the site builds, ``getmembers`` leaves class properties out, and this hook
lists them in a table of their own, from their docstrings, where the page has the marker.
"""

from __future__ import annotations

import inspect
from typing import Any

MARKER = "<!-- dbos-properties -->"


def _is_classproperty(cls: Any, name: str) -> bool:
    try:
        static = inspect.getattr_static(cls, name)
    except AttributeError:
        return False
    return type(static).__name__ == "classproperty"


_getmembers = inspect.getmembers


def _getmembers_without_classproperties(obj: Any, predicate: Any = None) -> list[Any]:
    if not inspect.isclass(obj) or not any(_is_classproperty(obj, n) for n in dir(obj)):
        return _getmembers(obj, predicate)
    members = []
    for name in dir(obj):
        if _is_classproperty(obj, name):
            continue
        value = getattr(obj, name)
        if predicate is None or predicate(value):
            members.append((name, value))
    return members


inspect.getmembers = _getmembers_without_classproperties


def render() -> str:
    from waypoint import DBOS

    rows = ["| Property | What it is |", "| --- | --- |"]
    for name in sorted(dir(DBOS)):
        if not name.startswith("_") and _is_classproperty(DBOS, name):
            doc = " ".join((inspect.getattr_static(DBOS, name).__doc__ or "").split())
            rows.append(f"| `DBOS.{name}` | {doc} |")
    return "\n".join(rows)


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    return markdown.replace(MARKER, render()) if MARKER in markdown else markdown
