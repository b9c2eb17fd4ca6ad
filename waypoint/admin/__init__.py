"""The admin HTTP API and the console. Importing this package registers them with the launcher,
which starts them when ``run_admin_server`` is set."""

from __future__ import annotations

import logging
from typing import Optional

from waypoint._api.launch import ExtensionContext, register_extension
from waypoint.admin.mount import Console
from waypoint.admin.routes import routes
from waypoint.admin.server import AdminServer

logger = logging.getLogger("waypoint")


def admin_server(context: ExtensionContext) -> Optional[AdminServer]:
    config = context.config
    if not config.run_admin_server:
        return None
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
