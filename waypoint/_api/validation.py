"""Validating a workflow's arguments from its type hints with pydantic, as DBOS's
``validate_args`` helpers do: ``@DBOS.workflow(validate_args=pydantic_args_validator)``, or
``validate_args=make_pydantic_args_validator(func)``. Validated (and coerced) arguments are the
ones stored and run; a bad argument fails the start before anything is written."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from typing import Any, Optional

from waypoint.error import DBOSException

ArgsValidator = Callable[[tuple[Any, ...], dict[str, Any]], tuple[tuple[Any, ...], dict[str, Any]]]


def pydantic_args_validator(
    args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """A marker: given as ``validate_args``, the decorator replaces it with
    ``make_pydantic_args_validator`` of the decorated function. Never called itself."""
    raise DBOSException(
        "pydantic_args_validator is a marker for @DBOS.workflow(validate_args=...), not a "
        "validator: use make_pydantic_args_validator(func) to build one"
    )


def make_pydantic_args_validator(func: Callable[..., Any]) -> ArgsValidator:
    """A ``validate_args`` callable checking (and coercing) each argument against ``func``'s
    type hints. Needs pydantic 2; the hints are resolved at the first call, so they may name
    classes defined after the function."""
    try:
        from pydantic import TypeAdapter, ValidationError
    except ImportError as exc:
        raise ImportError(
            "make_pydantic_args_validator needs pydantic >= 2 (pip install pydantic)"
        ) from exc
    name = getattr(func, "__qualname__", repr(func))
    built: list[tuple[str, Optional[Any], Any]] = []

    def parameters() -> list[tuple[str, Optional[Any], Any]]:
        if not built:
            try:
                hints = typing.get_type_hints(func)
            except Exception:
                hints = {}
            params = [
                p
                for p in inspect.signature(func).parameters.values()
                if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
            ]
            if params and params[0].name in ("self", "cls"):
                params = params[1:]  # the stored arguments never include self/cls
            for p in params:
                hint = hints.get(p.name)
                built.append((p.name, TypeAdapter(hint) if hint is not None else None, p.default))
        return built

    def validate(
        args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        params = parameters()
        errors: list[str] = []

        def check(label: str, adapter: Optional[Any], value: Any) -> Any:
            if adapter is None:
                return value
            try:
                return adapter.validate_python(value)
            except ValidationError as exc:
                errors.append(f"{label}: {exc}")
                return value

        new_args = tuple(
            check(f"argument {params[i][0]!r} (position {i})", params[i][1], v)
            if i < len(params)
            else v
            for i, v in enumerate(args)
        )
        by_name = {n: adapter for n, adapter, _ in params}
        new_kwargs = {k: check(f"argument {k!r}", by_name.get(k), v) for k, v in kwargs.items()}
        given = {n for n, _, _ in params[: len(args)]} | set(kwargs)
        errors += [
            f"missing required argument {n!r}"
            for n, _, default in params
            if n not in given and default is inspect.Parameter.empty
        ]
        if errors:
            raise ValueError(
                f"Argument validation failed for workflow {name}:\n" + "\n".join(errors)
            )
        return new_args, new_kwargs

    return validate
