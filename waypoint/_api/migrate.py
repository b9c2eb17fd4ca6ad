"""``run_dbos_database_migrations``: create or upgrade the system schema out of band."""

from __future__ import annotations

from typing import Optional

from waypoint._api.database import migrate
from waypoint._api.transactions import migrate_application_database


def run_dbos_database_migrations(
    system_database_url: str,
    *,
    app_database_url: Optional[str] = None,
    schema: str = "dbos",
    application_role: Optional[str] = None,
) -> None:
    """Create or upgrade every system table, and with ``app_database_url`` the application
    database's ``transaction_outputs``; optionally grant an application role access.

    Run it with a privileged role; the application can then launch with
    ``run_migrations=False`` as a role that cannot create tables.
    """
    migrate(system_database_url, schema=schema, app_role=application_role)
    if app_database_url is not None:
        migrate_application_database(app_database_url, schema=schema, role=application_role)
