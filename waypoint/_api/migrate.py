"""``run_dbos_database_migrations``: create or upgrade the system schema out of band."""

from __future__ import annotations

from typing import Optional

from waypoint.storage.factory import open_url


def run_dbos_database_migrations(
    system_database_url: str,
    *,
    app_database_url: Optional[str] = None,
    schema: str = "dbos",
    application_role: Optional[str] = None,
) -> None:
    """Create or upgrade every system table; optionally grant an application role access.

    Run it with a privileged role; the application can then launch with
    ``run_migrations=False`` as a role that cannot create tables.
    """
    store = open_url(system_database_url, schema=schema, pool_size=1)
    try:
        store.migrate()
        if application_role is not None:
            store.grant(application_role)
    finally:
        store.close()
