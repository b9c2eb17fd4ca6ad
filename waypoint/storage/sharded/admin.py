"""Operating the shards: list them, add one online, activate it for new work.

Adding is safe at any moment: a shard is registered ``joining`` (found by lookups, given no
new work), then ``activate`` lets new top-level workflows hash over it too. Nothing existing
moves: a workflow stays where its placement marker says, markers and queue homes hash over
the founding shards only, so processes that have not yet refreshed their view of the
catalog (every ``refresh_s``) still create every ID exactly once and still find it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql as pgsql

from waypoint.storage.errors import StorageConfigError
from waypoint.storage.sharded import catalog
from waypoint.storage.sharded.store import ShardedStore
from waypoint.storage.sharded.topology import open_member
from waypoint.storage.url import redact


@dataclass(frozen=True)
class ShardInfo:
    ordinal: int
    url: str  # without a password
    state: str
    holds_markers: bool
    workflows: int


def sharded(store: Any) -> ShardedStore:
    if not isinstance(store, ShardedStore):
        raise StorageConfigError(
            "this system database is not sharded: name its shards with system_database_shards "
            "(or -s repeated)"
        )
    return store


def list_shards(store: ShardedStore) -> list[ShardInfo]:
    store.topo.load()
    out = []
    for m in store.topo.all():
        row = m.store._one(
            f"SELECT count(*) FROM {m.store.d.t('workflow_status')}", {}, "count workflows"
        )
        out.append(
            ShardInfo(
                m.ordinal,
                catalog.strip_password(m.url),
                m.state,
                m.holds_markers,
                int(row[0]) if row else 0,
            )
        )
    return out


def add_shard(store: ShardedStore, new_url: str) -> ShardInfo:
    """Migrate ``new_url``, register it ``joining`` and copy the fleet's versions and
    fingerprints to it (claims read them beside the workflows they pick)."""
    store.topo.load()
    schema = store.options.schema
    member = open_member(new_url, store.options)
    try:
        member.migrate()
        row = catalog.add(store.topo.catalog.url, new_url, schema)
        _copy_versions(store.topo.catalog.url, new_url, schema)
    finally:
        member.close()
    store.topo.load()
    return ShardInfo(row.ordinal, row.url, row.state, row.holds_markers, 0)


def activate_shard(store: ShardedStore, url: str) -> ShardInfo:
    """Let new top-level workflows be placed on the shard at ``url`` too."""
    store.topo.load()
    own = catalog.self_row(catalog.read_rows(url, store.options.schema))
    if own is None or own.ordinal not in store.topo.members:
        raise StorageConfigError(
            f"{redact(url)} is not a shard of this cluster: `waypoint shards add` it first"
        )
    catalog.set_state(store.topo.catalog.url, own.ordinal, catalog.ACTIVE, store.options.schema)
    store.topo.load()
    return next(i for i in list_shards(store) if i.ordinal == own.ordinal)


def _copy_versions(source: str, target: str, schema: str) -> None:
    for table, columns in (
        (
            "application_versions",
            "version_id, version_name, version_timestamp, created_at, application_name",
        ),
        (
            "workflow_fingerprints",
            "workflow_name, application_version, fingerprint, application_name, created_at",
        ),
    ):
        name = pgsql.SQL("{}.{}").format(pgsql.Identifier(schema), pgsql.Identifier(table))
        with psycopg.connect(source) as src:
            rows = src.execute(pgsql.SQL(f"SELECT {columns} FROM {{}}").format(name)).fetchall()
        if not rows:
            continue
        marks = ", ".join(["%s"] * len(columns.split(",")))
        with psycopg.connect(target) as dst:
            dst.cursor().executemany(
                pgsql.SQL(
                    f"INSERT INTO {{}} ({columns}) VALUES ({marks}) ON CONFLICT DO NOTHING"
                ).format(name),
                rows,
            )
