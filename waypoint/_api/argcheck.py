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
P = inspect.Parameter
_BY_POSITION = (P.POSITIONAL_ONLY, P.POSITIONAL_OR_KEYWORD)
_BY_NAME = (P.POSITIONAL_OR_KEYWORD, P.KEYWORD_ONLY)

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
        # What a call may bind without ``Signature.bind`` (tens of microseconds a call, the
        # largest part of a send's own work): its parameters by position, then by name.
        kinds = [p.kind for p in signature.parameters.values()]
        self._simple = not any(k in (P.VAR_POSITIONAL, P.VAR_KEYWORD) for k in kinds)
        params = signature.parameters.values()
        self._positional = tuple(p.name for p in params if p.kind in _BY_POSITION)
        self._by_name = frozenset(p.name for p in params if p.kind in _BY_NAME)
        self._required = frozenset(p.name for p in params if p.default is P.empty)

    def _bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """The call's arguments by parameter name; ``Signature.bind`` (and its error) for
        any call the plain rules below do not cover."""
        if self._simple and len(args) <= len(self._positional):
            bound = dict(zip(self._positional, args, strict=False))
            if all(k in self._by_name and k not in bound for k in kwargs):
                bound.update(kwargs)
                if self._required.issubset(bound):
                    return bound
        try:
            return dict(self.signature.bind(*args, **kwargs).arguments)
        except TypeError as exc:
            raise WaypointArgumentError(f"{self.name}(): {exc}") from None

    def __call__(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        for param, value in self._bind(args, kwargs).items():
            found = self.checks.get(param)
            if found is not None and not found[0](value):
                raise WaypointArgumentError(
                    f"{self.name}() argument {param!r} must be {found[1]}, "
                    f"got {type(value).__name__}"
                )
