"""The argument checker's own binding (``_api.argcheck``) agrees with ``Signature.bind``:
it binds the calls it covers as Python would, and leaves every other call, a wrong one
included, to ``Signature.bind`` and its error. No database."""

from __future__ import annotations

import inspect
from typing import Any, Optional

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from waypoint import DBOS, DBOSClient
from waypoint._api.argcheck import ArgumentChecker
from waypoint._api.surface import _Operation
from waypoint.error import WaypointArgumentError


def _flow(
    ops: Any,
    first: str,
    second: Any,
    third: Optional[str] = None,
    fourth: int = 0,
    *,
    named: bool = False,
    other: Optional[str] = None,
) -> None:
    """An operation's shape: positional parameters with and without defaults, then named."""


def _only_positional(ops: Any, first: str, /, second: int = 1) -> None:
    """A positional-only parameter: by name, it is an error."""


def _varargs(ops: Any, *items: str, **extra: Any) -> None:
    """Variable arguments: always bound by ``Signature.bind``."""


def _checker(flow: Any) -> ArgumentChecker:
    sig = inspect.signature(flow)
    public = sig.replace(parameters=list(sig.parameters.values())[1:])
    return ArgumentChecker(flow.__name__, flow, public)


NAMES = ["first", "second", "third", "fourth", "named", "other", "bogus"]
VALUES = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=3))


def _python_binding(check: ArgumentChecker, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    try:
        return dict(check.signature.bind(*args, **kwargs).arguments)
    except TypeError:
        return TypeError


@pytest.mark.parametrize("flow", [_flow, _only_positional, _varargs])
@given(
    args=st.lists(VALUES, max_size=6).map(tuple),
    kwargs=st.dictionaries(st.sampled_from(NAMES), VALUES, max_size=4),
)
@settings(max_examples=300, deadline=None)
def test_binding_agrees_with_python(flow: Any, args: Any, kwargs: Any) -> None:
    check = _checker(flow)
    expected = _python_binding(check, args, kwargs)
    if expected is TypeError:
        with pytest.raises(WaypointArgumentError, match=f"^.*{flow.__name__}\\(\\): "):
            check._bind(args, kwargs)
    else:
        assert check._bind(args, kwargs) == expected


def test_checked_calls_name_the_argument() -> None:
    check = _checker(_flow)
    check(("id", object(), "topic", 3), {"named": True})
    with pytest.raises(WaypointArgumentError, match="argument 'first' must be a string, got int"):
        check((1, None), {})
    with pytest.raises(WaypointArgumentError, match="argument 'fourth' must be an integer"):
        check(("id", None), {"fourth": True})
    with pytest.raises(WaypointArgumentError, match="multiple values for argument 'third'"):
        check(("id", None, "t"), {"third": "again"})
    with pytest.raises(WaypointArgumentError, match="missing a required argument: 'second'"):
        check(("id",), {})


def test_an_operation_on_the_class_is_bound_once() -> None:
    """``DBOS.send`` is made once per class (building it costs more than a call's own work);
    on an instance, each access binds to that instance."""
    assert DBOS.send is DBOS.send
    assert DBOS.send_async is DBOS.send_async
    assert DBOS.send.__name__ == "send" and DBOS.send.__qualname__ == "DBOS.send"
    assert any(isinstance(vars(c).get("send"), _Operation) for c in DBOS.__mro__)

    class Sub(DBOS):  # type: ignore[misc]
        pass

    assert Sub.send is not DBOS.send and Sub.send.__qualname__.endswith("Sub.send")
    client = DBOSClient.__new__(DBOSClient)
    assert client.send is not DBOSClient.__new__(DBOSClient).send
