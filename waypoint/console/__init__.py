"""The console: server-rendered pages for workflows, queues, executors, schedules and
retention, as a Starlette application to mount at ``/console/``.

It uses only the operations layer (``waypoint._api.ops``), so it runs the same inside an
application (over the launched runtime) and standalone (over a client's engine). The server
that mounts it owns authentication and CSRF checking; the pages read what it decided from the
ASGI scope (``waypoint.role``, ``waypoint.csrf``) and put the token in every form.
"""

from waypoint.console.app import build_console

__all__ = ["build_console"]
