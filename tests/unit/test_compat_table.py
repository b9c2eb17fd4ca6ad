"""The DBOS compatibility table of the docs (``docs/_hooks/compat.py``) tells the truth about
this checkout: every name of dbos 2.31.1 that Waypoint lacks has a reason, no name Waypoint now
offers is still listed as unsupported, and the page shows one row per name.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

HOOK = Path(__file__).resolve().parents[2] / "docs" / "_hooks" / "compat.py"


def _compat() -> ModuleType:
    spec = importlib.util.spec_from_file_location("waypoint_docs_compat", HOOK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


compat = _compat()


def test_every_missing_name_has_a_reason() -> None:
    missing = [key for _, _, key, status in compat.statuses() if status == "unsupported"]
    unexplained = [key for key in missing if not compat.UNSUPPORTED.get(key)]
    assert unexplained == [], (
        "Waypoint lacks these DBOS names: give each a reason in UNSUPPORTED "
        f"(docs/_hooks/compat.py): {unexplained}"
    )


def test_no_name_waypoint_offers_is_listed_as_unsupported() -> None:
    rows = {key: status for _, _, key, status in compat.statuses()}
    stale = [key for key in compat.UNSUPPORTED if rows.get(key) != "unsupported"]
    assert stale == [], (
        "These names are now offered (or no longer exist in DBOS's list): remove them from "
        f"UNSUPPORTED in docs/_hooks/compat.py, or move them to REFUSED if they only raise: {stale}"
    )
    unknown = [k for k in compat.REFUSED if k not in rows]
    unknown += [k for k in compat.CONFIG_NOTES if f"config: {k}" not in rows]
    assert unknown == [], f"not names of dbos 2.31.1: {unknown}"


def test_the_page_has_a_row_per_name() -> None:
    names = compat.load()
    total = sum(len(v) for v in names.values())
    table = compat.render()
    assert table.count("\n| `") == total
    page = compat.on_page_markdown(f"# DBOS\n\n{compat.MARKER}\n")
    assert compat.MARKER not in page
    assert "| `start_workflow` | ✅ supported |" in page
