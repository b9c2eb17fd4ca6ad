"""Authentication in scope and role requirements: ``@DBOS.required_roles``,
``@DBOS.default_required_roles``, ``DBOS.set_authentication`` and the properties that read
them.

The authenticated user and roles live in a context variable (``core.context.current_auth``):
set by ``DBOSContextSetAuth`` or ``set_authentication`` around the code that starts
workflows, recorded with each workflow started there, and bound again from that record while
the workflow's body runs (wherever it runs: inline, on a worker thread, after a recovery).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, Optional, TypeVar, cast

from waypoint._api import decorators, telemetry
from waypoint.core.context import auth_in_scope, current_auth, handler_auth
from waypoint.core.roles import authorized, find_rule, rule_for
from waypoint.core.types import Auth
from waypoint.error import DBOSException

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


def _check_role_list(roles: Any, what: str) -> list[str]:
    if isinstance(roles, str) or not all(isinstance(r, str) for r in roles or ()):
        raise DBOSException(f"{what} takes a list of role names (str), got {roles!r}")
    return list(roles)


def _name_of(func: Callable[..., Any]) -> str:
    """The name DBOS's messages use: the registered name, else the qualified name."""
    for attr in ("__waypoint_workflow__", "__waypoint_step__"):
        entry = getattr(func, attr, None)
        if entry is not None:
            return str(entry.name)
    return str(getattr(func, "__qualname__", repr(func)))


def required_roles(roles: list[str]) -> Callable[[F], F]:
    """Calls of the decorated function need one of ``roles`` among the caller's
    authenticated roles (else ``DBOSNotAuthorizedError``); the first that matches becomes
    ``DBOS.assumed_role`` while it runs. Overrides the class's ``default_required_roles``."""
    wanted = _check_role_list(roles, "required_roles")

    def decorator(func: F) -> F:
        rule = rule_for(func)
        rule.required = wanted
        name = _name_of(func)
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                with authorized(rule, name):
                    return await func(*args, **kwargs)

            return cast(F, async_wrapper)

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with authorized(rule, name):
                return func(*args, **kwargs)

        return cast(F, wrapper)

    return decorator


def default_required_roles(roles: list[str]) -> Callable[[type[T]], type[T]]:
    """The roles every workflow and step of the class requires unless it names its own.
    Registers the class as ``@DBOS.dbos_class()`` does (if it is not already)."""
    wanted = _check_role_list(roles, "default_required_roles")

    def decorator(klass: type[T]) -> type[T]:
        if "__waypoint_class_name__" not in klass.__dict__:
            decorators.dbos_class(None)(klass)
        for value in klass.__dict__.values():
            fn = value.__func__ if isinstance(value, (classmethod, staticmethod)) else value
            if not callable(fn):
                continue
            rule = find_rule(fn)  # every workflow and step has one
            if rule is not None:
                rule.class_default = wanted
        return klass

    return decorator


def set_authentication(user: Optional[str], roles: Optional[list[str]]) -> None:
    """Make ``user`` with ``roles`` the authenticated user of the code that runs from here
    in this thread or task (and of the workflows it starts)."""
    if roles is not None:
        roles = _check_role_list(roles, "set_authentication")
    prior = auth_in_scope()
    auth = Auth(user, roles, prior.assumed_role if prior is not None else None)
    current_auth.set(auth)
    cell = handler_auth.get()
    if cell is not None:  # the rest of the request sees it, whichever thread set it
        cell.auth = auth
    if user is not None:
        telemetry.authenticated(user, roles)  # on the current span, as DBOS does


def current() -> Optional[Auth]:
    return auth_in_scope()
