"""The admin HTTP API and the console. Importing this package registers them with the launcher,
which starts them when ``run_admin_server`` is set.

The server's modules (uvicorn, Starlette, Jinja2 behind them) are imported only when a server
starts: ``import waypoint`` stays as quick as it was for the processes that run none (the CLI,
workers without an admin port)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Optional

from waypoint._api.launch import ExtensionContext, register_extension

if TYPE_CHECKING:
    from waypoint.admin.server import AdminServer

logger = logging.getLogger("waypoint")


def admin_server(context: ExtensionContext) -> Optional[AdminServer]:
    config = context.config
    if not config.run_admin_server:
        return None
    from waypoint.admin.mount import Console
    from waypoint.admin.routes import routes
    from waypoint.admin.server import AdminServer

    console = Console(
        context.ops,
        admin_token=config.admin_token,
        read_only_token=config.admin_read_only_token,
        bound_host=config.admin_host,
    )
    try:
        return AdminServer(
            routes(context.ops),
            config.admin_host,
            config.admin_port,
            config.admin_token,
            console=console,
        )
    except OSError as exc:
        logger.warning(
            "admin API not started: cannot bind %s:%d (%s)",
            config.admin_host,
            config.admin_port,
            exc,
        )
        return None


register_extension("admin", admin_server)
