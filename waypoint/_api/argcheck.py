"""Arguments of the public operations checked against their type hints, at the door.

Every method of ``DBOS`` and ``DBOSClient`` written once as an operation (``_api.surface``)
passes through here first. A value of the wrong type — a list for a workflow ID, bytes for a
topic, ``True`` for a limit — would otherwise travel down to the driver and fail there with
a message naming neither the method nor the argument (``Error binding parameter 1``), or,
worse, be accepted by one backend and refused by the other. Only the simple hints are
checked (``str``, ``int``, ``float``, ``bool``, their ``Optional`` forms and lists of them);
values typed ``Any`` (messages, event values, workflow inputs) go to the serializer, which
names what it cannot store.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Sequence
from typing import Any, Optional, Union

from waypoint.error import WaypointArgumentError

Check = Callable[[Any], bool]

_SIMPLE: dict[Any, tuple[Check, str]] = {
    str: (lambda v: isinstance(v, str), "a string"),
    int: (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    float: (
        lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        "a number",
    ),
    bool: (lambda v: isinstance(v, bool), "True or False"),
}


def _checker(hint: Any) -> Optional[tuple[Check, str]]:
    """A check and its description for ``hint``, or None when the hint is not simple."""
    if hint in _SIMPLE:
        return _SIMPLE[hint]
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is Union:
        parts = [_checker(a) for a in args if a is not type(None)]
        if any(p is None for p in parts) or not parts:
            return None
        checks = [p for p in parts if p is not None]
        optional = type(None) in args
        desc = " or ".join(d for _, d in checks) + (" or None" if optional else "")
        return (
            lambda v: (optional and v is None) or any(c(v) for c, _ in checks),
            desc,
        )
    if origin in (list, Sequence, typing.Sequence) and len(args) == 1:
        inner = _checker(args[0])
        if inner is None:
            return None
        check, desc = inner
        # A tuple is as good as a list to every operation that takes one.
        return (
            lambda v: isinstance(v, (list, tuple)) and all(check(x) for x in v),
            f"a list of {desc.removeprefix('a ').removeprefix('an ')}s",
        )
    return None


class ArgumentChecker:
    """Binds a call to the operation's public signature and checks each simple argument."""

    def __init__(self, name: str, flow: Callable[..., Any], signature: inspect.Signature) -> None:
        self.name = name
        self.signature = signature
        self.checks: dict[str, tuple[Check, str]] = {}
        raw = inspect.get_annotations(flow)
        namespace = {**vars(typing), **getattr(flow, "__globals__", {})}
        for param in signature.parameters:
            hint = raw.get(param)
            if isinstance(hint, str):
                try:  # one by one: a hint only a type checker can resolve is left unchecked
                    hint = eval(hint, namespace)
                except Exception:
                    continue
            found = _checker(hint) if hint is not None else None
            if found is not None:
                self.checks[param] = found

    def __call__(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise WaypointArgumentError(f"{self.name}(): {exc}") from None
        for param, value in bound.arguments.items():
            found = self.checks.get(param)
            if found is not None and not found[0](value):
                raise WaypointArgumentError(
                    f"{self.name}() argument {param!r} must be {found[1]}, "
                    f"got {type(value).__name__}"
                )
