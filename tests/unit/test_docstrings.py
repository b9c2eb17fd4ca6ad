"""Every public name has a docstring: what ``waypoint`` exports (``__all__``), the public
members of each exported class (methods, properties, the sync/async operation twins), and the
errors of ``waypoint.error``. The API reference of the documentation site is generated from
these docstrings, so a missing one is a hole in the docs.
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Iterator
from typing import Any

import waypoint
import waypoint.error

# Members that come from Python itself (object, Exception, Enum, TypedDict's dict...) are not
# ours to document.
FOREIGN_MODULES = ("builtins", "abc", "enum", "typing", "typing_extensions")


def _is_ours(cls: type, member: str) -> bool:
    for base in cls.__mro__:
        if member in vars(base):
            return not base.__module__.startswith(FOREIGN_MODULES)
    return False


def _doc(obj: Any) -> str:
    if isinstance(obj, (classmethod, staticmethod)):
        obj = obj.__func__
    return (getattr(obj, "__doc__", None) or "").strip()


def _member_docs(cls: type) -> Iterator[tuple[str, str]]:
    """``(name, docstring)`` of each public callable or property ``cls`` defines."""
    for name in dir(cls):
        if name.startswith("_") or not _is_ours(cls, name):
            continue
        static = inspect.getattr_static(cls, name)
        if isinstance(static, property) or type(static).__name__ == "classproperty":
            yield name, _doc(static)
            continue
        value = getattr(cls, name)  # a descriptor's bound form carries the operation's doc
        if callable(value):
            yield name, _doc(value) or _doc(static)


def undocumented(namespace: Any, names: list[str]) -> list[str]:
    """The public names (and their classes' public members) that have no docstring."""
    missing = []
    for name in names:
        obj = getattr(namespace, name)
        if not (
            inspect.isclass(obj) or inspect.isfunction(obj) or isinstance(obj, types.ModuleType)
        ):
            continue  # a type alias or a constant: nothing to hang a docstring on
        own_doc = _doc(obj)
        if inspect.isclass(obj) and issubclass(obj, BaseException):
            own_doc = "" if obj.__doc__ in (Exception.__doc__, BaseException.__doc__) else own_doc
        if not own_doc:
            missing.append(name)
        if inspect.isclass(obj):
            missing += [f"{name}.{m}" for m, doc in _member_docs(obj) if not doc]
    return missing


def test_the_check_finds_a_missing_docstring() -> None:
    class Documented:
        """Here."""

        def good(self) -> None:
            """Here."""

        def bad(self) -> None:
            pass

        @property
        def bare(self) -> int:
            return 1

    class Bare:
        pass

    namespace = types.SimpleNamespace(Documented=Documented, Bare=Bare, alias=int | None)
    assert undocumented(namespace, ["Documented", "Bare", "alias"]) == [
        "Documented.bad",
        "Documented.bare",
        "Bare",
    ]


def test_every_export_of_waypoint_has_a_docstring() -> None:
    names = [n for n in waypoint.__all__ if not n.startswith("__")]
    assert undocumented(waypoint, names) == []


def test_every_error_has_a_docstring() -> None:
    assert undocumented(waypoint.error, list(waypoint.error.__all__)) == []
