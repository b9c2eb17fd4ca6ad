"""The admin HTTP API. Importing this package registers it with the launcher, which starts it
when ``run_admin_server`` is set."""

from __future__ import annotations

import logging
from typing import Optional

from waypoint._api.launch import ExtensionContext, register_extension
from waypoint.admin.routes import routes
from waypoint.admin.server import AdminServer

logger = logging.getLogger("waypoint")


def admin_server(context: ExtensionContext) -> Optional[AdminServer]:
    config = context.config
    if not config.run_admin_server:
        return None
    try:
        return AdminServer(
            routes(context.ops), config.admin_host, config.admin_port, config.admin_token
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
