"""The sharded backend's entry in the registry: ``shards://?u=<url>&u=<url>``."""

from __future__ import annotations

from waypoint.storage.backend import Backend, StoreOptions
from waypoint.storage.errors import StorageConfigError
from waypoint.storage.protocol import Store
from waypoint.storage.sharded.url import SCHEME, member_urls
from waypoint.storage.url import DatabaseTarget


def _target(rest: str) -> DatabaseTarget:
    member_urls(rest)  # checked now: a bad list fails where the URL is parsed
    return DatabaseTarget("sharded", rest)


def _open(target: DatabaseTarget, options: StoreOptions) -> Store:
    from waypoint.storage.sharded.store import ShardedStore

    return ShardedStore(member_urls(target.url), options)


def _system_url_for(target: DatabaseTarget, app_name: str) -> str:
    raise StorageConfigError("a sharded system database is named by its shards' URLs")


SHARDS = Backend("sharded", (SCHEME,), _target, _open, _system_url_for)
