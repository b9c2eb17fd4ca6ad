"""Role-based access to workflows and steps, as DBOS checks it.

A function may require roles (``@DBOS.required_roles``), or take its class's default
(``@DBOS.default_required_roles``); the caller's authenticated roles must contain one of them,
and the first that matches becomes the *assumed role* while the function runs.

Decorators stack in either order and a class decorator runs after its methods are defined,
so the rule is one mutable ``RoleRule`` shared by every layer of a decorated function:
``functools.wraps`` copies the attribute that holds it onto each wrapper, and whichever
decorator comes first creates it.

The engine checks a workflow's rule again when its body starts (started, dequeued or
recovered), against the authentication recorded with the workflow, so a denied workflow
ends in ``ERROR`` instead of staying pending.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Optional

from waypoint.core.context import auth_in_scope, current_auth
from waypoint.core.types import Auth
from waypoint.error import DBOSNotAuthorizedError

_ATTR = "__waypoint_roles__"


@dataclass
class RoleRule:
    """The roles a function requires: its own, else its class's default."""

    required: Optional[list[str]] = None
    class_default: Optional[list[str]] = None

    def roles(self) -> Optional[list[str]]:
        return self.required if self.required is not None else self.class_default


def find_rule(func: Any) -> Optional[RoleRule]:
    """The rule on ``func`` or on any function it wraps (``__wrapped__``)."""
    seen = 0
    while func is not None and seen < 100:
        rule = getattr(func, _ATTR, None)
        if isinstance(rule, RoleRule):
            return rule
        func = getattr(func, "__wrapped__", None)
        seen += 1
    return None


def rule_for(func: Callable[..., Any]) -> RoleRule:
    """The rule shared by ``func`` and its wrappers, created on first use."""
    rule = find_rule(func)
    if rule is None:
        rule = RoleRule()
        setattr(func, _ATTR, rule)
    return rule


def check_roles(rule: Optional[RoleRule], auth: Optional[Auth], name: str) -> Optional[str]:
    """The role ``auth`` assumes to call ``name`` (None when nothing is required); raises
    ``DBOSNotAuthorizedError`` when none of the required roles was granted."""
    required = rule.roles() if rule is not None else None
    if not required:
        return None
    if auth is None or auth.roles is None:
        raise DBOSNotAuthorizedError(
            f"Function {name} requires a role, but was called in a context without "
            "authentication information"
        )
    for role in required:
        if role in auth.roles:
            return role
    raise DBOSNotAuthorizedError(
        f"Function {name} has required roles, but user is not authenticated for any of them"
    )


def with_role(auth: Optional[Auth], role: Optional[str]) -> Optional[Auth]:
    """A copy of ``auth`` that assumes ``role`` (None: keeps the role it had)."""
    if auth is None:
        return None
    roles = list(auth.roles) if auth.roles is not None else None
    return Auth(auth.user, roles, role if role is not None else auth.assumed_role)


@contextlib.contextmanager
def authorized(rule: Optional[RoleRule], name: str) -> Iterator[None]:
    """Check the caller's roles for ``name`` and assume the matching role inside the block."""
    auth = auth_in_scope()
    role = check_roles(rule, auth, name)
    if role is None:
        yield
        return
    token = current_auth.set(with_role(auth, role))
    try:
        yield
    finally:
        current_auth.reset(token)
