"""Workflow fingerprints (waypoint/core/fingerprint.py): each covers the workflow and what it
can reach, and nothing else. An application module is written in two versions under the same
module name, imported with the real decorators, and the fingerprints compared."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from waypoint.core.fingerprint import workflow_fingerprints
from waypoint.core.registrations import REGISTRY

APP = '''
from waypoint import DBOS, DBOSConfiguredInstance

LIMIT = {limit}


@DBOS.step()
def charge(x):
    return x + {charge}


@DBOS.step()
def audit(x):
    return x * {audit}


def helper(x):
    return charge(x)


def unrelated_helper():
    return {unrelated}


@DBOS.workflow()
def checkout(x):
    """Docstrings do not count."""
    return helper(x)  # comments do not count either


@DBOS.workflow()
def report(x):
    return audit(x)


@DBOS.workflow()
def parent(x):
    return checkout(x)


@DBOS.workflow()
def by_name(x):
    return DBOS.start_workflow_by_name("report", x)


@DBOS.workflow()
def via_closure(x):
    step = audit

    def inner():
        return step(x)

    return inner()


TABLE = {{"audit": audit}}


@DBOS.workflow()
def via_table(x):
    return TABLE["audit"](x)


@DBOS.workflow()
def uses_constant(x):
    return x < LIMIT


@DBOS.dbos_class()
class Billing(DBOSConfiguredInstance):
    @DBOS.step()
    def bill(self, x):
        return x + {bill}

    @DBOS.workflow()
    def run(self, x):
        return self.bill(x)
'''

DEFAULTS = {"limit": 10, "charge": 1, "audit": 2, "unrelated": 3, "bill": 4}


@pytest.fixture
def load(tmp_path: Path) -> Iterator[Any]:
    """Import the application with some values changed; return its fingerprints."""
    saved = (
        dict(REGISTRY.workflows),
        dict(REGISTRY.steps),
        dict(REGISTRY.classes),
        dict(REGISTRY.instances),
        list(REGISTRY.scheduled),
    )
    sys.path.insert(0, str(tmp_path))
    loads = 0

    def fingerprints(source: str = APP, **changes: Any) -> dict[str, str]:
        nonlocal loads
        loads += 1
        REGISTRY.clear()
        sys.modules.pop("fp_app", None)
        folder = tmp_path / f"v{loads}"
        folder.mkdir()
        (folder / "fp_app.py").write_text(source.format(**{**DEFAULTS, **changes}))
        sys.path.insert(0, str(folder))
        try:
            importlib.import_module("fp_app")
        finally:
            sys.path.remove(str(folder))
        return workflow_fingerprints(REGISTRY)

    yield fingerprints
    sys.modules.pop("fp_app", None)
    sys.path.remove(str(tmp_path))
    REGISTRY.clear()
    REGISTRY.workflows.update(saved[0])
    REGISTRY.steps.update(saved[1])
    REGISTRY.classes.update(saved[2])
    REGISTRY.instances.update(saved[3])
    REGISTRY.scheduled.extend(saved[4])


def changed(before: dict[str, str], after: dict[str, str]) -> set[str]:
    assert before.keys() == after.keys()
    return {name for name in before if before[name] != after[name]}


def test_same_code_same_fingerprints(load: Any) -> None:
    first = load()
    assert {"checkout", "report", "parent", "Billing.run", "<temp>.charge"} <= first.keys()
    assert changed(first, load()) == set()


def test_a_reachable_step_changes_its_workflows_only(load: Any) -> None:
    before = load()
    # charge is reached through a plain helper, and through a child workflow.
    assert changed(before, load(charge=5)) == {"checkout", "parent", "<temp>.charge"}


def test_an_unrelated_function_changes_nothing(load: Any) -> None:
    before = load()
    assert changed(before, load(unrelated=99)) == set()


def test_steps_reached_by_closure_table_and_name(load: Any) -> None:
    before = load()
    assert changed(before, load(audit=7)) == {
        "report",
        "by_name",  # "report" named as a string: the workflow started by name
        "via_closure",
        "via_table",
        "<temp>.audit",
    }


def test_methods_through_self(load: Any) -> None:
    before = load()
    assert changed(before, load(bill=8)) == {"Billing.run", "<temp>.Billing.bill"}


def test_formatting_comments_and_docstrings_do_not_count(load: Any) -> None:
    before = load()
    edited = APP.replace('    """Docstrings do not count."""\n', "").replace(
        "# comments do not count either", "# another comment"
    )
    edited = edited.replace("return helper(x)", "return   helper( x )")
    assert changed(before, load(edited)) == set()


def test_changing_the_workflow_itself_or_a_decorator(load: Any) -> None:
    before = load()
    edited = APP.replace("return x < LIMIT", "return x <= LIMIT")
    assert changed(before, load(edited)) == {"uses_constant"}
    edited = APP.replace("@DBOS.step()\ndef audit", "@DBOS.step(retries_allowed=True)\ndef audit")
    assert "report" in changed(before, load(edited))


def test_global_values_are_not_seen(load: Any) -> None:
    """Documented blind spot: a constant's value is data, not code."""
    before = load()
    assert changed(before, load(limit=11)) == set()
