"""The application version: a checksum of the registered workflows' code.

Workflows are only recovered by processes running the version that started them. DBOS hashes
the raw source text, so editing a comment strands in-flight work; Waypoint hashes each
workflow's syntax tree without docstrings, so comments, formatting and docstrings do not
change the version while any change to what the code does, does.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import inspect
import textwrap
from collections.abc import Callable, Iterable
from typing import Any

from waypoint.__version__ import VERSION as _LIBRARY_VERSION


@functools.lru_cache(maxsize=4096)
def normalized_source(func: Callable[..., Any]) -> str:
    """The function's syntax tree without docstrings, as text (cached: the application
    version and the workflow fingerprints read the same functions at launch)."""
    source = textwrap.dedent(inspect.getsource(func))
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return source
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            body = node.body
            if (
                body
                and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)
            ):
                node.body = body[1:] or [ast.Pass()]
            # Decorators are configuration (names, retries) and stay in the hash.
    return ast.dump(tree, annotate_fields=False, include_attributes=False)


def compute_app_version(app_name: str, funcs: Iterable[Callable[..., Any]]) -> str:
    hasher = hashlib.md5(usedforsecurity=False)
    try:
        sources = sorted(normalized_source(f) for f in funcs)
    except (OSError, TypeError):
        return f"DEFAULT_VERSION-{app_name}"
    for src in sources:
        hasher.update(src.encode())
    hasher.update(_LIBRARY_VERSION.encode())
    hasher.update(app_name.encode())
    return hasher.hexdigest()
