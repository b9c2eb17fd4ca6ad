"""Administration of a PostgreSQL system database: creating it, migrating its schema,
checking the schema's version, granting an application role, dropping it.

These run on connections of their own, outside the store's pool, so they work before the
store is opened and on a database the pool could not reach.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import psycopg
import psycopg.errors as pgerr
from psycopg import sql as pgsql

from waypoint.storage import migrations
from waypoint.storage.errors import StorageConfigError
from waypoint.storage.postgres.migrator import Migrator, migration_lock
from waypoint.storage.url import DatabaseTarget, redact

logger = logging.getLogger("waypoint")

# The oldest PostgreSQL the schema works on: 13 made gen_random_uuid() built in (the message
# and queue tables' defaults, DBOS's send_message and enqueue_workflow functions use it) and
# added DROP DATABASE ... WITH (FORCE). The suite runs on 14, 15, 16 and 18 (tests/pg_matrix.py).
MIN_SERVER_VERSION = 130000
TESTED_MAJORS = (14, 15, 16, 18)


def check_server_version(conn: psycopg.Connection[Any], url: str) -> None:
    """Refuse, with the reason, a server older than ``MIN_SERVER_VERSION``: the schema would
    fail half-way with an obscure error (``function gen_random_uuid() does not exist``)."""
    version = conn.info.server_version  # e.g. 150020 for 15.20
    if version < MIN_SERVER_VERSION:
        raise StorageConfigError(
            f"the system database {redact(url)} runs PostgreSQL "
            f"{version // 10000}.{version % 10000}, which is too old: Waypoint needs "
            f"PostgreSQL {MIN_SERVER_VERSION // 10000} or newer (tested on "
            f"{', '.join(map(str, TESTED_MAJORS))})"
        )


_GRANTS = (
    "GRANT USAGE ON SCHEMA {s} TO {r}",
    "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {s} TO {r}",
    "GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {s} TO {r}",
    "GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA {s} TO {r}",
    "ALTER DEFAULT PRIVILEGES IN SCHEMA {s} GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {r}",
)


class PgSchemaAdmin:
    """The ``SchemaAdmin`` half of ``PostgresStore``."""

    target: DatabaseTarget
    schema: str
    _conn_kwargs: dict[str, Any]
    close: Callable[[], None]  # the store's own: a database is not dropped under its pool

    def _connect(self, target: DatabaseTarget | None = None) -> psycopg.Connection[Any]:
        return psycopg.connect((target or self.target).url, **self._conn_kwargs)

    def _version_sql(self) -> pgsql.Composed:
        return pgsql.SQL("SELECT COALESCE(MAX(version), 0) FROM {}.waypoint_migrations").format(
            pgsql.Identifier(self.schema)
        )

    def ensure_database(self) -> None:
        """Create the system database if it does not exist (needs CREATEDB privilege)."""
        try:
            with self._connect():
                return
        except psycopg.OperationalError as exc:
            if "does not exist" not in str(exc) or not self.target.database:
                raise StorageConfigError(
                    f"cannot connect to the system database {redact(self.target.url)}: {exc}"
                ) from exc
        with self._connect(self.target.with_database("postgres")) as admin:
            try:
                admin.execute(
                    pgsql.SQL("CREATE DATABASE {}").format(pgsql.Identifier(self.target.database))
                )
                logger.info("created system database %s", self.target.database)
            except (pgerr.DuplicateDatabase, pgerr.UniqueViolation):
                logger.debug("system database %s was created concurrently", self.target.database)

    def migrate(self) -> None:
        """Bring the schema to the latest version (see ``migrator``: indexes on a database in
        use are built without blocking its writers; one migrator at a time)."""
        self.ensure_database()
        ident = pgsql.Identifier(self.schema)
        with self._connect() as conn:
            check_server_version(conn, self.target.url)
            with migration_lock(conn, redact(self.target.url)):
                with conn.transaction():
                    exists = conn.execute(
                        "SELECT 1 FROM pg_namespace WHERE nspname = %s", (self.schema,)
                    ).fetchone()
                    if not exists:
                        conn.execute(pgsql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(ident))
                    conn.execute(
                        pgsql.SQL(
                            "CREATE TABLE IF NOT EXISTS {}.waypoint_migrations ("
                            "version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
                            "applied_at BIGINT NOT NULL "
                            "DEFAULT (EXTRACT(EPOCH FROM now()) * 1000)::bigint)"
                        ).format(ident)
                    )
                    row = conn.execute(self._version_sql()).fetchone()
                    current = int(row[0]) if row else 0
                    migrations.check_adoptable(
                        current, self._dbos_version(conn), redact(self.target.url)
                    )
                Migrator(conn, self.schema).run(current)

    def _dbos_version(self, conn: psycopg.Connection[Any]) -> int | None:
        """The DBOS migration level recorded in the schema, None when DBOS has recorded none."""
        if not conn.execute(
            "SELECT 1 FROM pg_tables WHERE schemaname = %s AND tablename = 'dbos_migrations'",
            (self.schema,),
        ).fetchone():
            return None
        row = conn.execute(
            pgsql.SQL("SELECT MAX(version) FROM {}.dbos_migrations").format(
                pgsql.Identifier(self.schema)
            )
        ).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def schema_version(self) -> int:
        with self._connect() as conn:
            check_server_version(conn, self.target.url)
            row = conn.execute(self._version_sql()).fetchone()
        return int(row[0]) if row else 0

    def verify_schema(self) -> None:
        try:
            current = self.schema_version()
        except pgerr.UndefinedTable as exc:
            raise StorageConfigError(
                f"the system database has no Waypoint schema {self.schema!r}; run "
                "`waypoint migrate` (or set run_migrations=True) first"
            ) from exc
        except psycopg.OperationalError as exc:
            hint = (
                "; create it and its schema with `waypoint migrate` first"
                if "does not exist" in str(exc)
                else ""
            )
            raise StorageConfigError(
                f"cannot connect to the system database {redact(self.target.url)}: {exc}{hint}"
            ) from exc
        migrations.require_current(
            "postgresql", current, "run `waypoint migrate` with a privileged role"
        )

    def drop(self) -> None:
        self.close()
        if not self.target.database:
            raise StorageConfigError("the system database URL names no database to drop")
        admin = self.target.with_database("postgres")
        with psycopg.connect(admin.url, autocommit=True) as conn:
            conn.execute(
                pgsql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    pgsql.Identifier(self.target.database)
                )
            )

    def grant(self, role: str) -> None:
        schema, who = pgsql.Identifier(self.schema), pgsql.Identifier(role)
        with self._connect() as conn, conn.transaction():
            for text in _GRANTS:
                conn.execute(pgsql.SQL(text).format(s=schema, r=who))
