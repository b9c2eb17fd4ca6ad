"""How the ``waypoint`` command reports a failure: one line, ``error: <what> (hint: <what to
do>)``, on stderr, exit status 1; the Python traceback only with ``--debug``.

The cause is read from the exception chain, so a driver's error behind a ``DBOSException``
still names what is missing: a role or a database that does not exist is called exactly that,
not "cannot connect".
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import NoReturn, Optional

import typer

from waypoint.error import DBOSException

DEBUG_HINT = "run `waypoint --debug ...` to see the traceback"


class CliFailure(Exception):
    """A refusal the command itself makes (bad options, nothing found), with its hint."""

    def __init__(self, message: str, hint: Optional[str] = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: Optional[BaseException] = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _one_line(text: str) -> str:
    return " ".join(text.split())


# (pattern in any message of the chain, what it is, the hint), first match wins.
KNOWN: list[tuple[re.Pattern[str], str, str]] = [
    (
        re.compile(r'role "([^"]+)" does not exist'),
        'role "{0}" does not exist',
        "create it with CREATE ROLE ... LOGIN, or name a role that exists",
    ),
    (
        re.compile(r'database "([^"]+)" does not exist'),
        'database "{0}" does not exist',
        "`waypoint migrate -s <url>` creates it and its schema, as a role allowed to create "
        "databases",
    ),
    (
        re.compile(r'password authentication failed for user "([^"]+)"'),
        'password authentication failed for user "{0}"',
        "check the user and password in the URL",
    ),
    (
        re.compile(r'server at "([^"]+)", port (\d+) failed: Connection refused'),
        "no database server answers at {0}:{1}",
        "is PostgreSQL running there, and is the URL's host and port right?",
    ),
    (
        re.compile(r"unable to open database file"),
        "cannot open the SQLite file",
        "check that its directory exists and is writable",
    ),
]


def describe(exc: BaseException) -> tuple[str, Optional[str]]:
    """``(what went wrong, hint)`` for a failure, each on one line."""
    if isinstance(exc, CliFailure):
        return exc.message, exc.hint
    for link in _chain(exc):
        text = _one_line(str(link))
        for pattern, what, hint in KNOWN:
            m = pattern.search(text)
            if m:
                return what.format(*m.groups()), hint
    if isinstance(exc, DBOSException):
        return _one_line(exc.message), None
    return f"{type(exc).__name__}: {_one_line(str(exc))}", DEBUG_HINT


def fail(exc: BaseException, *, debug: bool = False) -> NoReturn:
    """Print the failure as one line (or re-raise it with ``debug``) and exit 1."""
    if debug and not isinstance(exc, CliFailure):
        raise exc
    what, hint = describe(exc)
    typer.echo(f"error: {what}" + (f" (hint: {hint})" if hint else ""), err=True)
    raise typer.Exit(1)
