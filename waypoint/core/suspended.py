"""The exception that unwinds a workflow body whose wait was suspended (core/suspend.py).

On its own so that the observation seam can tell it apart without importing the machinery.
"""

from __future__ import annotations


class Suspended(BaseException):
    """Unwinds a workflow body whose wait was suspended (internal: never reaches a caller).

    A ``BaseException`` so that ``except Exception`` in workflow code lets it through. Code
    that swallows it (a bare ``except:`` or ``except BaseException`` around a wait) cannot
    make the run go on: every later operation of the run raises it again, and a body that
    returns anyway is still treated as suspended."""
