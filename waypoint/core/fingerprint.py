"""Per-workflow fingerprints: a hash of the code a workflow can reach.

The application version changes whenever any workflow changes, and DBOS's rule (a process
recovers only workflows of its own version) then strands every in-flight workflow on a deploy.
With ``version_compatibility: "fingerprint"`` (a Waypoint extension) a process of a newer version
may also take an older version's workflow whose fingerprint it still matches: the code that
workflow runs did not change. Every process records its fingerprints at launch (one row per
registered workflow and version, in Waypoint's ``workflow_fingerprints`` table), whether or not
it checks them, so the version after it can.

What a workflow's fingerprint covers, found by reading code objects (never by running code):

* the workflow function itself: its syntax tree without docstrings, decorators included (so
  comments and formatting change nothing; without source, its bytecode);
* every registered step, transaction, workflow and class method it can reach, and, recursively,
  what those reach: a name the code loads (a global, a closure variable, an attribute name
  such as ``self.charge`` or ``module.charge``, a string naming a registered workflow) that
  resolves to a registered function, or that is the bare name of a registered method;
* plain functions it calls that live in the application's own packages (the top-level
  packages of the modules that register workflows or steps), recursively, so a helper that
  calls steps is covered too; values of global dicts, lists and tuples are searched one level
  deep for functions.

What it cannot see: code reached dynamically (``getattr(obj, name)()``, a function passed in
as an argument or read from data), library code (Waypoint, installed packages, the standard
library), the values of global variables and constants, class attributes that are not
functions, and the data itself (inputs, outputs and recorded step results an old run hands to
new code). A change there needs ``DBOS.patch`` or a new workflow name.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import marshal
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Optional

from waypoint.core.registrations import Registry
from waypoint.core.versioning import normalized_source

logger = logging.getLogger("waypoint")

# Part of every fingerprint: a change to what a fingerprint covers must change them all.
SCHEME = "waypoint-fingerprint-1"
# A bound on the functions one walk visits (a walk that reaches this many covers less).
MAX_FUNCTIONS = 2000
LIBRARY_ROOTS = frozenset({"waypoint", "dbos", "builtins"})


@dataclass(frozen=True)
class Node:
    """One function a workflow can reach: how it is labelled in the hash, and its code."""

    label: str
    func: Callable[..., Any]


def _plain(obj: Any) -> Any:
    """The function behind a static/class method or a bound method."""
    if isinstance(obj, (staticmethod, classmethod)):
        return obj.__func__
    if inspect.ismethod(obj):
        return obj.__func__
    return obj


def code_text(func: Callable[..., Any]) -> str:
    """A function's code, normalized as the application version normalizes it; its bytecode
    when there is no source (a function made by ``exec``)."""
    try:
        return normalized_source(func)
    except (OSError, TypeError):
        code = getattr(func, "__code__", None)
        if code is None:
            return repr(func)
        try:
            return marshal.dumps(code).hex()
        except ValueError:
            return repr(code.co_code)


def _codes(code: types.CodeType) -> Iterator[types.CodeType]:
    """A code object and the ones nested in it (lambdas, inner functions, comprehensions)."""
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _codes(const)


class Walker:
    """Finds what workflows reach, for one registry (built once per launch)."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.by_func: dict[int, Node] = {}  # id(user function or wrapper) -> its registration
        self.methods: dict[str, list[Node]] = {}  # bare name of a registered method -> nodes
        self.by_workflow_name: dict[str, Node] = {}
        self.roots: set[str] = set()
        # Each function's normalized code and direct references, once per launch: a step
        # reached by many workflows is read once (reading source is the expensive part).
        self._texts: dict[int, str] = {}
        self._edges: dict[int, list[Node]] = {}
        for info in registry.workflows.values():
            node = Node(f"workflow {info.name}", info.func)
            self._index(node, info.func, info.wrapper)
            self.by_workflow_name[info.name] = node
        for entry in registry.steps.values():
            self._index(Node(f"step {entry.name}", entry.func), entry.func, None)

    def _index(self, node: Node, func: Callable[..., Any], wrapper: Any) -> None:
        self.by_func[id(func)] = node
        if wrapper is not None:
            self.by_func[id(wrapper)] = node
        qualname = getattr(func, "__qualname__", "")
        if "." in qualname and "<locals>" not in qualname.rsplit(".", 1)[0]:
            self.methods.setdefault(qualname.rsplit(".", 1)[1], []).append(node)
        module = getattr(func, "__module__", None) or ""
        root = module.split(".", 1)[0]
        if root and root not in LIBRARY_ROOTS:
            self.roots.add(root)

    # -- resolving what a function's code names ------------------------------------------------
    def registered(self, obj: Any) -> Optional[Node]:
        obj = _plain(obj)
        txn = getattr(obj, "__waypoint_transaction__", None)
        if isinstance(txn, str):
            inner = getattr(obj, "__wrapped__", obj)
            return Node(f"transaction {txn}", inner)
        step = getattr(obj, "__waypoint_step__", None)
        if step is not None:
            return Node(f"step {step.name}", step.func)
        info = getattr(obj, "__waypoint_workflow__", None)
        if info is not None:
            return Node(f"workflow {info.name}", info.func)
        try:
            return self.by_func.get(id(obj))
        except TypeError:
            return None

    def _application_function(self, obj: Any) -> Optional[Node]:
        obj = _plain(obj)
        if not isinstance(obj, types.FunctionType):
            return None
        module = obj.__module__ or ""
        if module.split(".", 1)[0] not in self.roots:
            return None
        return Node(f"function {module}.{obj.__qualname__}", obj)

    def _owner(self, func: types.FunctionType) -> Optional[Any]:
        """The class a method is defined in, found through its module's globals."""
        parts = func.__qualname__.split(".")[:-1]
        if not parts or "<locals>" in parts:
            return None
        obj: Any = func.__globals__.get(parts[0])
        for part in parts[1:]:
            obj = getattr(obj, part, None)
        return obj if isinstance(obj, type) else None

    def references(self, func: Any) -> Iterator[Any]:
        """Every object the function's code may name (over-approximated)."""
        code = getattr(func, "__code__", None)
        if code is None:
            return
        names: set[str] = set()
        strings: set[str] = set()
        for c in _codes(code):
            names.update(c.co_names)
            names.update(c.co_freevars)
            strings.update(k for k in c.co_consts if isinstance(k, str))
        scopes: list[Any] = []
        glb = getattr(func, "__globals__", {})
        for name in sorted(names):
            if name in glb:
                value = glb[name]
                yield value
                if isinstance(value, (types.ModuleType, type)):
                    scopes.append(value)
                elif isinstance(value, (dict, list, tuple, set, frozenset)):
                    yield from _container_values(value)
        for cell in getattr(func, "__closure__", None) or ():
            try:
                yield cell.cell_contents
            except ValueError:  # an empty cell
                continue
        owner = self._owner(func) if isinstance(func, types.FunctionType) else None
        if owner is not None:
            scopes.append(owner)
        for scope in scopes:
            for name in sorted(names):
                value = _attribute(scope, name)
                if value is not None:
                    yield value
        for name in sorted(names):  # self.charge(...): any registered method of that name
            yield from self.methods.get(name, ())
        for text in sorted(strings):  # a workflow started or enqueued by its name
            node = self.by_workflow_name.get(text)
            if node is not None:
                yield node

    def reach(self, root: Node) -> list[Node]:
        """The root and every node it reaches, each once."""
        seen: dict[int, Node] = {}
        todo = [root]
        while todo and len(seen) < MAX_FUNCTIONS:
            node = todo.pop()
            if id(node.func) in seen:
                continue
            seen[id(node.func)] = node
            todo.extend(n for n in self._direct(node) if id(n.func) not in seen)
        return list(seen.values())

    def _direct(self, node: Node) -> list[Node]:
        key = id(node.func)
        if key not in self._edges:
            found = (
                r if isinstance(r, Node) else self._resolve(r) for r in self.references(node.func)
            )
            self._edges[key] = [n for n in found if n is not None]
        return self._edges[key]

    def _text(self, node: Node) -> str:
        key = id(node.func)
        if key not in self._texts:
            self._texts[key] = code_text(node.func)
        return self._texts[key]

    def _resolve(self, obj: Any) -> Optional[Node]:
        return self.registered(obj) or self._application_function(obj)

    def fingerprint(self, workflow_name: str) -> Optional[str]:
        root = self.by_workflow_name.get(workflow_name)
        if root is None:
            return None
        parts = sorted({f"{n.label}\n{self._text(n)}" for n in self.reach(root)})
        hasher = hashlib.sha256(SCHEME.encode())
        for part in parts:
            hasher.update(b"\x00" + part.encode())
        return hasher.hexdigest()


def _attribute(scope: Any, name: str) -> Any:
    try:
        value = inspect.getattr_static(scope, name)
    except AttributeError:
        return None
    return (
        value if callable(_plain(value)) or isinstance(value, (staticmethod, classmethod)) else None
    )


def _container_values(value: Any) -> Iterator[Any]:
    items = value.values() if isinstance(value, dict) else value
    try:
        for item in list(items)[:1000]:
            if callable(item):
                yield item
    except TypeError:
        return


def workflow_fingerprints(registry: Registry) -> dict[str, str]:
    """The fingerprint of every registered workflow, by registered name. A workflow whose code
    cannot be read gets none (and so is never taken by another version)."""
    walker = Walker(registry)
    found: dict[str, str] = {}
    for name in sorted(registry.workflows):
        try:
            fp = walker.fingerprint(name)
        except Exception as exc:  # a walk must never stop a launch
            logger.debug("no fingerprint for workflow %s: %s", name, exc)
            continue
        if fp is not None:
            found[name] = fp
    return found
