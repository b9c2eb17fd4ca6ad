"""The package's layers point one way, and no modules import each other in a loop.

``waypoint`` → ``_api`` → (``queues``, ``scheduling``) → ``core`` → ``storage``; ``admin``,
``cli`` and ``console`` sit beside ``_api`` and use only it (plus the public ``error`` module).
Every import counts: at module level, inside functions, and under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "waypoint"

# Lower numbers are higher layers; an import must go to a larger number.
RANK = {
    "waypoint": 0,
    "_api": 1,
    "admin": 1,
    "cli": 1,
    "console": 1,
    "queues": 2,
    "scheduling": 2,
    "core": 3,
    "error": 4,  # the public errors: core and above raise them, storage does not know them
    "storage": 5,
    "__version__": 6,
}
# Imports between packages of the same rank that are allowed (and acyclic by construction).
SIDEWAYS = {
    ("admin", "_api"),
    ("admin", "console"),  # the admin server mounts the console's pages
    ("cli", "_api"),
    ("cli", "admin"),
    ("console", "_api"),
    ("scheduling", "queues"),
}
# What the thin surfaces may use.
ONLY = {
    "admin": {"admin", "_api", "console", "error", "__version__"},
    "cli": {"cli", "admin", "_api", "error", "__version__"},
    "console": {"console", "_api", "error", "__version__"},
}


def _modules() -> dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """Every waypoint module ``name`` imports, wherever the import statement is."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # "from package import module" imports that module; "from module import name"
            # imports the module.
            candidates = [
                f"{module}.{alias.name}" if f"{module}.{alias.name}" in MODULES else module
                for alias in node.names
            ]
        else:
            continue
        for target in candidates:
            # "import waypoint.core.x" also imports its parents; the deepest module is the edge.
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target != name and target.startswith("waypoint"):
                out.add(target)
    return out


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "waypoint"


def test_every_package_has_a_rank() -> None:
    assert {_layer(m) for m in MODULES} <= set(RANK)


def _violations(graph: dict[str, set[str]]) -> list[str]:
    wrong = []
    for source, targets in sorted(graph.items()):
        src = _layer(source)
        for target in sorted(targets):
            dst = _layer(target)
            if src == dst or target == "waypoint":
                continue
            if src in ONLY and dst not in ONLY[src]:
                wrong.append(f"{source} -> {target} ({src} may use only {sorted(ONLY[src])})")
            elif (src, dst) not in SIDEWAYS and RANK[dst] <= RANK[src]:
                wrong.append(f"{source} -> {target} (points up from {src} to {dst})")
    return wrong


def test_imports_point_down_the_layers() -> None:
    assert _violations(GRAPH) == []


def test_the_layer_check_finds_wrong_imports() -> None:
    graph = {
        "waypoint.core.engine": {"waypoint.queues.dispatcher"},  # up
        "waypoint.storage.x": {"waypoint.error"},  # storage raising public errors
        "waypoint.admin.routes": {"waypoint.core.runtime"},  # a surface past the API
        "waypoint.queues.model": {"waypoint.scheduling.cron"},  # sideways, the wrong way
        "waypoint._api.dbos": {"waypoint.core.runtime", "waypoint.storage.registry"},  # fine
    }
    assert _violations(graph) == [
        "waypoint.admin.routes -> waypoint.core.runtime (admin may use only "
        "['__version__', '_api', 'admin', 'console', 'error'])",
        "waypoint.core.engine -> waypoint.queues.dispatcher (points up from core to queues)",
        "waypoint.queues.model -> waypoint.scheduling.cron (points up from queues to scheduling)",
        "waypoint.storage.x -> waypoint.error (points up from storage to error)",
    ]


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one member (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_module_imports_itself_through_others() -> None:
    # A package's __init__ importing its own submodules is a re-export, not a loop.
    graph = {
        m: {t for t in ts if not (m != "waypoint" and t.startswith(m + "."))}
        for m, ts in GRAPH.items()
    }
    assert _cycles(graph) == []


def test_no_packages_import_each_other() -> None:
    packages: dict[str, set[str]] = defaultdict(set)
    for source, targets in GRAPH.items():
        for target in targets:
            if _layer(source) != _layer(target) and _layer(source) != "waypoint":
                packages[_layer(source)].add(_layer(target))
    assert _cycles(packages) == []


@pytest.mark.parametrize(
    ("graph", "expected"),
    [
        ({"a": {"b"}, "b": {"a"}}, [["a", "b"]]),
        ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
    ],
)
def test_the_cycle_finder_finds_cycles(
    graph: dict[str, set[str]], expected: list[list[str]]
) -> None:
    assert _cycles(graph) == expected


def test_deferred_and_type_checking_imports_are_seen(tmp_path: Path) -> None:
    source = tmp_path / "probe.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from waypoint.core.engine import Engine\n"
        "def f():\n    from waypoint.storage import errors\n    import waypoint.error\n"
    )
    assert _imports("waypoint.probe", source) == {
        "waypoint.core.engine",
        "waypoint.storage.errors",
        "waypoint.error",
    }
