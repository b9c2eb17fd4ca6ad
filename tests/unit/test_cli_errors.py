"""How the ``waypoint`` command words a failure (``waypoint.cli.errors``): the cause is found
anywhere in the exception chain, a missing role or database is named as such, a DBOS error
keeps its own message, and a failure nobody foresaw names its type and how to see the
traceback. (The command itself is exercised in ``tests/integration/test_cli.py``.)"""

from __future__ import annotations

import pytest
import typer

from waypoint.cli.errors import DEBUG_HINT, CliFailure, describe, fail
from waypoint.error import DBOSException, DBOSInitializationError


def chained(outer: BaseException, inner: BaseException) -> BaseException:
    try:
        try:
            raise inner
        except BaseException as exc:
            raise outer from exc
    except BaseException as caught:
        return caught


def test_the_cause_is_named_from_anywhere_in_the_chain() -> None:
    driver = RuntimeError(
        'connection failed: connection to server at "127.0.0.1", port 5432 failed: FATAL:  '
        'role "ghost" does not exist'
    )
    wrapped = chained(DBOSInitializationError("cannot connect to the system database"), driver)
    what, hint = describe(wrapped)
    assert what == 'role "ghost" does not exist'
    assert hint is not None and "CREATE ROLE" in hint
    what, hint = describe(RuntimeError('FATAL:  database "nowhere"\n does not exist'))
    assert what == 'database "nowhere" does not exist'
    assert hint is not None and "waypoint migrate" in hint


def test_dbos_errors_keep_their_message_and_others_point_to_debug() -> None:
    assert describe(DBOSException("bad filter\n  'x'")) == ("bad filter 'x'", None)
    assert describe(CliFailure("nothing", "do this")) == ("nothing", "do this")
    assert describe(KeyError("k")) == ("KeyError: 'k'", DEBUG_HINT)


def test_fail_prints_one_line_or_reraises_with_debug(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(typer.Exit) as info:
        fail(ValueError("odd\nvalue"))
    assert info.value.exit_code == 1
    assert capsys.readouterr().err == f"error: ValueError: odd value (hint: {DEBUG_HINT})\n"
    with pytest.raises(ValueError):
        fail(ValueError("odd"), debug=True)
